//! ext_authz over plain HTTP (Envoy `http_service`; also nginx `auth_request`, Traefik
//! `forwardAuth`): the same decisions as gRPC mode, for the request as it reaches us.
//!
//! The checked request is this HTTP request (its method, path with query and `Host`), or the
//! original request the proxy describes: `listen.http_request: original_headers` reads only
//! `X-Original-Method`/`-URI` (nginx), `forwarded_headers` only `X-Forwarded-Method`/`-Uri`/
//! `-Host` (Traefik). A header the request is read from that appears twice makes it ambiguous:
//! 400 `path_invalid`. `Authorization` is always this request's. The caller comes only from `x-forwarded-client-cert` (configuration
//! refuses HTTP mode unless `identity.sources` lists `xfcc`), which is safe only when the proxy
//! in front overwrites that header (Envoy `forward_client_cert_details: SANITIZE_SET`).
//!
//! Allowed → 200 with the `x-actguard-*` headers (configure the proxy to copy them upstream,
//! e.g. Envoy `allowed_upstream_headers`). Denied → the same status, `WWW-Authenticate` and JSON
//! body as gRPC mode. Overloaded → 503, which the proxy treats as an authorization failure.

use crate::config::HttpRequestSource;
use crate::decision::facts::has_actguard_prefix;
use crate::decision::identity::PeerFacts;
use crate::decision::reason::Fault;
use crate::decision::response;
use crate::decision::telemetry;
use crate::decision::{Decided, RequestFacts};
use crate::serve::budgets::{self, Ledger};
use crate::serve::http_server::ConnectionLimits;
use crate::serve::reload::LiveAuthorizer;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The largest HTTP/1 request head this listener reads: a token of the largest
/// `tokens.max_bytes` (64 KiB), the client certificate header and the rest. Larger → 431.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;

/// This listener's bounds for `limits.max_concurrent_checks`.
pub fn connection_limits(max_concurrent_checks: usize) -> ConnectionLimits {
    ConnectionLimits {
        // Room for the largest token `tokens.max_bytes` allows, beside the client certificate
        // header and the rest.
        max_head_bytes: MAX_HEAD_BYTES,
        // Above the admission limit on purpose, as the gRPC listener's streams are: a check
        // past it must reach admission and be refused at once (503), not wait in the backlog
        // for a connection.
        max_connections: max_concurrent_checks.saturating_mul(2).max(256),
        // The proxy in front connects from one address.
        max_connections_per_peer: None,
        ..ConnectionLimits::new(crate::serve::grpc::http2_max_streams(max_concurrent_checks))
    }
}

/// Stands in for a non-UTF-8 `Authorization` value; refused as `authorization_invalid`.
const NOT_UTF8: &str = "Bearer \u{fffd}";

#[derive(Clone)]
struct HttpState {
    authorizer: Arc<LiveAuthorizer>,
    admission: Arc<Semaphore>,
    source: HttpRequestSource,
    /// Where budgeted allows are charged (`budgets`).
    budgets: Option<Arc<Ledger>>,
}

pub fn router(
    authorizer: Arc<LiveAuthorizer>,
    max_concurrent_checks: usize,
    source: HttpRequestSource,
    budgets: Option<Arc<Ledger>>,
) -> Router {
    Router::new().fallback(check).with_state(HttpState {
        authorizer,
        admission: Arc::new(Semaphore::new(max_concurrent_checks)),
        source,
        budgets,
    })
}

/// The one value of `name`, as text; `Err` when the header appears more than once (the request
/// to check would be whichever copy a reader picks: RFC 9112 §3.2 makes two `Host`s a 400).
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value.to_str().unwrap_or(NOT_UTF8))),
        (Some(_), Some(_)) => Err(()),
    }
}

/// Method, path and host of the request to check, read from the configured family only; `None`
/// when a header they come from is duplicated.
fn checked_request(source: HttpRequestSource, request: &Request) -> Option<(&str, &str, &str)> {
    let headers = request.headers();
    let host = single(headers, header::HOST.as_str())
        .ok()?
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    // A missing original URI reads as an empty path and is denied as path_invalid.
    let described = |method: &str, uri: &str, host_header: Option<&str>| {
        let method = single(headers, method).ok()?.unwrap_or_default();
        let uri = single(headers, uri).ok()?.unwrap_or_default();
        let host = match host_header {
            Some(name) => single(headers, name).ok()?.unwrap_or(host),
            None => host,
        };
        Some((method, uri, host))
    };
    match source {
        HttpRequestSource::AsReceived => Some((
            request.method().as_str(),
            request.uri().path_and_query().map_or("", |p| p.as_str()),
            host,
        )),
        HttpRequestSource::OriginalHeaders => {
            described("x-original-method", "x-original-uri", None)
        }
        HttpRequestSource::ForwardedHeaders => described(
            "x-forwarded-method",
            "x-forwarded-uri",
            Some("x-forwarded-host"),
        ),
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str().unwrap_or(NOT_UTF8))
        .collect()
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
}

