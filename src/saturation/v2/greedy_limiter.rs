//! Upstream WVA's GPU limiter, as its `pipeline` package has it at b08b1c7
//! (`default_limiter.go`, `greedy_saturation_algorithm.go`,
//! `type_inventory.go`); facts re-derived, code our own. Pure.
//!
//! - Used GPUs per accelerator type are the WVA variants' current replicas
//!   times their GPUs per replica (a variant without an accelerator counts
//!   for none); available = limit - used, never below 0.
//! - Scale-ups (target above current) are served in order of the variant's
//!   average spare KV capacity ascending (most saturated first), then cost
//!   ascending; each asks for `(target - current) * GPUs per replica` (1
//!   GPU per replica when unknown) from its type's pool and gets what is
//!   left, up to that; the new target is current plus the whole replicas
//!   granted. The GPUs granted are taken from the pool even when they do
//!   not make a whole replica (as upstream's allocator does).
//!
//! - A decision the limiter cut names it (`limited_by`, upstream's
//!   `LimitedBy`), and every decision gets the limiter's step (upstream's
//!   `DecisionSteps` entry), for the log.
//!
//! Called by `decision/limiter.rs` on the V1 path (upstream's default); the V2
//! limiter is [`super::allot_accelerators`] (`--limiter-on-v2`).

use std::collections::BTreeMap;

/// The limiter's name, as upstream's engine gives it (`engine.go`:
/// `NewDefaultLimiter("gpu-limiter", ...)`): a limited decision's
/// `limited_by`, and the name of its step.
pub const LIMITER_NAME: &str = "gpu-limiter";

/// One variant's decision as the limiter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterDecision {
    pub(crate) variant: String,
    /// Accelerator type (the VariantAutoscaling's label); empty: none.
    pub(crate) accelerator: String,
    pub(crate) current: u32,
    /// The analysis' target; lowered by [`limit`] when GPUs are short.
    pub target: u32,
    /// GPUs one replica takes (upstream: the sum of the Deployment's pod
    /// template requests); 0: unknown (1 is assumed).
    pub(crate) gpus_per_replica: u32,
    /// The variant's average spare KV capacity (V1's analysis).
    pub spare_capacity: f64,
    pub(crate) cost: f64,
    /// GPUs of the whole replicas granted.
    pub gpus_allocated: u32,
    /// Whether fewer replicas were granted than asked for.
    pub was_limited: bool,
    /// The limiter that cut the decision ([`LIMITER_NAME`]), set by [`limit`].
    pub limited_by: Option<&'static str>,
}

/// What the limiter did to one decision, as upstream records it in the
/// decision's steps (`default_limiter.go: buildStepReason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterStep {
    pub name: &'static str,
    pub reason: String,
    pub limited: bool,
}

impl LimiterDecision {
    pub fn new(
        variant: &str,
        accelerator: &str,
        current: u32,
        target: u32,
        gpus_per_replica: u32,
    ) -> Self {
        LimiterDecision {
            variant: variant.to_owned(),
            accelerator: accelerator.to_owned(),
            current,
            target,
            gpus_per_replica,
            spare_capacity: 0.0,
            cost: 0.0,
            gpus_allocated: 0,
            was_limited: false,
            limited_by: None,
        }
    }

    /// The limiter's step for this decision, after [`limit`]: no scale-up,
    /// or the GPUs allocated for the replicas added (limited or not).
    pub fn step(&self) -> LimiterStep {
        let added = i64::from(self.target) - i64::from(self.current);
        let reason = if added <= 0 {
            format!(
                "no scale-up (target={}, current={})",
                self.target, self.current
            )
        } else if self.was_limited {
            format!(
                "limited: allocated {} GPUs for +{added} replicas",
                self.gpus_allocated
            )
        } else {
            format!(
                "allocated {} GPUs for +{added} replicas",
                self.gpus_allocated
            )
        };
        LimiterStep {
            name: LIMITER_NAME,
            reason,
            limited: self.was_limited,
        }
    }
}

/// GPUs used per accelerator type by the variants' current replicas.
pub fn used_by_type(decisions: &[LimiterDecision]) -> BTreeMap<String, u32> {
    let mut used = BTreeMap::new();
    for d in decisions.iter().filter(|d| !d.accelerator.is_empty()) {
        *used.entry(d.accelerator.clone()).or_insert(0) +=
            d.current.saturating_mul(d.gpus_per_replica);
    }
    used
}

/// Available GPUs per type: the limit minus what the variants use.
pub fn available_by_type(
    limit: &BTreeMap<String, u32>,
    decisions: &[LimiterDecision],
) -> BTreeMap<String, u32> {
    let used = used_by_type(decisions);
    limit
        .iter()
        .map(|(t, l)| {
            (
                t.clone(),
                l.saturating_sub(used.get(t).copied().unwrap_or(0)),
            )
        })
        .collect()
}

