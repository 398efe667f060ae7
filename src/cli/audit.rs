//! `byok-broker audit verify`: checks the audit hash chains directly in the database the
//! configuration names (no running broker needed) and prints, per chain, what was checked and
//! the first break. Exit status 1 when any chain is broken.

use std::path::PathBuf;

use byok_broker::config::Config;
use byok_broker::services::audit_verify::{self, VerifyRange, VerifyReport};
use byok_broker::store::Store;
use byok_broker::timestamp::Timestamp;

/// What `audit verify` was asked to check (its command-line arguments).
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// TOML configuration file naming the store; BYOK_BROKER_* environment variables override it.
    #[arg(long, env = "BYOK_BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Only this organization's chain.
    #[arg(long, conflicts_with = "broker_chain")]
    pub organization: Option<String>,
    /// Only the chain of events without organization.
    #[arg(long)]
    pub broker_chain: bool,
    /// First chain position to check (default: the chain's start, or where retention cut it).
    #[arg(long)]
    pub from_position: Option<i64>,
    /// Last chain position to check (default: the chain's head).
    #[arg(long)]
    pub to_position: Option<i64>,
    /// Only events from the first created at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events up to the last created before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

pub async fn verify(args: VerifyArgs) -> Result<(), String> {
    let time = |name: &str, value: Option<String>| -> Result<Option<String>, String> {
        value
            .map(|text| {
                Timestamp::parse(&text)
                    .map(|t| t.to_rfc3339())
                    .ok_or_else(|| format!("cannot parse --{name} {text:?} (RFC 3339 expected)"))
            })
            .transpose()
    };
    let range = VerifyRange {
        organization: match (args.organization, args.broker_chain) {
            (Some(organization), _) => Some(Some(organization)),
            (None, true) => Some(None),
            (None, false) => None,
        },
        from_position: args.from_position,
        to_position: args.to_position,
        since: time("since", args.since)?,
        until: time("until", args.until)?,
    };
    let config = Config::load(args.config.as_deref(), |name| std::env::var(name).ok())
        .map_err(|e| e.to_string())?;
    // Beside a running broker: on SQLite the broker holds the audit log, which this only measures.
    let store = Store::inspect_configured(&config.data_dir, config.store.clone())
        .await
        .map_err(|e| e.to_string())?;
    let report = audit_verify::verify(&store, &range).await;
    let backlog = store.audit_log_backlog().await;
    let _ = store.close().await;
    let report = report.map_err(|e| e.to_string())?;
    print!("{}", render(&report));
    if let Some(bytes) = backlog
        .map_err(|e| e.to_string())?
        .filter(|bytes| *bytes > 0)
    {
        // Durable, not yet chained: the broker indexes them within about a second, and at start.
        println!(
            "{bytes} bytes of events wait in the audit log to be indexed and chained (not checked yet)"
        );
    }
    if report.is_intact() {
        Ok(())
    } else {
        Err("the audit trail is broken (see above)".into())
    }
}

/// One line per chain, then a summary line.
fn render(report: &VerifyReport) -> String {
    let mut text = String::new();
    let mut broken = 0;
    for chain in &report.chains {
        let positions = chain
            .positions
            .map_or("none".to_owned(), |(first, last)| format!("{first}-{last}"));
        let head = chain
            .head
            .as_ref()
            .map_or("no head record".to_owned(), |(position, hash)| {
                format!("head {position} {hash}")
            });
        let state = match &chain.broken {
            Some(why) => {
                broken += 1;
                format!("BROKEN: {why}")
            }
            None => "intact".to_owned(),
        };
        text.push_str(&format!(
            "chain {}: {} events checked (positions {positions}), {head}: {state}\n",
            chain.chain, chain.checked
        ));
    }
    if let Some(why) = &report.unchained {
        broken += 1;
        text.push_str(&format!("outside any chain: BROKEN: {why}\n"));
    }
    text.push_str(&format!(
        "{} chains, {} events checked: {}\n",
        report.chains.len(),
        report.checked(),
        if broken == 0 {
            "intact".to_owned()
        } else {
            format!("{broken} broken")
        }
    ));
    text
}
