//! End to end over real gRPC: the worked example of DESIGN.md, the binding rule and the
//! response shapes.

mod common;

use actguard::decision::token::unix_now;
use actguard::devkit::delegated_claims;
use common::*;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use serde_json::json;

#[tokio::test]
async fn worked_example_allows_with_overwritten_identity_headers() {
    let mut harness = Harness::start().await;
    let mut claims = harness.claims(&[ORCHESTRATOR, SCHEDULER]);
    claims["jti"] = json!("tok-1");
    claims["sid"] = json!("session-9");
    let token = harness.sign(&claims);
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let request = RequestSpec::get("/calendar/events?day=mon")
        .certificate(&certificate)
        .bearer(&token)
        // A client trying to smuggle its own identity headers upstream.
        .header("x-actguard-subject", "user:mallory")
        .header("x-actguard-chain", "spiffe://example.org/agent/forged")
        .header("x-actguard-scopes", "admin")
        .build();
    let answer = harness.check(request).await;
    assert!(answer.is_allow(), "{answer:?}");
    assert_eq!(answer.header("x-actguard-subject"), Some("user:alice"));
    assert_eq!(answer.header("x-actguard-actor"), Some(SCHEDULER));
    assert_eq!(
        answer.header("x-actguard-chain"),
        Some("spiffe://example.org/agent/orchestrator,spiffe://example.org/agent/scheduler")
    );
    assert_eq!(answer.header("x-actguard-jti"), Some("tok-1"));
    assert_eq!(answer.header("x-actguard-sid"), Some("session-9"));
    for option in &answer.headers {
        assert_eq!(
            option.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            "{option:?}"
        );
    }
    // Headers we set are overwritten; any other client-sent x-actguard-* is removed.
    assert_eq!(
        answer.headers_to_remove,
        vec!["x-actguard-scopes".to_owned(), "authorization".to_owned()]
    );
    let metadata = answer.raw.dynamic_metadata.as_ref().unwrap();
    let field = |name: &str| format!("{:?}", metadata.fields.get(name).unwrap().kind);
    assert!(field("subject").contains("user:alice"));
    assert!(field("actor").contains(SCHEDULER));
    assert!(field("route").contains("calendar-read"));
    assert!(field("chain").contains(ORCHESTRATOR) && field("chain").contains(SCHEDULER));
    assert!(field("scopes").contains("calendar:read"));
    assert!(field("jti").contains("tok-1"));
    assert!(field("sid").contains("session-9"));
}

#[tokio::test]
async fn worked_example_replayed_by_the_orchestrator_is_actor_mismatch() {
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[ORCHESTRATOR, SCHEDULER]);
    let answer = harness.get_calendar(ORCHESTRATOR, &token).await;
    assert_eq!(answer.grpc_code, tonic::Code::PermissionDenied as i32);
    assert_eq!(answer.http_status, 403);
    assert_eq!(answer.reason, "actor_mismatch");
    assert_eq!(
        answer.body,
        json!({"error": "actor_mismatch", "error_description": "the token's current actor is not the caller"})
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("www-authenticate"), None);
}

#[tokio::test]
async fn direct_call_sets_an_empty_chain_and_removes_absent_ids() {
    let mut harness = Harness::start().await;
    let mut claims = harness.claims(&[]);
    claims["client_id"] = json!(SCHEDULER);
    let token = harness.sign(&claims);
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let request = RequestSpec::get("/calendar")
        .certificate(&certificate)
        .bearer(&token)
        .header("x-actguard-jti", "forged")
        .build();
    let answer = harness.check(request).await;
    assert!(answer.is_allow(), "{answer:?}");
    assert_eq!(answer.header("x-actguard-chain"), Some(""));
    assert_eq!(answer.header("x-actguard-actor"), Some(SCHEDULER));
    let chain = answer
        .headers
        .iter()
        .find(|o| o.header.as_ref().unwrap().key == "x-actguard-chain")
        .unwrap();
    assert!(
        chain.keep_empty_value,
        "an empty chain must still overwrite"
    );
    assert!(
        answer
            .headers_to_remove
            .contains(&"x-actguard-jti".to_owned())
    );
    assert!(
        answer
            .headers_to_remove
            .contains(&"x-actguard-sid".to_owned())
    );
}

#[tokio::test]
async fn rule_forwarded_user_token_is_not_bound_to_the_next_hop() {
    let mut harness = Harness::start().await;
    let mut claims = harness.claims(&[]);
    claims["client_id"] = json!(ORCHESTRATOR);
    let token = harness.sign(&claims);
    let answer = harness.get_calendar(SCHEDULER, &token).await;
    assert_eq!(answer.reason, "token_not_bound_to_caller");
    assert_eq!(answer.http_status, 403);
}

