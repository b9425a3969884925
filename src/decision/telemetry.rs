//! Prometheus metrics through the `metrics` facade, rendered by `metrics-exporter-prometheus`.
//!
//! The recorder is process-wide (installed once); every server in the process (tests start
//! many) reports into it. Names and labels are public contract, listed in the README.

use crate::decision::reason::DenyReason;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
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
/// Revocation API calls by `op` (revoke, unrevoke, list) and `outcome` (accepted, refused,
/// invalid, failed).
pub const ADMIN_OPERATIONS: &str = "actguard_admin_operations_total";
/// MCP `tools/call` decisions by `route`, `tool` (the matching rule's configured name, or
/// `unlisted`: the label never takes a caller-chosen value) and `result`.
pub const MCP_TOOL_CALLS: &str = "actguard_mcp_tool_calls_total";
/// Denials on routes with `enforce: false`, answered with an allow (`route`, `reason`).
pub const SHADOW_DENIES: &str = "actguard_shadow_denies_total";
/// Fleet revocation: the last bucket revision applied.
pub const REVOCATION_REVISION: &str = "actguard_revocation_revision";
/// Fleet revocation: seconds from a change entering the bucket to this sidecar applying it.
pub const REVOCATION_LAG: &str = "actguard_revocation_propagation_seconds";
/// Fleet revocation: seconds since the list was last confirmed current (read at scrape).
pub const REVOCATION_STALENESS: &str = "actguard_revocation_staleness_seconds";
/// Fleet revocation: times following the bucket stopped and resumed.
pub const REVOCATION_RECONNECTS: &str = "actguard_revocation_resumes_total";

/// Check latencies are microseconds when cached and tens of microseconds when verifying;
/// the buckets resolve both and still show a pathological tail.
const CHECK_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25,
];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// How often histogram samples are folded into their buckets when nobody scrapes `/metrics`.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder (once) and returns the handle that renders it.
///
/// The recorder keeps each histogram sample until upkeep folds it into the buckets (a render
/// does too); a thread started here runs upkeep every few seconds, so memory stays bounded
/// when `/metrics` is scraped rarely or never (at 60k checks/s, 8 bytes a sample, ~29 MB a
/// minute otherwise).
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CHECK_DURATION.into()), CHECK_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("actguard-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = started {
                // Metrics still work: each scrape of /metrics folds the samples in.
                tracing::warn!(%error, "metrics upkeep thread not started");
            }
            Ok(handle)
        })
        .clone()
}

/// The decision path's metric handles, taken once per configuration instead of looked up
/// per check (building the labelled key, hashing it, locking the registry). A series is
/// registered at its first use, as a lookup would, so `/metrics` lists only decisions made.
pub struct DecisionMetrics {
    /// One per route, in route-table order.
    routes: Box<[RouteDecisions]>,
    /// Denials before a route was selected.
    no_route: RouteDecisions,
    duration: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
}

struct RouteDecisions {
    name: Arc<str>,
    allow: OnceLock<Counter>,
    /// Indexed by [`DenyReason`] in declaration order.
    deny: [OnceLock<Counter>; DenyReason::ALL.len()],
}

impl RouteDecisions {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            allow: OnceLock::new(),
            deny: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn increment(&self, reason: Option<DenyReason>) {
        let (slot, result, code) = match reason {
            None => (Some(&self.allow), "allow", "allow"),
            Some(reason) => (self.deny.get(reason as usize), "deny", reason.code()),
        };
        let register = || {
            let route = self.name.to_string();
            metrics::counter!(DECISIONS, "result" => result, "reason" => code, "route" => route)
        };
        match slot {
            Some(slot) => slot.get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }
}

impl DecisionMetrics {
    /// Handles for a route table with these names (in order). Installs the process recorder
    /// first if nothing has, so no handle is taken from the no-op recorder and lost.
    pub fn new<'a>(route_names: impl IntoIterator<Item = &'a Arc<str>>) -> Self {
        let _ = install();
        Self {
            routes: route_names
                .into_iter()
                .map(|name| RouteDecisions::new(Arc::clone(name)))
                .collect(),
            no_route: RouteDecisions::new("none".into()),
            duration: metrics::histogram!(CHECK_DURATION),
            cache_hits: metrics::counter!(CACHE_HITS),
            cache_misses: metrics::counter!(CACHE_MISSES),
        }
    }

    /// Records one decision: allow, or the denial's reason; the route by its index in the
    /// table (`None` before one was selected); how long it took.
    pub fn record_decision(
        &self,
        reason: Option<DenyReason>,
        route: Option<usize>,
        elapsed: Duration,
    ) {
        let decisions = route
            .and_then(|index| self.routes.get(index))
            .unwrap_or(&self.no_route);
        decisions.increment(reason);
        self.duration.record(elapsed.as_secs_f64());
    }

    /// Records one `tools/call` decision on route `route` whose tool matched rule `label`
    /// (`None`: no rule).
    pub fn record_tool_call(&self, route: Option<usize>, label: Option<&str>, allowed: bool) {
        let route = route
            .and_then(|index| self.routes.get(index))
            .map_or_else(|| "none".to_owned(), |decisions| decisions.name.to_string());
        metrics::counter!(
            MCP_TOOL_CALLS,
            "route" => route,
            "tool" => label.unwrap_or("unlisted").to_owned(),
            "result" => if allowed { "allow" } else { "deny" }
        )
        .increment(1);
    }

    /// Records a denial on a shadow route (`enforce: false`) that was answered with an allow.
    pub fn record_shadow_deny(&self, route: Option<usize>, reason: DenyReason) {
        let route = route
            .and_then(|index| self.routes.get(index))
            .map_or_else(|| "none".to_owned(), |decisions| decisions.name.to_string());
        metrics::counter!(SHADOW_DENIES, "route" => route, "reason" => reason.code()).increment(1);
    }

    pub fn record_cache_lookup(&self, hit: bool) {
        if hit {
            self.cache_hits.increment(1);
        } else {
            self.cache_misses.increment(1);
        }
    }
}

pub fn record_config_load(success: bool) {
    let result = if success { "success" } else { "failure" };
    metrics::counter!(CONFIG_LOADS, "result" => result).increment(1);
}
