//! Loading the platform KEK policy (`platform_kek.context_fields`,
//! `platform_kek.rotation_period_days`, `limits.new_platform_keks_*`, `limits.max_platform_keks`)
//! from the file and `BYOK_BROKER_*` variables, validated.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::sources::Sources;
use super::{ConfigError, invalid};

/// The rotation periods AWS KMS accepts, in days.
pub const ROTATION_PERIOD_DAYS: std::ops::RangeInclusive<u32> = 90..=2560;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformKekConfig {
    /// Context names whose pairs select the KEK; `None`: the whole context (one KEK per context).
    pub context_fields: Option<Vec<String>>,
    /// New platform KEKs one API key may cause per rolling hour.
    pub new_per_key_per_hour: u32,
    /// Platform KEKs the deployment may hold in all.
    pub max_total: u64,
    /// Automatic rotation period of every platform KEK, in days (AWS allows 90-2560).
    pub rotation_period_days: u32,
}

impl Default for PlatformKekConfig {
    fn default() -> Self {
        Self {
            context_fields: None,
            new_per_key_per_hour: 100,
            max_total: 10_000,
            rotation_period_days: 365,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlatformKek {
    context_fields: Option<Vec<String>>,
    rotation_period_days: Option<u32>,
}

/// The limit settings read from the `[limits]` table.
pub(super) struct RawPlatformKekLimits {
    pub per_key_per_hour: Option<u32>,
    pub max_total: Option<u64>,
}

pub(super) fn load(
    raw: RawPlatformKek,
    limits: RawPlatformKekLimits,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PlatformKekConfig, ConfigError> {
    let sources = Sources::new(env);
    let defaults = PlatformKekConfig::default();
    let new_per_key_per_hour = sources.value(
        "BYOK_BROKER_NEW_PLATFORM_KEKS_PER_KEY_PER_HOUR",
        limits.per_key_per_hour,
        defaults.new_per_key_per_hour,
    )?;
    let max_total = sources.value(
        "BYOK_BROKER_MAX_PLATFORM_KEKS",
        limits.max_total,
        defaults.max_total,
    )?;
    let context_fields = sources.optional(
        "BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS",
        raw.context_fields,
    )?;
    if let Some(fields) = &context_fields {
        validate_fields(fields)?;
    }
    let rotation_period_days = sources.value(
        "BYOK_BROKER_PLATFORM_KEK_ROTATION_PERIOD_DAYS",
        raw.rotation_period_days,
        defaults.rotation_period_days,
    )?;
    if !ROTATION_PERIOD_DAYS.contains(&rotation_period_days) {
        return Err(invalid(
            "platform_kek.rotation_period_days / BYOK_BROKER_PLATFORM_KEK_ROTATION_PERIOD_DAYS",
            format!(
                "{rotation_period_days}: AWS KMS rotates a key every 90 to 2560 days; choose a period in that range"
            ),
        ));
    }
    Ok(PlatformKekConfig {
        context_fields,
        new_per_key_per_hour,
        max_total,
        rotation_period_days,
    })
}

/// 1-10 distinct names of 1-120 characters: what a key context can hold.
fn validate_fields(fields: &[String]) -> Result<(), ConfigError> {
    let distinct: BTreeSet<&String> = fields.iter().collect();
    let valid = (1..=10).contains(&fields.len())
        && distinct.len() == fields.len()
        && fields
            .iter()
            .all(|f| !f.is_empty() && f.chars().count() <= 120);
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "platform_kek.context_fields / BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS",
            format!("{fields:?}: expected 1-10 distinct context names of 1-120 characters"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_limits() -> RawPlatformKekLimits {
        RawPlatformKekLimits {
            per_key_per_hour: None,
            max_total: None,
        }
    }

    #[test]
    fn defaults_keep_one_kek_per_context_and_finite_limits() {
        let config = load(RawPlatformKek::default(), no_limits(), &|_| None).unwrap();
        assert_eq!(config, PlatformKekConfig::default());
        assert!(config.context_fields.is_none());
    }

    #[test]
    fn the_rotation_period_defaults_to_a_year_and_stays_within_what_aws_allows() {
        assert_eq!(PlatformKekConfig::default().rotation_period_days, 365);
        for (value, ok) in [
            ("90", true),
            ("2560", true),
            ("89", false),
            ("2561", false),
            ("0", false),
        ] {
            let env = |name: &str| {
                (name == "BYOK_BROKER_PLATFORM_KEK_ROTATION_PERIOD_DAYS").then(|| value.to_owned())
            };
            let loaded = load(RawPlatformKek::default(), no_limits(), &env);
            assert_eq!(loaded.is_ok(), ok, "{value}");
            if let Err(e) = loaded {
                let text = e.to_string();
                assert!(
                    text.contains("rotation_period_days") && text.contains("90 to 2560"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn fields_come_from_the_environment_and_are_validated() {
        let env = |name: &str| {
            (name == "BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS")
                .then(|| "organization_id, data_type".to_owned())
        };
        let config = load(RawPlatformKek::default(), no_limits(), &env).unwrap();
        assert_eq!(
            config.context_fields,
            Some(vec!["organization_id".into(), "data_type".into()])
        );
        for bad in ["", "a,,b", "a,a"] {
            let env = |_: &str| Some(bad.to_owned());
            assert!(
                load(RawPlatformKek::default(), no_limits(), &env).is_err(),
                "{bad:?}"
            );
        }
    }
}
