//! Execution branches: one sub-agent's delegation path inside one workflow session.
//!
//! A token's branch is the value of `tokens.branch_claim` when it carries that claim; else it
//! is derived from the issuer, the session (`sid`, else `jti`), the subject and the actor
//! chain, first delegate to current actor. A derived branch is written `b-` and 22 base64url
//! characters: the first 128 bits of the SHA-256 of a version tag and those parts, each
//! length-prefixed so no two different paths meet.
//!
//! Revocation by branch and the audit record use this one definition (budgets and dynamic
//! metadata will, issue #17). A token's *lineage* is the derived branch of every prefix of its
//! path: the session's root (no actor yet: a direct call of the user), the first delegate's
//! branch, … the full path's; then the claim's branch when it carries one. A token is cut when
//! any branch of its lineage is revoked, so revoking an agent's branch stops every delegation
//! it made inside that session too, whether or not the tokens also carry a branch claim.
//! Revoking the root (the branch of a direct call) cuts the whole session for that subject.

use crate::decision::token::VerifiedToken;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The session a token belongs to: `sid`, else `jti`; `None` when it has neither.
pub fn session(token: &VerifiedToken) -> Option<&str> {
    token.sid().or_else(|| token.jti())
}

/// The length of a derived branch id: `b-` and 22 base64url characters.
pub const DERIVED_ID_LEN: usize = 24;

/// A token's branch lineage (see the module docs), root first and the token's own branch last.
///
/// Kept with every cached token, so it is one allocation: the derived ids back to back (each
/// [`DERIVED_ID_LEN`] ASCII bytes), then the claim's branch when the token names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    text: Box<str>,
    /// How many derived ids lead `text`; at least one (the session's root).
    derived: u32,
}

impl Lineage {
    /// The branches, root first.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let derived_bytes = self.derived as usize * DERIVED_ID_LEN;
        let (derived, named) = self.text.split_at(derived_bytes);
        // The derived part is ASCII, so every id boundary is a char boundary.
        (0..self.derived as usize)
            .map(move |index| &derived[index * DERIVED_ID_LEN..(index + 1) * DERIVED_ID_LEN])
            .chain((!named.is_empty()).then_some(named))
    }

    /// How many branches: one per prefix of the path, plus the claim's when named.
    pub fn len(&self) -> usize {
        self.derived as usize
            + usize::from(self.text.len() > self.derived as usize * DERIVED_ID_LEN)
    }

    /// Never: a lineage holds at least the session's root.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session's root: the branch of a direct call of the user.
    pub fn root(&self) -> &str {
        &self.text[..DERIVED_ID_LEN.min(self.text.len())]
    }

    /// The token's own branch: the claim's when it names one, else the full path's.
    pub fn own(&self) -> &str {
        let derived_bytes = self.derived as usize * DERIVED_ID_LEN;
        if self.text.len() > derived_bytes {
            &self.text[derived_bytes..]
        } else {
            &self.text[derived_bytes.saturating_sub(DERIVED_ID_LEN)..]
        }
    }

    /// Heap bytes held (one allocation).
    pub fn heap_bytes(&self) -> usize {
        self.text.len()
    }
}

/// Appends the derived branch id of the digest of the path so far.
fn push_id(text: &mut String, path: &aws_lc_rs::digest::Context) {
    let digest = path.clone().finish();
    URL_SAFE_NO_PAD.encode_string(&digest.as_ref()[..16], {
        text.push_str("b-");
        text
    });
}

/// The token's branch lineage, root first and the token's own branch last (see the module
/// docs): the derived branch of every prefix of its path, hashed once along the path, then
/// the claim's branch when it names one (so revoking either form cuts the token). Computed
/// once per verified token and kept with it.
pub fn lineage(token: &VerifiedToken) -> Lineage {
    let mut path = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    fn part(path: &mut aws_lc_rs::digest::Context, bytes: &[u8]) {
        path.update(&(bytes.len() as u64).to_be_bytes());
        path.update(bytes);
    }
    /// One part `tag` followed by `value`: the same bytes as the part of both joined.
    fn part_tagged(path: &mut aws_lc_rs::digest::Context, tag: &[u8], value: &str) {
        path.update(&((tag.len() + value.len()) as u64).to_be_bytes());
        path.update(tag);
        path.update(value.as_bytes());
    }
    // A version, so that a later definition cannot meet this one's ids; the issuer, so that
    // two issuers' sessions never share a branch.
    part(&mut path, DERIVATION.as_bytes());
    part(
        &mut path,
        token.verified_by().map_or("", |key| &key.issuer).as_bytes(),
    );
    // Which of sid and jti named the session is part of it: a sid and a jti that happen to
    // be equal are different sessions.
    match (token.sid(), token.jti()) {
        (Some(sid), _) => part_tagged(&mut path, b"sid:", sid),
        (None, Some(jti)) => part_tagged(&mut path, b"jti:", jti),
        (None, None) => part(&mut path, b"none"),
    }
    part(&mut path, token.subject().as_bytes());
    let derived = token.actors().len() + 1;
    let named = token.branch_claim().unwrap_or("");
    let mut text = String::with_capacity(derived * DERIVED_ID_LEN + named.len());
    push_id(&mut text, &path);
    // `actors()` is outermost (current) first; the path runs from the first delegate.
    for actor in token.actors().iter().rev() {
        // A member without a string `sub` is denied by the chain rules; it still takes a
        // place (tagged apart from any subject) so the path keeps its length.
        match actor.subject() {
            Some(subject) => {
                path.update(b"s");
                part(&mut path, subject.as_bytes());
            }
            None => path.update(b"m"),
        }
        push_id(&mut text, &path);
    }
    text.push_str(named);
    Lineage {
        text: text.into_boxed_str(),
        derived: u32::try_from(derived).unwrap_or(u32::MAX),
    }
}

