//! Configuration: the documented example loads; every problem is reported with its key path.

use super::*;
use serde_json::json;
use std::path::PathBuf;

const VALID: &str = r#"
listen:
  grpc: 0.0.0.0:9191
identity:
  local: spiffe://example.org/tool/calendar
  trust_domains: [example.org]
  sources: [certificate, principal]
issuers:
  - issuer: https://sts.example.org
    jwks_file: jwks.json
    algorithms: [ES256, RS256, EdDSA]
tokens:
  leeway: 30s
delegation:
  max_depth: 3
routes:
  - name: calendar-read
    methods: [get]
    hosts: [Calendar.Example.org]
    path_prefix: /calendar/
    require_scopes: [calendar:read]
  - name: admin
    path_prefix: /admin
    require_scopes: [admin]
    allow_callers: [spiffe://example.org/agent/orchestrator, spiffe://example.org/ops/*]
    max_depth: 1
    forward_token: true
default: deny
cache:
  max_entries: 100000
"#;

fn scratch_with_jwks() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // P-256's base point: a valid public key (keys are parsed when loaded).
    let (x, y) = (
        "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
        "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
    );
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "k1"}]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    dir
}

fn errors_of(yaml: &str) -> Vec<String> {
    let dir = scratch_with_jwks();
    match Config::from_yaml(yaml, dir.path()) {
        Ok(_) => vec![],
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_documented_example_loads_into_typed_values() {
    let dir = scratch_with_jwks();
    let config = Config::from_yaml(VALID, dir.path()).unwrap();
    assert_eq!(
        config.listen.grpc,
        ListenAddress::Tcp("0.0.0.0:9191".parse().unwrap())
    );
    assert_eq!(
        config.decision.local_identity.as_str(),
        "spiffe://example.org/tool/calendar"
    );
    assert_eq!(config.decision.leeway, Duration::from_secs(30));
    assert_eq!(config.decision.delegation.max_depth, 3);
    assert_eq!(config.decision.routes.len(), 2);
    let read = config
        .decision
        .routes
        .select("GET", "calendar.example.org", "/calendar/x")
        .unwrap();
    assert_eq!(&*read.name, "calendar-read");
    assert_eq!(read.path_prefix, "/calendar");
    let admin = config.decision.routes.select("POST", "", "/admin").unwrap();
    assert!(admin.forward_token);
    assert_eq!(admin.max_depth, Some(1));
    assert_eq!(
        config.decision.response.realm,
        "spiffe://example.org/tool/calendar"
    );
    assert_eq!(
        config.decision.issuers[0].keys.current().map(|k| k.len()),
        Some(1)
    );
}

#[test]
fn minimal_config_gets_safe_defaults() {
    let yaml = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
"#;
    let dir = scratch_with_jwks();
    let config = Config::from_yaml(yaml, dir.path()).unwrap();
    assert_eq!(
        config.listen.grpc,
        ListenAddress::Tcp("127.0.0.1:9191".parse().unwrap())
    );
    assert!(
        config.decision.routes.is_empty(),
        "no routes: everything is denied"
    );
    assert_eq!(
        config.decision.identity_sources,
        vec![IdentitySource::Certificate, IdentitySource::Principal]
    );
}

#[test]
fn every_error_is_reported_at_once_with_its_key_path() {
    let yaml = r#"
listen: {grpc: "not-an-address", colour: blue}
identity:
  local: spiffe://Example.org/tool
  trust_domains: []
  sources: [certificate, cookie]
issuers:
  - issuer: https://sts.example.org
    jwks_file: missing.json
    algorithms: [HS256, none]
  - {issuer: https://sts.example.org, jwks_uri: "https://sts.example.org/jwks", jwks_file: jwks.json}
tokens: {leeway: 30, max_bytes: 10}
delegation: {max_depth: 99}
routes:
  - {name: a, path_prefix: "/x/../y", require_scopes: ["two words"], allow_callers: ["spiffe://other.org/agent"]}
  - {name: a, path_prefix: /ok, methods: ["GE T"], max_depth: 1, forward_token: "yes"}
default: allow
cache: {max_entries: -1}
extra: 1
"#;
    let errors = errors_of(yaml);
    let expected_paths = [
        "extra: unknown key",
        "listen.colour: unknown key",
        "listen.grpc: must be HOST:PORT",
        "identity.local: SPIFFE ID has a trust domain",
        "identity.trust_domains: must list at least one",
        "identity.sources[1]: must be certificate, principal or xfcc",
        "issuers[0].jwks_file: cannot read",
        "issuers[0].algorithms[0]: must be one of",
        "issuers[0].algorithms[1]: must be one of",
        "issuers[1]: needs exactly one of jwks_file, jwks_uri, discovery: true",
        "issuers[1].issuer: is configured twice",
        "tokens.leeway: must be a duration",
        "tokens.max_bytes: must be a whole number",
        "delegation.max_depth: must be a whole number from 0 to 16",
        "default: must be deny",
        "cache.max_entries: must be a whole number",
    ];
    for expected in expected_paths {
        assert!(
            errors.iter().any(|error| error.starts_with(expected)),
            "missing {expected:?} in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn rule_token_leeway_is_at_most_five_minutes() {
    // RFC 9068 §4 leaves the skew to the resource server; more than minutes would keep
    // expired tokens alive.
    let with_leeway = |leeway: &str| VALID.replace("leeway: 30s", &format!("leeway: {leeway}"));
    assert_eq!(errors_of(&with_leeway("5m")), Vec::<String>::new());
    assert_eq!(
        errors_of(&with_leeway("6m")),
        vec!["tokens.leeway: must be at most 300s".to_owned()]
    );
}

#[test]
fn rule_a_branch_claim_is_a_plain_claim_name_never_one_with_another_meaning() {
    let with_claim = |claim: &str| {
        VALID.replace(
            "leeway: 30s",
            &format!("leeway: 30s\n  branch_claim: {claim}"),
        )
    };
    let dir = scratch_with_jwks();
    let config = Config::from_yaml(&with_claim("execution_branch_id"), dir.path()).unwrap();
    assert_eq!(
        config.decision.branch_claim.as_deref(),
        Some("execution_branch_id")
    );
    for refused in ["sid", "act", "jti", "sub", "\"\"", "\"a b\"", "[x]"] {
        let errors = errors_of(&with_claim(refused));
        assert_eq!(errors.len(), 1, "{refused}: {errors:?}");
        assert!(
            errors[0].starts_with("tokens.branch_claim: "),
            "{refused}: {errors:?}"
        );
    }
}

#[test]
fn route_errors_name_the_route_key() {
    let yaml = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
delegation: {max_depth: 2}
routes:
  - {name: a, path_prefix: "/x/../y", require_scopes: ["two words"], allow_callers: ["spiffe://other.org/agent"]}
  - {name: a, path_prefix: /ok, methods: ["GE T"], max_depth: 3, forward_token: "yes", hosts: ["bad host"]}
  - {name: "bad name!", path_prefix: "calendar"}
  - {name: c, path_prefix: "/a;b", allow_callers: ["spiffe://example.org/a*"]}
"#;
    let errors = errors_of(yaml);
    for expected in [
        "routes[0].path_prefix: must be a normalised absolute path",
        "routes[0].require_scopes[0]: must be one scope token",
        "routes[0].allow_callers[0]: is in a trust domain not listed",
        "routes[1].methods[0]: must be an HTTP method",
        "routes[1].hosts[0]: must be a host name",
        "routes[1].max_depth: must be a whole number from 0 to 2",
        "routes[1].forward_token: must be true or false",
        "routes[2].name: must use only letters",
        "routes[2].path_prefix: must be a normalised absolute path",
        "routes[3].path_prefix: must be a normalised absolute path",
        "routes[3].allow_callers[0]: SPIFFE ID pattern",
    ] {
        assert!(
            errors.iter().any(|error| error.starts_with(expected)),
            "missing {expected:?} in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn duplicate_route_names_are_rejected() {
    let yaml = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
routes:
  - {name: a, path_prefix: /x}
  - {name: a, path_prefix: /y}
"#;
    assert_eq!(
        errors_of(yaml),
        vec!["routes[1].name: is used by an earlier route"]
    );
}

#[test]
fn issuer_key_sources_are_exclusive_and_https_only() {
    let issuer = |body: &str| {
        format!(
            "identity: {{local: \"spiffe://example.org/tool/calendar\", trust_domains: [example.org]}}\nissuers: [{{issuer: \"https://sts.example.org\", {body}}}]\n"
        )
    };
    let cases = [
        (
            "two sources",
            "jwks_file: jwks.json, jwks_uri: \"https://sts.example.org/jwks\"",
            "issuers[0]: needs exactly one of",
        ),
        (
            "refresh in a tight loop",
            "jwks_uri: \"https://sts.example.org/jwks\", refresh_interval: 500ms",
            "issuers[0].refresh_interval: must be at least 1s",
        ),
        (
            "no source",
            "algorithms: [ES256]",
            "issuers[0]: needs exactly one of",
        ),
        (
            "plain http",
            "jwks_uri: \"http://sts.example.org/jwks\"",
            "issuers[0].jwks_uri: must be an https:// URL",
        ),
        (
            "discovery false",
            "discovery: false",
            "issuers[0].discovery: set it to true",
        ),
        (
            "remote key on a file issuer",
            "jwks_file: jwks.json, max_stale: 1h",
            "issuers[0].max_stale: applies only to jwks_uri or discovery",
        ),
        (
            "keys would expire between refreshes",
            "jwks_uri: \"https://sts.example.org/jwks\", refresh_interval: 2h, max_stale: 1h",
            "issuers[0].max_stale: must be longer than refresh_interval",
        ),
        (
            "missing ca file",
            "jwks_uri: \"https://sts.example.org/jwks\", ca_file: missing.pem",
            "issuers[0].ca_file: cannot read",
        ),
    ];
    for (name, body, expected) in cases {
        let errors = errors_of(&issuer(body));
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "case {name}: {errors:?}"
        );
    }
    assert_eq!(
        errors_of(&issuer(
            "jwks_uri: \"http://127.0.0.1:8080/jwks\", insecure_http: true"
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        errors_of(&issuer(
            "discovery: true, refresh_interval: 1m, max_stale: 2h"
        )),
        Vec::<String>::new()
    );
}

#[test]
fn yaml_syntax_errors_and_duplicate_keys_are_reported() {
    assert!(errors_of("identity: [unclosed")[0].starts_with("(document): not valid YAML"));
    let duplicate = "identity: {}\nidentity: {}\n";
    assert!(errors_of(duplicate)[0].starts_with("(document): not valid YAML"));
}

#[test]
fn bad_jwks_is_reported_under_the_issuer_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#,
    )
    .unwrap();
    let yaml = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
"#;
    let errors = Config::from_yaml(yaml, dir.path()).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].path, "issuers[0].jwks_file");
    assert!(
        errors.0[0].message.contains("keys[0]: symmetric"),
        "{}",
        errors.0[0].message
    );
}

#[test]
fn rule_a_jwks_file_that_is_a_device_is_a_config_error_not_a_hang() {
    let yaml = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}
issuers: [{issuer: "https://sts.example.org", jwks_file: /dev/zero}]
"#;
    let errors = errors_of(yaml);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("issuers[0].jwks_file") && errors[0].contains("not a regular file"),
        "{errors:?}"
    );
}

#[test]
fn rule_a_jwks_file_over_4_mib_is_refused_and_a_symbolic_link_is_followed() {
    // Kubernetes mounts ConfigMaps through symbolic links; a file past the limit is a clear
    // error naming its key, never read.
    let dir = scratch_with_jwks();
    std::os::unix::fs::symlink(dir.path().join("jwks.json"), dir.path().join("linked.json"))
        .unwrap();
    let oversized = std::fs::File::create(dir.path().join("oversized.json")).unwrap();
    oversized.set_len(4 * 1024 * 1024 + 1).unwrap();
    let with_file =
        |name: &str| VALID.replace("jwks_file: jwks.json", &format!("jwks_file: {name}"));
    let loaded = Config::from_yaml(&with_file("linked.json"), dir.path());
    assert!(
        loaded.is_ok(),
        "a symbolic link to a regular file: {:?}",
        loaded.err()
    );
    let errors = Config::from_yaml(&with_file("oversized.json"), dir.path()).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors:?}");
    assert_eq!(errors.0[0].path, "issuers[0].jwks_file");
    assert!(
        errors.0[0].message.contains("larger than 4194304 bytes"),
        "{}",
        errors.0[0].message
    );
}

#[test]
fn unix_socket_listen_addresses_parse() {
    assert_eq!(
        ListenAddress::parse("unix:/run/actguard/authz.sock"),
        Some(ListenAddress::Unix(PathBuf::from(
            "/run/actguard/authz.sock"
        )))
    );
    assert_eq!(ListenAddress::parse("unix:relative.sock"), None);
    assert_eq!(ListenAddress::parse("localhost:9191"), None);
}

#[test]
fn certificate_source_must_precede_principal() {
    let yaml = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org], sources: [principal, certificate]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
"#;
    let errors = errors_of(yaml);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("identity.sources: certificate must come before principal"));
}

