//! Pure scheduling of status writes and Events (no I/O; the caller passes
//! the time in).
//!
//! [`StatusQueue`]: at most one pending write per object, always the latest
//! desired status (a change superseded before its turn is never sent),
//! handed out by how far the written status is from the decision, at most
//! one write per object per minimum interval, and failed writes retried with
//! backoff unless a newer status has replaced them meanwhile.
//!
//! [`EventGate`]: at most one Event per object and reason per interval; a
//! later one within the interval waits for its end (only the newest is
//! kept) and the ones it replaced are counted.
//!
//! [`SeriesCache`]: an Event that repeats one sent within the last minutes
//! (same object, reason and note) becomes a series of the first (its count
//! and last time, one PATCH) instead of a new Event, as Kubernetes' event
//! recorder does; an Event with another note is an Event of its own, so
//! that what an Event says is always what happened.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// What an offered desired status did to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Equal to what is written (a pending older change, if any, was dropped).
    Current,
    /// A new pending write.
    Queued,
    /// Replaced a pending write that was never sent.
    Superseded,
    /// Equal to the pending write already queued.
    AlreadyQueued,
}

/// The next thing the sender should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next<K, S> {
    /// Send this status now (it left the queue).
    Send { key: K, desired: S, attempt: u32 },
    /// Nothing is due before this time.
    WaitUntil(Instant),
    /// Nothing pending.
    Idle,
}

#[derive(Debug, Clone)]
struct Pending<S> {
    desired: S,
    priority: u64,
    not_before: Option<Instant>,
    /// Failed attempts of this object since its last successful write.
    attempt: u32,
}

/// Pending status writes, one per object.
#[derive(Debug)]
pub(crate) struct StatusQueue<K, S> {
    written: HashMap<K, (S, Instant)>,
    pending: HashMap<K, Pending<S>>,
    /// Objects whose write is being sent: never two at once for one
    /// object, so that writes land in the order they were decided.
    in_flight: std::collections::HashSet<K>,
    min_interval: Duration,
    distance: fn(Option<&S>, &S) -> u64,
}

impl<K: Eq + Hash + Clone + Ord, S: PartialEq + Clone> StatusQueue<K, S> {
    /// `distance(written, desired)` ranks pending writes: the largest first.
    pub(crate) fn new(min_interval: Duration, distance: fn(Option<&S>, &S) -> u64) -> Self {
        StatusQueue {
            written: HashMap::new(),
            pending: HashMap::new(),
            in_flight: std::collections::HashSet::new(),
            min_interval,
            distance,
        }
    }

    /// Writes waiting to be sent.
    pub(crate) fn backlog(&self) -> usize {
        self.pending.len()
    }

    /// The status last written for `key`.
    #[cfg(test)]
    pub(crate) fn written(&self, key: &K) -> Option<&S> {
        self.written.get(key).map(|(s, _)| s)
    }

    /// The latest desired status of `key`.
    pub(crate) fn offer(&mut self, key: K, desired: S) -> Offered {
        let written = self.written.get(&key);
        if written.is_some_and(|(w, _)| *w == desired) {
            return match self.pending.remove(&key) {
                Some(_) => Offered::Superseded,
                None => Offered::Current,
            };
        }
        let priority = (self.distance)(written.map(|(w, _)| w), &desired);
        let not_before = written.map(|(_, at)| *at + self.min_interval);
        match self.pending.get_mut(&key) {
            Some(p) if p.desired == desired => Offered::AlreadyQueued,
            Some(p) => {
                p.desired = desired;
                p.priority = priority;
                Offered::Superseded
            }
            None => {
                self.pending.insert(
                    key,
                    Pending {
                        desired,
                        priority,
                        not_before,
                        attempt: 0,
                    },
                );
                Offered::Queued
            }
        }
    }