#[tokio::test]
async fn rule_forward_token_route_keeps_authorization_and_lowers_depth() {
    let mut harness = Harness::start().await;
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let one_hop = harness.delegated(&[SCHEDULER]);
    let request = RequestSpec::new("POST", "/hooks/new")
        .certificate(&certificate)
        .bearer(&one_hop)
        .build();
    let answer = harness.check(request).await;
    assert!(answer.is_allow(), "{answer:?}");
    assert!(
        !answer
            .headers_to_remove
            .contains(&"authorization".to_owned())
    );
    let two_hops = harness.delegated(&[ORCHESTRATOR, SCHEDULER]);
    let request = RequestSpec::new("POST", "/hooks/new")
        .certificate(&certificate)
        .bearer(&two_hops)
        .build();
    assert_eq!(harness.check(request).await.reason, "delegation_too_deep");
}

#[tokio::test]
async fn rule_missing_token_gets_a_bare_bearer_challenge() {
    let mut harness = Harness::start().await;
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let answer = harness
        .check(
            RequestSpec::get("/calendar")
                .certificate(&certificate)
                .build(),
        )
        .await;
    assert_eq!(answer.reason, "token_missing");
    assert_eq!(answer.http_status, 401);
    assert_eq!(answer.grpc_code, tonic::Code::Unauthenticated as i32);
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"spiffe://example.org/tool/calendar\"")
    );
}

#[tokio::test]
async fn rule_malformed_authorization_is_invalid_request() {
    let mut harness = Harness::start().await;
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let token = harness.delegated(&[SCHEDULER]);
    // The token itself is good and cached (and remembered by the thread that checks): a
    // header that merely starts with it is still malformed.
    assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    for value in [
        "Bearer ",
        &format!("Bearer {token}, Bearer {token}"),
        &format!("Bearer {token},"),
        &format!("Bearer {token} x"),
    ] {
        let request = RequestSpec::get("/calendar")
            .certificate(&certificate)
            .header("authorization", value)
            .build();
        let answer = harness.check(request).await;
        assert_eq!(answer.reason, "authorization_invalid", "{value}");
        assert_eq!(answer.http_status, 400);
        let challenge = answer.header("www-authenticate").unwrap();
        assert!(
            challenge.contains("error=\"invalid_request\""),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn rule_insufficient_scope_names_the_required_scope() {
    let mut harness = Harness::start().await;
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let token = harness.delegated(&[ORCHESTRATOR, SCHEDULER]);
    let request = RequestSpec::new("POST", "/calendar/events")
        .certificate(&certificate)
        .bearer(&token)
        .build();
    let answer = harness.check(request).await;
    assert_eq!(answer.reason, "insufficient_scope");
    assert_eq!(answer.http_status, 403);
    let challenge = answer.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"calendar:write\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn rule_allow_callers_restricts_the_admin_route() {
    let mut harness = Harness::start().await;
    let mut claims = delegated_claims(ISSUER, "user:alice", LOCAL, "admin", &[], unix_now(), 300);
    claims["client_id"] = json!(SCHEDULER);
    let scheduler_token = harness.sign(&claims);
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let request = RequestSpec::get("/admin/users")
        .certificate(&certificate)
        .bearer(&scheduler_token)
        .build();
    assert_eq!(harness.check(request).await.reason, "caller_not_allowed");
    claims["client_id"] = json!(ORCHESTRATOR);
    let orchestrator_token = harness.sign(&claims);
    let certificate = harness.svid(ORCHESTRATOR).url_encoded();
    let request = RequestSpec::get("/admin/users")
        .certificate(&certificate)
        .bearer(&orchestrator_token)
        .build();
    assert!(harness.check(request).await.is_allow());
}

#[tokio::test]
async fn rule_chain_rules_apply_end_to_end() {
    let mut harness = Harness::start().await;
    let cases = [
        (
            "cycle",
            vec![SCHEDULER, ORCHESTRATOR, SCHEDULER],
            "delegation_cycle",
        ),
        (
            "too deep",
            vec![
                PLANNER,
                "spiffe://example.org/agent/x",
                ORCHESTRATOR,
                SCHEDULER,
            ],
            "delegation_too_deep",
        ),
        (
            "foreign actor",
            vec!["spiffe://evil.example/agent/x", SCHEDULER],
            "actor_trust_domain_denied",
        ),
        (
            "non-spiffe actor",
            vec!["agent-x", SCHEDULER],
            "actor_invalid",
        ),
        (
            "partner actor allowed",
            vec!["spiffe://partner.example/agent/x", SCHEDULER],
            "allow",
        ),
    ];
    for (name, actors, expected) in cases {
        let token = harness.delegated(&actors);
        let answer = harness.get_calendar(SCHEDULER, &token).await;
        assert_eq!(answer.reason, expected, "case {name}");
    }
}

#[tokio::test]
async fn rule_may_act_must_name_the_caller_end_to_end() {
    let mut harness = Harness::start().await;
    let mut claims = harness.claims(&[SCHEDULER]);
    claims["may_act"] = json!({"sub": ORCHESTRATOR});
    let token = harness.sign(&claims);
    assert_eq!(
        harness.get_calendar(SCHEDULER, &token).await.reason,
        "may_act_mismatch"
    );
}

#[tokio::test]
async fn a_request_without_attributes_is_denied_not_faulted() {
    let mut harness = Harness::start().await;
    let answer = harness.check(Default::default()).await;
    assert_eq!(answer.reason, "caller_identity_missing");
    assert_eq!(answer.http_status, 403);
}

#[tokio::test]
async fn serves_ext_authz_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("authz.sock");
    let yaml = config_yaml("  leeway: 30s", "").replace(
        "grpc: 127.0.0.1:0",
        &format!("grpc: unix:{}", socket.display()),
    );
    let mut harness = Harness::start_with(&yaml).await;
    // Envoy runs as another user in the pod: it must be able to connect.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o666,
        "the ext_authz socket is connectable by Envoy's user"
    );
    let token = harness.delegated(&[ORCHESTRATOR, SCHEDULER]);
    assert!(harness.get_calendar(SCHEDULER, &token).await.is_allow());
    assert_eq!(
        harness.get_calendar(ORCHESTRATOR, &token).await.reason,
        "actor_mismatch"
    );
}

#[tokio::test]
async fn raw_header_map_is_read_like_envoy_encode_raw_headers() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let mut harness = Harness::start().await;
    let token = harness.delegated(&[SCHEDULER]);
    let certificate = harness.svid(SCHEDULER).url_encoded();
    let with_raw = |raw: Vec<u8>| {
        let mut request = RequestSpec::get("/calendar")
            .certificate(&certificate)
            .build();
        let http = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap();
        http.header_map = Some(HeaderMap {
            headers: vec![HeaderValue {
                key: "authorization".into(),
                value: String::new(),
                raw_value: raw,
            }],
        });
        request
    };
    let answer = harness
        .check(with_raw(format!("Bearer {token}").into_bytes()))
        .await;
    assert!(answer.is_allow(), "{answer:?}");
    let answer = harness.check(with_raw(b"Bearer \xff\xfe".to_vec())).await;
    assert_eq!(answer.reason, "authorization_invalid");
}

