//! The vLLM replica model: one replica's KV cache, running batch and
//! waiting queue, advanced in virtual time. It is the one model of a vLLM
//! replica in the codebase: `simulate` drives it with a load trace, and
//! [`ReplicaModel::reported_state`] gives what a replica reports on
//! `/metrics` (the gauges an emulated replica serves).
//!
//! What it models (and what vLLM does, simplified):
//! - KV cache of `num_gpu_blocks x block_size` tokens. A request is admitted
//!   from the head of the waiting queue (FIFO) when the running batch has
//!   fewer than `max_num_seqs` sequences and the blocks for its prompt are
//!   free; generated tokens take new blocks as they grow. When a growing
//!   sequence finds no free block, the most recently admitted sequence is
//!   preempted (recompute, as vLLM v1 does): its blocks are freed and it
//!   goes back to the front of the queue.
//! - Prefill runs one request at a time at `prefill_tokens_per_second`;
//!   time to first token = queue wait + prefill.
//! - Decode: every sequence past its prefill generates
//!   `decode_tokens_per_second` tokens per second (a fixed inter-token
//!   latency: the slowdown of large batches is not modelled).
//! - Reported: KV usage = used blocks / total blocks, waiting = queue
//!   length, running = admitted sequences; and what the token-based (V2)
//!   analysis reads besides: the cache size (`vllm:cache_config_info`) and
//!   the prompt and generated tokens of finished requests (the `_sum` and
//!   `_count` of `vllm:request_prompt_tokens` and
//!   `vllm:request_generation_tokens`, observed when a request finishes).
//!
//! Pure and deterministic: no clock, no randomness.

use std::collections::VecDeque;

#[cfg(test)]
use crate::saturation::v2::KvCacheConfig;

/// The gauges a replica reports: KV-cache usage (0 to 1), waiting and
/// running requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ReportedState {
    pub(crate) kv: f64,
    pub(crate) waiting: f64,
    pub(crate) running: f64,
}

/// The engine parameters of one replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaParams {
    /// `num_gpu_blocks` (from `vllm:cache_config_info`).
    pub num_gpu_blocks: u32,
    /// Tokens per KV block (`block_size`).
    pub block_size: u32,
    /// `--max-num-seqs`: sequences in the running batch at most.
    pub max_num_seqs: u32,
    /// Prompt tokens prefilled per second.
    pub prefill_tokens_per_second: f64,
    /// Tokens each running sequence generates per second.
    pub decode_tokens_per_second: f64,
}

impl Default for ReplicaParams {
    /// A mid-size model on one GPU: 2048 blocks of 16 tokens (32,768
    /// tokens of KV cache), 256 sequences, 8,000 prefill tokens/s and 40
    /// decode tokens/s per sequence (25 ms between tokens).
    fn default() -> Self {
        ReplicaParams {
            num_gpu_blocks: 2048,
            block_size: 16,
            max_num_seqs: 256,
            prefill_tokens_per_second: 8000.0,
            decode_tokens_per_second: 40.0,
        }
    }
}

impl ReplicaParams {
    /// Blocks holding `tokens` tokens.
    pub(crate) fn blocks_for(&self, tokens: u64) -> u64 {
        tokens.div_ceil(u64::from(self.block_size.max(1)))
    }
}

/// A request as the replica receives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Arrival time (virtual seconds).
    pub(crate) arrival: f64,
    pub(crate) input_tokens: u32,
    pub(crate) output_tokens: u32,
}

#[derive(Debug, Clone)]
struct Queued {
    request: Request,
    /// Set once the first token went out (a preempted request keeps it).
    first_token_at: Option<f64>,
}

#[derive(Debug, Clone)]
struct Running {
    request: Request,
    first_token_at: Option<f64>,
    /// When its prefill finishes (the first token goes out then).
    prefill_done: f64,
    /// Generated tokens so far (fractional between steps).
    generated: f64,
    blocks: u64,
}

/// A finished prefill: the first token of a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FirstToken {
    pub(crate) arrival: f64,
    pub(crate) at: f64,
}

impl FirstToken {
    pub(crate) fn ttft(&self) -> f64 {
        self.at - self.arrival
    }
}

