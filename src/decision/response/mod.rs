//! The only place a `CheckResponse` is built: one exhaustive match over the outcome.
//!
//! Allow: gRPC `OK`, the `x-actguard-*` request headers set with OVERWRITE_IF_EXISTS_OR_ADD
//! (a client-supplied `x-actguard-*` never survives: headers we have no value for are removed),
//! `authorization` removed unless the route forwards it, and dynamic metadata.
//! Deny: the reason's gRPC code, and a `DeniedHttpResponse` with the HTTP status, an RFC 6750
//! `WWW-Authenticate` where one applies, and a JSON body `{"error", "error_description"}`.

use crate::decision::policy::Grant;
use crate::decision::reason::{Challenge, Denial};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response::HttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::{self, Code};
use std::borrow::Cow;

mod wire;

/// Every header actguard sets starts with this; the client may not send any of its own.
pub const HEADER_PREFIX: &str = "x-actguard-";
pub const SUBJECT_HEADER: &str = "x-actguard-subject";
pub const ACTOR_HEADER: &str = "x-actguard-actor";
pub const CHAIN_HEADER: &str = "x-actguard-chain";
pub const SID_HEADER: &str = "x-actguard-sid";
pub const JTI_HEADER: &str = "x-actguard-jti";
/// The token's execution branch (issue #17), on every allow.
pub const BRANCH_HEADER: &str = "x-actguard-branch";
/// Every header an allow sets (or removes when it has no value): a shadow allow removes them
/// all, and a client's own copy of any is never kept.
pub const IDENTITY_HEADERS: [&str; 6] = [
    SUBJECT_HEADER,
    ACTOR_HEADER,
    CHAIN_HEADER,
    SID_HEADER,
    JTI_HEADER,
    BRANCH_HEADER,
];
/// Dynamic metadata keys of every allow for Envoy's rate-limit service (strings: descriptor
/// values are): the branch, the session (the root of the branch lineage) and the route's cost.
pub const BRANCH_KEY: &str = "branch";
pub const SESSION_KEY: &str = "session";
pub const COST_KEY: &str = "cost";
/// Dynamic metadata keys of an allow on an MCP route.
pub const MCP_METHOD_KEY: &str = "mcp_method";
pub const MCP_TOOL_KEY: &str = "mcp_tool";

/// What the responses need from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseSettings {
    /// `realm` of every `WWW-Authenticate` challenge (validated: no quotes or control characters).
    pub realm: String,
    /// RFC 9728 `resource_metadata` URL added to challenges, when configured.
    pub resource_metadata: Option<String>,
}

/// `key: value`, replacing any value the request has (OVERWRITE_IF_EXISTS_OR_ADD).
fn header(key: &str, value: &str, keep_empty_value: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        keep_empty_value,
        ..Default::default()
    }
}

/// An identity header: an empty chain must still replace whatever the client sent.
fn overwrite(key: &str, value: &str) -> HeaderValueOption {
    header(key, value, true)
}

fn plain_header(key: &str, value: &str) -> HeaderValueOption {
    header(key, value, false)
}

fn string_value(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_owned())),
    }
}

fn list_value<'a>(values: impl Iterator<Item = &'a str>) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue {
            values: values.map(string_value).collect(),
        })),
    }
}

fn status(code: Code, message: &str) -> Option<rpc::Status> {
    Some(rpc::Status {
        code: code as i32,
        message: message.to_owned(),
        details: Vec::new(),
    })
}

/// The `x-actguard-*` headers of an allow, each with its value, or `None` when it must be
/// removed (no `sid`/`jti` in the token). Shared by the gRPC and HTTP modes.
pub fn identity_headers(grant: &Grant) -> [(&'static str, Option<Cow<'_, str>>); 6] {
    let mut chain = String::new();
    for (index, actor) in grant.chain().enumerate() {
        if index > 0 {
            chain.push(',');
        }
        chain.push_str(actor);
    }
    [
        (SUBJECT_HEADER, Some(Cow::Borrowed(grant.subject()))),
        (ACTOR_HEADER, Some(Cow::Borrowed(grant.actor()))),
        (CHAIN_HEADER, Some(Cow::Owned(chain))),
        (SID_HEADER, grant.sid().map(Cow::Borrowed)),
        (JTI_HEADER, grant.jti().map(Cow::Borrowed)),
        (BRANCH_HEADER, Some(Cow::Borrowed(grant.branch()))),
    ]
}

