use super::*;
use crate::collector::ReplicaMetrics;
use crate::inventory::pod_key;
use crate::inventory::{resolve, InventoryObjects};
use crate::saturation::v2;
use crate::saturation::PercentageAnalyzer;

/// One variant in `ns` with `ready` ready pods named p0.. behind a Deployment.
fn objects(
    ns: &str,
    variant: &str,
    model: &str,
    spec: u32,
    ready: u32,
    pods: usize,
) -> InventoryObjects {
    let mut y = format!(
        "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: {variant}, namespace: {ns}}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: {variant}-d}}\n  modelID: {model}\n  maxReplicas: 10\n---\nkind: Deployment\napiVersion: apps/v1\nmetadata: {{name: {variant}-d, namespace: {ns}}}\nspec: {{replicas: {spec}, selector: {{}}, template: {{}}}}\nstatus: {{replicas: {spec}, readyReplicas: {ready}}}\n"
    );
    for i in 0..pods {
        y.push_str(&format!(
            "---\nkind: Pod\napiVersion: v1\nmetadata: {{name: {variant}-p{i}, namespace: {ns}, labels: {{llm-d.ai/variant: {variant}}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
        ));
    }
    crate::inventory::file::parse_objects(std::path::Path::new("t"), &y).unwrap()
}

fn engine(objects: InventoryObjects) -> DecisionEngine {
    let store = Arc::new(InventoryStore::new());
    store.publish(resolve(&objects).0);
    DecisionEngine::new(
        store,
        Arc::new(MetricsCache::new()),
        Arc::new(ArcSwap::from_pointee(ThresholdConfig::default())),
        Arc::new(PercentageAnalyzer),
        FreshnessPolicy::default(),
    )
}

fn report(e: &DecisionEngine, ns: &str, pod: &str, kv: f64, q: f64, age: Duration) {
    e.cache().insert(
        pod_key(ns, pod),
        ReplicaMetrics {
            model_name: "m".into(),
            kv_usage: kv,
            queue_waiting: q,
            queue_waiting_latest: None,
            running: None,
            sampled_at: SystemTime::now() - age,
            request_rate: None,
            avg_prompt_tokens: None,
            avg_generation_tokens: None,
            avg_prefill_seconds: None,
            prefix_cache_hit_rate: None,
            kv_cache: None,
            activity: None,
        },
    );
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap()
}

#[test]
fn scales_down_the_worked_example() {
    let e = engine(objects("ns", "v", "m", 3, 3, 3));
    for (i, kv) in [0.20, 0.30, 0.25].into_iter().enumerate() {
        report(&e, "ns", &format!("v-p{i}"), kv, 1.0, Duration::ZERO);
    }
    let d = e.decide("ns", &sel("variant_name=v")).unwrap();
    assert_eq!((d[0].desired, d[0].ready, d[0].ratio_milli), (2, 3, 666));
    assert_eq!(d[0].reason, TargetReason::ScaleDown);
}

#[test]
fn steps_follow_the_hpa_tolerance_flag_and_the_hpa_behavior() {
    let idle = |e: &DecisionEngine| {
        for i in 0..8 {
            report(e, "ns", &format!("v-p{i}"), 0.10, 0.0, Duration::ZERO);
        }
    };
    // A 0.3 band: 7/8 and 6/8 are inside, 5/8 = 0.625 is outside and safe.
    let e = engine(objects("ns", "v", "m", 8, 8, 8)).with_hpa_tolerance(Tolerances::uniform(0.3));
    idle(&e);
    let d = e.decide("ns", &sel("variant_name=v")).unwrap();
    assert_eq!((d[0].desired, d[0].reason), (5, TargetReason::ScaleDown));
    assert_eq!(d[0].ratio_milli, 625);

    // The HPA scaling the target narrows its scale-down band to 0.01.
    let mut o = objects("ns", "v", "m", 8, 8, 8);
    let hpa = "kind: HorizontalPodAutoscaler\napiVersion: autoscaling/v2\nmetadata: {name: v-hpa, namespace: ns}\nspec:\n  scaleTargetRef: {kind: Deployment, name: v-d}\n  maxReplicas: 10\n  behavior: {scaleDown: {tolerance: \"0.01\"}}\n";
    o.horizontal_pod_autoscalers.extend(
        crate::inventory::file::parse_objects(std::path::Path::new("h"), hpa)
            .unwrap()
            .horizontal_pod_autoscalers,
    );
    let e = engine(o).with_hpa_tolerance(Tolerances::uniform(0.3));
    idle(&e);
    let d = e.decide("ns", &sel("variant_name=v")).unwrap();
    assert_eq!((d[0].desired, d[0].reason), (7, TargetReason::ScaleDown));
}

