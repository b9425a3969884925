//! What both benchmarks share: the identities of the scenario and the one request shape they
//! send (a cached-path GET of the calendar tool, as Envoy reports it).

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc;

pub const ISSUER: &str = "https://sts.example.org";
pub const LOCAL: &str = "spiffe://example.org/tool/calendar";
#[allow(dead_code)] // the load benchmark's deny scenario only
pub const ORCHESTRATOR: &str = "spiffe://example.org/agent/orchestrator";
pub const SCHEDULER: &str = "spiffe://example.org/agent/scheduler";

/// `GET /calendar/events?day=mon` from the peer `certificate` with `Bearer {token}`.
pub fn check_request(certificate: &str, token: &str) -> CheckRequest {
    actguard::devkit::envoy_check_request(
        certificate,
        "GET",
        "calendar.example.org",
        "/calendar/events?day=mon",
        token,
    )
}

/// aws-lc-rs verifying `token`'s signature over its signing input with `issuer`'s public key
/// parsed once: the least any verifier must do for a token it has not seen. The closure answers whether the signature holds.
#[allow(dead_code)] // the load benchmark does not use it
pub fn raw_verifier(
    issuer: &actguard::devkit::DevIssuer,
    token: &str,
) -> impl Fn() -> bool + Send + Sync + 'static {
    use aws_lc_rs::signature::{self, UnparsedPublicKey};
    use base64::Engine as _;
    use jsonwebtoken::jwk::AlgorithmParameters;
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(issuer.jwks()["keys"][0].clone()).unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    let signing_input = signing_input.as_bytes().to_vec();
    let algorithm: &'static dyn signature::VerificationAlgorithm = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(_) => &signature::ECDSA_P256_SHA256_FIXED,
        AlgorithmParameters::OctetKeyPair(_) => &signature::ED25519,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    // The key as aws-lc-rs reads it (EC point, Ed25519 bytes, DER RSAPublicKey), parsed once.
    let bytes = actguard::decision::token::keys::public_key_bytes(&jwk.algorithm).unwrap();
    let key = UnparsedPublicKey::new(algorithm, bytes).parse().unwrap();
    move || key.verify_sig(&signing_input, &signature).is_ok()
}

/// The minimal baseline: an ext_authz server whose handler returns an empty OK (no actguard
/// code in it).
#[allow(dead_code)] // not the in-process load benchmark's baseline
pub struct EmptyAuthorization;

#[tonic::async_trait]
impl Authorization for EmptyAuthorization {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse::default()))
    }
}

/// The part of a `CheckResponse` the load generators read: its gRPC status (field 1). prost
/// skips the other fields unparsed, so a generator spends the same on a no-op's empty answer
/// and on actguard's allow with its headers and dynamic metadata, as h2load does (it decodes
/// nothing). What the response carries is tested by the end-to-end tests, not here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckStatus {
    #[prost(message, optional, tag = "1")]
    pub status: Option<rpc::Status>,
}

/// A tonic ext_authz client that decodes only [`CheckStatus`].
#[allow(dead_code)] // the Envoy benchmark speaks HTTP to Envoy instead
#[derive(Clone)]
pub struct Client(tonic::client::Grpc<tonic::transport::Channel>);

#[allow(dead_code)]
impl Client {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self(tonic::client::Grpc::new(channel))
    }

    /// The answer's gRPC status code (0 allow — also when absent, as Envoy reads it — 7 deny),
    /// or `Err` for a transport or gRPC error.
    pub async fn check(&mut self, request: CheckRequest) -> Result<i32, tonic::Status> {
        self.0
            .ready()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let codec = tonic_prost::ProstCodec::<CheckRequest, CheckStatus>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/envoy.service.auth.v3.Authorization/Check",
        );
        let response = self
            .0
            .unary(tonic::Request::new(request), path, codec)
            .await?;
        Ok(response.into_inner().status.map_or(0, |status| status.code))
    }
}

/// A token of `issuer` for `user:alice` through the orchestrator to the scheduler, with
/// `calendar:read`, valid for an hour, unique by `jti`.
#[allow(dead_code)] // not the Envoy benchmark's
pub fn calendar_token(issuer: &actguard::devkit::DevIssuer, jti: u64) -> String {
    let mut claims = actguard::devkit::delegated_claims(
        issuer.issuer(),
        "user:alice",
        LOCAL,
        "calendar:read",
        &[ORCHESTRATOR, SCHEDULER],
        actguard::decision::token::unix_now(),
        3600,
    );
    claims["jti"] = jti.to_string().into();
    issuer.sign(&claims).unwrap()
}

/// Puts `section` (starting with `heading`) into docs/benchmarks.md in place of the section
/// with that heading, else before the microbenchmarks (the load benchmark rewrites the file
/// with every section later; this keeps the file current when a benchmark runs alone).
#[allow(dead_code)] // the Envoy and fleet benchmarks only
pub fn put_section(heading: &str, section: &str) {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
    let text = std::fs::read_to_string(&docs).unwrap_or_default();
    let updated = match text.find(heading) {
        Some(start) => {
            let end = text[start + heading.len()..]
                .find("\n## ")
                .map_or(text.len(), |at| start + heading.len() + at + 1);
            format!("{}{section}\n{}", &text[..start], &text[end..])
        }
        None => match text.find("## Microbenchmarks") {
            Some(at) => format!("{}{section}\n{}", &text[..at], &text[at..]),
            None => format!("{text}\n{section}"),
        },
    };
    std::fs::write(docs, updated).unwrap();
}