/// The request's own `x-actguard-*` header names (`client_prefixed`) that the allow must remove
/// beyond the identity headers (each of which is either overwritten or removed anyway):
/// lowercased, each once. No client-chosen value under our prefix reaches the upstream.
pub fn client_removals(client_prefixed: &[&str]) -> Vec<String> {
    // Linear in the number of headers (a set, not a scan per name): a request may carry tens
    // of thousands of them, and the check cannot be interrupted while this runs.
    let mut seen = std::collections::HashSet::with_capacity(client_prefixed.len());
    let mut removals: Vec<String> = Vec::new();
    for name in client_prefixed {
        let name = name.to_ascii_lowercase();
        if !IDENTITY_HEADERS.contains(&name.as_str()) && seen.insert(name.clone()) {
            removals.push(name);
        }
    }
    removals
}

/// The allow as a message. The server sends the same answer without building it
/// ([`Answer::Allow`], encoded by `wire`); this is its specification and the tests' reference.
fn allow(grant: &Grant, client_removals: &[String]) -> CheckResponse {
    let mut headers = Vec::new();
    let mut headers_to_remove = Vec::new();
    for (name, value) in identity_headers(grant) {
        match value {
            Some(value) => headers.push(overwrite(name, &value)),
            None => headers_to_remove.push(name.to_owned()),
        }
    }
    headers_to_remove.extend(client_removals.iter().cloned());
    if !grant.forward_token() {
        headers_to_remove.push("authorization".to_owned());
    }
    // Sized for every field below: no rehash while filling it.
    let mut metadata = Struct {
        fields: std::collections::HashMap::with_capacity(12),
    };
    let fields = &mut metadata.fields;
    fields.insert("subject".into(), string_value(grant.subject()));
    fields.insert("actor".into(), string_value(grant.actor()));
    fields.insert("chain".into(), list_value(grant.chain()));
    fields.insert(
        "scopes".into(),
        list_value(grant.scopes().iter().map(|scope| &**scope)),
    );
    fields.insert("route".into(), string_value(grant.route()));
    if let Some(jti) = grant.jti() {
        fields.insert("jti".into(), string_value(jti));
    }
    if let Some(sid) = grant.sid() {
        fields.insert("sid".into(), string_value(sid));
    }
    fields.insert(BRANCH_KEY.into(), string_value(grant.branch()));
    fields.insert(SESSION_KEY.into(), string_value(grant.session()));
    fields.insert(COST_KEY.into(), string_value(&grant.cost().to_string()));
    if let Some(call) = grant.mcp() {
        fields.insert(MCP_METHOD_KEY.into(), string_value(&call.method));
        if let Some(tool) = &call.tool {
            fields.insert(MCP_TOOL_KEY.into(), string_value(tool));
        }
    }
    CheckResponse {
        status: status(Code::Ok, ""),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })),
        dynamic_metadata: Some(metadata),
    }
}

/// An RFC 9110 quoted-string: `"` and `\\` escaped with a backslash.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        if matches!(character, '"' | '\\') {
            out.push('\\');
        }
        out.push(character);
    }
    out.push('"');
    out
}

/// The `WWW-Authenticate` value for a denial, if it carries one (RFC 6750 §3).
pub fn challenge(denial: &Denial, settings: &ResponseSettings) -> Option<String> {
    let error = match denial.reason.challenge() {
        Challenge::None => return None,
        Challenge::Bare => None,
        Challenge::InvalidRequest => Some("invalid_request"),
        Challenge::InvalidToken => Some("invalid_token"),
        Challenge::InsufficientScope => Some("insufficient_scope"),
        Challenge::InsufficientAuthorizationDetails => Some("insufficient_authorization_details"),
    };
    let mut value = format!("Bearer realm={}", quoted(&settings.realm));
    if let Some(error) = error {
        value.push_str(&format!(
            ", error=\"{error}\", error_description={}",
            quoted(denial.description)
        ));
    }
    if let Some(scope) = &denial.required_scope {
        value.push_str(&format!(", scope={}", quoted(scope)));
    }
    if let Some(detail_type) = &denial.detail_type {
        value.push_str(&format!(
            ", authorization_details_types={}",
            quoted(detail_type)
        ));
    }
    if let Some(url) = &settings.resource_metadata {
        value.push_str(&format!(", resource_metadata={}", quoted(url)));
    }
    Some(value)
}

/// JSON-RPC error code of a denial on an MCP route: -32600 (Invalid Request) for a message
/// that is not one, else -32001 (implementation-defined server error: not authorized).
pub fn json_rpc_error_code(denial: &Denial) -> i32 {
    match denial.reason {
        crate::decision::reason::DenyReason::McpRequestInvalid => -32600,
        _ => -32001,
    }
}