/// Counters of finished requests, as vLLM's request histograms count them
/// (`_count`, and the `_sum` of prompt and of generated tokens, and of
/// `vllm:request_prefill_time_seconds` in microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FinishedCounters {
    pub(crate) requests: u64,
    pub(crate) prompt_tokens: u64,
    pub(crate) generation_tokens: u64,
    pub(crate) prefill_micros: u64,
}

impl FinishedCounters {
    /// Mean prompt and generated tokens per request finished between
    /// `earlier` and `self` (what `rate(_sum[w]) / rate(_count[w])` gives);
    /// None when no request finished in between.
    pub(crate) fn means_since(&self, earlier: &FinishedCounters) -> Option<(f64, f64)> {
        let n = self.requests.checked_sub(earlier.requests)?;
        if n == 0 {
            return None;
        }
        let prompt = self.prompt_tokens.checked_sub(earlier.prompt_tokens)?;
        let generated = self
            .generation_tokens
            .checked_sub(earlier.generation_tokens)?;
        Some((prompt as f64 / n as f64, generated as f64 / n as f64))
    }

    /// Mean prefill seconds per request finished between `earlier` and
    /// `self`; None when none finished (or the counters went back).
    pub(crate) fn prefill_mean_since(&self, earlier: &FinishedCounters) -> Option<f64> {
        let n = self.requests.checked_sub(earlier.requests)?;
        let micros = self.prefill_micros.checked_sub(earlier.prefill_micros)?;
        (n > 0).then(|| micros as f64 / 1e6 / n as f64)
    }
}

/// One replica.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaModel {
    params: ReplicaParams,
    waiting: VecDeque<Queued>,
    running: Vec<Running>,
    used_blocks: u64,
    /// When the prefill engine is free again.
    prefill_free_at: f64,
    finished: FinishedCounters,
}

impl ReplicaModel {
    pub(crate) fn new(params: ReplicaParams) -> Self {
        ReplicaModel {
            params,
            waiting: VecDeque::new(),
            running: Vec::new(),
            used_blocks: 0,
            prefill_free_at: 0.0,
            finished: FinishedCounters::default(),
        }
    }

    /// Queues a request (it is admitted on the next [`ReplicaModel::step`]).
    pub(crate) fn enqueue(&mut self, request: Request) {
        self.waiting.push_back(Queued {
            request,
            first_token_at: None,
        });
    }

    /// Removes every request, waiting or running (the replica goes away).
    /// Returns the requests that have not had their first token yet, for
    /// another replica to serve, and how many were cut off mid-stream.
    pub(crate) fn drain(&mut self) -> (Vec<Request>, usize) {
        let mut requeue = Vec::new();
        let mut interrupted = 0;
        for (request, first) in self
            .running
            .drain(..)
            .map(|r| (r.request, r.first_token_at))
            .chain(
                self.waiting
                    .drain(..)
                    .map(|q| (q.request, q.first_token_at)),
            )
        {
            if first.is_some() {
                interrupted += 1;
            } else {
                requeue.push(request);
            }
        }
        self.used_blocks = 0;
        (requeue, interrupted)
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    /// KV-cache usage in [0, 1].
    pub(crate) fn kv_usage(&self) -> f64 {
        let total = f64::from(self.params.num_gpu_blocks.max(1));
        (self.used_blocks as f64 / total).min(1.0)
    }

    /// The KV cache's size as `vllm:cache_config_info` reports it.
    #[cfg(test)]
    pub(crate) fn cache_config(&self) -> KvCacheConfig {
        KvCacheConfig {
            num_gpu_blocks: u64::from(self.params.num_gpu_blocks),
            block_size: u64::from(self.params.block_size),
        }
    }

    /// Tokens the used blocks hold room for (used blocks x block size):
    /// what V2 reads back as KV usage x total tokens.
    #[cfg(test)]
    pub(crate) fn tokens_in_use(&self) -> u64 {
        self.used_blocks * u64::from(self.params.block_size)
    }

    /// Requests finished so far and their tokens.
    pub(crate) fn finished(&self) -> FinishedCounters {
        self.finished
    }

    /// What the replica reports on `/metrics`.
    pub(crate) fn reported_state(&self) -> ReportedState {
        ReportedState {
            kv: self.kv_usage(),
            waiting: self.waiting.len() as f64,
            running: self.running.len() as f64,
        }
    }

    /// The requests still waiting, with their arrival times (for the
    /// time-to-first-token of requests never served before the end).
    pub(crate) fn waiting_arrivals(&self) -> impl Iterator<Item = f64> + '_ {
        self.waiting
            .iter()
            .filter(|q| q.first_token_at.is_none())
            .map(|q| q.request.arrival)
    }

