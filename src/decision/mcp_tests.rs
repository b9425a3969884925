use super::*;
use crate::decision::token::VerifiedToken;
use serde_json::json;

const LOCAL: &str = "spiffe://example.org/tool/calendar";
const TYPE: &str = "https://example.org/rar/mcp-tool";
const SCHEDULER: &str = "spiffe://example.org/agent/scheduler";

fn body(text: &str) -> Body<'_> {
    Body {
        bytes: text.as_bytes(),
        partial: false,
        encoded: false,
        content_type: Some("application/json"),
    }
}

fn reason_of(text: &str) -> Option<DenyReason> {
    parse_message(body(text), 4096).err().map(|d| d.reason)
}

fn rules() -> McpRules {
    McpRules {
        max_body_bytes: 4096,
        methods: vec!["initialize".into(), "tools/list".into()],
        tools: vec![
            ToolRule {
                label: "calendar.list_events".into(),
                name: ToolName::parse("calendar.list_events"),
                require_scopes: vec!["calendar:read".into()],
                allow_callers: None,
                max_depth: None,
                detail_type: None,
            },
            ToolRule {
                label: "calendar.create_event".into(),
                name: ToolName::parse("calendar.create_event"),
                require_scopes: vec!["calendar:write".into()],
                allow_callers: None,
                max_depth: Some(1),
                detail_type: None,
            },
            ToolRule {
                label: "email.send".into(),
                name: ToolName::parse("email.send"),
                require_scopes: vec![],
                allow_callers: Some(vec![
                    CallerPattern::parse("spiffe://example.org/agent/mailer").unwrap(),
                ]),
                max_depth: None,
                detail_type: None,
            },
            ToolRule {
                label: "notes.*".into(),
                name: ToolName::parse("notes.*"),
                require_scopes: vec![],
                allow_callers: None,
                max_depth: None,
                detail_type: Some(TYPE.into()),
            },
        ],
    }
}

fn token(claims: serde_json::Value) -> VerifiedToken {
    VerifiedToken::from_claims_for_tests(&claims)
}

/// The call `message` by `caller` with `token`: the reason it is denied, or `None`.
fn decide(message: &str, caller: &str, token: &VerifiedToken) -> Result<McpCall, Denial> {
    let message = parse_message(body(message), 4096)?;
    let caller = SpiffeId::parse(caller).unwrap();
    let mut learned = None;
    authorize(
        &rules(),
        &message,
        &caller,
        token,
        &RouteContext {
            route_scopes: &["mcp".to_owned()],
            depth_limit: 4,
            location: LOCAL,
        },
        &mut learned,
    )?;
    Ok(learned.unwrap())
}

fn call(tool: &str, arguments: serde_json::Value) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
    .to_string()
}

/// One delegated token: user → orchestrator → scheduler, with `scope` and extra claims.
fn delegated(scope: &str, extra: serde_json::Value) -> VerifiedToken {
    let mut claims = json!({
        "sub": "user:alice",
        "scope": scope,
        "act": {"sub": SCHEDULER, "act": {"sub": "spiffe://example.org/agent/orchestrator"}},
    });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    token(claims)
}

