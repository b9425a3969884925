//! Writes the seed corpora into `seeds/<target>/` (run from `fuzz/`: `cargo run --bin seeds`).
//! Tokens are signed by the fuzzing key of `src/fuzzing.rs` and valid at its fixed clock, so the
//! fuzzer starts past the signature check.

use actguard::devkit::{DevCa, delegated_claims, envoy_check_request, url_encode};
use actguard::fuzzing::{CONFIG, ISSUER, LOCAL, NOW, SCHEDULER, seed_issuer};
use prost::Message as _;
use serde_json::json;
use std::path::Path;

const ORCHESTRATOR: &str = "spiffe://example.org/agent/orchestrator";

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let directory = Path::new("seeds").join(target);
    std::fs::create_dir_all(&directory).expect("corpus directory");
    std::fs::write(directory.join(name), bytes).expect("seed file");
}

fn main() {
    let issuer = seed_issuer();
    let claims = |actors: &[&str], scope: &str| {
        delegated_claims(ISSUER, "user:alice", LOCAL, scope, actors, NOW - 60, 3660)
    };
    let direct = claims(&[SCHEDULER], "calendar:read");
    let chain = claims(&[ORCHESTRATOR, SCHEDULER], "calendar:read admin");
    let mut rich = chain.clone();
    rich["jti"] = json!("token-1");
    rich["sid"] = json!("session-1");
    rich["client_id"] = json!("orchestrator-app");
    rich["aud"] = json!([LOCAL, "spiffe://example.org/tool/email"]);
    rich["may_act"] = json!({"sub": SCHEDULER});
    let sign = |claims: &serde_json::Value| issuer.sign(claims).expect("signed");
    let (direct_token, chain_token, rich_token) = (sign(&direct), sign(&chain), sign(&rich));

    write("bearer_and_jws", "direct", format!("Bearer {direct_token}"));
    write("bearer_and_jws", "chain", format!("Bearer {chain_token}"));
    write("bearer_and_jws", "rich", format!("bearer  {rich_token} "));
    write(
        "bearer_and_jws",
        "two-headers",
        format!("Bearer {direct_token}\nBearer x"),
    );
    write("bearer_and_jws", "basic", "Basic dXNlcjpwYXNz");

    for (name, value) in [("direct", &direct), ("chain", &chain), ("rich", &rich)] {
        write("claims", name, value.to_string());
        write("strict_json", name, value.to_string());
    }
    write(
        "strict_json",
        "scalars",
        r#"[1, -2.5e10, "\u00e9\ud83d\ude00", true, null, {}]"#,
    );

    for (name, message) in [
        ("initialize", json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                             "params": {"protocolVersion": "2025-06-18", "capabilities": {}}})),
        ("list", json!({"jsonrpc": "2.0", "id": "a", "method": "tools/list"})),
        ("notification", json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
        ("call", json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "calendar.list_events", "arguments": {"day": "mon"}}})),
        ("prefix", json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                         "params": {"name": "notes.append", "arguments": {}}})),
        ("details", json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                          "params": {"name": "email.send",
                                     "arguments": {"to": {"group": "team"}, "body": "hi"}}})),
        ("response", json!({"jsonrpc": "2.0", "id": 5, "result": {}})),
        ("batch", json!([{"jsonrpc": "2.0", "id": 6, "method": "ping"}])),
    ] {
        write("mcp_messages", name, message.to_string());
    }

    write("jwks", "es256", issuer.jwks().to_string());
    write(
        "jwks",
        "mixed",
        json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
            issuer.jwks()["keys"][0],
        ]})
        .to_string(),
    );

    let ca = DevCa::new("example.org").expect("a CA");
    let svid = ca.issue_svid(SCHEDULER).expect("an SVID");
    let encoded = url_encode(&svid.cert_pem);
    write("certificate", "svid-pem", &encoded);
    write("certificate", "ca-pem", url_encode(ca.bundle_pem()));
    let der = rustls_pemfile_der(&svid.cert_pem);
    write("certificate", "svid-der", &der);

    for (name, id) in [
        ("workload", SCHEDULER),
        ("trust-domain", "spiffe://example.org"),
        ("pattern", "spiffe://example.org/agent/*"),
        ("odd", "spiffe://Example.org/a/../b%2F"),
    ] {
        write("spiffe_id", name, id);
    }

    write(
        "xfcc",
        "uri",
        format!("By=spiffe://example.org/tool;URI={SCHEDULER}"),
    );
    write(
        "xfcc",
        "cert",
        format!("Hash=ab;Subject=\"CN=a,O=b\";Cert=\"{encoded}\";URI={SCHEDULER}"),
    );
    write("xfcc", "two", format!("URI={ORCHESTRATOR},URI={SCHEDULER}"));

    for (name, path) in [
        ("plain", "/calendar/events"),
        ("dots", "/calendar/./a/../events?x=1#f"),
        ("escapes", "/%61dmin;v=1/x%2Fy"),
        ("ambiguous", "/admin//../calendar/events"),
    ] {
        write("path", name, path);
    }

    write(
        "route_selection",
        "read",
        "GET\ncalendar.example.org\n/calendar/events",
    );
    write(
        "route_selection",
        "admin",
        "POST\nCalendar.Example.org:443\n/admin/x",
    );
    write("route_selection", "hooks", "PUT\n\n/hooks/a?b");

    write("config", "fixed", CONFIG);
    write(
        "config",
        "docker",
        include_str!("../../deploy/docker/actguard.yaml"),
    );

    let revoke = actguard::serve::admin_api::pb::RevokeRequest {
        kind: 1,
        value: "token-1".into(),
        ttl_seconds: 60,
    };
    write(
        "admin_messages",
        "revoke",
        [&[0u8][..], &revoke.encode_to_vec()].concat(),
    );
    let unrevoke = actguard::serve::admin_api::pb::UnrevokeRequest {
        kind: 4,
        value: SCHEDULER.into(),
    };
    write(
        "admin_messages",
        "unrevoke",
        [&[1u8][..], &unrevoke.encode_to_vec()].concat(),
    );

    for (name, token, path) in [
        ("allow", &direct_token, "/calendar/events"),
        ("admin", &chain_token, "/admin/users"),
        ("rich", &rich_token, "/hooks/x"),
    ] {
        let request = envoy_check_request(&encoded, "GET", "calendar.example.org", path, token);
        write("check_request", name, request.encode_to_vec());
    }
}

/// The DER bytes of a one-certificate PEM.
fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body is base64")
}