#[tokio::test]
async fn rule_edges_ceilings_and_sessions_hold_from_yaml_end_to_end() {
    // From the YAML a user writes, through the real gRPC server, with the exact codes.
    let yaml = config_yaml("  leeway: 30s", "")
        .replace(
            "delegation:\n  max_depth: 3\n",
            r#"delegation:
  max_depth: 3
  ceilings:
    - {actor: "spiffe://example.org/agent/planner", scopes: [calendar:read]}
  edges:
    - {from: "user:*", to: "spiffe://example.org/agent/*"}
    - {from: "spiffe://example.org/agent/orchestrator", to: "spiffe://example.org/agent/scheduler"}
    - {from: "spiffe://example.org/agent/planner", to: "spiffe://example.org/agent/scheduler"}
"#,
        )
        .replace(
            "default: deny",
            "  - name: sessions\n    path_prefix: /sessions\n    require_session: true\ndefault: deny",
        );
    let mut harness = Harness::start_with(&yaml).await;
    let scheduler = harness.svid(SCHEDULER).url_encoded();
    let token = |actors: &[&str], scope: &str, sid: Option<&str>| {
        let mut claims = harness.claims(actors);
        claims["scope"] = json!(scope);
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        harness.sign(&claims)
    };
    let both = "calendar:read calendar:write";
    let cases = [
        (
            "edges: allowed hops",
            "GET",
            "/calendar/events",
            token(&[ORCHESTRATOR, SCHEDULER], "calendar:read", None),
            "allow",
        ),
        (
            "edges: a hop with no edge",
            "GET",
            "/calendar/events",
            token(&[ORCHESTRATOR, PLANNER, SCHEDULER], "calendar:read", None),
            "delegation_edge_denied",
        ),
        (
            "edges: the subject's hop too",
            "GET",
            "/calendar/events",
            token(
                &["spiffe://partner.example/agent/x", SCHEDULER],
                "calendar:read",
                None,
            ),
            "delegation_edge_denied",
        ),
        (
            "ceiling: within",
            "GET",
            "/calendar/events",
            token(&[PLANNER, SCHEDULER], "calendar:read", None),
            "allow",
        ),
        (
            "ceiling: a scope past the planner's",
            "POST",
            "/calendar",
            token(&[PLANNER, SCHEDULER], both, None),
            "delegation_ceiling_exceeded",
        ),
        (
            "ceiling: not on other chains",
            "POST",
            "/calendar",
            token(&[ORCHESTRATOR, SCHEDULER], both, None),
            "allow",
        ),
        (
            "session: without sid",
            "GET",
            "/sessions/x",
            token(&[ORCHESTRATOR, SCHEDULER], "calendar:read", None),
            "session_required",
        ),
        (
            "session: with sid",
            "GET",
            "/sessions/x",
            token(&[ORCHESTRATOR, SCHEDULER], "calendar:read", Some("wf-1")),
            "allow",
        ),
    ];
    for (name, method, path, token, expected) in cases {
        let request = RequestSpec::new(method, path)
            .certificate(&scheduler)
            .bearer(&token)
            .build();
        let answer = harness.check(request).await;
        assert_eq!(answer.reason, expected, "{name}");
        if expected != "allow" {
            assert_eq!(answer.http_status, 403, "{name}");
        }
    }
}
