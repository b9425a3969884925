//! Entry points of the fuzz targets in `fuzz/` (cargo feature `fuzzing`; never part of a
//! release build). Each runs one parser over arbitrary bytes and panics only when an invariant
//! the documentation promises is broken, so a crash is a finding. Keys, routes, the clock and
//! the certificates' issuer are fixed: every crash replays.

use crate::config::Config;
use crate::decision::Authorizer;
use crate::decision::facts::RequestFacts;
use crate::decision::identity;
use crate::decision::path;
use crate::decision::path::has_segment_prefix;
use crate::decision::policy;
use crate::decision::spiffe::{CallerPattern, SpiffeId};
use crate::decision::token::{self, KeySet, VerifiedToken, Verifier, json};
use crate::devkit::DevIssuer;
use std::sync::{Arc, OnceLock};

/// The time every target decides at; the seed tokens expire an hour later.
pub const NOW: i64 = 1_800_000_000;
/// The workload the fixed configuration protects.
pub const LOCAL: &str = "spiffe://example.org/tool/calendar";
/// The one trusted issuer.
pub const ISSUER: &str = "https://sts.example.org";
/// The caller the claims target binds tokens to.
pub const SCHEDULER: &str = "spiffe://example.org/agent/scheduler";

/// A key made for fuzzing and published here on purpose: it signs the seed tokens, so the
/// fuzzer starts from tokens that verify. It protects nothing.
const FUZZ_ONLY_ES256_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkyo0liaKlO7obcuO
b680vCh9avoylrHFmGEL+phwB5mhRANCAAQmzCqUHZq06WH5nbYkL/5aZYBCpg+I
AgNu2Subc/WAnS7rI5E0oRcJiOTekZjgwlFUY5dpu9d+3ypwU9c5gRZL
-----END PRIVATE KEY-----";

/// The fixed configuration: routes like the README's, one issuer with the key above.
pub const CONFIG: &str = r#"
identity:
  local: spiffe://example.org/tool/calendar
  trust_domains: [example.org]
issuers:
  - issuer: https://sts.example.org
    jwks_file: jwks.json
    algorithms: [ES256]
delegation:
  max_depth: 3
  ceilings:
    - {actor: "spiffe://example.org/agent/*", scopes: [calendar:read, admin]}
  edges:
    - {from: "user:*", to: "spiffe://example.org/agent/*"}
    - {from: "spiffe://example.org/agent/orchestrator", to: "spiffe://example.org/agent/scheduler"}
    - {from: "spiffe://example.org/agent/*", to: "spiffe://example.org/agent/planner"}