    /// Takes the due write furthest from its written status (ties: the
    /// smallest key, so that the order is reproducible).
    pub(crate) fn next(&mut self, now: Instant) -> Next<K, S> {
        let mut best: Option<(&K, &Pending<S>)> = None;
        let mut earliest: Option<Instant> = None;
        for (k, p) in &self.pending {
            if self.in_flight.contains(k) {
                continue;
            }
            match p.not_before {
                Some(t) if t > now => {
                    earliest = Some(earliest.map_or(t, |e| e.min(t)));
                }
                _ => {
                    let better = match best {
                        None => true,
                        Some((bk, bp)) => {
                            p.priority > bp.priority || (p.priority == bp.priority && k < bk)
                        }
                    };
                    if better {
                        best = Some((k, p));
                    }
                }
            }
        }
        match best.map(|(k, _)| k.clone()) {
            Some(key) => match self.pending.remove(&key) {
                Some(p) => {
                    self.in_flight.insert(key.clone());
                    Next::Send {
                        key,
                        desired: p.desired,
                        attempt: p.attempt,
                    }
                }
                None => Next::Idle,
            },
            None => earliest.map_or(Next::Idle, Next::WaitUntil),
        }
    }

    /// `desired` was written at `now`; returns the status written before.
    pub(crate) fn mark_written(&mut self, key: &K, desired: S, now: Instant) -> Option<S> {
        self.in_flight.remove(key);
        let previous = self
            .written
            .insert(key.clone(), (desired.clone(), now))
            .map(|(s, _)| s);
        // A newer status offered while this one was in flight stays
        // queued, ranked against what is now written.
        if let Some(p) = self.pending.get_mut(key) {
            if p.desired == desired {
                self.pending.remove(key);
            } else {
                p.priority = (self.distance)(Some(&desired), &p.desired);
                p.not_before = Some(now + self.min_interval);
                p.attempt = 0;
            }
        }
        previous
    }

    /// Writing `desired` failed: it is tried again at `retry_at`, unless a
    /// newer status was offered meanwhile (that one goes instead, not
    /// before `retry_at` either).
    pub(crate) fn mark_failed(&mut self, key: K, desired: S, attempt: u32, retry_at: Instant) {
        self.in_flight.remove(&key);
        let written = self.written.get(&key).map(|(w, _)| w);
        match self.pending.get_mut(&key) {
            Some(p) => {
                p.not_before = Some(p.not_before.map_or(retry_at, |t| t.max(retry_at)));
                p.attempt = attempt + 1;
            }
            None => {
                let priority = (self.distance)(written, &desired);
                self.pending.insert(
                    key,
                    Pending {
                        desired,
                        priority,
                        not_before: Some(retry_at),
                        attempt: attempt + 1,
                    },
                );
            }
        }
    }

    /// Sending `key` ended without a write and without a retry (the
    /// object is gone).
    pub(crate) fn mark_dropped(&mut self, key: &K) {
        self.in_flight.remove(key);
    }

    /// Forgets objects that no longer exist; returns how many pending
    /// writes were dropped with them.
    pub(crate) fn retain(&mut self, live: impl Fn(&K) -> bool) -> usize {
        self.written.retain(|k, _| live(k));
        let before = self.pending.len();
        self.pending.retain(|k, _| live(k));
        before - self.pending.len()
    }
}

/// How long to wait before retry `attempt` (0-based): exponential from
/// `base` up to `cap`, scaled by `jitter` in [0, 1] to between half and the
/// whole of it (so that many objects failing together do not retry in
/// step), and never before the server's `Retry-After`.
pub(crate) fn retry_delay(
    attempt: u32,
    base: Duration,
    cap: Duration,
    jitter: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
    let backoff = exp.min(cap).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    backoff.max(retry_after.unwrap_or_default())
}

/// What to do about a failed API call, by its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// 409, 429, 5xx, or no answer at all: retry with backoff, not before
    /// the `Retry-After` if the server gave one.
    Retry { retry_after: Option<Duration> },
    /// 403: a permission is missing (logged once); retried slowly.
    Forbidden,
    /// 404: the object is gone; the inventory will drop it.
    NotFound,
    /// Any other answer (400, 422, ...): the request itself is wrong and
    /// resending it will not help; retried slowly, logged.
    Rejected,
}

/// Classifies an answer code (None: no answer, a transport error).
pub(crate) fn classify(code: Option<u16>, retry_after_secs: u32) -> FailureClass {
    let retry_after = (retry_after_secs > 0).then(|| Duration::from_secs(retry_after_secs.into()));
    match code {
        None | Some(409) | Some(429) | Some(500..=599) => FailureClass::Retry { retry_after },
        Some(403) => FailureClass::Forbidden,
        Some(404) => FailureClass::NotFound,
        Some(_) => FailureClass::Rejected,
    }
}