/// Greedy by saturation: serves the scale-ups in upstream's order, each
/// asking `try_allocate(accelerator, gpus)` for what it needs.
pub(crate) fn allocate_greedy(
    decisions: &mut [LimiterDecision],
    mut try_allocate: impl FnMut(&str, u32) -> u32,
) {
    let mut order: Vec<usize> = (0..decisions.len())
        .filter(|&i| decisions[i].target > decisions[i].current)
        .collect();
    // Stable, as upstream's sort.Slice is not: ties keep input order here.
    order.sort_by(|&a, &b| {
        let (x, y) = (&decisions[a], &decisions[b]);
        x.spare_capacity
            .total_cmp(&y.spare_capacity)
            .then(x.cost.total_cmp(&y.cost))
    });
    for i in order {
        let d = &mut decisions[i];
        let needed = d.target - d.current;
        let per_replica = d.gpus_per_replica.max(1);
        let granted = try_allocate(&d.accelerator, needed.saturating_mul(per_replica));
        let replicas = granted / per_replica;
        d.gpus_allocated = replicas * per_replica;
        d.target = d.current + replicas;
        d.was_limited = replicas < needed;
    }
}

/// The whole limiter: used GPUs from the variants, then greedy allocation
/// from each type's pool (`limit` from the Nodes). Returns the pools left.
pub fn limit(
    decisions: &mut [LimiterDecision],
    limit: &BTreeMap<String, u32>,
) -> BTreeMap<String, u32> {
    let mut pools = available_by_type(limit, decisions);
    allocate_greedy(decisions, |accelerator, requested| {
        if accelerator.is_empty() {
            // Upstream's allocator refuses a decision without a type.
            return 0;
        }
        let pool = pools.entry(accelerator.to_owned()).or_insert(0);
        let granted = requested.min(*pool);
        *pool -= granted;
        granted
    });
    for d in decisions.iter_mut().filter(|d| d.was_limited) {
        d.limited_by = Some(LIMITER_NAME);
    }
    pools
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(
        variant: &str,
        current: u32,
        target: u32,
        gpus: u32,
        spare: f64,
        cost: f64,
    ) -> LimiterDecision {
        LimiterDecision {
            spare_capacity: spare,
            cost,
            ..LimiterDecision::new(variant, "", current, target, gpus)
        }
    }

    /// A single pool of `remaining` GPUs, as upstream's test allocator.
    fn single_pool(decisions: &mut [LimiterDecision], remaining: u32) -> u32 {
        let mut left = remaining;
        allocate_greedy(decisions, |_, requested| {
            let granted = requested.min(left);
            left -= granted;
            granted
        });
        left
    }

    /// Upstream's `greedy_saturation_algorithm_test.go` (8 cases): pool,
    /// decisions (variant, current, target, GPUs/replica, spare, cost), then
    /// per variant (GPUs allocated, target, limited) and the pool left.
    #[test]
    fn upstream_greedy_by_saturation_cases() {
        type Row = (&'static str, u32, u32, u32, f64, f64);
        type Want = (&'static str, u32, u32, bool);
        // (case, pool, decisions, outcome, GPUs left when upstream checks it)
        type Case = (&'static str, u32, Vec<Row>, Vec<Want>, Option<u32>);
        let cases: Vec<Case> = vec![
            (
                "single decision that needs scale-up",
                10,
                vec![("v1", 2, 4, 2, 0.1, 0.0)],
                vec![("v1", 4, 4, false)],
                Some(6),
            ),
            (
                "multiple decisions prioritized by saturation",
                6,
                vec![
                    ("v1-medium", 1, 2, 2, 0.3, 10.0),
                    ("v2-saturated", 1, 2, 2, 0.05, 15.0),
                    ("v3-idle", 1, 2, 2, 0.5, 20.0),
                ],
                vec![
                    ("v1-medium", 2, 2, false),
                    ("v2-saturated", 2, 2, false),
                    ("v3-idle", 2, 2, false),
                ],
                Some(0),
            ),
            (
                "resources exhausted: partial, limited",
                3,
                vec![("v1", 1, 3, 2, 0.1, 0.0)],
                vec![("v1", 2, 2, true)],
                None,
            ),
            (
                "decisions that do not scale up take nothing",
                10,
                vec![
                    ("v1-no-change", 2, 2, 2, 0.1, 0.0),
                    ("v2-scale-down", 3, 2, 2, 0.5, 0.0),
                ],
                vec![
                    ("v1-no-change", 0, 2, false),
                    ("v2-scale-down", 0, 2, false),
                ],
                Some(10),
            ),
            (
                "equal saturation: the cheaper first",
                4,
                vec![
                    ("v1-expensive", 1, 2, 2, 0.1, 20.0),
                    ("v2-cheap", 1, 2, 2, 0.1, 5.0),
                ],
                vec![("v1-expensive", 2, 2, false), ("v2-cheap", 2, 2, false)],
                Some(0),
            ),
            (
                "zero GPUs per replica counts as 1",
                10,
                vec![("v1", 1, 2, 0, 0.1, 0.0)],
                vec![("v1", 1, 2, false)],
                Some(9),
            ),
            ("empty decisions", 10, vec![], vec![], Some(10)),
        ];
        assert_eq!(
            cases.len() + 1,
            8,
            "upstream's 8 cases: its Name() case is the one without a counterpart"
        );
        for (name, pool, rows, want, left) in cases {
            let mut decisions: Vec<LimiterDecision> = rows
                .iter()
                .map(|r| d(r.0, r.1, r.2, r.3, r.4, r.5))
                .collect();
            let remaining = single_pool(&mut decisions, pool);
            let got: Vec<(String, u32, u32, bool)> = decisions
                .iter()
                .map(|d| (d.variant.clone(), d.gpus_allocated, d.target, d.was_limited))
                .collect();
            let want: Vec<(String, u32, u32, bool)> = want
                .iter()
                .map(|w| (w.0.to_owned(), w.1, w.2, w.3))
                .collect();
            assert_eq!(got, want, "{name}");
            if let Some(left) = left {
                assert_eq!(remaining, left, "{name}: GPUs left");
            }
        }
        // Who goes first when the pool runs short: the most saturated.
        let mut short = vec![
            d("v1-medium", 1, 2, 2, 0.3, 10.0),
            d("v2-saturated", 1, 2, 2, 0.05, 15.0),
            d("v3-idle", 1, 2, 2, 0.5, 20.0),
        ];
        single_pool(&mut short, 4);
        let limited: Vec<(&str, bool)> = short
            .iter()
            .map(|d| (d.variant.as_str(), d.was_limited))
            .collect();
        assert_eq!(
            limited,
            [
                ("v1-medium", false),
                ("v2-saturated", false),
                ("v3-idle", true)
            ]
        );
    }

    /// Upstream's `default_limiter_test.go` (9 cases): used GPUs from the
    /// variants' current replicas, per type; allocation from each type's
    /// pool. Its `Name()` and decision-step cases (log metadata) have no
    /// counterpart; the other 7 are below.
    #[test]
    fn upstream_default_limiter_cases() {
        let types = |pairs: &[(&str, u32)]| -> BTreeMap<String, u32> {
            pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
        };
        // Empty decisions: nothing to do.
        let mut none: Vec<LimiterDecision> = Vec::new();
        assert_eq!(
            limit(&mut none, &types(&[("A100", 8)])),
            types(&[("A100", 8)])
        );
        // Scale-up: A100 8, v1 2 -> 4 at 2 GPUs: used 4, allocated 4.
        let mut up = vec![LimiterDecision::new("v1", "A100", 2, 4, 2)];
        assert_eq!(
            used_by_type(&up),
            types(&[("A100", 4)]),
            "used from current replicas"
        );
        let left = limit(&mut up, &types(&[("A100", 8)]));
        assert_eq!(
            (up[0].gpus_allocated, up[0].target, up[0].was_limited),
            (4, 4, false)
        );
        assert_eq!(left, types(&[("A100", 0)]));
        // Limited: A100 6, v1 2 -> 5 at 2 GPUs: 2 free, one replica: target 3, limited.
        let mut short = vec![LimiterDecision::new("v1", "A100", 2, 5, 2)];
        limit(&mut short, &types(&[("A100", 6)]));
        assert_eq!((short[0].target, short[0].was_limited), (3, true));
        // Several types: A100 8 and H100 4; each allocates from its own pool.
        let mut two = vec![
            LimiterDecision::new("v1-a100", "A100", 2, 3, 2),
            LimiterDecision::new("v2-h100", "H100", 1, 2, 2),
        ];
        assert_eq!(used_by_type(&two), types(&[("A100", 4), ("H100", 2)]));
        limit(&mut two, &types(&[("A100", 8), ("H100", 4)]));
        assert_eq!((two[0].gpus_allocated, two[1].gpus_allocated), (2, 2));
        // Not in upstream's table, its allocator's rules: a variant without
        // an accelerator gets nothing; a type with no Node gets nothing.
        let mut untyped = vec![
            LimiterDecision::new("v", "", 1, 2, 1),
            LimiterDecision::new("w", "L40S", 1, 2, 1),
        ];
        limit(&mut untyped, &types(&[("A100", 8)]));
        assert_eq!(
            untyped
                .iter()
                .map(|d| (d.target, d.was_limited))
                .collect::<Vec<_>>(),
            [(1, true), (1, true)]
        );
    }
}
