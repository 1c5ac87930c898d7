//! Caches of review answers (TokenReview, SubjectAccessReview), keyed by
//! client input and therefore built to withstand a hostile client:
//!
//! - the key is a keyed hash (HMAC-SHA-256 with a per-process random key)
//!   of the input, never the input itself: a 60 KB token costs 32 bytes of
//!   key, and the cache holds no credential in clear;
//! - the cache is bounded in entries **and** bytes: each entry weighs its
//!   estimated size, but at least `max_bytes / max_entries`, so neither
//!   bound can be exceeded;
//! - every entry expires after its own TTL (allowed and denied answers can
//!   differ) and is evicted then, or earlier by the cache's LFU/LRU policy
//!   when full; nothing clears the whole cache;
//! - concurrent lookups of the same missing key share one review.
//!
//! The cache itself is `moka`'s (a maintained concurrent cache with TinyLFU
//! admission, weights and per-entry expiry).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::hmac;

/// The cache key: HMAC-SHA-256 of the input.
pub(crate) type Digest = [u8; 32];

/// Derives cache keys from client input with a key nobody else knows, so
/// that neither a memory dump nor a crafted input reveals or collides keys.
pub(crate) struct KeyHasher(hmac::Key);

/// The operating system gave no random bytes for the hash key.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw a random key for the authentication caches from the operating system")]
pub(crate) struct NoRandomKey;

impl KeyHasher {
    pub(crate) fn random() -> Result<Self, NoRandomKey> {
        let rng = ring::rand::SystemRandom::new();
        hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map(KeyHasher)
            .map_err(|_| NoRandomKey)
    }

    /// The digest of a sequence of fields. Each field is length-prefixed,
    /// so `["ab", "c"]` and `["a", "bc"]` give different digests.
    pub(crate) fn digest<'a>(&self, fields: impl IntoIterator<Item = &'a [u8]>) -> Digest {
        let mut ctx = hmac::Context::with_key(&self.0);
        for f in fields {
            ctx.update(&(f.len() as u64).to_le_bytes());
            ctx.update(f);
        }
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// Bounds of one cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheBounds {
    pub(crate) max_entries: u64,
    pub(crate) max_bytes: u64,
}

impl CacheBounds {
    /// The weight of an entry of `bytes` estimated size: never below the
    /// share that keeps the entry count within `max_entries`.
    pub(crate) fn weight(&self, bytes: usize) -> u32 {
        let floor = self.max_bytes / self.max_entries.max(1);
        let w = (bytes as u64).max(floor).max(1);
        u32::try_from(w).unwrap_or(u32::MAX)
    }
}

/// A cached answer and how long it may be reused.
#[derive(Clone)]
struct Entry<V> {
    value: V,
    ttl: Duration,
}

/// Expires each entry after the TTL it was stored with.
struct PerEntryTtl;

impl<V> moka::Expiry<Digest, Entry<V>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &Entry<V>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Fixed cost of an entry besides its value: key, TTL, moka's node.
const ENTRY_OVERHEAD: usize = 32 + 16 + 96;

/// A bounded cache of review answers.
pub(crate) struct ReviewCache<V> {
    cache: moka::future::Cache<Digest, Entry<V>>,
    /// Lookups answered from the cache and lookups that ran a review of
    /// their own, once counted (`wva_auth_cache_lookups_total`).
    lookups: std::sync::OnceLock<CacheCounters>,
}

/// The hit and miss counters of one cache.
#[derive(Clone, Debug)]
pub(crate) struct CacheCounters {
    pub(crate) hit: prometheus_client::metrics::counter::Counter,
    pub(crate) miss: prometheus_client::metrics::counter::Counter,
}

