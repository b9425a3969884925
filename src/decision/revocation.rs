//! Revocations: tokens cut off by `jti`, `sid`, `sub`, any actor in their chain, an execution
//! branch ([`crate::decision::branch`]), or one actor inside one session.
//!
//! Guarantees: a revocation applies to the very next decision, cached verifications included
//! (the check runs on every request, after verification, before the binding rules); expired
//! revocations stop applying on their own; with `revocation.file` every change is written
//! atomically (temporary file, fsync, rename) before it is acknowledged, and the file is loaded
//! at start, so a restart loses nothing. The list is process-wide: a configuration reload
//! keeps it.
//!
//! The hot path takes a read lock only when the list is not empty.

use crate::decision::token::{VerifiedToken, unix_now_millis as now_millis};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};

/// What a revocation matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    Jti,
    Sid,
    Sub,
    Actor,
    /// An execution branch ([`crate::decision::branch`]) and every delegation made in it.
    Branch,
    /// One agent inside one session: the value is `<actor SPIFFE ID> <session>`
    /// ([`session_actor_value`]); every chain through that actor in that session.
    SessionActor,
}

impl RevocationKind {
    pub const ALL: [Self; 6] = [
        Self::Jti,
        Self::Sid,
        Self::Sub,
        Self::Actor,
        Self::Branch,
        Self::SessionActor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Jti => "jti",
            Self::Sid => "sid",
            Self::Sub => "sub",
            Self::Actor => "actor",
            Self::Branch => "branch",
            Self::SessionActor => "session_actor",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The value of a [`RevocationKind::SessionActor`] revocation: the actor, one space, the
/// session. A canonical SPIFFE ID holds no space, so the first space splits it unambiguously.
pub fn session_actor_value(actor: &str, session: &str) -> String {
    format!("{actor} {session}")
}

/// Actor and session of a [`RevocationKind::SessionActor`] value; `None` when either is empty.
pub fn split_session_actor(value: &str) -> Option<(&str, &str)> {
    let (actor, session) = value.split_once(' ')?;
    (!actor.is_empty() && !session.is_empty()).then_some((actor, session))
}

/// Which revocation cut a token: its kind and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub kind: RevocationKind,
    pub value: String,
}

/// The entries of one kind, by value.
type Entries = [HashMap<String, Revocation>; 6];

/// One revocation as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub kind: RevocationKind,
    pub value: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` = until removed.
    pub expires_at: Option<i64>,
}

impl Revocation {
    fn in_force(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|expires| now < expires)
    }
}

/// The process-wide revocation list.
#[derive(Debug, Default)]
pub struct RevocationList {
    entries: RwLock<Entries>,
    /// One bit per kind that has entries: the hot path skips the lock entirely while nothing
    /// is revoked, and kinds with no entries cost nothing.
    kinds: AtomicU8,
    /// `revocation.file`, when persistence is on.
    file: Option<PathBuf>,
    /// Fleet mode: the list mirrors a shared store and is current only while confirmed.
    fleet: AtomicBool,
    /// Unix milliseconds until which the list counts as current (fleet mode only).
    current_until_ms: AtomicI64,
    /// Unix milliseconds of the last confirmation, 0 before the first.
    confirmed_at_ms: AtomicI64,
}

impl RevocationList {
    /// An empty, in-memory list.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A list persisted in `file`, loaded from it when it exists.
    pub fn persisted(file: &Path) -> Result<Self, String> {
        let mut entries = Entries::default();
        match crate::decision::files::read_limited(
            file,
            crate::decision::files::MAX_REVOCATION_FILE_BYTES,
        ) {
            Ok(bytes) => {
                let stored: Vec<Revocation> = serde_json::from_slice(&bytes).map_err(|error| {
                    format!("{}: not a revocation list: {error}", file.display())
                })?;
                for revocation in stored {
                    entries[revocation.kind.index()].insert(revocation.value.clone(), revocation);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(format!("cannot read {}: {error}", file.display())),
        }
        Ok(Self {
            kinds: AtomicU8::new(kinds_of(&entries)),
            entries: RwLock::new(entries),
            file: Some(file.to_owned()),
            ..Self::default()
        })
    }

    /// Fleet mode: from now on the list is current only until a confirmation says otherwise
    /// ([`confirm_current_until`](Self::confirm_current_until)); before the first, it is not.
    pub fn mirror_a_shared_store(&self) {
        self.current_until_ms.store(0, Ordering::Release);
        self.fleet.store(true, Ordering::Release);
    }

    /// Whether the list is known to hold every revocation in force (always, outside fleet
    /// mode). A list that is not current must not be trusted to allow anything.
    pub fn is_current(&self) -> bool {
        if !self.fleet.load(Ordering::Acquire) {
            return true;
        }
        now_millis() < self.current_until_ms.load(Ordering::Acquire)
    }

    /// Records that everything up to a moment was applied: current until `until_ms`.
    pub fn confirm_current_until(&self, until_ms: i64) {
        self.current_until_ms.fetch_max(until_ms, Ordering::AcqRel);
        self.confirmed_at_ms.store(now_millis(), Ordering::Release);
    }

    /// Seconds since the last confirmation (fleet mode); `None` before the first or outside
    /// fleet mode.
    pub fn staleness_seconds(&self) -> Option<f64> {
        if !self.fleet.load(Ordering::Acquire) {
            return None;
        }
        let confirmed = self.confirmed_at_ms.load(Ordering::Acquire);
        (confirmed > 0).then(|| (now_millis() - confirmed).max(0) as f64 / 1000.0)
    }

    /// Replaces every entry at once (a fleet snapshot), persisted before it returns.
    pub fn replace_all(&self, revocations: Vec<Revocation>) -> Result<(), String> {
        let mut entries = self
            .entries
            .write()
            .map_err(|_| "revocation list poisoned")?;
        let mut replaced = Entries::default();
        for revocation in revocations {
            replaced[revocation.kind.index()].insert(revocation.value.clone(), revocation);
        }
        self.persist(&replaced)?;
        self.kinds.store(kinds_of(&replaced), Ordering::Release);
        *entries = replaced;
        Ok(())
    }

    /// The revocation that cuts `token`, presented by `caller`, at `now`, if any. The caller
    /// counts as an actor: a revoked agent's own direct calls are cut too, not only the chains
    /// that pass through it. Kinds are tried in the order of [`RevocationKind::ALL`].
    pub fn matching(&self, token: &VerifiedToken, caller: &str, now: i64) -> Option<Revoked> {
        let kinds = self.kinds.load(Ordering::Acquire);
        if kinds == 0 {
            return None;
        }
        // A poisoned lock still holds the list: read it rather than fail open.
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let present = |kind: RevocationKind| kinds & (1 << kind.index()) != 0;
        let revoked = |kind: RevocationKind, value: &str| {
            entries[kind.index()]
                .get(value)
                .is_some_and(|revocation| revocation.in_force(now))
                .then(|| Revoked {
                    kind,
                    value: value.to_owned(),
                })
        };
        let actors = || {
            token
                .actors()
                .iter()
                .filter_map(|actor| actor.subject())
                .chain(std::iter::once(caller))
        };
        for kind in RevocationKind::ALL {
            if !present(kind) {
                continue;
            }
            let found = match kind {
                RevocationKind::Jti => token.jti().and_then(|jti| revoked(kind, jti)),
                RevocationKind::Sid => token.sid().and_then(|sid| revoked(kind, sid)),
                RevocationKind::Sub => revoked(kind, token.subject()),
                RevocationKind::Actor => actors().find_map(|actor| revoked(kind, actor)),
                RevocationKind::Branch => token
                    .branch_lineage()
                    .iter()
                    .find_map(|branch| revoked(kind, branch)),
                RevocationKind::SessionActor => {
                    crate::decision::branch::session(token).and_then(|session| {
                        actors()
                            .find_map(|actor| revoked(kind, &session_actor_value(actor, session)))
                    })
                }
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Adds or replaces a revocation; persisted before it returns.
    pub fn revoke(&self, revocation: Revocation) -> Result<Revocation, String> {
        let mut entries = self
            .entries
            .write()
            .map_err(|_| "revocation list poisoned")?;
        let of_kind = revocation.kind.index();
        let previous = entries[of_kind].insert(revocation.value.clone(), revocation.clone());
        if let Err(error) = self.persist(&entries) {
            match previous {
                Some(previous) => entries[of_kind].insert(revocation.value.clone(), previous),
                None => entries[of_kind].remove(&revocation.value),
            };
            return Err(error);
        }
        self.kinds.store(kinds_of(&entries), Ordering::Release);
        Ok(revocation)
    }

    /// Removes a revocation; `Ok(true)` when one existed.
    pub fn unrevoke(&self, kind: RevocationKind, value: &str) -> Result<bool, String> {
        let mut entries = self
            .entries
            .write()
            .map_err(|_| "revocation list poisoned")?;
        let Some(removed) = entries[kind.index()].remove(value) else {
            return Ok(false);
        };
        if let Err(error) = self.persist(&entries) {
            entries[kind.index()].insert(value.to_owned(), removed);
            return Err(error);
        }
        self.kinds.store(kinds_of(&entries), Ordering::Release);
        Ok(true)
    }

    /// Revocations in force at `now`, sorted by kind and value.
    pub fn list(&self, now: i64) -> Vec<Revocation> {
        let mut listed: Vec<Revocation> = self
            .entries
            .read()
            .map(|entries| {
                entries
                    .iter()
                    .flat_map(HashMap::values)
                    .filter(|r| r.in_force(now))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        listed.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
        listed
    }

    fn persist(&self, entries: &Entries) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut stored: Vec<&Revocation> = entries.iter().flat_map(HashMap::values).collect();
        stored.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
        let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| e.to_string())?;
        let temporary = file.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut out = std::fs::File::create(&temporary)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            std::fs::rename(&temporary, file)?;
            if let Some(directory) = file.parent() {
                std::fs::File::open(directory)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|error| format!("cannot write {}: {error}", file.display()))
    }
}

/// One bit per kind with at least one entry.
fn kinds_of(entries: &Entries) -> u8 {
    RevocationKind::ALL
        .into_iter()
        .filter(|kind| !entries[kind.index()].is_empty())
        .fold(0, |bits, kind| bits | (1 << kind.index()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The token's current actor, presenting it.
    const CALLER: &str = "spiffe://example.org/agent/scheduler";

    fn token() -> VerifiedToken {
        VerifiedToken::from_claims_for_tests(&json!({
            "sub": "user:alice", "jti": "t1", "sid": "s1",
            "act": {"sub": "spiffe://example.org/agent/scheduler",
                    "act": {"sub": "spiffe://example.org/agent/orchestrator"}}
        }))
    }

    /// The kind of revocation that cuts [`token`] at `now`.
    fn cut(list: &RevocationList, now: i64) -> Option<RevocationKind> {
        list.matching(&token(), CALLER, now)
            .map(|revoked| revoked.kind)
    }

    fn revocation(kind: RevocationKind, value: &str, expires_at: Option<i64>) -> Revocation {
        Revocation {
            kind,
            value: value.into(),
            created_at: 0,
            expires_at,
        }
    }

    #[test]
    fn rule_a_poisoned_revocation_lock_still_cuts_revoked_tokens() {
        let list = std::sync::Arc::new(RevocationList::in_memory());
        list.revoke(revocation(RevocationKind::Jti, "t1", None))
            .unwrap();
        // A thread panics while it holds the write lock: the lock is poisoned.
        let holder = std::sync::Arc::clone(&list);
        let panicked = std::thread::spawn(move || {
            let _guard = holder.entries.write().unwrap();
            panic!("a writer dies holding the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(list.entries.is_poisoned());
        // Reading goes on from the last consistent list: the token is still revoked.
        assert_eq!(cut(&list, 0), Some(RevocationKind::Jti));
    }

    #[test]
    fn each_kind_matches_its_claim() {
        let cases = [
            (RevocationKind::Jti, "t1"),
            (RevocationKind::Sid, "s1"),
            (RevocationKind::Sub, "user:alice"),
            (
                RevocationKind::Actor,
                "spiffe://example.org/agent/orchestrator",
            ),
            (
                RevocationKind::Actor,
                "spiffe://example.org/agent/scheduler",
            ),
        ];
        for (kind, value) in cases {
            let list = RevocationList::in_memory();
            assert_eq!(cut(&list, 10), None);
            list.revoke(revocation(kind, value, None)).unwrap();
            assert_eq!(cut(&list, 10), Some(kind), "{kind:?} {value}");
            assert!(list.unrevoke(kind, value).unwrap());
            assert_eq!(cut(&list, 10), None);
        }
        let list = RevocationList::in_memory();
        list.revoke(revocation(
            RevocationKind::Actor,
            "spiffe://example.org/agent/planner",
            None,
        ))
        .unwrap();
        assert_eq!(
            cut(&list, 10),
            None,
            "an actor outside the chain cuts nothing"
        );
    }

    #[test]
    fn expired_revocations_stop_applying() {
        let list = RevocationList::in_memory();
        list.revoke(revocation(RevocationKind::Jti, "t1", Some(100)))
            .unwrap();
        assert_eq!(cut(&list, 99), Some(RevocationKind::Jti));
        assert_eq!(cut(&list, 100), None);
        assert!(list.list(100).is_empty());
    }

    #[test]
    fn persisted_list_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revocations.json");
        let list = RevocationList::persisted(&file).unwrap();
        list.revoke(revocation(RevocationKind::Sid, "s1", None))
            .unwrap();
        list.revoke(revocation(RevocationKind::Jti, "t9", Some(500)))
            .unwrap();
        list.revoke(revocation(RevocationKind::Branch, "b-x", None))
            .unwrap();
        list.revoke(revocation(
            RevocationKind::SessionActor,
            &session_actor_value("spiffe://example.org/agent/a", "s 9"),
            None,
        ))
        .unwrap();
        let reloaded = RevocationList::persisted(&file).unwrap();
        assert_eq!(reloaded.list(0), list.list(0));
        assert_eq!(cut(&reloaded, 0), Some(RevocationKind::Sid));
        reloaded.unrevoke(RevocationKind::Sid, "s1").unwrap();
        assert_eq!(RevocationList::persisted(&file).unwrap().list(0).len(), 3);
        assert!(!dir.path().join("revocations.tmp").exists());
    }

    #[test]
    fn a_failed_write_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("missing-dir").join("revocations.json");
        let list = RevocationList::persisted(&file).unwrap();
        assert!(
            list.revoke(revocation(RevocationKind::Jti, "t1", None))
                .is_err()
        );
        assert_eq!(cut(&list, 0), None);
        assert!(list.list(0).is_empty());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revocations.json");
        std::fs::write(&file, "not json").unwrap();
        assert!(RevocationList::persisted(&file).is_err());
    }

    /// A token of user:alice in session `sid` through `actors` (path order, the current last).
    fn delegated(sid: &str, actors: &[&str]) -> VerifiedToken {
        let mut claims = crate::devkit::delegated_claims("i", "user:alice", "a", "", actors, 0, 60);
        claims["sid"] = json!(sid);
        VerifiedToken::from_claims_for_tests(&claims)
    }

    const ORCHESTRATOR: &str = "spiffe://example.org/agent/orchestrator";
    const RESEARCHER_A: &str = "spiffe://example.org/agent/researcher-a";
    const RESEARCHER_B: &str = "spiffe://example.org/agent/researcher-b";
    const FETCHER: &str = "spiffe://example.org/agent/fetcher";

    /// The kind that cuts `token` presented by its current actor.
    fn cuts(list: &RevocationList, token: &VerifiedToken) -> Option<RevocationKind> {
        let caller = token.actors().first().and_then(|a| a.subject()).unwrap();
        list.matching(token, caller, 0).map(|revoked| revoked.kind)
    }

    #[test]
    fn rule_a_revoked_branch_cuts_its_delegations_and_spares_its_siblings() {
        // orchestrator → researcher-a (→ fetcher) and orchestrator → researcher-b, one session.
        let a = delegated("s1", &[ORCHESTRATOR, RESEARCHER_A]);
        let a_child = delegated("s1", &[ORCHESTRATOR, RESEARCHER_A, FETCHER]);
        let b = delegated("s1", &[ORCHESTRATOR, RESEARCHER_B]);
        let orchestrator = delegated("s1", &[ORCHESTRATOR]);
        let elsewhere = delegated("s2", &[ORCHESTRATOR, RESEARCHER_A]);
        let list = RevocationList::in_memory();
        list.revoke(revocation(RevocationKind::Branch, a.branch(), None))
            .unwrap();
        assert_eq!(cuts(&list, &a), Some(RevocationKind::Branch));
        assert_eq!(
            cuts(&list, &a_child),
            Some(RevocationKind::Branch),
            "a delegation made inside the branch"
        );
        assert_eq!(cuts(&list, &b), None, "the sibling keeps working");
        assert_eq!(cuts(&list, &orchestrator), None, "the parent keeps working");
        assert_eq!(
            cuts(&list, &elsewhere),
            None,
            "another session keeps working"
        );
        // The match names what cut it, for the audit record.
        let revoked = list.matching(&a_child, FETCHER, 0).unwrap();
        assert_eq!(revoked.value, a.branch());
    }

    #[test]
    fn rule_a_branch_claim_is_revoked_by_its_value() {
        let mut claims = json!({"sub": "user:alice", "sid": "s1",
                                "act": {"sub": RESEARCHER_A, "act": {"sub": ORCHESTRATOR}}});
        claims["execution_branch_id"] = json!("br-7");
        let named =
            VerifiedToken::from_claims_with_branch_claim_for_tests(&claims, "execution_branch_id");
        claims["execution_branch_id"] = json!("br-8");
        let other =
            VerifiedToken::from_claims_with_branch_claim_for_tests(&claims, "execution_branch_id");
        let list = RevocationList::in_memory();
        list.revoke(revocation(RevocationKind::Branch, "br-7", None))
            .unwrap();
        assert_eq!(cuts(&list, &named), Some(RevocationKind::Branch));
        assert_eq!(cuts(&list, &other), None);
        // The derived branch of the same path cuts both: a claim cannot take a token out of
        // the branch its path puts it in.
        let derived = named.branch_lineage().iter().nth(2).unwrap().to_string();
        assert!(derived.starts_with("b-"));
        let list = RevocationList::in_memory();
        list.revoke(revocation(RevocationKind::Branch, &derived, None))
            .unwrap();
        assert_eq!(cuts(&list, &named), Some(RevocationKind::Branch));
        assert_eq!(cuts(&list, &other), Some(RevocationKind::Branch));
    }

    #[test]
    fn rule_an_actor_revoked_in_one_session_works_elsewhere_and_its_siblings_too() {
        let list = RevocationList::in_memory();
        list.revoke(revocation(
            RevocationKind::SessionActor,
            &session_actor_value(RESEARCHER_A, "s1"),
            None,
        ))
        .unwrap();
        assert_eq!(
            cuts(&list, &delegated("s1", &[ORCHESTRATOR, RESEARCHER_A])),
            Some(RevocationKind::SessionActor)
        );
        assert_eq!(
            cuts(
                &list,
                &delegated("s1", &[ORCHESTRATOR, RESEARCHER_A, FETCHER])
            ),
            Some(RevocationKind::SessionActor),
            "everything through it in that session"
        );
        assert_eq!(
            cuts(&list, &delegated("s2", &[ORCHESTRATOR, RESEARCHER_A])),
            None,
            "the agent keeps working in other sessions"
        );
        assert_eq!(
            cuts(&list, &delegated("s1", &[ORCHESTRATOR, RESEARCHER_B])),
            None,
            "its sibling keeps working"
        );
        assert_eq!(
            split_session_actor("spiffe://a/b s 1"),
            Some(("spiffe://a/b", "s 1"))
        );
        assert_eq!(split_session_actor("spiffe://a/b"), None);
    }
}
