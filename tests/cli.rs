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
        "token_revoked",
    ] {
        assert!(stdout.contains(code), "demo output lacks {code}:\n{stdout}");
    }
    assert!(!stdout.contains("UNEXPECTED"));
}

#[test]
fn explain_shows_every_step_of_an_allow_and_where_a_deny_stops() {
    use actguard::devkit::{DevAlgorithm, DevIssuer, delegated_claims};
    let dir = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::generate("https://sts.example.org", "k1", DevAlgorithm::Es256).unwrap();
    std::fs::write(dir.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "identity: {local: \"spiffe://example.org/tool/calendar\", trust_domains: [example.org]}\n\
         issuers: [{issuer: \"https://sts.example.org\", jwks_file: jwks.json}]\n\
         routes: [{name: calendar-read, path_prefix: /calendar, require_scopes: [calendar:read]}]\n",
    )
    .unwrap();
    let orchestrator = "spiffe://example.org/agent/orchestrator";
    let scheduler = "spiffe://example.org/agent/scheduler";
    let claims = delegated_claims(
        "https://sts.example.org",
        "user:alice",
        "spiffe://example.org/tool/calendar",
        "calendar:read",
        &[orchestrator, scheduler],
        actguard::decision::token::unix_now(),
        300,
    );
    let token = issuer.sign(&claims).unwrap();
    let explain = |caller: &str| {
        let request = serde_json::json!({
            "caller": caller, "method": "GET", "path": "/calendar/events?day=mon",
            "headers": {"Authorization": format!("Bearer {token}")}
        });
        let file = dir.path().join("request.json");
        std::fs::write(&file, request.to_string()).unwrap();
        let output = actguard()
            .args(["explain", "--config"])
            .arg(&config)
            .arg("--request")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let allowed = explain(scheduler);
    assert!(
        allowed.contains("1. caller identity   ok    spiffe://example.org/agent/scheduler"),
        "{allowed}"
    );
    assert!(
        allowed.contains("calendar-read (GET - /calendar/events?day=mon -> /calendar/events)"),
        "{allowed}"
    );
    assert!(
        allowed.contains("sub=user:alice scopes=[calendar:read]"),
        "{allowed}"
    );
    assert!(
        allowed.contains(&format!("{orchestrator} -> {scheduler} (2 actors")),
        "{allowed}"
    );
    assert!(
        allowed
            .trim_end()
            .ends_with(&format!("x-actguard-chain=\"{orchestrator},{scheduler}\")")),
        "{allowed}"
    );
    let denied = explain(orchestrator);
    assert!(
        denied.contains(
            "5. binding           DENY  actor_mismatch: the token's current actor is not the caller"
        ),
        "{denied}"
    );
    assert!(
        denied.contains("6. delegation chain  -     not reached"),
        "{denied}"
    );
    assert!(
        denied
            .trim_end()
            .ends_with("decision: DENY 403 actor_mismatch"),
        "{denied}"
    );
}

#[test]
fn dev_subcommands_mint_credentials_actguard_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let run = |args: &[&str]| {
        let output = actguard().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let out = |name: &str| path(name).display().to_string();
    run(&[
        "dev",
        "ca",
        "--trust-domain",
        "example.org",
        "--out",
        &out("ca"),
    ]);
    run(&[
        "dev",
        "svid",
        "--ca",
        &out("ca"),
        "--id",
        "spiffe://example.org/agent/scheduler",
        "--out",
        &out("scheduler"),
    ]);
    run(&["dev", "issuer", "--out", &out("issuer"), "--kid", "k9"]);
    let token = run(&[
        "dev",
        "token",
        "--issuer",
        &out("issuer"),
        "--sub",
        "user:alice",
        "--act",
        "spiffe://example.org/agent/orchestrator,spiffe://example.org/agent/scheduler",
        "--aud",
        "spiffe://example.org/tool/calendar",
        "--scope",
        "calendar:read",
        "--ttl",
        "5m",
        "--sid",
        "wf-1",
    ]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path("scheduler/svid-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private keys are not world-readable");
    let svid = std::fs::read_to_string(path("scheduler/svid.pem")).unwrap();
    assert_eq!(
        actguard::decision::identity::spiffe_id_from_certificate(&actguard::devkit::url_encode(
            &svid
        ))
        .unwrap()
        .id
        .as_str(),
        "spiffe://example.org/agent/scheduler",
        "the SVID is a valid X509-SVID"
    );
    std::fs::write(
        path("config.yaml"),
        "identity: {local: \"spiffe://example.org/tool/calendar\", trust_domains: [example.org]}\n\
         issuers: [{issuer: \"https://sts.example.org\", jwks_file: issuer/jwks.json, algorithms: [ES256]}]\n\
         routes: [{name: calendar-read, path_prefix: /calendar, require_scopes: [calendar:read]}]\n",
    )
    .unwrap();
    let request = serde_json::json!({
        "certificate": svid, "path": "/calendar",
        "headers": {"authorization": format!("Bearer {}", token.trim())}
    });
    std::fs::write(path("request.json"), request.to_string()).unwrap();
    let explained = run(&[
        "explain",
        "--config",
        &out("config.yaml"),
        "--request",
        &out("request.json"),
    ]);
    assert!(explained.contains("decision: ALLOW"), "{explained}");
    assert!(explained.contains("sid=wf-1"), "{explained}");
    let refused = actguard()
        .args([
            "dev",
            "svid",
            "--ca",
            &out("ca"),
            "--id",
            "spiffe://Example.org/x",
            "--out",
            &out("bad"),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn explain_shows_the_mcp_step_for_a_token_minted_with_authorization_details() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).display().to_string();
    let run = |args: &[&str]| {
        let output = actguard().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    run(&["dev", "issuer", "--out", &out("issuer"), "--kid", "k1"]);
    let mailer = "spiffe://example.org/agent/mailer";
    let details = r#"[{"type":"https://example.org/rar/mcp-tool","actions":["email.send"],"arguments":{"to":["alice@example.org"]}}]"#;
    let issuer = out("issuer");
    let mint = |details: &str| {
        let mut args = vec![
            "dev",
            "token",
            "--issuer",
            &issuer,
            "--sub",
            "user:alice",
            "--act",
            mailer,
            "--aud",
            "spiffe://example.org/tool/calendar",
            "--scope",
            "mcp",
        ];
        if !details.is_empty() {
            args.extend(["--authorization-details", details]);
        }
        run(&args).trim().to_owned()
    };
    let token = mint(details);
    std::fs::write(
        out("config.yaml"),
        "identity: {local: \"spiffe://example.org/tool/calendar\", trust_domains: [example.org], sources: [principal]}\n\
         issuers: [{issuer: \"https://sts.example.org\", jwks_file: issuer/jwks.json}]\n\
         routes:\n\
         \x20 - name: mail-mcp\n\
         \x20   path_prefix: /mcp\n\
         \x20   require_scopes: [mcp]\n\
         \x20   mcp:\n\
         \x20     methods: [initialize]\n\
         \x20     tools: [{name: email.send, authorization_details: {type: \"https://example.org/rar/mcp-tool\"}}]\n",
    )
    .unwrap();
    let explain = |token: &str, to: &str| {
        let request = serde_json::json!({
            "caller": mailer, "method": "POST", "path": "/mcp",
            "headers": {"authorization": format!("Bearer {token}")},
            "body": {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                     "params": {"name": "email.send", "arguments": {"to": to}}}
        });
        std::fs::write(out("request.json"), request.to_string()).unwrap();
        run(&[
            "explain",
            "--config",
            &out("config.yaml"),
            "--request",
            &out("request.json"),
        ])
    };
    let allowed = explain(&token, "alice@example.org");
    assert!(
        allowed.contains("8. mcp message       ok    method tools/call tool email.send"),
        "{allowed}"
    );
    assert!(allowed.contains("decision: ALLOW"), "{allowed}");
    let denied = explain(&token, "mallory@example.org");
    assert!(
        denied.contains("8. mcp message       DENY  insufficient_authorization_details"),
        "{denied}"
    );
    assert!(denied.contains("7. route rules       ok"), "{denied}");
    // A token without details: the same deny; an unusable --authorization-details: refused.
    assert!(
        explain(&mint(""), "alice@example.org")
            .contains("DENY 403 insufficient_authorization_details")
    );
    let refused = actguard()
        .args([
            "dev",
            "token",
            "--issuer",
            &out("issuer"),
            "--sub",
            "u",
            "--aud",
            "a",
        ])
        .args(["--authorization-details", r#"{"type":"x"}"#])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--authorization-details"));
}
