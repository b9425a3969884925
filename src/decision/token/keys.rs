//! Public verification keys from a JWKS document.
//!
//! Guarantees: every key has a unique `kid`, is an asymmetric signing key (EC P-256/P-384,
//! RSA of at least 2048 bits, or Ed25519) and knows which algorithms it may verify: its
//! family's, narrowed to the JWK's own `alg` when it declares one. Symmetric (`oct`) keys are
//! refused outright, so an HS* token can never be checked against public key material.
//! Keys marked `"use": "enc"` are skipped: they are not for signatures.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::Arc;

const EC_P256: &[Algorithm] = &[Algorithm::ES256];
const EC_P384: &[Algorithm] = &[Algorithm::ES384];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const ED25519: &[Algorithm] = &[Algorithm::EdDSA];
/// RFC 8725 §3.5 / NIST SP 800-131A: RSA keys below 2048 bits are not acceptable.
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// One key that may verify signatures.
pub struct VerificationKey {
    /// Shared with every cached verification this key made.
    kid: Arc<str>,
    /// SHA-256 of the JWK as published: a cached verification stays valid only while the
    /// issuer still publishes this very key under its kid.
    fingerprint: [u8; 32],
    /// Algorithms this key may verify; a token whose `alg` is not listed is refused even when
    /// the issuer allows that algorithm (key/alg agreement, RFC 8725 §3.1).
    algorithms: Vec<Algorithm>,
    /// Issuer, kid and fingerprint as verified tokens point to them; made at the first
    /// verification (the key set does not know its issuer's name).
    identity: std::sync::OnceLock<Arc<super::claims::KeyIdentity>>,
    /// The public key parsed once per algorithm it may verify (aws-lc-rs), so a new token's
    /// signature is checked without decoding the key again (an EC point, an RSA modulus and
    /// its Montgomery form) on every verification.
    verifiers: Vec<(Algorithm, aws_lc_rs::signature::ParsedPublicKey)>,
}

impl VerificationKey {
    pub fn accepts(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }

    /// The parsed key for `algorithm`, when this key may verify it.
    pub fn verifier(&self, algorithm: Algorithm) -> Option<&aws_lc_rs::signature::ParsedPublicKey> {
        self.verifiers
            .iter()
            .find(|(accepted, _)| *accepted == algorithm)
            .map(|(_, parsed)| parsed)
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    pub fn kid(&self) -> &Arc<str> {
        &self.kid
    }

    /// This key's identity for the tokens it verifies for `issuer` (a key set belongs to one
    /// issuer, so the first call decides for all).
    pub fn identity(&self, issuer: &Arc<str>) -> Arc<super::claims::KeyIdentity> {
        let make = || {
            Arc::new(super::claims::KeyIdentity {
                issuer: Arc::clone(issuer),
                kid: Arc::clone(&self.kid),
                fingerprint: self.fingerprint,
            })
        };
        let shared = self.identity.get_or_init(make);
        // Should a key set ever be shared between issuers, each still gets its own name.
        if *shared.issuer == **issuer {
            Arc::clone(shared)
        } else {
            make()
        }
    }
}

/// The keys of one issuer, by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, VerificationKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document. Every problem is reported, each naming the key's index.
    pub fn from_jwks(document: &[u8]) -> Result<Self, Vec<String>> {
        let parsed = super::json::parse_strict(document)
            .map_err(|_| vec!["is not a JSON document (or repeats a member name)".to_owned()])?;
        let Some(entries) = parsed.get("keys").and_then(|keys| keys.as_array()) else {
            return Err(vec!["has no \"keys\" array".to_owned()]);
        };
        let mut keys = HashMap::new();
        let mut problems = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(Some((kid, key))) => {
                    if keys.insert(kid.clone(), key).is_some() {
                        problems.push(format!("keys[{index}]: kid {kid:?} appears twice"));
                    }
                }
                Ok(None) => {}
                Err(problem) => problems.push(format!("keys[{index}]: {problem}")),
            }
        }
        if problems.is_empty() && keys.is_empty() {
            problems.push("has no signature keys".to_owned());
        }
        if problems.is_empty() {
            Ok(Self { keys })
        } else {
            Err(problems)
        }
    }

    /// For fetched sets: keys actguard cannot use (another curve, a short RSA key, a symmetric
    /// key) are skipped and reported, and the set fails only when no usable key remains or the
    /// document itself is malformed. A real IdP's JWKS often carries keys for other purposes.
    pub fn from_jwks_skipping_unusable(
        document: &[u8],
    ) -> Result<(Self, Vec<String>), Vec<String>> {
        let parsed = super::json::parse_strict(document)
            .map_err(|_| vec!["is not a JSON document (or repeats a member name)".to_owned()])?;
        let Some(entries) = parsed.get("keys").and_then(|keys| keys.as_array()) else {
            return Err(vec!["has no \"keys\" array".to_owned()]);
        };
        let mut keys = HashMap::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(Some((kid, key))) => {
                    if keys.insert(kid.clone(), key).is_some() {
                        return Err(vec![format!("keys[{index}]: kid {kid:?} appears twice")]);
                    }
                }
                Ok(None) => {}
                Err(problem) => skipped.push(format!("keys[{index}]: {problem}")),
            }
        }
        if keys.is_empty() {
            skipped.push("has no usable signature keys".to_owned());
            return Err(skipped);
        }
        Ok((Self { keys }, skipped))
    }

    pub fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn decoded_len(field: &str, value: &str) -> Result<usize, String> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map(|bytes| bytes.len())
        .map_err(|_| format!("{field} is not unpadded base64url"))
}

