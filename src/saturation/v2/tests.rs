//! V2 tests: the worked examples of the issue, upstream WVA's analyzer and
//! optimizer test cases transcribed as data (upstream test names in the
//! rows), and properties.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::hpa::{ScaleState, Tolerances};
use crate::saturation::strategies::{cache_count, hostile};
use crate::saturation::{
    AnalyzerKind, ModelInput, PercentageAnalyzer, ReplicaLoad, SaturationAnalyzer,
    SaturationThresholds, VariantState,
};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn v2_thresholds() -> SaturationThresholds {
    SaturationThresholds {
        analyzer: AnalyzerKind::Tokens,
        ..Default::default()
    }
}

fn state(name: &str, cost: f64, spec: u32, ready: u32) -> VariantState {
    VariantState {
        name: name.into(),
        cost,
        min_replicas: 0,
        max_replicas: 100,
        spec_replicas: spec,
        ready_replicas: ready,
    }
}

fn variant(name: &str, cost: f64, spec: u32, ready: u32) -> TokenVariant {
    TokenVariant {
        state: state(name, cost, spec, ready),
        accelerator: "H100".into(),
        engine: None,
    }
}

/// A replica as upstream's `makeReplicaMetrics` builds it: tokens in use and
/// total capacity (block size 16), queue, mean input and output tokens.
fn replica(
    pod: &str,
    variant: &str,
    in_use: u64,
    total: u64,
    queue: f64,
    avg_in: f64,
    avg_out: f64,
) -> ReplicaTokens {
    ReplicaTokens {
        pod: pod.into(),
        variant: variant.into(),
        accelerator: "H100".into(),
        kv: in_use as f64 / total as f64,
        queue,
        cache: Some(KvCacheConfig {
            num_gpu_blocks: total / 16,
            block_size: 16,
        }),
        avg_input_tokens: Some(avg_in),
        avg_output_tokens: Some(avg_out),
        prefix_cache_hit_rate: None,
        sampled_at: at(0),
    }
}

fn analyze(
    replicas: &[ReplicaTokens],
    variants: &[TokenVariant],
    queue: Option<SchedulerQueue>,
    state: &mut TokenState,
) -> TokenAnalysis {
    let th = v2_thresholds();
    analyze_tokens(
        &TokenModelInput {
            namespace: "test-ns",
            model_id: "test-model",
            replicas,
            variants,
            thresholds: &th,
            scheduler_queue: queue,
        },
        state,
    )
}

#[test]
fn worked_examples_of_the_issue_v2_against_v1() {
    // 4 ready replicas, 1000 blocks x 16 tokens; (kv, V2 desired, V1 desired)
    for (kv, want_v2, want_v1) in [(0.98, 6, 5), (0.10, 1, 3)] {
        let replicas: Vec<ReplicaTokens> = (0..4)
            .map(|i| ReplicaTokens {
                pod: format!("p{i}"),
                variant: "v".into(),
                accelerator: "H100".into(),
                kv,
                queue: 0.0,
                cache: Some(KvCacheConfig {
                    num_gpu_blocks: 1000,
                    block_size: 16,
                }),
                avg_input_tokens: Some(100.0),
                avg_output_tokens: Some(50.0),
                prefix_cache_hit_rate: None,
                sampled_at: at(0),
            })
            .collect();
        let mut s = state("v", 10.0, 4, 4);
        s.min_replicas = 1;
        s.max_replicas = 10;
        let variants = [TokenVariant {
            state: s.clone(),
            accelerator: "H100".into(),
            engine: None,
        }];
        let th = v2_thresholds();
        let d = TokenAnalyzer::new().decide(
            &TokenModelInput {
                namespace: "ns",
                model_id: "m",
                replicas: &replicas,
                variants: &variants,
                thresholds: &th,
                scheduler_queue: None,
            },
            at(0),
        );
        assert_eq!(d.targets[0].desired, want_v2, "V2 at kv {kv}: {d:?}");
        let a = d.analysis.as_ref().expect("analysis");
        // 15680 or 1600 tokens in use per replica; k1 = 12800.
        assert_eq!(a.variants[0].per_replica, 12800.0);
        assert_eq!(a.demand, 4.0 * (kv * 16000.0_f64).round());
        let loads: Vec<ReplicaLoad> = replicas
            .iter()
            .map(|r| ReplicaLoad {
                pod: r.pod.clone(),
                variant: "v".into(),
                kv,
                queue: 0.0,
            })
            .collect();
        let v1 = PercentageAnalyzer.decide(&ModelInput {
            replicas: &loads,
            variants: &[s],
            thresholds: &SaturationThresholds::default(),
        });
        assert_eq!(v1.targets[0].desired, want_v1, "V1 at kv {kv}");
    }
}

/// One replica: (pod, variant, tokens in use, total tokens, queue, avg in, avg out).
type Rep = (&'static str, &'static str, u64, u64, f64, f64, f64);

