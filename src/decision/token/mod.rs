//! Bearer tokens: the `Authorization` header (RFC 6750) and JWS verification (RFC 7515/7519,
//! RFC 8725) into a [`VerifiedToken`].
//!
//! [`Verifier::verify`] validates, in this order (first failure wins): size; compact JWS form
//! with unpadded base64url parts; a strict JSON header (no duplicate names); no `crit`
//! (we implement no extensions, RFC 7515 §4.1.11); `typ` absent, `JWT` or `at+jwt` (only
//! `at+jwt` when required; RFC 8725 §3.11, RFC 9068 §4); a strict JSON claims set; `iss` is a
//! configured issuer; `alg` is in that issuer's allow-list; `kid` names one of its keys; the key
//! accepts that `alg`; the signature; `exp` present, numeric and not past (with leeway);
//! `nbf`/`iat` not in the future (with leeway); `aud` (string or array) contains the local
//! SPIFFE ID exactly; `sub` present; optional claims have the right JSON types.
//!
//! It never uses `jku`, `x5u`, `jwk`, `x5c` or any other header that points at key material:
//! keys come only from configuration. Reading `iss` before the signature is checked is only
//! to choose the issuer's keys; nothing else is read from an unverified token.
//!
//! It does not check the binding to the caller or the delegation chain ([`crate::decision::policy`]).

pub mod claims;
pub mod details;
pub mod json;
pub mod keys;
pub mod remote;
mod shared;

pub use claims::{Actor, MayAct, VerifiedToken};
pub use keys::{KeySet, parse_algorithm};
pub use remote::{JwksLocation, RemoteKeys, RemoteSpec};

use crate::decision::reason::{Denial, DenyReason};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use json::{Json, JsonError, Object};
use jsonwebtoken::Algorithm;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default cap on the size of a bearer token, in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;

fn is_token68_char(byte: u8) -> bool {
    TOKEN68[usize::from(byte)]
}

/// RFC 9110 `token68` characters (plus `.`, which separates a JWS's parts), as a table: every
/// byte of every bearer token is checked, on the cache-hit path too.
const TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
        byte += 1;
    }
    table
};

/// RFC 9110 `tchar`.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Extracts the bearer token from the request's `Authorization` header values (one entry per
/// header line as Envoy reports them).
///
/// No header, or a header with another scheme, is `token_missing` (a bare challenge). Several
/// headers, an empty one, an empty bearer value, or anything but one token68 credential
/// (a comma-joined second credential included) is `authorization_invalid`.
pub fn bearer_token<'a>(authorization: &[&'a str]) -> Result<&'a str, Denial> {
    let credential = bearer_credential(authorization)?;
    check_token68(credential)?;
    Ok(credential)
}

/// [`bearer_token`] without the final check that the credential is token68 ([`check_token68`]),
/// for a caller that first compares the credential with tokens that passed it.
pub fn bearer_credential<'a>(authorization: &[&'a str]) -> Result<&'a str, Denial> {
    let invalid = |description| Denial::new(DenyReason::AuthorizationInvalid, description);
    let value = match authorization {
        [] => {
            return Err(Denial::new(
                DenyReason::TokenMissing,
                "the request has no bearer token",
            ));
        }
        [value] => value.trim_matches([' ', '\t']),
        _ => return Err(invalid("the request has several Authorization headers")),
    };
    if value.is_empty() {
        return Err(invalid("the Authorization header is empty"));
    }
    let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
    // RFC 9110 §11.4: the scheme is a token and only SP separates it from the credential;
    // `Bearer<TAB>x` is a malformed header, not another scheme.
    if !scheme.bytes().all(is_token_char) {
        return Err(invalid("the Authorization header is malformed"));
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denial::new(
            DenyReason::TokenMissing,
            "the Authorization header does not use the Bearer scheme",
        ));
    }
    let credential = credential.trim_start_matches(' ');
    if credential.is_empty() {
        return Err(invalid("the bearer token is empty"));
    }
    Ok(credential)
}