routes:
  - name: calendar-read
    methods: [GET]
    hosts: [calendar.example.org]
    path_prefix: /calendar
    require_scopes: [calendar:read]
  - name: admin
    path_prefix: /admin
    require_scopes: [admin]
    allow_callers: [spiffe://example.org/agent/orchestrator, spiffe://example.org/ops/*]
  - name: webhook
    path_prefix: /hooks
    max_depth: 1
    forward_token: true
default: deny
"#;

struct Fixture {
    issuer: DevIssuer,
    /// Where `jwks.json` lives, for the config targets.
    scratch: std::path::PathBuf,
    verifier: Verifier,
    cached: Authorizer,
    uncached: Authorizer,
    config: Config,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let issuer = DevIssuer::from_key_pem(ISSUER, "fuzz-es256", FUZZ_ONLY_ES256_KEY)
            .expect("the fuzzing key loads");
        let scratch = std::env::temp_dir().join(format!("actguard-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).expect("a scratch directory");
        std::fs::write(scratch.join("jwks.json"), issuer.jwks().to_string()).expect("jwks.json");
        let load = |yaml: &str| Config::from_yaml(yaml, &scratch).expect("the fixed config loads");
        let uncached_yaml = format!("{CONFIG}cache: {{max_entries: 0}}\n");
        let issuers = load(CONFIG).decision.issuers;
        let verifier = Verifier::new(
            issuers,
            LOCAL.to_owned(),
            std::time::Duration::from_secs(30),
            token::DEFAULT_MAX_TOKEN_BYTES,
        );
        Fixture {
            verifier,
            cached: Authorizer::new(load(CONFIG).decision),
            uncached: Authorizer::new(load(&uncached_yaml).decision),
            config: load(CONFIG),
            issuer,
            scratch,
        }
    })
}

/// The issuer of the seed tokens.
pub fn seed_issuer() -> &'static DevIssuer {
    &fixture().issuer
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// `Authorization` header values (one per line) → bearer token → JWS verification.
pub fn bearer_and_jws(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let values: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    let Ok(bearer) = token::bearer_token(&values) else {
        return;
    };
    assert!(!bearer.is_empty() && !bearer.contains([' ', ',']));
    if let Ok(verified) = fixture().verifier.verify(bearer, NOW) {
        assert!(
            verified.expires_at().saturating_add(30) > NOW,
            "an expired token verified"
        );
        assert!(!verified.subject().is_empty());
    }
}

/// A claims set (strict JSON) → the claims the policy reads → the policy, for the caller
/// [`SCHEDULER`] on each route. Reaches what the signature keeps the JWS target from.
pub fn claims(data: &[u8]) {
    let Ok(json::Json::Object(members)) = json::parse_tree(data, usize::MAX) else {
        return;
    };
    let Ok(verified) = VerifiedToken::from_claims_for_fuzzing(&members, NOW + 3600) else {
        return;
    };
    // The lineage: one derived branch per prefix of the path, then the claim's; the token's
    // branch is the last.
    let lineage = verified.branch_lineage();
    let named = usize::from(verified.branch_claim().is_some());
    assert_eq!(lineage.len(), verified.actors().len() + 1 + named);
    assert_eq!(Some(verified.branch()), lineage.iter().last());
    assert!(
        lineage
            .iter()
            .take(lineage.len() - named)
            .all(|branch| branch.len() == crate::decision::branch::DERIVED_ID_LEN)
    );
    let verified = Arc::new(verified);
    let fixture = fixture();
    let caller = SpiffeId::parse(SCHEDULER).expect("a SPIFFE ID");
    for route in fixture.config.decision.routes.iter() {
        if policy::authorize(
            &fixture.config.decision.delegation,
            &caller,
            route,
            &verified,
        )
        .is_ok()
        {
            assert_allow_holds(&verified, SCHEDULER, Some(route));
        }
    }
}

/// What every allow of the fixed configuration must satisfy, checked independently of the
/// policy code: the token is bound to `caller` (its current actor — the outermost `act` — or,
/// without `act`, every client it was issued to, else its `sub`); `may_act`, when present, names
/// the caller; every actor is a workload of `example.org`, differs from the subject and appears
/// once; the chain is no deeper than the global (3) or the route's limit; the route's scopes are
/// all granted, and only the orchestrator may call the admin route.
fn assert_allow_holds(
    verified: &VerifiedToken,
    caller: &str,
    route: Option<&crate::decision::routes::Route>,
) {
    match verified.actors().first() {
        Some(current) => assert_eq!(current.subject(), Some(caller), "current actor"),
        None => {
            let clients: Vec<&str> = [verified.client_id(), verified.authorized_party()]
                .into_iter()
                .flatten()
                .collect();
            if clients.is_empty() {
                assert_eq!(verified.subject(), caller, "sub of a direct token");
            } else {
                assert!(clients.iter().all(|client| *client == caller), "issued to");
            }
        }
    }
    match verified.may_act() {
        None => {}
        Some(token::MayAct::Subject(allowed)) => assert_eq!(&**allowed, caller, "may_act"),
        Some(other) => panic!("an allow with may_act {other:?}"),
    }
    let actors: Vec<Option<&str>> = verified.actors().iter().map(|a| a.subject()).collect();
    assert!(actors.len() <= 3, "deeper than delegation.max_depth");
    for (index, actor) in actors.iter().enumerate() {
        let actor = actor.expect("every actor has a sub");
        let id = SpiffeId::parse(actor).expect("every actor is a SPIFFE ID");
        assert!(
            id.is_workload() && id.trust_domain() == "example.org",
            "{actor}"
        );
        assert_ne!(actor, verified.subject(), "an actor is the subject");
        assert!(
            !actors[index + 1..].contains(&Some(actor)),
            "an actor appears twice"
        );
    }
    let Some(route) = route else { return };
    if let Some(depth) = route.max_depth {
        assert!(actors.len() <= depth, "deeper than the route allows");
    }
    for scope in &route.require_scopes {
        assert!(
            verified.scopes().iter().any(|granted| **granted == **scope),
            "allowed without {scope}"
        );
    }
    if &*route.name == "admin" {
        let operator = caller
            .strip_prefix("spiffe://example.org/ops/")
            .is_some_and(|rest| !rest.is_empty());
        assert!(
            caller == ORCHESTRATOR || operator,
            "admin called by {caller}"
        );
    }
    // The ceiling on agents: a chain through one (a direct call by one) carries no other scope.
    let through_agent = actors
        .iter()
        .flatten()
        .chain(actors.is_empty().then_some(&caller))
        .any(|actor| under(actor, "spiffe://example.org/agent/"));
    if through_agent {
        for scope in verified.scopes() {
            assert!(
                ["calendar:read", "admin"].contains(&&**scope),
                "ceiling: {scope}"
            );
        }
    }
    // The edges, subject → first delegate → … → current actor.
    let mut hops: Vec<&str> = vec![verified.subject()];
    hops.extend(actors.iter().rev().flatten());
    for pair in hops.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        let allowed = (from.starts_with("user:") && under(to, "spiffe://example.org/agent/"))
            || (from == ORCHESTRATOR && to == SCHEDULER)
            || (under(from, "spiffe://example.org/agent/") && to == PLANNER);
        assert!(allowed, "hop {from} → {to} is not an edge");
    }
}

