//! Route selection over real gRPC: normalisation tricks cannot reach a laxer route.

mod common;

use common::*;

#[tokio::test]
async fn rule_paths_are_normalised_before_matching() {
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[ORCHESTRATOR, SCHEDULER]);
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let cases = [
        ("plain", "GET", "/calendar/events", "allow", 200),
        // Prefixes compare case-sensitively: `/Admin` is not the admin route (nor any other).
        (
            "prefix case-sensitive",
            "GET",
            "/Admin/users",
            "no_route",
            403,
        ),
        (
            "prefix case-sensitive, other route",
            "GET",
            "/CALENDAR/events",
            "no_route",
            403,
        ),
        ("query stripped", "GET", "/calendar?x=/admin", "allow", 200),
        (
            "dot segments resolve into admin",
            "GET",
            "/calendar/../admin/users",
            "caller_not_allowed",
            403,
        ),
        (
            "encoded letters decode into admin",
            "GET",
            "/%61dmin/users",
            "caller_not_allowed",
            403,
        ),
        (
            "matrix parameters cut",
            "GET",
            "/admin;x=1/users",
            "caller_not_allowed",
            403,
        ),
        (
            "duplicate slashes merged",
            "GET",
            "//calendar//events",
            "allow",
            200,
        ),
        (
            "encoded slash rejected",
            "GET",
            "/calendar%2F..%2Fadmin",
            "path_invalid",
            400,
        ),
        (
            "encoded backslash rejected",
            "GET",
            "/calendar%5Cadmin",
            "path_invalid",
            400,
        ),
        (
            "encoded dot rejected",
            "GET",
            "/calendar/%2e%2e/admin",
            "path_invalid",
            400,
        ),
        (
            "dot-dot with parameters rejected",
            "GET",
            "/calendar/..;/admin",
            "path_invalid",
            400,
        ),
        (
            "dot with parameters rejected",
            "GET",
            "/.;x/admin",
            "path_invalid",
            400,
        ),
        (
            "above root rejected",
            "GET",
            "/../calendar",
            "path_invalid",
            400,
        ),
        ("segment-aware prefix", "GET", "/calendarx", "no_route", 403),
        ("unknown path", "GET", "/unknown", "no_route", 403),
        (
            "method decides",
            "DELETE",
            "/calendar/events",
            "no_route",
            403,
        ),
    ];
    for (name, method, path, expected, status) in cases {
        let request = RequestSpec::new(method, path)
            .certificate(&certificate)
            .bearer(&token)
            .build();
        let answer = harness.check(request).await;
        assert_eq!(answer.reason, expected, "case {name}");
        assert_eq!(answer.http_status, status, "case {name}");
    }
}

#[tokio::test]
async fn rule_hosts_restrict_routes() {
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[SCHEDULER]);
    let certificate = harness.svid(SCHEDULER).url_encoded();
    for (host, expected) in [
        ("calendar.example.org", "allow"),
        ("CALENDAR.example.org:443", "allow"),
        ("email.example.org", "no_route"),
    ] {
        let mut spec = RequestSpec::get("/calendar")
            .certificate(&certificate)
            .bearer(&token);
        spec.host = host.into();
        assert_eq!(harness.check(spec.build()).await.reason, expected, "{host}");
    }
}

#[tokio::test]
async fn route_is_checked_before_the_token() {
    // An unroutable request is denied as such even without a token: no token parsing happens.
    let mut harness = Harness::start().await;
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let request = RequestSpec::get("/nowhere")
        .certificate(&certificate)
        .build();
    assert_eq!(harness.check(request).await.reason, "no_route");
}
