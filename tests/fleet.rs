//! Fleet-wide revocation against a real nats-server (JetStream KV) running the shipped
//! least-privilege configuration (sidecars as the read-only user): revoke once with
//! `actguard admin --nats`, every sidecar following the bucket denies; a sidecar that cannot
//! confirm it is current fails closed (UNAVAILABLE, not ready) and recovers by itself.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use common::nats::{GapProxy, NatsCluster, NatsServer, SHIPPED_PASSWORDS, shipped_config};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Fleet {
    issuer: DevIssuer,
    ca: DevCa,
    scratch: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::generate(ISSUER, "key-es256", DevAlgorithm::Es256).unwrap();
        std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
        Fleet {
            issuer,
            ca: DevCa::new("example.org").unwrap(),
            scratch,
        }
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// A sidecar following the bucket at `url` (`max_staleness: 2s` unless `nats_extra` sets
    /// it); `nats_extra` lines go under `revocation.nats`, `revocation_extra` under `revocation`.
    async fn sidecar(&self, url: &str, nats_extra: &str, revocation_extra: &str) -> Sidecar {
        let yaml = self.yaml(url, nats_extra, revocation_extra);
        runtime::start(Config::from_yaml(&yaml, self.dir()).unwrap())
            .await
            .unwrap()
    }

    /// A sidecar as [`Self::sidecar`] writing every decision and fleet change to `audit`.
    async fn audited_sidecar(&self, url: &str, audit: &Path) -> Sidecar {
        let yaml = self.yaml(url, "", "").replace(
            "audit:\n  output: \"off\"",
            &format!(
                "audit:\n  output: {}\n  sample_allows: 1.0",
                audit.display()
            ),
        );
        runtime::start(Config::from_yaml(&yaml, self.dir()).unwrap())
            .await
            .unwrap()
    }

    fn yaml(&self, url: &str, nats_extra: &str, revocation_extra: &str) -> String {
        let staleness = if nats_extra.contains("max_staleness") {
            ""
        } else {
            "    max_staleness: 2s\n"
        };
        // The read-only sidecar user of the shipped least-privilege configuration.
        let user = format!(
            "    user: actguard-sidecar\n    password_file: {}\n",
            password_file("actguard-sidecar").display()
        );
        config_yaml(
            "  leeway: 30s",
            &format!(
                "audit:\n  output: \"off\"\nrevocation:\n{revocation_extra}  nats:\n    servers: [{url}]\n{staleness}{user}{nats_extra}"
            ),
        )
        .replace(
            "listen:\n  grpc: 127.0.0.1:0",
            "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0",
        )
    }

    fn token(&self, jti: &str) -> String {
        self.token_in(jti, None)
    }

    /// A token `jti` for the scheduler, in session `sid` when given.
    fn token_in(&self, jti: &str, sid: Option<&str>) -> String {
        let mut claims = delegated_claims(
            ISSUER,
            "user:alice",
            LOCAL,
            "calendar:read",
            &[SCHEDULER],
            unix_now(),
            300,
        );
        claims["jti"] = json!(jti);
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        self.issuer.sign(&claims).unwrap()
    }

    /// The decision for a call with token `jti`: the reason, or `UNAVAILABLE` when the check
    /// failed with that gRPC status (Envoy denies).
    async fn decide(&self, sidecar: &Sidecar, jti: &str) -> String {
        self.decide_token(sidecar, &self.token(jti)).await
    }

    /// As [`Self::decide`] for `token`.
    async fn decide_token(&self, sidecar: &Sidecar, token: &str) -> String {
        let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
            .await
            .unwrap();
        let certificate = self.ca.issue_svid(SCHEDULER).unwrap().url_encoded();
        let request = RequestSpec::get("/calendar/events")
            .certificate(&certificate)
            .bearer(token)
            .build();
        match client.check(request).await {
            Ok(answer) => Answer::from(answer.into_inner()).reason,
            Err(status) if status.code() == tonic::Code::Unavailable => "UNAVAILABLE".into(),
            Err(status) => panic!("unexpected {status:?}"),
        }
    }

    /// Polls until the decision for `jti` is `expected` (or `within` passes); the decisions
    /// seen on the way.
    async fn until(
        &self,
        sidecar: &Sidecar,
        jti: &str,
        expected: &str,
        within: Duration,
    ) -> Vec<String> {
        self.until_token(sidecar, &self.token(jti), expected, within)
            .await
    }

    /// As [`Self::until`] for `token`.
    async fn until_token(
        &self,
        sidecar: &Sidecar,
        token: &str,
        expected: &str,
        within: Duration,
    ) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let decision = self.decide_token(sidecar, token).await;
            let done = decision == expected;
            if seen.last() != Some(&decision) {
                seen.push(decision);
            }
            if done || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The password files of the shipped configuration's two users (one per test process).
fn password_file(user: &str) -> std::path::PathBuf {
    let name = user.trim_start_matches("actguard-");
    let file = std::env::temp_dir().join(format!(
        "actguard-fleet-{}-{name}.password",
        std::process::id()
    ));
    if !file.exists() {
        std::fs::write(&file, format!("{name}-secret\n")).unwrap();
    }
    file
}