const ORCHESTRATOR: &str = "spiffe://example.org/agent/orchestrator";
const PLANNER: &str = "spiffe://example.org/agent/planner";

/// Whether `id` is strictly under `prefix` (which ends with `/`).
fn under(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty())
}

/// The strict JSON parser accepts a subset of what serde_json accepts, with the same meaning.
pub fn strict_json(data: &[u8]) {
    if let Ok(strict) = json::parse_strict(data) {
        let lenient: serde_json::Value = serde_json::from_slice(data).expect("strict JSON is JSON");
        assert_eq!(strict, lenient);
    }
}

/// JWKS documents, as files (every key usable) and as fetched (unusable keys skipped).
pub fn jwks(data: &[u8]) {
    let strict = KeySet::from_jwks(data);
    let skipping = KeySet::from_jwks_skipping_unusable(data);
    if let Ok(keys) = &strict {
        let (skipped_set, skipped) = skipping.expect("a usable set is usable when skipping");
        assert!(skipped.is_empty());
        assert_eq!(keys.len(), skipped_set.len());
    }
}

/// Certificates as Envoy reports them (URL-encoded PEM) and as DER.
pub fn certificate(data: &[u8]) {
    if let Ok(svid) = identity::spiffe_id_from_der(data) {
        assert!(svid.id.is_workload());
    }
    if let Some(text) = text(data)
        && let Ok(svid) = identity::spiffe_id_from_certificate(text)
    {
        assert!(svid.id.is_workload());
    }
}

/// SPIFFE IDs and caller patterns: only canonical IDs parse, and they print as they were given.
pub fn spiffe_id(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(
            id.as_str(),
            text,
            "a SPIFFE ID parsed into another spelling"
        );
        assert!(id.as_str().starts_with("spiffe://"));
        assert_eq!(SpiffeId::parse(id.as_str()).ok(), Some(id.clone()));
    }
    if let Ok(pattern) = CallerPattern::parse(text)
        && let Ok(id) = SpiffeId::parse(text)
    {
        assert!(
            pattern.matches(&id),
            "an exact pattern must match its own ID"
        );
    }
}

/// `x-forwarded-client-cert` values.
pub fn xfcc(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(id) = identity::spiffe_id_from_xfcc(text, NOW) {
        assert!(id.is_workload());
    }
}

/// Path normalisation keeps the guarantees of [`crate::decision::path`], and is idempotent.
pub fn path(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(normal) = path::normalize(text) else {
        return;
    };
    assert!(normal.starts_with('/'), "{normal:?}");
    assert!(!normal.contains(['?', '#', '\\', ';']), "{normal:?}");
    assert!(
        !normal.bytes().any(|byte| byte.is_ascii_control()),
        "{normal:?}"
    );
    for segment in normal.split('/').skip(1) {
        assert!(segment != "." && segment != "..", "{normal:?}");
    }
    assert!(!normal.contains("//"), "{normal:?}");
    let upper = normal.to_ascii_uppercase();
    for encoded in ["%2F", "%5C", "%2E", "%25", "%3B", "%3F", "%23"] {
        assert!(!upper.contains(encoded), "{normal:?}");
    }
    assert_eq!(
        path::normalize(&normal).as_deref(),
        Ok(&*normal),
        "not idempotent"
    );
}

/// Route selection over the fixed table: method, host and path, one per line.
pub fn route_selection(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let mut lines = text.splitn(3, '\n');
    let (method, host, raw_path) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    let Ok(normal) = path::normalize(raw_path) else {
        return;
    };
    let routes = &fixture().config.decision.routes;
    if let Some(route) = routes.select(method, host, &normal) {
        assert!(
            has_segment_prefix(&normal, &route.path_prefix),
            "{normal:?} {route:?}"
        );
        if let Some(methods) = &route.methods {
            assert!(methods.iter().any(|m| m.eq_ignore_ascii_case(method)));
        }
    }
}

