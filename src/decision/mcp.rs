//! MCP tool calls (Model Context Protocol, streamable HTTP): the JSON-RPC message in the request
//! body, and the per-tool rules of a route's `mcp` block, applied after the route's own.
//!
//! Guarantees, first failure wins:
//! 1. **The message.** The body Envoy sent (`with_request_body`, whole: a partial body is
//!    refused) is at most `max_body_bytes`, strict JSON (no duplicate member names, nesting
//!    bounded) and one JSON-RPC 2.0 request or notification: an object with exactly the members
//!    `jsonrpc` ("2.0"), `method` (a string), `id` (a string or an integer; absent for a
//!    notification) and `params` (an object, when present). Batches (arrays) are refused: MCP
//!    2025-06-18 removed them. A body with a `Content-Encoding` is refused too (the server would
//!    decode bytes that were never read as the message), and so is one whose `Content-Type` is
//!    not `application/json` in UTF-8 (a server honouring `charset=utf-7` reads another
//!    message), or that holds more than [`MAX_MESSAGE_VALUES`] JSON values. Method and tool
//!    names with control or invisible formatting characters are refused. Anything else is
//!    `mcp_request_invalid`.
//! 2. **The method.** `tools/call` is governed by `tools`; every other method must be listed in
//!    `methods`, else `mcp_method_not_allowed`. A JSON-RPC response (a client answering a
//!    server's request) names no method and is refused the same way.
//! 3. **The tool.** `params.name` (a string) picks the first rule whose name equals it, or whose
//!    `prefix*` it starts with; no rule is `mcp_tool_not_allowed`. `params.arguments`, when
//!    present, must be an object.
//! 4. **The tool's rules**, like a route's, only ever narrowing: `allow_callers` (the caller, the
//!    current actor, must match), `max_depth` (lowers the route's), `require_scopes` (in addition
//!    to the route's; the challenge names both), and `authorization_details`: the token must
//!    hold an RFC 9396 entry of the rule's `type` that permits this tool here with these
//!    arguments ([`crate::decision::token::details::AuthorizationDetails::permits`]), else
//!    `insufficient_authorization_details`.
//!
//! Argument values are compared, never copied into a record: the decision keeps the method and
//! the tool name only.

use crate::decision::policy;
use crate::decision::reason::{Denial, DenyReason};
use crate::decision::spiffe::{CallerPattern, SpiffeId};
use crate::decision::token::VerifiedToken;
use crate::decision::token::json::parse_strict_bounded;
use serde_json::{Map, Value};

/// The method whose tool is named in `params.name`.
pub const TOOLS_CALL: &str = "tools/call";

/// Longest tool name accepted (MCP asks for 1–128 characters).
pub const MAX_TOOL_NAME_BYTES: usize = 256;

/// A route's `mcp` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpRules {
    /// Longest body accepted (must not exceed Envoy's `max_request_bytes`).
    pub max_body_bytes: usize,
    /// Methods other than `tools/call` that are allowed.
    pub methods: Vec<String>,
    /// Tried in order; the first match decides.
    pub tools: Vec<ToolRule>,
}

/// How a tool rule names tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolName {
    Exact(String),
    /// `prefix*`: every tool whose name starts with the prefix.
    Prefix(String),
}

impl ToolName {
    /// `name`, or `prefix*` when it ends with `*`.
    pub fn parse(text: &str) -> Self {
        match text.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(text.to_owned()),
        }
    }

    pub fn matches(&self, tool: &str) -> bool {
        match self {
            Self::Exact(name) => name == tool,
            Self::Prefix(prefix) => tool.starts_with(prefix.as_str()),
        }
    }
}

/// One entry of `mcp.tools`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRule {
    /// As configured (`calendar.*` for a prefix): the metrics label.
    pub label: String,
    pub name: ToolName,
    pub require_scopes: Vec<String>,
    pub allow_callers: Option<Vec<CallerPattern>>,
    pub max_depth: Option<usize>,
    /// `authorization_details.type`: an RFC 9396 entry of this type must permit the call.
    pub detail_type: Option<String>,
}

