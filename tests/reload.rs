//! Hot reload: valid files swap in atomically (cached decisions do not survive), invalid ones
//! change nothing, a rotated JWKS file takes effect without a restart, SIGHUP reloads the real
//! binary, and checks under load never fail across reloads.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

type Client = AuthorizationClient<tonic::transport::Channel>;

fn yaml(listen: &str, read_scope: &str) -> String {
    config_yaml("  leeway: 30s", "audit:\n  output: \"off\"\n")
        .replace(
            "listen:\n  grpc: 127.0.0.1:0",
            &format!("listen:\n{listen}"),
        )
        .replace(
            "require_scopes: [calendar:read]",
            &format!("require_scopes: [{read_scope}]"),
        )
}

struct Setup {
    scratch: tempfile::TempDir,
    issuer: DevIssuer,
    request: CheckRequest,
}

fn setup() -> Setup {
    let scratch = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let claims = delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        &[SCHEDULER],
        unix_now(),
        300,
    );
    let token = issuer.sign(&claims).unwrap();
    let certificate = DevCa::new("example.org")
        .unwrap()
        .issue_svid(SCHEDULER)
        .unwrap()
        .url_encoded();
    let request = RequestSpec::get("/calendar/events")
        .certificate(&certificate)
        .bearer(&token)
        .build();
    Setup {
        scratch,
        issuer,
        request,
    }
}

