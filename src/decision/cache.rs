//! The two caches of the pipeline. Both hold only *successes*, so a flood of bad certificates
//! or tokens costs CPU per request but can neither grow memory nor evict good entries.
//!
//! - Verified tokens, keyed by the SHA-256 of the token bytes, bounded in entries and bytes
//!   (`cache.max_entries`, `cache.max_bytes`), each entry expiring when its token does (plus
//!   leeway, at most an hour).
//! - Caller SPIFFE IDs, keyed by the SHA-256 of the URL-encoded certificate.

use crate::decision::identity::Svid;
use crate::decision::settings::CacheConfig;
use crate::decision::token::VerifiedToken;
use moka::sync::Cache;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) type Digest = [u8; 32];

/// A cache keyed by SHA-256 digests, hashed with [`DigestHashing`].
pub(super) type DigestCache<V> = Cache<Digest, V, DigestHashing>;

/// foldhash, seeded per cache, for keys that are already SHA-256 digests. moka's default
/// SipHash spent ~4 % of a cold RS256 decision, mostly re-hashing every key when the table is
/// rebuilt after evictions. The keys are uniform and only verified tokens and identified
/// certificates are inserted, so no caller chooses where entries land; the seed keeps it so
/// even if that changed.
pub(super) type DigestHashing = foldhash::fast::RandomState;

/// Bound on how long any entry may sit in a cache regardless of token lifetime.
pub(super) const MAX_ENTRY_TTL: Duration = Duration::from_secs(3600);
const CERTIFICATE_CACHE_ENTRIES: u64 = 10_000;

pub(super) fn sha256(bytes: &[u8]) -> Digest {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// What one entry costs the cache itself beyond the token: moka's bookkeeping for an entry with
/// per-entry expiry (~300 bytes in 7 allocations, measured with a counting allocator), the key
/// and the allocator's per-allocation overhead. Counted so `cache.max_bytes` bounds real memory.
const CACHE_ENTRY_OVERHEAD: usize = 400;

/// A cached verification, with how long it may live.
#[derive(Clone)]
pub(super) struct CachedToken {
    pub(super) token: Arc<VerifiedToken>,
    /// When the entry expires: the token's expiry (plus leeway), at most [`MAX_ENTRY_TTL`].
    pub(super) expires_at: Instant,
}

struct UntilTokenExpiry;

impl moka::Expiry<Digest, CachedToken> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &CachedToken,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }
}

/// The verified-token cache for these bounds; `None` when `cache.max_entries` is 0.
pub(super) fn token_cache(cache: CacheConfig) -> Option<DigestCache<CachedToken>> {
    (cache.max_entries > 0).then(|| {
        // One weigher bounds both: each entry weighs at least max_bytes / max_entries, so
        // there can be no more than max_entries, and the weights never sum past max_bytes.
        // Rounded up and kept within a u32 weight, with the capacity trimmed to match, so
        // neither bound can be exceeded by rounding (max_bytes ≥ 1, max_entries ≥ 1 here).
        let floor = cache
            .max_bytes
            .div_ceil(cache.max_entries)
            .clamp(1, u64::from(u32::MAX));
        Cache::builder()
            .max_capacity(cache.max_bytes.min(floor.saturating_mul(cache.max_entries)))
            .weigher(move |_key: &Digest, value: &CachedToken| {
                let estimate = (value.token.approximate_size() + CACHE_ENTRY_OVERHEAD) as u64;
                u32::try_from(estimate.max(floor)).unwrap_or(u32::MAX)
            })
            .expire_after(UntilTokenExpiry)
            .build_with_hasher(DigestHashing::default())
    })
}

/// The certificate → SPIFFE ID cache.
pub(super) fn certificate_cache() -> DigestCache<Svid> {
    Cache::builder()
        .max_capacity(CERTIFICATE_CACHE_ENTRIES)
        .time_to_live(MAX_ENTRY_TTL)
        .build_with_hasher(DigestHashing::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn digest_hashing_spreads_keys_over_the_low_bits_that_pick_buckets() {
        let hashing = DigestHashing::default();
        const BUCKETS: usize = 1 << 12;
        let mut load = vec![0u32; BUCKETS];
        for index in 0u32..(BUCKETS as u32 * 16) {
            let key = sha256(&index.to_le_bytes());
            load[hashing.hash_one(key) as usize % BUCKETS] += 1;
        }
        // 16 keys per bucket on average; a uniform spread stays far below 48 (Poisson tail).
        let fullest = load.iter().max().copied().unwrap_or(0);
        assert!(fullest < 48, "a bucket holds {fullest} keys");
        assert!(load.iter().all(|&keys| keys > 0), "a bucket was never hit");
    }

    #[test]
    fn each_cache_gets_its_own_seed() {
        let key = sha256(b"token");
        assert_ne!(
            DigestHashing::default().hash_one(key),
            DigestHashing::default().hash_one(key)
        );
    }
}
