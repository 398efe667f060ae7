//! Log output: human-readable text (the default) or JSON lines (`BYOK_BROKER_LOG_FORMAT=json`), one
//! object per line on stderr, for log pipelines. The level filter is `RUST_LOG` (default `info`).
//! In JSON, an event's own fields are top-level keys and the request's span (request id, route,
//! method, caller key id, context hash) is the `span` object, so every request line carries them.

use tracing_subscriber::EnvFilter;

/// The variable choosing the format.
const FORMAT_VARIABLE: &str = "BYOK_BROKER_LOG_FORMAT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The format `value` names; unset or empty means text.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!(
                "{FORMAT_VARIABLE} is 'text' or 'json', not {other:?}"
            )),
        }
    }
}

/// Installs the process's log subscriber in the format `BYOK_BROKER_LOG_FORMAT` names.
pub fn init() -> Result<(), String> {
    let format = LogFormat::parse(std::env::var(FORMAT_VARIABLE).ok().as_deref())?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    #[test]
    fn formats_parse_and_anything_else_is_refused_by_name() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("text")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("json")), Ok(LogFormat::Json));
        let refused = LogFormat::parse(Some("xml")).expect_err("xml is not a format");
        assert!(refused.contains("BYOK_BROKER_LOG_FORMAT"), "{refused}");
    }
}
