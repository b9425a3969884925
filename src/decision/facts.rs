//! The raw facts of one request, borrowed from Envoy's `CheckRequest` (or built by the HTTP
//! mode and `explain` from their inputs). Nothing here is checked: the pipeline decides.

use crate::decision::identity::PeerFacts;
use crate::decision::response;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

/// Stands in for a header value that is not UTF-8: a `Bearer` credential with a character no
/// token may contain, so it is refused as `authorization_invalid`.
const NOT_UTF8: &str = "Bearer \u{fffd}";

/// Envoy adds this header (`true`) to the check request when it sent only part of the body.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// The facts of one request, borrowed from the `CheckRequest`.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts<'a> {
    pub peer: PeerFacts<'a>,
    /// Envoy's request id (`x-request-id`), for the audit log.
    pub request_id: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    /// `:path` as received, query included.
    pub path: &'a str,
    /// Every `Authorization` header value.
    pub authorization: Vec<&'a str>,
    /// Names of request headers starting with `x-actguard-` (whatever the client sent under
    /// our prefix), so the allow response can remove those it does not set.
    pub prefixed_headers: Vec<&'a str>,
    /// The proxy described the request twice (HTTP mode: a duplicated `Host`,
    /// `X-Original-URI`, …): which copy is meant is a guess, so the request is refused.
    pub ambiguous: bool,
    /// The request body as given (explain; HTTP mode has none). From Envoy it is read from
    /// [`RequestFacts::envoy_http`] only when a route needs it ([`RequestFacts::body`]).
    pub body: crate::decision::mcp::Body<'a>,
    /// The `CheckRequest`'s HTTP attributes, for what only some routes read (the body).
    pub envoy_http: Option<&'a HttpRequest>,
}

/// `Content-Encoding: identity` (or empty) names no encoding; anything else means the bytes
/// are not the message the upstream will read.
fn is_identity(value: &str) -> bool {
    let value = value.trim();
    value.is_empty() || value.eq_ignore_ascii_case("identity")
}

/// Whether a header name is under actguard's `x-actguard-` prefix (any case).
pub fn has_actguard_prefix(name: &str) -> bool {
    name.get(..response::HEADER_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(response::HEADER_PREFIX))
}

impl<'a> RequestFacts<'a> {
    /// Reads the facts Envoy sends. Missing parts read as empty and are denied downstream.
    pub fn from_check_request(request: &'a CheckRequest) -> Self {
        let attributes = request.attributes.as_ref();
        let source = attributes.and_then(|a| a.source.as_ref());
        let http = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let mut facts = RequestFacts {
            peer: PeerFacts {
                certificate: source.map_or("", |s| s.certificate.as_str()),
                principal: source.map_or("", |s| s.principal.as_str()),
                xfcc: None,
            },
            ..Default::default()
        };
        let Some(http) = http else {
            return facts;
        };
        facts.method = &http.method;
        facts.host = &http.host;
        facts.path = &http.path;
        // One pass over the map (Envoy sends its names in lower case): what the pipeline
        // reads by name, and every name under our prefix.
        let mut request_id = None;
        for (name, value) in &http.headers {
            match name.as_str() {
                "x-request-id" => request_id = Some(value.as_str()),
                "authorization" => facts.authorization.push(value),
                "x-forwarded-client-cert" => facts.peer.xfcc = Some(value),
                name if has_actguard_prefix(name) => facts.prefixed_headers.push(name),
                _ => {}
            }
        }
        // `http.id` is Envoy's internal stream id; the `x-request-id` header is what Envoy
        // propagates upstream and logs, so the audit record can be joined with both.
        facts.request_id = request_id.unwrap_or(&http.id);
        facts.envoy_http = Some(http);
        // With `encode_raw_headers`, Envoy sends `header_map` instead of `headers`.
        if let Some(header_map) = &http.header_map {
            for header in &header_map.headers {
                // A value that is not UTF-8 cannot be a valid credential or XFCC; the
                // replacement keeps it present so it is denied as malformed, not as missing.
                let value = if header.raw_value.is_empty() {
                    header.value.as_str()
                } else {
                    std::str::from_utf8(&header.raw_value).unwrap_or(NOT_UTF8)
                };
                if header.key.eq_ignore_ascii_case("authorization") {
                    facts.authorization.push(value);
                } else if header.key.eq_ignore_ascii_case("x-forwarded-client-cert") {
                    facts.peer.xfcc = Some(value);
                } else if header.key.eq_ignore_ascii_case("x-request-id") {
                    facts.request_id = value;
                } else if has_actguard_prefix(&header.key) {
                    facts.prefixed_headers.push(&header.key);
                }
            }
        }
        facts
    }