#[derive(Debug, Clone)]
struct Gated<T> {
    sent_at: Instant,
    waiting: Option<T>,
}

/// At most one Event per key (object and reason) per interval.
#[derive(Debug)]
pub(crate) struct EventGate<K, T> {
    interval: Duration,
    entries: HashMap<K, Gated<T>>,
}

impl<K: Eq + Hash + Clone, T> EventGate<K, T> {
    pub(crate) fn new(interval: Duration) -> Self {
        EventGate {
            interval,
            entries: HashMap::new(),
        }
    }

    /// Some(event) when it may go now; None when it waits for the end of
    /// the interval. The bool says whether it replaced an event that was
    /// waiting (which is then never sent).
    pub(crate) fn offer(&mut self, key: K, event: T, now: Instant) -> (Option<T>, bool) {
        match self.entries.get_mut(&key) {
            Some(g) if now < g.sent_at + self.interval => {
                let replaced = g.waiting.replace(event).is_some();
                (None, replaced)
            }
            Some(g) => {
                g.sent_at = now;
                g.waiting = None;
                (Some(event), false)
            }
            None => {
                self.entries.insert(
                    key,
                    Gated {
                        sent_at: now,
                        waiting: None,
                    },
                );
                (Some(event), false)
            }
        }
    }

    /// Waiting events whose interval has passed; they count as sent now.
    /// Keys with nothing waiting and an interval long past are forgotten.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(K, T)> {
        let interval = self.interval;
        let mut out = Vec::new();
        self.entries.retain(|k, g| {
            if now >= g.sent_at + interval {
                match g.waiting.take() {
                    Some(e) => {
                        g.sent_at = now;
                        out.push((k.clone(), e));
                    }
                    None => return false,
                }
            }
            true
        });
        out
    }

    /// Sending `event` failed: it goes again when the key's interval ends
    /// (which also waits out any `Retry-After`, capped at a minute), unless
    /// a newer one is waiting by then (that one goes instead). Returns
    /// whether it was kept.
    pub(crate) fn retry(&mut self, key: K, event: T, now: Instant) -> bool {
        let g = self.entries.entry(key).or_insert(Gated {
            sent_at: now,
            waiting: None,
        });
        if g.waiting.is_some() {
            return false;
        }
        g.waiting = Some(event);
        true
    }

    /// Events waiting for their interval.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.entries
            .values()
            .filter(|g| g.waiting.is_some())
            .count()
    }
}

/// How an Event goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Publish {
    /// A new Event object.
    Create,
    /// A repeat of the Event `name`: its series now counts `count`.
    Repeat { name: String, count: u32 },
}

#[derive(Debug, Clone)]
struct Sent {
    name: String,
    count: u32,
    last: Instant,
}

/// Events sent within `ttl`, by key (object, reason and note).
#[derive(Debug)]
pub(crate) struct SeriesCache<K> {
    ttl: Duration,
    entries: HashMap<K, Sent>,
}

impl<K: Eq + Hash + Clone> SeriesCache<K> {
    pub(crate) fn new(ttl: Duration) -> Self {
        SeriesCache {
            ttl,
            entries: HashMap::new(),
        }
    }

    /// How the Event of `key` goes out at `now`.
    pub(crate) fn plan(&self, key: &K, now: Instant) -> Publish {
        match self.entries.get(key) {
            Some(s) if now < s.last + self.ttl => Publish::Repeat {
                name: s.name.clone(),
                count: s.count + 1,
            },
            _ => Publish::Create,
        }
    }

    /// The Event of `key` was created as `name`.
    pub(crate) fn created(&mut self, key: K, name: String, now: Instant) {
        self.entries.insert(
            key,
            Sent {
                name,
                count: 1,
                last: now,
            },
        );
    }

    /// The series of `key` was updated to `count`.
    pub(crate) fn repeated(&mut self, key: &K, count: u32, now: Instant) {
        if let Some(s) = self.entries.get_mut(key) {
            s.count = count;
            s.last = now;
        }
    }

