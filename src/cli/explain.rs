//! `actguard explain`: run one request through the real pipeline of a configuration and show
//! every step that led to the decision — the tool for "why was my agent denied?".
//!
//! The request is JSON: `{"caller": "spiffe://…"` (or `"certificate": "<PEM>"`, `"principal"`,
//! `"xfcc"`), `"method"`, `"host"`, `"path"`, `"headers": {"authorization": "Bearer …"}`, and on an
//! MCP route `"body"`: the JSON-RPC message, as JSON or as a string of its bytes}`. The
//! decision is the one `serve` would make for it now (revocations excepted: `explain` does not
//! talk to a running server).

use crate::decision::identity::{IdentitySource, PeerFacts};
use crate::decision::path;
use crate::decision::reason::DenyReason;
use crate::decision::{Authorizer, Evaluation, RequestFacts};
use crate::devkit::url_encode;
use serde::Deserialize;
use std::collections::HashMap;
use std::process::ExitCode;

/// The request to explain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// A SPIFFE ID, presented through whichever of `principal`/`xfcc` the config reads.
    caller: Option<String>,
    /// The peer certificate as PEM (not URL-encoded).
    certificate: Option<String>,
    principal: Option<String>,
    xfcc: Option<String>,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    host: String,
    path: String,
    #[serde(default)]
    headers: HashMap<String, String>,
    /// The request body (MCP routes): a JSON value is sent serialised, a string as its bytes.
    body: Option<serde_json::Value>,
}

fn default_method() -> String {
    "GET".into()
}

/// The pipeline step a deny reason belongs to (DESIGN.md numbering).
fn step_of(reason: DenyReason) -> usize {
    use DenyReason::*;
    match reason {
        CallerIdentityMissing | CallerIdentityInvalid | CallerTrustDomainDenied => 1,
        PathInvalid | NoRoute => 2,
        TokenMissing | AuthorizationInvalid => 3,
        TokenMalformed
        | TokenTooLarge
        | TokenAlgDenied
        | TokenCritUnsupported
        | TokenKeyUnknown
        | TokenSignatureInvalid
        | TokenExpired
        | TokenNotYetValid
        | TokenIssuerUnknown
        | TokenAudienceMismatch
        | TokenRevoked
        | RevocationsUnavailable
        | IssuerKeysUnavailable => 4,
        TokenNotBoundToCaller | ActorMismatch | MayActMismatch => 5,
        ActorInvalid
        | ActorTrustDomainDenied
        | DelegationCycle
        | DelegationTooDeep
        | DelegationEdgeDenied
        | DelegationCeilingExceeded => 6,
        SessionRequired | CallerNotAllowed | InsufficientScope => 7,
        McpRequestInvalid
        | McpMethodNotAllowed
        | McpToolNotAllowed
        | InsufficientAuthorizationDetails => 8,
        // The ledger's answers; explain never contacts it, so it never reports these.
        BudgetExhausted | BudgetsUnavailable => 9,
    }
}

/// Explains `request` under `authorizer` at `now`; errors describe an unusable request.
pub fn explain(
    authorizer: &Authorizer,
    request: &ExplainRequest,
    now: i64,
) -> Result<String, String> {
    let sources = authorizer.identity_sources();
    let certificate = request
        .certificate
        .as_deref()
        .map(url_encode)
        .unwrap_or_default();
    let mut principal = request.principal.clone().unwrap_or_default();
    let mut xfcc = request.xfcc.clone();
    if let Some(caller) = &request.caller {
        if sources.contains(&IdentitySource::Principal) {
            principal = caller.clone();
        } else if sources.contains(&IdentitySource::Xfcc) {
            xfcc = Some(format!("URI={caller}"));
        } else {
            return Err("\"caller\" needs principal or xfcc in identity.sources; give \"certificate\" instead".into());
        }
    }
    let headers: HashMap<String, String> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    let body = match &request.body {
        None => Vec::new(),
        Some(serde_json::Value::String(text)) => text.as_bytes().to_vec(),
        Some(value) => serde_json::to_vec(value).unwrap_or_default(),
    };
    let facts = RequestFacts {
        peer: PeerFacts {
            certificate: &certificate,
            principal: &principal,
            xfcc: xfcc
                .as_deref()
                .or(headers.get("x-forwarded-client-cert").map(String::as_str)),
        },
        request_id: "explain",
        method: &request.method,
        host: &request.host,
        path: &request.path,
        authorization: headers
            .get("authorization")
            .map(String::as_str)
            .into_iter()
            .collect(),
        prefixed_headers: Vec::new(),
        ambiguous: false,
        body: crate::decision::mcp::Body {
            bytes: &body,
            partial: false,
            encoded: false,
            // A message given as JSON is sent as JSON unless the request names its type.
            content_type: headers
                .get("content-type")
                .map(String::as_str)
                .or(Some("application/json")),
        },
        envoy_http: None,
    };
    let evaluation = authorizer.evaluate(&facts, now);
    let mcp_route = evaluation
        .route_index
        .and_then(|index| authorizer.routes().get(index))
        .is_some_and(|route| route.mcp.is_some());
    Ok(render(request, &evaluation, now, mcp_route))
}