async fn check(State(state): State<HttpState>, request: Request) -> Response {
    let Ok(_permit) = state.admission.try_acquire() else {
        metrics::counter!(telemetry::OVERLOAD_REJECTIONS).increment(1);
        return plain(StatusCode::SERVICE_UNAVAILABLE, "actguard is overloaded\n");
    };
    let headers = request.headers();
    let described = checked_request(state.source, &request);
    let ambiguous = described.is_none();
    let (method, path, host) = described.unwrap_or_default();
    let xfcc = header_values(headers, &HeaderName::from_static("x-forwarded-client-cert"));
    let xfcc = xfcc.join(",");
    let facts = RequestFacts {
        peer: PeerFacts {
            xfcc: Some(xfcc.as_str()).filter(|value| !value.is_empty()),
            ..Default::default()
        },
        request_id: headers
            .get("x-request-id")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default(),
        method,
        host,
        path,
        authorization: header_values(headers, &header::AUTHORIZATION),
        prefixed_headers: headers
            .keys()
            .map(HeaderName::as_str)
            .filter(|name| has_actguard_prefix(name))
            .collect(),
        ambiguous,
        // nginx's auth_request sends no body: an MCP route denies (mcp_request_invalid).
        body: Default::default(),
        envoy_http: None,
    };
    let authorizer = state.authorizer.current();
    let evaluate = |may_retry| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            authorizer.evaluate_and_record(&facts, may_retry)
        }))
    };
    let mut evaluated = evaluate(true);
    if let Ok(Err(remote)) = evaluated {
        remote.refetch_for_unknown_kid().await;
        evaluated = evaluate(false);
    }
    let evaluation = match evaluated {
        Ok(Ok(Decided::Recorded(evaluation))) => Ok(evaluation),
        // Allowed by every rule on a budgeted route: the ledger has the last word.
        // In a task of its own, as in gRPC mode: a charge once made is always recorded.
        Ok(Ok(Decided::Pending(pending))) => {
            let ledger = state.budgets.clone();
            tokio::spawn(async move {
                let charged = budgets::charge_pending(ledger.as_deref(), &pending).await;
                pending.settle_evaluation(charged).0
            })
            .await
            .map_err(|_| Fault::Internal("panic while settling a budget charge".into()))
        }
        Ok(Err(_)) => Err(Fault::KeysUnavailable),
        Err(_) => Err(Fault::Internal("panic in HTTP check".into())),
    };
    let built = match evaluation {
        Ok(evaluation) if evaluation.shadowed().is_some() => {
            shadow_allowed(evaluation.forward_token, &facts.prefixed_headers)
        }
        Ok(evaluation) => match evaluation.outcome {
            Ok(grant) => allowed(&grant, &facts.prefixed_headers),
            Err(denial) => denied(&denial, authorizer.response_settings()),
        },
        Err(fault) => Err(fault),
    };
    built.unwrap_or_else(|fault| {
        tracing::error!(%fault, "HTTP check failed; answering 500 (the proxy denies)");
        plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "actguard internal fault\n",
        )
    })
}

/// Envoy's `http_service` removes the request headers this response header names
/// (comma-separated) before the request goes upstream, as `headers_to_remove` does in gRPC
/// mode; other proxies ignore it (nginx's shipped configuration clears them itself).
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

fn allowed(
    grant: &crate::decision::policy::Grant,
    client_prefixed: &[&str],
) -> Result<Response, Fault> {
    let mut response = Response::new(Body::empty());
    let mut removals = response::client_removals(client_prefixed);
    if !grant.forward_token() {
        removals.push("authorization".to_owned());
    }
    if !removals.is_empty() {
        let value = HeaderValue::from_str(&removals.join(","))
            .map_err(|_| Fault::Internal("header names are not a valid header value".into()))?;
        response.headers_mut().insert(HEADERS_TO_REMOVE, value);
    }
    // Every identity header, empty when the token has no sid/jti: a proxy copying them upstream
    // then overwrites whatever the client sent under those names.
    for (name, value) in response::identity_headers(grant) {
        let value = HeaderValue::from_bytes(value.unwrap_or_default().as_bytes())
            .map_err(|_| Fault::Internal(format!("{name} is not a valid header value")))?;
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

/// A shadow route's (`enforce: false`) answer to a denial: 200 with no identity; every
/// identity header empty (a proxy copying them upstream overwrites the client's), the
/// request's own `x-actguard-*` and (unless the route forwards it) `authorization` removed.
fn shadow_allowed(forward_token: bool, client_prefixed: &[&str]) -> Result<Response, Fault> {
    let mut response = Response::new(Body::empty());
    let mut removals = response::client_removals(client_prefixed);
    if !forward_token {
        removals.push("authorization".to_owned());
    }
    for name in response::IDENTITY_HEADERS {
        removals.push(name.to_owned());
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(""));
    }
    let value = HeaderValue::from_str(&removals.join(","))
        .map_err(|_| Fault::Internal("header names are not a valid header value".into()))?;
    response.headers_mut().insert(HEADERS_TO_REMOVE, value);
    Ok(response)
}

fn denied(
    denial: &crate::decision::reason::Denial,
    settings: &response::ResponseSettings,
) -> Result<Response, Fault> {
    let mut response = Response::new(Body::from(response::denial_body(denial)));
    *response.status_mut() = StatusCode::from_u16(denial.reason.http_status())
        .map_err(|_| Fault::Internal("bad status".into()))?;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(challenge) = response::challenge(denial, settings) {
        let value = HeaderValue::from_str(&challenge)
            .map_err(|_| Fault::Internal("challenge is not a valid header value".into()))?;
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    Ok(response)
}
