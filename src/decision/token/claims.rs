//! The claims of a token whose signature, issuer, lifetime and audience have been verified.
//!
//! A [`VerifiedToken`] is built only inside [`super::Verifier::verify`]; its fields are private
//! and read through accessors, so code that holds one knows the claims are authentic. It does
//! not say whether the token is *bound to the caller*, nor whether its chain is acceptable:
//! that is [`crate::decision::policy`]'s job, run for every request, because the same token may arrive
//! from different callers.

use super::json::{Json, Object};
use crate::decision::reason::{Denial, DenyReason};
use crate::decision::spiffe::SpiffeId;
use std::sync::{Arc, OnceLock};

/// One entry of the `act` chain. The `sub` is stored once: inside the parsed SPIFFE ID when it
/// is one (cached tokens carry many actors; no second copy of the string).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// `act.sub` is a canonical SPIFFE ID.
    Spiffe(SpiffeId),
    /// `act.sub` is some other string.
    Other(Box<str>),
    /// The `act` member is not an object, or has no string `sub`.
    Missing,
}

impl Actor {
    /// `act.sub` as written.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Self::Spiffe(id) => Some(id.as_str()),
            Self::Other(subject) => Some(subject),
            Self::Missing => None,
        }
    }

    /// `act.sub` as a canonical SPIFFE ID, when it is one.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        match self {
            Self::Spiffe(id) => Some(id),
            _ => None,
        }
    }
}

/// What `may_act` says, when present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MayAct {
    /// `may_act.sub`.
    Subject(Box<str>),
    /// `may_act` present but not an object with a string `sub`: nobody satisfies it.
    Unusable,
}

/// The key that verified a token: its issuer, kid and the JWK's fingerprint. One per key,
/// shared by every token that key verified (cached tokens hold a pointer, not a copy).
#[derive(Debug, PartialEq, Eq)]
pub struct KeyIdentity {
    pub issuer: Arc<str>,
    pub kid: Arc<str>,
    pub fingerprint: [u8; 32],
}

/// Claims most tokens do not carry, kept out of line so a cached token without them does not
/// pay for four empty fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Uncommon {
    client_id: Option<Box<str>>,
    authorized_party: Option<Box<str>>,
    may_act: Option<MayAct>,
    sid: Option<Box<str>>,
    /// The `tokens.branch_claim` value, when configured and present.
    branch: Option<Box<str>>,
    /// RFC 9396 `authorization_details`, when present.
    authorization_details: Option<super::details::AuthorizationDetails>,
    /// The routes' budget claims (`routes[].budget.claim`) the token carries, by name.
    budgets: Option<BudgetClaims>,
}

/// Budget claims by name.
type BudgetClaims = Box<[(Box<str>, u64)]>;

/// The claims whose names the configuration chooses.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ConfiguredClaims<'a> {
    /// `tokens.branch_claim`.
    pub branch: Option<&'a str>,
    /// Every `routes[].budget.claim`, each once.
    pub budgets: &'a [Box<str>],
}

/// Verified claims. See the module docs for what "verified" covers.
///
/// Laid out for the cache, which holds up to `cache.max_entries` of these: boxed strings and
/// slices (no spare capacity), the rare claims behind one optional pointer, and the verifying
/// key shared rather than copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    subject: Box<str>,
    /// `exp` in whole seconds (fractions rounded down: conservative).
    expires_at: i64,
    /// Shared with other verified tokens that have the same list ([`super::shared`]).
    scopes: Arc<[Box<str>]>,
    /// Outermost (current actor) first, as nested in the token. Shared with other verified
    /// tokens that have the same chain ([`super::shared`]).
    actors: Arc<[Actor]>,
    jti: Option<Box<str>>,
    uncommon: Option<Box<Uncommon>>,
    verified_by: Option<Arc<KeyIdentity>>,
    /// [`crate::decision::branch::lineage`], computed on first use and kept with the token.
    lineage: OnceLock<crate::decision::branch::Lineage>,
}

impl VerifiedToken {
    /// The key that verified the signature.
    pub fn verified_by(&self) -> Option<&KeyIdentity> {
        self.verified_by.as_deref()
    }

    pub(super) fn set_verified_by(&mut self, key: Arc<KeyIdentity>) {
        self.verified_by = Some(key);
    }

