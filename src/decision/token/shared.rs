//! Equal parts of verified tokens stored once: the actor chain and the scope list. Tokens an
//! issuer mints for one user through the same agents differ in `jti` and their times, rarely
//! in these, and the token cache keeps one verification per token; sharing them cut the
//! memory of 100k cached tokens (docs/benchmarks.md).
//!
//! Only verified tokens reach the pools (a forged token fails before), and a pool drops what
//! no token holds any more, so its size follows the live verifications.

use super::claims::Actor;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// Below this many values a pool is never pruned.
const MIN_PRUNE: usize = 1024;

/// Interned values. Pruned (values only the pool holds are dropped) whenever it has doubled
/// since the last pruning: amortised constant work, at most twice the live values.
struct Pool<T: ?Sized> {
    values: HashSet<Arc<T>>,
    prune_at: usize,
}

impl<T: ?Sized> Default for Pool<T> {
    fn default() -> Self {
        Self {
            values: HashSet::new(),
            prune_at: MIN_PRUNE,
        }
    }
}

impl<T: ?Sized + Eq + Hash> Pool<T> {
    /// The pooled value equal to `value`, pooling `value` if there is none.
    fn share(&mut self, value: Arc<T>) -> Arc<T> {
        if let Some(existing) = self.values.get(&*value) {
            return Arc::clone(existing);
        }
        if self.values.len() >= self.prune_at {
            self.values.retain(|pooled| Arc::strong_count(pooled) > 1);
            self.prune_at = (self.values.len() * 2).max(MIN_PRUNE);
        }
        self.values.insert(Arc::clone(&value));
        value
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.values.len()
    }
}

/// The pools of one [`super::Verifier`] (a new configuration starts empty ones).
#[derive(Default)]
pub(super) struct SharedParts {
    chains: Mutex<Pool<[Actor]>>,
    scopes: Mutex<Pool<[Box<str>]>>,
}

impl std::fmt::Debug for SharedParts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SharedParts")
    }
}

impl SharedParts {
    pub(super) fn chain(&self, chain: Arc<[Actor]>) -> Arc<[Actor]> {
        // A poisoned pool is still a consistent set: sharing only ever inserts whole values.
        let mut pool = self.chains.lock().unwrap_or_else(PoisonError::into_inner);
        pool.share(chain)
    }

    pub(super) fn scopes(&self, scopes: Arc<[Box<str>]>) -> Arc<[Box<str>]> {
        let mut pool = self.scopes.lock().unwrap_or_else(PoisonError::into_inner);
        pool.share(scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(text: &str) -> Arc<[Box<str>]> {
        text.split(' ').map(Box::from).collect()
    }

    #[test]
    fn equal_parts_are_stored_once_and_dropped_when_unused() {
        let parts = SharedParts::default();
        let first = parts.scopes(scopes("calendar:read mail:send"));
        let second = parts.scopes(scopes("calendar:read mail:send"));
        assert!(Arc::ptr_eq(&first, &second));
        let other = parts.scopes(scopes("calendar:read"));
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(&*other, &*scopes("calendar:read"));
        drop((first, second, other));
        // Unused values go at the next pruning: the pool stays near the live count.
        for index in 0..(MIN_PRUNE * 3) {
            let _ = parts.scopes(scopes(&format!("s{index}")));
        }
        let pool = parts.scopes.lock().unwrap();
        assert!(pool.len() <= MIN_PRUNE * 2, "{} values pooled", pool.len());
    }
}
