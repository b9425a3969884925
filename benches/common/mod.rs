//! What both benchmarks share: the identities of the scenario and the one request shape they
//! send (a cached-path GET of the calendar tool, as Envoy reports it).

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

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
/// parsed once (RSA from its components): the least any verifier must do for a token it has
/// not seen. The closure answers whether the signature holds.
#[allow(dead_code)] // the load benchmark does not use it
pub fn raw_verifier(
    issuer: &actguard::devkit::DevIssuer,
    token: &str,
) -> impl Fn() -> bool + Send + Sync + 'static {
    use aws_lc_rs::signature::{self, UnparsedPublicKey};
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = &issuer.jwks()["keys"][0];
    let field = |name: &str| b64.decode(jwk[name].as_str().unwrap()).unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = b64.decode(signature).unwrap();
    let signing_input = signing_input.as_bytes().to_vec();
    enum Key {
        Parsed(signature::ParsedPublicKey),
        Rsa(signature::RsaPublicKeyComponents<Vec<u8>>),
    }
    let key = match jwk["kty"].as_str().unwrap() {
        "EC" => {
            let mut point = vec![4u8];
            point.extend(field("x"));
            point.extend(field("y"));
            let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
            Key::Parsed(key.parse().unwrap())
        }
        "OKP" => Key::Parsed(
            UnparsedPublicKey::new(&signature::ED25519, field("x"))
                .parse()
                .unwrap(),
        ),
        _ => Key::Rsa(signature::RsaPublicKeyComponents {
            n: field("n"),
            e: field("e"),
        }),
    };
    move || match &key {
        Key::Parsed(parsed) => parsed.verify_sig(&signing_input, &signature).is_ok(),
        Key::Rsa(components) => components
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                &signing_input,
                &signature,
            )
            .is_ok(),
    }
}
