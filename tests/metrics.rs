//! The metrics a dashboard reads, asserted exactly: this binary holds this one test, so the
//! process-wide recorder sees only what it does (other test binaries are other processes).
//! Decisions by result and reason, check durations, cache hits and misses, checks in flight,
//! overload rejections, JWKS keys, age and fetches, config loads (success and failure), ready.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use actguard::serve::runtime;
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::time::Duration;

fn metric(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.split(['{', ' ']).next() == Some(name)
                && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(admin: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_series_moves_by_exactly_what_was_done() {
    let scratch = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate("x", "k1", DevAlgorithm::Es256).unwrap();
    let issuer_url = common::issuer::stalling_issuer(issuer.jwks().to_string(), |index| index == 1);
    let issuer_label = format!("issuer=\"{issuer_url}\"");
    let yaml = config_yaml(
        "  leeway: 30s",
        "audit:\n  output: \"off\"\nlimits:\n  max_concurrent_checks: 1\n  check_timeout: 10s\n",
    )
    .replace(
        "listen:\n  grpc: 127.0.0.1:0",
        "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0",
    );
    let yaml = with_issuer(
        &yaml,
        &issuer_url,
        &format!("    jwks_uri: {issuer_url}/jwks\n    insecure_http: true\n    fetch_timeout: 1s"),
    );
    let file = scratch.path().join("config.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let sidecar = runtime::start(Config::from_file(&file).unwrap())
        .await
        .unwrap();
    let admin = sidecar.admin_address.unwrap();
    let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
        .await
        .unwrap();
    let ca = DevCa::new("example.org").unwrap();
    let scheduler = ca.issue_svid(SCHEDULER).unwrap().url_encoded();
    let orchestrator = ca.issue_svid(ORCHESTRATOR).unwrap().url_encoded();
    let sign = |signer: &DevIssuer| {
        let claims = delegated_claims(
            &issuer_url,
            "user:alice",
            LOCAL,
            "calendar:read",
            &[SCHEDULER],
            unix_now(),
            300,
        );
        signer.sign(&claims).unwrap()
    };
    let token = sign(&issuer);
    let check = |certificate: &str, token: &str| {
        RequestSpec::get("/calendar/events")
            .certificate(certificate)
            .bearer(token)
            .build()
    };

    let before = scrape(admin).await;
    assert_eq!(metric(&before, "actguard_ready", &[]), 1.0);
    assert_eq!(
        metric(
            &before,
            "actguard_config_loads_total",
            &["result=\"success\""]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &before,
            "actguard_config_loads_total",
            &["result=\"failure\""]
        ),
        0.0
    );
    assert_eq!(metric(&before, "actguard_jwks_keys", &[&issuer_label]), 1.0);
    assert_eq!(
        metric(
            &before,
            "actguard_jwks_fetches_total",
            &[&issuer_label, "result=\"success\""]
        ),
        1.0
    );

    // Two allows (a miss, then a hit) and a deny (the orchestrator is not the current actor; its
    // token is found verified: a hit).
    for _ in 0..2 {
        let answer = Answer::from(
            client
                .check(check(&scheduler, &token))
                .await
                .unwrap()
                .into_inner(),
        );
        assert!(answer.is_allow(), "{}", answer.reason);
    }
    let denied = Answer::from(
        client
            .check(check(&orchestrator, &token))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(denied.reason, "actor_mismatch");

    // One check held in flight (an unknown kid waits for a refetch the issuer never answers),
    // and one more refused by admission.
    let unknown = DevIssuer::generate("x", "rotated-away", DevAlgorithm::Es256).unwrap();
    let (held_request, mut held_client) = (check(&scheduler, &sign(&unknown)), client.clone());
    let held = tokio::spawn(async move { held_client.check(held_request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = scrape(admin).await;
    assert_eq!(metric(&during, "actguard_checks_in_flight", &[]), 1.0);
    let refused = client.check(check(&scheduler, &token)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    // The refetch times out after 1 s: a failed fetch, and the held check's own answer.
    let held_answer = Answer::from(held.await.unwrap().unwrap().into_inner());
    assert_eq!(held_answer.reason, "token_key_unknown");

    // A process on the host tries to lift a revocation over the plain-TCP admin listener.
    let unrevoke = std::process::Command::new(env!("CARGO_BIN_EXE_actguard"))
        .args([
            "admin",
            "--admin",
            &admin.to_string(),
            "unrevoke",
            "--jti",
            "t1",
        ])
        .output()
        .unwrap();
    assert!(!unrevoke.status.success());

    // A failed reload, then a successful one.
    std::fs::write(&file, "routes: {").unwrap();
    assert!(sidecar.reload(&file).await.is_err());
    std::fs::write(&file, &yaml).unwrap();
    sidecar.reload(&file).await.unwrap();

    let after = scrape(admin).await;
    let moved =
        |name: &str, labels: &[&str]| metric(&after, name, labels) - metric(&before, name, labels);
    assert_eq!(
        moved(
            "actguard_decisions_total",
            &["result=\"allow\"", "route=\"calendar-read\""]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "actguard_decisions_total",
            &["result=\"deny\"", "reason=\"actor_mismatch\""]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "actguard_decisions_total",
            &["result=\"deny\"", "reason=\"token_key_unknown\""]
        ),
        1.0
    );
    assert_eq!(
        moved("actguard_decisions_total", &[]),
        4.0,
        "nothing else was decided"
    );
    assert_eq!(moved("actguard_check_duration_seconds_count", &[]), 4.0);
    // The first allow, and the unknown kid twice: it is looked up before the refetch and again
    // after it (one decision, two lookups).
    assert_eq!(moved("actguard_token_cache_misses_total", &[]), 3.0);
    assert_eq!(
        moved("actguard_token_cache_hits_total", &[]),
        2.0,
        "the second allow, the deny"
    );
    assert_eq!(moved("actguard_overload_rejections_total", &[]), 1.0);
    assert_eq!(metric(&after, "actguard_checks_in_flight", &[]), 0.0);
    assert_eq!(
        moved("actguard_config_loads_total", &["result=\"failure\""]),
        1.0
    );
    assert_eq!(
        moved("actguard_config_loads_total", &["result=\"success\""]),
        1.0
    );
    assert_eq!(
        moved(
            "actguard_jwks_fetches_total",
            &[&issuer_label, "result=\"failure\""]
        ),
        1.0,
        "the refetch that timed out"
    );
    assert_eq!(
        moved(
            "actguard_jwks_fetches_total",
            &[&issuer_label, "result=\"success\""]
        ),
        1.0,
        "the reload's own fetch"
    );
    assert_eq!(
        moved(
            "actguard_admin_operations_total",
            &["op=\"unrevoke\"", "outcome=\"refused\""]
        ),
        1.0
    );
    assert_eq!(moved("actguard_admin_operations_total", &[]), 1.0);
    assert!(metric(&after, "actguard_jwks_age_seconds", &[&issuer_label]) >= 0.0);
    assert!(after.contains("actguard_jwks_age_seconds{"), "{after}");
    sidecar.shutdown().await.unwrap();
}