#[test]
fn errors_say_what_is_wrong() {
    let e = engine(objects("ns", "v", "m", 2, 2, 2));
    let err = e.decide("ns", &sel("target_name=nope")).unwrap_err();
    assert_eq!(
        err,
        DecisionError::NoMatch {
            namespace: "ns".into(),
            selector: "target_name=nope".into()
        }
    );
    let err = e.decide("other", &sel("")).unwrap_err();
    assert!(matches!(err, DecisionError::NoMatch { .. }));

    // Every ready replica's newest sample is older than the stale threshold.
    report(&e, "ns", "v-p0", 0.5, 0.0, Duration::from_secs(150));
    report(&e, "ns", "v-p1", 0.5, 0.0, Duration::from_secs(200));
    let err = e.decide("ns", &sel("")).unwrap_err();
    assert_eq!(
        err,
        DecisionError::Stale {
            namespace: "ns".into(),
            model_id: "m".into(),
            age_secs: 150,
            stale_secs: 120,
        }
    );
    assert!(err.to_string().contains("150s old"), "{err}");

    // One fresh replica is enough to decide, over the fresh replicas only.
    report(&e, "ns", "v-p1", 0.75, 2.0, Duration::ZERO);
    let d = e.decide("ns", &sel("")).unwrap();
    assert_eq!(d[0].desired, 3);
}

fn model(ns: &str, m: &str) -> ModelKey {
    ModelKey {
        namespace: ns.into(),
        model_id: m.into(),
    }
}

