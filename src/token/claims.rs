//! The claims of a token whose signature, issuer, lifetime and audience have been verified.
//!
//! A [`VerifiedToken`] is built only inside [`super::Verifier::verify`]; its fields are private
//! and read through accessors, so code that holds one knows the claims are authentic. It does
//! not say whether the token is *bound to the caller*, nor whether its chain is acceptable:
//! that is [`crate::policy`]'s job, run for every request, because the same token may arrive
//! from different callers.

use crate::reason::{Denial, DenyReason};
use crate::spiffe::SpiffeId;
use serde_json::{Map, Value};
use std::sync::Arc;

/// One entry of the `act` chain. The `sub` is stored once: inside the parsed SPIFFE ID when it
/// is one (cached tokens carry many actors; no second copy of the string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// `act.sub` is a canonical SPIFFE ID.
    Spiffe(SpiffeId),
    /// `act.sub` is some other string.
    Other(String),
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
    Subject(String),
    /// `may_act` present but not an object with a string `sub`: nobody satisfies it.
    Unusable,
}

/// Verified claims. See the module docs for what "verified" covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    subject: String,
    /// `exp` in whole seconds (fractions rounded down: conservative).
    expires_at: i64,
    scopes: Vec<String>,
    /// Outermost (current actor) first, as nested in the token.
    actors: Vec<Actor>,
    client_id: Option<String>,
    authorized_party: Option<String>,
    may_act: Option<MayAct>,
    jti: Option<String>,
    sid: Option<String>,
    /// The key that verified it: issuer, kid (shared with the key set, not copied per token)
    /// and the key's fingerprint.
    verified_by: Option<(Arc<str>, Arc<str>, [u8; 32])>,
}

impl VerifiedToken {
    /// Issuer, kid and key fingerprint of the key that verified the signature.
    pub fn verified_by(&self) -> Option<(&str, &str, [u8; 32])> {
        self.verified_by
            .as_ref()
            .map(|(issuer, kid, fingerprint)| (&**issuer, &**kid, *fingerprint))
    }

    pub(super) fn set_verified_by(
        &mut self,
        issuer: Arc<str>,
        kid: Arc<str>,
        fingerprint: [u8; 32],
    ) {
        self.verified_by = Some((issuer, kid, fingerprint));
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
    /// Actors, outermost (current actor) first; empty for a token without `act`.
    pub fn actors(&self) -> &[Actor] {
        &self.actors
    }
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
    pub fn authorized_party(&self) -> Option<&str> {
        self.authorized_party.as_deref()
    }
    pub fn may_act(&self) -> Option<&MayAct> {
        self.may_act.as_ref()
    }
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// Rough heap footprint, for the cache's byte budget.
    pub fn approximate_size(&self) -> usize {
        let strings = [
            &self.client_id,
            &self.authorized_party,
            &self.jti,
            &self.sid,
        ]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>();
        let actors: usize = self
            .actors
            .iter()
            .map(|actor| actor.subject().map_or(0, str::len) + 48)
            .sum();
        let scopes: usize = self.scopes.iter().map(|scope| scope.len() + 24).sum();
        std::mem::size_of::<Self>() + self.subject.len() + strings + actors + scopes
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
    claims: &Map<String, Value>,
    name: &str,
    description: &'static str,
) -> Result<Option<String>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(malformed(description)),
    }
}

fn header_safe_string(
    claims: &Map<String, Value>,
    name: &str,
    description: &'static str,
) -> Result<Option<String>, Denial> {
    let value = optional_string(claims, name, description)?;
    match value {
        Some(text) if !header_safe(&text) => Err(malformed(description)),
        other => Ok(other),
    }
}

/// Walks the nested `act` members, outermost first. Nesting is already bounded by the
/// strict JSON parser, so this loop is bounded too.
fn actors_of(claims: &Map<String, Value>) -> Vec<Actor> {
    let mut actors = Vec::new();
    let mut next = claims.get("act");
    while let Some(member) = next {
        let object = member.as_object();
        let subject = object
            .and_then(|object| object.get("sub"))
            .and_then(Value::as_str);
        actors.push(match subject {
            None => Actor::Missing,
            Some(subject) => SpiffeId::parse(subject)
                .map_or_else(|_| Actor::Other(subject.to_owned()), Actor::Spiffe),
        });
        next = object.and_then(|object| object.get("act"));
    }
    actors
}

fn may_act_of(claims: &Map<String, Value>) -> Option<MayAct> {
    let member = claims.get("may_act")?;
    Some(match member.get("sub").and_then(Value::as_str) {
        Some(subject) if member.is_object() => MayAct::Subject(subject.to_owned()),
        _ => MayAct::Unusable,
    })
}

/// Extracts the claims the policy needs. Lifetime, issuer and audience were checked by the
/// caller; `expires_at` is passed in because it was already parsed there.
pub(super) fn extract(
    claims: &Map<String, Value>,
    expires_at: i64,
) -> Result<VerifiedToken, Denial> {
    let subject = match claims.get("sub") {
        Some(Value::String(subject)) if !subject.is_empty() && header_safe(subject) => {
            subject.clone()
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
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(VerifiedToken {
        subject,
        expires_at,
        scopes,
        actors: actors_of(claims),
        client_id: optional_string(claims, "client_id", "the client_id claim is not a string")?,
        authorized_party: optional_string(claims, "azp", "the azp claim is not a string")?,
        may_act: may_act_of(claims),
        verified_by: None,
        jti: header_safe_string(
            claims,
            "jti",
            "the jti claim is not a string without control characters",
        )?,
        sid: header_safe_string(
            claims,
            "sid",
            "the sid claim is not a string without control characters",
        )?,
    })
}

#[cfg(test)]
impl VerifiedToken {
    /// Builds verified claims directly from JSON, for policy unit tests that need no signature.
    pub fn from_claims_for_tests(claims: &Value) -> Self {
        let map = claims.as_object().cloned().unwrap_or_default();
        extract(&map, i64::MAX).expect("test claims are well-formed")
    }
}
