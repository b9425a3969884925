//! Deciding one request, and nothing about transport.
mod cache;
pub mod delegation;
pub mod facts;
pub mod identity;
pub mod path;
pub mod pipeline;
pub mod policy;
pub mod reason;
mod recent;
pub mod record;
pub mod response;
pub mod revocation;
pub mod routes;
pub mod settings;
pub mod spiffe;
pub mod telemetry;
pub mod token;

pub use facts::RequestFacts;
pub use pipeline::{Authorizer, CheckError, Evaluation, Shared};
pub use settings::{CacheConfig, DecisionSettings};