#[test]
fn rule_mcp_request_invalid_covers_every_malformed_message() {
    let invalid = Some(DenyReason::McpRequestInvalid);
    for text in [
        "",
        "not json",
        "[]",
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        r#""ping""#,
        r#"{"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":["a"]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":null}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","extra":true}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"} {}"#,
    ] {
        assert_eq!(reason_of(text), invalid, "{text}");
    }
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","arguments":{}1{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(reason_of(&deep), invalid);
    // Over max_body_bytes, or not received whole.
    let long = call("calendar.list_events", json!({"pad": "x".repeat(5000)}));
    assert_eq!(reason_of(&long), invalid);
    let partial = Body {
        bytes: br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        partial: true,
        encoded: false,
        content_type: Some("application/json"),
    };
    assert_eq!(
        parse_message(partial, 4096).map_err(|d| d.reason).err(),
        invalid
    );
    // An encoded body (gzip, br, …) is bytes the server decodes into a message never read.
    let encoded = Body {
        bytes: br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        partial: false,
        encoded: true,
        content_type: Some("application/json"),
    };
    assert_eq!(
        parse_message(encoded, 4096).map_err(|d| d.reason).err(),
        invalid
    );
    // Only application/json in UTF-8: a server honouring charset=utf-7 reads `+ACI-` as `"`.
    let utf7 = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"calendar.list_events","x":"+ACIALAAi-name+ACI-:+ACI-admin.delete_all"}}"#;
    for content_type in [
        None,
        Some("application/json; charset=utf-7"),
        Some("application/json;charset=UTF-16"),
        Some("application/json, application/json"),
        Some("text/plain"),
        Some("application/json; boundary=x"),
        Some("application/jsonx"),
    ] {
        let body = Body {
            bytes: utf7.as_bytes(),
            partial: false,
            encoded: false,
            content_type,
        };
        assert_eq!(
            parse_message(body, 4096).map_err(|d| d.reason).err(),
            invalid,
            "{content_type:?}"
        );
    }
    for content_type in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/json;charset=\"UTF-8\"",
    ] {
        assert!(is_json_utf8(content_type), "{content_type}");
    }
    // More values than a tool call needs: refused before they are built.
    let many = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"a":[{}]}}}}}}"#,
        vec!["0"; MAX_MESSAGE_VALUES].join(",")
    );
    assert_eq!(
        parse_message(body(&many), many.len())
            .map_err(|d| d.reason)
            .err(),
        invalid
    );
    // Invisible formatting characters in a method or tool name.
    for text in [
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\u{200b}\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"calendar.list_events\u{202e}\"}}",
    ] {
        let reason = parse_message(body(text), 4096).and_then(|message| {
            let caller = SpiffeId::parse(SCHEDULER).unwrap();
            let token = delegated("mcp calendar:read", json!({}));
            authorize(
                &rules(),
                &message,
                &caller,
                &token,
                &RouteContext {
                    route_scopes: &[],
                    depth_limit: 4,
                    location: LOCAL,
                },
                &mut None,
            )
        });
        assert_eq!(reason.map_err(|d| d.reason).err(), invalid, "{text:?}");
    }
}

#[test]
fn well_formed_requests_and_notifications_parse() {
    for text in [
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":"a-1","method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":-9223372036854775808,"method":"ping"}"#,
    ] {
        assert_eq!(reason_of(text), None, "{text}");
    }
}