/// (variant, spec, ready, engine (max-num-batched-tokens, max-num-seqs))
type CaseVariant = (&'static str, u32, u32, Option<(u64, u64)>);

#[test]
fn upstream_analyzer_cases() {
    struct Case {
        name: &'static str,
        /// Earlier analyses on the same analyzer (history), then the one checked.
        history: &'static [Rep],
        replicas: &'static [Rep],
        /// (variant, spec, ready, engine (B, S))
        variants: &'static [CaseVariant],
        remembered: Option<(&'static str, f64)>,
        queue: Option<(f64, f64)>,
        /// Per-replica capacity of each variant.
        per_replica: &'static [f64],
        /// (required, spare, demand, supply, anticipated) where asserted.
        signals: Option<(f64, f64, f64, f64, f64)>,
    }
    const H: &str = "variant-a";
    let cases = [
        Case {
            name: "k1/k2 interaction: should use k1 (memory-bound) when k2 is unknown",
            history: &[],
            replicas: &[("pod-1", H, 5000, 16000, 0.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[12800.0],
            signals: None,
        },
        Case {
            name: "k1/k2 interaction: should use k2 (compute-bound) when queue is saturated",
            history: &[],
            replicas: &[("pod-1", H, 8000, 16000, 6.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[8000.0],
            signals: None,
        },
        Case {
            name: "k1/k2 interaction: should detect compute-bound when k2 < k1 with high queue and low KV",
            history: &[],
            replicas: &[("pod-1", H, 4000, 16000, 10.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[4000.0],
            signals: None,
        },
        Case {
            name: "k2 history: should store k2 observation in rolling average (checked below: history average 8000)",
            history: &[],
            replicas: &[("pod-1", H, 8000, 16000, 6.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[8000.0],
            signals: None,
        },
        Case {
            name: "k2 history: should use historical k2 when queue drops below threshold",
            history: &[("pod-1", H, 8000, 16000, 6.0, 100.0, 50.0)],
            replicas: &[("pod-1", H, 6000, 16000, 2.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[8000.0],
            signals: None,
        },
        Case {
            name: "Output-length bucketing: should use different k2 history buckets for different output lengths",
            history: &[("pod-1", H, 8000, 16000, 6.0, 100.0, 50.0)],
            replicas: &[("pod-1", H, 6000, 16000, 2.0, 100.0, 600.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[12800.0],
            signals: None,
        },
        Case {
            name: "k2 derivation from deployment params: should derive k2 from chunked prefill params",
            history: &[],
            replicas: &[("pod-1", H, 5000, 16000, 2.0, 500.0, 100.0)],
            variants: &[(H, 1, 1, Some((2048, 256)))],
            remembered: None,
            queue: None,
            // k2 = 256 x 550 = 140800 > k1 = 12800
            per_replica: &[12800.0],
            signals: None,
        },
        Case {
            name: "k2 derivation from deployment params: should fall back to k1 when no batch/queue/history data exists",
            history: &[],
            replicas: &[("pod-1", H, 5000, 16000, 0.0, 0.0, 0.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[12800.0],
            signals: None,
        },
        Case {
            name: "Pending replicas: should include pending replicas in anticipated supply for scale-up",
            history: &[],
            replicas: &[("pod-1", H, 10000, 16000, 0.0, 100.0, 50.0)],
            variants: &[(H, 2, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[12800.0],
            signals: Some((0.0, 0.0, 10000.0, 12800.0, 25600.0)),
        },
        Case {
            name: "Pending replicas: should NOT include pending replicas in scale-down calculation",
            history: &[],
            replicas: &[("pod-1", H, 1000, 16000, 0.0, 100.0, 50.0)],
            variants: &[(H, 3, 2, None)],
            remembered: None,
            queue: None,
            per_replica: &[12800.0],
            signals: Some((0.0, 25600.0 - 1000.0 / 0.7, 1000.0, 25600.0, 38400.0)),
        },
        Case {
            name: "Zero-replica variants: should use stored live capacity directly when variant has zero replicas",
            history: &[],
            replicas: &[],
            variants: &[(H, 0, 0, None)],
            remembered: Some((H, 12000.0)),
            queue: None,
            per_replica: &[12000.0],
            signals: None,
        },
        Case {
            name: "Zero-replica variants: should derive capacity from params + workload for deployment-derived records",
            history: &[],
            replicas: &[("pod-1", H, 5000, 16000, 0.0, 500.0, 100.0)],
            variants: &[(H, 1, 1, None), ("variant-b", 0, 0, Some((8192, 256)))],
            remembered: None,
            queue: None,
            per_replica: &[12800.0, 140800.0],
            signals: None,
        },
        Case {
            name: "Zero-replica variants: should use EffectiveMaxBatchedTokens fallback when no workload data exists",
            history: &[],
            replicas: &[],
            variants: &[(H, 0, 0, Some((8192, 256)))],
            remembered: None,
            queue: None,
            per_replica: &[8192.0],
            signals: None,
        },
        Case {
            name: "Scaling signals: should signal scale-up when demand exceeds threshold",
            history: &[],
            replicas: &[("pod-1", H, 11000, 16000, 3.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[12800.0],
            // demand 11000 + 3 x 100
            signals: Some((11300.0 / 0.85 - 12800.0, 0.0, 11300.0, 12800.0, 12800.0)),
        },
        Case {
            name: "Scaling signals: should signal scale-down when utilization is below boundary",
            history: &[],
            replicas: &[
                ("pod-1", H, 1000, 16000, 0.0, 100.0, 50.0),
                ("pod-2", H, 1000, 16000, 0.0, 100.0, 50.0),
            ],
            variants: &[(H, 2, 2, None)],
            remembered: None,
            queue: None,
            per_replica: &[12800.0],
            signals: Some((0.0, 25600.0 - 2000.0 / 0.7, 2000.0, 25600.0, 25600.0)),
        },
        Case {
            name: "Scaling signals: should signal steady state when utilization is between thresholds",
            history: &[],
            replicas: &[("pod-1", H, 10000, 16000, 0.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[12800.0],
            signals: Some((0.0, 0.0, 10000.0, 12800.0, 12800.0)),
        },
        Case {
            name: "Scheduler queue demand: should add scheduler queue demand to total demand",
            history: &[],
            replicas: &[("pod-1", H, 5000, 16000, 0.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: Some((10.0, 8000.0)),
            per_replica: &[12800.0],
            // 5000 + max(8000/4, 10 x 100) + 10 x 50
            signals: Some((0.0, 12800.0 - 7500.0 / 0.7, 7500.0, 12800.0, 12800.0)),
        },
        Case {
            name: "Scheduler queue demand: should not add demand when scheduler queue is nil",
            history: &[],
            replicas: &[("pod-1", H, 5000, 16000, 0.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: None,
            per_replica: &[12800.0],
            signals: Some((0.0, 12800.0 - 5000.0 / 0.7, 5000.0, 12800.0, 12800.0)),
        },
        Case {
            name: "Scheduler queue demand: should use max of bytes and count estimates for input tokens",
            history: &[],
            replicas: &[("pod-1", H, 5000, 16000, 0.0, 100.0, 50.0)],
            variants: &[(H, 1, 1, None)],
            remembered: None,
            queue: Some((10.0, 20000.0)),
            per_replica: &[12800.0],
            signals: Some((0.0, 0.0, 10500.0, 12800.0, 12800.0)),
        },
    ];
    let to_replicas = |rs: &[Rep], t: u64| -> Vec<ReplicaTokens> {
        rs.iter()
            .map(|&(pod, v, in_use, total, q, i, o)| ReplicaTokens {
                sampled_at: at(t),
                ..replica(pod, v, in_use, total, q, i, o)
            })
            .collect()
    };
    for c in cases {
        let variants: Vec<TokenVariant> = c
            .variants
            .iter()
            .map(|&(n, spec, ready, engine)| TokenVariant {
                engine: engine.map(|(b, s)| EngineParams {
                    max_num_batched_tokens: b,
                    max_num_seqs: s,
                    ..EngineParams::default()
                }),
                ..variant(n, 10.0, spec, ready)
            })
            .collect();
        let mut st = TokenState::default();
        if let Some((v, cap)) = c.remembered {
            st.capacity.remember(
                ("test-ns".into(), "test-model".into(), v.into()),
                CapacityRecord {
                    capacity: cap,
                    learned_at: at(0),
                    accelerator: "H100".into(),
                    engine: None,
                },
            );
        }
        if !c.history.is_empty() {
            analyze(&to_replicas(c.history, 0), &variants, None, &mut st);
        }
        let q = c
            .queue
            .map(|(requests, bytes)| SchedulerQueue { requests, bytes });
        let a = analyze(&to_replicas(c.replicas, 1), &variants, q, &mut st);
        if c.name.starts_with("k2 history: should store") {
            let key = history::K2Key {
                model_id: "test-model".into(),
                accelerator: "H100".into(),
                bucket: history::OutputBucket::Short,
            };
            assert_eq!(st.k2_history.average(&key), Some(8000.0), "{}", c.name);
        }
        let got: Vec<f64> = a.variants.iter().map(|v| v.per_replica).collect();
        assert_eq!(got, c.per_replica, "{}", c.name);
        if let Some((required, spare, demand, supply, anticipated)) = c.signals {
            let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
            assert!(
                close(a.required, required)
                    && close(a.spare, spare)
                    && close(a.demand, demand)
                    && close(a.supply, supply)
                    && close(a.anticipated_supply, anticipated),
                "{}: required {} spare {} demand {} supply {} anticipated {}",
                c.name,
                a.required,
                a.spare,
                a.demand,
                a.supply,
                a.anticipated_supply
            );
        }
    }
}

/// Upstream's zero-replica cases that need a stored record of another
/// variant or `--num-gpu-blocks-override` (analyzer_test.go, "Zero-replica
/// variants"), plus the same situations around them.
#[test]
fn upstream_zero_replica_bound_cases() {
    type Change = fn(&mut EngineParams);
    struct Case {
        name: &'static str,
        /// Live replicas of the model: (pod, variant, accelerator, in use, total, avg in, avg out).
        replicas: &'static [(&'static str, &'static str, &'static str, u64, u64, f64, f64)],
        /// Variants: (name, accelerator, spec = ready, engine change from the defaults).
        variants: &'static [(&'static str, &'static str, u32, Option<Change>)],
        /// A remembered live record: (namespace, variant, accelerator, capacity, engine change).
        remembered: Option<(
            &'static str,
            &'static str,
            &'static str,
            f64,
            Option<Change>,
        )>,
        /// Per-replica capacity of the last variant.
        want: f64,
    }
    let cases = [
        Case {
            name: "should bound k2 estimate by compatible variant's live EffectiveCapacity",
            // variant-a's pod: 5000 of 50000 tokens, queue 0, I=500, O=100;
            // its capacity is min(k1 = 40000, derived k2 = 140800) = 40000.
            replicas: &[("pod-1", "variant-a", "H100", 5000, 50000, 500.0, 100.0)],
            variants: &[
                ("variant-a", "H100", 1, Some(|_| {})),
                ("variant-b", "H100", 0, Some(|_| {})),
            ],
            remembered: None,
            want: 40000.0,
        },
        Case {
            name: "should bound k2 estimate by compatible variant's live EffectiveCapacity (record from another namespace)",
            replicas: &[("pod-1", "variant-x", "L40S", 5000, 16000, 500.0, 100.0)],
            variants: &[
                ("variant-x", "L40S", 1, Some(|_| {})),
                ("variant-b", "H100", 0, Some(|_| {})),
            ],
            remembered: Some(("other-ns", "variant-a", "H100", 40000.0, Some(|_| {}))),
            want: 40000.0,
        },
        Case {
            name: "should bound k2 estimate by own k1 when TotalKvCapacityTokens is known",
            // k2 derived 140800; k1 = 1875 x 16 x 0.8 = 24000; L40S is not compatible.
            replicas: &[("pod-1", "variant-x", "L40S", 5000, 16000, 500.0, 100.0)],
            variants: &[
                ("variant-x", "L40S", 1, None),
                ("variant-a", "A100", 0, Some(|p| p.num_gpu_blocks_override = 1875)),
            ],
            remembered: None,
            want: 24000.0,
        },
        Case {
            name: "a compatible record with other engine parameters does not bound",
            replicas: &[("pod-1", "variant-x", "L40S", 5000, 16000, 500.0, 100.0)],
            variants: &[
                ("variant-x", "L40S", 1, None),
                ("variant-b", "H100", 0, Some(|_| {})),
            ],
            remembered: Some(("test-ns", "variant-a", "H100", 40000.0, Some(|p| p.gpu_memory_utilization = 0.95))),
            want: 140800.0,
        },
        Case {
            name: "a compatible record with another GPU count does not bound",
            replicas: &[("pod-1", "variant-x", "L40S", 5000, 16000, 500.0, 100.0)],
            variants: &[
                ("variant-x", "L40S", 1, None),
                ("variant-b", "H100", 0, Some(|_| {})),
            ],
            remembered: Some(("test-ns", "variant-a", "H100", 40000.0, Some(|p| p.gpus_per_replica = 2))),
            want: 140800.0,
        },
        Case {
            name: "without workload data the token budget is used, even with a compatible record",
            replicas: &[],
            variants: &[("variant-b", "H100", 0, Some(|p| p.max_num_batched_tokens = 4096))],
            remembered: Some(("test-ns", "variant-a", "H100", 40000.0, Some(|p| p.max_num_batched_tokens = 4096))),
            want: 4096.0,
        },
        Case {
            name: "no engine parameters and no record: unknown (0)",
            replicas: &[("pod-1", "variant-x", "L40S", 5000, 16000, 500.0, 100.0)],
            variants: &[("variant-x", "L40S", 1, None), ("variant-b", "H100", 0, None)],
            remembered: Some(("test-ns", "variant-a", "H100", 40000.0, Some(|_| {}))),
            want: 0.0,
        },
    ];
    let engine = |c: Option<Change>| {
        c.map(|c| {
            let mut e = EngineParams::default();
            c(&mut e);
            e
        })
    };
    for c in cases {
        let variants: Vec<TokenVariant> = c
            .variants
            .iter()
            .map(|&(name, acc, n, e)| TokenVariant {
                accelerator: acc.into(),
                engine: engine(e),
                ..variant(name, 10.0, n, n)
            })
            .collect();
        let replicas: Vec<ReplicaTokens> = c
            .replicas
            .iter()
            .map(|&(pod, v, acc, in_use, total, i, o)| ReplicaTokens {
                accelerator: acc.into(),
                ..replica(pod, v, in_use, total, 0.0, i, o)
            })
            .collect();
        let mut st = TokenState::default();
        if let Some((ns, v, acc, capacity, e)) = c.remembered {
            st.capacity.remember(
                (ns.into(), "test-model".into(), v.into()),
                CapacityRecord {
                    capacity,
                    learned_at: at(0),
                    accelerator: acc.into(),
                    engine: engine(e),
                },
            );
        }
        let a = analyze(&replicas, &variants, None, &mut st);
        let last = a.variants.last().expect("variants");
        assert_eq!(last.per_replica, c.want, "{}", c.name);
    }
}

/// "Scheduler queue demand: should reduce input tokens by prefix cache hit
/// rate", and the local vLLM queue, which the hit rate does not reduce.
#[test]
fn upstream_prefix_cache_hit_rate_case() {
    let variants = [variant("variant-a", 10.0, 1, 1)];
    let r = ReplicaTokens {
        prefix_cache_hit_rate: Some(0.5),
        ..replica("pod-1", "variant-a", 5000, 16000, 0.0, 100.0, 50.0)
    };
    let q = SchedulerQueue {
        requests: 10.0,
        bytes: 4000.0,
    };
    // input max(4000 / 4, 10 x 100) x (1 - 0.5) = 500, output 10 x 50 = 500.
    let a = analyze(
        std::slice::from_ref(&r),
        &variants,
        Some(q),
        &mut TokenState::default(),
    );
    assert_eq!(a.demand, 6000.0);
    // A local queue of 10 adds 10 x 100 prompt tokens, unreduced.
    let local = ReplicaTokens { queue: 10.0, ..r };
    let a = analyze(&[local], &variants, None, &mut TokenState::default());
    assert_eq!(a.demand, 6000.0);
}

#[test]
fn upstream_estimate_capacity_from_params_cases() {
    // (name, B, S, I, O, k2)
    let cases = [
        (
            "should compute k2 from B, S, I, O",
            4096,
            256,
            500.0,
            100.0,
            Some(140800),
        ),
        (
            "should cap N_steady at MaxNumSeqs",
            8192,
            64,
            100.0,
            200.0,
            Some(12800),
        ),
        (
            "should return 0 when avgOutput is 0",
            8192,
            256,
            500.0,
            0.0,
            None,
        ),
        // "should return 0 when params is nil": a variant without engine
        // parameters has no derived k2 (TokenVariant::engine None; see the
        // analyzer row "should fall back to k1 when no batch/queue/history
        // data exists").
        // Not capped by S: B x O / (I + O) = 2048 x 100 / 600 = 341.33 sequences.
        (
            "uncapped steady state",
            2048,
            1024,
            500.0,
            100.0,
            Some(187733),
        ),
    ];
    for (name, b, s, i, o, want) in cases {
        let p = EngineParams {
            max_num_batched_tokens: b,
            max_num_seqs: s,
            ..EngineParams::default()
        };
        assert_eq!(p.derived_k2(i, o), want, "{name}");
    }
}

#[test]
fn upstream_median_cases() {
    let cases: [(&str, &[u64], u64); 5] = [
        ("should return 0 for empty slice", &[], 0),
        ("should return the value for single element", &[42], 42),
        ("should return middle value for odd count", &[1, 3, 5], 3),
        (
            "should return average of middle two for even count",
            &[1, 3, 5, 7],
            4,
        ),
        ("should handle unsorted input", &[5, 1, 3], 3),
    ];
    for (name, values, want) in cases {
        assert_eq!(capacity::median(&mut values.to_vec()), want, "{name}");
    }
}

#[test]
fn engine_params_from_container_args() {
    let cases: [(&str, &[&str], (u64, u64)); 5] = [
        ("defaults", &["vllm", "serve", "m"], (8192, 256)),
        (
            "equals form",
            &["--max-num-batched-tokens=4096", "--max-num-seqs=64"],
            (4096, 64),
        ),
        (
            "separate value, underscores",
            &["--max_num_batched_tokens", "2048", "--max_num_seqs", "32"],
            (2048, 32),
        ),
        (
            "sh -c string",
            &[
                "/bin/sh",
                "-c",
                "vllm serve m --max-num-seqs 128 --port 8000",
            ],
            (8192, 128),
        ),
        (
            "garbage keeps default",
            &["--max-num-seqs", "lots"],
            (8192, 256),
        ),
    ];
    for (name, args, (b, s)) in cases {
        let p = EngineParams::from_args(args.iter().copied());
        assert_eq!((p.max_num_batched_tokens, p.max_num_seqs), (b, s), "{name}");
    }
}

/// (name, cost, per-replica capacity, current)
type OptVar = (&'static str, f64, f64, u32);

fn opt(vs: &[OptVar], required: f64, spare: f64) -> BTreeMap<String, u32> {
    let variants: Vec<OptimizerVariant> = vs
        .iter()
        .map(|&(name, cost, per_replica, current)| OptimizerVariant {
            name: name.into(),
            cost,
            per_replica,
            current,
            min_replicas: 0,
            max_replicas: 1000,
        })
        .collect();
    optimize(&variants, required, spare)
        .into_iter()
        .map(|t| (t.name, t.desired))
        .collect()
}

#[test]
fn upstream_cost_aware_optimizer_cases() {
    type Case = (
        &'static str,
        &'static [OptVar],
        f64,
        f64,
        &'static [(&'static str, u32)],
    );
    let cases: [Case; 10] = [
        (
            "Scale-Up: should add replicas to most cost-efficient variant",
            &[("cheap", 5.0, 10000.0, 2), ("expensive", 15.0, 20000.0, 1)],
            5000.0,
            0.0,
            &[("cheap", 3), ("expensive", 1)],
        ),
        (
            "Scale-Up: should not skip variants with pending replicas",
            &[("cheap", 5.0, 10000.0, 2), ("mid", 10.0, 15000.0, 1)],
            5000.0,
            0.0,
            &[("cheap", 3), ("mid", 1)],
        ),
        (
            "Scale-Up: should skip variants with zero capacity",
            &[("zero-cap", 1.0, 0.0, 0), ("normal", 10.0, 10000.0, 1)],
            5000.0,
            0.0,
            &[("normal", 2), ("zero-cap", 0)],
        ),
        (
            "Scale-Up: should spread across multiple variants when needed",
            &[("cheap", 5.0, 10000.0, 1), ("mid", 10.0, 15000.0, 1)],
            25000.0,
            0.0,
            &[("cheap", 4), ("mid", 1)],
        ),
        (
            "Scale-Down: should remove from most expensive variant first",
            &[("cheap", 5.0, 10000.0, 3), ("expensive", 15.0, 20000.0, 2)],
            0.0,
            15000.0,
            &[("cheap", 2), ("expensive", 2)],
        ),
        (
            "Scale-Down: should protect cheapest variant at 1 replica",
            &[("expensive", 15.0, 20000.0, 1), ("cheap", 5.0, 10000.0, 1)],
            0.0,
            30000.0,
            &[("cheap", 1), ("expensive", 0)],
        ),
        (
            "Scale-Down: should remove cheap variant when expensive replica capacity exceeds spare",
            &[("expensive", 15.0, 20000.0, 1), ("cheap", 5.0, 10000.0, 1)],
            0.0,
            15000.0,
            &[("cheap", 0), ("expensive", 1)],
        ),
        (
            "Scale-Down: should cascade scale-down across variants",
            &[
                ("expensive", 15.0, 20000.0, 2),
                ("mid", 10.0, 15000.0, 2),
                ("cheap", 5.0, 10000.0, 2),
            ],
            0.0,
            50000.0,
            &[("cheap", 1), ("expensive", 0), ("mid", 2)],
        ),
        (
            "Steady State: should return no-change when no scaling signal",
            &[("v1", 5.0, 10000.0, 2)],
            0.0,
            0.0,
            &[("v1", 2)],
        ),
        (
            "Multi-Model: should process models independently (model 2: scale-down)",
            &[("m2-v1", 10.0, 10000.0, 2)],
            0.0,
            10000.0,
            &[("m2-v1", 1)],
        ),
    ];
    for (name, vs, required, spare, want) in cases {
        let got = opt(vs, required, spare);
        let want: BTreeMap<String, u32> = want.iter().map(|&(n, d)| (n.to_owned(), d)).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn optimizer_respects_bounds_and_hands_the_rest_on() {
    let variants = [
        OptimizerVariant {
            name: "cheap".into(),
            cost: 5.0,
            per_replica: 10000.0,
            current: 2,
            min_replicas: 1,
            max_replicas: 3,
        },
        OptimizerVariant {
            name: "dear".into(),
            cost: 15.0,
            per_replica: 10000.0,
            current: 2,
            min_replicas: 2,
            max_replicas: 10,
        },
    ];
    let t = optimize(&variants, 25000.0, 0.0);
    assert_eq!(
        t.iter().map(|t| (t.desired, t.reason)).collect::<Vec<_>>(),
        [(3, TargetReason::ScaleUp), (4, TargetReason::ScaleUp)]
    );
    let t = optimize(&variants, 0.0, 50000.0);
    assert_eq!(
        t.iter().map(|t| (t.desired, t.reason)).collect::<Vec<_>>(),
        [(1, TargetReason::ScaleDown), (2, TargetReason::Steady)],
        "min replicas hold the dear variant, the cheap one keeps its min"
    );
}

#[test]
fn limiter_allots_by_saturation_and_caps_at_what_is_free() {
    let claim = |model, variant: &str, wanted, utilization| ScaleUpClaim {
        model,
        variant: variant.into(),
        accelerator: "H100".into(),
        gpus_per_replica: 1,
        wanted,
        utilization,
        cost: 10.0,
    };
    let free: BTreeMap<String, u32> = [("H100".to_owned(), 3)].into();
    // Two models each want 2 replicas; 3 GPUs are free: the more saturated
    // model gets its 2, the other 1 and is limited.
    let g = allot_accelerators(&[claim(0, "a", 2, 0.9), claim(1, "b", 2, 1.4)], &free);
    assert_eq!(
        g,
        [
            Grant {
                granted: 1,
                limited: true
            },
            Grant {
                granted: 2,
                limited: false
            }
        ]
    );
    // One model needs 5: it gets the 3 free.
    let g = allot_accelerators(&[claim(0, "a", 5, 1.2)], &free);
    assert_eq!(
        g,
        [Grant {
            granted: 3,
            limited: true
        }]
    );
    // Two GPUs per replica: 3 free pay for one replica.
    let mut c = claim(0, "a", 2, 1.2);
    c.gpus_per_replica = 2;
    assert_eq!(
        allot_accelerators(&[c], &free),
        [Grant {
            granted: 1,
            limited: true
        }]
    );
    // Another accelerator type has nothing free.
    let mut c = claim(0, "a", 1, 1.2);
    c.accelerator = "A100".into();
    assert_eq!(
        allot_accelerators(&[c], &free),
        [Grant {
            granted: 0,
            limited: true
        }]
    );
}

#[test]
fn analyzer_state_is_evicted_after_upstream_timeouts() {
    let th = v2_thresholds();
    let variants = [variant("v", 10.0, 1, 1)];
    let saturated = [ReplicaTokens {
        sampled_at: at(0),
        ..replica("p", "v", 8000, 16000, 6.0, 100.0, 50.0)
    }];
    let input = |replicas| TokenModelInput {
        namespace: "ns",
        model_id: "m",
        replicas,
        variants: &variants,
        thresholds: &th,
        scheduler_queue: None,
    };
    let analyzer = TokenAnalyzer::new();
    analyzer.decide(&input(&saturated), at(0));
    assert_eq!(analyzer.state_sizes(), (1, 1));
    // Queue below threshold an hour later: the history still steers.
    let calm = [ReplicaTokens {
        sampled_at: at(3600),
        ..replica("p", "v", 6000, 16000, 0.0, 100.0, 50.0)
    }];
    let d = analyzer.decide(&input(&calm), at(3600));
    assert_eq!(
        d.analysis.expect("analysis").variants[0].per_replica,
        8000.0
    );
    // 24 h after the last k2 observation the history is gone: back to k1.
    let later = [ReplicaTokens {
        sampled_at: at(24 * 3600 + 1),
        ..replica("p", "v", 6000, 16000, 0.0, 100.0, 50.0)
    }];
    let d = analyzer.decide(&input(&later), at(24 * 3600 + 1));
    assert_eq!(
        d.analysis.expect("analysis").variants[0].per_replica,
        12800.0
    );
    assert_eq!(analyzer.state_sizes(), (0, 1));
    // The remembered capacity goes 7 days after its last refresh.
    analyzer.decide(&input(&[]), at(24 * 3600 + 1 + 7 * 24 * 3600 + 1));
    assert_eq!(analyzer.state_sizes(), (0, 0));
}

#[test]
fn replicas_without_cache_config_are_skipped_and_none_means_hold() {
    let th = v2_thresholds();
    let variants = [variant("v", 10.0, 2, 2)];
    let mut r = replica("p", "v", 15000, 16000, 0.0, 100.0, 50.0);
    r.cache = None;
    let d = TokenAnalyzer::new().decide(
        &TokenModelInput {
            namespace: "ns",
            model_id: "m",
            replicas: &[r.clone()],
            variants: &variants,
            thresholds: &th,
            scheduler_queue: None,
        },
        at(0),
    );
    assert_eq!(d.analysis, None);
    assert_eq!(
        (d.targets[0].desired, d.targets[0].reason),
        (2, TargetReason::NoMetrics)
    );
    let with = replica("q", "v", 1000, 16000, 0.0, 100.0, 50.0);
    let d = TokenAnalyzer::new().decide(
        &TokenModelInput {
            namespace: "ns",
            model_id: "m",
            replicas: &[r, with],
            variants: &variants,
            thresholds: &th,
            scheduler_queue: None,
        },
        at(0),
    );
    let a = d.analysis.expect("analysis");
    assert_eq!(a.replicas.len(), 1, "only q counts");
    assert_eq!(a.demand, 1000.0);
}

#[test]
fn tolerance_widens_scale_ups_and_holds_scale_downs_inside_the_band() {
    let hpa = |n| HpaView {
        scale: ScaleState {
            spec_replicas: n,
            status_replicas: n,
            ready_pods: n,
        },
        tolerances: Tolerances::default(),
    };
    let t = |current, desired, reason| VariantTarget {
        name: "v".into(),
        current,
        desired,
        reason,
    };
    // 20 -> 21 is inside the 10 % band: widened to the first count outside.
    let out = tolerance_steps(&[40], &[hpa(20)], vec![t(20, 21, TargetReason::ScaleUp)]);
    assert_eq!(out[0].reason, TargetReason::ScaleUp);
    assert!(out[0].desired > 22 && out[0].desired <= 24, "{:?}", out[0]);
    // ... unless max replicas forbids it.
    let out = tolerance_steps(&[21], &[hpa(20)], vec![t(20, 21, TargetReason::ScaleUp)]);
    assert_eq!(
        (out[0].desired, out[0].reason),
        (20, TargetReason::ToleranceHoldUp)
    );
    // 20 -> 19 inside the band: hold.
    let out = tolerance_steps(&[40], &[hpa(20)], vec![t(20, 19, TargetReason::ScaleDown)]);
    assert_eq!(
        (out[0].desired, out[0].reason),
        (20, TargetReason::ToleranceHoldDown)
    );
    // 4 -> 6 is outside: unchanged.
    let out = tolerance_steps(&[40], &[hpa(4)], vec![t(4, 6, TargetReason::ScaleUp)]);
    assert_eq!((out[0].desired, out[0].reason), (6, TargetReason::ScaleUp));
}

#[test]
fn a_cache_is_plausible_from_one_token_to_a_trillion() {
    let c = |num_gpu_blocks, block_size| KvCacheConfig {
        num_gpu_blocks,
        block_size,
    };
    assert_eq!(c(8192, 16).plausible(), Some(c(8192, 16)));
    assert_eq!(c(0, 16).plausible(), None);
    assert_eq!(
        c(1_000_000_000, 1000).plausible(),
        Some(c(1_000_000_000, 1000))
    );
    assert_eq!(c(1_000_000_000, 1001).plausible(), None);
    assert_eq!(c(u64::MAX, 2).plausible(), None);
}

/// A replica of variant `v` on H100 with 16-token blocks, as the
/// properties below generate it.
fn bounded_replica(
    i: usize,
    (kv, queue, blocks): (f64, f64, u64),
    (input, output): (f64, f64),
    hit: Option<f64>,
    sampled_at: SystemTime,
) -> ReplicaTokens {
    ReplicaTokens {
        pod: format!("p{i}"),
        variant: "v".into(),
        accelerator: "H100".into(),
        kv,
        queue,
        cache: Some(KvCacheConfig {
            num_gpu_blocks: blocks,
            block_size: 16,
        }),
        avg_input_tokens: Some(input),
        avg_output_tokens: Some(output),
        prefix_cache_hit_rate: hit,
        sampled_at,
    }
}

/// Variant `v` on H100 at `spec` replicas within `[min, min + span]`, and
/// its V2 view.
fn bounded_variant(spec: u32, min: u32, span: u32) -> (VariantState, [TokenVariant; 1]) {
    let mut s = state("v", 10.0, spec, spec);
    s.min_replicas = min;
    s.max_replicas = min + span;
    let variants = [TokenVariant {
        state: s.clone(),
        accelerator: "H100".into(),
        engine: None,
    }];
    (s, variants)
}

fn optimizer_variants() -> impl Strategy<Value = Vec<OptimizerVariant>> {
    prop::collection::vec(
        (0.5f64..50.0, 0.0f64..50000.0, 0u32..4, 0u32..8, 0u32..12),
        1..5,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (cost, cap, min, span, current))| OptimizerVariant {
                name: format!("v{i}"),
                cost,
                per_replica: if cap < 1000.0 { 0.0 } else { cap },
                current,
                min_replicas: min,
                max_replicas: min + span,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn targets_stay_within_min_and_max(vs in optimizer_variants(), required in 0.0f64..200000.0, spare in 0.0f64..200000.0) {
        for t in optimize(&vs, required, spare).iter().zip(&vs) {
            prop_assert!(t.0.desired >= t.1.min_replicas && t.0.desired <= t.1.max_replicas, "{:?} {:?}", t.0, t.1);
        }
    }

    #[test]
    fn scale_up_covers_the_requirement_unless_every_variant_is_full(vs in optimizer_variants(), required in 1.0f64..200000.0) {
        // Start inside the bounds so that the clamp does not move anything.
        let vs: Vec<OptimizerVariant> = vs.into_iter().map(|mut v| { v.current = v.current.clamp(v.min_replicas, v.max_replicas); v }).collect();
        let targets = optimize(&vs, required, 0.0);
        let added: f64 = targets.iter().zip(&vs).map(|(t, v)| (t.desired - v.current) as f64 * v.per_replica).sum();
        let all_full = targets.iter().zip(&vs).all(|(t, v)| v.per_replica <= 0.0 || t.desired == v.max_replicas);
        prop_assert!(added >= required || all_full, "added {added} < required {required}: {targets:?}");
        prop_assert!(targets.iter().zip(&vs).all(|(t, v)| t.desired >= v.current), "a scale-up never removes");
    }

    #[test]
    fn scale_down_keeps_the_boundary_and_the_last_replica(vs in optimizer_variants(), spare in 1.0f64..200000.0) {
        let vs: Vec<OptimizerVariant> = vs.into_iter().map(|mut v| { v.current = v.current.clamp(v.min_replicas, v.max_replicas); v }).collect();
        let targets = optimize(&vs, 0.0, spare);
        let removed: f64 = targets.iter().zip(&vs).map(|(t, v)| (v.current - t.desired) as f64 * v.per_replica).sum();
        prop_assert!(removed <= spare + 1e-6, "removed {removed} > spare {spare}");
        let before: u32 = vs.iter().map(|v| v.current).sum();
        let after: u32 = targets.iter().map(|t| t.desired).sum();
        prop_assert!(before == 0 || after >= 1, "scaled the model to zero: {targets:?}");
    }

    #[test]
    fn v2_decisions_stay_in_bounds_for_any_load(
        loads in prop::collection::vec((0.0f64..=1.0, 0.0f64..20.0, 100u64..3000), 1..8),
        spec in 1u32..8, min in 0u32..3, span in 0u32..10,
    ) {
        let th = v2_thresholds();
        let (s, variants) = bounded_variant(spec, min, span);
        let replicas: Vec<ReplicaTokens> = loads.iter().enumerate().map(|(i, &(kv, queue, blocks))| bounded_replica(i, (kv, queue, blocks), (200.0, 100.0), None, at(0))).collect();
        let d = TokenAnalyzer::new().decide(&TokenModelInput { namespace: "ns", model_id: "m", replicas: &replicas, variants: &variants, thresholds: &th, scheduler_queue: None }, at(0));
        prop_assert!(d.targets[0].desired >= s.min_replicas && d.targets[0].desired <= s.max_replicas);
    }

    /// Hostile readings over a run of decisions (NaN, infinities,
    /// negatives, absurd magnitudes, empty caches): targets in bounds and
    /// the analysis' totals finite, never a NaN turned into a count.
    #[test]
    fn v2_decisions_stay_in_bounds_and_finite_for_any_reading(
        steps in prop::collection::vec(prop::collection::vec((hostile(2000.0), hostile(2000.0), cache_count(3000), hostile(2000.0), hostile(2000.0), hostile(2000.0)), 0..6), 1..20),
        spec in 0u32..8, min in 0u32..3, span in 0u32..10,
    ) {
        let th = v2_thresholds();
        let (s, variants) = bounded_variant(spec, min, span);
        let analyzer = TokenAnalyzer::new();
        for (n, loads) in steps.iter().enumerate() {
            let replicas: Vec<ReplicaTokens> = loads.iter().enumerate().map(|(i, &(kv, queue, blocks, input, output, hit))| bounded_replica(i, (kv, queue, blocks), (input, output), Some(hit), at(15 * n as u64))).collect();
            let d = analyzer.decide(&TokenModelInput { namespace: "ns", model_id: "m", replicas: &replicas, variants: &variants, thresholds: &th, scheduler_queue: None }, at(15 * n as u64));
            prop_assert!(d.targets[0].desired >= s.min_replicas && d.targets[0].desired <= s.max_replicas, "{:?}", d.targets);
            if let Some(a) = &d.analysis {
                for (name, x) in [("supply", a.supply), ("anticipated_supply", a.anticipated_supply), ("demand", a.demand), ("required", a.required), ("spare", a.spare)] {
                    prop_assert!(x.is_finite() && x >= 0.0, "{name} = {x} in {a:?}");
                }
            }
        }
    }
}

#[test]
fn two_server_replicas_agree_whatever_their_request_pattern_and_a_late_one_catches_up() {
    // Samples of one saturated replica every 15 s with a varying k2, then
    // the queue drops and the history decides k2. Replica A decides once
    // per sample; replica B decides three times per sample (more HPA
    // traffic); replica C starts after the first 6 samples.
    let th = v2_thresholds();
    let variants = [variant("v", 10.0, 1, 1)];
    let decide = |an: &TokenAnalyzer, replicas: &[ReplicaTokens], t: u64| {
        an.decide(
            &TokenModelInput {
                namespace: "ns",
                model_id: "m",
                replicas,
                variants: &variants,
                thresholds: &th,
                scheduler_queue: None,
            },
            at(t),
        )
    };
    let (a, b, c) = (
        TokenAnalyzer::new(),
        TokenAnalyzer::new(),
        TokenAnalyzer::new(),
    );
    let calm_k2 = |an: &TokenAnalyzer, t: u64| {
        let calm = [ReplicaTokens {
            sampled_at: at(t),
            ..replica("p", "v", 1000, 16000, 0.0, 100.0, 50.0)
        }];
        decide(an, &calm, t).analysis.expect("analysis").variants[0].per_replica
    };
    let mut disagreeing_samples = 0;
    for i in 0..20u64 {
        let sample = [ReplicaTokens {
            sampled_at: at(15 * i),
            ..replica("p", "v", 6000 + 100 * i, 16000, 6.0, 100.0, 50.0)
        }];
        decide(&a, &sample, 15 * i);
        for _ in 0..3 {
            decide(&b, &sample, 15 * i);
        }
        if i >= 6 {
            decide(&c, &sample, 15 * i);
        }
        // What each would use as k2 once the queue drops (a probe dated
        // after the sample does not add to the history).
        let t = 15 * i + 1;
        assert_eq!(calm_k2(&a, t), calm_k2(&b, t), "A and B after sample {i}");
        if i >= 6 && calm_k2(&a, t) != calm_k2(&c, t) {
            disagreeing_samples += 1;
        }
    }
    // The late replica differs until its window holds the same 10 samples:
    // for samples 6..=14, 9 samples (2 min 15 s at a 15 s scrape interval).
    assert_eq!(disagreeing_samples, 9);
}