/// Names this derivation; part of every derived id.
const DERIVATION: &str = "actguard-branch-v1";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: serde_json::Value) -> VerifiedToken {
        VerifiedToken::from_claims_for_tests(&claims)
    }

    /// Claims of `sub` in session `sid` through `actors` (path order, the current last).
    fn claims(sub: &str, sid: &str, actors: &[&str]) -> serde_json::Value {
        let mut claims = crate::devkit::delegated_claims("i", sub, "a", "", actors, 0, 60);
        claims["sid"] = json!(sid);
        claims
    }

    fn delegated(sid: &str, actors: &[&str]) -> VerifiedToken {
        token(claims("user:alice", sid, actors))
    }

    /// The lineage of `token` as owned ids, root first.
    fn ids(token: &VerifiedToken) -> Vec<String> {
        lineage(token).iter().map(str::to_owned).collect()
    }

    #[test]
    fn siblings_in_one_session_have_different_branches_and_share_the_root() {
        let a = delegated("s1", &["orchestrator", "researcher-a"]);
        let b = delegated("s1", &["orchestrator", "researcher-b"]);
        let (a, b) = (ids(&a), ids(&b));
        assert_eq!(a.len(), 3);
        assert_ne!(a.last(), b.last(), "siblings are different branches");
        assert_eq!(
            a[..2],
            b[..2],
            "they share the session root and the orchestrator"
        );
        assert!(a.iter().all(|id| id.len() == 24 && id.starts_with("b-")));
    }

    #[test]
    fn derived_ids_are_the_documented_digest_and_do_not_change_between_versions() {
        // Revocations, budgets and audit logs name these ids, across sidecars and upgrades.
        // Expected values computed outside Rust from the module docs' definition (Python
        // hashlib: SHA-256 over length-prefixed parts, first 16 bytes, base64url).
        assert_eq!(
            ids(&delegated("s1", &["orchestrator"])),
            ["b-08KU3_L15lQjabAeiUf32A", "b-_ZbwWXB5B6hgaIIV47toug"]
        );
        let one = lineage(&delegated("s1", &["orchestrator"]));
        assert_eq!(one.root(), "b-08KU3_L15lQjabAeiUf32A");
        assert_eq!(one.own(), "b-_ZbwWXB5B6hgaIIV47toug");
        assert_eq!(one.len(), 2);
    }

    #[test]
    fn a_delegation_extends_its_parents_lineage() {
        let parent = ids(&delegated("s1", &["orchestrator", "researcher"]));
        let child = ids(&delegated("s1", &["orchestrator", "researcher", "fetcher"]));
        assert_eq!(child[..parent.len()], parent[..]);
        assert_eq!(child.len(), parent.len() + 1);
    }

    #[test]
    fn session_subject_and_the_kind_of_session_claim_are_part_of_the_branch() {
        let base = ids(&delegated("s1", &["orchestrator"]));
        let other_session = ids(&delegated("s2", &["orchestrator"]));
        let other_subject = ids(&token(claims("user:bob", "s1", &["orchestrator"])));
        let mut by_jti = claims("user:alice", "s1", &["orchestrator"]);
        by_jti.as_object_mut().unwrap().remove("sid");
        by_jti["jti"] = json!("s1");
        let jti_session = ids(&token(by_jti));
        for other in [other_session, other_subject, jti_session] {
            assert!(other.iter().all(|id| !base.contains(id)));
        }
        // The same parts give the same branch: it is stable across tokens and sidecars.
        assert_eq!(base, ids(&delegated("s1", &["orchestrator"])));
    }

    #[test]
    fn a_branch_claim_names_the_branch_and_keeps_the_derived_lineage() {
        let mut claims = claims("user:alice", "s1", &["a", "b"]);
        claims["execution_branch_id"] = json!("br-7");
        let named =
            VerifiedToken::from_claims_with_branch_claim_for_tests(&claims, "execution_branch_id");
        let named_lineage = ids(&named);
        assert_eq!(named_lineage.last().map(String::as_str), Some("br-7"));
        assert_eq!(named.branch(), "br-7");
        // The derived lineage is there too: revoking the derived branch still cuts it.
        claims
            .as_object_mut()
            .unwrap()
            .remove("execution_branch_id");
        let unnamed = VerifiedToken::from_claims_for_tests(&claims);
        assert_eq!(named_lineage[..named_lineage.len() - 1], ids(&unnamed)[..]);
    }
}
