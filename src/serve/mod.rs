//! Serving decisions and operating the sidecar.
pub mod admin;
pub mod admin_api;
pub mod audit;
pub mod connection;
pub mod grpc;
pub mod http_authz;
pub mod reload;
pub mod runtime;
pub mod tls;
