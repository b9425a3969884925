use super::*;
use crate::decision::reason::DenyReason;

fn settings() -> ResponseSettings {
    ResponseSettings {
        realm: "spiffe://example.org/tool/calendar".into(),
        resource_metadata: None,
    }
}

#[test]
fn challenges_follow_rfc_6750() {
    let missing = Denial::new(DenyReason::TokenMissing, "x");
    assert_eq!(
        challenge(&missing, &settings()).as_deref(),
        Some("Bearer realm=\"spiffe://example.org/tool/calendar\"")
    );
    let expired = Denial::new(DenyReason::TokenExpired, "the token has expired");
    assert!(
        challenge(&expired, &settings())
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let scope = Denial {
        required_scope: Some("calendar:read admin".into()),
        ..Denial::new(DenyReason::InsufficientScope, "d")
    };
    let value = challenge(&scope, &settings()).unwrap();
    assert!(value.contains("error=\"insufficient_scope\""), "{value}");
    assert!(value.ends_with("scope=\"calendar:read admin\""), "{value}");
    let mismatch = Denial::new(DenyReason::ActorMismatch, "d");
    assert_eq!(challenge(&mismatch, &settings()), None);
}

#[test]
fn quoted_strings_escape_quotes_and_backslashes() {
    assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
}

#[test]
fn direct_call_overwrites_chain_and_removes_absent_ids() {
    // A direct call: no act, a sid, no jti.
    let token = crate::decision::token::VerifiedToken::from_claims_for_tests(&serde_json::json!({
        "sub": "spiffe://example.org/agent/scheduler", "sid": "s1"
    }));
    let grant = Grant::new(
        std::sync::Arc::new(token),
        crate::decision::spiffe::SpiffeId::parse("spiffe://example.org/agent/scheduler").unwrap(),
        "r".into(),
        true,
    );
    let response = check_response(
        &Ok(grant),
        &["X-Actguard-Route", "x-actguard-sid"],
        &settings(),
    );
    let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
        panic!("not an ok response")
    };
    let chain = ok
        .headers
        .iter()
        .find(|h| h.header.as_ref().unwrap().key == CHAIN_HEADER);
    assert!(chain.unwrap().keep_empty_value);
    assert_eq!(
        ok.headers_to_remove,
        vec![JTI_HEADER.to_owned(), "x-actguard-route".to_owned()]
    );
}

/// A grant from `claims` for the caller `actor` on `route`.
fn grant(claims: serde_json::Value, actor: &str, route: &str, forward: bool) -> Grant {
    Grant::new(
        std::sync::Arc::new(crate::decision::token::VerifiedToken::from_claims_for_tests(&claims)),
        crate::decision::spiffe::SpiffeId::parse(actor).unwrap(),
        route.into(),
        forward,
    )
}

/// A delegation chain of `depth` actors, the last one `actor`, as nested `act` claims.
fn chain_claims(depth: usize, actor: &str) -> serde_json::Value {
    let mut act = serde_json::json!({ "sub": actor });
    for hop in 1..depth {
        act = serde_json::json!({ "sub": format!("spiffe://example.org/agent/hop-{hop}"), "act": act });
    }
    act
}

#[test]
fn allow_sent_from_the_grant_decodes_to_the_allow_message() {
    use prost::Message;
    let actor = "spiffe://example.org/agent/scheduler";
    // A subject long enough for two-byte length prefixes at every nesting level.
    let long_subject = format!("user:{}", "é".repeat(200));
    let grants = [
        // A direct call: no act, no sid, no jti, no scopes; the token is forwarded.
        grant(serde_json::json!({ "sub": actor }), actor, "r", true),
        grant(
            serde_json::json!({
                "sub": "user:alice", "act": chain_claims(1, actor),
                "scope": "calendar:read calendar:write", "jti": "j-1", "sid": "s-1"
            }),
            actor,
            "calendar-read",
            false,
        ),
        grant(
            serde_json::json!({
                "sub": long_subject, "act": chain_claims(8, actor),
                "scope": "a b c d e f g h", "jti": "x".repeat(300)
            }),
            actor,
            &"route-".repeat(40),
            false,
        ),
        // An MCP tool call: its method and tool in the metadata.
        grant(
            serde_json::json!({ "sub": "user:alice", "act": chain_claims(1, actor) }),
            actor,
            "calendar-mcp",
            false,
        )
        .with_mcp(crate::decision::mcp::McpCall {
            method: "tools/call".into(),
            tool: Some("calendar.list_events".into()),
            rule: Some(0),
        }),
        grant(
            serde_json::json!({ "sub": actor }),
            actor,
            "calendar-mcp",
            false,
        )
        .with_mcp(crate::decision::mcp::McpCall {
            method: "tools/list".into(),
            tool: None,
            rule: None,
        }),
    ];
    let client_headers: [&[&str]; 3] = [
        &[],
        &[
            "X-Actguard-Route",
            "x-actguard-sid",
            "X-ACTGUARD-ROUTE",
            "x-actguard-chain",
        ],
        &["x-actguard-jti", "x-actguard-extra"],
    ];
    for grant in &grants {
        for client_prefixed in client_headers {
            let answer = answer(Ok(grant.clone()), client_prefixed, &settings());
            assert!(matches!(answer, Answer::Allow { .. }));
            let bytes = answer.encode_to_vec();
            assert_eq!(bytes.len(), answer.encoded_len());
            let decoded = CheckResponse::decode(bytes.as_slice()).unwrap();
            let expected = check_response(&Ok(grant.clone()), client_prefixed, &settings());
            assert_eq!(decoded, expected, "{client_prefixed:?}");
            // Read back as an Answer, it is the same message.
            assert_eq!(
                Answer::decode(bytes.as_slice()).unwrap(),
                Answer::Message(expected)
            );
        }
    }
}