    /// Advances the replica over `[now, now + dt)`: admits what fits,
    /// prefills, decodes, finishes and preempts. Calls `first_token` for
    /// every request whose first token goes out in this step.
    pub(crate) fn step(&mut self, now: f64, dt: f64, mut first_token: impl FnMut(FirstToken)) {
        let end = now + dt;
        self.admit(now, end);
        self.decode(now, end, &mut first_token);
    }

    fn admit(&mut self, now: f64, end: f64) {
        let total = u64::from(self.params.num_gpu_blocks);
        while let Some(head) = self.waiting.front() {
            if self.running.len() >= self.params.max_num_seqs as usize {
                break;
            }
            // A request arriving later in this step waits for its arrival.
            if head.request.arrival >= end {
                break;
            }
            let blocks = self
                .params
                .blocks_for(u64::from(head.request.input_tokens).max(1));
            if self.used_blocks + blocks > total {
                break;
            }
            let Some(q) = self.waiting.pop_front() else {
                break;
            };
            let start = q.request.arrival.max(self.prefill_free_at).max(now);
            let prefill = f64::from(q.request.input_tokens)
                / self.params.prefill_tokens_per_second.max(f64::MIN_POSITIVE);
            let prefill_done = start + prefill;
            self.prefill_free_at = prefill_done;
            self.used_blocks += blocks;
            self.running.push(Running {
                request: q.request,
                first_token_at: q.first_token_at,
                prefill_done,
                generated: 0.0,
                blocks,
            });
        }
    }

    fn decode(&mut self, now: f64, end: f64, first_token: &mut impl FnMut(FirstToken)) {
        let total = u64::from(self.params.num_gpu_blocks);
        let mut i = 0;
        while i < self.running.len() {
            let r = &mut self.running[i];
            if r.prefill_done >= end {
                i += 1;
                continue;
            }
            if r.first_token_at.is_none() {
                r.first_token_at = Some(r.prefill_done);
                first_token(FirstToken {
                    arrival: r.request.arrival,
                    at: r.prefill_done,
                });
            }
            let from = r.prefill_done.max(now);
            r.generated += self.params.decode_tokens_per_second * (end - from);
            let output = f64::from(r.request.output_tokens);
            if r.generated >= output {
                self.used_blocks -= r.blocks;
                let done = self.running.remove(i);
                self.finished.requests += 1;
                self.finished.prompt_tokens += u64::from(done.request.input_tokens);
                self.finished.generation_tokens += u64::from(done.request.output_tokens);
                self.finished.prefill_micros += (f64::from(done.request.input_tokens)
                    / self.params.prefill_tokens_per_second.max(1e-9)
                    * 1e6)
                    .round() as u64;
                continue;
            }
            let tokens = u64::from(r.request.input_tokens) + r.generated as u64;
            let need = self.params.blocks_for(tokens.max(1));
            // When `i` itself is preempted the next sequence moved into its
            // place; otherwise go on after it.
            if let Some(at) = self.grow(i, need, total) {
                i = at + 1;
            }
        }
    }

    /// Gives sequence `i` `need` blocks, preempting the most recently
    /// admitted sequences while none are free. Returns where sequence `i`
    /// is now, or None when it was preempted itself.
    fn grow(&mut self, mut i: usize, need: u64, total: u64) -> Option<usize> {
        loop {
            let have = self.running[i].blocks;
            if need <= have {
                return Some(i);
            }
            if self.used_blocks + (need - have) <= total {
                self.running[i].blocks = need;
                self.used_blocks += need - have;
                return Some(i);
            }
            let newest = self.newest()?;
            self.preempt(newest);
            if newest == i {
                return None;
            }
            if newest < i {
                i -= 1;
            }
        }
    }