    /// The Event of `key` is gone (the API server expired it): the next
    /// one is created anew.
    pub(crate) fn forget(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops series whose last Event is older than the ttl.
    pub(crate) fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries.retain(|_, s| now < s.last + ttl);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_repeat_of_the_same_note_is_a_series_another_note_an_event() {
        let t = Instant::now();
        let s = |secs: u64| t + Duration::from_secs(secs);
        let mut c: SeriesCache<(&str, &str)> = SeriesCache::new(Duration::from_secs(360));
        let three = ("a", "desired replicas 3");
        let four = ("a", "desired replicas 4");
        assert_eq!(c.plan(&three, t), Publish::Create);
        c.created(three, "a.1".into(), t);
        // Another note: an Event of its own, not a count on the first.
        assert_eq!(c.plan(&four, s(60)), Publish::Create);
        c.created(four, "a.2".into(), s(60));
        let repeat = |count| Publish::Repeat {
            name: "a.1".into(),
            count,
        };
        assert_eq!(c.plan(&three, s(120)), repeat(2));
        c.repeated(&three, 2, s(120));
        assert_eq!(
            c.plan(&three, s(400)),
            repeat(3),
            "the ttl runs from the last repeat"
        );
        c.repeated(&three, 3, s(400));
        // Past the ttl after the last one: a new Event.
        assert_eq!(c.plan(&three, s(760)), Publish::Create);
        c.expire(s(760));
        assert_eq!(c.len(), 0, "both series expired");
        // An Event the API server no longer has: created anew.
        c.created(three, "a.3".into(), s(800));
        c.forget(&three);
        assert_eq!(c.plan(&three, s(801)), Publish::Create);
    }

    #[test]
    fn a_failed_event_goes_again_at_the_end_of_its_interval_unless_a_newer_one_waits() {
        let t = Instant::now();
        let mut g: EventGate<&str, u32> = EventGate::new(Duration::from_secs(60));
        assert_eq!(g.offer("a", 1, t), (Some(1), false));
        // Sending 1 failed: retried when the minute ends.
        assert!(g.retry("a", 1, t));
        assert!(g.due(t + Duration::from_secs(59)).is_empty());
        assert_eq!(g.due(t + Duration::from_secs(60)), [("a", 1)]);
        // Failed again, but a newer Event is waiting by then: the newer goes.
        let t2 = t + Duration::from_secs(60);
        assert_eq!(g.offer("a", 2, t2), (None, false));
        assert!(!g.retry("a", 1, t2));
        assert_eq!(g.due(t2 + Duration::from_secs(60)), [("a", 2)]);
    }

    fn distance(written: Option<&i32>, desired: &i32) -> u64 {
        match written {
            None => u64::MAX,
            Some(w) => u64::from(w.abs_diff(*desired)),
        }
    }

    fn queue(min: u64) -> StatusQueue<&'static str, i32> {
        StatusQueue::new(Duration::from_secs(min), distance)
    }

    fn drain(q: &mut StatusQueue<&'static str, i32>, now: Instant) -> Vec<(&'static str, i32)> {
        let mut out = Vec::new();
        while let Next::Send { key, desired, .. } = q.next(now) {
            q.mark_written(&key, desired, now);
            out.push((key, desired));
        }
        out
    }

    #[test]
    fn only_the_latest_status_is_written_and_superseded_ones_never() {
        let t = Instant::now();
        let mut q = queue(0);
        assert_eq!(q.offer("a", 1), Offered::Queued);
        assert_eq!(q.offer("a", 2), Offered::Superseded);
        assert_eq!(q.offer("a", 3), Offered::Superseded);
        assert_eq!(q.offer("a", 3), Offered::AlreadyQueued);
        assert_eq!(q.backlog(), 1);
        assert_eq!(drain(&mut q, t), [("a", 3)]);
        // Back to what is written before its turn: nothing is sent.
        assert_eq!(q.offer("a", 4), Offered::Queued);
        assert_eq!(q.offer("a", 3), Offered::Superseded);
        assert_eq!(q.backlog(), 0);
        assert_eq!(q.offer("a", 3), Offered::Current);
        assert_eq!(drain(&mut q, t), []);
    }

    #[test]
    fn the_write_furthest_from_its_decision_goes_first() {
        let t = Instant::now();
        let mut q = queue(0);
        for (k, v) in [("a", 10), ("b", 10), ("c", 10), ("d", 10)] {
            q.offer(k, v);
        }
        drain(&mut q, t);
        // Written 10 each; decisions now 11, 20, 9 and 14; e never written.
        for (k, v) in [("a", 11), ("b", 20), ("c", 9), ("d", 14), ("e", 1)] {
            q.offer(k, v);
        }
        assert_eq!(
            drain(&mut q, t),
            [("e", 1), ("b", 20), ("d", 14), ("a", 11), ("c", 9)]
        );
    }