/// `Ok(None)` for a key that is not for signatures.
fn parse_key(entry: &serde_json::Value) -> Result<Option<(String, VerificationKey)>, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|kid| !kid.is_empty())
        .ok_or("has no kid (tokens select keys by kid)")?;
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(params) => {
            let (algorithms, coordinate_len) = match params.curve {
                EllipticCurve::P256 => (EC_P256, 32),
                EllipticCurve::P384 => (EC_P384, 48),
                _ => return Err("EC curve not supported (P-256, P-384)".to_owned()),
            };
            if decoded_len("x", &params.x)? != coordinate_len
                || decoded_len("y", &params.y)? != coordinate_len
            {
                return Err("EC coordinates have the wrong length for the curve".to_owned());
            }
            algorithms
        }
        AlgorithmParameters::RSA(params) => {
            let modulus_len = decoded_len("n", &params.n)?;
            decoded_len("e", &params.e)?;
            if modulus_len < MIN_RSA_MODULUS_BYTES {
                return Err("RSA modulus is shorter than 2048 bits".to_owned());
            }
            RSA
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519 {
                return Err("OKP curve not supported (Ed25519)".to_owned());
            }
            if decoded_len("x", &params.x)? != 32 {
                return Err("Ed25519 key has the wrong length".to_owned());
            }
            ED25519
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are refused: HS* tokens are not accepted".to_owned());
        }
        _ => return Err("key type not supported".to_owned()),
    };
    let algorithms = match &jwk.common.key_algorithm {
        None => family.to_vec(),
        Some(declared) => {
            let declared = algorithm_of(*declared)
                .filter(|alg| family.contains(alg))
                .ok_or("its alg does not fit its key type")?;
            vec![declared]
        }
    };
    // jsonwebtoken's reading of the JWK stays the gate for what a usable key is.
    DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    let public_key = public_key_bytes(&jwk.algorithm)?;
    let verifiers = algorithms
        .iter()
        .map(|&algorithm| {
            let parsed = aws_lc_rs::signature::ParsedPublicKey::new(
                verification_algorithm(algorithm)?,
                &public_key,
            )
            .map_err(|error| format!("unusable key: {error}"))?;
            Ok((algorithm, parsed))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, entry.to_string().as_bytes());
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(digest.as_ref());
    let shared_kid: Arc<str> = Arc::from(kid.as_str());
    Ok(Some((
        kid,
        VerificationKey {
            kid: shared_kid,
            fingerprint,
            algorithms,
            identity: std::sync::OnceLock::new(),
            verifiers,
        },
    )))
}

