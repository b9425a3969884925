//! Throwaway trust material for `actguard demo` and the tests: a CA with X509-SVIDs, and a
//! token issuer with its JWKS. Everything is generated in memory with fresh keys.
//!
//! Development only: keys are never persisted by this module and nothing here is meant to
//! stand in for SPIRE or a real token service.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use std::fmt;

/// Anything that went wrong generating development material.
#[derive(Debug)]
pub struct DevError(String);

impl fmt::Display for DevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DevError {}

impl From<rcgen::Error> for DevError {
    fn from(error: rcgen::Error) -> Self {
        Self(format!("certificate generation failed: {error}"))
    }
}

/// Percent-encodes a PEM the way Envoy reports `source.certificate`.
pub fn url_encode(pem: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(pem, KEEP).to_string()
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl IssuedCertificate {
    /// The certificate as Envoy puts it in `attributes.source.certificate`.
    pub fn url_encoded(&self) -> String {
        url_encode(&self.cert_pem)
    }
}

/// A development certificate authority for one trust domain.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, i.e. the trust bundle.
    bundle_pem: String,
    /// The CA's private key, for `actguard dev ca` to write out.
    key_pem: String,
}

impl DevCa {
    pub fn new(trust_domain: &str) -> Result<Self, DevError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(
            DnType::CommonName,
            format!("actguard dev CA for {trust_domain}"),
        );
        let uri = format!("spiffe://{trust_domain}");
        params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        Ok(Self {
            bundle_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA written earlier by [`DevCa::bundle_pem`] and [`DevCa::key_pem`].
    pub fn from_pem(bundle_pem: &str, key_pem: &str) -> Result<Self, DevError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(bundle_pem, key)?,
            bundle_pem: bundle_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// An X509-SVID: a leaf with exactly one URI SAN, digitalSignature, client and server auth.
    pub fn issue_svid(&self, spiffe_id: &str) -> Result<IssuedCertificate, DevError> {
        self.issue_svid_with_dns(spiffe_id, &[])
    }

    /// An X509-SVID that also carries DNS names (for a server that clients reach by name,
    /// such as the demo's Envoy; X509-SVIDs may carry DNS SANs beside their one URI SAN).
    pub fn issue_svid_with_dns(
        &self,
        spiffe_id: &str,
        dns_names: &[String],
    ) -> Result<IssuedCertificate, DevError> {
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params
            .subject_alt_names
            .push(SanType::URI(spiffe_id.try_into()?));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        self.issue(params)
    }

    /// Signs arbitrary parameters: for tests that need malformed SVIDs (two URIs, a CA, …).
    pub fn issue(&self, params: CertificateParams) -> Result<IssuedCertificate, DevError> {
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Signature algorithms the development issuer can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevAlgorithm {
    Es256,
    EdDsa,
    /// RSA 2048 with PKCS#1 v1.5 and SHA-256.
    Rs256,
}

/// How a development issuer signs: jsonwebtoken's signer for EC and Ed25519; aws-lc-rs for RSA
/// (jsonwebtoken wants a PKCS#1 key, rcgen writes PKCS#8).
enum Signer {
    Jwt(EncodingKey),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// A development token issuer: one signing key and the JWKS that publishes it.
pub struct DevIssuer {
    issuer: String,
    kid: String,
    algorithm: Algorithm,
    signing_key: Signer,
    jwk: Value,
    /// PKCS#8 PEM of the signing key, for `actguard dev issuer` to write out.
    key_pem: String,
}

impl DevIssuer {
    pub fn generate(issuer: &str, kid: &str, algorithm: DevAlgorithm) -> Result<Self, DevError> {
        let rcgen_algorithm = match algorithm {
            DevAlgorithm::Es256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            DevAlgorithm::EdDsa => &rcgen::PKCS_ED25519,
            DevAlgorithm::Rs256 => &rcgen::PKCS_RSA_SHA256,
        };
        Self::from_key(issuer, kid, KeyPair::generate_for(rcgen_algorithm)?)
    }

    /// An issuer whose signing key was written earlier (PKCS#8 PEM, P-256, Ed25519 or RSA).
    pub fn from_key_pem(issuer: &str, kid: &str, key_pem: &str) -> Result<Self, DevError> {
        Self::from_key(issuer, kid, KeyPair::from_pem(key_pem)?)
    }

    fn from_key(issuer: &str, kid: &str, key: KeyPair) -> Result<Self, DevError> {
        let algorithm = if key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
            DevAlgorithm::Es256
        } else if key.algorithm() == &rcgen::PKCS_ED25519 {
            DevAlgorithm::EdDsa
        } else if key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            DevAlgorithm::Rs256
        } else {
            return Err(DevError(
                "the issuer key must be P-256, Ed25519 or RSA".into(),
            ));
        };
        let jwt_algorithm = match algorithm {
            DevAlgorithm::Es256 => Algorithm::ES256,
            DevAlgorithm::EdDsa => Algorithm::EdDSA,
            DevAlgorithm::Rs256 => Algorithm::RS256,
        };
        let public = key.public_key_raw();
        let (signing_key, jwk) = match algorithm {
            DevAlgorithm::Es256 => {
                // Uncompressed point: 0x04 || X || Y.
                let (x, y) = public
                    .get(1..33)
                    .zip(public.get(33..65))
                    .ok_or_else(|| DevError("unexpected EC public key length".into()))?;
                (
                    Signer::Jwt(EncodingKey::from_ec_der(&key.serialize_der())),
                    json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x),
                           "y": URL_SAFE_NO_PAD.encode(y), "kid": kid, "alg": "ES256", "use": "sig"}),
                )
            }
            DevAlgorithm::EdDsa => (
                Signer::Jwt(EncodingKey::from_ed_der(&key.serialize_der())),
                json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public),
                       "kid": kid, "alg": "EdDSA", "use": "sig"}),
            ),
            DevAlgorithm::Rs256 => {
                let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&key.serialize_der())
                    .map_err(|error| DevError(format!("unusable RSA key: {error}")))?;
                use aws_lc_rs::signature::KeyPair as _;
                let numbers =
                    aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                let (n, e) = (numbers.n, numbers.e);
                (
                    Signer::Rsa(pair),
                    json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
                           "kid": kid, "alg": "RS256", "use": "sig"}),
                )
            }
        };
        Ok(Self {
            issuer: issuer.to_owned(),
            kid: kid.to_owned(),
            algorithm: jwt_algorithm,
            signing_key,
            jwk,
            key_pem: key.serialize_pem(),
        })
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWKS document to give actguard (`issuers[].jwks_file`).
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk.clone()] })
    }

    /// The usual JOSE header: `alg`, `kid`, `typ: at+jwt` (RFC 9068).
    pub fn header(&self) -> Value {
        json!({"alg": format!("{:?}", self.algorithm), "kid": self.kid, "typ": "at+jwt"})
    }

    /// Signs `claims` with the usual header.
    pub fn sign(&self, claims: &Value) -> Result<String, DevError> {
        self.sign_raw(&self.header(), claims)
    }

    /// Signs any header and claims with this issuer's key, exactly as given (for tests of
    /// hostile headers such as `crit` or `jku`).
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> Result<String, DevError> {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        self.sign_input(&signing_input)
    }

    /// Signs an already-encoded `header.payload` string (for byte-level tests such as
    /// duplicate claim names, which `serde_json::Value` cannot express).
    pub fn sign_input(&self, signing_input: &str) -> Result<String, DevError> {
        let signature = match &self.signing_key {
            Signer::Jwt(key) => {
                jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, self.algorithm)
                    .map_err(|error| DevError(format!("signing failed: {error}")))?
            }
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    signing_input.as_bytes(),
                    &mut signature,
                )
                .map_err(|error| DevError(format!("signing failed: {error}")))?;
                URL_SAFE_NO_PAD.encode(signature)
            }
        };
        Ok(format!("{signing_input}.{signature}"))
    }
}

/// Claims of an access token for `subject`, delegated through `actors` in delegation order
/// (first delegate first, current actor last), valid from `now` for `lifetime` seconds.
pub fn delegated_claims(
    issuer: &str,
    subject: &str,
    audience: &str,
    scope: &str,
    actors: &[&str],
    now: i64,
    lifetime: i64,
) -> Value {
    let mut claims = json!({
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
    });
    let mut act: Option<Value> = None;
    for actor in actors {
        let mut entry = json!({ "sub": actor });
        if let Some(inner) = act.take() {
            entry["act"] = inner;
        }
        act = Some(entry);
    }
    if let Some(act) = act {
        claims["act"] = act;
    }
    claims
}

/// A `CheckRequest` shaped like Envoy's for an mTLS caller presenting `bearer` (demo, benches).
pub fn envoy_check_request(
    url_encoded_certificate: &str,
    method: &str,
    host: &str,
    path: &str,
    bearer: &str,
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    let headers = [("authorization".to_owned(), format!("Bearer {bearer}"))].into();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                certificate: url_encoded_certificate.to_owned(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    host: host.to_owned(),
                    path: path.to_owned(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