fn render(request: &ExplainRequest, evaluation: &Evaluation, now: i64, mcp_route: bool) -> String {
    // A tool's own rules deny with the route rules' reasons: once the message was read, a
    // denial belongs to the MCP step.
    let failed_step = evaluation.outcome.as_ref().err().map(|d| {
        if evaluation.mcp.is_some() {
            8
        } else {
            step_of(d.reason)
        }
    });
    let token = evaluation.token.as_deref();
    let chain: Vec<&str> = token.map_or_else(Vec::new, |token| {
        token
            .actors()
            .iter()
            .rev()
            .filter_map(|a| a.subject())
            .collect()
    });
    let mut details: Vec<(&str, String)> = vec![
        (
            "caller identity",
            evaluation
                .caller
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        ),
        (
            "route",
            format!(
                "{} ({} {} {} -> {})",
                evaluation.route.as_deref().unwrap_or("-"),
                request.method,
                if request.host.is_empty() {
                    "-"
                } else {
                    &request.host
                },
                request.path,
                path::normalize(&request.path)
                    .map_or_else(|e| e.to_string(), std::borrow::Cow::into_owned)
            ),
        ),
        ("bearer token", "present".into()),
        (
            "token verified",
            token.map_or_else(String::new, |t| {
                format!(
                    "sub={} scopes=[{}] expires in {}s jti={} sid={}; not revoked",
                    t.subject(),
                    t.scopes().join(" "),
                    t.expires_at().saturating_sub(now),
                    t.jti().unwrap_or("-"),
                    t.sid().unwrap_or("-")
                )
            }),
        ),
        ("binding", "the token ends at the caller".into()),
        (
            "delegation chain",
            if chain.is_empty() {
                "direct call (no act)".into()
            } else {
                format!(
                    "{} ({} actors; edges and ceilings hold)",
                    chain.join(" -> "),
                    chain.len()
                )
            },
        ),
        ("route rules", "session, callers and scopes hold".into()),
    ];
    if mcp_route {
        let call = evaluation.mcp.as_ref();
        details.push((
            "mcp message",
            format!(
                "method {} tool {}; the tool's callers, depth, scopes and authorization_details hold",
                call.map_or("-", |call| &call.method),
                call.and_then(|call| call.tool.as_deref()).unwrap_or("-"),
            ),
        ));
    }
    if let Some(charge) = &evaluation.charge {
        let limit = |limit: Option<u64>| limit.map_or_else(|| "none".to_owned(), |l| l.to_string());
        details.push((
            "budget",
            format!(
                "would charge {} unit(s) to branch {} (limit {}) and session {} (limit {}); not checked: explain does not contact Redis",
                charge.cost,
                charge.branch,
                limit(charge.per_branch),
                charge.session,
                limit(charge.per_session),
            ),
        ));
    }
    let mut out = String::new();
    for (index, (name, detail)) in details.iter().enumerate() {
        let step = index + 1;
        let line = match failed_step {
            Some(failed) if step == failed => {
                let denial = evaluation.outcome.as_ref().err();
                let code = denial.map_or("", |d| d.reason.code());
                let description = denial.map_or("", |d| d.description);
                format!("{step}. {name:<17} DENY  {code}: {description}")
            }
            Some(failed) if step > failed => format!("{step}. {name:<17} -     not reached"),
            _ => format!("{step}. {name:<17} ok    {detail}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    match &evaluation.outcome {
        Ok(grant) => out.push_str(&format!(
            "decision: ALLOW (route {}; x-actguard-actor={}, x-actguard-chain={:?})\n",
            grant.route(),
            grant.actor(),
            grant.chain().collect::<Vec<_>>().join(",")
        )),
        Err(denial) => out.push_str(&format!(
            "decision: DENY {} {}\n",
            denial.reason.http_status(),
            denial.reason.code()
        )),
    }
    if evaluation.shadowed().is_some() {
        out.push_str(
            "shadow route (enforce: false): this denial is audited and counted, and answered with an allow without identity\n",
        );
    }
    out
}

/// `actguard explain`: prints the steps, or why the request could not be read.
pub fn run(config: &std::path::Path, request: Option<&std::path::Path>) -> ExitCode {
    let Some(config) = super::load(config) else {
        return ExitCode::FAILURE;
    };
    let text = match request {
        Some(file) if file != std::path::Path::new("-") => std::fs::read_to_string(file),
        _ => std::io::read_to_string(std::io::stdin()),
    };
    let parsed = text
        .map_err(|error| format!("cannot read the request: {error}"))
        .and_then(|text| {
            serde_json::from_str::<ExplainRequest>(&text)
                .map_err(|error| format!("the request is not valid: {error}"))
        });
    let authorizer = crate::decision::Authorizer::new(config.decision);
    let explained = parsed
        .and_then(|request| explain(&authorizer, &request, crate::decision::token::unix_now()));
    match explained {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
