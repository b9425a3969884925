//! MCP tool calls for real: the official MCP Python SDK's server (MCPServer, streamable HTTP)
//! behind real Envoy 1.40 (envoy/mcp.yaml: the body goes to ext_authz) and actguard, and the
//! SDK's client presenting agents' X509-SVIDs over mTLS with delegated tokens. `make test`
//! installs both (tests/mcp/setup.sh, tests/envoy/setup.sh).
//!
//! Each denied call must reach the client as the SDK's `MCPError` carrying actguard's reason
//! (the JSON-RPC error body of an MCP route), and must never reach the server.

mod common;

use actguard::decision::token::unix_now;
use actguard::devkit::delegated_claims;
use common::envoy::{self, Envoy, Relocation, Upstream};
use common::world::{Mode, World};
use common::{ISSUER, LOCAL, ORCHESTRATOR, SCHEDULER};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MAILER: &str = "spiffe://example.org/agent/mailer";
const DETAIL_TYPE: &str = "https://example.org/rar/mcp-tool";

/// The MCP routes of the README's example, before the world's own routes.
const MCP_ROUTES: &str = r#"routes:
  - name: calendar-mcp
    methods: [POST]
    path_prefix: /mcp
    require_scopes: [mcp]
    mcp:
      max_body_bytes: 65536
      methods: [initialize, ping, tools/list, notifications/initialized]
      tools:
        - name: calendar.list_events
          require_scopes: [calendar:read]
        - name: calendar.create_event
          require_scopes: [calendar:write]
          max_depth: 1
        - name: email.send
          allow_callers: [spiffe://example.org/agent/mailer]
          authorization_details: { type: https://example.org/rar/mcp-tool }
  # The session's GET stream and DELETE carry no message: route rules only.
  - name: calendar-mcp-session
    methods: [GET, DELETE]
    path_prefix: /mcp
    require_scopes: [mcp]
"#;

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-venv/bin/python")
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp")
        .join(name)
}

/// The SDK's MCP server on a free loopback port, killed on drop.
struct McpServer {
    child: Child,
    port: u16,
}

impl McpServer {
    async fn start() -> McpServer {
        let port = envoy::free_port();
        let child = Command::new(python())
            .arg(script("server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tests/mcp/setup.sh installs the MCP SDK into target/mcp-venv");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the MCP server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        McpServer { child, port }
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Stack {
    world: World,
    envoy: Envoy,
    audit: PathBuf,
    _server: McpServer,
    _sidecar: actguard::serve::runtime::Sidecar,
}

async fn stack() -> Stack {
    let world = World::new();
    let audit = world.path().join("audit.jsonl");
    let yaml = world
        .config_yaml_audited(Mode::Tcp, &audit)
        .replacen("routes:\n", MCP_ROUTES, 1);
    let config = actguard::config::Config::from_yaml(&yaml, world.path()).unwrap();
    let sidecar = actguard::serve::runtime::start(config).await.unwrap();
    let port = sidecar
        .grpc_address
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server = McpServer::start().await;
    let relocation = Relocation::new(world.path(), Upstream::Tcp(port), server.port);
    let shipped = envoy::shipped("envoy/mcp.yaml");
    // Envoy buffers exactly what the route accepts: a larger body is Envoy's 413, never a
    // partial check, and nothing the route would accept is refused by Envoy.
    let ext_authz = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|filter| filter["name"] == "envoy.filters.http.ext_authz")
        .unwrap()["typed_config"]["with_request_body"]
        .clone();
    assert_eq!(ext_authz["max_request_bytes"], 65536);
    assert_eq!(ext_authz["allow_partial_message"], false);
    assert_eq!(ext_authz["pack_as_bytes"], true);
    assert!(MCP_ROUTES.contains("max_body_bytes: 65536"));
    let bootstrap = relocation.apply(shipped);
    envoy::validate(&bootstrap, world.path()).unwrap();
    let envoy = Envoy::start(&bootstrap, world.path()).await;
    Stack {
        world,
        envoy,
        audit,
        _server: server,
        _sidecar: sidecar,
    }
}

impl Stack {
    /// A token for `user:alice` through `actors` with `scope` and `extra` claims.
    fn token(&self, actors: &[&str], scope: &str, extra: Value) -> String {
        let mut claims =
            delegated_claims(ISSUER, "user:alice", LOCAL, scope, actors, unix_now(), 300);
        for (name, value) in extra.as_object().cloned().unwrap_or_default() {
            claims[name] = value;
        }
        self.world.issuer.sign(&claims).unwrap()
    }

    /// One client step as `caller`: `action` is `list`, or `call` of `tool` with `arguments`.
    fn step(&self, caller: &str, token: &str, tool: Option<(&str, Value)>) -> Value {
        let name = caller.rsplit('/').next().unwrap();
        let (cert, key) = (
            self.world.path().join(format!("{name}.pem")),
            self.world.path().join(format!("{name}-key.pem")),
        );
        if !cert.exists() {
            let svid = self.world.ca.issue_svid(caller).unwrap();
            std::fs::write(&cert, svid.cert_pem).unwrap();
            std::fs::write(&key, svid.key_pem).unwrap();
        }
        let mut step = json!({
            "url": format!("https://127.0.0.1:{}/mcp", self.envoy.listen_port),
            "ca": self.world.path().join("bundle.pem"),
            "cert": cert,
            "key": key,
            "token": token,
            "action": "list",
        });
        if let Some((tool, arguments)) = tool {
            step["action"] = json!("call");
            step["tool"] = json!(tool);
            step["arguments"] = arguments;
        }
        step
    }

    /// Runs the steps in one client process; one outcome per step.
    fn run(&self, steps: &[Value]) -> Vec<Value> {
        let file = self.world.path().join("steps.json");
        std::fs::write(&file, Value::from(steps.to_vec()).to_string()).unwrap();
        let output = Command::new(python())
            .arg(script("client.py"))
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let outcomes: Vec<Value> = stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            outcomes.len(),
            steps.len(),
            "client: {stdout}\n{}\nEnvoy: {}",
            String::from_utf8_lossy(&output.stderr),
            self.envoy.log_text()
        );
        outcomes
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// The reason actguard gave, as the SDK client surfaced it.
fn reason(outcome: &Value) -> &str {
    assert_eq!(outcome["ok"], false, "{outcome}");
    outcome["data"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason in {outcome}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_sdk_lists_and_calls_allowed_tools_and_each_rule_denies_through_envoy() {
    let stack = stack().await;
    let reader = stack.token(&[SCHEDULER], "mcp calendar:read", json!({}));
    let writer_two_hops = stack.token(&[ORCHESTRATOR, SCHEDULER], "mcp calendar:write", json!({}));
    let mail_details = |to: &str| {
        json!({"authorization_details": [{
            "type": DETAIL_TYPE, "actions": ["email.send"], "locations": [LOCAL],
            "arguments": {"to": [to]}
        }]})
    };
    let mailer_plain = stack.token(&[MAILER], "mcp", json!({}));
    let scheduler_with_details =
        stack.token(&[SCHEDULER], "mcp", mail_details("alice@example.org"));
    let mailer_for_alice = stack.token(&[MAILER], "mcp", mail_details("alice@example.org"));
    let mail = |to: &str| Some(("email.send", json!({"to": to, "body": "secret-body-text"})));
    let outcomes = stack.run(&[
        // 0, 1: listing and an allowed call work end to end.
        stack.step(SCHEDULER, &reader, None),
        stack.step(
            SCHEDULER,
            &reader,
            Some(("calendar.list_events", json!({"day": "monday"}))),
        ),
        // 2: a tool the server has but the route does not list.
        stack.step(
            SCHEDULER,
            &reader,
            Some(("calendar.delete_event", json!({"event_id": "e1"}))),
        ),
        // 3: a wrong caller for the tool (its own token, with the details the mailer has).
        stack.step(
            SCHEDULER,
            &scheduler_with_details,
            mail("alice@example.org"),
        ),
        // 4: a scope the tool needs is missing.
        stack.step(
            SCHEDULER,
            &reader,
            Some(("calendar.create_event", json!({"title": "x"}))),
        ),
        // 5: a chain deeper than the tool allows.
        stack.step(
            SCHEDULER,
            &writer_two_hops,
            Some(("calendar.create_event", json!({"title": "x"}))),
        ),
        // 6: no authorization_details for the tool's type.
        stack.step(MAILER, &mailer_plain, mail("alice@example.org")),
        // 7: an argument outside its allowed values.
        stack.step(MAILER, &mailer_for_alice, mail("mallory@example.org")),
        // 8: the argument the details allow.
        stack.step(MAILER, &mailer_for_alice, mail("alice@example.org")),
    ]);
    assert_eq!(
        outcomes[0]["tools"],
        json!([
            "calendar.create_event",
            "calendar.delete_event",
            "calendar.list_events",
            "email.send"
        ]),
        "{}",
        outcomes[0]
    );
    assert_eq!(outcomes[1]["ok"], true, "{}", outcomes[1]);
    assert_eq!(outcomes[1]["text"], "events on monday: standup at 09:00");
    assert_eq!(reason(&outcomes[2]), "mcp_tool_not_allowed");
    assert_eq!(reason(&outcomes[3]), "caller_not_allowed");
    assert_eq!(reason(&outcomes[4]), "insufficient_scope");
    assert_eq!(reason(&outcomes[5]), "delegation_too_deep");
    assert_eq!(reason(&outcomes[6]), "insufficient_authorization_details");
    assert_eq!(reason(&outcomes[7]), "insufficient_authorization_details");
    assert_eq!(outcomes[8]["ok"], true, "{}", outcomes[8]);
    assert_eq!(outcomes[8]["text"], "sent to alice@example.org");
    for denied in &outcomes[2..8] {
        assert_eq!(denied["data"]["status"], 403, "{denied}");
        assert_eq!(denied["code"], -32001, "{denied}");
    }

    // The audit log names method and tool of every message read, never an argument's value.
    let lines = stack.audit_lines();
    let text = std::fs::read_to_string(&stack.audit).unwrap();
    assert!(
        !text.contains("secret-body-text") && !text.contains("mallory"),
        "{text}"
    );
    let tool_calls: Vec<(&str, &str, &str)> = lines
        .iter()
        .filter(|line| line["mcp"]["method"] == "tools/call")
        .map(|line| {
            (
                line["mcp"]["tool"].as_str().unwrap(),
                line["decision"].as_str().unwrap(),
                line["reason"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        tool_calls,
        [
            ("calendar.list_events", "allow", "-"),
            ("calendar.delete_event", "deny", "mcp_tool_not_allowed"),
            ("email.send", "deny", "caller_not_allowed"),
            ("calendar.create_event", "deny", "insufficient_scope"),
            ("calendar.create_event", "deny", "delegation_too_deep"),
            ("email.send", "deny", "insufficient_authorization_details"),
            ("email.send", "deny", "insufficient_authorization_details"),
            ("email.send", "allow", "-"),
        ]
    );
    assert!(
        lines
            .iter()
            .any(|line| line["mcp"]["method"] == "initialize" && line["decision"] == "allow")
    );

    // The tool label takes only configured names: an unlisted tool is `unlisted`.
    let metrics = actguard::decision::telemetry::install().unwrap().render();
    let tool_lines: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("actguard_mcp_tool_calls_total{"))
        .collect();
    let has = |tool: &str, result: &str| {
        tool_lines.iter().any(|line| {
            line.contains(&format!("tool=\"{tool}\""))
                && line.contains(&format!("result=\"{result}\""))
                && line.contains("route=\"calendar-mcp\"")
        })
    };
    assert!(has("unlisted", "deny"), "{tool_lines:?}");
    assert!(
        has("email.send", "allow") && has("email.send", "deny"),
        "{tool_lines:?}"
    );
    assert!(!metrics.contains("calendar.delete_event"), "{tool_lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_messages_through_envoy_get_the_mcp_answers_a_client_can_act_on() {
    let stack = stack().await;
    let reader = stack.token(&[SCHEDULER], "mcp calendar:read", json!({}));
    let client = stack.world.client(Some(SCHEDULER), stack.envoy.listen_port);
    let url = common::world::url(stack.envoy.listen_port, "/mcp");
    let post = |body: String, token: Option<&str>| {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    // A batch, a method not listed, a truncated message: 400 / 403 JSON-RPC errors.
    let batch = post(
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.into(),
        Some(&reader),
    )
    .await
    .unwrap();
    assert_eq!(batch.status(), 400);
    let body: Value = serde_json::from_slice(&batch.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["data"]["error"], "mcp_request_invalid");
    assert_eq!(body["error"]["code"], -32600);
    let method = post(
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#.into(),
        Some(&reader),
    )
    .await
    .unwrap();
    assert_eq!(method.status(), 403);
    let body: Value = serde_json::from_slice(&method.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["data"]["error"], "mcp_method_not_allowed");
    // Over Envoy's max_request_bytes: Envoy refuses it before any check (no partial body).
    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "calendar.list_events", "arguments": {"day": "x".repeat(70_000)}}});
    let refused = post(huge.to_string(), Some(&reader)).await.unwrap();
    assert_eq!(refused.status(), 413);
    // No token: 401 with a bare challenge; a missing tool scope: 403 insufficient_scope naming
    // every scope needed, so the client can step up.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "calendar.create_event", "arguments": {"title": "x"}}})
    .to_string();
    let anonymous = post(call.clone(), None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let scoped = post(call, Some(&reader)).await.unwrap();
    assert_eq!(scoped.status(), 403);
    let challenge = scoped.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"mcp calendar:write\""),
        "{challenge}"
    );
}

/// The message as Envoy sends it: `pack_as_bytes` (raw_body) or the string `body`, with the
/// request's headers (content-length, Envoy's partial-body marker).
fn mcp_check(
    harness: &common::Harness,
    caller: &str,
    token: &str,
    body: &str,
    shape: BodyShape,
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let certificate = harness.svid(caller).url_encoded();
    let mut spec = common::RequestSpec::new("POST", "/mcp")
        .certificate(&certificate)
        .bearer(token)
        .header("content-type", "application/json");
    match shape {
        BodyShape::Bytes | BodyShape::Text => {
            spec = spec.header("content-length", &body.len().to_string());
        }
        BodyShape::MarkedPartial => spec = spec.header("x-envoy-auth-partial-body", "true"),
        BodyShape::ShorterThanDeclared => {
            spec = spec.header("content-length", &(body.len() + 10).to_string());
        }
        BodyShape::Gzip => spec = spec.header("content-encoding", "gzip"),
        BodyShape::Utf7 => spec = spec.header("content-type", "application/json; charset=utf-7"),
    }
    let mut request = spec.build();
    let http = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    match shape {
        BodyShape::Text => http.body = body.to_owned(),
        _ => http.raw_body = body.as_bytes().to_vec(),
    }
    request
}

#[derive(Clone, Copy)]
enum BodyShape {
    Bytes,
    Text,
    MarkedPartial,
    ShorterThanDeclared,
    Gzip,
    Utf7,
}

/// The reason code of a check answer (the gRPC status message carries it on every deny).
fn code_of(answer: &common::Answer) -> String {
    if answer.is_allow() {
        return "allow".into();
    }
    answer.raw.status.as_ref().unwrap().message.clone()
}

#[tokio::test]
async fn rule_an_mcp_route_reads_the_whole_body_envoy_sent_after_every_route_rule() {
    let yaml = common::config_yaml("  leeway: 30s", "").replacen("routes:\n", MCP_ROUTES, 1);
    let mut harness = common::Harness::start_with(&yaml).await;
    let mut claims = harness.claims(&[SCHEDULER]);
    claims["scope"] = json!("mcp calendar:read");
    let token = harness.sign(&claims);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "calendar.list_events", "arguments": {"day": "monday"}}})
    .to_string();
    // Bytes or string, the same allow, naming method and tool in the dynamic metadata.
    for shape in [BodyShape::Bytes, BodyShape::Text] {
        let answer = harness
            .check(mcp_check(&harness, SCHEDULER, &token, &call, shape))
            .await;
        assert!(answer.is_allow(), "{answer:?}");
        let metadata = &answer.raw.dynamic_metadata.as_ref().unwrap().fields;
        let text = |key: &str| match metadata[key].kind.as_ref() {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(text)) => text.clone(),
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(text("mcp_method"), "tools/call");
        assert_eq!(text("mcp_tool"), "calendar.list_events");
    }
    // Not received whole, or encoded: refused, whatever the message says.
    for shape in [
        BodyShape::MarkedPartial,
        BodyShape::ShorterThanDeclared,
        BodyShape::Gzip,
        BodyShape::Utf7,
    ] {
        let answer = harness
            .check(mcp_check(&harness, SCHEDULER, &token, &call, shape))
            .await;
        assert_eq!(code_of(&answer), "mcp_request_invalid");
        assert_eq!(answer.http_status, 400);
        let body = &answer.body;
        assert_eq!(body["jsonrpc"], "2.0", "{body}");
        assert_eq!(body["error"]["data"]["error"], "mcp_request_invalid");
    }
    // With `encode_raw_headers` the headers come in header_map: a utf-7 Content-Type there
    // is refused the same way.
    let mut raw = mcp_check(&harness, SCHEDULER, &token, &call, BodyShape::Bytes);
    let http = raw
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.headers.remove("content-type");
    http.header_map = Some(envoy_types::pb::envoy::config::core::v3::HeaderMap {
        headers: vec![envoy_types::pb::envoy::config::core::v3::HeaderValue {
            key: "content-type".into(),
            value: String::new(),
            raw_value: b"application/json; charset=utf-7".to_vec(),
        }],
    });
    assert_eq!(code_of(&harness.check(raw).await), "mcp_request_invalid");
    // No body at all (Envoy without with_request_body): refused, never allowed on route rules.
    let mut empty = mcp_check(&harness, SCHEDULER, &token, "", BodyShape::Bytes);
    if let Some(http) = empty
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers.remove("content-length");
    }
    assert_eq!(code_of(&harness.check(empty).await), "mcp_request_invalid");
    // Route rules come first: without the route's scope, garbage is insufficient_scope (the
    // body is not read), and a replayed token is actor_mismatch.
    let mut no_scope = harness.claims(&[SCHEDULER]);
    no_scope["scope"] = json!("calendar:read");
    let no_scope = harness.sign(&no_scope);
    let answer = harness
        .check(mcp_check(
            &harness,
            SCHEDULER,
            &no_scope,
            "garbage",
            BodyShape::Bytes,
        ))
        .await;
    assert_eq!(code_of(&answer), "insufficient_scope");
    let answer = harness
        .check(mcp_check(
            &harness,
            ORCHESTRATOR,
            &token,
            &call,
            BodyShape::Bytes,
        ))
        .await;
    assert_eq!(code_of(&answer), "actor_mismatch");
    // A route without mcp never reads a body.
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let mut plain = common::RequestSpec::get("/calendar/events")
        .certificate(&certificate)
        .bearer(&harness.delegated(&[SCHEDULER]))
        .build();
    plain
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap()
        .raw_body = b"not json".to_vec();
    assert!(harness.check(plain).await.is_allow());
}
