//! Who may revoke and unrevoke: the revocation API authorizes every call by the peer the
//! transport proved (plain TCP: no one; a Unix socket: the kernel's uid; TLS: the SVID),
//! separately per operation, and every call — accepted or refused — is an audit record.
//! Each process that asks here is a separate `actguard admin` process on the same host, as
//! the workload in a Pod would be.

mod common;

use actguard::config::Config;
use actguard::decision::token::unix_now;
use actguard::devkit::{DevAlgorithm, DevCa, DevIssuer, IssuedCertificate, delegated_claims};
use actguard::serve::runtime::{self, Sidecar};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use rcgen::{CertificateParams, SanType};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

const OPERATOR: &str = "spiffe://example.org/ops/oncall";

struct Fixture {
    issuer: DevIssuer,
    ca: DevCa,
    scratch: tempfile::TempDir,
}

impl Fixture {
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

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    fn audit_file(&self) -> PathBuf {
        self.dir().join("audit.jsonl")
    }

    /// The configuration with `listen` lines after `grpc`, and extra top-level keys; the
    /// audit log goes to a file, and `revocations.json` (seeded by [`Self::seed`]) persists.
    fn config(&self, listen: &str, extra: &str) -> Config {
        let yaml = config_yaml(
            "  leeway: 30s",
            &format!(
                "audit:\n  output: {}\nrevocation:\n  file: revocations.json\n{extra}",
                self.audit_file().display()
            ),
        )
        .replace(
            "listen:\n  grpc: 127.0.0.1:0",
            &format!("listen:\n  grpc: 127.0.0.1:0\n{listen}"),
        );
        std::fs::write(self.dir().join("config.yaml"), &yaml).unwrap();
        Config::from_yaml(&yaml, self.dir()).unwrap()
    }

    /// A revocation of `jti` in force before the sidecar starts (as an operator made it).
    fn seed(&self, jti: &str) {
        let stored =
            json!([{ "kind": "jti", "value": jti, "created_at": unix_now(), "expires_at": null }]);
        std::fs::write(self.dir().join("revocations.json"), stored.to_string()).unwrap();
    }

    fn token(&self, jti: &str) -> String {
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
        self.issuer.sign(&claims).unwrap()
    }