#[test]
fn rule_insufficient_authorization_details_challenges_with_the_type_to_request() {
    let denial = Denial {
        detail_type: Some("https://example.org/rar/mcp-tool".into()),
        ..Denial::new(DenyReason::InsufficientAuthorizationDetails, "d")
    };
    let with_metadata = ResponseSettings {
        resource_metadata: Some(
            "https://tool.example.org/.well-known/oauth-protected-resource".into(),
        ),
        ..settings()
    };
    let value = challenge(&denial, &with_metadata).unwrap();
    assert!(
        value.contains("error=\"insufficient_authorization_details\""),
        "{value}"
    );
    assert!(
        value.contains("authorization_details_types=\"https://example.org/rar/mcp-tool\""),
        "{value}"
    );
    assert!(
        value.ends_with(
            "resource_metadata=\"https://tool.example.org/.well-known/oauth-protected-resource\""
        ),
        "{value}"
    );
    assert_eq!(denial.reason.http_status(), 403);
    // The MCP reasons a credential cannot fix carry no challenge.
    for reason in [
        DenyReason::McpRequestInvalid,
        DenyReason::McpMethodNotAllowed,
        DenyReason::McpToolNotAllowed,
    ] {
        assert_eq!(challenge(&Denial::new(reason, "d"), &settings()), None);
    }
}

#[test]
fn rule_mcp_denials_are_json_rpc_errors_without_echoing_the_request() {
    let mut denial = Denial::new(DenyReason::McpToolNotAllowed, "this tool is not allowed");
    let plain: serde_json::Value = serde_json::from_str(&denial_body(&denial)).unwrap();
    assert_eq!(plain["error"], "mcp_tool_not_allowed");
    denial.json_rpc = true;
    let body: serde_json::Value = serde_json::from_str(&denial_body(&denial)).unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], serde_json::Value::Null);
    assert_eq!(body["error"]["code"], -32001);
    assert_eq!(body["error"]["data"]["error"], "mcp_tool_not_allowed");
    assert_eq!(body["error"]["data"]["status"], 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("mcp_tool_not_allowed: ")
    );
    denial.reason = DenyReason::McpRequestInvalid;
    let body: serde_json::Value = serde_json::from_str(&denial_body(&denial)).unwrap();
    assert_eq!(body["error"]["code"], -32600);
}

#[test]
fn client_prefixed_headers_are_removed_once_unless_ours() {
    assert_eq!(
        client_removals(&["X-Actguard-Route", "x-actguard-route", "X-Actguard-Subject"]),
        vec!["x-actguard-route".to_owned()]
    );
}

#[test]
fn many_client_prefixed_headers_are_removed_in_order_each_once() {
    // 40,000 names, each twice in two cases: every distinct one once, first-seen order.
    let names: Vec<String> = (0..20_000)
        .flat_map(|i| [format!("x-actguard-n{i}"), format!("X-ACTGUARD-N{i}")])
        .collect();
    let borrowed: Vec<&str> = names.iter().map(String::as_str).collect();
    let removals = client_removals(&borrowed);
    assert_eq!(removals.len(), 20_000);
    assert_eq!(removals[0], "x-actguard-n0");
    assert_eq!(removals[19_999], "x-actguard-n19999");
}

#[test]
fn denials_are_sent_as_built() {
    use prost::Message;
    let denial = Denial::new(DenyReason::ActorMismatch, "d");
    let answer = answer(Err(denial.clone()), &[], &settings());
    let expected = check_response(&Err(denial), &[], &settings());
    assert_eq!(answer.encode_to_vec(), expected.encode_to_vec());
    assert_eq!(answer.encoded_len(), expected.encoded_len());
    assert_eq!(answer.into_response(), expected);
}

