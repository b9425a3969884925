//! Execution branches: one sub-agent's delegation path inside one workflow session.
//!
//! A token's branch is the value of `tokens.branch_claim` when it carries that claim; else it
//! is derived from the session (`sid`, else `jti`), the subject and the actor chain, first
//! delegate to current actor. A derived branch is written `b-` and 22 base64url characters:
//! the first 128 bits of the SHA-256 of those parts, each length-prefixed so no two
//! different paths meet.
//!
//! Revocation by branch, budgets, the audit record and dynamic metadata all use this one
//! definition. A derived branch's *lineage* is the branch of every prefix of its path: the
//! session's root (no actor yet), the first delegate's branch, … and the token's own. A token
//! is cut when any branch of its lineage is revoked, so revoking an agent's branch stops every
//! delegation it made inside that session too. A branch named by the claim has a lineage of
//! one: the claim is all that is known of it.

use crate::decision::token::VerifiedToken;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The session a token belongs to: `sid`, else `jti`; `None` when it has neither.
pub fn session(token: &VerifiedToken) -> Option<&str> {
    token.sid().or_else(|| token.jti())
}

/// The derived branch of the first `depth` delegates of `token`'s chain.
fn derived(token: &VerifiedToken, depth: usize) -> String {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut part = |bytes: &[u8]| {
        digest.update(&(bytes.len() as u64).to_be_bytes());
        digest.update(bytes);
    };
    // Which of sid and jti named the session is part of it: a sid and a jti that happen to
    // be equal are different sessions.
    match (token.sid(), token.jti()) {
        (Some(sid), _) => part(format!("sid:{sid}").as_bytes()),
        (None, Some(jti)) => part(format!("jti:{jti}").as_bytes()),
        (None, None) => part(b"none"),
    }
    part(token.subject().as_bytes());
    // `actors()` is outermost (current) first; the path runs from the first delegate.
    for actor in token.actors().iter().rev().take(depth) {
        // A member without a string `sub` is denied by the chain rules; it still gets a
        // place of its own here so the path keeps its length.
        match actor.subject() {
            Some(subject) => part(subject.as_bytes()),
            None => part(b"\0missing"),
        }
    }
    let digest = digest.finish();
    format!("b-{}", URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]))
}

/// The token's branch lineage, root first and the token's own branch last (see the module
/// docs). Computed once per verified token and kept with it.
pub fn lineage(token: &VerifiedToken) -> Box<[Box<str>]> {
    if let Some(named) = token.branch_claim() {
        return Box::new([named.into()]);
    }
    (0..=token.actors().len())
        .map(|depth| derived(token, depth).into_boxed_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: serde_json::Value) -> VerifiedToken {
        VerifiedToken::from_claims_for_tests(&claims)
    }

    fn chain(actors: &[&str]) -> serde_json::Value {
        // `actors` in path order (first delegate → current actor); the current is outermost.
        let mut act = serde_json::Value::Null;
        for actor in actors {
            act = if act.is_null() {
                json!({ "sub": actor })
            } else {
                json!({ "sub": actor, "act": act })
            };
        }
        act
    }

    fn delegated(sid: &str, actors: &[&str]) -> VerifiedToken {
        token(json!({"sub": "user:alice", "sid": sid, "act": chain(actors)}))
    }

    #[test]
    fn siblings_in_one_session_have_different_branches_and_share_the_root() {
        let a = delegated("s1", &["orchestrator", "researcher-a"]);
        let b = delegated("s1", &["orchestrator", "researcher-b"]);
        let (a, b) = (lineage(&a), lineage(&b));
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
    fn a_delegation_extends_its_parents_lineage() {
        let parent = lineage(&delegated("s1", &["orchestrator", "researcher"]));
        let child = lineage(&delegated("s1", &["orchestrator", "researcher", "fetcher"]));
        assert_eq!(child[..parent.len()], parent[..]);
        assert_eq!(child.len(), parent.len() + 1);
    }

    #[test]
    fn session_subject_and_the_kind_of_session_claim_are_part_of_the_branch() {
        let base = lineage(&delegated("s1", &["orchestrator"]));
        let other_session = lineage(&delegated("s2", &["orchestrator"]));
        let other_subject = lineage(&token(
            json!({"sub": "user:bob", "sid": "s1", "act": chain(&["orchestrator"])}),
        ));
        let jti_session = lineage(&token(
            json!({"sub": "user:alice", "jti": "s1", "act": chain(&["orchestrator"])}),
        ));
        for other in [other_session, other_subject, jti_session] {
            assert!(other.iter().all(|id| !base.contains(id)));
        }
        // The same parts give the same branch: it is stable across tokens and sidecars.
        assert_eq!(base, lineage(&delegated("s1", &["orchestrator"])));
    }

    #[test]
    fn a_branch_claim_names_the_branch_alone() {
        let mut claims = json!({"sub": "user:alice", "sid": "s1", "act": chain(&["a", "b"])});
        claims["execution_branch_id"] = json!("br-7");
        let named =
            VerifiedToken::from_claims_with_branch_claim_for_tests(&claims, "execution_branch_id");
        assert_eq!(&*lineage(&named), &[Box::<str>::from("br-7")]);
    }
}