    async fn reason(&self, sidecar: &Sidecar, jti: &str) -> String {
        let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.grpc_address))
            .await
            .unwrap();
        let certificate = self.ca.issue_svid(SCHEDULER).unwrap().url_encoded();
        let request = RequestSpec::get("/calendar/events")
            .certificate(&certificate)
            .bearer(&self.token(jti))
            .build();
        Answer::from(client.check(request).await.unwrap().into_inner()).reason
    }

    /// The admin records written so far.
    fn admin_records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.audit_file()).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|record| record["event"] == "admin")
            .collect()
    }

    /// Waits until `count` admin records are written (the writer batches for ~2 ms).
    async fn wait_for_admin_records(&self, count: usize) -> Vec<Value> {
        for _ in 0..200 {
            let records = self.admin_records();
            if records.len() >= count {
                return records;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.admin_records()
    }
}

/// `actguard admin --admin ADDRESS [TLS as WHO] ARGS…` as a separate process.
fn cli(address: &str, tls: Option<(&Path, &str)>, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_actguard"));
    command.args(["admin", "--admin", address]);
    if let Some((dir, who)) = tls {
        command
            .arg("--tls-cert")
            .arg(dir.join(format!("{who}.pem")))
            .arg("--tls-key")
            .arg(dir.join(format!("{who}-key.pem")))
            .arg("--tls-ca")
            .arg(dir.join("bundle.pem"));
    }
    let output = command.args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_same_host_process_cannot_unrevoke_over_the_default_tcp_admin_listener() {
    let fixture = Fixture::new();
    fixture.seed("t-revoked");
    let sidecar = runtime::start(fixture.config("  admin: 127.0.0.1:0", ""))
        .await
        .unwrap();
    let address = sidecar.admin_address.unwrap();
    // The plain-TCP listener still serves the probes and metrics.
    assert!(
        http_get(address, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(address, "/metrics")
            .await
            .contains("actguard_ready")
    );
    assert_eq!(fixture.reason(&sidecar, "t-revoked").await, "token_revoked");
    // The revoked workload, in the same network namespace, tries to lift its revocation, to
    // add one, and to read the list: each is refused.
    let (ok, output) = cli(
        &address.to_string(),
        None,
        &["unrevoke", "--jti", "t-revoked"],
    );
    assert!(!ok, "{output}");
    assert!(
        output.contains("PermissionDenied") || output.contains("permission"),
        "{output}"
    );
    assert!(
        output.contains("listen.admin_tls"),
        "the refusal says what to do: {output}"
    );
    let (ok, output) = cli(&address.to_string(), None, &["revoke", "--jti", "other"]);
    assert!(!ok, "{output}");
    let (ok, output) = cli(&address.to_string(), None, &["revocations"]);
    assert!(!ok, "{output}");
    // The revocation holds.
    assert_eq!(fixture.reason(&sidecar, "t-revoked").await, "token_revoked");
    assert_eq!(fixture.reason(&sidecar, "other").await, "allow");
    // Each refusal is an audit record naming the unauthenticated peer.
    let records = fixture.wait_for_admin_records(3).await;
    let ops: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["op"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("unrevoke", "refused"),
            ("revoke", "refused"),
            ("list", "refused")
        ]
    );
    let unrevoke = &records[0];
    assert!(
        unrevoke["by"]
            .as_str()
            .unwrap()
            .starts_with("tcp:127.0.0.1:")
            && unrevoke["by"]
                .as_str()
                .unwrap()
                .ends_with("(unauthenticated)"),
        "{unrevoke}"
    );
    assert_eq!(unrevoke["kind"], "jti");
    assert_eq!(unrevoke["value"], "t-revoked");
    assert!(
        unrevoke["time"].as_str().unwrap().ends_with('Z'),
        "{unrevoke}"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_plain_tcp_serves_only_the_operations_opted_into() {
    let fixture = Fixture::new();
    fixture.seed("t-revoked");
    let sidecar = runtime::start(fixture.config(
        "  admin: 127.0.0.1:0",
        "admin:\n  insecure_unauthenticated_tcp: [revoke]\n",
    ))
    .await
    .unwrap();
    let address = sidecar.admin_address.unwrap().to_string();
    let (ok, output) = cli(&address, None, &["revoke", "--jti", "t-new"]);
    assert!(ok, "{output}");
    assert_eq!(fixture.reason(&sidecar, "t-new").await, "token_revoked");
    let (ok, output) = cli(&address, None, &["unrevoke", "--jti", "t-revoked"]);
    assert!(!ok, "{output}");
    assert_eq!(fixture.reason(&sidecar, "t-revoked").await, "token_revoked");
    let records = fixture.wait_for_admin_records(2).await;
    assert_eq!(records[0]["outcome"], "accepted");
    assert_eq!(records[1]["outcome"], "refused");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_socket_peer_without_the_unrevoke_right_is_refused() {
    let fixture = Fixture::new();
    fixture.seed("t-revoked");
    let socket = fixture.dir().join("admin.sock");
    let sidecar = runtime::start(fixture.config(
        &format!("  admin: unix:{}", socket.display()),
        "admin:\n  unrevoke_uids: []\n",
    ))
    .await
    .unwrap();
    let address = format!("unix:{}", socket.display());
    let (ok, output) = cli(&address, None, &["revoke", "--jti", "t-new", "--for", "1h"]);
    assert!(ok, "the socket's owner revokes: {output}");
    let (ok, listed) = cli(&address, None, &["revocations"]);
    assert!(
        ok && listed.contains("t-new") && listed.contains("t-revoked"),
        "{listed}"
    );
    let (ok, output) = cli(&address, None, &["unrevoke", "--jti", "t-revoked"]);
    assert!(!ok, "{output}");
    assert!(output.contains("may not unrevoke"), "{output}");
    assert_eq!(fixture.reason(&sidecar, "t-revoked").await, "token_revoked");
    let (ok, output) = cli(&address, None, &["revoke", "--jti", ""]);
    assert!(!ok, "{output}");
    let (ok, output) = cli(&address, None, &["revoke", "--jti", &"x".repeat(2049)]);
    assert!(!ok && output.contains("at most 2048 bytes"), "{output}");
    // Past 8 KiB the request is not even decoded (nor audited).
    let (ok, output) = cli(&address, None, &["revoke", "--jti", &"x".repeat(9000)]);
    assert!(!ok, "{output}");
    // The revocation file cannot be written (its temporary name is taken by a directory):
    // the revocation is not applied, and the failure is recorded.
    let blocker = fixture.dir().join("revocations.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let (ok, output) = cli(&address, None, &["revoke", "--jti", "t-unwritable"]);
    assert!(!ok, "{output}");
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(fixture.reason(&sidecar, "t-unwritable").await, "allow");
    let records = fixture.wait_for_admin_records(6).await;
    let own_uid = std::fs::metadata(&socket).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let by = format!("uid:{} pid:", own_uid.unwrap());
    let summary: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["op"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("revoke", "accepted"),
            ("list", "accepted"),
            ("unrevoke", "refused"),
            ("revoke", "invalid"),
            ("revoke", "invalid"),
            ("revoke", "failed")
        ]
    );
    assert_eq!(records[4]["truncated"], json!(["value"]), "{}", records[4]);
    for record in &records {
        assert!(record["by"].as_str().unwrap().starts_with(&by), "{record}");
    }
    assert_eq!(records[0]["ttl_seconds"], 3600);
    assert_eq!(records[0]["value"], "t-new");
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_an_accepted_unrevoke_is_audited() {
    let fixture = Fixture::new();
    fixture.seed("t-revoked");
    let socket = fixture.dir().join("admin.sock");
    let sidecar =
        runtime::start(fixture.config(&format!("  admin: unix:{}", socket.display()), ""))
            .await
            .unwrap();
    let address = format!("unix:{}", socket.display());
    let (ok, output) = cli(&address, None, &["unrevoke", "--jti", "t-revoked"]);
    assert!(ok, "{output}");
    assert_eq!(fixture.reason(&sidecar, "t-revoked").await, "allow");
    let (ok, output) = cli(&address, None, &["unrevoke", "--jti", "t-revoked"]);
    assert!(ok, "{output}");
    let records = fixture.wait_for_admin_records(2).await;
    assert_eq!(records[0]["op"], "unrevoke");
    assert_eq!(records[0]["outcome"], "accepted");
    assert_eq!(records[0]["detail"], "removed");
    assert_eq!(records[1]["detail"], "no such revocation was in force");
    sidecar.shutdown().await.unwrap();
}

fn server_certificate(ca: &DevCa) -> IssuedCertificate {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/actguard".try_into().unwrap(),
    ));
    ca.issue(params).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_tls_peer_without_the_unrevoke_right_is_refused() {
    let fixture = Fixture::new();
    fixture.seed("t-revoked");
    let dir = fixture.dir();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    let server = server_certificate(&fixture.ca);
    write("svid.pem", &server.cert_pem);
    write("key.pem", &server.key_pem);
    write("bundle.pem", fixture.ca.bundle_pem());
    // The workload passes allow_peers (it may revoke, e.g. to cut itself off), but lifting a
    // revocation is the operator's alone.
    for (name, id) in [("operator", OPERATOR), ("workload", SCHEDULER)] {
        let certificate = fixture.ca.issue_svid(id).unwrap();
        write(&format!("{name}.pem"), &certificate.cert_pem);
        write(&format!("{name}-key.pem"), &certificate.key_pem);
    }
    let listen = "  admin: 127.0.0.1:0\n  admin_tls:\n    cert: svid.pem\n    key: key.pem\n    client_ca: bundle.pem\n    allow_peers: [\"spiffe://example.org/ops/*\", \"spiffe://example.org/agent/*\"]";
    let sidecar = runtime::start(
        fixture.config(listen, &format!("admin:\n  unrevoke_peers: [{OPERATOR}]\n")),
    )
    .await
    .unwrap();
    let address = sidecar.admin_address.unwrap().to_string();
    let (ok, output) = cli(
        &address,
        Some((dir, "workload")),
        &["unrevoke", "--jti", "t-revoked"],
    );
    assert!(!ok, "{output}");
    assert!(output.contains("may not unrevoke"), "{output}");
    assert_eq!(fixture.reason(&sidecar, "t-revoked").await, "token_revoked");
    let (ok, output) = cli(
        &address,
        Some((dir, "workload")),
        &["revoke", "--jti", "t-self"],
    );
    assert!(ok, "{output}");
    let (ok, output) = cli(
        &address,
        Some((dir, "operator")),
        &["unrevoke", "--jti", "t-revoked"],
    );
    assert!(ok, "{output}");
    assert_eq!(fixture.reason(&sidecar, "t-revoked").await, "allow");
    let records = fixture.wait_for_admin_records(3).await;
    let summary: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["op"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
                r["by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("unrevoke", "refused", SCHEDULER),
            ("revoke", "accepted", SCHEDULER),
            ("unrevoke", "accepted", OPERATOR)
        ]
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_socket_right_for_a_uid_that_can_never_connect_stops_the_start() {
    let fixture = Fixture::new();
    let socket = fixture.dir().join("admin.sock");
    let other = if own_uid() == 4242 { 4243 } else { 4242 };
    let error = runtime::start(fixture.config(
        &format!("  admin: unix:{}", socket.display()),
        &format!("admin:\n  unrevoke_uids: [0, {other}]\n"),
    ))
    .await
    .err()
    .expect("a right no one can use");
    assert!(
        error.starts_with(&format!(
            "admin.unrevoke_uids: uid {other} can never connect"
        )),
        "{error}"
    );
}

/// The effective uid of this process (the owner of `/proc/self`).
fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// The uid really comes from the kernel: actguard runs as `nobody`, and root — who can open
/// the 0600 socket — is still refused, while a process running as `nobody` is served. Needs
/// root to run processes as another user; elsewhere the unit tests of the policy stand alone.
#[test]
fn rule_a_socket_peer_is_authorized_by_its_kernel_uid() {
    const NOBODY: u32 = 65534;
    if own_uid() != 0 {
        eprintln!("skipped: needs root to run actguard as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let fixture = Fixture::new();
    let dir = fixture.dir();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.join("admin.sock");
    let yaml = config_yaml("  leeway: 30s", "audit:\n  output: \"off\"\n").replace(
        "listen:\n  grpc: 127.0.0.1:0",
        &format!(
            "listen:\n  grpc: 127.0.0.1:0\n  admin: unix:{}",
            socket.display()
        ),
    );
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_actguard"))
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let address = format!("unix:{}", socket.display());
    let as_user = |uid: u32, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_actguard"));
        command.args(["admin", "--admin", &address]).args(args);
        if uid != 0 {
            command.uid(uid).gid(uid);
        }
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let mut served = false;
    for _ in 0..100 {
        if socket.exists() && as_user(NOBODY, &["revocations"]).0 {
            served = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let result = std::panic::catch_unwind(|| {
        assert!(served, "actguard as nobody did not serve its socket");
        let (ok, output) = as_user(0, &["revoke", "--jti", "t1"]);
        assert!(!ok, "root is not the socket's owner: {output}");
        assert!(output.contains("uid 0 may not revoke"), "{output}");
        let (ok, output) = as_user(NOBODY, &["revoke", "--jti", "t1"]);
        assert!(ok, "{output}");
    });
    let _ = server.kill();
    let _ = server.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn rule_check_config_warns_about_unauthenticated_revocation_and_refuses_rights_that_cannot_apply() {
    let fixture = Fixture::new();
    let check = |listen: &str, admin: &str| {
        let yaml = config_yaml("  leeway: 30s", admin).replace(
            "listen:\n  grpc: 127.0.0.1:0",
            &format!("listen:\n  grpc: 127.0.0.1:0\n{listen}"),
        );
        let file = fixture.dir().join("check.yaml");
        std::fs::write(&file, yaml).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_actguard"))
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    // The default shape: valid, no warning.
    let (ok, output) = check("  admin: 127.0.0.1:9192", "");
    assert!(ok && !output.contains("warning"), "{output}");
    // The opt-in: valid, warned, louder for unrevoke.
    let (ok, output) = check(
        "  admin: 127.0.0.1:9192",
        "admin:\n  insecure_unauthenticated_tcp: [revoke, unrevoke]\n",
    );
    assert!(ok, "{output}");
    assert!(
        output.contains("warning: admin.insecure_unauthenticated_tcp")
            && output.contains("can lift its own"),
        "{output}"
    );
    // Metrics and probes on a non-loopback plain listener: warned.
    let (ok, output) = check("  admin: 0.0.0.0:9192", "");
    assert!(ok && output.contains("warning: listen.admin"), "{output}");
    // Rights that could never apply are errors naming the key.
    for (listen, admin, key) in [
        (
            "  admin: 127.0.0.1:9192",
            "admin:\n  unrevoke_peers: [spiffe://example.org/ops/x]\n",
            "admin.unrevoke_peers",
        ),
        (
            "  admin: 127.0.0.1:9192",
            "admin:\n  revoke_uids: [0]\n",
            "admin.revoke_uids",
        ),
        (
            "  admin: unix:/run/a.sock",
            "admin:\n  insecure_unauthenticated_tcp: [list]\n",
            "admin.insecure_unauthenticated_tcp",
        ),
        (
            "  admin: unix:/run/a.sock",
            "admin:\n  unrevoke_uids: [-1]\n",
            "admin.unrevoke_uids[0]",
        ),
        (
            "  admin: 127.0.0.1:9192",
            "admin:\n  insecure_unauthenticated_tcp: [delete]\n",
            "admin.insecure_unauthenticated_tcp[0]",
        ),
        (
            "  admin: 127.0.0.1:9192",
            "admin:\n  revoke_peer: []\n",
            "admin.revoke_peer",
        ),
    ] {
        let (ok, output) = check(listen, admin);
        assert!(!ok && output.contains(key), "{key}: {output}");
    }
}