impl<V: Clone + Send + Sync + 'static> ReviewCache<V> {
    /// A cache within `bounds`; `size_of` estimates the heap bytes of a value.
    pub(crate) fn new(bounds: CacheBounds, size_of: fn(&V) -> usize) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(bounds.max_bytes)
            .weigher(move |_k: &Digest, e: &Entry<V>| {
                bounds.weight(ENTRY_OVERHEAD + std::mem::size_of::<V>() + size_of(&e.value))
            })
            .expire_after(PerEntryTtl)
            .build();
        ReviewCache {
            cache,
            lookups: std::sync::OnceLock::new(),
        }
    }

    /// Counts every later lookup into `counters` (the first call wins).
    pub(crate) fn count_lookups(&self, counters: CacheCounters) {
        let _ = self.lookups.set(counters);
    }

    /// The cached answer for `key`, or the answer of `review` (which also
    /// says how long to keep it). Concurrent calls with the same missing
    /// key run one review and share its answer; a failed review is not
    /// cached.
    pub(crate) async fn get_or_review<E, F>(&self, key: Digest, review: F) -> Result<V, Arc<E>>
    where
        F: Future<Output = Result<(V, Duration), E>>,
        E: Send + Sync + 'static,
    {
        // Set when this lookup ran the review; a lookup that waited on
        // another's review of the same key counts as a hit.
        let mut reviewed = false;
        let entry = self
            .cache
            .try_get_with(key, async {
                reviewed = true;
                review.await.map(|(value, ttl)| Entry { value, ttl })
            })
            .await;
        if let Some(c) = self.lookups.get() {
            if reviewed { &c.miss } else { &c.hit }.inc();
        }
        Ok(entry?.value)
    }

    /// The cached answer, if any and not expired.
    #[cfg(test)]
    pub(crate) async fn get(&self, key: &Digest) -> Option<V> {
        self.cache.get(key).await.map(|e| e.value)
    }

    /// Entries held (after pending evictions have run).
    #[cfg(test)]
    pub(crate) async fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    /// Total weight held, in estimated bytes (after pending evictions have run).
    #[cfg(test)]
    pub(crate) async fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn bounds(entries: u64, bytes: u64) -> CacheBounds {
        CacheBounds {
            max_entries: entries,
            max_bytes: bytes,
        }
    }

    #[test]
    fn weights_respect_both_bounds() {
        let b = bounds(1000, 1_000_000);
        let cases = [
            (0, 1000),
            (10, 1000),
            (999, 1000),
            (1000, 1000),
            (5000, 5000),
        ];
        for (bytes, want) in cases {
            assert_eq!(b.weight(bytes), want, "{bytes} bytes");
        }
        assert_eq!(
            bounds(0, 10).weight(0),
            10,
            "zero entries is treated as one"
        );
        assert_eq!(
            bounds(1, u64::MAX).weight(0),
            u32::MAX,
            "weights saturate instead of wrapping"
        );
    }

    #[test]
    fn digests_are_keyed_and_length_prefixed() {
        let h = KeyHasher::random().unwrap();
        let other = KeyHasher::random().unwrap();
        let ab_c = h.digest([&b"ab"[..], b"c"]);
        assert_ne!(ab_c, h.digest([&b"a"[..], b"bc"]));
        assert_eq!(ab_c, h.digest([&b"ab"[..], b"c"]));
        assert_ne!(ab_c, other.digest([&b"ab"[..], b"c"]), "another key");
    }

    #[tokio::test]
    async fn lookups_count_as_hits_or_misses_and_failed_reviews_as_misses() {
        let cache: ReviewCache<u32> = ReviewCache::new(bounds(100, 100 * 1024), |_| 0);
        let counters = CacheCounters {
            hit: Default::default(),
            miss: Default::default(),
        };
        cache.count_lookups(counters.clone());
        let h = KeyHasher::random().unwrap();
        let (a, b) = (h.digest([&b"a"[..]]), h.digest([&b"b"[..]]));
        for key in [a, a, a, b] {
            cache
                .get_or_review::<(), _>(key, async { Ok((7, Duration::from_secs(60))) })
                .await
                .unwrap();
        }
        let failing = h.digest([&b"c"[..]]);
        for _ in 0..2 {
            let r = cache
                .get_or_review(failing, async { Err::<(u32, Duration), _>("down") })
                .await;
            assert!(r.is_err());
        }
        // a: one review then two hits; b: one review; c: two failed reviews.
        assert_eq!((counters.hit.get(), counters.miss.get()), (2, 4));
    }

    #[tokio::test]
    async fn holds_no_more_entries_or_bytes_than_its_bounds() {
        let b = bounds(100, 100 * 1024);
        let cache: ReviewCache<String> = ReviewCache::new(b, |s| s.len());
        let h = KeyHasher::random().unwrap();
        for i in 0..2_000u32 {
            let key = h.digest([&i.to_le_bytes()[..]]);
            // Values of 0 to 4 KiB: small ones are bounded by count, large by bytes.
            let value = "x".repeat((i as usize % 5) * 1024);
            let got = cache
                .get_or_review::<(), _>(key, async { Ok((value, Duration::from_secs(60))) })
                .await
                .unwrap();
            assert_eq!(got.len(), (i as usize % 5) * 1024);
        }
        let (n, bytes) = (cache.entry_count().await, cache.weighted_size().await);
        assert!(n > 0 && n <= 100, "entries {n}");
        assert!(bytes <= 100 * 1024, "bytes {bytes}");
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let cache: ReviewCache<bool> = ReviewCache::new(bounds(10, 10_000), |_| 0);
        let h = KeyHasher::random().unwrap();
        let (short, long) = (h.digest([&b"short"[..]]), h.digest([&b"long"[..]]));
        cache
            .get_or_review::<(), _>(short, async { Ok((false, Duration::from_millis(200))) })
            .await
            .unwrap();
        cache
            .get_or_review::<(), _>(long, async { Ok((true, Duration::from_secs(600))) })
            .await
            .unwrap();
        assert_eq!(cache.get(&short).await, Some(false));
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.get(&short).await.is_some() {
            assert!(Instant::now() < deadline, "the short entry never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(cache.get(&long).await, Some(true), "the other entry stays");
        // Eviction runs in moka's housekeeping, whose timer wheel ticks about
        // once a second: wait for it, boundedly.
        while cache.entry_count().await != 1 {
            assert!(
                Instant::now() < deadline,
                "the expired entry was never evicted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_review_and_errors_are_not_cached() {
        let cache: Arc<ReviewCache<u32>> = Arc::new(ReviewCache::new(bounds(10, 10_000), |_| 0));
        let h = KeyHasher::random().unwrap();
        let key = h.digest([&b"token"[..]]);
        let reviews = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, reviews) = (Arc::clone(&cache), Arc::clone(&reviews));
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_review::<(), _>(key, async move {
                        reviews.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok((7, Duration::from_secs(60)))
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(reviews.load(Ordering::SeqCst), 1);

        let failing = h.digest([&b"fails"[..]]);
        for _ in 0..2 {
            let r = cache
                .get_or_review(failing, async { Err::<(u32, Duration), _>("down") })
                .await;
            assert_eq!(r.unwrap_err().as_ref(), &"down");
        }
        assert_eq!(
            cache.get(&failing).await,
            None,
            "errors are retried, not cached"
        );
    }
}
