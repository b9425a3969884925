//! What both benchmarks share: the identities of the scenario and the one request shape they
//! send (a cached-path GET of the calendar tool, as Envoy reports it).

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

pub const ISSUER: &str = "https://sts.example.org";
pub const LOCAL: &str = "spiffe://example.org/tool/calendar";
#[allow(dead_code)] // the load benchmark's deny scenario only
pub const ORCHESTRATOR: &str = "spiffe://example.org/agent/orchestrator";
pub const SCHEDULER: &str = "spiffe://example.org/agent/scheduler";

/// `GET /calendar/events?day=mon` from the peer `certificate` with `Bearer {token}`.
pub fn check_request(certificate: &str, token: &str) -> CheckRequest {
    actguard::devkit::envoy_check_request(
        certificate,
        "GET",
        "calendar.example.org",
        "/calendar/events?day=mon",
        token,
    )
}
