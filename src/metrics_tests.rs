//! Tests of the metrics rendering: counters and gauges, exposition-format escaping, and that
//! caller-supplied key ids can neither inject lines nor add series.

use super::*;
use crate::kms::local::LocalKms;

#[test]
fn renders_counters_and_gauges() {
    let metrics = Metrics::default();
    metrics.allow_accounts_of(["arn:aws:kms:us-east-1:111111111111:key/a"]);
    metrics.record_key_check("arn:aws:kms:us-east-1:111111111111:key/a", false);
    metrics.record_revocation("aws");
    metrics.record_key_event("malformed");
    let text = metrics.render(&BindingSet::default(), DekCacheStats::default());
    assert!(
        text.contains(
            "byok_broker_key_checks_total{account=\"111111111111\",outcome=\"unavailable\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("byok_broker_revocations_total{cause=\"aws\"} 1"));
    assert!(text.contains("byok_broker_key_events_total{outcome=\"malformed\"} 1"));
    assert!(text.contains("byok_broker_byok_keys{state=\"active\"} 0"));
    assert!(text.contains("byok_broker_dek_cache_entries 0"));
}

#[test]
fn label_values_are_escaped_per_the_exposition_format() {
    let metrics = Metrics::default();
    let arn = "arn:aws:kms:us-east-1:a\\b\"c\nd:key/x";
    metrics.allow_accounts_of([arn]);
    metrics.record_key_check(arn, true);
    let text = metrics.render(&BindingSet::default(), DekCacheStats::default());
    assert!(
        text.contains(
            "byok_broker_key_checks_total{account=\"a\\\\b\\\"c\\nd\",outcome=\"available\"} 1"
        ),
        "{text}"
    );
}

#[test]
fn request_latency_is_labelled_by_route_template_method_and_status() {
    let metrics = Metrics::default();
    metrics.record_request("/vault/v1/kv/{id}", "GET", 404, Duration::from_millis(3));
    metrics.record_request("/vault/v1/kv/{id}", "GET", 404, Duration::from_millis(30));
    let text = metrics.render(&BindingSet::default(), DekCacheStats::default());
    let series = "byok_broker_http_request_duration_seconds_count{route=\"/vault/v1/kv/{id}\",method=\"GET\",status=\"404\"} 2";
    assert!(text.contains(series), "{text}");
    assert_only_broker_series(&text);
}

/// Every line of the exposition is a comment or `name{labels} value` with the names the broker
/// defines; anything else was injected.
fn assert_only_broker_series(text: &str) {
    for line in text.lines() {
        let comment = ["# HELP byok_broker_", "# TYPE byok_broker_"]
            .iter()
            .any(|prefix| line.starts_with(prefix));
        if comment || line == "# EOF" {
            continue;
        }
        assert!(
            line.starts_with("byok_broker_") && line.rsplit_once(' ').is_some(),
            "foreign line {line:?} in:\n{text}"
        );
    }
}

#[tokio::test]
async fn caller_supplied_key_ids_neither_inject_lines_nor_add_series() {
    let dir = std::env::temp_dir().join(format!("byok-metrics-{}", uuid::Uuid::new_v4()));
    let metrics = Arc::new(Metrics::default());
    let provider = MeteredProvider {
        inner: Arc::new(LocalKms::open(&dir).await.expect("local provider")),
        metrics: Arc::clone(&metrics),
    };
    let context = KeyContext::new([("organization_id", "org_a")]).expect("context");
    // A KEK id as an attacker would write it into an `encrypted_keys` blob.
    let injected = "arn:aws:kms:us-east-1:123456789012\"} 1\nbyok_broker_injected 1\n:key/x";
    let _ = provider
        .decrypt(&KekRef::platform(injected), b"wrapped", &context)
        .await;
    for account in 0..200u64 {
        let id = format!("arn:aws:kms:us-east-1:{account:012}:key/x");
        let _ = provider
            .decrypt(&KekRef::platform(id), b"wrapped", &context)
            .await;
    }
    let text = metrics.render(&BindingSet::default(), DekCacheStats::default());
    assert_only_broker_series(&text);
    assert!(!text.contains("byok_broker_injected"), "{text}");
    let kms_series = text
        .lines()
        .filter(|l| l.starts_with("byok_broker_kms_calls_total"))
        .count();
    assert!(
        kms_series <= 2,
        "unknown accounts added {kms_series} series:\n{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