    /// The most recently admitted sequence: the latest prefill start.
    fn newest(&self) -> Option<usize> {
        self.running
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.prefill_done.total_cmp(&b.1.prefill_done))
            .map(|(i, _)| i)
    }

    /// Preempts sequence `i` (recompute): frees its blocks and puts it back
    /// at the front of the queue.
    fn preempt(&mut self, i: usize) {
        let r = self.running.remove(i);
        self.used_blocks -= r.blocks;
        self.waiting.push_front(Queued {
            request: r.request,
            first_token_at: r.first_token_at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ReplicaParams {
        ReplicaParams {
            num_gpu_blocks: 100,
            block_size: 16,
            max_num_seqs: 8,
            prefill_tokens_per_second: 1000.0,
            decode_tokens_per_second: 10.0,
        }
    }

    fn run(model: &mut ReplicaModel, from: f64, seconds: usize) -> Vec<FirstToken> {
        let mut out = Vec::new();
        for s in 0..seconds {
            model.step(from + s as f64, 1.0, |f| out.push(f));
        }
        out
    }

    #[test]
    fn a_single_request_has_ttft_of_its_prefill() {
        // 500 prompt tokens at 1000 tokens/s: first token 0.5 s after an
        // arrival at 0.2 s; 32 blocks for the prompt (500 / 16 rounded up).
        let mut m = ReplicaModel::new(params());
        m.enqueue(Request {
            arrival: 0.2,
            input_tokens: 500,
            output_tokens: 20,
        });
        let mut firsts = Vec::new();
        m.step(0.0, 1.0, |f| firsts.push(f));
        assert_eq!(firsts.len(), 1);
        assert!((firsts[0].ttft() - 0.5).abs() < 1e-9, "{firsts:?}");
        assert_eq!(m.running(), 1);
        // Decoded 0.3 s x 10 tokens/s = 3 tokens: 503 tokens, still 32 blocks.
        assert!((m.kv_usage() - 0.32).abs() < 1e-9, "{}", m.kv_usage());
        // What V2 reads: 32 blocks x 16 of 100 x 16 = 1,600 tokens.
        assert_eq!(m.tokens_in_use(), 512);
        assert_eq!(m.cache_config().total_tokens(), 1600);
        assert_eq!(m.finished(), FinishedCounters::default());
        // 20 tokens at 10/s: done 2 s after the first token (at 2.7 s).
        run(&mut m, 1.0, 1);
        assert_eq!(m.running(), 1);
        run(&mut m, 2.0, 1);
        assert_eq!(m.running(), 0);
        assert_eq!(m.kv_usage(), 0.0);
        assert_eq!(m.tokens_in_use(), 0);
        // Counted when it finishes, as vLLM's request histograms are.
        assert_eq!(
            m.finished(),
            FinishedCounters {
                requests: 1,
                prompt_tokens: 500,
                generation_tokens: 20,
                // 500 tokens at 1,000 tokens/s.
                prefill_micros: 500_000,
            }
        );
        assert_eq!(
            m.finished()
                .prefill_mean_since(&FinishedCounters::default()),
            Some(0.5)
        );
        assert_eq!(m.finished().prefill_mean_since(&m.finished()), None);
    }

    #[test]
    fn token_means_are_over_the_requests_finished_in_between() {
        let at = |requests, prompt_tokens, generation_tokens| FinishedCounters {
            requests,
            prompt_tokens,
            generation_tokens,
            prefill_micros: 0,
        };
        let cases = [
            (at(0, 0, 0), at(4, 2000, 400), Some((500.0, 100.0))),
            (at(4, 2000, 400), at(6, 2300, 500), Some((150.0, 50.0))),
            // Nothing finished: no mean (a NaN rate ratio, dropped).
            (at(6, 2300, 500), at(6, 2300, 500), None),
            // Counters went backwards (a new replica): no mean.
            (at(6, 2300, 500), at(1, 10, 10), None),
        ];
        for (earlier, later, want) in cases {
            assert_eq!(
                later.means_since(&earlier),
                want,
                "{earlier:?} -> {later:?}"
            );
        }
    }

    #[test]
    fn back_to_back_prompts_wait_for_the_prefill_engine() {
        // Two 400-token prompts at t=0: 0.4 s and 0.8 s to first token.
        let mut m = ReplicaModel::new(params());
        for _ in 0..2 {
            m.enqueue(Request {
                arrival: 0.0,
                input_tokens: 400,
                output_tokens: 100,
            });
        }
        let firsts = run(&mut m, 0.0, 1);
        let ttfts: Vec<f64> = firsts.iter().map(|f| f.ttft()).collect();
        assert_eq!(ttfts.len(), 2);
        assert!(
            (ttfts[0] - 0.4).abs() < 1e-9 && (ttfts[1] - 0.8).abs() < 1e-9,
            "{ttfts:?}"
        );
    }

    #[test]
    fn a_full_kv_cache_queues_requests() {
        // 100 blocks; each 640-token prompt takes 40: two fit, the third
        // (40 more) waits until both finish. Prefill 10,000 tokens/s (64 ms
        // each), 20 output tokens at 10/s.
        let mut m = ReplicaModel::new(ReplicaParams {
            prefill_tokens_per_second: 10_000.0,
            ..params()
        });
        for _ in 0..3 {
            m.enqueue(Request {
                arrival: 0.0,
                input_tokens: 640,
                output_tokens: 20,
            });
        }
        let ttfts: Vec<f64> = run(&mut m, 0.0, 1).iter().map(|f| f.ttft()).collect();
        assert_eq!(ttfts.len(), 2);
        assert!(
            (ttfts[0] - 0.064).abs() < 1e-9 && (ttfts[1] - 0.128).abs() < 1e-9,
            "{ttfts:?}"
        );
        assert_eq!((m.running(), m.waiting()), (2, 1));
        assert_eq!(m.reported_state().waiting, 1.0);
        // 650 and 649 tokens in cache: 41 blocks each.
        assert!((m.kv_usage() - 0.82).abs() < 1e-9, "{}", m.kv_usage());
        // Both finish during t=2..3 (first token + 2 s); the third is
        // admitted at the next step, t=3: TTFT = 3 s queueing + 64 ms.
        assert!(run(&mut m, 1.0, 2).is_empty());
        assert_eq!((m.running(), m.waiting()), (0, 1));
        let firsts = run(&mut m, 3.0, 1);
        assert_eq!(firsts.len(), 1);
        assert!((firsts[0].ttft() - 3.064).abs() < 1e-9, "{firsts:?}");
        assert_eq!(m.waiting(), 0);
    }

    #[test]
    fn max_num_seqs_bounds_the_batch() {
        let mut m = ReplicaModel::new(ReplicaParams {
            max_num_seqs: 2,
            ..params()
        });
        for _ in 0..5 {
            m.enqueue(Request {
                arrival: 0.0,
                input_tokens: 10,
                output_tokens: 1000,
            });
        }
        run(&mut m, 0.0, 3);
        assert_eq!((m.running(), m.waiting()), (2, 3));
    }

    #[test]
    fn growing_sequences_preempt_the_newest_when_blocks_run_out() {
        // Two sequences of 784 prompt tokens (49 blocks each, 98 of 100)
        // growing at 10 tokens/s: each takes a 50th block (100 of 100);
        // at t=2 the first needs a 51st and the newest is preempted.
        let mut m = ReplicaModel::new(params());
        for _ in 0..2 {
            m.enqueue(Request {
                arrival: 0.0,
                input_tokens: 784,
                output_tokens: 1000,
            });
        }
        run(&mut m, 0.0, 4);
        assert_eq!((m.running(), m.waiting()), (1, 1), "one preempted");
        assert!(m.kv_usage() <= 1.0);
        // A preempted request does not report a second first token.
        let firsts = run(&mut m, 4.0, 200);
        assert!(firsts.is_empty(), "{firsts:?}");
    }

    #[test]
    fn reported_state_is_usage_queue_and_batch() {
        let mut m = ReplicaModel::new(params());
        m.enqueue(Request {
            arrival: 0.0,
            input_tokens: 160,
            output_tokens: 100,
        });
        run(&mut m, 0.0, 1);
        let s = m.reported_state();
        // 160 + 8.4 tokens generated after a 0.16 s prefill: 11 blocks.
        assert_eq!((s.waiting, s.running), (0.0, 1.0));
        assert!((s.kv - 0.11).abs() < 1e-9, "{s:?}");
    }
}
