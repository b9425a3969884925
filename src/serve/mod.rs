//! Serving decisions and operating the sidecar: listeners (gRPC over TCP, Unix and TLS; HTTP
//! mode; admin), readiness, the audit log writer, reloads and shutdown. Decisions themselves
//! come from `decision`; nothing here decides.
pub mod admin;
pub mod admin_api;
pub mod admin_auth;
pub mod audit;
pub mod budgets;
pub mod connection;
pub mod fleet;
pub mod grpc;
pub mod http_authz;
pub mod http_server;
pub mod reload;
pub mod runtime;
pub mod tls;
