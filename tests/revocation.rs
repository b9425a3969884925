//! Revocation end to end: the `actguard admin` CLI against a running sidecar, each kind, the
//! very next check (cached allows included), and a restart with the persisted file.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::json;
use std::path::Path;
use std::process::Command;

struct Fixture {
    issuer: DevIssuer,
    ca: DevCa,
    scratch: tempfile::TempDir,
}

impl Fixture {
    /// A scratch directory with the issuer's JWKS, and a CA for callers.
    fn new() -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
        std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
        Fixture {
            issuer,
            ca: DevCa::new("example.org").unwrap(),
            scratch,
        }
    }
}

fn config(dir: &Path) -> Config {
    let yaml = config_yaml(
        "  leeway: 30s",
        "audit:\n  output: \"off\"\nrevocation:\n  file: revocations.json\n",
    )
    .replace(
        "listen:\n  grpc: 127.0.0.1:0",
        &format!(
            "listen:\n  grpc: 127.0.0.1:0\n  admin: unix:{}",
            dir.join("admin.sock").display()
        ),
    );
    std::fs::write(dir.join("config.yaml"), &yaml).unwrap();
    Config::from_yaml(&yaml, dir).unwrap()
}

async fn start(fixture: &Fixture) -> (Sidecar, AuthorizationClient<tonic::transport::Channel>) {
    let sidecar = runtime::start(config(fixture.scratch.path()))
        .await
        .unwrap();
    let client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
        .await
        .unwrap();
    (sidecar, client)
}