/// aws-lc-rs's verification algorithm for a JWS `alg` — the same ones jsonwebtoken's aws-lc-rs
/// backend uses (RSA keys of 2048–8192 bits).
fn verification_algorithm(
    algorithm: Algorithm,
) -> Result<&'static dyn aws_lc_rs::signature::VerificationAlgorithm, String> {
    use aws_lc_rs::signature as sig;
    Ok(match algorithm {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        Algorithm::EdDSA => &sig::ED25519,
        other => return Err(format!("{other:?} is not a signature algorithm we verify")),
    })
}

/// The public key as aws-lc-rs reads it: an uncompressed EC point (`04 || x || y`), an
/// Ed25519 key's 32 bytes, or an RSA key as a DER `RSAPublicKey` (RFC 8017 A.1.1).
pub fn public_key_bytes(parameters: &AlgorithmParameters) -> Result<Vec<u8>, String> {
    let decode = |field: &str, value: &str| {
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| format!("{field} is not unpadded base64url"))
    };
    match parameters {
        AlgorithmParameters::EllipticCurve(params) => {
            let mut point = vec![0x04];
            point.extend(decode("x", &params.x)?);
            point.extend(decode("y", &params.y)?);
            Ok(point)
        }
        AlgorithmParameters::OctetKeyPair(params) => decode("x", &params.x),
        AlgorithmParameters::RSA(params) => {
            let mut body = der_unsigned_integer(&decode("n", &params.n)?);
            body.extend(der_unsigned_integer(&decode("e", &params.e)?));
            Ok(der_element(0x30, &body))
        }
        _ => Err("key type not supported".to_owned()),
    }
}

/// A DER INTEGER of a big-endian unsigned value: leading zero bytes dropped, one put back
/// when the high bit is set (so it does not read as negative).
fn der_unsigned_integer(value: &[u8]) -> Vec<u8> {
    let start = value
        .iter()
        .position(|&byte| byte != 0)
        .unwrap_or(value.len());
    let digits = &value[start..];
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|&first| first & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    der_element(0x02, &content)
}

/// A DER element: tag, definite length (short or long form), content.
fn der_element(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut element = vec![tag];
    let length = content.len();
    if length < 0x80 {
        element.push(length as u8);
    } else {
        let bytes = length.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&byte| byte != 0)
            .unwrap_or(bytes.len() - 1);
        element.push(0x80 | (bytes.len() - first) as u8);
        element.extend_from_slice(&bytes[first..]);
    }
    element.extend_from_slice(content);
    element
}