    /// Replaces the chain and the scope list by equal ones other tokens already hold.
    pub(super) fn share_parts(&mut self, parts: &super::shared::SharedParts) {
        self.actors = parts.chain(std::mem::take(&mut self.actors));
        self.scopes = parts.scopes(std::mem::take(&mut self.scopes));
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
    pub fn scopes(&self) -> &[Box<str>] {
        &self.scopes
    }
    /// Actors, outermost (current actor) first; empty for a token without `act`.
    pub fn actors(&self) -> &[Actor] {
        &self.actors
    }
    pub fn client_id(&self) -> Option<&str> {
        self.uncommon.as_ref()?.client_id.as_deref()
    }
    pub fn authorized_party(&self) -> Option<&str> {
        self.uncommon.as_ref()?.authorized_party.as_deref()
    }
    pub fn may_act(&self) -> Option<&MayAct> {
        self.uncommon.as_ref()?.may_act.as_ref()
    }
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }
    pub fn sid(&self) -> Option<&str> {
        self.uncommon.as_ref()?.sid.as_deref()
    }
    /// The value of the configured `tokens.branch_claim`, when the token carries it.
    /// RFC 9396 `authorization_details`, when the token carries them.
    pub fn authorization_details(&self) -> Option<&super::details::AuthorizationDetails> {
        self.uncommon
            .as_ref()
            .and_then(|extra| extra.authorization_details.as_ref())
    }

    pub fn branch_claim(&self) -> Option<&str> {
        self.uncommon.as_ref()?.branch.as_deref()
    }
    /// The value of the budget claim `name` (a `routes[].budget.claim`), when the token
    /// carries it.
    pub fn budget_claim(&self, name: &str) -> Option<u64> {
        self.uncommon
            .as_ref()?
            .budgets
            .as_ref()?
            .iter()
            .find(|(claim, _)| **claim == *name)
            .map(|(_, value)| *value)
    }
    /// The branch lineage ([`crate::decision::branch`]), root first, this token's branch last.
    pub fn branch_lineage(&self) -> &crate::decision::branch::Lineage {
        self.lineage
            .get_or_init(|| crate::decision::branch::lineage(self))
    }
    /// This token's execution branch ([`crate::decision::branch`]).
    pub fn branch(&self) -> &str {
        self.branch_lineage().own()
    }

    /// Rough heap footprint, for the cache's byte budget: the struct, its out-of-line parts,
    /// and 16 bytes of allocator overhead per allocation.
    pub fn approximate_size(&self) -> usize {
        const PER_ALLOCATION: usize = 16;
        let boxed = |text: &str| text.len() + PER_ALLOCATION;
        let uncommon = self.uncommon.as_ref().map_or(0, |extra| {
            std::mem::size_of::<Uncommon>()
                + PER_ALLOCATION
                + [
                    &extra.client_id,
                    &extra.authorized_party,
                    &extra.sid,
                    &extra.branch,
                ]
                .into_iter()
                .flatten()
                .map(|text| boxed(text))
                .sum::<usize>()
                + match &extra.may_act {
                    Some(MayAct::Subject(subject)) => boxed(subject),
                    _ => 0,
                }
                + extra
                    .authorization_details
                    .as_ref()
                    .map_or(0, super::details::AuthorizationDetails::approximate_size)
                + extra.budgets.as_ref().map_or(0, |budgets| {
                    PER_ALLOCATION
                        + budgets
                            .iter()
                            .map(|(name, _)| std::mem::size_of::<(Box<str>, u64)>() + boxed(name))
                            .sum::<usize>()
                })
        });
        let actors: usize = self
            .actors
            .iter()
            .map(|actor| std::mem::size_of::<Actor>() + actor.subject().map_or(0, &boxed))
            .sum();
        let scopes: usize = self
            .scopes
            .iter()
            .map(|scope| std::mem::size_of::<Box<str>>() + boxed(scope))
            .sum();
        // A lineage, once computed, is one allocation of its branches back to back.
        let lineage = self
            .lineage
            .get()
            .map_or(0, |lineage| PER_ALLOCATION + lineage.heap_bytes());
        std::mem::size_of::<Self>()
            + lineage
            + PER_ALLOCATION
            + boxed(&self.subject)
            + self.jti.as_deref().map_or(0, boxed)
            + uncommon
            + actors
            + PER_ALLOCATION
            + scopes
            + PER_ALLOCATION
    }
}

/// Claims that end up in request headers must not carry control characters (CR/LF would let a
/// token inject headers; others make Envoy refuse the mutation).
fn header_safe(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

fn malformed(description: &'static str) -> Denial {
    Denial::new(DenyReason::TokenMalformed, description)
}

fn optional_string(
    claims: &Object<'_>,
    name: &str,
    description: &'static str,
) -> Result<Option<Box<str>>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Json::String(value)) => Ok(Some((**value).into())),
        Some(_) => Err(malformed(description)),
    }
}

fn header_safe_string(
    claims: &Object<'_>,
    name: &str,
    description: &'static str,
) -> Result<Option<Box<str>>, Denial> {
    let value = optional_string(claims, name, description)?;
    match value {
        Some(text) if !header_safe(&text) => Err(malformed(description)),
        other => Ok(other),
    }
}

