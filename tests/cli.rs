//! The `actguard` binary: check-config reports every problem and exits 1; serve refuses to
//! start on an invalid config; the demo passes.

use std::process::Command;

fn actguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_actguard"))
}

const BROKEN: &str = r#"
listen: {grpc: "nowhere"}
identity: {local: "spiffe://example.org/Tool/../x", trust_domains: [example.org], colour: red}
issuers: [{issuer: "https://sts.example.org", jwks_file: missing.json}]
routes: [{name: a, path_prefix: /a, require_scopes: ["a b"]}]
"#;

#[test]
fn check_config_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, BROKEN).unwrap();
    let output = actguard()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in [
        "listen.grpc:",
        "identity.local:",
        "identity.colour: unknown key",
        "issuers[0].jwks_file: cannot read",
        "routes[0].require_scopes[0]:",
    ] {
        assert!(stderr.contains(key), "missing {key} in:\n{stderr}");
    }
}

#[test]
fn serve_refuses_an_invalid_config_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, BROKEN).unwrap();
    let output = actguard()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid configuration"));
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = actguard::devkit::DevIssuer::generate(
        "https://sts.example.org",
        "k1",
        actguard::devkit::DevAlgorithm::Es256,
    )
    .unwrap();
    std::fs::write(dir.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "identity: {local: \"spiffe://example.org/tool/calendar\", trust_domains: [example.org]}\n\
         issuers: [{issuer: \"https://sts.example.org\", jwks_file: jwks.json}]\n",
    )
    .unwrap();
    let output = actguard()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn demo_plays_the_scenario_with_expected_answers() {
    let output = actguard().arg("demo").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    for code in [
        "token_not_bound_to_caller",
        "actor_mismatch",
        "token_audience_mismatch",
        "delegation_too_deep",
        "insufficient_scope",
        "caller_trust_domain_denied",
        "token_expired",
    ] {
        assert!(stdout.contains(code), "demo output lacks {code}:\n{stdout}");
    }
    assert!(!stdout.contains("UNEXPECTED"));
}