/// The JSON body of a denial. On an MCP route it is a JSON-RPC error (`id: null`: the body is
/// the same for every request denied alike, and no request value is echoed), so an MCP client
/// surfaces the reason; its `data` carries the same `error` and `error_description` as the
/// plain body, and the HTTP status.
pub fn denial_body(denial: &Denial) -> String {
    if denial.json_rpc {
        let mut body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {
                "code": json_rpc_error_code(denial),
                "message": format!("{}: {}", denial.reason.code(), denial.description),
                "data": {
                    "error": denial.reason.code(),
                    "error_description": denial.description,
                    "status": denial.reason.http_status(),
                },
            },
        });
        if let Some(budget) = denial.budget {
            body["error"]["data"]["budget"] = budget.into();
        }
        return body.to_string();
    }
    let mut body = serde_json::json!({
        "error": denial.reason.code(),
        "error_description": denial.description,
    });
    if let Some(budget) = denial.budget {
        body["budget"] = budget.into();
    }
    body.to_string()
}

fn deny(denial: &Denial, settings: &ResponseSettings) -> CheckResponse {
    let mut headers = vec![plain_header("content-type", "application/json")];
    if let Some(value) = challenge(denial, settings) {
        headers.push(plain_header("www-authenticate", &value));
    }
    let mut metadata = Struct::default();
    metadata
        .fields
        .insert("reason".into(), string_value(denial.reason.code()));
    CheckResponse {
        status: status(denial.reason.grpc_code(), denial.reason.code()),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(denial.reason.http_status()),
            }),
            headers,
            body: denial_body(denial),
        })),
        dynamic_metadata: Some(metadata),
    }
}

/// Dynamic metadata key of a shadow allow: the reason the request would have been denied.
pub const SHADOW_DENY_KEY: &str = "shadow_deny";

/// The allow a shadow route (`enforce: false`) answers a denial with: the request goes on as
/// if actguard were not there — no identity headers (the upstream must not trust an identity
/// that was not established), every `x-actguard-*` header removed, `authorization` removed
/// unless the route forwards it — and the dynamic metadata names the route and the reason.
pub fn shadow_allow(
    evaluation: &crate::decision::Evaluation,
    client_prefixed: &[&str],
) -> CheckResponse {
    let mut headers_to_remove: Vec<String> = IDENTITY_HEADERS
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    headers_to_remove.extend(client_removals(client_prefixed));
    if !evaluation.forward_token {
        headers_to_remove.push("authorization".to_owned());
    }
    let mut metadata = Struct::default();
    if let Some(route) = &evaluation.route {
        metadata.fields.insert("route".into(), string_value(route));
    }
    if let Some(denial) = evaluation.shadowed() {
        metadata
            .fields
            .insert(SHADOW_DENY_KEY.into(), string_value(denial.reason.code()));
    }
    CheckResponse {
        status: status(Code::Ok, ""),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers_to_remove,
            ..Default::default()
        })),
        dynamic_metadata: Some(metadata),
    }
}

/// Turns a decision into Envoy's answer as a message. `client_prefixed` lists the request's own
/// `x-actguard-*` header names.
pub fn check_response(
    outcome: &Result<Grant, Denial>,
    client_prefixed: &[&str],
    settings: &ResponseSettings,
) -> CheckResponse {
    match outcome {
        Ok(grant) => allow(grant, &client_removals(client_prefixed)),
        Err(denial) => deny(denial, settings),
    }
}

/// Turns a decision into the answer the gRPC server sends: an allow is kept as its grant and
/// encoded straight to the wire ([`Answer::Allow`]); a denial is built as a message.
pub fn answer(
    outcome: Result<Grant, Denial>,
    client_prefixed: &[&str],
    settings: &ResponseSettings,
) -> Answer {
    match outcome {
        Ok(grant) => Answer::Allow {
            client_removals: client_removals(client_prefixed),
            grant,
        },
        Err(denial) => Answer::Denied(deny_bytes(&denial, settings)),
    }
}

thread_local! {
    /// The last denial encoded on this thread, the settings it was encoded with, and its bytes.
    /// Denials repeat (a misconfigured or hostile caller sends the same request again and
    /// again): the same denial under the same settings is the same bytes, shared.
    static LAST_DENY: std::cell::RefCell<Option<(Denial, ResponseSettings, prost::bytes::Bytes)>> =
        const { std::cell::RefCell::new(None) };
}

