//! The one rule every setting follows: its environment variable if set, else its value in the
//! file, else its default. A setting is declared once with all three; a bad environment value is
//! an error naming the variable, never silently replaced by the file value or the default.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, ProviderKind, Redacted, invalid};

// Hand-written rather than a layered-config crate (figment, config): a few dozen lines, no new
// dependency, and the env names follow no single mapping from file keys (several settings are
// file-only, `[kms.aws]` is left to the SDK's own variables).
/// The environment, read through a function so tests pass a map instead of process state.
pub(crate) struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Sources<'a> {
    pub(crate) fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { env }
    }

    /// `env_name` parsed if set, else `file`, else `default`.
    pub(crate) fn value<T: FromEnv>(
        &self,
        env_name: &'static str,
        file: Option<T>,
        default: T,
    ) -> Result<T, ConfigError> {
        Ok(self.optional(env_name, file)?.unwrap_or(default))
    }

    /// `env_name` parsed if set, else `file` (a setting without a default).
    pub(crate) fn optional<T: FromEnv>(
        &self,
        env_name: &'static str,
        file: Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match (self.env)(env_name) {
            Some(text) => T::from_env(env_name, &text).map(Some),
            None => Ok(file),
        }
    }

    /// A duration given in milliseconds in both the file and the environment.
    pub(crate) fn millis(
        &self,
        env_name: &'static str,
        file: Option<u64>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        Ok(self
            .optional(env_name, file)?
            .map_or(default, Duration::from_millis))
    }

    /// A duration given in seconds in both the file and the environment.
    pub(crate) fn seconds(
        &self,
        env_name: &'static str,
        file: Option<u64>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        Ok(self
            .optional(env_name, file)?
            .map_or(default, Duration::from_secs))
    }

    /// A secret read only from the environment (never from files); empty counts as unset.
    pub(crate) fn secret(&self, env_name: &str) -> Option<Redacted> {
        (self.env)(env_name)
            .filter(|v| !v.is_empty())
            .map(|v| Redacted(zeroize::Zeroizing::new(v)))
    }
}

/// How a setting's type is read from an environment variable's text.
pub(crate) trait FromEnv: Sized {
    fn from_env(env_name: &'static str, text: &str) -> Result<Self, ConfigError>;
}

macro_rules! numbers_from_env {
    ($($number:ty),*) => {$(
        impl FromEnv for $number {
            fn from_env(env_name: &'static str, text: &str) -> Result<Self, ConfigError> {
                text.trim()
                    .parse()
                    .map_err(|e| invalid(env_name, format!("{text:?}: {e}")))
            }
        }
    )*};
}
numbers_from_env!(u32, u64, usize);

impl FromEnv for bool {
    fn from_env(env_name: &'static str, text: &str) -> Result<Self, ConfigError> {
        match text {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(invalid(env_name, format!("{other:?} is not true or false"))),
        }
    }
}

impl FromEnv for String {
    fn from_env(_: &'static str, text: &str) -> Result<Self, ConfigError> {
        Ok(text.to_owned())
    }
}

impl FromEnv for PathBuf {
    fn from_env(_: &'static str, text: &str) -> Result<Self, ConfigError> {
        Ok(PathBuf::from(text))
    }
}

/// A comma-separated list; names are trimmed (validation is the setting's own).
impl FromEnv for Vec<String> {
    fn from_env(_: &'static str, text: &str) -> Result<Self, ConfigError> {
        Ok(text.split(',').map(|f| f.trim().to_owned()).collect())
    }
}

impl FromEnv for ProviderKind {
    fn from_env(env_name: &'static str, text: &str) -> Result<Self, ConfigError> {
        match text {
            "local" => Ok(ProviderKind::Local),
            "aws" => Ok(ProviderKind::Aws),
            other => Err(invalid(
                env_name,
                format!("{other:?}: expected \"local\" or \"aws\""),
            )),
        }
    }
}
