//! The token bucket behind an API budget: `burst` tokens refilled at
//! `qps`, and one queue of waiting calls per priority. Pure: the caller
//! passes the time in.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::{Priority, RateLimitError, RateLimitSettings, MAX_RETRY_AFTER, PRIORITIES};

/// A waiting call's place in a [`TokenBucket`]'s queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    id: u64,
    priority: Priority,
}

/// Floating-point slack when comparing token counts.
const EPSILON: f64 = 1e-9;

/// A token bucket: `burst` tokens, refilled at `qps` per second, and the
/// calls waiting for them. Pure.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    qps: f64,
    burst: f64,
    /// Tokens left at `updated` (never negative: a token is taken only
    /// when the call goes out).
    tokens: f64,
    updated: Instant,
    /// No call goes out before this (a `Retry-After`).
    held_until: Option<Instant>,
    /// Waiting calls, one FIFO queue per priority.
    queues: [VecDeque<u64>; PRIORITIES],
    next_id: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(settings: RateLimitSettings, now: Instant) -> Result<Self, RateLimitError> {
        settings.validate()?;
        Ok(TokenBucket {
            qps: settings.qps,
            burst: f64::from(settings.burst),
            tokens: f64::from(settings.burst),
            updated: now,
            held_until: None,
            queues: Default::default(),
            next_id: 0,
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.updated = self.updated.max(now);
    }

    /// Calls waiting, of every priority.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Calls ahead of `ticket` (None when it is not queued).
    pub(super) fn ahead_of(&self, ticket: Ticket) -> Option<usize> {
        let p = ticket.priority as usize;
        let own = self.queues[p].iter().position(|&id| id == ticket.id)?;
        Some(self.queues[..p].iter().map(VecDeque::len).sum::<usize>() + own)
    }

    /// When a call with `ahead` calls before it can go out, if every call
    /// ahead goes out as soon as it can.
    fn turn(&self, ahead: usize) -> Instant {
        let missing = ahead as f64 + 1.0 - self.tokens;
        let for_token = if missing <= EPSILON {
            self.updated
        } else {
            self.updated + Duration::from_secs_f64(missing / self.qps)
        };
        self.held_until.map_or(for_token, |h| h.max(for_token))
    }

    /// Queues a call of `priority` (behind every call of its priority or a
    /// higher one), or refuses it, taking nothing, when its estimated turn
    /// is more than `max_wait` away; the error says how many calls are
    /// ahead.
    pub(crate) fn join(
        &mut self,
        now: Instant,
        priority: Priority,
        max_wait: Option<Duration>,
    ) -> Result<Ticket, usize> {
        self.refill(now);
        let p = priority as usize;
        let ahead = self.queues[..=p].iter().map(VecDeque::len).sum::<usize>();
        if let Some(max) = max_wait {
            if self.turn(ahead).saturating_duration_since(now) > max {
                return Err(ahead);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queues[p].push_back(id);
        Ok(Ticket { id, priority })
    }

    /// Takes the token of `ticket` if its turn has come (it is first in the
    /// queues, a token is there and no `Retry-After` holds the bucket); it
    /// then leaves the queue. Otherwise says when its turn is estimated to
    /// come: at or before `now` when only the calls ahead of it have yet to
    /// go, which they announce.
    pub(crate) fn try_take(&mut self, now: Instant, ticket: Ticket) -> Result<(), Instant> {
        self.refill(now);
        let Some(ahead) = self.ahead_of(ticket) else {
            return Ok(());
        };
        let held = self.held_until.is_some_and(|h| h > now);
        if ahead == 0 && !held && self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            self.leave(ticket);
            return Ok(());
        }
        Err(self.turn(ahead))
    }

    /// Removes a call that gave up; it took no token.
    pub(crate) fn leave(&mut self, ticket: Ticket) {
        let q = &mut self.queues[ticket.priority as usize];
        if let Some(i) = q.iter().position(|&id| id == ticket.id) {
            q.remove(i);
        }
    }

    /// Holds every call until `now + wait` (capped at [`MAX_RETRY_AFTER`]).
    pub(crate) fn hold_for(&mut self, now: Instant, wait: Duration) {
        let until = now + wait.min(MAX_RETRY_AFTER);
        self.held_until = Some(self.held_until.map_or(until, |h| h.max(until)));
    }
}