#[test]
fn rule_json_rpc_responses_are_not_methods() {
    assert_eq!(
        reason_of(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
        Some(DenyReason::McpMethodNotAllowed)
    );
    assert_eq!(
        reason_of(r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#),
        Some(DenyReason::McpMethodNotAllowed)
    );
}

#[test]
fn rule_mcp_method_not_allowed_unless_listed() {
    let token = delegated("mcp calendar:read", json!({}));
    let allowed = decide(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        SCHEDULER,
        &token,
    );
    assert_eq!(allowed.unwrap().method.as_ref(), "tools/list");
    for method in [
        "resources/read",
        "prompts/get",
        "Tools/List",
        "tools/list ",
        "",
    ] {
        let message = json!({"jsonrpc": "2.0", "id": 1, "method": method}).to_string();
        assert_eq!(
            decide(&message, SCHEDULER, &token)
                .map_err(|d| d.reason)
                .err(),
            Some(DenyReason::McpMethodNotAllowed),
            "{method:?}"
        );
    }
}

#[test]
fn rule_mcp_tool_not_allowed_unless_a_rule_names_it() {
    let token = delegated("mcp calendar:read", json!({}));
    let listed = decide(&call("calendar.list_events", json!({})), SCHEDULER, &token).unwrap();
    assert_eq!(listed.tool.as_deref(), Some("calendar.list_events"));
    assert_eq!(listed.rule, Some(0));
    // Exact names only (no case folding, no unicode look-alikes, no prefix of an exact name).
    for tool in [
        "calendar.delete_event",
        "Calendar.list_events",
        "calendar.list_events.x",
        "calendar.list_еvents",
        "calendar.*",
    ] {
        assert_eq!(
            decide(&call(tool, json!({})), SCHEDULER, &token)
                .map_err(|d| d.reason)
                .err(),
            Some(DenyReason::McpToolNotAllowed),
            "{tool}"
        );
    }
    // tools/call without a usable name or with arguments that are not an object.
    for message in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"calendar.list_events","arguments":[1]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\nb"}}"#,
    ] {
        assert_eq!(
            decide(message, SCHEDULER, &token)
                .map_err(|d| d.reason)
                .err(),
            Some(DenyReason::McpRequestInvalid),
            "{message}"
        );
    }
}

#[test]
fn rule_a_tools_callers_scopes_and_depth_narrow_the_route() {
    let reader = delegated("mcp calendar:read", json!({}));
    // Scope: the challenge names the route's scopes and the tool's.
    let one_hop_reader = token(json!({"sub": "user:alice", "scope": "mcp calendar:read",
                                      "act": {"sub": SCHEDULER}}));
    let denial = decide(
        &call("calendar.create_event", json!({})),
        SCHEDULER,
        &one_hop_reader,
    )
    .unwrap_err();
    assert_eq!(denial.reason, DenyReason::InsufficientScope);
    assert_eq!(denial.required_scope.as_deref(), Some("mcp calendar:write"));
    // Depth: two actors, the tool allows one even with the scope.
    let writer = delegated("mcp calendar:write", json!({}));
    assert_eq!(
        decide(
            &call("calendar.create_event", json!({})),
            SCHEDULER,
            &writer
        )
        .unwrap_err()
        .reason,
        DenyReason::DelegationTooDeep
    );
    let direct = token(json!({"sub": "user:alice", "scope": "mcp calendar:write",
                              "act": {"sub": SCHEDULER}}));
    assert!(
        decide(
            &call("calendar.create_event", json!({})),
            SCHEDULER,
            &direct
        )
        .is_ok()
    );
    // Callers: only the mailer may send.
    assert_eq!(
        decide(&call("email.send", json!({})), SCHEDULER, &reader)
            .unwrap_err()
            .reason,
        DenyReason::CallerNotAllowed
    );
    let mailer = "spiffe://example.org/agent/mailer";
    let mailer_token = token(json!({"sub": "user:alice", "act": {"sub": mailer}}));
    assert!(decide(&call("email.send", json!({})), mailer, &mailer_token).is_ok());
}

#[test]
fn rule_insufficient_authorization_details_unless_an_entry_permits_the_call() {
    let details = |arguments: serde_json::Value| {
        delegated(
            "mcp",
            json!({"authorization_details": [{
                "type": TYPE, "actions": ["notes.append"], "locations": [LOCAL],
                "arguments": arguments
            }]}),
        )
    };
    let scoped = details(json!({"notebook": ["work"]}));
    let ok = decide(
        &call("notes.append", json!({"notebook": "work", "text": "hi"})),
        SCHEDULER,
        &scoped,
    );
    assert_eq!(ok.unwrap().rule, Some(3));
    let denied = |token: &VerifiedToken, tool: &str, arguments: serde_json::Value| {
        decide(&call(tool, arguments), SCHEDULER, token)
            .map_err(|d| (d.reason, d.detail_type))
            .err()
    };
    let insufficient = Some((
        DenyReason::InsufficientAuthorizationDetails,
        Some(TYPE.to_owned()),
    ));
    // An argument outside its values, a listed argument missing, another tool of the family.
    assert_eq!(
        denied(&scoped, "notes.append", json!({"notebook": "home"})),
        insufficient
    );
    assert_eq!(
        denied(&scoped, "notes.append", json!({"text": "hi"})),
        insufficient
    );
    assert_eq!(
        denied(&scoped, "notes.delete", json!({"notebook": "work"})),
        insufficient
    );
    // No details at all; details of another type; for another location.
    let none = delegated("mcp", json!({}));
    assert_eq!(denied(&none, "notes.append", json!({})), insufficient);
    let other_type = delegated(
        "mcp",
        json!({"authorization_details": [{"type": "other", "actions": ["notes.append"]}]}),
    );
    assert_eq!(denied(&other_type, "notes.append", json!({})), insufficient);
    let elsewhere = delegated(
        "mcp",
        json!({"authorization_details": [{"type": TYPE, "actions": ["notes.append"],
                                          "locations": ["spiffe://example.org/tool/other"]}]}),
    );
    assert_eq!(denied(&elsewhere, "notes.append", json!({})), insufficient);
    // A tool rule without a type ignores details entirely.
    assert!(
        decide(
            &call("calendar.list_events", json!({})),
            SCHEDULER,
            &delegated("mcp calendar:read", json!({}))
        )
        .is_ok()
    );
}