fn admin(sidecar: &Sidecar, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_actguard"))
        .args([
            "admin",
            "--admin",
            &format!("unix:{}", sidecar.admin_socket.as_ref().unwrap().display()),
        ])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn token(fixture: &Fixture, actors: &[&str], jti: &str, sid: &str) -> String {
    let mut claims = delegated_claims(
        ISSUER,
        "user:alice",
        LOCAL,
        "calendar:read",
        actors,
        unix_now(),
        300,
    );
    claims["jti"] = json!(jti);
    claims["sid"] = json!(sid);
    fixture.issuer.sign(&claims).unwrap()
}

async fn reason(
    fixture: &Fixture,
    client: &mut AuthorizationClient<tonic::transport::Channel>,
    token: &str,
) -> String {
    let certificate = fixture.ca.issue_svid(SCHEDULER).unwrap().url_encoded();
    let request = RequestSpec::get("/calendar/events")
        .certificate(&certificate)
        .bearer(token)
        .build();
    Answer::from(client.check(request).await.unwrap().into_inner()).reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_revocations_cut_the_next_check_and_survive_a_restart() {
    let fixture = Fixture::new();
    let (sidecar, mut client) = start(&fixture).await;

    let through_orchestrator = token(&fixture, &[ORCHESTRATOR, SCHEDULER], "t1", "s1");
    let scheduler_only = token(&fixture, &[SCHEDULER], "t2", "s2");
    assert_eq!(
        reason(&fixture, &mut client, &through_orchestrator).await,
        "allow"
    );
    assert_eq!(
        reason(&fixture, &mut client, &through_orchestrator).await,
        "allow",
        "now cached"
    );

    let cases: [(&str, &str, bool); 4] = [
        ("--jti", "t1", false),
        ("--sid", "s1", false),
        // A prior hop: every chain through the orchestrator is cut, the scheduler's own is not.
        ("--actor", ORCHESTRATOR, false),
        ("--sub", "user:alice", true),
    ];
    for (flag, value, cuts_scheduler_only) in cases {
        let (ok, output) = admin(&sidecar, &["revoke", flag, value]);
        assert!(ok, "{output}");
        assert!(output.starts_with("revoked"), "{output}");
        assert_eq!(
            reason(&fixture, &mut client, &through_orchestrator).await,
            "token_revoked",
            "{flag}"
        );
        let expected = if cuts_scheduler_only {
            "token_revoked"
        } else {
            "allow"
        };
        assert_eq!(
            reason(&fixture, &mut client, &scheduler_only).await,
            expected,
            "{flag} on the other token"
        );
        let (ok, output) = admin(&sidecar, &["unrevoke", flag, value]);
        assert!(ok && output.starts_with("unrevoked"), "{output}");
        assert_eq!(
            reason(&fixture, &mut client, &through_orchestrator).await,
            "allow",
            "{flag} lifted"
        );
    }

    // A revoked agent's own direct calls are cut too, not only chains through it.
    let mut direct = delegated_claims(
        ISSUER,
        SCHEDULER,
        LOCAL,
        "calendar:read",
        &[],
        unix_now(),
        300,
    );
    direct["client_id"] = json!(SCHEDULER);
    let direct = fixture.issuer.sign(&direct).unwrap();
    assert_eq!(reason(&fixture, &mut client, &direct).await, "allow");
    let (ok, _) = admin(&sidecar, &["revoke", "--actor", SCHEDULER]);
    assert!(ok);
    assert_eq!(
        reason(&fixture, &mut client, &direct).await,
        "token_revoked",
        "the revoked agent calling directly"
    );
    let (ok, _) = admin(&sidecar, &["unrevoke", "--actor", SCHEDULER]);
    assert!(ok);

    // Refused by the server as INVALID_ARGUMENT (the CLI prints the code, then the message).
    let (ok, output) = admin(&sidecar, &["revoke", "--actor", "orchestrator"]);
    assert!(
        !ok && output.contains(
            "Client specified an invalid argument: an ACTOR revocation needs a canonical SPIFFE ID"
        ),
        "{output}"
    );
    let (ok, output) = admin(&sidecar, &["revoke", "--jti", "t1", "--for", "soon"]);
    assert!(!ok && output.contains("--for soon"), "{output}");

    let (ok, _) = admin(&sidecar, &["revoke", "--sid", "s1", "--for", "1h"]);
    assert!(ok);
    let (ok, listed) = admin(&sidecar, &["revocations"]);
    assert!(
        ok && listed.contains("sid    s1") && listed.contains("until 20"),
        "{listed}"
    );
    sidecar.shutdown().await.unwrap();

    // Restart on the same revocation file: the session stays cut.
    let (sidecar, mut client) = start(&fixture).await;
    assert_eq!(
        reason(&fixture, &mut client, &through_orchestrator).await,
        "token_revoked"
    );
    assert_eq!(
        reason(&fixture, &mut client, &scheduler_only).await,
        "allow"
    );
    // The CLI finds the admin API from the config file too (port 0 there, so only check the error path).
    let output = Command::new(env!("CARGO_BIN_EXE_actguard"))
        .args(["admin", "--config"])
        .arg(fixture.scratch.path().join("missing.yaml"))
        .arg("revocations")
        .output()
        .unwrap();
    assert!(!output.status.success());
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_over_a_unix_socket_found_from_the_config_file() {
    let scratch = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let socket = scratch.path().join("admin.sock");
    let yaml = config_yaml("  leeway: 30s", "audit:\n  output: \"off\"\n").replace(
        "listen:\n  grpc: 127.0.0.1:0",
        &format!(
            "listen:\n  grpc: 127.0.0.1:0\n  admin: unix:{}",
            socket.display()
        ),
    );
    let file = scratch.path().join("config.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let sidecar = runtime::start(Config::from_file(&file).unwrap())
        .await
        .unwrap();
    assert_eq!(sidecar.admin_socket.as_deref(), Some(socket.as_path()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "whoever can connect can revoke: owner only"
    );
    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_actguard"))
            .args(["admin", "--config"])
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, output) = cli(&["revoke", "--actor", PLANNER, "--for", "30m"]);
    assert!(ok, "{output}");
    let (ok, listed) = cli(&["revocations"]);
    assert!(ok && listed.contains(PLANNER), "{listed}");
    let (ok, output) = cli(&["unrevoke", "--actor", PLANNER]);
    assert!(ok && output.starts_with("unrevoked"), "{output}");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_revoked_token_is_401_even_where_a_later_step_would_deny() {
    let fixture = Fixture::new();
    let (sidecar, mut client) = start(&fixture).await;
    let revoked = token(&fixture, &[SCHEDULER], "t-revoked", "s-revoked");
    let (ok, output) = admin(&sidecar, &["revoke", "--jti", "t-revoked"]);
    assert!(ok, "{output}");
    let certificate = fixture.ca.issue_svid(SCHEDULER).unwrap().url_encoded();
    let orchestrator = fixture.ca.issue_svid(ORCHESTRATOR).unwrap().url_encoded();
    // Each request would be denied by a step after verification if the token were not revoked:
    // the admin route (caller not allowed, scope missing), and a caller that is not the token's
    // current actor. Revocation is checked right after verification, so both are 401.
    let cases = [
        ("admin route", "/admin/users", &certificate),
        ("actor is not the caller", "/calendar/events", &orchestrator),
    ];
    for (name, path, caller) in cases {
        let request = RequestSpec::get(path)
            .certificate(caller)
            .bearer(&revoked)
            .build();
        let answer = Answer::from(client.check(request).await.unwrap().into_inner());
        assert_eq!(answer.reason, "token_revoked", "{name}");
        assert_eq!(answer.http_status, 401, "{name}");
        let challenge = answer.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
    }
    // The same shapes with an unrevoked token get the later step's own answer (the control).
    let fresh = token(&fixture, &[SCHEDULER], "t-fresh", "s-fresh");
    let request = RequestSpec::get("/calendar/events")
        .certificate(&orchestrator)
        .bearer(&fresh)
        .build();
    let answer = Answer::from(client.check(request).await.unwrap().into_inner());
    assert_eq!(answer.reason, "actor_mismatch");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_revocations_survive_a_hot_reload() {
    let fixture = Fixture::new();
    let (sidecar, mut client) = start(&fixture).await;
    let revoked = token(&fixture, &[SCHEDULER], "t-reload", "s-reload");
    let (ok, output) = admin(&sidecar, &["revoke", "--jti", "t-reload"]);
    assert!(ok, "{output}");
    assert_eq!(
        reason(&fixture, &mut client, &revoked).await,
        "token_revoked"
    );
    // A reload builds a new pipeline; the revocation list is the process's, not the config's.
    sidecar
        .reload(&fixture.scratch.path().join("config.yaml"))
        .await
        .unwrap();
    assert_eq!(
        reason(&fixture, &mut client, &revoked).await,
        "token_revoked",
        "after the reload"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_corrupt_revocation_file_stops_the_start() {
    // Starting with an empty list instead would silently un-revoke everything.
    let fixture = Fixture::new();
    std::fs::write(
        fixture.scratch.path().join("revocations.json"),
        "[{\"kind\": \"jti\", \"value\": ",
    )
    .unwrap();
    let error = match runtime::start(config(fixture.scratch.path())).await {
        Ok(_) => panic!("started on a corrupt revocation file"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("revocations.json") && error.contains("not a revocation list"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_an_unreadable_or_oversized_revocation_file_stops_the_start() {
    // Read as "no revocations", either would silently un-revoke everything. (Not mode 000: the
    // tests may run as root, who reads it anyway.)
    let make_directory = |path: &Path| std::fs::create_dir(path).unwrap();
    let make_oversized = |path: &Path| {
        // Sparse: one byte past the 256 MiB limit, without writing 256 MiB.
        let file = std::fs::File::create(path).unwrap();
        file.set_len(256 * 1024 * 1024 + 1).unwrap();
    };
    type MakeFile = fn(&Path);
    let cases: [(&str, MakeFile, &str); 2] = [
        ("a directory", make_directory, "not a regular file"),
        (
            "one byte over 256 MiB",
            make_oversized,
            "larger than 268435456 bytes",
        ),
    ];
    for (name, make, expected) in cases {
        let fixture = Fixture::new();
        let file = fixture.scratch.path().join("revocations.json");
        make(&file);
        let error = match runtime::start(config(fixture.scratch.path())).await {
            Ok(_) => panic!("{name}: started without its revocation list"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains("cannot read")
                && error.contains("revocations.json")
                && error.contains(expected),
            "{name}: {error}"
        );
    }
}