#[test]
fn rule_a_remembered_denial_is_only_sent_for_the_same_denial_and_settings() {
    // The thread remembers the last denial's bytes; each case below differs from it in one
    // part — reason, description, required scope, realm, resource metadata — and must get its
    // own answer. The same denial under the same settings gets the same bytes again.
    use prost::Message;
    let base = Denial {
        required_scope: Some("calendar:read".into()),
        ..Denial::new(DenyReason::InsufficientScope, "the route needs more scopes")
    };
    let encode = |denial: &Denial, settings: &ResponseSettings| {
        let bytes = answer(Err(denial.clone()), &[], settings).encode_to_vec();
        let expected = check_response(&Err(denial.clone()), &[], settings);
        assert_eq!(bytes, expected.encode_to_vec(), "{denial:?} {settings:?}");
        bytes
    };
    let remembered = encode(&base, &settings());
    assert_eq!(encode(&base, &settings()), remembered);
    let other_realm = ResponseSettings {
        realm: "other".into(),
        ..settings()
    };
    let with_metadata = ResponseSettings {
        resource_metadata: Some(
            "https://tool.example.org/.well-known/oauth-protected-resource".into(),
        ),
        ..settings()
    };
    let cases = [
        (
            Denial {
                reason: DenyReason::ActorMismatch,
                ..base.clone()
            },
            settings(),
        ),
        (
            Denial {
                description: "another text",
                ..base.clone()
            },
            settings(),
        ),
        (
            Denial {
                required_scope: Some("calendar:write".into()),
                ..base.clone()
            },
            settings(),
        ),
        (base.clone(), other_realm),
        (base.clone(), with_metadata),
    ];
    for (denial, settings_of_case) in &cases {
        assert_eq!(encode(&base, &settings()), remembered);
        assert_ne!(encode(denial, settings_of_case), remembered, "{denial:?}");
    }
}

#[test]
fn rule_a_remembered_allow_is_only_sent_for_the_same_decision() {
    // The thread remembers the last allow's bytes; each grant below shares all but one part
    // with the one remembered — another token (equal claims, or other claims), another route
    // of the same name, the token forwarded, another caller — and must get its own answer,
    // never the remembered one. The same decision again gets identical bytes.
    use crate::decision::spiffe::SpiffeId;
    use crate::decision::token::VerifiedToken;
    use prost::Message;
    use std::sync::Arc;
    let actor = "spiffe://example.org/agent/scheduler";
    let claims = |subject: &str| {
        serde_json::json!({
            "sub": subject, "act": chain_claims(2, actor), "scope": "calendar:read", "jti": "j-1"
        })
    };
    let token = Arc::new(VerifiedToken::from_claims_for_tests(&claims("user:alice")));
    let route: Arc<str> = "calendar-read".into();
    let caller = SpiffeId::parse(actor).unwrap();
    let first = Grant::new(token.clone(), caller.clone(), route.clone(), false);
    let encode = |grant: &Grant| {
        let answer = answer(Ok(grant.clone()), &[], &settings());
        let bytes = answer.encode_to_vec();
        assert_eq!(bytes.len(), answer.encoded_len());
        let expected = check_response(&Ok(grant.clone()), &[], &settings());
        assert_eq!(CheckResponse::decode(bytes.as_slice()).unwrap(), expected);
        bytes
    };
    let remembered = encode(&first);
    let again = Grant::new(token.clone(), caller.clone(), route.clone(), false);
    assert!(again.is_same_decision(&first));
    assert_eq!(
        encode(&again),
        remembered,
        "the same decision, the same bytes"
    );
    let other_token = Arc::new(VerifiedToken::from_claims_for_tests(&claims("user:bob")));
    let renamed: Arc<str> = "calendar-write".into();
    let mailer = SpiffeId::parse("spiffe://example.org/agent/mailer").unwrap();
    let variants = [
        Grant::new(other_token, caller.clone(), route.clone(), false),
        Grant::new(token.clone(), caller.clone(), renamed, false),
        Grant::new(token.clone(), caller.clone(), route.clone(), true),
        Grant::new(token.clone(), mailer, route.clone(), false),
        // Another tool called with the same token on the same route.
        Grant::new(token.clone(), caller.clone(), route.clone(), false).with_mcp(
            crate::decision::mcp::McpCall {
                method: "tools/call".into(),
                tool: Some("email.send".into()),
                rule: Some(1),
            },
        ),
    ];
    for variant in &variants {
        assert!(!variant.is_same_decision(&first));
        assert_eq!(encode(&first), remembered);
        assert_ne!(encode(variant), remembered);
    }
    // Equal claims in another allocation, a route of the same name in another: not the same
    // decision (identity, not equality, is what the memo trusts); the answer is right anyway.
    let twin = Grant::new(
        Arc::new(VerifiedToken::from_claims_for_tests(&claims("user:alice"))),
        caller,
        "calendar-read".into(),
        false,
    );
    assert!(!twin.is_same_decision(&first));
    encode(&first);
    assert_eq!(encode(&twin), remembered);
}
