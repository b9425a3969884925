//! The whole sidecar: admin endpoints, readiness and gRPC health flips, metrics moved by
//! requests, the audit line of a deny, overload rejection, graceful shutdown.

mod common;

use actguard::config::{Config, ListenAddress};
use actguard::decision::CheckError;
use actguard::devkit::{DevAlgorithm, DevIssuer};
use actguard::serve::grpc::{self, CheckHandler, Listener, ServeOptions};
use actguard::serve::runtime::{self, Sidecar};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub struct HttpAnswer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// A minimal HTTP/1.1 client (one request per connection), so the tests need no HTTP crate.
pub async fn http(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: calendar.example.org\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

struct Running {
    sidecar: Sidecar,
    issuer: DevIssuer,
    client: AuthorizationClient<tonic::transport::Channel>,
    _scratch: tempfile::TempDir,
    audit_path: std::path::PathBuf,
}

async fn start_sidecar(extra_identity: &str) -> Running {
    start_sidecar_with(extra_identity, "").await
}

async fn start_sidecar_with(extra_identity: &str, extra_listen: &str) -> Running {
    let scratch = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let audit_path = scratch.path().join("audit.log");
    let yaml = config_yaml("  leeway: 30s", "audit:\n  output: audit.log\n")
        .replace(
            "listen:\n  grpc: 127.0.0.1:0",
            &format!("listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  http: 127.0.0.1:0{extra_listen}"),
        )
        .replace(
            "  trust_domains: [example.org, partner.example]",
            &format!("  trust_domains: [example.org, partner.example]\n{extra_identity}"),
        );
    let config = Config::from_yaml(&yaml, scratch.path()).unwrap();
    let sidecar = runtime::start(config).await.unwrap();
    let client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
        .await
        .unwrap();
    Running {
        sidecar,
        issuer,
        client,
        _scratch: scratch,
        audit_path,
    }
}

fn metric_value(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_listener_serves_health_and_metrics_but_never_the_revocation_api() {
    let sources = "  sources: [certificate, principal, xfcc]";
    let running = start_sidecar_with(sources, "\n  probes: 127.0.0.1:0").await;
    let probes = running
        .sidecar
        .probes_address
        .expect("probe listener bound");
    assert_eq!(http(probes, "GET", "/healthz", &[]).await.status, 200);
    let ready = http(probes, "GET", "/readyz", &[]).await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, r#"{"ready":true}"#)
    );
    let metrics = http(probes, "GET", "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("actguard_ready 1"),
        "{}",
        metrics.body
    );
    // The revocation API is on the admin listener only: whoever reaches the probe port (the
    // kubelet, Prometheus, anything on the node) cannot revoke or unrevoke.
    for method in ["Revoke", "Unrevoke", "List"] {
        let path = format!("/actguard.admin.v1.Revocations/{method}");
        let answer = http(
            probes,
            "POST",
            &path,
            &[
                ("content-type", "application/grpc"),
                ("content-length", "0"),
            ],
        )
        .await;
        assert_eq!(answer.status, 404, "{path} on the probe listener");
    }
    let admin = running.sidecar.admin_address.unwrap();
    let answer = http(
        admin,
        "POST",
        "/actguard.admin.v1.Revocations/List",
        &[
            ("content-type", "application/grpc"),
            ("content-length", "0"),
        ],
    )
    .await;
    assert_ne!(
        answer.status, 404,
        "the admin listener still serves the API"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_metrics_health_and_audit() {
    let sources = "  sources: [certificate, principal, xfcc]";
    let mut running = start_sidecar(sources).await;
    let admin = running.sidecar.admin_address.unwrap();
    assert_eq!(http(admin, "GET", "/healthz", &[]).await.status, 200);
    let ready = http(admin, "GET", "/readyz", &[]).await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, r#"{"ready":true}"#)
    );
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.sidecar.grpc_address))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let before = http(admin, "GET", "/metrics", &[]).await.body;
    let claims = delegated_claims_for(&[ORCHESTRATOR, SCHEDULER]);
    let token = running.issuer.sign(&claims).unwrap();
    let certificate = actguard::devkit::DevCa::new("example.org").unwrap();
    let scheduler = certificate.issue_svid(SCHEDULER).unwrap().url_encoded();
    let orchestrator = certificate.issue_svid(ORCHESTRATOR).unwrap().url_encoded();
    let allow = RequestSpec::get("/calendar/events")
        .certificate(&scheduler)
        .bearer(&token)
        .build();
    let deny = RequestSpec::get("/calendar/events")
        .certificate(&orchestrator)
        .bearer(&token)
        .build();
    assert!(
        Answer::from(
            running
                .client
                .check(allow.clone())
                .await
                .unwrap()
                .into_inner()
        )
        .is_allow()
    );
    assert!(Answer::from(running.client.check(allow).await.unwrap().into_inner()).is_allow());
    let denied = Answer::from(running.client.check(deny).await.unwrap().into_inner());
    assert_eq!(denied.reason, "actor_mismatch");

    let after = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        after.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4")
    );
    let moved = |name: &str, labels: &[&str]| {
        metric_value(&after.body, name, labels) - metric_value(&before, name, labels)
    };
    // The recorder is process-wide and other tests run beside this one: at least, not exactly
    // (tests/metrics.rs, alone in its binary, asserts exact deltas).
    assert!(
        moved(
            "actguard_decisions_total",
            &["result=\"allow\"", "route=\"calendar-read\""]
        ) >= 2.0
    );
    assert!(
        moved(
            "actguard_decisions_total",
            &[
                "result=\"deny\"",
                "reason=\"actor_mismatch\"",
                "route=\"calendar-read\""
            ]
        ) >= 1.0
    );
    assert!(moved("actguard_check_duration_seconds_count", &[]) >= 3.0);
    assert!(moved("actguard_token_cache_hits_total", &[]) >= 2.0);
    assert!(
        metric_value(
            &after.body,
            "actguard_jwks_keys",
            &["issuer=\"https://sts.example.org\""]
        ) >= 1.0
    );
    assert!(after.body.contains("actguard_token_cache_entries"));
    assert!(after.body.contains("actguard_ready 1"));
    assert!(after.body.contains("actguard_checks_in_flight"));
    assert!(
        after
            .body
            .contains("actguard_config_loads_total{result=\"success\"}")
    );

    // Draining: readiness and health flip while checks are still answered.
    running.sidecar.begin_drain().await;
    let draining = http(admin, "GET", "/readyz", &[]).await;
    assert_eq!(draining.status, 503);
    assert_eq!(draining.body, r#"{"ready":false,"reason":"shutting down"}"#);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::NotServing as i32);
    let audit_path = running.audit_path.clone();
    running.sidecar.shutdown().await.unwrap();

    let audit = std::fs::read_to_string(audit_path).unwrap();
    assert!(
        !audit.contains(&token),
        "the audit log must never hold the token"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(!audit.contains(signature));
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let deny_line = lines
        .iter()
        .find(|l| l["decision"] == "deny")
        .expect("a deny line");
    assert_eq!(deny_line["reason"], "actor_mismatch");
    assert_eq!(deny_line["caller"], ORCHESTRATOR);
    assert_eq!(deny_line["subject"], "user:alice");
    assert_eq!(
        deny_line["chain"],
        serde_json::json!([ORCHESTRATOR, SCHEDULER])
    );
    assert_eq!(deny_line["route"], "calendar-read");
    assert_eq!(deny_line["method"], "GET");
    assert_eq!(deny_line["path"], "/calendar/events");
    assert!(deny_line["latency_us"].is_u64());
    assert_eq!(lines.iter().filter(|l| l["decision"] == "allow").count(), 2);
}

fn delegated_claims_for(actors: &[&str]) -> serde_json::Value {
    actguard::devkit::delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        actors,
        actguard::decision::token::unix_now(),
        300,
    )
}