/// A bearer credential must be one RFC 6750 token68 (a comma-joined second credential or any
/// other character is `authorization_invalid`).
pub fn check_token68(credential: &str) -> Result<(), Denial> {
    if credential.bytes().all(is_token68_char) {
        Ok(())
    } else {
        Err(Denial::new(
            DenyReason::AuthorizationInvalid,
            "the Authorization header is not exactly one bearer credential",
        ))
    }
}

/// Seconds since the Unix epoch, the unit of JWT NumericDate.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// Unix milliseconds now.
pub fn unix_now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// One trusted issuer: its exact `iss`, the algorithms it may use, and its keys.
#[derive(Debug)]
pub struct TrustedIssuer {
    /// Shared with every cached verification of its tokens.
    pub issuer: Arc<str>,
    pub algorithms: Vec<Algorithm>,
    pub keys: IssuerKeys,
}

/// Where an issuer's keys live.
#[derive(Debug, Clone)]
pub enum IssuerKeys {
    /// `jwks_file`, read at (re)load.
    Static(Arc<KeySet>),
    /// `jwks_uri` or discovery, refreshed in the background.
    Remote(Arc<RemoteKeys>),
}

impl IssuerKeys {
    /// The usable keys now; `None` when a remote set was never fetched or is too stale.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        match self {
            Self::Static(keys) => Some(Arc::clone(keys)),
            Self::Remote(remote) => remote.current(),
        }
    }
}

/// Verifies tokens for one workload. Built from configuration; immutable afterwards.
#[derive(Debug)]
pub struct Verifier {
    issuers: HashMap<String, TrustedIssuer>,
    /// The local workload's SPIFFE ID: the `aud` every token must carry.
    audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    leeway: i64,
    max_token_bytes: usize,
    /// RFC 9068 explicit typing required (`tokens.require_typ: at+jwt`).
    require_access_token_typ: bool,
    /// `tokens.branch_claim`: the claim naming the execution branch, when configured.
    branch_claim: Option<Box<str>>,
    /// Every `routes[].budget.claim`, each once.
    budget_claims: Box<[Box<str>]>,
    /// Chains and scope lists shared between verified tokens.
    parts: shared::SharedParts,
}

fn denial(reason: DenyReason, description: &'static str) -> Denial {
    Denial::new(reason, description)
}

/// A token part's bytes: unpadded base64url.
fn decode_part(part: &str) -> Result<Vec<u8>, Denial> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        denial(
            DenyReason::TokenMalformed,
            "a token part is not unpadded base64url",
        )
    })
}

/// A decoded token part as a strict JSON object, borrowing from `bytes`.
fn json_object(bytes: &[u8]) -> Result<Object<'_>, Denial> {
    match json::parse_tree(bytes, usize::MAX) {
        Ok(Json::Object(members)) => Ok(members),
        Ok(_) => Err(denial(
            DenyReason::TokenMalformed,
            "a token part is not a JSON object",
        )),
        Err(JsonError::TooDeep) => Err(denial(
            DenyReason::TokenTooLarge,
            "the token nests deeper than allowed",
        )),
        Err(JsonError::Malformed) => Err(denial(
            DenyReason::TokenMalformed,
            "a token part is not valid JSON or repeats a member name",
        )),
    }
}

/// The JOSE types an access token may declare (RFC 7515 §4.1.9: compared case-insensitively,
/// `application/` optional). Anything else — `secevent+jwt`, `logout+jwt`, an ID token's
/// `id_token+jwt`… — is another kind of JWT that must never pass as an access token
/// (RFC 8725 §3.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeclaredType {
    Absent,
    Jwt,
    AccessToken,
}