    #[test]
    fn one_write_per_object_per_interval() {
        let t = Instant::now();
        let mut q = queue(10);
        q.offer("a", 1);
        assert_eq!(drain(&mut q, t), [("a", 1)]);
        q.offer("a", 2);
        assert_eq!(
            q.next(t + Duration::from_secs(1)),
            Next::WaitUntil(t + Duration::from_secs(10))
        );
        q.offer("a", 3);
        assert_eq!(drain(&mut q, t + Duration::from_secs(10)), [("a", 3)]);
    }

    #[test]
    fn a_failed_write_is_retried_unless_a_newer_one_replaced_it() {
        let t = Instant::now();
        let later = t + Duration::from_secs(2);
        let mut q = queue(0);
        q.offer("a", 1);
        let Next::Send {
            key,
            desired,
            attempt,
        } = q.next(t)
        else {
            panic!("a write is due")
        };
        assert_eq!((key, desired, attempt), ("a", 1, 0));
        q.mark_failed(key, desired, attempt, later);
        assert_eq!(q.next(t), Next::WaitUntil(later));
        assert_eq!(
            q.next(later),
            Next::Send {
                key: "a",
                desired: 1,
                attempt: 1
            }
        );
        // Fails again; meanwhile the decision moves on: the newer one goes, after the backoff.
        q.mark_failed("a", 1, 1, later + Duration::from_secs(4));
        q.offer("a", 5);
        assert_eq!(
            q.next(later + Duration::from_secs(4)),
            Next::Send {
                key: "a",
                desired: 5,
                attempt: 2
            }
        );
        // In flight while a newer one arrives: both end up written in order.
        q.offer("a", 6);
        q.mark_written(&"a", 5, later);
        assert_eq!(q.written(&"a"), Some(&5));
        assert_eq!(drain(&mut q, later), [("a", 6)]);
    }

    #[test]
    fn an_object_is_never_sent_twice_at_once() {
        let t = Instant::now();
        let mut q = queue(0);
        q.offer("a", 1);
        q.offer("b", 1);
        let Next::Send { key, desired, .. } = q.next(t) else {
            panic!("a is due")
        };
        assert_eq!((key, desired), ("a", 1));
        // A newer status of a, offered while 1 is in flight, waits for it.
        q.offer("a", 2);
        assert_eq!(
            q.next(t),
            Next::Send {
                key: "b",
                desired: 1,
                attempt: 0
            }
        );
        assert_eq!(q.next(t), Next::Idle);
        q.mark_written(&"a", 1, t);
        assert_eq!(
            q.next(t),
            Next::Send {
                key: "a",
                desired: 2,
                attempt: 0
            }
        );
        q.mark_dropped(&"a");
        q.offer("a", 3);
        assert_eq!(
            q.next(t),
            Next::Send {
                key: "a",
                desired: 3,
                attempt: 0
            }
        );
    }

    #[test]
    fn departed_objects_are_forgotten() {
        let t = Instant::now();
        let mut q = queue(0);
        q.offer("a", 1);
        q.offer("b", 1);
        assert_eq!(q.retain(|k| *k == "b"), 1);
        assert_eq!(drain(&mut q, t), [("b", 1)]);
    }

    #[test]
    fn retry_delays_grow_are_capped_jittered_and_honour_retry_after() {
        let base = Duration::from_millis(200);
        let cap = Duration::from_secs(30);
        for (attempt, jitter, after, want_ms) in [
            (0, 1.0, None, 200),
            (0, 0.0, None, 100),
            (1, 1.0, None, 400),
            (3, 1.0, None, 1600),
            (10, 1.0, None, 30_000),
            (40, 0.5, None, 22_500),
            (0, 1.0, Some(5), 5000),
            (10, 1.0, Some(5), 30_000),
        ] {
            let got = retry_delay(attempt, base, cap, jitter, after.map(Duration::from_secs));
            assert_eq!(
                got.as_millis(),
                want_ms,
                "attempt {attempt} jitter {jitter}"
            );
        }
    }