/// One shared table: the same inputs through gRPC (XFCC in the headers) and HTTP mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_gives_the_same_answers_as_grpc_mode() {
    let mut running = start_sidecar("  sources: [xfcc]").await;
    let http_address = running.sidecar.http_address.unwrap();
    let sign = |actors: &[&str], scope: Option<&str>| {
        let mut claims = delegated_claims_for(actors);
        if let Some(scope) = scope {
            claims["scope"] = scope.into();
        }
        running.issuer.sign(&claims).unwrap()
    };
    let xfcc = |id: &str| format!("By={LOCAL};Hash=00;URI={id}");
    let delegated = sign(&[ORCHESTRATOR, SCHEDULER], None);
    // (name, XFCC header, method, path, token, expected code)
    type Case<'a> = (&'a str, String, &'a str, &'a str, Option<String>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "allow",
            xfcc(SCHEDULER),
            "GET",
            "/calendar/events?day=mon",
            Some(delegated.clone()),
            "allow",
        ),
        (
            "replay by prior hop",
            xfcc(ORCHESTRATOR),
            "GET",
            "/calendar/events",
            Some(delegated.clone()),
            "actor_mismatch",
        ),
        (
            "no token",
            xfcc(SCHEDULER),
            "GET",
            "/calendar",
            None,
            "token_missing",
        ),
        (
            "bad path",
            xfcc(SCHEDULER),
            "GET",
            "/calendar%2Fx",
            Some(delegated.clone()),
            "path_invalid",
        ),
        (
            "no route",
            xfcc(SCHEDULER),
            "GET",
            "/elsewhere",
            Some(delegated.clone()),
            "no_route",
        ),
        (
            "scope",
            xfcc(SCHEDULER),
            "POST",
            "/calendar",
            Some(delegated.clone()),
            "insufficient_scope",
        ),
        (
            "no identity",
            String::new(),
            "GET",
            "/calendar",
            Some(delegated.clone()),
            "caller_identity_missing",
        ),
        (
            "garbage token",
            xfcc(SCHEDULER),
            "GET",
            "/calendar",
            Some("a.b.c".into()),
            "token_malformed",
        ),
    ];
    for (name, xfcc_value, method, path, token, expected) in cases {
        let mut spec = RequestSpec::new(method, path);
        let mut headers: Vec<(&str, String)> = Vec::new();
        if !xfcc_value.is_empty() {
            spec = spec.header("x-forwarded-client-cert", &xfcc_value);
            headers.push(("x-forwarded-client-cert", xfcc_value.clone()));
        }
        if let Some(token) = &token {
            spec = spec.bearer(token);
            headers.push(("authorization", format!("Bearer {token}")));
        }
        let grpc = Answer::from(
            running
                .client
                .check(spec.build())
                .await
                .unwrap()
                .into_inner(),
        );
        let header_refs: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let over_http = http(http_address, method, path, &header_refs).await;
        assert_eq!(grpc.reason, expected, "case {name} (gRPC)");
        assert_eq!(
            i32::from(over_http.status),
            grpc.http_status,
            "case {name}: status"
        );
        if expected == "allow" {
            // No sid/jti in the token: the HTTP answer still carries them, empty, so a proxy
            // copying them upstream overwrites whatever the client sent.
            assert_eq!(
                over_http.headers.get("x-actguard-sid").map(String::as_str),
                Some(""),
                "case {name}"
            );
            assert_eq!(
                over_http.headers.get("x-actguard-jti").map(String::as_str),
                Some(""),
                "case {name}"
            );
            for header in ["x-actguard-subject", "x-actguard-actor", "x-actguard-chain"] {
                assert_eq!(
                    over_http.headers.get(header).map(String::as_str),
                    grpc.header(header),
                    "case {name}: {header}"
                );
            }
        } else {
            let body: serde_json::Value = serde_json::from_str(&over_http.body).unwrap();
            assert_eq!(body, grpc.body, "case {name}: body");
            assert_eq!(
                over_http
                    .headers
                    .get("www-authenticate")
                    .map(String::as_str),
                grpc.header("www-authenticate"),
                "case {name}: challenge"
            );
        }
    }
    running.sidecar.shutdown().await.unwrap();
}

