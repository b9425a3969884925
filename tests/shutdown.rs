//! SIGTERM during load: the real binary stops accepting, finishes every check it started, flushes
//! the audit log and exits 0. Exactly: every decision it logged reached its client.

mod common;

use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_load_drains_every_in_flight_check() {
    let scratch = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let socket = scratch.path().join("authz.sock");
    let yaml = config_yaml(
        "  leeway: 30s",
        "audit:\n  output: audit.log\nlimits:\n  drain_timeout: 5s\n",
    )
    .replace(
        "listen:\n  grpc: 127.0.0.1:0",
        &format!(
            "listen:\n  grpc: unix:{}\n  admin: \"off\"",
            socket.display()
        ),
    );
    std::fs::write(scratch.path().join("config.yaml"), yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_actguard"))
        .args(["serve", "--config"])
        .arg(scratch.path().join("config.yaml"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let ca = DevCa::new("example.org").unwrap();
    let certificate = ca.issue_svid(SCHEDULER).unwrap().url_encoded();
    let claims = actguard::devkit::delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        &[ORCHESTRATOR, SCHEDULER],
        actguard::decision::token::unix_now(),
        300,
    );
    let token = issuer.sign(&claims).unwrap();
    let request = RequestSpec::get("/calendar/events")
        .certificate(&certificate)
        .bearer(&token)
        .build();

    let answered = Arc::new(AtomicU64::new(0));
    let bad_answers = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let channel = unix_channel(socket.display().to_string()).await;
        let mut client = AuthorizationClient::new(channel);
        let (request, answered, bad_answers, stop, lost) = (
            request.clone(),
            Arc::clone(&answered),
            Arc::clone(&bad_answers),
            Arc::clone(&stop),
            Arc::clone(&lost),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.check(request.clone()).await {
                    Ok(response) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        if !Answer::from(response.into_inner()).is_allow() {
                            bad_answers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Once the server stops accepting, a request may only fail in ways that show
                    // it never started: the connection refused, the request still queued in the
                    // client when the connection closed (hyper's "canceled: connection closed",
                    // never written), the stream refused (REFUSED_STREAM), or a stream above the
                    // last one a graceful GOAWAY(NO_ERROR) accepted (RFC 9113 §6.8: not
                    // processed, safe to retry; seen under load in CI). Anything else —
                    // a reset, a connection cut mid-stream — is a check accepted and dropped.
                    Err(status) => {
                        let cause = format!("{:?}", std::error::Error::source(&status));
                        let never_started = cause.contains("ConnectionRefused")
                            || cause.contains("Canceled, \"connection closed\"")
                            || cause.contains("REFUSED_STREAM")
                            || cause.contains("GoAway(b\"\", NO_ERROR, Remote)");
                        if !never_started {
                            lost.lock().unwrap().push(format!("{status:?}"));
                        }
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let answered_before_signal = answered.load(Ordering::Relaxed);
    assert!(answered_before_signal > 10, "load is running");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(bad_answers.load(Ordering::Relaxed), 0);
    let lost = lost.lock().unwrap();
    assert!(
        lost.is_empty(),
        "checks accepted and never answered: {lost:?}"
    );
    let audit = std::fs::read_to_string(scratch.path().join("audit.log")).unwrap();
    let logged = audit.lines().count() as u64;
    assert_eq!(
        logged,
        answered.load(Ordering::Relaxed),
        "every check the server decided was answered (none cut off), and the audit log was flushed"
    );
}