    #[test]
    fn answers_are_classified() {
        for (code, after, want) in [
            (Some(409), 0, FailureClass::Retry { retry_after: None }),
            (
                Some(429),
                3,
                FailureClass::Retry {
                    retry_after: Some(Duration::from_secs(3)),
                },
            ),
            (Some(500), 0, FailureClass::Retry { retry_after: None }),
            (
                Some(503),
                1,
                FailureClass::Retry {
                    retry_after: Some(Duration::from_secs(1)),
                },
            ),
            (None, 0, FailureClass::Retry { retry_after: None }),
            (Some(403), 0, FailureClass::Forbidden),
            (Some(404), 0, FailureClass::NotFound),
            (Some(422), 0, FailureClass::Rejected),
            (Some(400), 0, FailureClass::Rejected),
        ] {
            assert_eq!(classify(code, after), want, "{code:?}");
        }
    }

    #[test]
    fn one_event_per_key_per_interval_and_the_newest_waits() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut g: EventGate<&str, i32> = EventGate::new(s(60));
        assert_eq!(g.offer("a", 1, t), (Some(1), false));
        assert_eq!(
            g.offer("b", 1, t),
            (Some(1), false),
            "another key is independent"
        );
        assert_eq!(g.offer("a", 2, t + s(10)), (None, false));
        assert_eq!(
            g.offer("a", 3, t + s(20)),
            (None, true),
            "2 is replaced, never sent"
        );
        assert_eq!(g.waiting(), 1);
        assert!(g.due(t + s(59)).is_empty());
        assert_eq!(g.due(t + s(60)), [("a", 3)]);
        // The waiting one counted as sent at 60 s.
        assert_eq!(g.offer("a", 4, t + s(100)), (None, false));
        assert_eq!(g.due(t + s(120)), [("a", 4)]);
        assert_eq!(g.offer("a", 5, t + s(181)), (Some(5), false));
    }

    proptest! {
        /// Whatever the offers, an object's writes are its latest desired
        /// statuses at the time each was taken, the final written status is
        /// its last offer, and nothing is sent twice in a row.
        #[test]
        fn the_written_status_converges_to_the_last_offer(
            ops in proptest::collection::vec((0usize..4, 0i32..6, any::<bool>()), 1..200)
        ) {
            const KEYS: [&str; 4] = ["a", "b", "c", "d"];
            let t = Instant::now();
            let mut q = queue(0);
            let mut last: HashMap<&str, i32> = HashMap::new();
            let mut sent: HashMap<&str, Vec<i32>> = HashMap::new();
            for (k, v, send) in ops {
                q.offer(KEYS[k], v);
                last.insert(KEYS[k], v);
                if send {
                    if let Next::Send { key, desired, .. } = q.next(t) {
                        prop_assert_eq!(Some(&desired), last.get(key));
                        q.mark_written(&key, desired, t);
                        sent.entry(key).or_default().push(desired);
                    }
                }
            }
            for (key, desired) in drain(&mut q, t) {
                sent.entry(key).or_default().push(desired);
            }
            for (key, v) in &last {
                prop_assert_eq!(q.written(key), Some(v));
                let writes = &sent[key];
                prop_assert!(writes.windows(2).all(|w| w[0] != w[1]), "{:?}", writes);
            }
            prop_assert_eq!(q.backlog(), 0);
        }

        /// Never two events of one key within the interval.
        #[test]
        fn never_two_events_per_key_within_the_interval(
            offers in proptest::collection::vec((0usize..3, 0u64..600), 1..200)
        ) {
            let t = Instant::now();
            let mut offers = offers;
            offers.sort_by_key(|o| o.1);
            let mut g: EventGate<usize, u64> = EventGate::new(Duration::from_secs(60));
            let mut sent: Vec<(usize, u64)> = Vec::new();
            for (k, at) in offers {
                let now = t + Duration::from_secs(at);
                sent.extend(g.due(now).into_iter().map(|(k, _)| (k, at)));
                if g.offer(k, at, now).0.is_some() {
                    sent.push((k, at));
                }
            }
            for k in 0..3 {
                let times: Vec<u64> = sent.iter().filter(|s| s.0 == k).map(|s| s.1).collect();
                prop_assert!(times.windows(2).all(|w| w[1] >= w[0] + 60), "{:?}", times);
            }
        }
    }
}
