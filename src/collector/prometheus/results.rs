//! First cache level: raw query results by PromQL text, with a TTL and a
//! bound on the number of entries (least recently fetched evicted first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// One series of a query result: its labels of interest and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValue {
    pub namespace: String,
    pub pod: String,
    pub model_name: String,
    pub value: f64,
}

/// Query results keyed by PromQL.
#[derive(Debug)]
pub struct QueryResultCache {
    entries: DashMap<String, (Instant, Arc<Vec<SeriesValue>>)>,
    ttl: Duration,
    capacity: usize,
}

impl QueryResultCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        QueryResultCache {
            entries: DashMap::new(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// The result of `query` if it was fetched within the TTL.
    pub fn get(&self, query: &str) -> Option<Arc<Vec<SeriesValue>>> {
        let e = self.entries.get(query)?;
        (e.0.elapsed() <= self.ttl).then(|| Arc::clone(&e.1))
    }

    pub fn insert(&self, query: String, result: Arc<Vec<SeriesValue>>) {
        self.entries.insert(query, (Instant::now(), result));
        if self.entries.len() > self.capacity {
            self.evict();
        }
    }

    /// Drops expired entries, then the oldest ones until within capacity.
    fn evict(&self) {
        self.entries.retain(|_, (t, _)| t.elapsed() <= self.ttl);
        while self.entries.len() > self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|e| e.value().0)
                .map(|e| e.key().clone());
            match oldest {
                Some(k) => {
                    self.entries.remove(&k);
                }
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_stays_within_capacity() {
        let c = QueryResultCache::new(Duration::from_secs(60), 2);
        c.insert("a".into(), Arc::new(vec![]));
        c.insert("b".into(), Arc::new(vec![]));
        c.insert("c".into(), Arc::new(vec![]));
        assert_eq!(c.len(), 2);
        assert!(c.get("a").is_none(), "the oldest entry is evicted first");
        assert!(c.get("c").is_some());
        let short = QueryResultCache::new(Duration::ZERO, 8);
        short.insert("x".into(), Arc::new(vec![]));
        std::thread::sleep(Duration::from_millis(2));
        assert!(short.get("x").is_none(), "expired entries are not served");
    }
}