/// Holds every check for a while, so concurrency can be observed.
struct Slow;

impl CheckHandler for Slow {
    fn check(
        &self,
        _request: &CheckRequest,
        _may_retry: bool,
    ) -> Result<CheckResponse, CheckError> {
        // block_in_place hands this worker's other tasks (the connection) to another thread.
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(300)));
        Ok(CheckResponse::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_overload_is_rejected_at_once_not_queued() {
    let listener = Listener::bind(&ListenAddress::parse("127.0.0.1:0").unwrap())
        .await
        .unwrap();
    let address = listener.describe();
    let options = ServeOptions {
        max_concurrent_checks: 1,
        ..ServeOptions::default()
    };
    tokio::spawn(grpc::run_with(
        listener,
        Arc::new(Slow),
        options,
        std::future::pending(),
    ));
    let client = AuthorizationClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let (mut first, mut second) = (client.clone(), client);
    let slow = tokio::spawn(async move { first.check(CheckRequest::default()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let rejected = second.check(CheckRequest::default()).await.unwrap_err();
    assert_eq!(rejected.code(), tonic::Code::ResourceExhausted);
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "rejected without waiting"
    );
    assert!(slow.await.unwrap().is_ok(), "the admitted check completes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_failure_names_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let scratch = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate(ISSUER, "k", DevAlgorithm::Es256).unwrap();
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let yaml = config_yaml("  leeway: 30s", "audit:\n  output: \"off\"\n").replace(
        "listen:\n  grpc: 127.0.0.1:0",
        &format!("listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:{port}"),
    );
    let config = Config::from_yaml(&yaml, scratch.path()).unwrap();
    let error = runtime::start(config).await.err().unwrap();
    assert!(error.starts_with("listen.admin: cannot bind"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_http_mode_reads_only_the_configured_proxys_headers_each_once() {
    let token = |running: &Running| {
        running
            .issuer
            .sign(&delegated_claims_for(&[ORCHESTRATOR, SCHEDULER]))
            .unwrap()
    };
    let xfcc = format!("By={LOCAL};URI={SCHEDULER}");
    // nginx auth_request: a fixed subrequest path, the original in X-Original-*.
    let nginx = start_sidecar_with("  sources: [xfcc]", "\n  http_request: original_headers").await;
    let address = nginx.sidecar.http_address.unwrap();
    let bearer = format!("Bearer {}", token(&nginx));
    let base = vec![
        ("x-forwarded-client-cert", xfcc.as_str()),
        ("authorization", bearer.as_str()),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut headers = base.clone();
        headers.extend_from_slice(extra);
        headers
    };
    let original = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/calendar/events?d=1"),
    ];
    let answer = http(address, "GET", "/auth", &with(&original)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.headers.get("x-actguard-actor").map(String::as_str),
        Some(SCHEDULER)
    );
    // A client's X-Forwarded-* (nginx passes it through) describes nothing.
    let mut forged = with(&original);
    forged.extend_from_slice(&[
        ("x-forwarded-method", "POST"),
        ("x-forwarded-uri", "/admin"),
    ]);
    let answer = http(address, "GET", "/auth", &forged).await;
    assert_eq!(
        answer.status, 200,
        "the X-Original-* request decides: {}",
        answer.body
    );
    let forged_only = with(&[
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/calendar/events"),
    ]);
    let answer = http(address, "GET", "/calendar/events", &forged_only).await;
    assert_eq!(
        answer.status, 400,
        "no X-Original-URI: refused, never guessed"
    );
    assert!(answer.body.contains("path_invalid"), "{}", answer.body);
    // A trusted header twice: whichever copy is meant is a guess.
    for duplicated in [
        vec![
            ("x-original-uri", "/calendar/events"),
            ("x-original-uri", "/admin"),
        ],
        vec![("x-original-method", "GET"), ("x-original-method", "POST")],
        vec![
            ("host", "calendar.example.org"),
            ("host", "admin.example.org"),
        ],
    ] {
        let mut headers = with(&original);
        headers.retain(|(name, _)| !duplicated.iter().any(|(d, _)| d == name));
        headers.extend(duplicated.iter().copied());
        let answer = http(address, "GET", "/auth", &headers).await;
        assert_eq!(answer.status, 400, "{duplicated:?}: {}", answer.body);
        assert!(answer.body.contains("path_invalid"), "{}", answer.body);
    }
    nginx.sidecar.shutdown().await.unwrap();

    // Traefik forwardAuth: X-Forwarded-* only; the method decides the route.
    let traefik =
        start_sidecar_with("  sources: [xfcc]", "\n  http_request: forwarded_headers").await;
    let address = traefik.sidecar.http_address.unwrap();
    let bearer = format!("Bearer {}", token(&traefik));
    let base = vec![
        ("x-forwarded-client-cert", xfcc.as_str()),
        ("authorization", bearer.as_str()),
    ];
    let mut headers = base.clone();
    headers.extend_from_slice(&[
        ("x-forwarded-method", "POST"),
        ("x-forwarded-uri", "/calendar/events"),
        ("x-forwarded-host", "calendar.example.org"),
    ]);
    let answer = http(address, "GET", "/", &headers).await;
    assert_eq!(answer.status, 403);
    assert!(
        answer.body.contains("insufficient_scope"),
        "{}",
        answer.body
    );
    // X-Original-* means nothing to a Traefik configuration.
    let mut headers = base.clone();
    headers.extend_from_slice(&[
        ("x-original-method", "GET"),
        ("x-original-uri", "/calendar/events"),
    ]);
    let answer = http(address, "GET", "/", &headers).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    // Each X-Forwarded-* header it reads, twice: refused as with nginx's X-Original-*.
    let forwarded = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/calendar/events"),
        ("x-forwarded-host", "calendar.example.org"),
    ];
    let mut headers = base.clone();
    headers.extend_from_slice(&forwarded);
    let answer = http(address, "GET", "/", &headers).await;
    assert_eq!(answer.status, 200, "the control: {}", answer.body);
    for (name, duplicated) in [
        (
            "uri",
            [
                ("x-forwarded-uri", "/calendar/events"),
                ("x-forwarded-uri", "/admin"),
            ],
        ),
        (
            "method",
            [
                ("x-forwarded-method", "GET"),
                ("x-forwarded-method", "POST"),
            ],
        ),
        (
            "host",
            [
                ("x-forwarded-host", "calendar.example.org"),
                ("x-forwarded-host", "admin.example.org"),
            ],
        ),
    ] {
        let mut headers = base.clone();
        headers.extend(forwarded.iter().filter(|(n, _)| *n != duplicated[0].0));
        headers.extend_from_slice(&duplicated);
        let answer = http(address, "GET", "/", &headers).await;
        assert_eq!(answer.status, 400, "{name} twice: {}", answer.body);
        assert!(
            answer.body.contains("path_invalid"),
            "{name} twice: {}",
            answer.body
        );
    }
    traefik.sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_http_mode_audits_the_request_id_the_proxy_sent() {
    // HTTP mode has no Envoy stream id: the audit record carries the request's X-Request-Id,
    // or nothing.
    let running = start_sidecar("  sources: [xfcc]").await;
    let address = running.sidecar.http_address.unwrap();
    let xfcc = format!("By={LOCAL};URI={SCHEDULER}");
    let bearer = format!(
        "Bearer {}",
        running
            .issuer
            .sign(&delegated_claims_for(&[ORCHESTRATOR, SCHEDULER]))
            .unwrap()
    );
    for (path, request_id) in [
        ("/calendar/with-id", Some("req-7f3a")),
        ("/calendar/without-id", None),
    ] {
        let mut headers = vec![
            ("x-forwarded-client-cert", xfcc.as_str()),
            ("authorization", bearer.as_str()),
        ];
        headers.extend(request_id.map(|id| ("x-request-id", id)));
        assert_eq!(
            http(address, "GET", path, &headers).await.status,
            200,
            "{path}"
        );
    }
    let audit_path = running.audit_path.clone();
    running.sidecar.shutdown().await.unwrap();
    let audit = std::fs::read_to_string(audit_path).unwrap();
    let request_id_of = |path: &str| {
        audit
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .find(|line| line["path"] == path)
            .unwrap_or_else(|| panic!("no audit line for {path}:\n{audit}"))["request_id"]
            .clone()
    };
    assert_eq!(request_id_of("/calendar/with-id"), "req-7f3a");
    assert_eq!(request_id_of("/calendar/without-id"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_http_mode_has_envoy_remove_the_token_unless_the_route_forwards_it() {
    // Envoy's http_service removes what `x-envoy-auth-headers-to-remove` names: the client's
    // unknown x-actguard-* headers always, `authorization` unless the route sets forward_token.
    let running = start_sidecar("  sources: [xfcc]").await;
    let address = running.sidecar.http_address.unwrap();
    let xfcc = format!("By={LOCAL};URI={SCHEDULER}");
    let claims = delegated_claims_for(&[SCHEDULER]);
    let bearer = format!("Bearer {}", running.issuer.sign(&claims).unwrap());
    let headers = [
        ("x-forwarded-client-cert", xfcc.as_str()),
        ("authorization", bearer.as_str()),
        ("x-actguard-extra", "smuggled"),
    ];
    for (route, path, expected) in [
        (
            "calendar-read",
            "/calendar/events",
            "x-actguard-extra,authorization",
        ),
        ("webhook (forward_token)", "/hooks/run", "x-actguard-extra"),
    ] {
        let answer = http(address, "GET", path, &headers).await;
        assert_eq!(answer.status, 200, "{route}: {}", answer.body);
        assert_eq!(
            answer
                .headers
                .get("x-envoy-auth-headers-to-remove")
                .map(String::as_str),
            Some(expected),
            "{route}"
        );
    }
    running.sidecar.shutdown().await.unwrap();
}