fn config_file(setup: &Setup, text: &str) -> PathBuf {
    let file = setup.scratch.path().join("config.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

async fn start(setup: &Setup, file: &Path) -> (Sidecar, Client) {
    let sidecar = runtime::start(Config::from_file(file).unwrap())
        .await
        .unwrap();
    let client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
        .await
        .unwrap();
    let _ = setup;
    (sidecar, client)
}

async fn reason(client: &mut Client, request: &CheckRequest) -> String {
    Answer::from(client.check(request.clone()).await.unwrap().into_inner()).reason
}

const LOCAL_LISTEN: &str = "  grpc: 127.0.0.1:0\n  admin: \"off\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_reload_swaps_rules_and_drops_cached_decisions() {
    let setup = setup();
    let file = config_file(&setup, &yaml(LOCAL_LISTEN, "calendar:read"));
    let (sidecar, mut client) = start(&setup, &file).await;
    assert_eq!(reason(&mut client, &setup.request).await, "allow");
    assert_eq!(reason(&mut client, &setup.request).await, "allow", "cached");

    std::fs::write(&file, yaml(LOCAL_LISTEN, "calendar:admin")).unwrap();
    sidecar.reload(&file).await.unwrap();
    assert_eq!(
        reason(&mut client, &setup.request).await,
        "insufficient_scope"
    );

    std::fs::write(&file, "identity: [broken").unwrap();
    let errors = sidecar.reload(&file).await.unwrap_err();
    assert!(errors.to_string().contains("not valid YAML"));
    assert_eq!(
        reason(&mut client, &setup.request).await,
        "insufficient_scope",
        "old config serves on"
    );

    // What the cache holds (the token's verification) is dropped too, not only the rules that
    // run on every check: the same token, verified and remembered under ES256, is refused once
    // a reload allows EdDSA only, although nothing else about it changed.
    std::fs::write(&file, yaml(LOCAL_LISTEN, "calendar:read")).unwrap();
    sidecar.reload(&file).await.unwrap();
    assert_eq!(reason(&mut client, &setup.request).await, "allow");
    assert_eq!(reason(&mut client, &setup.request).await, "allow", "cached");
    let eddsa_only = yaml(LOCAL_LISTEN, "calendar:read")
        .replace("algorithms: [ES256, EdDSA]", "algorithms: [EdDSA]");
    std::fs::write(&file, eddsa_only).unwrap();
    sidecar.reload(&file).await.unwrap();
    assert_eq!(
        reason(&mut client, &setup.request).await,
        "token_alg_denied",
        "a verification remembered under the old configuration was not reused"
    );
    sidecar.shutdown().await.unwrap();
}

/// A change made while the sidecar starts — after the watcher's baseline was read, before the
/// watch runs — is reloaded, not taken as the baseline (`actguard serve` reads the baseline
/// before it loads the configuration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_change_made_while_the_sidecar_starts_is_reloaded() {
    let setup = setup();
    let file = config_file(&setup, &yaml(LOCAL_LISTEN, "calendar:read"));
    let baseline = actguard::serve::reload::Baseline::of(&file);
    let (mut sidecar, mut client) = start(&setup, &file).await;
    assert_eq!(reason(&mut client, &setup.request).await, "allow");
    // The operator tightens the rule while the process starts (a longer file: another stamp
    // even within one timestamp tick).
    std::fs::write(&file, yaml(LOCAL_LISTEN, "calendar:admin")).unwrap();
    sidecar.watch_config_since(baseline, file.clone(), Duration::from_millis(50));
    let mut answer = String::new();
    for _ in 0..100 {
        answer = reason(&mut client, &setup.request).await;
        if answer != "allow" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        answer, "insufficient_scope",
        "the change was taken as the baseline"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_removed_jwks_key_stops_verifying_cached_allows_included() {
    let setup = setup();
    let file = config_file(&setup, &yaml(LOCAL_LISTEN, "calendar:read"));
    let (mut sidecar, mut client) = start(&setup, &file).await;
    sidecar.watch_config(file.clone(), Duration::from_millis(100));
    assert_eq!(reason(&mut client, &setup.request).await, "allow");
    let rotated = DevIssuer::generate(ISSUER, "key-2", DevAlgorithm::Es256).unwrap();
    std::fs::write(
        setup.scratch.path().join("jwks.json"),
        rotated.jwks().to_string(),
    )
    .unwrap();
    let mut answer = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = reason(&mut client, &setup.request).await;
        if answer != "allow" {
            break;
        }
    }
    assert_eq!(
        answer, "token_key_unknown",
        "the old key is gone, its cached allow too"
    );
    let _ = &setup.issuer;
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_never_fail_a_check() {
    let setup = setup();
    let file = config_file(&setup, &yaml(LOCAL_LISTEN, "calendar:read"));
    let (sidecar, client) = start(&setup, &file).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, unexpected) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (mut client, request) = (client.clone(), setup.request.clone());
        let (stop, answered, unexpected) = (
            Arc::clone(&stop),
            Arc::clone(&answered),
            Arc::clone(&unexpected),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Any transport error fails the test through the unwrap.
                let reason = reason(&mut client, &request).await;
                answered.fetch_add(1, Ordering::Relaxed);
                if reason != "allow" && reason != "insufficient_scope" {
                    unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut probe = client.clone();
    for round in 0..6 {
        let scope = if round % 2 == 0 {
            "calendar:admin"
        } else {
            "calendar:read"
        };
        std::fs::write(&file, yaml(LOCAL_LISTEN, scope)).unwrap();
        sidecar.reload(&file).await.unwrap();
        // The reload took effect for the very next check, and a failed one changes nothing.
        let expected = if round % 2 == 0 {
            "insufficient_scope"
        } else {
            "allow"
        };
        assert_eq!(
            reason(&mut probe, &setup.request).await,
            expected,
            "round {round}"
        );
        std::fs::write(&file, "routes: {").unwrap();
        assert!(sidecar.reload(&file).await.is_err());
        assert_eq!(
            reason(&mut probe, &setup.request).await,
            expected,
            "round {round}: a failed reload changed the answer"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 20);
    assert_eq!(unexpected.load(Ordering::Relaxed), 0);
    let mut client = client;
    assert_eq!(
        reason(&mut client, &setup.request).await,
        "allow",
        "the last valid file allows"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    let setup = setup();
    let socket = setup.scratch.path().join("authz.sock");
    let listen = format!("  grpc: unix:{}\n  admin: \"off\"", socket.display());
    let file = config_file(&setup, &yaml(&listen, "calendar:read"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_actguard"))
        .args(["serve", "--config"])
        .arg(&file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut client = AuthorizationClient::new(unix_channel(socket.display().to_string()).await);
    assert_eq!(reason(&mut client, &setup.request).await, "allow");
    // Same modification time granularity is not relied on: SIGHUP reloads regardless.
    std::fs::write(&file, yaml(&listen, "calendar:admin")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut answer = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = reason(&mut client, &setup.request).await;
        if answer != "allow" {
            break;
        }
    }
    assert_eq!(answer, "insufficient_scope");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_kid_republished_with_new_key_material_stops_verifying_the_old_tokens() {
    // The same `kid`, another key: tokens signed by the old key are refused after the reload
    // the changed JWKS file causes, the one verified and cached a moment before included.
    let setup = setup();
    let file = config_file(&setup, &yaml(LOCAL_LISTEN, "calendar:read"));
    let (sidecar, mut client) = start(&setup, &file).await;
    assert_eq!(reason(&mut client, &setup.request).await, "allow");
    assert_eq!(reason(&mut client, &setup.request).await, "allow", "cached");
    let same_kid = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
    assert_eq!(same_kid.kid(), setup.issuer.kid());
    std::fs::write(
        setup.scratch.path().join("jwks.json"),
        same_kid.jwks().to_string(),
    )
    .unwrap();
    sidecar.reload(&file).await.unwrap();
    assert_eq!(
        reason(&mut client, &setup.request).await,
        "token_signature_invalid"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_reload_naming_a_bad_file_is_refused_and_the_old_config_keeps_serving() {
    // A FIFO nobody writes once blocked the reload for ever; a file too large or not a file at
    // all is refused the same way, naming the key, while the running configuration answers.
    let setup = setup();
    let file = config_file(&setup, &yaml(LOCAL_LISTEN, "calendar:read"));
    let (sidecar, mut client) = start(&setup, &file).await;
    assert_eq!(reason(&mut client, &setup.request).await, "allow");
    let dir = setup.scratch.path();
    let fifo = dir.join("fifo.json");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::create_dir(dir.join("directory.json")).unwrap();
    std::fs::File::create(dir.join("oversized.json"))
        .unwrap()
        .set_len(4 * 1024 * 1024 + 1)
        .unwrap();
    std::os::unix::fs::symlink(dir.join("jwks.json"), dir.join("linked.json")).unwrap();
    let naming = |jwks_file: &str| {
        yaml(LOCAL_LISTEN, "calendar:admin")
            .replace("jwks_file: jwks.json", &format!("jwks_file: {jwks_file}"))
    };
    for (name, jwks_file, expected) in [
        ("a FIFO", "fifo.json", "not a regular file"),
        ("a directory", "directory.json", "not a regular file"),
        (
            "one byte over 4 MiB",
            "oversized.json",
            "larger than 4194304 bytes",
        ),
    ] {
        std::fs::write(&file, naming(jwks_file)).unwrap();
        let reloaded = tokio::time::timeout(Duration::from_secs(5), sidecar.reload(&file))
            .await
            .unwrap_or_else(|_| panic!("{name}: the reload hangs"));
        let error = format!("{:?}", reloaded.unwrap_err());
        assert!(
            error.contains("issuers[0].jwks_file") && error.contains(expected),
            "{name}: {error}"
        );
        assert_eq!(
            reason(&mut client, &setup.request).await,
            "allow",
            "{name}: the old configuration keeps serving"
        );
    }
    // The control: through a symbolic link (as Kubernetes mounts files) the reload applies.
    std::fs::write(&file, naming("linked.json")).unwrap();
    sidecar.reload(&file).await.unwrap();
    assert_eq!(
        reason(&mut client, &setup.request).await,
        "insufficient_scope"
    );
    sidecar.shutdown().await.unwrap();
}
