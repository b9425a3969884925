//! Admission control and the per-check deadline as a user configures them: `limits` from YAML
//! through `actguard serve`'s runtime, over gRPC and HTTP mode. A check is held in flight the
//! way production holds one: a token with an unknown `kid` waits for its issuer's JWKS refetch,
//! and this issuer answers the first fetch (at start) and then never again.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::time::{Duration, Instant};

struct Setup {
    sidecar: Sidecar,
    issuer: DevIssuer,
    issuer_url: String,
    certificate: String,
    _scratch: tempfile::TempDir,
}

async fn start(limits: &str) -> Setup {
    let issuer = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    let issuer_url = common::issuer::stalling_issuer(issuer.jwks().to_string(), |index| index > 0);
    start_with_issuer(limits, issuer, issuer_url).await
}

async fn start_with_issuer(limits: &str, issuer: DevIssuer, issuer_url: String) -> Setup {
    let scratch = tempfile::tempdir().unwrap();
    let yaml = config_yaml(
        "  leeway: 30s",
        &format!("audit:\n  output: \"off\"\n{limits}"),
    )
    .replace(
        "trust_domains: [example.org, partner.example]",
        "trust_domains: [example.org, partner.example]\n  sources: [certificate, xfcc]",
    )
    .replace(
        "listen:\n  grpc: 127.0.0.1:0",
        "listen:\n  grpc: 127.0.0.1:0\n  http: 127.0.0.1:0\n  admin: \"off\"",
    );
    let yaml = with_issuer(
        &yaml,
        &issuer_url,
        &format!(
            "    jwks_uri: {issuer_url}/jwks\n    insecure_http: true\n    fetch_timeout: 5s\n    unknown_kid_cooldown: 1s"
        ),
    );
    let config = Config::from_yaml(&yaml, scratch.path()).unwrap();
    let sidecar = runtime::start(config).await.unwrap();
    let certificate = DevCa::new("example.org")
        .unwrap()
        .issue_svid(SCHEDULER)
        .unwrap()
        .url_encoded();
    Setup {
        sidecar,
        issuer,
        issuer_url,
        certificate,
        _scratch: scratch,
    }
}

impl Setup {
    fn token(&self, signer: &DevIssuer) -> String {
        let claims = delegated_claims(
            &self.issuer_url,
            "user:alice",
            LOCAL,
            "calendar:read",
            &[SCHEDULER],
            unix_now(),
            300,
        );
        signer.sign(&claims).unwrap()
    }

    /// A token whose `kid` the issuer never published: its check waits for a refetch.
    fn stalling_token(&self) -> String {
        let unknown = DevIssuer::generate("x", "rotated-away", DevAlgorithm::Es256).unwrap();
        self.token(&unknown)
    }

    async fn client(&self) -> AuthorizationClient<tonic::transport::Channel> {
        AuthorizationClient::connect(format!("http://{}", self.sidecar.grpc_address))
            .await
            .unwrap()
    }

    fn check(&self, token: &str) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
        RequestSpec::get("/calendar/events")
            .certificate(&self.certificate)
            .bearer(token)
            .build()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_limits_max_concurrent_checks_from_yaml_refuses_at_once_over_grpc_and_http() {
    let setup = start("limits:\n  max_concurrent_checks: 1\n  check_timeout: 10s\n").await;
    let good = setup.token(&setup.issuer);
    let mut client = setup.client().await;
    // The control: with nothing in flight, a check is answered.
    let answer = Answer::from(client.check(setup.check(&good)).await.unwrap().into_inner());
    assert!(answer.is_allow(), "{}", answer.reason);
    let http = setup.sidecar.http_address.unwrap();
    assert_eq!(http_get(http, &good).await, 200, "the HTTP-mode control");
    // One check held in flight…
    let mut held_client = setup.client().await;
    let held_request = setup.check(&setup.stalling_token());
    let held = tokio::spawn(async move { held_client.check(held_request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the stalling check is in flight");
    // …and the next one over gRPC is refused at once, not queued.
    let started = Instant::now();
    let refused = client.check(setup.check(&good)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(started.elapsed() < Duration::from_millis(500));
    // HTTP mode applies the same limit with its own admission: hold one there too.
    let stalling = setup.stalling_token();
    let held_http = tokio::spawn(async move { http_get(http, &stalling).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = http_get(http, &good).await;
    assert_eq!(status, 503, "HTTP mode answers overload with 503");
    held.abort();
    held_http.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_limits_check_timeout_from_yaml_ends_a_check_that_waits() {
    let setup = start("limits:\n  check_timeout: 300ms\n").await;
    let mut client = setup.client().await;
    let started = Instant::now();
    let answer = client.check(setup.check(&setup.stalling_token())).await;
    let elapsed = started.elapsed();
    let error = answer.expect_err("a check past its deadline is an error (Envoy denies)");
    assert!(
        matches!(
            error.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{error:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}: cut at the configured 300 ms, not the 5 s fetch timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_an_issuer_without_keys_fails_closed_with_503_in_http_mode() {
    // The issuer is down from the start (nothing listens at its address): no keys were ever
    // fetched. gRPC answers UNAVAILABLE (Envoy denies); HTTP mode answers 503 with the code.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let issuer = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    let setup = start_with_issuer("", issuer, url).await;
    let token = setup.token(&setup.issuer);
    let mut client = setup.client().await;
    let error = client.check(setup.check(&token)).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable);
    let http = setup.sidecar.http_address.unwrap();
    let (status, body) = http_answer(http, &token).await;
    assert_eq!(status, 503);
    assert!(body.contains("issuer_keys_unavailable"), "{body}");
}

/// GET /calendar/events in HTTP mode as the request itself (`as_received`) from the scheduler
/// (its XFCC, as a sanitising proxy would set it), with `token`: its HTTP status.
async fn http_get(address: std::net::SocketAddr, token: &str) -> u16 {
    http_answer(address, token).await.0
}

/// [`http_get`]'s status and body.
async fn http_answer(address: std::net::SocketAddr, token: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /calendar/events HTTP/1.1\r\nhost: calendar.example.org\r\nauthorization: Bearer {token}\r\nx-forwarded-client-cert: URI={SCHEDULER}\r\nconnection: close\r\n\r\n"
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}
