//! Which replicas work off a backlog, and which reading of their queue
//! says how long it is. Pure.

use super::SloReplica;

/// Working off a backlog: more queued than it finishes within the
/// objective.
pub(super) fn backlogged(r: &SloReplica, ttft: f64) -> bool {
    r.waiting > completions(r) * ttft
}

/// A queue longer than its replica finishes within the start-up delay (a
/// load step's backlog), with a newest value to read it from: its
/// one-minute peak shows the drain a minute late, and meanwhile the
/// replica's completions, old arrivals, were counted as new ones (with
/// new replicas joining, a half-KV burst's estimate read 45-48 req/s for
/// 30 and asked for maxReplicas). A shorter queue keeps the peak: a
/// clump's queue drains in seconds, and the peak's memory of it holds
/// capacity for the next clump (the newest value there cost Azure's code
/// trace 1-3 violation minutes).
pub(super) fn long_backlog(r: &SloReplica, startup: f64) -> bool {
    r.waiting_latest.is_some() && r.waiting > completions(r) * startup
}

/// The queue a replica's held capacity is sized from: its newest value,
/// else the one-minute peak. What the replica still has to finish holds
/// it, not what it had: a clump's queue, drained seconds ago, held
/// capacity for a minute from the peak (and a joining replica's levelling
/// queue the same), where the arrival estimate keeps the peak's memory of
/// a short queue on purpose ([`long_backlog`]).
pub(super) fn queue(r: &SloReplica) -> f64 {
    r.waiting_latest.unwrap_or(r.waiting)
}

/// A replica's finished requests per second; 0 when unknown (the readings
/// are trusted on entry: finite and not negative).
pub(super) fn completions(r: &SloReplica) -> f64 {
    r.completion_rate.unwrap_or(0.0)
}
