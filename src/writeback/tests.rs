use super::*;
use crate::inventory::snapshot::TargetState;

fn variant() -> Variant {
    let mut v = Variant {
        namespace: "llm".into(),
        name: "llama".into(),
        model_id: "m".into(),
        target_kind: "Deployment".into(),
        target_name: "llama".into(),
        accelerator: "A100".into(),
        cost: 10.0,
        min_replicas: 11,
        max_replicas: 13,
        source: VariantSource::VariantAutoscaling,
        target: Some(TargetState {
            spec_replicas: 12,
            status_replicas: 12,
            ready_replicas: 12,
        }),
        hpa_scale_up_tolerance: None,
        hpa_scale_down_tolerance: None,
        engine: None,
        metric_labels: Default::default(),
    };
    v.compute_metric_labels();
    v
}

/// A file inventory of one VariantAutoscaling on H100 with four ready
/// pods, decided with `config`; every pod reports `kv` of a 1000 x 16
/// token KV cache.
fn file_engine_with_tokens(config: &str, kv: f64) -> DecisionEngine {
    use crate::collector::ReplicaMetrics;
    let mut yaml = "---\nkind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {name: v, namespace: ns, labels: {inference.optimization/acceleratorName: H100}}\nspec:\n  scaleTargetRef: {kind: Deployment, name: v-d}\n  modelID: m\n  maxReplicas: 10\n---\nkind: Deployment\napiVersion: apps/v1\nmetadata: {name: v-d, namespace: ns}\nspec: {replicas: 4, selector: {}, template: {}}\nstatus: {replicas: 4, readyReplicas: 4}\n".to_owned();
    for i in 0..4 {
        yaml.push_str(&format!("---\nkind: Pod\napiVersion: v1\nmetadata: {{name: v-p{i}, namespace: ns, labels: {{llm-d.ai/variant: v}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"));
    }
    let store = Arc::new(crate::inventory::store::InventoryStore::new());
    let objects = crate::inventory::file::parse_objects(std::path::Path::new("t"), &yaml).unwrap();
    store.publish(crate::inventory::resolve(&objects).0);
    let (config, errors) = crate::saturation::ThresholdConfig::from_yaml_str(config).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let engine = DecisionEngine::new(
        store,
        Arc::new(crate::collector::MetricsCache::new()),
        Arc::new(arc_swap::ArcSwap::from_pointee(config)),
        Arc::new(crate::saturation::PercentageAnalyzer),
        crate::collector::FreshnessPolicy::default(),
    );
    for i in 0..4 {
        engine.cache().insert(
            crate::inventory::pod_key("ns", &format!("v-p{i}")),
            ReplicaMetrics {
                model_name: "m".into(),
                kv_usage: kv,
                queue_waiting: 0.0,
                queue_waiting_latest: None,
                running: None,
                sampled_at: std::time::SystemTime::now(),
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
    engine
}

/// Issue 29, item 1: a variant decided by V2 is written with
/// `MetricsAvailable=True` and V2's replicas (it was written
/// `MetricsMissing` and holding, because only V1's analysis counted).
#[test]
fn a_variant_decided_by_v2_has_metrics_and_v2s_replicas_in_its_status() {
    for (config, kv, analyzer, want) in [
        (
            "default: {analyzerName: saturation}",
            0.98,
            "saturation-v2",
            6,
        ),
        (
            "default: {analyzerName: saturation}",
            0.10,
            "saturation-v2",
            1,
        ),
        ("default: {}", 0.98, "saturation-v1", 5),
    ] {
        let engine = file_engine_with_tokens(config, kv);
        let decided = engine
            .decide(
                "ns",
                &crate::k8s::selector::LabelSelector::parse("").unwrap(),
            )
            .unwrap();
        assert_eq!(
            (decided[0].analyzer, decided[0].desired),
            (analyzer, want),
            "{config} kv {kv}"
        );
        let sweep = engine.sweep();
        let snapshot = engine.snapshot_of(&sweep).unwrap();
        let statuses = planned_statuses(&sweep, &snapshot);
        assert_eq!(statuses.len(), 1);
        let ((ns, name), status) = &statuses[0];
        assert_eq!((ns.as_str(), name.as_str()), ("ns", "v"));
        assert_eq!(status.num_replicas, want as i32, "{config} kv {kv}");
        assert_eq!(status.accelerator, "H100");
        let metrics = &status.conditions[1];
        assert_eq!(
            (metrics.0.as_str(), metrics.1.as_str(), metrics.2.as_str()),
            ("MetricsAvailable", "True", "MetricsFound"),
            "{config} kv {kv}"
        );
        assert_eq!(status.conditions[2].2, "Optimized");
    }
}

#[test]
fn held_moves_say_why_on_the_status() {
    let v = variant();
    let base = desired_status(&v, &Ok(Some(12)), true);
    for (reason, words) in [
        (
            TargetReason::ToleranceHoldUp,
            "above maxReplicas 13; holding at 12",
        ),
        (
            TargetReason::ToleranceHoldDown,
            "below minReplicas 11; holding at 12",
        ),
    ] {
        let s = base.clone().with_reason(&v, Some(reason));
        assert_eq!(s.num_replicas, 12);
        let (kind, status, why, message) = &s.conditions[2];
        assert_eq!(
            (kind.as_str(), status.as_str(), why.as_str()),
            ("OptimizationReady", "True", "HeldByHPATolerance")
        );
        assert!(message.contains(words), "{message}");
        assert_eq!(s.conditions[..2], base.conditions[..2]);
    }
    for reason in [
        None,
        Some(TargetReason::ScaleUp),
        Some(TargetReason::Steady),
    ] {
        assert_eq!(base.clone().with_reason(&v, reason), base);
    }
}

#[test]
fn the_distance_ranks_replicas_over_conditions_and_unwritten_first() {
    let v = variant();
    let at = |n: u32, metrics: bool| desired_status(&v, &Ok(Some(n)), metrics);
    let d = |w: &DesiredStatus, n: &DesiredStatus| status_distance(Some(w), n);
    assert_eq!(status_distance(None, &at(12, true)), u64::MAX);
    assert_eq!(d(&at(12, true), &at(12, true)), 0);
    // Conditions alone (metrics found -> missing: two conditions differ).
    assert_eq!(d(&at(12, true), &at(12, false)), 2);
    // The replicas, and the OptimizationReady message that names them.
    assert_eq!(d(&at(12, true), &at(13, true)), 16 + 1);
    assert_eq!(d(&at(12, true), &at(2, true)), 160 + 1);
    assert_eq!(d(&at(2, true), &at(12, true)), 160 + 1);
    assert!(d(&at(12, true), &at(13, true)) > d(&at(12, true), &at(12, false)));
}

#[test]
fn events_name_each_change_once() {
    let v = variant();
    let found = desired_status(&v, &Ok(Some(12)), true);
    let reasons = |p: Option<&DesiredStatus>, n: &DesiredStatus| -> Vec<String> {
        events_for(p, n).into_iter().map(|e| e.reason).collect()
    };
    assert_eq!(reasons(None, &found), ["ScalingDecision"]);
    assert!(reasons(Some(&found), &found).is_empty());
    let up = desired_status(&v, &Ok(Some(13)), true);
    assert_eq!(reasons(Some(&found), &up), ["ScalingDecision"]);
    let missing = desired_status(&v, &Ok(Some(12)), false);
    assert_eq!(reasons(Some(&found), &missing), ["MetricsUnavailable"]);
    assert!(reasons(Some(&missing), &missing).is_empty());
    assert_eq!(
        events_for(Some(&found), &up)[0].note.as_deref(),
        Some("desired replicas 13")
    );
}
