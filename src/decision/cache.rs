//! The two caches of the pipeline. Both hold only *successes*, so a flood of bad certificates
//! or tokens costs CPU per request but can neither grow memory nor evict good entries.
//!
//! - Verified tokens, keyed by the SHA-256 of the token bytes, bounded in entries and bytes
//!   (`cache.max_entries`, `cache.max_bytes`), each entry expiring when its token does (plus
//!   leeway, at most an hour). A token enters on its second use: its first verification waits
//!   in [`Probation`], from where a second use moves it into the cache without verifying it
//!   again, so a token used once never costs a cache insert (the most expensive step of a
//!   never-seen token after its signature: moka's bookkeeping contends across threads) and a
//!   flood of single-use valid tokens cannot evict the tokens in use.
//! - Caller SPIFFE IDs, keyed by the SHA-256 of the URL-encoded certificate.

use crate::decision::identity::Svid;
use crate::decision::settings::CacheConfig;
use crate::decision::token::VerifiedToken;
use moka::sync::Cache;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) type Digest = [u8; 32];

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

/// Most tokens waiting in probation (a sixteenth of `cache.max_entries`, at most this).
const MAX_PROBATION_SLOTS: u64 = 4096;

/// Tokens verified once, one per slot (the slot chosen by the digest; a newer token takes an
/// occupied slot), waiting for a second use. Fixed size: a slot holds a digest and a shared
/// pointer to the verified token, so the set costs ~70 bytes a slot plus the tokens it holds.
pub(super) struct Probation {
    slots: Box<[Slot]>,
}

/// One probation slot: the digest of the token waiting there, and its verification.
type Slot = Mutex<Option<(Digest, CachedToken)>>;

impl Probation {
    fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, key: &Digest) -> &Slot {
        let index = u64::from_le_bytes([
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
        ]);
        &self.slots[(index % self.slots.len() as u64) as usize]
    }

    /// Keeps a token verified for the first time.
    pub(super) fn put(&self, key: Digest, cached: CachedToken) {
        // A poisoned slot only means another thread panicked while holding it: the slot's
        // content is whole either way.
        let mut slot = self.slot(&key).lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some((key, cached));
    }

    /// The token waiting under `key`, taken out (its second use moves it to the cache).
    pub(super) fn take(&self, key: &Digest) -> Option<CachedToken> {
        let mut slot = self.slot(key).lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some((waiting, _)) if waiting == key => slot.take().map(|(_, cached)| cached),
            _ => None,
        }
    }
}

/// The verified-token cache for these bounds, and its probation (none below 32 entries:
/// tokens then enter at once); `None` when `cache.max_entries` is 0. The probation's slots
/// are counted in `max_entries` (and their share of `max_bytes`), so both bounds hold for the
/// two together.
pub(super) fn token_cache(
    cache: CacheConfig,
) -> Option<(Cache<Digest, CachedToken>, Option<Probation>)> {
    if cache.max_entries == 0 {
        return None;
    }
    let slots = (cache.max_entries / 16).min(MAX_PROBATION_SLOTS);
    if slots < 2 {
        return Some((bounded_cache(cache), None));
    }
    let cached = cache.max_entries - slots;
    let bytes = ((u128::from(cache.max_bytes) * u128::from(cached)) / u128::from(cache.max_entries))
        .max(1) as u64;
    let cache = CacheConfig {
        max_entries: cached,
        max_bytes: bytes,
    };
    Some((bounded_cache(cache), Some(Probation::new(slots as usize))))
}

/// A moka cache within `cache.max_entries` entries and `cache.max_bytes` bytes (both ≥ 1).
fn bounded_cache(cache: CacheConfig) -> Cache<Digest, CachedToken> {
    {
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
            .build()
    }
}

/// The certificate → SPIFFE ID cache.
pub(super) fn certificate_cache() -> Cache<Digest, Svid> {
    Cache::builder()
        .max_capacity(CERTIFICATE_CACHE_ENTRIES)
        .time_to_live(MAX_ENTRY_TTL)
        .build()
}