fn declared_type(header: &Object<'_>) -> Result<DeclaredType, Denial> {
    let typ = match header.get("typ") {
        None => return Ok(DeclaredType::Absent),
        Some(Json::String(typ)) => &**typ,
        Some(_) => {
            return Err(denial(
                DenyReason::TokenMalformed,
                "the token's typ is not a string",
            ));
        }
    };
    let media_type = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    if media_type.eq_ignore_ascii_case("jwt") {
        Ok(DeclaredType::Jwt)
    } else if media_type.eq_ignore_ascii_case("at+jwt") {
        Ok(DeclaredType::AccessToken)
    } else {
        Err(denial(
            DenyReason::TokenMalformed,
            "the token's typ is not an access token type (JWT or at+jwt)",
        ))
    }
}

/// `typ` must be absent, `JWT` or `at+jwt`; with `required`, exactly `at+jwt` (RFC 9068 §4).
fn check_typ(header: &Object<'_>, required: bool) -> Result<(), Denial> {
    let declared = declared_type(header)?;
    if required && declared != DeclaredType::AccessToken {
        return Err(denial(
            DenyReason::TokenMalformed,
            "the token does not declare typ at+jwt, which this workload requires",
        ));
    }
    Ok(())
}

/// A NumericDate claim: `None` when absent, `Err` when present but not a finite number.
fn numeric_date(claims: &Object<'_>, name: &str) -> Result<Option<i64>, ()> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => match value.as_f64() {
            Some(seconds) if seconds.is_finite() => Ok(Some(seconds.floor() as i64)),
            _ => Err(()),
        },
    }
}