const BASE: &str = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org], sources: [certificate, xfcc]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
"#;

#[test]
fn overlapping_listeners_are_errors() {
    let yaml = format!(
        "{BASE}listen: {{grpc: \"0.0.0.0:9191\", admin: \"127.0.0.1:9191\", http: \"127.0.0.1:9191\"}}\n"
    );
    let errors = errors_of(&yaml);
    assert!(
        errors.contains(&"listen.http: overlaps listen.grpc".to_owned()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"listen.admin: overlaps listen.grpc".to_owned()),
        "{errors:?}"
    );
    let probes = format!(
        "{BASE}listen: {{grpc: \"unix:/run/a.sock\", admin: \"127.0.0.1:9192\", probes: \"0.0.0.0:9192\"}}\n"
    );
    assert_eq!(
        errors_of(&probes),
        vec!["listen.probes: overlaps listen.admin".to_owned()]
    );
    let not_tcp = format!("{BASE}listen: {{probes: \"unix:/run/p.sock\"}}\n");
    assert_eq!(
        errors_of(&not_tcp),
        vec!["listen.probes: must be IP:PORT, e.g. 127.0.0.1:9192".to_owned()]
    );
    let ephemeral = format!("{BASE}listen: {{grpc: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}}\n");
    assert_eq!(errors_of(&ephemeral), Vec::<String>::new());
}

