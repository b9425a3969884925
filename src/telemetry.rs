//! Prometheus metrics through the `metrics` facade, rendered by `metrics-exporter-prometheus`.
//!
//! The recorder is process-wide (installed once); every server in the process (tests start
//! many) reports into it. Names and labels are public contract, listed in the README.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const DECISIONS: &str = "actguard_decisions_total";
pub const CHECK_DURATION: &str = "actguard_check_duration_seconds";
pub const CACHE_HITS: &str = "actguard_token_cache_hits_total";
pub const CACHE_MISSES: &str = "actguard_token_cache_misses_total";
pub const CACHE_ENTRIES: &str = "actguard_token_cache_entries";
pub const JWKS_KEYS: &str = "actguard_jwks_keys";
pub const JWKS_AGE: &str = "actguard_jwks_age_seconds";
pub const JWKS_FETCHES: &str = "actguard_jwks_fetches_total";
pub const CONFIG_LOADS: &str = "actguard_config_loads_total";
pub const INFLIGHT: &str = "actguard_checks_in_flight";
pub const OVERLOAD_REJECTIONS: &str = "actguard_overload_rejections_total";
pub const AUDIT_DROPPED: &str = "actguard_audit_lines_dropped_total";
pub const READY: &str = "actguard_ready";

/// Check latencies are microseconds when cached and tens of microseconds when verifying;
/// the buckets resolve both and still show a pathological tail.
const CHECK_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25,
];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CHECK_DURATION.into()), CHECK_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Records one decision: its result, reason code and route.
pub fn record_decision(reason: Option<&'static str>, route: Option<&str>, elapsed: Duration) {
    let (result, reason) = match reason {
        None => ("allow", "allow"),
        Some(code) => ("deny", code),
    };
    let route = route.unwrap_or("none").to_owned();
    metrics::counter!(DECISIONS, "result" => result, "reason" => reason, "route" => route)
        .increment(1);
    metrics::histogram!(CHECK_DURATION).record(elapsed.as_secs_f64());
}

pub fn record_cache_lookup(hit: bool) {
    if hit {
        metrics::counter!(CACHE_HITS).increment(1);
    } else {
        metrics::counter!(CACHE_MISSES).increment(1);
    }
}

pub fn record_config_load(success: bool) {
    let result = if success { "success" } else { "failure" };
    metrics::counter!(CONFIG_LOADS, "result" => result).increment(1);
}
