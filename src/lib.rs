//! actguard: an Envoy ext_authz v3 sidecar that binds an RFC 8693 delegation chain to the
//! caller's SPIFFE ID.
//!
//! Five folders, one per layer; an arrow only ever points down (`tests/layering.rs` holds it):
//! `cli` → `serve` → `config` → `decision`, and `inject` beside `serve`.
//!
//! A tour of the crate, in the order a request travels through it:
//!
//! - [`serve`]: how decisions are served and operated.
//!   - [`serve::runtime`]: the whole sidecar: every listener bound before serving, readiness
//!     and gRPC health, orderly shutdown.
//!   - [`serve::connection`], [`serve::tls`]: the connections every listener hands to h2;
//!     mutual TLS on the ext_authz and admin listeners (client CA, peer allow-list, reloads).
//!   - [`serve::grpc`]: the thin gRPC adapter (`envoy.service.auth.v3.Authorization/Check`):
//!     admission control, the per-check deadline, `run(listener, authorizer, shutdown)` on an
//!     already-bound listener so tests bind port 0.
//!   - [`serve::http_authz`]: ext_authz over plain HTTP (Envoy `http_service`, nginx
//!     `auth_request`).
//! - [`decision`]: everything a decision depends on, and nothing about transport.
//!   - [`decision::facts`]: the raw facts of one request, borrowed from a `CheckRequest`.
//!   - [`decision::pipeline`]: the steps of DESIGN.md in order (first failure wins), with the
//!     verified-token and certificate caches of [`decision::cache`] and the per-thread recent
//!     slots of [`decision::recent`].
//!   - [`decision::identity`]: the caller's [`decision::spiffe::SpiffeId`] from the peer
//!     certificate, Envoy's principal, or (only when configured) `x-forwarded-client-cert`;
//!     [`decision::spiffe`]: SPIFFE IDs, trust domains and caller patterns, parsed once.
//!   - [`decision::path`] and [`decision::routes`]: path normalisation and first-match route
//!     selection.
//!   - [`decision::token`]: the `Authorization: Bearer` header, then JWS verification into a
//!     [`decision::token::VerifiedToken`]; nothing else in the crate can read a token's claims.
//!   - [`decision::revocation`]: the revocation list and its matching (consulted right after
//!     the token verifies).
//!   - [`decision::policy`] and [`decision::delegation`]: a pure function from (caller, route,
//!     verified token) to a grant or a denial: the binding rule, the delegation chain rules
//!     (edges, ceilings) and the route rules.
//!   - [`decision::branch`]: execution branches (a sub-agent's path inside a session);
//!     [`decision::budget`]: what an allow on a budgeted route is to be charged.
//!   - [`decision::reason`]: the one enum of deny reasons with their stable codes, and the
//!     separate [`decision::reason::Fault`] for internal faults (never an allow).
//!   - [`decision::response`]: the only place that builds a `CheckResponse`.
//!   - [`decision::record`]: what a decision tells the audit log, through the narrow
//!     [`decision::record::DecisionLog`] seam; [`decision::telemetry`]: the metric catalogue
//!     and the process-wide recorder the pipeline reports into.
//!   - [`decision::settings`]: the decision half of a configuration.
//! - [`serve`] again, after the decision: [`serve::audit`] (the JSON decision log's writer),
//!   [`serve::admin`] (`/healthz`, `/readyz`, `/metrics`), [`serve::admin_api`] (the
//!   revocation API), [`serve::reload`] (a new configuration swapped in whole, on SIGHUP or a
//!   file change), [`serve::fleet`] (revocations shared on NATS), [`serve::budgets`] (the
//!   budget ledger on Redis: an allow on a budgeted route is charged there before it is sent).
//! - [`config`]: YAML parsed once into typed values (the [`decision::DecisionSettings`] and
//!   the operational keys); every error is collected with its key path.
//! - [`cli`]: the subcommands behind `main.rs` (`serve`, `check-config`, `demo`, `explain`,
//!   `dev`, `admin`, `admin budgets`, `graph`, `policy suggest`, `inject`).
//! - [`inject`]: the Kubernetes sidecar-injection webhook.
//! - [`devkit`]: throwaway PKI and token issuer used by `actguard demo`, the tests and the
//!   benchmarks.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod decision;
pub mod devkit;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod inject;
pub mod serve;