/// `actguard admin --nats URL ARGS…`: an operator's command (the operator user of the shipped
/// least-privilege configuration), as a separate process.
fn operator(url: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_actguard"))
        .args(["admin", "--nats", url, "--nats-user", "actguard-operator"])
        .arg("--nats-password-file")
        .arg(password_file("actguard-operator"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {text}");
    text
}

async fn readyz(sidecar: &Sidecar) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(sidecar.admin_address.unwrap())
        .await
        .unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let status = raw[9..12].parse().unwrap();
    (status, raw)
}

async fn until_ready(sidecar: &Sidecar, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if readyz(sidecar).await.0 == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_sidecar_is_not_ready_until_the_bucket_snapshot_is_applied() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    operator(&nats.url(), &["revoke", "--jti", "t-old", "--for", "1h"]);
    let fleet = Fleet::new();
    // The sidecar reaches NATS only through a proxy that is cut at first.
    let proxy = GapProxy::start(([127, 0, 0, 1], nats.port).into()).await;
    proxy.cut();
    let sidecar = fleet.sidecar(&proxy.url(), "", "").await;
    tokio::time::sleep(SECOND).await;
    let (status, body) = readyz(&sidecar).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("fleet revocations"), "{body}");
    // Not ready means no decision at all: even a token nobody revoked is UNAVAILABLE.
    assert_eq!(fleet.decide(&sidecar, "t-fresh").await, "UNAVAILABLE");
    proxy.restore();
    assert!(until_ready(&sidecar, 10 * SECOND).await);
    assert_eq!(fleet.decide(&sidecar, "t-old").await, "token_revoked");
    assert_eq!(fleet.decide(&sidecar, "t-fresh").await, "allow");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_an_empty_bucket_does_not_block_readiness() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    let fleet = Fleet::new();
    let sidecar = fleet.sidecar(&nats.url(), "", "").await;
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    assert_eq!(fleet.decide(&sidecar, "t1").await, "allow");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_revocation_reaches_every_sidecar_and_an_unrevoke_lifts_it_everywhere() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    let fleet = Fleet::new();
    let first = fleet.sidecar(&nats.url(), "", "").await;
    let second = fleet.sidecar(&nats.url(), "", "").await;
    for sidecar in [&first, &second] {
        assert!(until_ready(sidecar, 5 * SECOND).await);
        // A cached allow, to be cut.
        assert_eq!(fleet.decide(sidecar, "t-live").await, "allow");
        assert_eq!(fleet.decide(sidecar, "t-live").await, "allow");
    }
    let output = operator(&nats.url(), &["revoke", "--jti", "t-live", "--for", "10m"]);
    assert!(output.contains("fleet-wide"), "{output}");
    for sidecar in [&first, &second] {
        let seen = fleet
            .until(sidecar, "t-live", "token_revoked", 2 * SECOND)
            .await;
        assert_eq!(
            seen.last().map(String::as_str),
            Some("token_revoked"),
            "{seen:?}"
        );
    }
    let listed = operator(&nats.url(), &["revocations"]);
    assert!(listed.contains("t-live"), "{listed}");
    operator(&nats.url(), &["unrevoke", "--jti", "t-live"]);
    for sidecar in [&first, &second] {
        let seen = fleet.until(sidecar, "t-live", "allow", 2 * SECOND).await;
        assert_eq!(seen.last().map(String::as_str), Some("allow"), "{seen:?}");
    }
    let listed = operator(&nats.url(), &["revocations"]);
    assert!(listed.contains("no revocations in force"), "{listed}");
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_revocation_made_during_a_gap_is_applied_when_the_sidecar_resumes() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    let fleet = Fleet::new();
    let proxy = GapProxy::start(([127, 0, 0, 1], nats.port).into()).await;
    // A longer staleness than the gap: the sidecar keeps deciding while it is away.
    let sidecar = fleet
        .sidecar(&proxy.url(), "    max_staleness: 30s\n", "")
        .await;
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    operator(&nats.url(), &["revoke", "--jti", "t-before"]);
    assert_eq!(
        fleet
            .until(&sidecar, "t-before", "token_revoked", 2 * SECOND)
            .await
            .last()
            .unwrap(),
        "token_revoked"
    );
    proxy.cut();
    operator(&nats.url(), &["revoke", "--jti", "t-during"]);
    operator(&nats.url(), &["unrevoke", "--jti", "t-before"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Still away: what it had stays (nothing is cleared for being unconfirmed).
    assert_eq!(fleet.decide(&sidecar, "t-before").await, "token_revoked");
    proxy.restore();
    let seen = fleet
        .until(&sidecar, "t-during", "token_revoked", 10 * SECOND)
        .await;
    assert_eq!(seen.last().unwrap(), "token_revoked", "{seen:?}");
    assert_eq!(
        fleet
            .until(&sidecar, "t-before", "allow", 2 * SECOND)
            .await
            .last()
            .unwrap(),
        "allow"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_sidecar_out_of_touch_past_max_staleness_fails_closed_and_recovers() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    let fleet = Fleet::new();
    let proxy = GapProxy::start(([127, 0, 0, 1], nats.port).into()).await;
    let sidecar = fleet.sidecar(&proxy.url(), "", "").await; // max_staleness: 2s
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    assert_eq!(fleet.decide(&sidecar, "t1").await, "allow");
    let cut_at = Instant::now();
    proxy.cut();
    let seen = fleet.until(&sidecar, "t1", "UNAVAILABLE", 6 * SECOND).await;
    let failed_closed_after = cut_at.elapsed();
    assert_eq!(seen.last().unwrap(), "UNAVAILABLE", "{seen:?}");
    // max_staleness (2 s) plus at most one probe interval and the probe's own timeout.
    assert!(
        failed_closed_after < Duration::from_millis(3500),
        "{failed_closed_after:?}"
    );
    assert_eq!(readyz(&sidecar).await.0, 503);
    proxy.restore();
    let seen = fleet.until(&sidecar, "t1", "allow", 10 * SECOND).await;
    assert_eq!(seen.last().unwrap(), "allow", "{seen:?}");
    assert!(until_ready(&sidecar, 2 * SECOND).await);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_sidecar_restarted_while_nats_is_down_stays_not_ready_its_file_no_proof() {
    let mut nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    operator(&nats.url(), &["revoke", "--jti", "t-kept"]);
    let fleet = Fleet::new();
    let file = "  file: revocations.json\n";
    let sidecar = fleet.sidecar(&nats.url(), "", file).await;
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    assert_eq!(fleet.decide(&sidecar, "t-kept").await, "token_revoked");
    sidecar.shutdown().await.unwrap();
    let persisted = std::fs::read_to_string(fleet.dir().join("revocations.json")).unwrap();
    assert!(
        persisted.contains("t-kept"),
        "the mirror is persisted: {persisted}"
    );
    nats.stop();
    let sidecar = fleet.sidecar(&nats.url(), "", file).await;
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(readyz(&sidecar).await.0, 503);
    assert_eq!(fleet.decide(&sidecar, "t-other").await, "UNAVAILABLE");
    nats.restart();
    assert!(until_ready(&sidecar, 10 * SECOND).await);
    assert_eq!(fleet.decide(&sidecar, "t-kept").await, "token_revoked");
    assert_eq!(fleet.decide(&sidecar, "t-other").await, "allow");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_the_bucket_deleted_fails_closed_and_keeps_what_was_revoked() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    operator(&nats.url(), &["revoke", "--jti", "t-kept"]);
    let fleet = Fleet::new();
    let sidecar = fleet.sidecar(&nats.url(), "", "").await;
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    assert_eq!(fleet.decide(&sidecar, "t-kept").await, "token_revoked");
    // Someone deletes the bucket: the sidecar can no longer confirm anything.
    let jetstream = operator_jetstream(nats.url()).await;
    jetstream
        .delete_key_value("actguard-revocations")
        .await
        .unwrap();
    let seen = fleet
        .until(&sidecar, "t-other", "UNAVAILABLE", 6 * SECOND)
        .await;
    assert_eq!(seen.last().unwrap(), "UNAVAILABLE", "{seen:?}");
    // Created again, empty: the sidecar follows it, and what it had revoked stays revoked.
    operator(&nats.url(), &["init", "--replicas", "1"]);
    let seen = fleet.until(&sidecar, "t-other", "allow", 10 * SECOND).await;
    assert_eq!(seen.last().unwrap(), "allow", "{seen:?}");
    assert_eq!(fleet.decide(&sidecar, "t-kept").await, "token_revoked");
    sidecar.shutdown().await.unwrap();
}

/// The shipped least-privilege server configuration, moved onto a free port and a scratch
/// store; nothing else changed.
fn least_privilege_server() -> NatsServer {
    NatsServer::start_with_config(&shipped_config(), &SHIPPED_PASSWORDS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_sidecar_credentials_can_follow_the_bucket_but_never_put_delete_or_purge() {
    let nats = least_privilege_server();
    let fleet = Fleet::new();
    let as_operator = |args: &[&str]| operator(&nats.url(), args);
    as_operator(&["init", "--replicas", "1"]);
    as_operator(&["revoke", "--jti", "t-stolen"]);
    // A sidecar with the read-only user follows the bucket.
    let sidecar = fleet.sidecar(&nats.url(), "", "").await;
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    assert_eq!(fleet.decide(&sidecar, "t-stolen").await, "token_revoked");
    // The same credentials, in the hands of the workload, try to lift or add revocations.
    let client = async_nats::ConnectOptions::with_user_and_password(
        "actguard-sidecar".into(),
        "sidecar-secret".into(),
    )
    .request_timeout(Some(Duration::from_millis(500)))
    .connect(nats.url())
    .await
    .unwrap();
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(client);
    let key = actguard::serve::fleet::key_of(
        actguard::decision::revocation::RevocationKind::Jti,
        "t-stolen",
    );
    let bucket = jetstream
        .get_key_value("actguard-revocations")
        .await
        .unwrap();
    assert!(bucket.delete(&key).await.is_err(), "delete");
    assert!(bucket.purge(&key).await.is_err(), "purge");
    assert!(bucket.put(&key, "{}".into()).await.is_err(), "put over it");
    let other = actguard::serve::fleet::key_of(
        actguard::decision::revocation::RevocationKind::Jti,
        "t-other",
    );
    assert!(bucket.put(&other, "{}".into()).await.is_err(), "put");
    let stream = jetstream
        .get_stream("KV_actguard-revocations")
        .await
        .unwrap();
    assert!(stream.purge().await.is_err(), "stream purge");
    assert!(stream.delete_message(1).await.is_err(), "message delete");
    assert!(
        jetstream
            .delete_stream("KV_actguard-revocations")
            .await
            .is_err(),
        "bucket delete"
    );
    // Nothing changed: the revocation holds everywhere, and nothing was added.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fleet.decide(&sidecar, "t-stolen").await, "token_revoked");
    assert_eq!(fleet.decide(&sidecar, "t-other").await, "allow");
    let listed = as_operator(&["revocations"]);
    assert!(
        listed.contains("t-stolen") && !listed.contains("t-other"),
        "{listed}"
    );
    // The operator may lift it.
    as_operator(&["unrevoke", "--jti", "t-stolen"]);
    let seen = fleet.until(&sidecar, "t-stolen", "allow", 2 * SECOND).await;
    assert_eq!(seen.last().unwrap(), "allow", "{seen:?}");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_sidecars_admin_api_writes_to_the_bucket_only_with_write_through() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    let fleet = Fleet::new();
    let socket = |name: &str| fleet.dir().join(format!("{name}.sock"));
    // A writing sidecar needs publish rights: the operator user; a reader the sidecar user.
    let start = |name: &str, write_through: bool| {
        let user = if write_through {
            "actguard-operator"
        } else {
            "actguard-sidecar"
        };
        let yaml = config_yaml(
            "  leeway: 30s",
            &format!(
                "audit:\n  output: \"off\"\nrevocation:\n  nats:\n    servers: [{}]\n    write_through: {write_through}\n    user: {user}\n    password_file: {}\n",
                nats.url(),
                password_file(user).display()
            ),
        )
        .replace(
            "listen:\n  grpc: 127.0.0.1:0",
            &format!("listen:\n  grpc: 127.0.0.1:0\n  admin: unix:{}", socket(name).display()),
        );
        Config::from_yaml(&yaml, fleet.dir()).unwrap()
    };
    let reader = runtime::start(start("reader", false)).await.unwrap();
    let writer = runtime::start(start("writer", true)).await.unwrap();
    for sidecar in [&reader, &writer] {
        let deadline = Instant::now() + 5 * SECOND;
        while fleet.decide(sidecar, "t0").await != "allow" {
            assert!(Instant::now() < deadline, "not ready");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let local_admin = |name: &str, args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_actguard"))
            .args([
                "admin",
                "--admin",
                &format!("unix:{}", socket(name).display()),
            ])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    // The read-only sidecar refuses: a local-only revocation would not be fleet-wide.
    let (ok, output) = local_admin("reader", &["revoke", "--jti", "t1"]);
    assert!(!ok && output.contains("write_through"), "{output}");
    assert_eq!(fleet.decide(&reader, "t1").await, "allow");
    // Through the writer: acknowledged by the bucket, so every sidecar gets it.
    let (ok, output) = local_admin("writer", &["revoke", "--jti", "t1", "--for", "1h"]);
    assert!(ok, "{output}");
    assert_eq!(
        fleet.decide(&writer, "t1").await,
        "token_revoked",
        "at once on the writer"
    );
    let seen = fleet
        .until(&reader, "t1", "token_revoked", 2 * SECOND)
        .await;
    assert_eq!(seen.last().unwrap(), "token_revoked", "{seen:?}");
    let (ok, output) = local_admin("writer", &["unrevoke", "--jti", "t1"]);
    assert!(ok && output.starts_with("unrevoked"), "{output}");
    let seen = fleet.until(&reader, "t1", "allow", 2 * SECOND).await;
    assert_eq!(seen.last().unwrap(), "allow", "{seen:?}");
    reader.shutdown().await.unwrap();
    writer.shutdown().await.unwrap();
}

/// The last of what [`Fleet::until`] saw.
fn last(seen: Vec<String>) -> String {
    seen.last().cloned().unwrap_or_default()
}

/// The audit lines of `file` that `wanted` accepts, waiting up to 5 s for at least one.
async fn audit_lines(
    file: &Path,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let found: Vec<serde_json::Value> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|line| wanted(line))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_fleet_branch_or_session_actor_revocation_cuts_only_what_it_names() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    let fleet = Fleet::new();
    let audit = fleet.dir().join("audit.log");
    let sidecar = fleet.audited_sidecar(&nats.url(), &audit).await;
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    let (in_s1, in_s2, in_s3) = (
        fleet.token_in("t-1", Some("s1")),
        fleet.token_in("t-2", Some("s2")),
        fleet.token_in("t-3", Some("s3")),
    );
    assert_eq!(fleet.decide_token(&sidecar, &in_s1).await, "allow");
    // The branch an operator reads from the audit log.
    let allowed = audit_lines(&audit, |line| line["jti"] == "t-1").await;
    let branch = allowed[0]["branch"].as_str().unwrap().to_owned();
    assert!(branch.starts_with("b-"), "{branch}");
    operator(
        &nats.url(),
        &["revoke", "--branch", &branch, "--for", "10m"],
    );
    assert_eq!(
        last(
            fleet
                .until_token(&sidecar, &in_s1, "token_revoked", 3 * SECOND)
                .await
        ),
        "token_revoked"
    );
    assert_eq!(
        fleet.decide_token(&sidecar, &in_s2).await,
        "allow",
        "the same agent in another session is another branch"
    );
    // One agent inside one session: s2 through the scheduler is cut, s3 is not.
    operator(
        &nats.url(),
        &[
            "revoke", "--sid", "s2", "--actor", SCHEDULER, "--for", "10m",
        ],
    );
    assert_eq!(
        last(
            fleet
                .until_token(&sidecar, &in_s2, "token_revoked", 3 * SECOND)
                .await
        ),
        "token_revoked"
    );
    assert_eq!(fleet.decide_token(&sidecar, &in_s3).await, "allow");
    // Lifting the branch lifts only the branch.
    operator(&nats.url(), &["unrevoke", "--branch", &branch]);
    assert_eq!(
        last(
            fleet
                .until_token(&sidecar, &in_s1, "allow", 3 * SECOND)
                .await
        ),
        "allow"
    );
    assert_eq!(fleet.decide_token(&sidecar, &in_s2).await, "token_revoked");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_fleet_changes_are_audited_with_their_writer_and_revoked_denies_name_the_revocation() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    let fleet = Fleet::new();
    let audit = fleet.dir().join("audit.log");
    let sidecar = fleet.audited_sidecar(&nats.url(), &audit).await;
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    let snapshot = audit_lines(&audit, |line| line["op"] == "snapshot").await;
    assert_eq!(snapshot[0]["event"], "fleet", "{snapshot:?}");
    let token = fleet.token_in("t-9", Some("s9"));
    operator(
        &nats.url(),
        &[
            "revoke", "--sid", "s9", "--actor", SCHEDULER, "--for", "10m",
        ],
    );
    assert_eq!(
        last(
            fleet
                .until_token(&sidecar, &token, "token_revoked", 3 * SECOND)
                .await
        ),
        "token_revoked"
    );
    let value = format!("{SCHEDULER} s9");
    let applied = audit_lines(&audit, |line| {
        line["event"] == "fleet" && line["op"] == "revoke"
    })
    .await;
    assert_eq!(applied.len(), 1, "{applied:?}");
    let by = applied[0]["by"].as_str().unwrap();
    assert!(
        by.starts_with("nats-user:actguard-operator (actguard admin, uid "),
        "{by}"
    );
    assert_eq!(applied[0]["kind"], "session_actor");
    assert_eq!(applied[0]["value"], value.as_str());
    assert!(
        applied[0]["ttl_seconds"]
            .as_u64()
            .is_some_and(|ttl| ttl > 590 && ttl <= 600)
    );
    let denied = audit_lines(&audit, |line| line["reason"] == "token_revoked").await;
    assert_eq!(
        denied[0]["revoked"],
        json!({"kind": "session_actor", "value": value}),
        "the deny names the revocation that cut it"
    );
    operator(
        &nats.url(),
        &["unrevoke", "--sid", "s9", "--actor", SCHEDULER],
    );
    assert_eq!(
        last(
            fleet
                .until_token(&sidecar, &token, "allow", 3 * SECOND)
                .await
        ),
        "allow"
    );
    let lifted = audit_lines(&audit, |line| {
        line["event"] == "fleet" && line["op"] == "unrevoke"
    })
    .await;
    assert_eq!(lifted.len(), 1, "an unrevoke is never silent: {lifted:?}");
    assert!(
        lifted[0]["by"]
            .as_str()
            .unwrap()
            .starts_with("nats-user:actguard-operator "),
        "{lifted:?}"
    );
    sidecar.shutdown().await.unwrap();
}

/// `actguard admin --nats URL… ARGS…` as the operator, retried for up to `within` (a cluster
/// electing leaders refuses for a few seconds); the output of the first success.
fn operator_at(urls: &[String], args: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let mut command = Command::new(env!("CARGO_BIN_EXE_actguard"));
        command.arg("admin");
        for url in urls {
            command.args(["--nats", url]);
        }
        let output = command
            .args(["--nats-user", "actguard-operator", "--nats-password-file"])
            .arg(password_file("actguard-operator"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            return text;
        }
        assert!(Instant::now() < deadline, "{args:?}: {text}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A JetStream context on `servers` as the shipped configuration's operator user.
async fn operator_jetstream(
    servers: impl async_nats::ToServerAddrs,
) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::with_user_and_password(
        "actguard-operator".into(),
        "operator-secret".into(),
    )
    .connect(servers)
    .await
    .unwrap();
    async_nats::jetstream::new(client)
}

/// The index of the node leading the bucket's stream.
async fn stream_leader(urls: &[String]) -> usize {
    let jetstream = operator_jetstream(urls).await;
    let deadline = Instant::now() + 20 * SECOND;
    loop {
        if let Ok(mut stream) = jetstream.get_stream("KV_actguard-revocations").await
            && let Ok(info) = stream.info().await
            && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
        {
            return NatsCluster::index_of(&leader);
        }
        assert!(Instant::now() < deadline, "the stream has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Decides `token` until `done` returns true (or `within` passes), also deciding `revoked`
/// each round; every answer `revoked` got.
async fn watching(
    fleet: &Fleet,
    sidecar: &Sidecar,
    revoked: &str,
    within: Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> std::collections::BTreeSet<String> {
    let deadline = Instant::now() + within;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        seen.insert(fleet.decide_token(sidecar, revoked).await);
        if done().await || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn least_privilege_cluster() -> NatsCluster {
    NatsCluster::start(3, &shipped_config(), &SHIPPED_PASSWORDS)
}

/// A sidecar following the bucket of `cluster` (every node's URL, so it fails over).
async fn cluster_sidecar(fleet: &Fleet, cluster: &NatsCluster) -> Sidecar {
    let sidecar = fleet.sidecar(&cluster.urls().join(", "), "", "").await;
    assert!(until_ready(&sidecar, 20 * SECOND).await);
    sidecar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_leader_change_in_a_3_node_cluster_loses_no_revocation_and_allows_no_revoked_token()
{
    let mut cluster = least_privilege_cluster();
    let urls = cluster.urls();
    operator_at(&urls, &["init", "--replicas", "3"], 30 * SECOND);
    let fleet = Fleet::new();
    let sidecar = cluster_sidecar(&fleet, &cluster).await;
    let (first, second, fresh) = (fleet.token("t-1"), fleet.token("t-2"), fleet.token("t-3"));
    operator_at(
        &urls,
        &["revoke", "--jti", "t-1", "--for", "10m"],
        10 * SECOND,
    );
    assert_eq!(
        last(
            fleet
                .until_token(&sidecar, &first, "token_revoked", 3 * SECOND)
                .await
        ),
        "token_revoked"
    );
    // The stream's leader dies; a revocation is made while the others elect a new one.
    let leader = stream_leader(&urls).await;
    cluster.nodes[leader].stop();
    let remaining: Vec<String> = urls
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != leader)
        .map(|(_, url)| url.clone())
        .collect();
    let revoke = tokio::task::spawn_blocking(move || {
        operator_at(
            &remaining,
            &["revoke", "--jti", "t-2", "--for", "10m"],
            30 * SECOND,
        )
    });
    let mut seen = watching(&fleet, &sidecar, &first, 40 * SECOND, async || {
        revoke.is_finished()
    })
    .await;
    assert!(revoke.await.unwrap().contains("fleet-wide"));
    seen.extend(
        watching(&fleet, &sidecar, &first, 15 * SECOND, async || {
            fleet.decide_token(&sidecar, &second).await == "token_revoked"
        })
        .await,
    );
    assert_eq!(fleet.decide_token(&sidecar, &second).await, "token_revoked");
    assert!(
        !seen.contains("allow"),
        "a revoked token was allowed: {seen:?}"
    );
    assert_eq!(
        last(
            fleet
                .until_token(&sidecar, &fresh, "allow", 3 * SECOND)
                .await
        ),
        "allow"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_cluster_without_quorum_fails_closed_and_recovers_when_quorum_returns() {
    let mut cluster = least_privilege_cluster();
    let urls = cluster.urls();
    operator_at(&urls, &["init", "--replicas", "3"], 30 * SECOND);
    let fleet = Fleet::new();
    let sidecar = cluster_sidecar(&fleet, &cluster).await;
    let (revoked, fresh) = (fleet.token("t-1"), fleet.token("t-2"));
    operator_at(
        &urls,
        &["revoke", "--jti", "t-1", "--for", "10m"],
        10 * SECOND,
    );
    assert_eq!(
        last(
            fleet
                .until_token(&sidecar, &revoked, "token_revoked", 3 * SECOND)
                .await
        ),
        "token_revoked"
    );
    // Two of three nodes killed: the survivor still holds a replica and could answer from
    // it, but no leader can confirm that nothing newer was committed.
    cluster.nodes[1].stop();
    cluster.nodes[2].stop();
    let killed = Instant::now();
    let mut seen = watching(&fleet, &sidecar, &revoked, 45 * SECOND, async || {
        fleet.decide_token(&sidecar, &fresh).await == "UNAVAILABLE"
    })
    .await;
    assert_eq!(fleet.decide_token(&sidecar, &fresh).await, "UNAVAILABLE");
    // A leader that lost its quorum answers until it notices and steps down (NATS's Raft:
    // lostQuorumInterval is 10 s and is checked on a timer of the same order, so up to about
    // 20 s; nothing can be committed meanwhile, so its answers are still true), then
    // max_staleness (2 s) runs out. Measured: 2 s when the leader was killed, 9 s when the
    // survivor led, 21.5 s once in CI on a loaded machine. The bound is NATS's, not ours:
    // what this test holds is that the sidecar closes, and that no revoked token is allowed
    // meanwhile (`seen`).
    eprintln!("closed {:?} after quorum was lost", killed.elapsed());
    assert!(killed.elapsed() < 35 * SECOND, "{:?}", killed.elapsed());
    cluster.nodes[1].restart();
    cluster.nodes[2].restart();
    seen.extend(
        watching(&fleet, &sidecar, &revoked, 40 * SECOND, async || {
            fleet.decide_token(&sidecar, &fresh).await == "allow"
        })
        .await,
    );
    assert_eq!(fleet.decide_token(&sidecar, &fresh).await, "allow");
    assert_eq!(
        fleet.decide_token(&sidecar, &revoked).await,
        "token_revoked"
    );
    assert!(
        !seen.contains("allow"),
        "a revoked token was allowed: {seen:?}"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_nats_answering_slower_than_max_staleness_fails_closed_and_recovers_when_it_speeds_up()
{
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    operator(&nats.url(), &["revoke", "--jti", "t-1", "--for", "10m"]);
    let fleet = Fleet::new();
    let proxy = GapProxy::start(([127, 0, 0, 1], nats.port).into()).await;
    let sidecar = fleet.sidecar(&proxy.url(), "", "").await;
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    let (revoked, fresh) = (fleet.token("t-1"), fleet.token("t-2"));
    // Slow, but answering within max_staleness (2 s): still current.
    proxy.slow_down(Duration::from_millis(200));
    let mut seen = watching(&fleet, &sidecar, &revoked, 4 * SECOND, async || false).await;
    assert_eq!(fleet.decide_token(&sidecar, &fresh).await, "allow");
    // Slower than max_staleness: unconfirmed, so closed.
    proxy.slow_down(3 * SECOND);
    seen.extend(
        watching(&fleet, &sidecar, &revoked, 10 * SECOND, async || {
            fleet.decide_token(&sidecar, &fresh).await == "UNAVAILABLE"
        })
        .await,
    );
    assert_eq!(fleet.decide_token(&sidecar, &fresh).await, "UNAVAILABLE");
    proxy.slow_down(Duration::ZERO);
    seen.extend(
        watching(&fleet, &sidecar, &revoked, 20 * SECOND, async || {
            fleet.decide_token(&sidecar, &fresh).await == "allow"
        })
        .await,
    );
    assert_eq!(fleet.decide_token(&sidecar, &fresh).await, "allow");
    assert!(
        !seen.contains("allow"),
        "a revoked token was allowed: {seen:?}"
    );
    sidecar.shutdown().await.unwrap();
}

/// The nats-server configuration the shipped Helm values render to (the chart writes
/// `config.merge` and the client TLS block into nats.conf as JSON, and `<< $VAR >>` as a bare
/// variable), on a free port with the test's certificates.
fn helm_rendered_config(server_cert: &Path, server_key: &Path, ca: &Path) -> String {
    let values = helm_values();
    let config = &values["config"];
    assert_eq!(config["jetstream"]["enabled"], true);
    assert_eq!(config["cluster"]["replicas"], 3);
    let mut tls = config["nats"]["tls"]["merge"].clone();
    tls["cert_file"] = json!(server_cert);
    tls["key_file"] = json!(server_key);
    tls["ca_file"] = json!(ca);
    let rendered = json!({
        "listen": "127.0.0.1:{PORT}",
        "jetstream": {"store_dir": "{STORE}"},
        "tls": tls,
        "authorization": config["merge"]["authorization"],
    });
    serde_json::to_string_pretty(&rendered)
        .unwrap()
        .replace(
            "\"<< $ACTGUARD_SIDECAR_PASSWORD >>\"",
            "$ACTGUARD_SIDECAR_PASSWORD",
        )
        .replace(
            "\"<< $ACTGUARD_OPERATOR_PASSWORD >>\"",
            "$ACTGUARD_OPERATOR_PASSWORD",
        )
}

const HELM_VALUES: &str = "deploy/kubernetes/components/nats-revocation/nats-helm-values.yaml";

fn helm_values() -> serde_json::Value {
    serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(HELM_VALUES)).unwrap(),
    )
    .unwrap()
}

/// The quoted strings of `list` (a `NAME = [ … ]` or an `allow: [ … ]` after `after`) in the
/// shipped nats-server configuration.
fn shipped_list(after: &str) -> Vec<String> {
    let conf = shipped_config();
    let start = conf.find(after).unwrap_or_else(|| panic!("{after}"));
    let open = start + conf[start..].find('[').unwrap();
    let close = open + conf[open..].find(']').unwrap();
    conf[open + 1..close]
        .split(',')
        .map(|item| item.trim().trim_matches('"').to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

#[test]
fn the_helm_values_grant_exactly_the_shipped_least_privilege_permissions() {
    let values = helm_values();
    let users = values["config"]["merge"]["authorization"]["users"]
        .as_array()
        .unwrap();
    let publish = |name: &str| -> Vec<String> {
        let user = users.iter().find(|user| user["user"] == name).unwrap();
        serde_json::from_value(user["permissions"]["publish"]["allow"].clone()).unwrap()
    };
    assert_eq!(publish("actguard-sidecar"), shipped_list("BUCKET_READ ="));
    assert_eq!(
        publish("actguard-operator"),
        shipped_list("user: actguard-operator")
    );
    assert_eq!(users.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_the_helm_values_serve_the_bucket_over_mtls_to_a_read_only_sidecar() {
    let fleet = Fleet::new();
    let dir = fleet.dir();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = write("ca.pem", fleet.ca.bundle_pem());
    let server = fleet
        .ca
        .issue_svid_with_dns(
            "spiffe://example.org/ns/nats/sa/nats",
            &["127.0.0.1".into()],
        )
        .unwrap();
    let (server_cert, server_key) = (
        write("nats.pem", &server.cert_pem),
        write("nats-key.pem", &server.key_pem),
    );
    let client = fleet.ca.issue_svid(LOCAL).unwrap();
    let (client_cert, client_key) = (
        write("svid.pem", &client.cert_pem),
        write("svid-key.pem", &client.key_pem),
    );
    let nats = NatsServer::start_with_config(
        &helm_rendered_config(&server_cert, &server_key, &ca),
        &SHIPPED_PASSWORDS,
    );
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let tls_args = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = ["--nats-tls-ca", "--nats-tls-cert", "--nats-tls-key"]
            .iter()
            .zip([&ca, &client_cert, &client_key])
            .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
            .collect();
        all.extend(args.iter().map(|arg| arg.to_string()));
        all
    };
    let init = tls_args(&["init", "--replicas", "1"]);
    operator_at(
        std::slice::from_ref(&url),
        &init.iter().map(String::as_str).collect::<Vec<_>>(),
        10 * SECOND,
    );
    let revoke = tls_args(&["revoke", "--jti", "t-1", "--for", "10m"]);
    operator_at(
        std::slice::from_ref(&url),
        &revoke.iter().map(String::as_str).collect::<Vec<_>>(),
        10 * SECOND,
    );
    // Without a client certificate the server refuses the connection.
    let bare = Command::new(env!("CARGO_BIN_EXE_actguard"))
        .args(["admin", "--nats", &url, "--nats-tls-ca"])
        .arg(&ca)
        .args(["--nats-user", "actguard-operator", "--nats-password-file"])
        .arg(password_file("actguard-operator"))
        .arg("revocations")
        .output()
        .unwrap();
    assert!(
        !bare.status.success(),
        "a client without a certificate was served"
    );
    // The sidecar over mTLS, as the read-only user.
    let sidecar = fleet
        .sidecar(
            &url,
            &format!(
                "    tls: {{ ca: {}, cert: {}, key: {} }}\n",
                ca.display(),
                client_cert.display(),
                client_key.display()
            ),
            "",
        )
        .await;
    assert!(until_ready(&sidecar, 10 * SECOND).await);
    assert_eq!(fleet.decide(&sidecar, "t-1").await, "token_revoked");
    assert_eq!(fleet.decide(&sidecar, "t-2").await, "allow");
    // Its credentials cannot write.
    let tls_client = async_nats::ConnectOptions::with_user_and_password(
        "actguard-sidecar".into(),
        "sidecar-secret".into(),
    )
    .require_tls(true)
    .add_root_certificates(ca.clone())
    .add_client_certificate(client_cert.clone(), client_key.clone())
    .request_timeout(Some(Duration::from_millis(500)))
    .connect(&url)
    .await
    .unwrap();
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(tls_client);
    let bucket = jetstream
        .get_key_value("actguard-revocations")
        .await
        .unwrap();
    let key =
        actguard::serve::fleet::key_of(actguard::decision::revocation::RevocationKind::Jti, "t-1");
    assert!(bucket.purge(&key).await.is_err(), "purge");
    assert!(bucket.put(&key, "{}".into()).await.is_err(), "put");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fleet.decide(&sidecar, "t-1").await, "token_revoked");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_revocation_of_a_kind_this_version_does_not_know_fails_closed_until_removed() {
    let nats = least_privilege_server();
    operator(&nats.url(), &["init", "--replicas", "1"]);
    let fleet = Fleet::new();
    let sidecar = fleet.sidecar(&nats.url(), "", "").await;
    assert!(until_ready(&sidecar, 5 * SECOND).await);
    assert_eq!(fleet.decide(&sidecar, "t-1").await, "allow");
    // A newer actguard writes a kind this one cannot enforce.
    let jetstream = operator_jetstream(nats.url()).await;
    let bucket = jetstream
        .get_key_value("actguard-revocations")
        .await
        .unwrap();
    bucket.put("tenant.YWNtZQ", "{}".into()).await.unwrap();
    let seen = fleet
        .until(&sidecar, "t-1", "UNAVAILABLE", 5 * SECOND)
        .await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("UNAVAILABLE"),
        "{seen:?}"
    );
    assert_eq!(readyz(&sidecar).await.0, 503);
    // Removed: current again.
    bucket.purge("tenant.YWNtZQ").await.unwrap();
    let seen = fleet.until(&sidecar, "t-1", "allow", 5 * SECOND).await;
    assert_eq!(seen.last().map(String::as_str), Some("allow"), "{seen:?}");
    sidecar.shutdown().await.unwrap();
}
