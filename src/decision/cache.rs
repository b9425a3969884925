//! The two caches of the pipeline. Both hold only *successes*, so a flood of bad certificates
//! or tokens costs CPU per request but can neither grow memory nor evict good entries.
//!
//! - Verified tokens, keyed by the SHA-256 of the token bytes, bounded in entries and bytes
//!   (`cache.max_entries`, `cache.max_bytes`), each entry expiring when its token does (plus
//!   leeway, at most an hour). A token enters on its second use ([`Probation`]): its first
//!   verification waits in a small set, from where a second use moves it into the cache
//!   without verifying it again (or verifies it again, if newer tokens took its place), so a
//!   token used once never costs a cache insert (the most expensive step of a never-seen token
//!   after its signature: moka's bookkeeping contends across threads) and a flood of
//!   single-use valid tokens cannot evict the tokens in use.
//! - Caller SPIFFE IDs, keyed by the SHA-256 of the URL-encoded certificate.

use crate::decision::identity::Svid;
use crate::decision::settings::CacheConfig;
use crate::decision::token::VerifiedToken;
use moka::sync::Cache;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
/// Most digests the doorkeeper remembers (two per `cache.max_entries`, at most this: 8 MiB).
const MAX_DOORKEEPER_SLOTS: u64 = 1 << 20;
/// Slots of one doorkeeper bucket.
const DOORKEEPER_WAYS: usize = 4;

/// Admission on second use: which tokens were verified before (the doorkeeper: an 8-byte tag
/// of each digest, one slot per cache entry), and the verifications of the latest of them
/// (the waiting slots). A token seen before enters the cache — from its waiting slot, without
/// verifying again, or verified again if a newer token took the slot — so a token costs at
/// most one extra verification unless so many new tokens arrived between its uses (some twice
/// `max_entries`) that its tag was pushed out of the doorkeeper too.
pub(super) struct Probation {
    doorkeeper: Box<[AtomicU64]>,
    /// Picks the way a full doorkeeper bucket gives up.
    turn: AtomicUsize,
    slots: Box<[Slot]>,
    /// The heaviest verification a waiting slot takes (the cache's per-entry share of
    /// `max_bytes`): a heavier one goes into the cache at once, where it is weighed, so the
    /// slots never hold more than their share of the byte budget.
    max_weight: usize,
}

/// One waiting slot: the digest of the token waiting there, and its verification.
type Slot = Mutex<Option<(Digest, CachedToken)>>;

/// The word of `key` at `at` (digest bytes are uniformly distributed).
fn word(key: &Digest, at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[at..at + 8]);
    u64::from_le_bytes(bytes)
}

impl Probation {
    fn new(doorkeeper: usize, slots: usize, max_weight: usize) -> Self {
        let doorkeeper = doorkeeper.div_ceil(DOORKEEPER_WAYS).max(1) * DOORKEEPER_WAYS;
        Self {
            doorkeeper: (0..doorkeeper).map(|_| AtomicU64::new(0)).collect(),
            turn: AtomicUsize::new(0),
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
            max_weight,
        }
    }

    fn slot(&self, key: &Digest) -> &Slot {
        &self.slots[(word(key, 0) % self.slots.len() as u64) as usize]
    }

    /// Whether `key` was verified before (and remembers that it now was). The doorkeeper is
    /// set-associative: a digest's tag may sit in any of [`DOORKEEPER_WAYS`] slots of its
    /// bucket, so tokens sharing a bucket do not keep pushing each other out.
    pub(super) fn seen_before(&self, key: &Digest) -> bool {
        let buckets = (self.doorkeeper.len() / DOORKEEPER_WAYS).max(1);
        let start = (word(key, 8) % buckets as u64) as usize * DOORKEEPER_WAYS;
        let ways = &self.doorkeeper[start..start + DOORKEEPER_WAYS];
        // Never 0, the empty slot's value.
        let tag = word(key, 16) | 1;
        if ways.iter().any(|way| way.load(Ordering::Relaxed) == tag) {
            return true;
        }
        // An empty way, else one in turn (a shared counter: the cold path only).
        let victim = ways
            .iter()
            .position(|way| way.load(Ordering::Relaxed) == 0)
            .unwrap_or_else(|| self.turn.fetch_add(1, Ordering::Relaxed) % DOORKEEPER_WAYS);
        ways[victim].store(tag, Ordering::Relaxed);
        false
    }

    /// Keeps a token verified for the first time; `false` when it is too heavy to wait here
    /// (the caller caches it at once instead).
    pub(super) fn put(&self, key: Digest, cached: CachedToken) -> Result<(), CachedToken> {
        if cached.token.approximate_size() + CACHE_ENTRY_OVERHEAD > self.max_weight {
            return Err(cached);
        }
        // A poisoned slot only means another thread panicked while holding it: the slot's
        // content is whole either way.
        let mut slot = self.slot(&key).lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some((key, cached));
        Ok(())
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
/// tokens then enter at once); `None` when `cache.max_entries` is 0. The waiting slots are
/// counted in `max_entries` and their share of `max_bytes` (each takes a verification of at
/// most that share), so both bounds hold for the two together; the doorkeeper adds 16 bytes per
/// entry (at most 8 MiB).
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
    let share = usize::try_from(cache.max_bytes / cache.max_entries).unwrap_or(usize::MAX);
    let cached = cache.max_entries - slots;
    let bytes = ((u128::from(cache.max_bytes) * u128::from(cached)) / u128::from(cache.max_entries))
        .max(1) as u64;
    let doorkeeper = cache
        .max_entries
        .saturating_mul(2)
        .min(MAX_DOORKEEPER_SLOTS) as usize;
    let cache = CacheConfig {
        max_entries: cached,
        max_bytes: bytes,
    };
    Some((
        bounded_cache(cache),
        Some(Probation::new(doorkeeper, slots as usize, share)),
    ))
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