#[test]
fn http_mode_requires_xfcc_in_sources() {
    let yaml = r#"
listen: {http: "127.0.0.1:9193"}
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
"#;
    let errors = errors_of(yaml);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .starts_with("listen.http: HTTP mode reads the caller from x-forwarded-client-cert")
    );
    assert!(errors_of(&format!("{BASE}listen: {{http: \"127.0.0.1:9193\"}}\n")).is_empty());
}

#[test]
fn operational_sections_parse_with_defaults() {
    let dir = scratch_with_jwks();
    let config = Config::from_yaml(BASE, dir.path()).unwrap();
    assert_eq!(config.listen.admin, ListenAddress::parse("127.0.0.1:9192"));
    assert_eq!(config.listen.http, None);
    assert_eq!(config.audit, Some(crate::config::AuditConfig::default()));
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.log_level, None);
    let yaml = format!(
        "{BASE}listen: {{admin: \"off\"}}\naudit: {{output: audit.log, sample_allows: 0.25, buffer_lines: 10}}\nlimits: {{max_concurrent_checks: 8, check_timeout: 50ms, drain_timeout: 2s}}\nlog: {{level: debug}}\n"
    );
    let config = Config::from_yaml(&yaml, dir.path()).unwrap();
    assert_eq!(config.listen.admin, None);
    let audit = config.audit.unwrap();
    assert_eq!(
        audit.output,
        crate::config::AuditOutput::File(dir.path().join("audit.log"))
    );
    assert_eq!(audit.sample_allows, 0.25);
    assert_eq!(config.limits.max_concurrent_checks, 8);
    assert_eq!(config.limits.check_timeout, Duration::from_millis(50));
    assert_eq!(config.log_level, Some(tracing::Level::DEBUG));
    let off =
        Config::from_yaml(&format!("{BASE}audit: {{output: \"off\"}}\n"), dir.path()).unwrap();
    assert_eq!(off.audit, None);
    // Unquoted `off` (a YAML boolean to the parser) means off too, as documented.
    let unquoted = Config::from_yaml(
        &format!("{BASE}listen: {{admin: off}}\naudit: {{output: off}}\n"),
        dir.path(),
    )
    .unwrap();
    assert_eq!((unquoted.audit, unquoted.listen.admin), (None, None));
    // `off` does not hide mistakes in the other audit keys.
    let errors = errors_of(&format!("{BASE}audit: {{output: off, sample_allows: 7}}\n"));
    assert_eq!(
        errors,
        vec!["audit.sample_allows: must be a number from 0 to 1"]
    );
}