/// What the decision learned of the message: kept in the grant, the metadata and the audit
/// record. `tool` is the name the call asked for (a request value, never an argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCall {
    pub method: Box<str>,
    pub tool: Option<Box<str>>,
    /// Index of the tool rule that matched, for its metric.
    pub rule: Option<usize>,
}

/// The body as the facts carry it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Body<'a> {
    pub bytes: &'a [u8],
    /// Envoy said it sent only part of the body (`x-envoy-auth-partial-body: true`), or the
    /// request's `content-length` is not the length received.
    pub partial: bool,
    /// The request has a `Content-Encoding` (gzip, br, …): the upstream would decode bytes
    /// actguard never read as the message.
    pub encoded: bool,
    /// The request's `Content-Type`, as sent (`None`: absent).
    pub content_type: Option<&'a str>,
}

/// Whether `value` is `application/json`, with no parameter but an optional `charset=utf-8`.
/// Any other charset (a server that honours `utf-7` reads other bytes than actguard did), a
/// second value (Envoy joins repeated headers with a comma) or another media type is refused.
pub fn is_json_utf8(value: &str) -> bool {
    if value.contains(',') {
        return false;
    }
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|parameter| {
        let Some((name, charset)) = parameter.split_once('=') else {
            return false;
        };
        let charset = charset.trim();
        let charset = charset
            .strip_prefix('"')
            .and_then(|inner| inner.strip_suffix('"'))
            .unwrap_or(charset);
        name.trim().eq_ignore_ascii_case("charset") && charset.eq_ignore_ascii_case("utf-8")
    })
}

/// Most JSON values (every string, number, array, object…) one message may hold: a tool
/// call is a small document, and each value costs memory while it is checked.
pub const MAX_MESSAGE_VALUES: usize = 16_384;

/// Characters a method or tool name may not hold: control characters and the invisible
/// formatting ones (bidirectional overrides, zero-width characters, the BOM) that make two
/// different names look alike in logs.
fn is_hidden(character: char) -> bool {
    character.is_control()
        || matches!(character,
            '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn invalid(description: &'static str) -> Denial {
    Denial::new(DenyReason::McpRequestInvalid, description)
}

/// A parsed JSON-RPC request or notification.
#[derive(Debug)]
pub struct Message {
    pub method: String,
    pub params: Option<Map<String, Value>>,
}

/// Reads one JSON-RPC 2.0 request or notification from `body` (step 1 of the module docs).
pub fn parse_message(body: Body<'_>, max_body_bytes: usize) -> Result<Message, Denial> {
    if body.bytes.is_empty() {
        return Err(invalid(
            "an MCP request needs its JSON-RPC message as the body",
        ));
    }
    if body.partial {
        return Err(invalid("the body was not received whole"));
    }
    if body.encoded {
        return Err(invalid(
            "the body has a content-encoding: send MCP messages unencoded",
        ));
    }
    if !body.content_type.is_some_and(is_json_utf8) {
        return Err(invalid(
            "an MCP message needs content-type application/json (UTF-8)",
        ));
    }
    if body.bytes.len() > max_body_bytes {
        return Err(invalid(
            "the body is longer than this route's max_body_bytes",
        ));
    }
    let value = parse_strict_bounded(body.bytes, MAX_MESSAGE_VALUES).map_err(|_| {
        invalid("the body is not strict JSON (or nests too deeply, or holds too many values)")
    })?;
    let mut object = match value {
        Value::Object(object) => object,
        Value::Array(_) => return Err(invalid("JSON-RPC batches are not allowed in MCP")),
        _ => return Err(invalid("the body is not a JSON-RPC object")),
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("the message is not JSON-RPC 2.0"));
    }
    if let Some(name) = object
        .keys()
        .find(|name| !matches!(name.as_str(), "jsonrpc" | "id" | "method" | "params"))
    {
        let response =
            matches!(name.as_str(), "result" | "error") && !object.contains_key("method");
        if response {
            return Err(Denial::new(
                DenyReason::McpMethodNotAllowed,
                "JSON-RPC responses are not allowed on this route",
            ));
        }
        return Err(invalid("the message has a member JSON-RPC does not define"));
    }
    match object.get("id") {
        None | Some(Value::String(_)) => {}
        Some(Value::Number(number)) if number.is_i64() || number.is_u64() => {}
        Some(_) => return Err(invalid("the id is neither a string nor an integer")),
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) if !method.chars().any(is_hidden) => method,
        _ => {
            return Err(invalid(
                "the message has no string method without control or formatting characters",
            ));
        }
    };
    let params = match object.remove("params") {
        None => None,
        Some(Value::Object(params)) => Some(params),
        Some(_) => return Err(invalid("params is not an object")),
    };
    Ok(Message { method, params })
}

