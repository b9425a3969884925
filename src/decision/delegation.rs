//! Delegation policy beyond the chain rules: scope ceilings per actor and the allowed
//! delegation edges.
//!
//! - **Ceilings** (`delegation.ceilings`): the first entry whose `actor` pattern matches an
//!   actor gives the most scope a chain through that actor may carry; the token's scopes must
//!   fit within the ceiling of *every* actor in the chain (a direct call's caller counts as its
//!   only actor). An actor no entry matches has no ceiling. Prior actors can only restrict.
//! - **Edges** (`delegation.edges`, optional): when set, every hop of the chain — subject →
//!   first delegate → … → current actor — must match an allowed `from` → `to` pair.

use crate::decision::spiffe::{CallerPattern, SpiffeId};

/// A pattern over subjects and actors: `*` (anything), `spiffe://td/path/*` (IDs under that
/// path, segment-aware), `prefix*` (string prefix, e.g. `user:*`), or an exact string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalPattern {
    Any,
    Spiffe(CallerPattern),
    Prefix(String),
    Exact(String),
}

impl PrincipalPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        if text.starts_with("spiffe://") {
            return CallerPattern::parse(text)
                .map(Self::Spiffe)
                .map_err(|error| format!("SPIFFE ID pattern {error}"));
        }
        match text.strip_suffix('*') {
            Some(prefix) if !prefix.is_empty() && !prefix.contains('*') => {
                Ok(Self::Prefix(prefix.to_owned()))
            }
            Some(_) => Err("a glob is `*` or ends with one `*` after a prefix".into()),
            None if text.is_empty() => Err("must not be empty".into()),
            None => Ok(Self::Exact(text.to_owned())),
        }
    }

    pub fn matches(&self, principal: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Spiffe(pattern) => {
                SpiffeId::parse(principal).is_ok_and(|id| pattern.matches(&id))
            }
            Self::Prefix(prefix) => principal.starts_with(prefix.as_str()),
            Self::Exact(exact) => principal == exact,
        }
    }
}

/// `delegation.ceilings[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceiling {
    pub actor: PrincipalPattern,
    pub scopes: Vec<String>,
}

/// `delegation.edges[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: PrincipalPattern,
    pub to: PrincipalPattern,
}

/// Whether `scopes` fit under the ceiling of every one of `actors`.
pub fn within_ceilings(ceilings: &[Ceiling], actors: &[&str], scopes: &[Box<str>]) -> bool {
    actors.iter().all(|actor| {
        ceilings
            .iter()
            .find(|ceiling| ceiling.actor.matches(actor))
            .is_none_or(|ceiling| {
                scopes
                    .iter()
                    .all(|scope| ceiling.scopes.iter().any(|allowed| **allowed == **scope))
            })
    })
}

/// Whether every hop `subject → delegation[0] → … → delegation[n-1]` is an allowed edge.
pub fn edges_allowed(edges: &[Edge], subject: &str, delegation: &[&str]) -> bool {
    let mut from = subject;
    for to in delegation {
        if !edges
            .iter()
            .any(|edge| edge.from.matches(from) && edge.to.matches(to))
        {
            return false;
        }
        from = to;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> PrincipalPattern {
        PrincipalPattern::parse(text).unwrap()
    }

    #[test]
    fn patterns() {
        assert!(pattern("*").matches("anything"));
        assert!(pattern("user:*").matches("user:alice"));
        assert!(!pattern("user:*").matches("service:x"));
        assert!(pattern("spiffe://example.org/agent/*").matches("spiffe://example.org/agent/x"));
        assert!(!pattern("spiffe://example.org/agent/*").matches("spiffe://example.org/agents/x"));
        assert!(pattern("user:alice").matches("user:alice"));
        assert!(!pattern("user:alice").matches("user:alice2"));
        for bad in ["", "a*b*", "**", "spiffe://Example.org/*"] {
            assert!(PrincipalPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_actor_ceiling_applies() {
        let ceilings = vec![
            Ceiling {
                actor: pattern("spiffe://example.org/agent/planner"),
                scopes: vec!["calendar:read".into()],
            },
            Ceiling {
                actor: pattern("spiffe://example.org/agent/*"),
                scopes: vec!["calendar:read".into(), "calendar:write".into()],
            },
        ];
        let write: Vec<Box<str>> = vec!["calendar:write".into()];
        let scheduler = "spiffe://example.org/agent/scheduler";
        let planner = "spiffe://example.org/agent/planner";
        assert!(within_ceilings(&ceilings, &[scheduler], &write));
        assert!(
            !within_ceilings(&ceilings, &[planner, scheduler], &write),
            "the planner restricts"
        );
        assert!(
            within_ceilings(&ceilings, &["spiffe://other.org/x"], &write),
            "no entry, no ceiling"
        );
    }

    #[test]
    fn every_hop_must_be_an_edge() {
        let edges = vec![
            Edge {
                from: pattern("user:*"),
                to: pattern("spiffe://example.org/agent/orchestrator"),
            },
            Edge {
                from: pattern("spiffe://example.org/agent/orchestrator"),
                to: pattern("spiffe://example.org/agent/*"),
            },
        ];
        let orchestrator = "spiffe://example.org/agent/orchestrator";
        let scheduler = "spiffe://example.org/agent/scheduler";
        assert!(edges_allowed(
            &edges,
            "user:alice",
            &[orchestrator, scheduler]
        ));
        assert!(
            !edges_allowed(&edges, "user:alice", &[scheduler]),
            "user may not delegate to the scheduler directly"
        );
        assert!(
            !edges_allowed(&edges, "user:alice", &[scheduler, orchestrator]),
            "order matters"
        );
        assert!(
            !edges_allowed(&edges, "service:x", &[orchestrator]),
            "the first edge is from the subject"
        );
    }
}
