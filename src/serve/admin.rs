//! The admin listener: `/healthz` (process alive), `/readyz` (ready to decide), `/metrics`
//! (Prometheus text format), and on the same port the revocation gRPC API
//! (`actguard.admin.v1.Revocations`, HTTP/2), each of whose calls is authorized by the peer
//! the transport proved ([`crate::serve::admin_auth`]): on the default plain-TCP loopback
//! listener, no one may revoke or unrevoke.
//!
//! Readiness is a latch set by the runtime: ready once every listener is bound and every
//! issuer has keys, not ready again from the moment shutdown begins.

use crate::decision::Authorizer;
use crate::decision::telemetry;
use crate::serve::admin_api::{self, RevocationService, pb::revocations_server::RevocationsServer};
use crate::serve::admin_auth::AdminPolicy;
use crate::serve::audit::AuditLog;
use crate::serve::reload::LiveAuthorizer;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why the process is or is not ready.
#[derive(Debug, Default)]
pub struct Readiness {
    listeners_bound: AtomicBool,
    draining: AtomicBool,
    /// The budget ledger, when `budgets` is configured.
    budgets: std::sync::OnceLock<Arc<crate::serve::budgets::Ledger>>,
}

impl Readiness {
    pub fn mark_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::SeqCst);
    }

    pub fn mark_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Readiness follows `ledger` too: not ready while it cannot be reached, unless
    /// `budgets.on_error: allow` (then budgeted requests pass uncharged, and readiness stays).
    pub fn watch_budgets(&self, ledger: Arc<crate::serve::budgets::Ledger>) {
        let _ = self.budgets.set(ledger);
    }

    /// `Ok` when ready, else the reason.
    pub fn check(&self, authorizer: &Authorizer) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        if !self.listeners_bound.load(Ordering::SeqCst) {
            return Err("listeners are not bound yet".into());
        }
        if !authorizer.revocations().is_current() {
            return Err(
                "fleet revocations are not confirmed current (revocation.nats unreachable or behind for longer than max_staleness)"
                    .into(),
            );
        }
        if let Some(ledger) = self.budgets.get()
            && !ledger.settings().allow_on_error
        {
            ledger.health()?;
        }
        let keyless = authorizer.issuers_without_keys();
        if !keyless.is_empty() {
            return Err(format!(
                "no usable keys for issuer(s): {}",
                keyless.join(", ")
            ));
        }
        Ok(())
    }
}

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The authorizer in force (swapped by reloads).
    pub authorizer: Arc<LiveAuthorizer>,
    pub readiness: Arc<Readiness>,
    pub metrics: PrometheusHandle,
}

/// What the revocation API needs beside the probes' state.
#[derive(Clone)]
pub struct AdminApi {
    pub policy: Arc<AdminPolicy>,
    pub audit: AuditLog,
    /// With `revocation.nats`: where revocations are written (or refused, read-only).
    pub fleet: Option<Arc<crate::serve::fleet::FleetWrites>>,
}

/// `/healthz`, `/readyz` and `/metrics`: what the probe listener serves, and the admin listener
/// beside the revocation API. Nothing here changes state.
pub fn probe_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

/// The admin routes, plus the revocation gRPC API (and reflection when asked) on the same port.
pub fn router(state: AdminState, api: AdminApi, reflection: bool) -> Router {
    // A revocation request is a kind, a value of at most 2 KiB and a TTL: anything much
    // larger is refused before it is decoded, logged or audited.
    let revocations = RevocationsServer::new(
        RevocationService::new(
            Arc::clone(state.authorizer.current().revocations()),
            api.policy,
            api.audit,
        )
        .with_fleet(api.fleet),
    )
    .max_decoding_message_size(admin_api::MAX_REQUEST_BYTES);
    let mut grpc = tonic::service::Routes::new(revocations);
    if reflection {
        match admin_api::reflection() {
            Ok(service) => grpc = grpc.add_service(service),
            Err(error) => tracing::error!(%error, "gRPC reflection unavailable"),
        }
    }
    probe_router(state).merge(grpc.into_axum_router())
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    let json = [(header::CONTENT_TYPE, "application/json")];
    let authorizer = state.authorizer.current();
    match state.readiness.check(&authorizer) {
        Ok(()) => {
            // Shadow routes are named: ready, but not enforcing everything configured.
            let shadow: Vec<&str> = authorizer
                .routes()
                .iter()
                .filter(|route| !route.enforce)
                .map(|route| &*route.name)
                .collect();
            let body = if shadow.is_empty() {
                r#"{"ready":true}"#.to_owned()
            } else {
                serde_json::json!({ "ready": true, "shadow_routes": shadow }).to_string()
            };
            (StatusCode::OK, json, body)
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json,
            serde_json::json!({ "ready": false, "reason": reason }).to_string(),
        ),
    }
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // Gauges that are cheaper to read at scrape time than to maintain per request.
    let authorizer = state.authorizer.current();
    metrics::gauge!(telemetry::CACHE_ENTRIES).set(authorizer.cached_token_count() as f64);
    // File keys are as old as the configuration; remote keys as old as their last fetch.
    let config_age = authorizer.created_at().elapsed().as_secs_f64();
    let fetched_ages: std::collections::HashMap<String, f64> = authorizer
        .remote_issuers()
        .iter()
        .filter_map(|remote| Some((remote.issuer().to_owned(), remote.age()?.as_secs_f64())))
        .collect();
    for (issuer, keys) in authorizer.issuer_key_counts() {
        let age = fetched_ages.get(&issuer).copied().unwrap_or(config_age);
        metrics::gauge!(telemetry::JWKS_KEYS, "issuer" => issuer.clone()).set(keys as f64);
        metrics::gauge!(telemetry::JWKS_AGE, "issuer" => issuer).set(age);
    }
    if let Some(staleness) = authorizer.revocations().staleness_seconds() {
        metrics::gauge!(telemetry::REVOCATION_STALENESS).set(staleness);
    }
    let ready = state.readiness.check(&authorizer).is_ok();
    metrics::gauge!(telemetry::READY).set(if ready { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
