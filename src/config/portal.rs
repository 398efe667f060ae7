//! `[portal]`: the admin portal a tenant's IT admin opens from a link (`http::portal`): how long a
//! link and an idle session live, the address links are built on, and what the setup page shows
//! about the broker's AWS identity.

use std::time::Duration;

use serde::Deserialize;

use super::sources::Sources;
use super::{ConfigError, invalid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfig {
    /// A link's single-use token expires this long after it was generated.
    pub link_ttl: Duration,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// Links are `<public_url>/portal/launch?token=…`; `None`: the listener's own address.
    pub public_url: Option<String>,
    /// The IAM principal the broker runs as, named in the trust policy the page shows;
    /// `None`: the page shows a placeholder for the operator to fill in.
    pub broker_principal_arn: Option<String>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            link_ttl: Duration::from_secs(300),
            session_idle: Duration::from_secs(1800),
            public_url: None,
            broker_principal_arn: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPortal {
    link_ttl_seconds: Option<u64>,
    session_idle_seconds: Option<u64>,
    public_url: Option<String>,
    broker_principal_arn: Option<String>,
}

pub(super) fn load(raw: RawPortal, sources: &Sources<'_>) -> Result<PortalConfig, ConfigError> {
    let defaults = PortalConfig::default();
    let non_empty = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    let config = PortalConfig {
        link_ttl: sources.seconds(
            "BYOK_BROKER_PORTAL_LINK_TTL_SECONDS",
            raw.link_ttl_seconds,
            defaults.link_ttl,
        )?,
        session_idle: sources.seconds(
            "BYOK_BROKER_PORTAL_SESSION_IDLE_SECONDS",
            raw.session_idle_seconds,
            defaults.session_idle,
        )?,
        public_url: non_empty(sources.optional("BYOK_BROKER_PORTAL_PUBLIC_URL", raw.public_url)?)
            .map(|url| url.trim_end_matches('/').to_owned()),
        broker_principal_arn: non_empty(sources.optional(
            "BYOK_BROKER_PORTAL_BROKER_PRINCIPAL_ARN",
            raw.broker_principal_arn,
        )?),
    };
    if config.link_ttl.is_zero() || config.session_idle.is_zero() {
        return Err(invalid(
            "portal.link_ttl_seconds / portal.session_idle_seconds",
            "must be at least 1".into(),
        ));
    }
    if let Some(url) = &config.public_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(invalid(
            "portal.public_url / BYOK_BROKER_PORTAL_PUBLIC_URL",
            format!("{url:?} must start with https:// (or http://)"),
        ));
    }
    if let Some(arn) = &config.broker_principal_arn
        && !(arn.starts_with("arn:aws:iam::") || arn.starts_with("arn:aws:sts::"))
    {
        return Err(invalid(
            "portal.broker_principal_arn / BYOK_BROKER_PORTAL_BROKER_PRINCIPAL_ARN",
            format!("{arn:?} must be an IAM principal ARN (arn:aws:iam::<account>:...)"),
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::Config;
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<PortalConfig, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(None, |name| env.get(name).cloned()).map(|c| c.portal)
    }

    #[test]
    fn defaults_are_five_minute_links_and_half_hour_sessions() {
        let portal = load(&[]).unwrap();
        assert_eq!(portal, PortalConfig::default());
        assert_eq!(portal.link_ttl, Duration::from_secs(300));
        assert_eq!(portal.session_idle, Duration::from_secs(1800));
    }

    #[test]
    fn settings_are_read_and_bad_ones_refused() {
        let portal = load(&[
            ("BYOK_BROKER_PORTAL_LINK_TTL_SECONDS", "60"),
            ("BYOK_BROKER_PORTAL_PUBLIC_URL", "https://keys.example.com/"),
            (
                "BYOK_BROKER_PORTAL_BROKER_PRINCIPAL_ARN",
                "arn:aws:iam::123456789012:role/broker",
            ),
        ])
        .unwrap();
        assert_eq!(portal.link_ttl, Duration::from_secs(60));
        assert_eq!(
            portal.public_url.as_deref(),
            Some("https://keys.example.com")
        );
        for bad in [
            ("BYOK_BROKER_PORTAL_LINK_TTL_SECONDS", "0"),
            ("BYOK_BROKER_PORTAL_SESSION_IDLE_SECONDS", "0"),
            ("BYOK_BROKER_PORTAL_PUBLIC_URL", "keys.example.com"),
            ("BYOK_BROKER_PORTAL_BROKER_PRINCIPAL_ARN", "123456789012"),
        ] {
            assert!(load(&[bad]).is_err(), "{bad:?}");
        }
    }
}