/// Walks the nested `act` members, outermost first. Nesting is already bounded by the
/// strict JSON parser, so this loop is bounded too.
fn actors_of(claims: &Object<'_>) -> Arc<[Actor]> {
    let mut actors = Vec::new();
    let mut next = claims.get("act");
    while let Some(member) = next {
        let object = member.as_object();
        let subject = object
            .and_then(|object| object.get("sub"))
            .and_then(Json::as_str);
        actors.push(match subject {
            None => Actor::Missing,
            Some(subject) => SpiffeId::parse(subject)
                .map_or_else(|_| Actor::Other(subject.into()), Actor::Spiffe),
        });
        next = object.and_then(|object| object.get("act"));
    }
    actors.into()
}

fn may_act_of(claims: &Object<'_>) -> Option<MayAct> {
    let member = claims.get("may_act")?;
    Some(match member.get("sub").and_then(Json::as_str) {
        Some(subject) if member.is_object() => MayAct::Subject(subject.into()),
        _ => MayAct::Unusable,
    })
}

/// Extracts the claims the policy needs. Lifetime, issuer and audience were checked by the
/// caller; `expires_at` is passed in because it was already parsed there.
pub(super) fn extract(
    claims: &Object<'_>,
    expires_at: i64,
    configured: ConfiguredClaims<'_>,
) -> Result<VerifiedToken, Denial> {
    let subject = match claims.get("sub") {
        Some(Json::String(subject)) if !subject.is_empty() && header_safe(subject) => {
            (**subject).into()
        }
        _ => {
            return Err(malformed(
                "the sub claim is missing, empty, or has control characters",
            ));
        }
    };
    let scopes = optional_string(claims, "scope", "the scope claim is not a string")?
        .map(|scope| {
            scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(Box::from)
                .collect()
        })
        .unwrap_or_default();
    let uncommon = Uncommon {
        client_id: optional_string(claims, "client_id", "the client_id claim is not a string")?,
        authorized_party: optional_string(claims, "azp", "the azp claim is not a string")?,
        may_act: may_act_of(claims),
        sid: header_safe_string(
            claims,
            "sid",
            "the sid claim is not a string without control characters",
        )?,
        branch: match configured.branch {
            None => None,
            Some(name) => branch_of(claims, name)?,
        },
        authorization_details: super::details::AuthorizationDetails::from_claims(claims)?,
        budgets: budgets_of(claims, configured.budgets)?,
    };
    Ok(VerifiedToken {
        subject,
        expires_at,
        scopes,
        actors: actors_of(claims),
        jti: header_safe_string(
            claims,
            "jti",
            "the jti claim is not a string without control characters",
        )?,
        uncommon: (uncommon != Uncommon::default()).then(|| Box::new(uncommon)),
        verified_by: None,
        lineage: OnceLock::new(),
    })
}

/// Longest branch claim accepted: a branch is an identifier, not a document.
pub const MAX_BRANCH_CLAIM_BYTES: usize = 256;

/// The configured branch claim: absent is fine (the branch is derived); anything but a
/// non-empty string of at most [`MAX_BRANCH_CLAIM_BYTES`] without control characters is a
/// malformed token, never a silently derived branch.
fn branch_of(claims: &Object<'_>, name: &str) -> Result<Option<Box<str>>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Json::String(value))
            if !value.is_empty() && value.len() <= MAX_BRANCH_CLAIM_BYTES && header_safe(value) =>
        {
            Ok(Some((**value).into()))
        }
        Some(_) => Err(malformed(
            "the branch claim is not a non-empty string of at most 256 bytes without control characters",
        )),
    }
}

/// The configured budget claims the token carries. Each must be a non-negative integer (a
/// JSON number without fraction or exponent that fits 64 bits): anything else is a malformed
/// token, never "no budget".
fn budgets_of(claims: &Object<'_>, names: &[Box<str>]) -> Result<Option<BudgetClaims>, Denial> {
    let mut found = Vec::new();
    for name in names {
        match claims.get(name) {
            None => {}
            Some(Json::Number(number)) if number.as_u64().is_some() => {
                found.push((name.clone(), number.as_u64().unwrap_or_default()));
            }
            Some(_) => {
                return Err(malformed("a budget claim is not a non-negative integer"));
            }
        }
    }
    Ok((!found.is_empty()).then(|| found.into_boxed_slice()))
}

#[cfg(feature = "fuzzing")]
impl VerifiedToken {
    /// The claims a verified token would carry, without a signature: for the claims fuzz target.
    pub fn from_claims_for_fuzzing(claims: &Object<'_>, expires_at: i64) -> Result<Self, Denial> {
        extract(
            claims,
            expires_at,
            ConfiguredClaims {
                branch: Some("execution_branch_id"),
                budgets: &[],
            },
        )
    }
}