impl Verifier {
    /// The local workload's SPIFFE ID (every token's audience; RFC 9396 `locations`).
    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn new(
        issuers: Vec<TrustedIssuer>,
        audience: String,
        leeway: Duration,
        max_token_bytes: usize,
    ) -> Self {
        Self {
            issuers: issuers
                .into_iter()
                .map(|issuer| (issuer.issuer.to_string(), issuer))
                .collect(),
            audience,
            leeway: i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX),
            max_token_bytes,
            require_access_token_typ: false,
            branch_claim: None,
            budget_claims: Box::default(),
            parts: shared::SharedParts::default(),
        }
    }

    /// This verifier with RFC 9068 explicit typing (`typ: at+jwt`) made mandatory.
    pub fn requiring_access_token_typ(mut self, required: bool) -> Self {
        self.require_access_token_typ = required;
        self
    }

    /// This verifier reading the execution branch from `claim` (`tokens.branch_claim`).
    pub fn with_branch_claim(mut self, claim: Option<String>) -> Self {
        self.branch_claim = claim.map(String::into_boxed_str);
        self
    }

    /// This verifier reading the routes' budget claims (`routes[].budget.claim`) too.
    pub fn with_budget_claims(mut self, mut names: Vec<Box<str>>) -> Self {
        names.sort();
        names.dedup();
        self.budget_claims = names.into_boxed_slice();
        self
    }

    /// Each trusted issuer with its number of usable keys (0 when unavailable), sorted.
    pub fn issuer_key_counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<_> = self
            .issuers
            .values()
            .map(|issuer| {
                let usable = issuer.keys.current().map_or(0, |keys| keys.len());
                (issuer.issuer.to_string(), usable)
            })
            .collect();
        counts.sort();
        counts
    }

    /// Issuers whose keys are fetched over HTTPS.
    pub fn remote_issuers(&self) -> Vec<Arc<RemoteKeys>> {
        self.issuers
            .values()
            .filter_map(|issuer| match &issuer.keys {
                IssuerKeys::Remote(remote) => Some(Arc::clone(remote)),
                IssuerKeys::Static(_) => None,
            })
            .collect()
    }

    /// The remote key set of the (unverified) issuer of `token`, for an unknown-kid refetch.
    pub fn remote_issuer_of(&self, token: &str) -> Option<Arc<RemoteKeys>> {
        let payload = token.split('.').nth(1)?;
        let bytes = decode_part(payload).ok()?;
        let claims = json_object(&bytes).ok()?;
        let issuer = self.issuers.get(claims.get("iss")?.as_str()?)?;
        match &issuer.keys {
            IssuerKeys::Remote(remote) => Some(Arc::clone(remote)),
            IssuerKeys::Static(_) => None,
        }
    }

    /// Whether the key that verified `token` is still published, unchanged, by its issuer.
    pub fn key_still_published(&self, token: &VerifiedToken) -> bool {
        let Some(verified_by) = token.verified_by() else {
            return false;
        };
        self.issuers
            .get(&*verified_by.issuer)
            .and_then(|issuer| issuer.keys.current())
            .and_then(|keys| {
                keys.get(&verified_by.kid)
                    .map(|key| key.fingerprint() == verified_by.fingerprint)
            })
            .unwrap_or(false)
    }

    /// The clock skew tolerated on `exp`, `nbf` and `iat` (seconds).
    pub fn leeway(&self) -> i64 {
        self.leeway
    }

    /// Whether a token verified earlier is still within its lifetime at `now`.
    pub fn is_unexpired(&self, token: &VerifiedToken, now: i64) -> bool {
        now < token.expires_at().saturating_add(self.leeway)
    }

    /// Seconds of life a verified token has left at `now` (0 when expired).
    pub fn remaining_lifetime(&self, token: &VerifiedToken, now: i64) -> u64 {
        let remaining = token
            .expires_at()
            .saturating_add(self.leeway)
            .saturating_sub(now);
        u64::try_from(remaining).unwrap_or(0)
    }

    /// Verifies `token` at time `now` (see the module docs for the checks and their order).
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, Denial> {
        use DenyReason::*;
        if token.len() > self.max_token_bytes {
            return Err(denial(TokenTooLarge, "the token is larger than allowed"));
        }
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload_part), Some(signature_part), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(denial(TokenMalformed, "the token is not a compact JWS"));
        };
        if header_part.is_empty() || payload_part.is_empty() || signature_part.is_empty() {
            return Err(denial(TokenMalformed, "the token has an empty part"));
        }
        let header_bytes = decode_part(header_part)?;
        let header = json_object(&header_bytes)?;
        if header.contains_key("crit") {
            return Err(denial(
                TokenCritUnsupported,
                "the token requires header extensions this server does not implement",
            ));
        }
        check_typ(&header, self.require_access_token_typ)?;
        let Some(Json::String(algorithm_name)) = header.get("alg") else {
            return Err(denial(TokenMalformed, "the token header has no alg"));
        };
        let claims_bytes = decode_part(payload_part)?;
        let claims = json_object(&claims_bytes)?;

        let issuer = claims
            .get("iss")
            .and_then(Json::as_str)
            .and_then(|iss| self.issuers.get(iss))
            .ok_or_else(|| denial(TokenIssuerUnknown, "the token's issuer is not trusted"))?;
        let algorithm = parse_algorithm(algorithm_name)
            .filter(|alg| issuer.algorithms.contains(alg))
            .ok_or_else(|| denial(TokenAlgDenied, "the token's alg is not allowed"))?;
        let Some(Json::String(kid)) = header.get("kid") else {
            return Err(denial(TokenKeyUnknown, "the token header has no kid"));
        };
        let keys = issuer.keys.current().ok_or_else(|| {
            denial(
                IssuerKeysUnavailable,
                "the issuer's keys are unavailable (not fetched, or too stale)",
            )
        })?;
        let key = keys
            .get(kid)
            .ok_or_else(|| denial(TokenKeyUnknown, "the token's kid is not a known key"))?;
        if !key.accepts(algorithm) {
            return Err(denial(
                TokenAlgDenied,
                "the token's alg does not fit its key",
            ));
        }
        let signed_len = header_part.len() + 1 + payload_part.len();
        let signed = &token.as_bytes()[..signed_len];
        // With the key parsed once: a key has one per algorithm it accepts (a key set refuses
        // a key it cannot parse), and none means no verification, so no allow. The signature
        // is decoded as jsonwebtoken decodes it (unpadded base64url, canonical trailing bits).
        let verified = match key.verifier(algorithm) {
            Some(parsed) => URL_SAFE_NO_PAD
                .decode(signature_part)
                .map(|signature| parsed.verify_sig(signed, &signature).is_ok())
                .map_err(|_| ()),
            None => Err(()),
        };
        match verified {
            Ok(true) => {}
            Ok(false) => {
                return Err(denial(
                    TokenSignatureInvalid,
                    "the token's signature does not verify",
                ));
            }
            Err(_) => {
                return Err(denial(
                    TokenSignatureInvalid,
                    "the token's signature is not well-formed",
                ));
            }
        }

        let expires_at = match numeric_date(&claims, "exp") {
            Ok(Some(exp)) => exp,
            _ => return Err(denial(TokenExpired, "the token has no numeric exp")),
        };
        if now >= expires_at.saturating_add(self.leeway) {
            return Err(denial(TokenExpired, "the token has expired"));
        }
        for name in ["nbf", "iat"] {
            match numeric_date(&claims, name) {
                Ok(None) => {}
                Ok(Some(start)) if start <= now.saturating_add(self.leeway) => {}
                Ok(Some(_)) => {
                    return Err(denial(TokenNotYetValid, "the token is not valid yet"));
                }
                Err(()) => {
                    return Err(denial(
                        TokenNotYetValid,
                        "the token's nbf or iat is not numeric",
                    ));
                }
            }
        }
        let audience_matches = match claims.get("aud") {
            Some(Json::String(audience)) => **audience == *self.audience,
            // RFC 7519 §4.1.3: an array of StringOrURI. Another element is not an audience
            // we could skip; the claim is malformed.
            Some(Json::Array(audiences)) if audiences.iter().any(|a| !a.is_string()) => {
                return Err(denial(
                    TokenMalformed,
                    "the token's aud array holds a value that is not a string",
                ));
            }
            Some(Json::Array(audiences)) => audiences
                .iter()
                .any(|audience| audience.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !audience_matches {
            return Err(denial(
                TokenAudienceMismatch,
                "the token's audience does not name this workload",
            ));
        }
        let mut verified = claims::extract(
            &claims,
            expires_at,
            claims::ConfiguredClaims {
                branch: self.branch_claim.as_deref(),
                budgets: &self.budget_claims,
            },
        )?;
        verified.set_verified_by(key.identity(&issuer.issuer));
        verified.share_parts(&self.parts);
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DenyReason::*;

    #[test]
    fn bearer_header_cases() {
        let cases: &[(&str, &[&str], Result<&str, DenyReason>)] = &[
            ("plain", &["Bearer abc.def.ghi"], Ok("abc.def.ghi")),
            ("scheme case-insensitive", &["bEaReR abc"], Ok("abc")),
            ("extra spaces", &["  Bearer   abc  "], Ok("abc")),
            ("no header", &[], Err(TokenMissing)),
            ("basic scheme", &["Basic dXNlcjpwYXNz"], Err(TokenMissing)),
            ("empty header", &[""], Err(AuthorizationInvalid)),
            ("empty bearer", &["Bearer"], Err(AuthorizationInvalid)),
            (
                "empty bearer with space",
                &["Bearer   "],
                Err(AuthorizationInvalid),
            ),
            (
                "two headers",
                &["Bearer a", "Bearer b"],
                Err(AuthorizationInvalid),
            ),
            (
                "comma-joined",
                &["Bearer a, Bearer b"],
                Err(AuthorizationInvalid),
            ),
            ("two tokens", &["Bearer a b"], Err(AuthorizationInvalid)),
            ("bad character", &["Bearer a\"b"], Err(AuthorizationInvalid)),
            ("tab separator", &["Bearer\tabc"], Err(AuthorizationInvalid)),
            ("other scheme name", &["Bearerx abc"], Err(TokenMissing)),
        ];
        for (name, headers, expected) in cases {
            let got = bearer_token(headers).map_err(|denial| denial.reason);
            assert_eq!(&got, expected, "case {name}");
        }
    }
}
