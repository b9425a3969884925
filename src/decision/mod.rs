//! Deciding one request, and nothing about transport: the pipeline of DESIGN.md from the raw
//! facts of a request to a grant or a denial, and the `CheckResponse` that says so.
//!
//! Guarantees: nothing here names tonic, axum, hyper, tokio's network or I/O types, or a
//! module of `config`, `serve` or `cli` (`tests/layering.rs`). It is built from a
//! [`DecisionSettings`] and reports through two narrow seams: [`record::DecisionLog`] for the
//! audit log, and the `metrics` facade ([`telemetry`]). Subsystems that talk to a network
//! service hand it plain values (today: the [`revocation`] list behind an `Arc`). Still here
//! although it is I/O: [`token::remote`], which fetches JWKS over HTTPS with reqwest.
pub mod branch;
pub mod budget;
pub mod cache;
pub mod delegation;
pub mod facts;
pub mod files;
pub mod identity;
pub mod mcp;
pub mod path;
pub mod pipeline;
pub mod policy;
pub mod reason;
pub mod recent;
pub mod record;
pub mod response;
pub mod revocation;
pub mod routes;
pub mod settings;
pub mod spiffe;
pub mod telemetry;
pub mod token;

pub use facts::RequestFacts;
pub use pipeline::{Authorizer, CheckError, Decided, Evaluation, PendingCharge, Shared};
pub use settings::{CacheConfig, DecisionSettings};