/// The configuration loader, over the directory that holds the fixed `jwks.json`.
pub fn config(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let _ = Config::from_yaml(text, &fixture().scratch);
}

/// The revocation service as the socket's owner reaches it (every right), auditing nowhere.
fn admin_service(
    list: &Arc<crate::decision::revocation::RevocationList>,
) -> crate::serve::admin_api::RevocationService {
    use crate::config::{ListenAddress, Listeners};
    use crate::serve::admin_auth::AdminPolicy;
    let listen = Listeners {
        grpc: ListenAddress::Tcp(([127, 0, 0, 1], 9191).into()),
        grpc_tls: None,
        http: None,
        http_request: Default::default(),
        admin: Some(ListenAddress::Unix("/run/actguard/admin.sock".into())),
        admin_tls: None,
        probes: None,
        reflection: false,
    };
    let policy = AdminPolicy::new(&listen, Default::default(), Some(OWNER_UID));
    crate::serve::admin_api::RevocationService::new(
        Arc::clone(list),
        Arc::new(policy),
        crate::serve::audit::AuditLog::disabled(),
    )
}

/// The uid the fuzzed admin calls come from: the socket's owner.
const OWNER_UID: u32 = 1000;

/// A request from the admin socket's owner.
fn from_owner<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(axum::extract::ConnectInfo(
        crate::serve::admin_auth::AdminPeer::Socket {
            uid: OWNER_UID,
            pid: None,
        },
    ));
    request
}

/// Admin API messages: a `RevokeRequest` (first byte even) or an `UnrevokeRequest` (odd), as
/// protobuf, through the service's handlers against a fresh in-memory list.
pub fn admin_messages(data: &[u8]) {
    use crate::decision::revocation::RevocationList;
    use crate::serve::admin_api::{pb, pb::revocations_server::Revocations};
    use prost::Message as _;
    let Some((selector, message)) = data.split_first() else {
        return;
    };
    let list = Arc::new(RevocationList::in_memory());
    let service = admin_service(&list);
    if selector % 2 == 0 {
        let Ok(request) = pb::RevokeRequest::decode(message) else {
            return;
        };
        // Whatever it holds, a request from another uid changes nothing.
        let mut stranger = tonic::Request::new(request.clone());
        stranger.extensions_mut().insert(axum::extract::ConnectInfo(
            crate::serve::admin_auth::AdminPeer::Socket {
                uid: OWNER_UID + 1,
                pid: None,
            },
        ));
        let refused = complete(service.revoke(stranger)).expect_err("a stranger revoked");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(list.list(0).is_empty());
        let answer = complete(service.revoke(from_owner(request.clone())));
        if let Ok(answer) = answer {
            // Listed at the time it was made, so a TTL that ends a second later replays too.
            let made = answer
                .into_inner()
                .revocation
                .expect("the revocation")
                .created_at;
            let listed = list.list(made);
            assert!(
                listed
                    .iter()
                    .any(|revocation| revocation.value == request.value)
            );
        }
    } else {
        let Ok(request) = pb::UnrevokeRequest::decode(message) else {
            return;
        };
        let _ = complete(service.unrevoke(from_owner(request)));
    }
}

/// A fleet bucket entry as a sidecar reads it: the key (the first line) and the value (the
/// rest).
pub fn fleet_entries(data: &[u8]) {
    let (key, body) = match data.iter().position(|&byte| byte == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    crate::serve::fleet::check_entry_for_fuzzing(key, body);
}

/// The MCP rules of the `mcp_messages` target: methods, an exact tool, a prefix, one bound to
/// RFC 9396 details.
fn mcp_rules() -> &'static crate::decision::mcp::McpRules {
    use crate::decision::mcp::{McpRules, ToolName, ToolRule};
    static RULES: OnceLock<McpRules> = OnceLock::new();
    RULES.get_or_init(|| {
        let tool = |name: &str, detail_type: Option<&str>| ToolRule {
            label: name.to_owned(),
            name: ToolName::parse(name),
            require_scopes: Vec::new(),
            allow_callers: None,
            max_depth: None,
            detail_type: detail_type.map(str::to_owned),
        };
        McpRules {
            max_body_bytes: 4096,
            methods: vec!["initialize".into(), "tools/list".into()],
            tools: vec![
                tool("calendar.list_events", None),
                tool("notes.*", None),
                tool("email.send", Some(MCP_DETAIL_TYPE)),
            ],
        }
    })
}