    /// The request body and what its headers say about it: from Envoy's attributes when the
    /// facts came from a `CheckRequest` (read here, so routes that never look at a body pay
    /// nothing for it), else as given.
    pub fn body(&self) -> crate::decision::mcp::Body<'a> {
        self.envoy_http.map_or(self.body, body_of)
    }
}

/// The body Envoy sent (`with_request_body`) and the headers that say whether it is whole,
/// unencoded and JSON, from `headers` and, with `encode_raw_headers`, `header_map`.
fn body_of(http: &HttpRequest) -> crate::decision::mcp::Body<'_> {
    // `pack_as_bytes` sends the body as bytes; otherwise it is the (UTF-8) string.
    let bytes: &[u8] = if http.raw_body.is_empty() {
        http.body.as_bytes()
    } else {
        &http.raw_body
    };
    let mut partial = http
        .headers
        .get(PARTIAL_BODY_HEADER)
        .is_some_and(|value| !value.eq_ignore_ascii_case("false"));
    let mut content_length = http.headers.get("content-length").map(String::as_str);
    let mut encoded = http
        .headers
        .get("content-encoding")
        .is_some_and(|value| !is_identity(value));
    let mut content_type = http.headers.get("content-type").map(String::as_str);
    for header in http.header_map.iter().flat_map(|map| &map.headers) {
        let value = if header.raw_value.is_empty() {
            header.value.as_str()
        } else {
            std::str::from_utf8(&header.raw_value).unwrap_or(NOT_UTF8)
        };
        let key = header.key.as_str();
        if key.eq_ignore_ascii_case(PARTIAL_BODY_HEADER) {
            partial |= !value.eq_ignore_ascii_case("false");
        } else if key.eq_ignore_ascii_case("content-length") {
            content_length = Some(value);
        } else if key.eq_ignore_ascii_case("content-encoding") {
            encoded |= !is_identity(value);
        } else if key.eq_ignore_ascii_case("content-type") {
            // Two content types are one too many: refused like a joined value.
            content_type = Some(if content_type.is_some() { "," } else { value });
        }
    }
    // A body shorter (or longer) than the request said was not received whole.
    partial |= !bytes.is_empty()
        && content_length
            .is_some_and(|length| length.trim().parse::<usize>().ok() != Some(bytes.len()));
    crate::decision::mcp::Body {
        bytes,
        partial,
        encoded,
        content_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

    /// An `HttpRequest` with stream id `14321` and these headers (Envoy's `headers` map).
    fn with_headers(headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            id: "14321".into(),
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    fn check_request(http: HttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn rule_the_request_id_is_x_request_id_else_envoys_stream_id() {
        // `x-request-id` joins the audit record with Envoy's access log and the upstream;
        // `http.id` (Envoy's internal stream id) only when the header is absent.
        let raw_headers = HttpRequest {
            id: "14321".into(),
            header_map: Some(HeaderMap {
                headers: vec![HeaderValue {
                    key: "x-request-id".into(),
                    raw_value: b"req-raw".to_vec(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        let cases = [
            (
                "x-request-id header",
                with_headers(&[("x-request-id", "req-9b2c")]),
                "req-9b2c",
            ),
            ("no header: http.id", with_headers(&[]), "14321"),
            ("raw header_map", raw_headers, "req-raw"),
        ];
        for (name, http, expected) in cases {
            let request = check_request(http);
            let facts = RequestFacts::from_check_request(&request);
            assert_eq!(facts.request_id, expected, "case {name}");
        }
    }

    #[test]
    fn the_credential_the_xfcc_and_every_name_under_our_prefix_are_read_from_the_headers() {
        let request = check_request(with_headers(&[
            ("authorization", "Bearer abc"),
            ("x-forwarded-client-cert", "By=spiffe://example.org/a"),
            ("x-actguard-caller", "forged"),
            ("X-Actguard-Branch", "forged"),
            ("x-actguardian", "not ours"),
            ("accept", "*/*"),
        ]));
        let facts = RequestFacts::from_check_request(&request);
        assert_eq!(facts.authorization, ["Bearer abc"]);
        assert_eq!(facts.peer.xfcc, Some("By=spiffe://example.org/a"));
        let mut prefixed = facts.prefixed_headers.clone();
        prefixed.sort_unstable();
        assert_eq!(prefixed, ["X-Actguard-Branch", "x-actguard-caller"]);
        // Neither a credential nor an XFCC when the headers carry none.
        let bare = check_request(with_headers(&[]));
        let facts = RequestFacts::from_check_request(&bare);
        assert!(facts.authorization.is_empty() && facts.peer.xfcc.is_none());
        assert!(facts.prefixed_headers.is_empty());
    }
}