/// What the tool rules need of the route the message arrived on.
pub struct RouteContext<'a> {
    /// The route's own required scopes (named again in a tool's challenge).
    pub route_scopes: &'a [String],
    /// The route's effective `max_depth`.
    pub depth_limit: usize,
    /// This workload's SPIFFE ID (RFC 9396 `locations`).
    pub location: &'a str,
}

/// Steps 2–4 of the module docs for a request whose route rules already passed; what was
/// learned of the call is left in `learned`, allowed or not.
pub fn authorize(
    rules: &McpRules,
    message: &Message,
    caller: &SpiffeId,
    token: &VerifiedToken,
    route: &RouteContext<'_>,
    learned: &mut Option<McpCall>,
) -> Result<(), Denial> {
    let RouteContext {
        route_scopes,
        depth_limit,
        location,
    } = *route;
    let call = learned.insert(McpCall {
        method: message.method.as_str().into(),
        tool: None,
        rule: None,
    });
    if message.method != TOOLS_CALL {
        if rules.methods.contains(&message.method) {
            return Ok(());
        }
        return Err(Denial::new(
            DenyReason::McpMethodNotAllowed,
            "this MCP method is not allowed on this route",
        ));
    }
    let params = message.params.as_ref();
    let Some(tool) = params
        .and_then(|params| params.get("name"))
        .and_then(Value::as_str)
    else {
        return Err(invalid("tools/call needs a string params.name"));
    };
    if tool.is_empty() || tool.len() > MAX_TOOL_NAME_BYTES || tool.chars().any(is_hidden) {
        return Err(invalid(
            "params.name is empty, longer than 256 bytes, or has control or formatting characters",
        ));
    }
    call.tool = Some(tool.into());
    let arguments = match params.and_then(|params| params.get("arguments")) {
        None => None,
        Some(Value::Object(arguments)) => Some(arguments),
        Some(_) => return Err(invalid("params.arguments is not an object")),
    };
    let Some((index, rule)) = rules
        .tools
        .iter()
        .enumerate()
        .find(|(_, rule)| rule.name.matches(tool))
    else {
        return Err(Denial::new(
            DenyReason::McpToolNotAllowed,
            "this tool is not allowed on this route",
        ));
    };
    call.rule = Some(index);
    if !policy::caller_allowed(rule.allow_callers.as_deref(), caller) {
        return Err(Denial::new(
            DenyReason::CallerNotAllowed,
            "the caller is not allowed to call this tool",
        ));
    }
    let limit = rule
        .max_depth
        .map_or(depth_limit, |own| own.min(depth_limit));
    if token.actors().len() > limit {
        return Err(Denial::new(
            DenyReason::DelegationTooDeep,
            "the delegation chain is longer than this tool allows",
        ));
    }
    if !policy::has_scopes(token.scopes(), &rule.require_scopes) {
        let mut scopes: Vec<&str> = route_scopes.iter().map(String::as_str).collect();
        for scope in &rule.require_scopes {
            if !scopes.contains(&scope.as_str()) {
                scopes.push(scope);
            }
        }
        return Err(Denial {
            required_scope: Some(scopes.join(" ")),
            ..Denial::new(
                DenyReason::InsufficientScope,
                "the token lacks a scope this tool requires",
            )
        });
    }
    if let Some(detail_type) = &rule.detail_type {
        let permitted = token
            .authorization_details()
            .is_some_and(|details| details.permits(detail_type, tool, location, arguments));
        if !permitted {
            return Err(Denial {
                detail_type: Some(detail_type.clone()),
                ..Denial::new(
                    DenyReason::InsufficientAuthorizationDetails,
                    "the token's authorization_details do not permit this tool call",
                )
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "mcp_tests.rs"]
mod tests;
