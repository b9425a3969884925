//! actguard: an Envoy ext_authz v3 sidecar that binds an RFC 8693 delegation chain to the
//! caller's SPIFFE ID.
//!
//! A tour of the crate, in the order a request travels through it:
//!
//! - [`server`]: the thin gRPC adapter (`envoy.service.auth.v3.Authorization/Check`) and
//!   `server::run(listener, authorizer, shutdown)`, which takes an already-bound listener so
//!   tests can bind port 0.
//! - [`authorizer`]: the decision pipeline. It pulls the raw facts out of a `CheckRequest`,
//!   runs the steps of DESIGN.md in order (first failure wins) and owns the verified-token
//!   cache.
//! - [`identity`]: the caller's [`spiffe::SpiffeId`] from the peer certificate, Envoy's
//!   principal, or (only when configured) `x-forwarded-client-cert`.
//! - [`path`] and [`routes`]: request path normalisation and first-match route selection.
//! - [`token`]: the `Authorization: Bearer` header, then JWS verification into a
//!   [`token::VerifiedToken`]; nothing else in the crate can read a token's claims.
//! - [`policy`]: a pure function from (caller, route, verified token) to a grant or a denial:
//!   the binding rule, the delegation chain rules and the route rules. No protobuf in sight.
//! - [`reason`]: the one enum of deny reasons, with the stable codes used in responses and
//!   logs, and the separate [`reason::Fault`] type for internal faults (never an allow).
//! - [`response`]: the only place that builds a `CheckResponse`.
//! - [`config`]: YAML configuration parsed once into typed values; every error is collected
//!   with its key path.
//! - [`runtime`]: the whole sidecar: listeners bound before serving, readiness and gRPC
//!   health, orderly shutdown; [`admin`] (`/healthz`, `/readyz`, `/metrics`), [`http_authz`]
//!   (ext_authz over plain HTTP), [`audit`] (JSON decision log), [`telemetry`] (metrics).
//! - [`devkit`]: throwaway PKI and token issuer used by `actguard demo` and the tests.
//! - [`demo`]: the embedded scenario behind `actguard demo`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_api;
pub mod admin_client;
pub mod audit;
pub mod authorizer;
pub mod config;
pub mod delegation;
pub mod demo;
pub mod dev_cli;
pub mod devkit;
pub mod explain;
pub mod http_authz;
pub mod identity;
pub mod inject;
pub mod path;
pub mod policy;
pub mod reason;
pub mod reload;
pub mod response;
pub mod revocation;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod spiffe;
pub mod telemetry;
pub mod tls;
pub mod token;