#[test]
fn no_metrics_holds_at_current_once_fetched() {
    let e = engine(objects("ns", "v", "m", 4, 4, 4));
    // Before any fetch cycle reached the model: 503, not a silent hold.
    assert_eq!(
        e.decide("ns", &sel("")).unwrap_err(),
        DecisionError::NotFetchedYet {
            namespace: "ns".into(),
            model_id: "m".into(),
            why:
                "the first fetch since the model appeared has not finished; retry in a few seconds"
                    .into()
        }
    );
    // A failed fetch is said, with its cause and since when.
    e.cache().health().source_failed(
        "Prometheus at http://prometheus:9090 unreachable",
        "connection refused",
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(
        e.decide("ns", &sel("")).unwrap_err().to_string(),
        "no metrics for model \"m\" in namespace \"ns\": Prometheus at http://prometheus:9090 \
         unreachable since 1970-01-01T00:00:00Z: connection refused"
    );
    e.cache().health().source_answered();
    // Fetched, and the backend has no series for the pods: hold.
    e.cache().mark_fetched(&model("ns", "m"), SystemTime::now());
    let d = e.decide("ns", &sel("")).unwrap();
    assert_eq!(
        (d[0].desired, d[0].ratio_milli, d[0].reason),
        (4, 1000, TargetReason::NoMetrics)
    );
}

#[test]
fn a_backend_out_of_reach_past_the_stale_threshold_is_unavailable() {
    let e = engine(objects("ns", "v", "m", 2, 2, 2));
    let last = SystemTime::now() - Duration::from_secs(150);
    e.cache().mark_fetched(&model("ns", "m"), last);
    let err = e.decide("ns", &sel("")).unwrap_err();
    assert_eq!(
        err,
        DecisionError::BackendUnreachable {
            namespace: "ns".into(),
            model_id: "m".into(),
            age_secs: 150,
            stale_secs: 120,
            why: String::new(),
        }
    );
    assert!(err.is_unavailable());
    assert!(
        err.to_string().contains("not been reached for 150s"),
        "{err}"
    );
    // Within the stale threshold the model still holds.
    e.cache().mark_fetched(
        &model("ns", "m"),
        SystemTime::now() - Duration::from_secs(110),
    );
    assert_eq!(e.decide("ns", &sel("")).unwrap()[0].desired, 2);
}

#[test]
fn aging_samples_still_decide_and_say_so() {
    let e = engine(objects("ns", "v", "m", 2, 2, 2));
    report(&e, "ns", "v-p0", 0.75, 2.0, Duration::from_secs(90));
    report(&e, "ns", "v-p1", 0.76, 2.0, Duration::from_secs(100));
    let snapshot = e.inventory().load();
    let outcome = e
        .decide_model(&snapshot, &model("ns", "m"), SystemTime::now())
        .unwrap();
    assert_eq!(outcome.freshness, Some(Freshness::Aging));
    assert_eq!(outcome.decisions[0].desired, 3);
    report(&e, "ns", "v-p0", 0.75, 2.0, Duration::ZERO);
    let outcome = e
        .decide_model(&snapshot, &model("ns", "m"), SystemTime::now())
        .unwrap();
    assert_eq!(outcome.freshness, Some(Freshness::Fresh));
}

#[test]
fn unsynced_inventory_is_unavailable() {
    let e = DecisionEngine::new(
        Arc::new(InventoryStore::new()),
        Arc::new(MetricsCache::new()),
        Arc::new(ArcSwap::from_pointee(ThresholdConfig::default())),
        Arc::new(PercentageAnalyzer),
        FreshnessPolicy::default(),
    );
    assert_eq!(
        e.decide("ns", &sel("")).unwrap_err(),
        DecisionError::InventoryNotSynced
    );
}

/// A VariantAutoscaling on H100 with `ready` ready pods.
fn h100(ns: &str, variant: &str, model: &str, ready: u32) -> String {
    h100_target(
        ns,
        variant,
        model,
        "Deployment",
        (ready, ready, ready),
        "{}",
    )
}

/// A VariantAutoscaling on H100 whose `kind` target has (`spec.replicas`,
/// `status.replicas`, ready replicas) and pod `template`, with one ready
/// pod per ready replica.
fn h100_target(
    ns: &str,
    variant: &str,
    model: &str,
    kind: &str,
    (spec, status, ready): (u32, u32, u32),
    template: &str,
) -> String {
    let service_name = if kind == "StatefulSet" {
        format!("serviceName: {variant}, ")
    } else {
        String::new()
    };
    let mut y = format!(
        "---\nkind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: {variant}, namespace: {ns}, labels: {{inference.optimization/acceleratorName: H100}}}}\nspec:\n  scaleTargetRef: {{kind: {kind}, name: {variant}-d}}\n  modelID: {model}\n  maxReplicas: 10\n---\nkind: {kind}\napiVersion: apps/v1\nmetadata: {{name: {variant}-d, namespace: {ns}}}\nspec: {{replicas: {spec}, {service_name}selector: {{}}, template: {template}}}\nstatus: {{replicas: {status}, readyReplicas: {ready}}}\n"
    );
    for i in 0..ready {
        y.push_str(&format!(
            "---\nkind: Pod\napiVersion: v1\nmetadata: {{name: {variant}-p{i}, namespace: {ns}, labels: {{llm-d.ai/variant: {variant}}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
        ));
    }
    y
}

fn engine_with(yaml: &str, config: &str) -> DecisionEngine {
    let store = Arc::new(InventoryStore::new());
    let objects = crate::inventory::file::parse_objects(std::path::Path::new("t"), yaml).unwrap();
    store.publish(resolve(&objects).0);
    let (config, errors) = ThresholdConfig::from_yaml_str(config).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    DecisionEngine::new(
        store,
        Arc::new(MetricsCache::new()),
        Arc::new(ArcSwap::from_pointee(config)),
        Arc::new(PercentageAnalyzer),
        FreshnessPolicy::default(),
    )
}

/// A replica with a 1000 x 16 token KV cache.
fn report_tokens(e: &DecisionEngine, ns: &str, pod: &str, kv: f64) {
    e.cache().insert(
        pod_key(ns, pod),
        ReplicaMetrics {
            model_name: "m".into(),
            kv_usage: kv,
            queue_waiting: 0.0,
            queue_waiting_latest: None,
            running: None,
            sampled_at: SystemTime::now(),
            request_rate: None,
            avg_prompt_tokens: Some(100.0),
            avg_generation_tokens: Some(50.0),
            avg_prefill_seconds: None,
            prefix_cache_hit_rate: None,
            kv_cache: Some(crate::saturation::v2::KvCacheConfig {
                num_gpu_blocks: 1000,
                block_size: 16,
            }),
            activity: None,
        },
    );
}

#[test]
fn analyzer_name_saturation_selects_v2_per_model_and_anything_else_keeps_v1() {
    // (config, analyzer of model m, desired at kv 0.98, at kv 0.10)
    let cases = [
        ("default: {}", "saturation-v1", 5, 3),
        ("default: {analyzerName: percentage}", "saturation-v1", 5, 3),
        ("default: {analyzerName: saturation}", "saturation-v2", 6, 1),
        (
            "default: {}\nm-ns: {model_id: m, namespace: ns, analyzerName: saturation}",
            "saturation-v2",
            6,
            1,
        ),
        (
            "default: {analyzerName: saturation}\nm-ns: {model_id: m, namespace: ns, analyzerName: \"\"}",
            "saturation-v1",
            5,
            3,
        ),
    ];
    for (config, analyzer, high, low) in cases {
        let e = engine_with(&h100("ns", "v", "m", 4), config);
        for (kv, want) in [(0.98, high), (0.10, low)] {
            for i in 0..4 {
                report_tokens(&e, "ns", &format!("v-p{i}"), kv);
            }
            let d = e.decide("ns", &sel("")).unwrap();
            assert_eq!(
                (d[0].desired, d[0].analyzer),
                (want, analyzer),
                "{config} at kv {kv}"
            );
        }
    }
}

/// A namespace-local thresholds ConfigMap selects V2 for the models of
/// its namespace only; the global config keeps V1 elsewhere, and a
/// namespace-local `analyzerName` other than `saturation` keeps V1 even
/// when the global default selects V2.
#[test]
fn namespace_local_analyzer_name_selects_v2_for_its_namespace_only() {
    let yaml = format!("{}{}", h100("ns", "v", "m", 4), h100("other", "w", "m", 4));
    let cases = [
        (
            "default: {}",
            "default: {analyzerName: saturation}",
            ("saturation-v2", 6),
            ("saturation-v1", 5),
        ),
        (
            "default: {analyzerName: saturation}",
            "default: {analyzerName: percentage}",
            ("saturation-v1", 5),
            ("saturation-v2", 6),
        ),
    ];
    for (global, local, in_ns, in_other) in cases {
        let e = engine_with(&yaml, global);
        let (local_config, errors) = ThresholdConfig::from_yaml_str(local).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let config = ThresholdConfig::from_yaml_str(global)
            .unwrap()
            .0
            .with_namespace_local("ns", local_config);
        e.thresholds.store(Arc::new(config));
        for (ns, v) in [("ns", "v"), ("other", "w")] {
            for i in 0..4 {
                report_tokens(&e, ns, &format!("{v}-p{i}"), 0.98);
            }
        }
        let got = |ns: &str| {
            let d = e.decide(ns, &sel("")).unwrap();
            (d[0].analyzer, d[0].desired)
        };
        assert_eq!(got("ns"), in_ns, "{global} / local {local}");
        assert_eq!(got("other"), in_other, "{global} / local {local}");
    }
}

#[test]
fn the_endpoint_pickers_queue_is_v2s_scheduler_queue_demand() {
    let e = engine_with(
        &h100("ns", "v", "m", 4),
        "default: {analyzerName: saturation}",
    );
    for i in 0..4 {
        report_tokens(&e, "ns", &format!("v-p{i}"), 0.10);
    }
    let alone = e.decide("ns", &sel("")).unwrap()[0].desired;
    assert_eq!(alone, 1, "light load: V2 scales down");
    // 400,000 queued bytes = 100,000 tokens waiting in the endpoint
    // picker for this model, sampled at `at`.
    let queue_at = |at: SystemTime| {
        e.cache()
            .set_scheduler_queues(crate::collector::SchedulerQueues {
                by_model: [(
                    "m".to_owned(),
                    v2::SchedulerQueue {
                        requests: 100.0,
                        bytes: 400_000.0,
                    },
                )]
                .into_iter()
                .collect(),
                at,
            })
    };
    // More than the four replicas hold.
    queue_at(SystemTime::now());
    let queued = e.decide("ns", &sel("")).unwrap()[0].desired;
    assert!(queued > 4, "the queue is demand: {queued}");
    // A queue older than the stale threshold no longer steers.
    queue_at(SystemTime::now() - Duration::from_secs(3600));
    assert_eq!(e.decide("ns", &sel("")).unwrap()[0].desired, 1);
}

#[test]
fn v2_without_cache_config_holds_and_says_no_metrics() {
    let e = engine_with(
        &h100("ns", "v", "m", 4),
        "default: {analyzerName: saturation}",
    );
    for i in 0..4 {
        report(&e, "ns", &format!("v-p{i}"), 0.98, 0.0, Duration::ZERO);
    }
    let d = e.decide("ns", &sel("")).unwrap();
    assert_eq!((d[0].desired, d[0].reason), (4, TargetReason::NoMetrics));
    let snapshot = e.inventory().load();
    let o = e
        .decide_model(&snapshot, &model("ns", "m"), SystemTime::now())
        .unwrap();
    assert!(!o.has_metrics());
    assert_eq!(o.analyzer, "saturation-v2");
}

struct FixedAccelerators(BTreeMap<String, u32>);

impl AcceleratorInventory for FixedAccelerators {
    fn free_by_type(&self) -> Option<BTreeMap<String, u32>> {
        Some(self.0.clone())
    }
    fn capacity_by_type(&self) -> Option<BTreeMap<String, u32>> {
        Some(self.0.clone())
    }
    fn pod_gpus(&self, _: &str, _: &str) -> Option<u32> {
        Some(1)
    }
}

/// `h100` GPUs in the cluster, each pod requesting `per_pod`.
struct PodGpus {
    h100: u32,
    per_pod: u32,
}

impl AcceleratorInventory for PodGpus {
    fn free_by_type(&self) -> Option<BTreeMap<String, u32>> {
        Some([("H100".to_owned(), self.h100)].into())
    }
    fn capacity_by_type(&self) -> Option<BTreeMap<String, u32>> {
        self.free_by_type()
    }
    fn pod_gpus(&self, _: &str, _: &str) -> Option<u32> {
        Some(self.per_pod)
    }
}

/// One saturated variant `a` (2 ready replicas, V1 wants 3) of `yaml`
/// under the global `enableLimiter` with `gpus`: its desired replicas and
/// reason.
fn v1_limited(yaml: &str, gpus: PodGpus) -> (u32, TargetReason) {
    let e = engine_with(yaml, "default: {enableLimiter: true}").with_accelerators(Arc::new(gpus));
    for i in 0..2 {
        report(&e, "ns", &format!("a-p{i}"), 0.85, 0.0, Duration::ZERO);
    }
    let d = e.decide("ns", &sel("")).unwrap();
    assert_eq!(d.len(), 1);
    (d[0].desired, d[0].reason)
}

/// GPUs per replica are the Deployment's pod template's, as upstream
/// (`getDeploymentGPUsPerReplica`), even when the running pods request
/// fewer (a rollout from 1 to 2 GPUs): 2 replicas x 2 GPUs use 4 of 5,
/// and a third replica needs 2. Counting the pods' 1 GPU each, 3 would be
/// free and the third replica granted. A StatefulSet, whose template the
/// inventory does not keep, counts its pods' requests.
#[test]
fn upstream_limiter_takes_gpus_per_replica_from_the_deployment_template() {
    let two_gpus =
        "{spec: {containers: [{name: vllm, resources: {requests: {nvidia.com/gpu: 2}}}]}}";
    let deployment = h100_target("ns", "a", "ma", "Deployment", (2, 2, 2), two_gpus);
    let got = v1_limited(
        &deployment,
        PodGpus {
            h100: 5,
            per_pod: 1,
        },
    );
    assert_eq!(got, (2, TargetReason::LimitedByAccelerators));
    // The same with the 5th GPU free for the third replica: granted.
    let no_gpus = "{spec: {containers: [{name: vllm}]}}";
    let deployment = h100_target("ns", "a", "ma", "Deployment", (2, 2, 2), no_gpus);
    let got = v1_limited(
        &deployment,
        PodGpus {
            h100: 3,
            per_pod: 2,
        },
    );
    assert_eq!(
        got,
        (3, TargetReason::ScaleUp),
        "1 GPU per replica when the template requests none"
    );
    // A StatefulSet: its pods' 2 GPUs each.
    let statefulset = h100_target("ns", "a", "ma", "StatefulSet", (2, 2, 2), two_gpus);
    let got = v1_limited(
        &statefulset,
        PodGpus {
            h100: 5,
            per_pod: 2,
        },
    );
    assert_eq!(got, (2, TargetReason::LimitedByAccelerators));
    let got = v1_limited(
        &statefulset,
        PodGpus {
            h100: 6,
            per_pod: 2,
        },
    );
    assert_eq!(got, (3, TargetReason::ScaleUp));
}

/// Current replicas are the Deployment's `status.replicas` for upstream's
/// limiter (`BuildVariantStates`). On 2 GPUs, 2 replicas settled: V1's
/// third is cut (2 used, none free). With a rollout's surge pod
/// (`status.replicas` 3, `spec.replicas` 2) the third replica exists
/// already: no scale-up for the limiter, not cut (counted from the spec,
/// it was).
#[test]
fn upstream_limiter_counts_status_replicas_as_current() {
    let settled = h100_target("ns", "a", "ma", "Deployment", (2, 2, 2), "{}");
    let got = v1_limited(
        &settled,
        PodGpus {
            h100: 2,
            per_pod: 1,
        },
    );
    assert_eq!(got, (2, TargetReason::LimitedByAccelerators));
    let surge = h100_target("ns", "a", "ma", "Deployment", (2, 3, 2), "{}");
    let got = v1_limited(
        &surge,
        PodGpus {
            h100: 2,
            per_pod: 1,
        },
    );
    assert_eq!(got, (3, TargetReason::ScaleUp));
}

/// While a Deployment's `status.replicas` lags its spec (b: 3 asked, 2
/// exist), V1 holds b at 3 (in transition): that is no scale-up for the
/// limiter, so b, although more saturated (no spare KV; a has 0.05),
/// takes no GPU, and model a (settled at 2) gets the one free of 5 (4
/// used).
#[test]
fn upstream_limiter_sees_no_scale_up_while_status_lags_spec() {
    let yaml = format!(
        "{}{}",
        h100_target("ns", "a", "ma", "Deployment", (2, 2, 2), "{}"),
        h100_target("ns", "b", "mb", "Deployment", (3, 2, 2), "{}"),
    );
    let e =
        engine_with(&yaml, "default: {enableLimiter: true}").with_accelerators(Arc::new(PodGpus {
            h100: 5,
            per_pod: 1,
        }));
    for i in 0..2 {
        report(&e, "ns", &format!("a-p{i}"), 0.75, 0.0, Duration::ZERO);
        report(&e, "ns", &format!("b-p{i}"), 0.95, 0.0, Duration::ZERO);
    }
    let d = e.decide("ns", &sel("")).unwrap();
    let got: Vec<(&str, u32, TargetReason)> = d
        .iter()
        .map(|d| (d.variant.name.as_str(), d.desired, d.reason))
        .collect();
    assert_eq!(
        got,
        [
            ("a", 3, TargetReason::ScaleUp),
            ("b", 3, TargetReason::InTransition)
        ]
    );
}

/// `status.replicas`, or `spec.replicas` while the status says 0.
#[test]
fn upstream_current_replicas_prefer_the_status() {
    let yaml = format!(
        "{}{}{}",
        h100_target("ns", "a", "ma", "Deployment", (2, 3, 2), "{}"),
        h100_target("ns", "b", "mb", "Deployment", (4, 0, 0), "{}"),
        h100_target("ns", "c", "mc", "Deployment", (0, 0, 0), "{}"),
    );
    let e = engine_with(&yaml, "default: {}");
    let snapshot = e.inventory().load();
    let mut got: Vec<(&str, u32)> = snapshot
        .variants()
        .iter()
        .map(|v| (v.name.as_str(), limiter::upstream_current_replicas(v)))
        .collect();
    got.sort();
    assert_eq!(got, [("a", 3), ("b", 4), ("c", 0)]);
}

/// Upstream's limiter on the V1 path, from the global `enableLimiter`:
/// 5 H100 in the cluster, 4 used by the two models' current replicas (1
/// GPU each), 1 free. Both models want +1; model a's replicas are
/// saturated (average spare KV 0), b's have 0.05 spare: a gets the GPU,
/// b is limited and says so. Without `enableLimiter`, both grow.
#[test]
fn upstream_limiter_on_v1_serves_the_most_saturated_variant_first() {
    let yaml = format!("{}{}", h100("ns", "a", "ma", 2), h100("ns", "b", "mb", 2));
    for (config, want_a, want_b) in [
        (
            "default: {enableLimiter: true}",
            (3, TargetReason::ScaleUp),
            (2, TargetReason::LimitedByAccelerators),
        ),
        (
            "default: {}",
            (3, TargetReason::ScaleUp),
            (3, TargetReason::ScaleUp),
        ),
    ] {
        let e = engine_with(&yaml, config)
            .with_accelerators(Arc::new(FixedAccelerators([("H100".to_owned(), 5)].into())));
        for i in 0..2 {
            report(&e, "ns", &format!("a-p{i}"), 0.85, 0.0, Duration::ZERO);
            report(&e, "ns", &format!("b-p{i}"), 0.75, 0.0, Duration::ZERO);
        }
        let d = e.decide("ns", &sel("")).unwrap();
        let got: Vec<(&str, u32, TargetReason)> = d
            .iter()
            .map(|d| (d.variant.name.as_str(), d.desired, d.reason))
            .collect();
        assert_eq!(
            got,
            [("a", want_a.0, want_a.1), ("b", want_b.0, want_b.1)],
            "{config}"
        );
    }
}

#[test]
fn limiter_allots_free_gpus_by_saturation_across_models() {
    // Model a: 3 replicas full (utilization 1.25), wants +2. Model b: 4
    // replicas at 0.98 (utilization 1.225), wants +2. 3 H100 free.
    let yaml = format!("{}{}", h100("ns", "a", "ma", 3), h100("ns", "b", "mb", 4));
    let config = "default: {analyzerName: saturation, enableLimiter: true}";
    let e = engine_with(&yaml, config)
        .with_v2_limiter(true)
        .with_accelerators(Arc::new(FixedAccelerators([("H100".to_owned(), 3)].into())));
    for i in 0..3 {
        report_tokens(&e, "ns", &format!("a-p{i}"), 1.0);
    }
    for i in 0..4 {
        report_tokens(&e, "ns", &format!("b-p{i}"), 0.98);
    }
    let a = e.decide("ns", &sel("variant_name=a")).unwrap();
    let b = e.decide("ns", &sel("variant_name=b")).unwrap();
    assert_eq!((a[0].desired, a[0].reason), (5, TargetReason::ScaleUp));
    assert_eq!(
        (b[0].desired, b[0].reason),
        (5, TargetReason::LimitedByAccelerators)
    );
    // Without the limiter both get what they need.
    let e = engine_with(&yaml, "default: {analyzerName: saturation}")
        .with_accelerators(Arc::new(FixedAccelerators([("H100".to_owned(), 3)].into())));
    for i in 0..3 {
        report_tokens(&e, "ns", &format!("a-p{i}"), 1.0);
    }
    for i in 0..4 {
        report_tokens(&e, "ns", &format!("b-p{i}"), 0.98);
    }
    assert_eq!(
        e.decide("ns", &sel("variant_name=b")).unwrap()[0].desired,
        6
    );
    // With `enableLimiter: true` but without --limiter-on-v2, as
    // upstream: V2 is not limited.
    let e = engine_with(&yaml, config)
        .with_accelerators(Arc::new(FixedAccelerators([("H100".to_owned(), 3)].into())));
    for i in 0..3 {
        report_tokens(&e, "ns", &format!("a-p{i}"), 1.0);
    }
    for i in 0..4 {
        report_tokens(&e, "ns", &format!("b-p{i}"), 0.98);
    }
    let b = e.decide("ns", &sel("variant_name=b")).unwrap();
    assert_eq!((b[0].desired, b[0].reason), (6, TargetReason::ScaleUp));
}

#[test]
fn a_sweep_does_not_keep_a_replaced_snapshot_alive() {
    let objs = objects("ns", "v", "m", 2, 2, 2);
    let e = engine(objs.clone());
    report(&e, "ns", "v-p0", 0.75, 2.0, Duration::ZERO);
    report(&e, "ns", "v-p1", 0.76, 2.0, Duration::ZERO);
    let sweep = e.sweep();
    let first = e.inventory().load();
    assert_eq!(sweep.generation(), first.generation());
    assert!(e.snapshot_of(&sweep).is_some());
    assert!(e.current_sweep(&first).is_some());
    let replaced = Arc::downgrade(&first);
    drop(first);

    e.inventory().publish(resolve(&objs).0);
    // The sweep is still the last one, but the snapshot it decided is gone
    // and no reader is handed it as current.
    assert!(replaced.upgrade().is_none());
    let second = e.inventory().load();
    assert_eq!(second.generation(), sweep.generation() + 1);
    assert!(e.snapshot_of(&sweep).is_none());
    assert!(e.current_sweep(&second).is_none());
    // Requests still decide (on demand) until the next sweep.
    assert_eq!(e.decide("ns", &sel("")).unwrap()[0].desired, 3);
    let next = e.sweep();
    assert!(e.snapshot_of(&next).is_some());
    assert!(e.current_sweep(&second).is_some());
}

/// Issue 31: the `slo` analysis' input carries each replica's mean prefill
/// seconds as the backend collected it (unknown stays unknown).
#[test]
fn slo_inputs_carry_the_mean_prefill_seconds() {
    let e = engine(objects("ns", "v", "m", 2, 2, 2));
    report(&e, "ns", "v-p0", 0.5, 0.0, Duration::ZERO);
    report(&e, "ns", "v-p1", 0.5, 0.0, Duration::ZERO);
    let mut with_prefill = e.cache().get(&pod_key("ns", "v-p1")).unwrap();
    with_prefill.avg_prefill_seconds = Some(0.064);
    e.cache().insert(pod_key("ns", "v-p1"), with_prefill);
    let snapshot = e.inventory().load();
    let inputs = e
        .model_inputs(&snapshot, &model("ns", "m"), SystemTime::now())
        .unwrap();
    let mut got: Vec<(&str, Option<f64>)> = inputs
        .slo
        .iter()
        .map(|r| (r.pod.as_str(), r.avg_prefill_seconds))
        .collect();
    got.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(got, [("v-p0", None), ("v-p1", Some(0.064))]);
}

/// `/metrics` follows the inventory: the gauges of a variant that is gone
/// from the sweep are removed (a deleted variant's last count would
/// otherwise stay there, and the series grow with every variant ever
/// created), those of the others stay.
#[test]
fn the_gauges_of_a_variant_gone_from_the_inventory_are_removed() {
    use crate::decision::publish::DecisionPublisher;
    let mut both = objects("ns", "a", "m", 3, 3, 3);
    let b = objects("ns", "b", "n", 2, 2, 2);
    both.variant_autoscalings.extend(b.variant_autoscalings);
    both.workloads.extend(b.workloads);
    both.pods.extend(b.pods);
    let e = engine(both);
    for (i, kv) in [0.20, 0.30, 0.25].into_iter().enumerate() {
        report(&e, "ns", &format!("a-p{i}"), kv, 1.0, Duration::ZERO);
    }
    for i in 0..2 {
        report(&e, "ns", &format!("b-p{i}"), 0.75, 2.0, Duration::ZERO);
    }
    let (registry, telemetry) = crate::telemetry::Telemetry::standalone();
    let publisher = DecisionPublisher::new(telemetry);
    let page = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    // Each variant gauge's series of variants a and b on a page.
    let series = |text: &str| -> Vec<(usize, usize)> {
        let count = |name: &str, variant: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .filter(|l| l.contains(&format!("variant_name=\"{variant}\"")))
                .count()
        };
        [
            "wva_desired_replicas",
            "wva_current_replicas",
            "wva_desired_ratio",
        ]
        .into_iter()
        .map(|name| (count(name, "a"), count(name, "b")))
        .collect()
    };
    publisher.publish(&e.sweep());
    let before = page();
    assert_eq!(series(&before), [(1, 1); 3], "{before}");
    assert!(before.contains("wva_metrics_sample_age_seconds{namespace=\"ns\",model_id=\"n\"}"));

    // Variant b (model n) is deleted.
    e.inventory()
        .publish(resolve(&objects("ns", "a", "m", 3, 3, 3)).0);
    publisher.publish(&e.sweep());
    let after = page();
    assert_eq!(series(&after), [(1, 0); 3], "{after}");
    assert!(!after.contains("model_id=\"n\"}"), "{after}");
    assert!(
        after.contains("wva_desired_replicas{variant_name=\"a\""),
        "{after}"
    );
}