fn algorithm_of(declared: KeyAlgorithm) -> Option<Algorithm> {
    Some(match declared {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Parses an algorithm name from configuration or a JOSE header. Only asymmetric signature
/// algorithms exist here: `none` and HS* are not names we know.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256_key(kid: &str) -> serde_json::Value {
        // P-256's base point: a valid public key (keys are parsed when loaded).
        let (x, y) = (
            "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
            "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
        );
        serde_json::json!({"kty":"EC","crv":"P-256","x":x,"y":y,"kid":kid})
    }

    fn jwks(keys: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn a_key_names_the_issuer_it_verified_for() {
        let set = KeySet::from_jwks(&jwks(vec![p256_key("a")])).unwrap();
        let key = set.get("a").unwrap();
        let (first, second): (Arc<str>, Arc<str>) =
            ("https://a.example".into(), "https://b.example".into());
        let once = key.identity(&first);
        // Shared, not copied, for the issuer it was made for...
        assert!(Arc::ptr_eq(&once, &key.identity(&first)));
        assert_eq!((&*once.kid, once.fingerprint), ("a", key.fingerprint()));
        // ...and never another issuer's name, should a key set ever be shared.
        assert_eq!(&*key.identity(&second).issuer, "https://b.example");
        assert_eq!(&*key.identity(&first).issuer, "https://a.example");
    }

    #[test]
    fn loads_keys_and_their_algorithms() {
        let set = KeySet::from_jwks(&jwks(vec![p256_key("a")])).unwrap();
        let key = set.get("a").unwrap();
        assert!(key.accepts(Algorithm::ES256));
        assert!(!key.accepts(Algorithm::RS256));
        assert!(!key.accepts(Algorithm::HS256));
    }

    #[test]
    fn declared_alg_narrows_the_key() {
        let mut key = p256_key("a");
        key["alg"] = "ES384".into();
        let problems = KeySet::from_jwks(&jwks(vec![key])).unwrap_err();
        assert!(problems[0].contains("does not fit"), "{problems:?}");
    }

    #[test]
    fn rejects_bad_keys_with_their_index() {
        let oct = serde_json::json!({"kty":"oct","k":"c2VjcmV0","kid":"h"});
        let no_kid = serde_json::json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA"});
        let short_rsa = serde_json::json!({"kty":"RSA","n":URL_SAFE_NO_PAD.encode([1u8;128]),"e":"AQAB","kid":"r"});
        let problems = KeySet::from_jwks(&jwks(vec![
            p256_key("a"),
            oct,
            no_kid,
            short_rsa,
            p256_key("a"),
        ]))
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("keys[1]: symmetric"));
        assert!(problems[1].starts_with("keys[2]: has no kid"));
        assert!(problems[2].starts_with("keys[3]: RSA modulus"));
        assert!(problems[3].contains("appears twice"));
    }

    #[test]
    fn rule_a_key_that_does_not_parse_is_refused_when_loaded() {
        // A point that is not on P-256, an Ed25519 key of the right length that is not a
        // point: jsonwebtoken reads both JWKs, aws-lc-rs cannot use them. They are refused at
        // load, with their index, instead of failing every verification later.
        let off_curve = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let off_curve =
            serde_json::json!({"kty":"EC","crv":"P-256","x":off_curve,"y":off_curve,"kid":"p"});
        let problems =
            KeySet::from_jwks(&jwks(vec![p256_key("a"), off_curve.clone()])).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("keys[1]: unusable key"),
            "{problems:?}"
        );
        // A fetched set skips it and keeps the usable key.
        let (set, skipped) =
            KeySet::from_jwks_skipping_unusable(&jwks(vec![p256_key("a"), off_curve])).unwrap();
        assert_eq!((set.len(), skipped.len()), (1, 1), "{skipped:?}");
    }

    #[test]
    fn skips_encryption_keys_but_requires_a_signature_key() {
        let mut enc = p256_key("e");
        enc["use"] = "enc".into();
        let problems = KeySet::from_jwks(&jwks(vec![enc])).unwrap_err();
        assert_eq!(problems, vec!["has no signature keys".to_owned()]);
        assert!(KeySet::from_jwks(b"{}").is_err());
        assert!(KeySet::from_jwks(b"[").is_err());
    }

    #[test]
    fn fetched_sets_skip_unusable_keys_but_need_one_usable() {
        let oct = serde_json::json!({"kty":"oct","k":"c2VjcmV0","kid":"h"});
        let (set, skipped) =
            KeySet::from_jwks_skipping_unusable(&jwks(vec![oct.clone(), p256_key("a")])).unwrap();
        assert!(set.get("a").is_some());
        assert_eq!(skipped.len(), 1);
        assert!(KeySet::from_jwks_skipping_unusable(&jwks(vec![oct])).is_err());
        assert!(
            KeySet::from_jwks_skipping_unusable(&jwks(vec![p256_key("a"), p256_key("a")])).is_err()
        );
    }

    #[test]
    fn algorithm_names_exclude_symmetric_and_none() {
        assert_eq!(parse_algorithm("ES256"), Some(Algorithm::ES256));
        for name in ["none", "HS256", "es256", ""] {
            assert_eq!(parse_algorithm(name), None, "{name}");
        }
    }
}
