//! Per-worker-thread memory of the last few peer certificates and bearer tokens, in front of
//! the shared caches of [`super::cache`]: the common case (an agent calling again with the
//! same certificate and token) hashes neither and touches no shared state.

/// The last few peer certificates each worker thread saw, compared byte for byte: a tool is
/// called by a handful of agents, so most checks find their caller here without hashing the
/// ~1 KB certificate or touching the shared cache. Safe across reloads and authorizers: the
/// SVID (SPIFFE ID and validity period) is a pure function of the certificate bytes (only
/// successes are remembered; the validity period is applied on every use).
pub mod callers {
    use crate::decision::identity::Svid;
    use std::cell::RefCell;

    const SLOTS: usize = 4;
    /// Larger certificates are not remembered (bounds the memory per thread).
    const MAX_CERTIFICATE_BYTES: usize = 8 * 1024;

    #[derive(Default)]
    struct Recent {
        slots: [Option<(Box<str>, Svid)>; SLOTS],
        next: usize,
    }

    thread_local! {
        static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
    }

    pub(in crate::decision) fn get(certificate: &str) -> Option<Svid> {
        RECENT
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                recent
                    .slots
                    .iter()
                    .flatten()
                    .find(|(seen, _)| **seen == *certificate)
                    .map(|(_, id)| id.clone())
            })
            .ok()
            .flatten()
    }

    pub(in crate::decision) fn remember(certificate: &str, svid: &Svid) {
        if certificate.len() > MAX_CERTIFICATE_BYTES {
            return;
        }
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                let slot = recent.next;
                recent.slots[slot] = Some((certificate.into(), svid.clone()));
                recent.next = (slot + 1) % SLOTS;
            }
        });
    }
}

/// The last few bearer tokens each worker thread verified or found in the token cache, compared
/// in constant time: an agent reuses its token for many calls, so most checks find it here
/// without the SHA-256 of the token or a lookup in the shared cache. An entry belongs to one
/// [`crate::decision::Authorizer`] (a reload builds a new one, so nothing crosses a configuration) and lives no
/// longer than its token-cache entry would; a hit is re-checked exactly like a cache hit (key
/// still published, token unexpired), and revocation and the policy run on every request.
///
/// Outside `cache.max_bytes`: at most 4 tokens of ≤ 8 KiB and their verifications per worker
/// thread. Hits here do not reach the shared cache, so its eviction policy does not see how hot
/// these tokens are; one evicted there is still served here until its entry would have expired.
pub mod tokens {
    use crate::decision::token::VerifiedToken;
    use std::cell::RefCell;
    use std::sync::Arc;
    use std::time::Instant;

    const SLOTS: usize = 4;
    /// Larger tokens are not remembered (bounds the memory per thread).
    const MAX_TOKEN_BYTES: usize = 8 * 1024;

    struct Entry {
        owner: u64,
        token: Box<[u8]>,
        verified: Arc<VerifiedToken>,
        /// When the token-cache entry it came from expires.
        expires_at: Instant,
    }

    #[derive(Default)]
    struct Recent {
        slots: [Option<Entry>; SLOTS],
        next: usize,
    }

    thread_local! {
        static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
    }

    /// Equal contents, in time that depends only on the lengths (aws-lc's `CRYPTO_memcmp`): a
    /// cached token is another caller's secret, and an early exit would time how much of it a
    /// guess got right.
    fn same(a: &[u8], b: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
    }

    pub(in crate::decision) fn get(
        owner: u64,
        token: &str,
        now: Instant,
    ) -> Option<Arc<VerifiedToken>> {
        RECENT
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                let mut found = None;
                for entry in recent.slots.iter().flatten() {
                    if entry.owner == owner
                        && same(&entry.token, token.as_bytes())
                        && now < entry.expires_at
                    {
                        found = Some(Arc::clone(&entry.verified));
                    }
                }
                found
            })
            .ok()
            .flatten()
    }

    pub(in crate::decision) fn remember(
        owner: u64,
        token: &str,
        verified: &Arc<VerifiedToken>,
        expires_at: Instant,
    ) {
        if token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                // A free slot, or one of a replaced configuration, before the oldest of ours:
                // entries of an old configuration are not kept alive longer than needed.
                let free = recent
                    .slots
                    .iter()
                    .position(|slot| slot.as_ref().is_none_or(|entry| entry.owner != owner));
                let slot = free.unwrap_or(recent.next);
                recent.slots[slot] = Some(Entry {
                    owner,
                    token: token.as_bytes().into(),
                    verified: Arc::clone(verified),
                    expires_at,
                });
                if free.is_none() {
                    recent.next = (slot + 1) % SLOTS;
                }
            }
        });
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;

        #[test]
        fn remembered_tokens_match_only_in_full() {
            assert!(same(b"header.payload.sig", b"header.payload.sig"));
            assert!(!same(b"header.payload.sig", b"header.payload.sih"));
            assert!(!same(b"header.payload.sig", b"header.payload.sig2"));
            assert!(!same(b"", b"a"));
        }

        #[test]
        fn remembered_token_is_forgotten_when_its_cache_entry_expires_and_kept_per_owner() {
            let verified = Arc::new(VerifiedToken::from_claims_for_tests(
                &serde_json::json!({ "sub": "user:alice" }),
            ));
            let now = Instant::now();
            remember(u64::MAX, "a.b.c", &verified, now + Duration::from_secs(1));
            assert!(get(u64::MAX, "a.b.c", now).is_some());
            assert!(get(u64::MAX, "a.b.c", now + Duration::from_secs(1)).is_none());
            assert!(
                get(u64::MAX - 1, "a.b.c", now).is_none(),
                "another authorizer"
            );
            assert!(get(u64::MAX, "a.b.", now).is_none());
        }
    }
}