/// The encoded `CheckResponse` of `denial`: the thread's remembered bytes when the denial and
/// the settings are equal to the ones they were encoded for, else encoded now and remembered.
fn deny_bytes(denial: &Denial, settings: &ResponseSettings) -> prost::bytes::Bytes {
    use prost::Message;
    let encode = || prost::bytes::Bytes::from(deny(denial, settings).encode_to_vec());
    LAST_DENY.with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return encode();
        };
        if let Some((last, last_settings, bytes)) = &*memo
            && last == denial
            && last_settings == settings
        {
            return bytes.clone();
        }
        let bytes = encode();
        *memo = Some((denial.clone(), settings.clone(), bytes.clone()));
        bytes
    })
}

/// A `CheckResponse` as the gRPC server sends it: a [`prost::Message`] whose encoding is the
/// `CheckResponse`'s, so the ext_authz service's codec writes it like any message.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A built message (handlers that only build messages).
    Message(CheckResponse),
    /// A denial, already encoded (see [`deny_bytes`]).
    Denied(prost::bytes::Bytes),
    /// An allow, written from the grant when encoded: the bytes decode to the message
    /// [`Answer::into_response`] returns.
    Allow {
        grant: Grant,
        client_removals: Vec<String>,
    },
}

impl Answer {
    /// The answer as a message (for callers that inspect it rather than send it).
    pub fn into_response(self) -> CheckResponse {
        match self {
            Self::Message(response) => response,
            // Bytes this module encoded from a `CheckResponse` always decode; were they ever
            // not to, the answer is an internal fault, never an allow.
            Self::Denied(bytes) => <CheckResponse as prost::Message>::decode(bytes.as_ref())
                .unwrap_or_else(|_| CheckResponse {
                    status: status(Code::Internal, "actguard internal fault"),
                    http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                        status: Some(HttpStatus { code: 500 }),
                        ..Default::default()
                    })),
                    dynamic_metadata: None,
                }),
            Self::Allow {
                grant,
                client_removals,
            } => allow(&grant, &client_removals),
        }
    }
}

impl From<CheckResponse> for Answer {
    fn from(response: CheckResponse) -> Self {
        Self::Message(response)
    }
}

impl Default for Answer {
    fn default() -> Self {
        Self::Message(CheckResponse::default())
    }
}

thread_local! {
    /// The last allow encoded on this thread and its bytes. A cache hit repeats the decision
    /// of the token before it, and its allow is then the same bytes: they are copied instead of
    /// encoded again (nested protobuf messages are measured once per level).
    static LAST_ALLOW: std::cell::RefCell<Option<(Grant, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `use_bytes` on the encoding of the allow for `grant` (no client headers to remove):
/// from the thread's memo when it holds the same decision, else encoded and remembered.
fn with_allow_bytes<R>(grant: &Grant, use_bytes: impl FnOnce(&[u8]) -> R) -> R {
    LAST_ALLOW.with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else {
            // Not re-entered in practice; encode without the memo if it were.
            let mut bytes = Vec::new();
            wire::encode_allow(&mut wire::Writer(&mut bytes), grant, &[]);
            return use_bytes(&bytes);
        };
        let fresh = !matches!(&*memo, Some((last, _)) if last.is_same_decision(grant));
        if fresh {
            let mut bytes = memo.take().map(|(_, bytes)| bytes).unwrap_or_default();
            bytes.clear();
            wire::encode_allow(&mut wire::Writer(&mut bytes), grant, &[]);
            *memo = Some((grant.clone(), bytes));
        }
        let (_, bytes) = memo.as_ref().expect("set above");
        use_bytes(bytes)
    })
}

impl prost::Message for Answer {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        match self {
            Self::Message(response) => response.encode_raw(buf),
            Self::Denied(bytes) => buf.put_slice(bytes),
            Self::Allow {
                grant,
                client_removals,
            } if client_removals.is_empty() => {
                with_allow_bytes(grant, |bytes| buf.put_slice(bytes));
            }
            Self::Allow {
                grant,
                client_removals,
            } => wire::encode_allow(&mut wire::Writer(buf), grant, client_removals),
        }
    }

    /// Decoding yields the message (an allow is first turned into its message), so an
    /// `Answer` read back is the `CheckResponse` that was sent.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut response = std::mem::take(self).into_response();
        let merged = response.merge_field(tag, wire_type, buf, ctx);
        *self = Self::Message(response);
        merged
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Message(response) => response.encoded_len(),
            Self::Denied(bytes) => bytes.len(),
            Self::Allow {
                grant,
                client_removals,
            } if client_removals.is_empty() => with_allow_bytes(grant, <[u8]>::len),
            Self::Allow {
                grant,
                client_removals,
            } => {
                let mut length = wire::Length::default();
                wire::encode_allow(&mut length, grant, client_removals);
                length.0
            }
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests;