#[test]
fn operational_errors_name_their_keys() {
    let yaml = format!(
        "{BASE}listen: {{admin: nowhere}}\naudit: {{sample_allows: 2, colour: red}}\nlimits: {{max_concurrent_checks: 0, check_timeout: 0s}}\nlog: {{level: loud}}\n"
    );
    let errors = errors_of(&yaml);
    for expected in [
        "listen.admin: must be IP:PORT",
        "audit.colour: unknown key",
        "limits.max_concurrent_checks: must be a whole number from 1",
        "log.level: must be error, warn, info, debug or trace",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn delegation_policy_parses_and_reports_errors() {
    let yaml = format!(
        "{BASE}delegation:\n  max_depth: 2\n  ceilings:\n    - {{actor: \"spiffe://example.org/agent/*\", scopes: [calendar:read]}}\n  edges:\n    - {{from: \"user:*\", to: \"spiffe://example.org/agent/orchestrator\"}}\nroutes:\n  - {{name: s, path_prefix: /s, require_session: true}}\n"
    );
    let dir = scratch_with_jwks();
    let config = Config::from_yaml(&yaml, dir.path()).unwrap();
    assert_eq!(config.decision.delegation.ceilings.len(), 1);
    assert_eq!(
        config.decision.delegation.edges.as_ref().map(Vec::len),
        Some(1)
    );
    assert!(
        config
            .decision
            .routes
            .select("GET", "", "/s")
            .unwrap()
            .require_session
    );
    let bad = format!(
        "{BASE}delegation:\n  ceilings:\n    - {{actor: \"a*b*\", scopes: [\"two words\"]}}\n  edges:\n    - {{from: \"\"}}\n"
    );
    let errors = errors_of(&bad);
    for expected in [
        "delegation.ceilings[0].actor:",
        "delegation.ceilings[0].scopes[0]: must be one scope token",
        "delegation.edges[0].from: must not be empty",
        "delegation.edges[0].to: is required",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn rule_nats_credentials_files_are_refused_and_nats_settings_are_checked() {
    let dir = scratch_with_jwks();
    let with = |nats: &str| {
        let yaml = format!("{VALID}revocation:\n  nats:\n{nats}");
        Config::from_yaml(&yaml, dir.path())
    };
    let ok = with("    servers: [nats://127.0.0.1:4222]\n").unwrap();
    let nats = ok.revocation_nats.unwrap();
    assert_eq!(nats.bucket, "actguard-revocations");
    assert_eq!(nats.max_staleness, std::time::Duration::from_secs(5));
    assert!(!nats.write_through);
    for (nats, key) in [
        (
            "    servers: [nats://h:4222]\n    credentials: x.creds\n",
            "revocation.nats.credentials",
        ),
        (
            "    servers: [http://h:4222]\n",
            "revocation.nats.servers[0]",
        ),
        ("    servers: []\n", "revocation.nats.servers"),
        ("    servers: [tls://h:4222]\n", "revocation.nats.tls"),
        (
            "    servers: [nats://h:4222, tls://h:4223]\n    tls: {ca: ca.pem}\n",
            "revocation.nats.servers",
        ),
        (
            "    servers: [nats://h:4222]\n    max_staleness: 500ms\n",
            "revocation.nats.max_staleness",
        ),
        (
            "    servers: [nats://h:4222]\n    bucket: a.b\n",
            "revocation.nats.bucket",
        ),
        (
            "    servers: [nats://h:4222]\n    password_file: missing\n",
            "revocation.nats.password_file",
        ),
    ] {
        let errors = with(nats).unwrap_err().to_string();
        assert!(errors.contains(key), "{nats}: {errors}");
    }
}

#[test]
fn rule_tool_rules_live_under_mcp_and_every_mcp_error_names_its_key() {
    let yaml = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
delegation: {max_depth: 3}
routes:
  - {name: plain, path_prefix: /plain, tools: [{name: email.send}]}
  - name: m
    path_prefix: /mcp
    max_depth: 2
    mcp:
      max_body_bytes: 0
      methods: [tools/call, "ok"]
      tools:
        - {name: "a*b"}
        - {name: x, max_depth: 3, require_scopes: ["two words"], allow_callers: ["spiffe://other.org/a"]}
        - {name: y, authorization_details: {kind: z}}
        - {name: x}
        - {name: z, extra: 1}
  - {name: empty, path_prefix: /empty, mcp: {}}
"#;
    let errors = errors_of(yaml);
    for expected in [
        "routes[0].tools: tool rules apply to MCP messages: put them under mcp.tools",
        "routes[1].mcp.max_body_bytes: must be a whole number from 1 to 1048576",
        "routes[1].mcp.methods[0]: must be a JSON-RPC method other than tools/call",
        "routes[1].mcp.tools[0].name: must be a tool name, or a prefix ending in one '*'",
        "routes[1].mcp.tools[1].max_depth: must be a whole number from 0 to 2",
        "routes[1].mcp.tools[1].require_scopes[0]: must be one scope token",
        "routes[1].mcp.tools[1].allow_callers[0]: is in a trust domain not listed",
        "routes[1].mcp.tools[2].authorization_details.kind: unknown key",
        "routes[1].mcp.tools[2].authorization_details.type: is required",
        "routes[1].mcp.tools[4].extra: unknown key",
        "routes[2].mcp: allows no message",
    ] {
        assert!(
            errors.iter().any(|error| error.starts_with(expected)),
            "missing {expected:?} in:\n{}",
            errors.join("\n")
        );
    }
    // A second rule for a tool name would never apply.
    let duplicate = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
routes:
  - {name: m, path_prefix: /mcp, mcp: {tools: [{name: x}, {name: z}, {name: x}]}}
"#;
    let errors = errors_of(duplicate);
    assert!(
        errors
            .iter()
            .any(|error| error.starts_with("routes[0].mcp.tools[2]: names x again")),
        "{errors:?}"
    );
    // The README's MCP route loads, tools in order, prefixes parsed.
    let good = r#"
identity: {local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}
issuers: [{issuer: "https://sts.example.org", jwks_file: jwks.json}]
routes:
  - name: calendar-mcp
    methods: [POST]
    path_prefix: /mcp
    require_scopes: [mcp]
    mcp:
      methods: [initialize, tools/list]
      tools:
        - {name: "calendar.*", require_scopes: [calendar:read]}
        - {name: email.send, authorization_details: {type: "https://example.org/rar/mcp-tool"}}
"#;
    let dir = scratch_with_jwks();
    let config = Config::from_yaml(good, dir.path()).unwrap();
    let route = config.decision.routes.iter().next().unwrap();
    let rules = route.mcp.as_ref().unwrap();
    assert_eq!(rules.max_body_bytes, 65536);
    assert_eq!(
        rules.tools[0].name,
        crate::decision::mcp::ToolName::Prefix("calendar.".into())
    );
    assert_eq!(
        rules.tools[1].detail_type.as_deref(),
        Some("https://example.org/rar/mcp-tool")
    );
}

#[test]
fn rule_an_earlier_route_that_can_take_an_mcp_routes_requests_is_warned_about() {
    let yaml = |first: &str| {
        format!(
            r#"
identity: {{local: "spiffe://example.org/tool/calendar", trust_domains: [example.org]}}
issuers: [{{issuer: "https://sts.example.org", jwks_file: jwks.json}}]
routes:
  - {first}
  - {{name: tools, methods: [POST], path_prefix: /mcp, mcp: {{methods: [initialize]}}}}
"#
        )
    };
    let warnings_of = |first: &str| {
        let dir = scratch_with_jwks();
        Config::from_yaml(&yaml(first), dir.path())
            .unwrap()
            .warnings()
    };
    for shadowing in [
        "{name: all, path_prefix: /}",
        "{name: post, methods: [post], path_prefix: /mcp}",
        "{name: deeper, path_prefix: /mcp/v1}",
    ] {
        let warnings = warnings_of(shadowing);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("before the MCP route routes[1] (tools)")),
            "{shadowing}: {warnings:?}"
        );
    }
    for apart in [
        "{name: get, methods: [GET], path_prefix: /mcp}",
        "{name: other, path_prefix: /calendar}",
        "{name: sibling, path_prefix: /mcpx}",
    ] {
        assert!(warnings_of(apart).is_empty(), "{apart}");
    }
}

#[test]
fn rule_routes_budget_keys_are_checked_and_a_budget_needs_a_ledger() {
    let budgeted = VALID.replace(
        "    require_scopes: [calendar:read]\n",
        "    require_scopes: [calendar:read]\n    cost: 3\n    budget:\n      per_branch: 200\n      per_session: 2000\n      claim: budget\n",
    );
    let ledger = "budgets:\n  redis:\n    url: redis://127.0.0.1:6379\n";
    let dir = scratch_with_jwks();
    let config = Config::from_yaml(&format!("{budgeted}{ledger}"), dir.path()).unwrap();
    let route = config.decision.routes.get(0).unwrap();
    assert_eq!(route.cost, 3);
    let rule = route.budget.as_ref().unwrap();
    assert_eq!(
        (rule.per_branch, rule.per_session, rule.claim.as_deref()),
        (Some(200), Some(2000), Some("budget"))
    );
    let budgets = config.budgets.as_ref().unwrap();
    assert_eq!(budgets.key_prefix, "actguard:budget:");
    assert_eq!(budgets.timeout, Duration::from_millis(50));
    assert!(!budgets.allow_on_error);
    assert_eq!(budgets.max_window, Duration::from_secs(24 * 3600));
    // Routes without `cost` cost one unit; a budgeted route requires a session.
    assert_eq!(config.decision.routes.get(1).unwrap().cost, 1);
    assert!(route.require_session);
    assert!(!config.decision.routes.get(1).unwrap().require_session);
    for (name, yaml, expected) in [
        (
            "a budget without a ledger",
            budgeted.clone(),
            "routes[0].budget: needs budgets.redis",
        ),
        (
            "a budget that limits nothing",
            VALID.replace(
                "    require_scopes: [calendar:read]\n",
                "    require_scopes: [calendar:read]\n    budget: {}\n",
            ) + ledger,
            "routes[0].budget: sets no limit",
        ),
        (
            "a budget whose only limit is a claim (a token without it would be unlimited)",
            VALID.replace(
                "    require_scopes: [calendar:read]\n",
                "    require_scopes: [calendar:read]\n    budget: {claim: budget}\n",
            ) + ledger,
            "routes[0].budget: sets no limit",
        ),
        (
            "a budgeted route that does without a session",
            budgeted.replace(
                "      claim: budget\n",
                "      claim: budget\n    require_session: false\n",
            ) + ledger,
            "routes[0].require_session: cannot be false on a route with a budget",
        ),
        (
            "a cost of zero",
            VALID.replace(
                "    require_scopes: [calendar:read]\n",
                "    require_scopes: [calendar:read]\n    cost: 0\n",
            ),
            "routes[0].cost: ",
        ),
        (
            "a claim with another meaning",
            budgeted.replace("claim: budget", "claim: exp") + ledger,
            "routes[0].budget.claim: must be a plain claim name",
        ),
        (
            "the branch claim as the budget claim",
            budgeted
                .replace("claim: budget", "claim: execution_branch_id")
                .replace(
                    "  leeway: 30s\n",
                    "  leeway: 30s\n  branch_claim: execution_branch_id\n",
                )
                + ledger,
            "routes[0].budget.claim: is tokens.branch_claim",
        ),
        (
            "credentials in the URL",
            format!("{budgeted}budgets:\n  redis:\n    url: redis://user:secret@127.0.0.1:6379\n"),
            "budgets.redis.url: must not carry credentials",
        ),
        (
            "another scheme",
            format!("{budgeted}budgets:\n  redis:\n    url: http://127.0.0.1:6379\n"),
            "budgets.redis.url: must be redis://",
        ),
        (
            "rediss:// without a CA",
            format!("{budgeted}budgets:\n  redis:\n    url: rediss://redis:6380\n"),
            "budgets.redis.tls: rediss:// needs tls.ca",
        ),
        (
            "a timeout past the check's deadline",
            format!("{budgeted}{ledger}    timeout: 100ms\n"),
            "budgets.redis.timeout: must be shorter than limits.check_timeout",
        ),
        (
            "on_error neither deny nor allow",
            format!("{budgeted}{ledger}  on_error: warn\n"),
            "budgets.on_error: must be deny or allow",
        ),
        (
            "an unknown key",
            format!("{budgeted}{ledger}  per_branch: 5\n"),
            "budgets.per_branch: unknown key",
        ),
        (
            "a glob character in the key prefix",
            format!("{budgeted}{ledger}    key_prefix: \"actguard:*\"\n"),
            "budgets.redis.key_prefix: ",
        ),
    ] {
        let errors = errors_of(&yaml);
        assert!(
            errors.iter().any(|error| error.starts_with(expected)),
            "{name}: {errors:?}"
        );
    }
    // budgets.on_error: allow is warned about; so is a ledger no route uses.
    let open = Config::from_yaml(
        &format!("{budgeted}{ledger}  on_error: allow\n"),
        dir.path(),
    )
    .unwrap();
    assert!(
        open.warnings()
            .iter()
            .any(|w| w.contains("budgets.on_error: allow"))
    );
    let unused = Config::from_yaml(&format!("{VALID}{ledger}"), dir.path()).unwrap();
    assert!(
        unused
            .warnings()
            .iter()
            .any(|w| w.contains("no route has a budget"))
    );
}