/// The members of `claims` (none when it is not an object), for tests.
#[cfg(test)]
fn test_object(claims: &serde_json::Value) -> Object<'static> {
    match Json::from_value(claims) {
        Json::Object(members) => members,
        _ => Object::default(),
    }
}

#[cfg(test)]
impl VerifiedToken {
    /// Builds verified claims directly from JSON, for policy unit tests that need no signature.
    pub fn from_claims_for_tests(claims: &serde_json::Value) -> Self {
        let map = test_object(claims);
        extract(&map, i64::MAX, ConfiguredClaims::default()).expect("test claims are well-formed")
    }

    /// As [`Self::from_claims_for_tests`], with `tokens.branch_claim` set to `claim`.
    pub fn from_claims_with_branch_claim_for_tests(
        claims: &serde_json::Value,
        claim: &str,
    ) -> Self {
        let map = test_object(claims);
        extract(
            &map,
            i64::MAX,
            ConfiguredClaims {
                branch: Some(claim),
                budgets: &[],
            },
        )
        .expect("test claims are well-formed")
    }

    /// As [`Self::from_claims_for_tests`], with one route's `budget.claim` set to `claim`.
    pub fn from_claims_with_budget_claim_for_tests(
        claims: &serde_json::Value,
        claim: &str,
    ) -> Self {
        let map = test_object(claims);
        extract(
            &map,
            i64::MAX,
            ConfiguredClaims {
                branch: None,
                budgets: &[claim.into()],
            },
        )
        .expect("test claims are well-formed")
    }
}

#[cfg(test)]
mod branch_claim_tests {
    use super::*;
    use serde_json::{Value, json};

    const BRANCH: ConfiguredClaims<'static> = ConfiguredClaims {
        branch: Some("execution_branch_id"),
        budgets: &[],
    };

    #[test]
    fn rule_a_malformed_budget_claim_is_a_malformed_token_never_no_budget() {
        let names: &[Box<str>] = &["budget".into()];
        let configured = ConfiguredClaims {
            branch: None,
            budgets: names,
        };
        let claims = |budget: Value| {
            let mut claims = json!({"sub": "user:alice", "sid": "s1"});
            claims["budget"] = budget;
            test_object(&claims)
        };
        let token = extract(&claims(json!(7)), 0, configured).unwrap();
        assert_eq!(token.budget_claim("budget"), Some(7));
        assert_eq!(
            extract(&claims(json!(0)), 0, configured)
                .unwrap()
                .budget_claim("budget"),
            Some(0)
        );
        for bad in [
            json!(-1),
            json!(7.5),
            json!(7.0),
            json!(1e3),
            json!("7"),
            json!(null),
            json!([7]),
            json!({"units": 7}),
            json!(18446744073709551616.0),
        ] {
            let denied = extract(&claims(bad.clone()), 0, configured);
            assert_eq!(
                denied.map(|_| ()).map_err(|d| d.reason),
                Err(DenyReason::TokenMalformed),
                "{bad}"
            );
        }
        // Absent: the route's own limit applies. Not configured: the claim means nothing.
        let without = extract(&test_object(&json!({"sub": "u"})), 0, configured);
        assert_eq!(without.unwrap().budget_claim("budget"), None);
        let unconfigured = extract(&claims(json!("x")), 0, ConfiguredClaims::default()).unwrap();
        assert_eq!(unconfigured.budget_claim("budget"), None);
    }

    #[test]
    fn rule_a_malformed_branch_claim_is_a_malformed_token_never_a_derived_branch() {
        let claims = |branch: Value| {
            let mut claims = json!({"sub": "user:alice", "sid": "s1"});
            claims["execution_branch_id"] = branch;
            test_object(&claims)
        };
        let named = extract(&claims(json!("br-1")), 0, BRANCH).unwrap();
        assert_eq!(named.branch_claim(), Some("br-1"));
        assert_eq!(named.branch(), "br-1");
        for bad in [
            json!(""),
            json!(7),
            json!(["br-1"]),
            json!(null),
            json!("br\n1"),
            json!("b".repeat(MAX_BRANCH_CLAIM_BYTES + 1)),
        ] {
            let denied = extract(&claims(bad.clone()), 0, BRANCH);
            assert_eq!(
                denied.map(|_| ()).map_err(|d| d.reason),
                Err(DenyReason::TokenMalformed),
                "{bad}"
            );
        }
        // Without the setting the claim means nothing and the branch is derived.
        let unconfigured = extract(&claims(json!(7)), 0, ConfiguredClaims::default()).unwrap();
        assert!(unconfigured.branch().starts_with("b-"));
    }
}