/// The RFC 9396 type of the `mcp_messages` rules.
pub const MCP_DETAIL_TYPE: &str = "https://example.org/rar/mcp-tool";

/// A JSON-RPC body on an MCP route (the token fixed: the scheduler, with details allowing
/// `email.send` to two addresses). Holds: a message that parses is a strict JSON object of
/// JSON-RPC 2.0 within the size cap; an allowed `tools/call` names a tool some rule matches,
/// the same name the body carries; an allowed `email.send` has a `to` argument equal to one the
/// details list; an allowed other method is listed.
pub fn mcp_messages(data: &[u8]) {
    use crate::decision::mcp::{self, Body, RouteContext, TOOLS_CALL};
    static TOKEN: OnceLock<VerifiedToken> = OnceLock::new();
    let token = TOKEN.get_or_init(|| {
        let claims = serde_json::json!({
            "sub": "user:alice",
            "act": {"sub": SCHEDULER},
            "authorization_details": [{
                "type": MCP_DETAIL_TYPE,
                "actions": ["email.send"],
                "arguments": {"to": ["alice@example.org", {"group": "team"}]}
            }]
        });
        let claims = json::Json::from_value(&claims);
        let claims = claims.as_object().expect("an object");
        VerifiedToken::from_claims_for_fuzzing(claims, NOW + 3600)
            .expect("the fixed claims are valid")
    });
    let rules = mcp_rules();
    let body = Body {
        bytes: data,
        partial: false,
        encoded: false,
        content_type: Some("application/json"),
    };
    let Ok(message) = mcp::parse_message(body, rules.max_body_bytes) else {
        return;
    };
    assert!(data.len() <= rules.max_body_bytes, "over the cap");
    let reference = json::parse_strict(data).expect("a parsed message is strict JSON");
    assert_eq!(reference["jsonrpc"], "2.0");
    assert_eq!(reference["method"].as_str(), Some(message.method.as_str()));
    let caller = SpiffeId::parse(SCHEDULER).expect("a SPIFFE ID");
    let mut learned = None;
    let outcome = mcp::authorize(
        rules,
        &message,
        &caller,
        token,
        &RouteContext {
            route_scopes: &[],
            depth_limit: 3,
            location: LOCAL,
        },
        &mut learned,
    );
    if outcome.is_err() {
        return;
    }
    let call = learned.expect("an allow learned its call");
    if message.method != TOOLS_CALL {
        assert!(
            rules.methods.contains(&message.method),
            "an unlisted method"
        );
        return;
    }
    let tool = reference["params"]["name"].as_str().expect("a named tool");
    assert_eq!(call.tool.as_deref(), Some(tool), "the tool the body names");
    let rule = &rules.tools[call.rule.expect("a matching rule")];
    assert!(rule.name.matches(tool), "the rule matches");
    if rule.detail_type.is_some() {
        assert_eq!(tool, "email.send");
        let to = &reference["params"]["arguments"]["to"];
        assert!(
            *to == "alice@example.org" || *to == serde_json::json!({"group": "team"}),
            "an argument outside the details: {to}"
        );
    }
}

/// Runs a future that never waits (the admin handlers do no I/O for an in-memory list).
fn complete<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("an admin handler waited"),
    }
}

/// A whole ext_authz `CheckRequest` (protobuf) through the pipeline, with and without the
/// caches: the same request gets the same decision either way (twice with the cache: a miss,
/// then a hit).
pub fn check_request(data: &[u8]) {
    use prost::Message as _;
    let Ok(request) = envoy_types::pb::envoy::service::auth::v3::CheckRequest::decode(data) else {
        return;
    };
    let fixture = fixture();
    let facts = RequestFacts::from_check_request(&request);
    let evaluation = fixture.uncached.evaluate(&facts, NOW);
    if evaluation.outcome.is_ok() {
        let caller = evaluation.caller.as_ref().expect("an allow has a caller");
        let token = evaluation.token.as_ref().expect("an allow has a token");
        let route = evaluation.route.as_ref().and_then(|name| {
            fixture
                .config
                .decision
                .routes
                .iter()
                .find(|route| route.name == *name)
        });
        assert!(route.is_some(), "an allow names its route");
        assert_allow_holds(token, caller.as_str(), route);
    }
    let uncached = evaluation.outcome;
    let first = fixture.cached.evaluate(&facts, NOW).outcome;
    let second = fixture.cached.evaluate(&facts, NOW).outcome;
    assert_eq!(
        first, uncached,
        "a cache miss decided otherwise than no cache"
    );
    assert_eq!(
        second, uncached,
        "a cache hit decided otherwise than no cache"
    );
}
