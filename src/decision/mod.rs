//! Deciding one request, and nothing about transport.
pub mod delegation;
pub mod identity;
pub mod path;
pub mod pipeline;
pub mod policy;
pub mod reason;
pub mod record;
pub mod response;
pub mod revocation;
pub mod routes;
pub mod settings;
pub mod spiffe;
pub mod telemetry;
pub mod token;

pub use pipeline::*;
pub use settings::{CacheConfig, DecisionSettings};
