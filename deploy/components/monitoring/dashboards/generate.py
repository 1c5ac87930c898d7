#!/usr/bin/env python3
"""Writes the Grafana dashboard: dashboards/wva-metrics-server.json (for import)
and dashboard.yaml (the same JSON in a ConfigMap for Grafana's sidecar, which
the Helm chart renders too). Edit the panels here and run, from the repository
root:

    python3 deploy/components/monitoring/dashboards/generate.py deploy/components/monitoring

tests/dashboard_expressions.rs evaluates every expression against a running
server; tests/helm_chart.rs checks the two files hold the same dashboard.
"""
import json, sys
SEL = 'namespace=~"$namespace"'
VSEL = 'namespace=~"$namespace", variant_name=~"$variant"'
MSEL = 'namespace=~"$namespace", model_id=~"$model"'
RI = '$__rate_interval'
panels = []
pid = [0]
y = [0]
def row(title):
    pid[0] += 1
    panels.append({"type": "row", "title": title, "id": pid[0], "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1
    row.x = 0
def panel(title, targets, unit="short", w=8, desc="", kind="timeseries"):
    pid[0] += 1
    if row.x + w > 24:
        row.x = 0; y[0] += 8
    p = {"type": kind, "title": title, "id": pid[0], "description": desc,
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "gridPos": {"h": 8, "w": w, "x": row.x, "y": y[0]},
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True},
                     "tooltip": {"mode": "multi", "sort": "desc"}},
         "targets": [{"refId": chr(65 + i), "expr": e, "legendFormat": l,
                      "datasource": {"type": "prometheus", "uid": "${datasource}"}} for i, (e, l) in enumerate(targets)]}
    panels.append(p)
    row.x += w
def endrow():
    y[0] += 8
row.x = 0

row("Decisions")
panel("Replicas per variant: desired, ready, current", [
    (f'max by (namespace, variant_name) (wva_desired_replicas{{{VSEL}}})', '{{namespace}}/{{variant_name}} desired'),
    (f'max by (namespace, variant_name) (wva_current_replicas{{{VSEL}}})', '{{namespace}}/{{variant_name}} ready'),
    (f'max by (namespace, target_name) (label_replace(kube_deployment_spec_replicas{{{SEL}}}, "target_name", "$1", "deployment", "(.*)") and on (namespace, target_name) wva_desired_replicas{{{VSEL}}})', '{{namespace}}/{{target_name}} current (kube-state-metrics)'),
], w=12, desc="What the analysis wants (desired), what is ready (the analysis counts ready replicas), and the Deployment's spec.replicas from kube-state-metrics when it is scraped.")
panel("Desired over ready replicas", [
    (f'max by (namespace, variant_name) (wva_desired_ratio{{{VSEL}}})', '{{namespace}}/{{variant_name}}'),
], w=12, desc="wva_desired_ratio, the value an HPA with target Value 1 acts on; 1 means hold.")
panel("Decisions by analyzer", [
    (f'sum by (namespace, model_id, analyzer) (rate(wva_analyzer_decisions_total{{{MSEL}}}[{RI}]))', '{{namespace}}/{{model_id}} {{analyzer}}'),
], unit="ops", desc="Which analysis decided for each model: saturation-v1 (percentage based) or saturation-v2 (token based).")
panel("Scaling recommendations by direction and reason", [
    (f'max by (namespace, variant_name, direction, reason) (increase(wva_replica_scaling_total{{{VSEL}}}[{RI}]))', '{{variant_name}} {{direction}} ({{reason}})'),
], desc="Changes of the recommendation; many per hour means load oscillates around a threshold.")
panel("Why it held", [
    (f'max by (namespace, variant_name, direction, reason) (increase(wva_tolerance_holds_total{{{VSEL}}}[{RI}]))', '{{variant_name}} held {{direction}}: {{reason}}'),
    (f'max by (namespace, model_id) (increase(wva_decisions_without_metrics_total{{{MSEL}}}[{RI}]))', '{{model_id}} held: no replica reported metrics'),
], desc="Decision cycles that kept the replicas although the analysis wanted to move (HPA tolerance band, bounds) or had no data.")
endrow()

row("slo analysis (analyzerName: slo)")
panel("Arrivals and the rate sized for", [
    (f'max by (namespace, model_id) (wva_slo_arrivals_per_second{{{MSEL}}})', '{{namespace}}/{{model_id}} arrivals'),
    (f'max by (namespace, model_id) (wva_slo_sized_requests_per_second{{{MSEL}}})', '{{namespace}}/{{model_id}} sized for'),
], unit="reqps", desc="What the slo analysis estimates arrives (completions plus queue growth) and what it sizes for (projected over the start-up delay, plus capacity held for the backlog). On a scale-up, desired replicas = sized for / per replica, rounded up.")
panel("Per replica within the objective", [
    (f'max by (namespace, variant_name) (wva_slo_replica_requests_per_second{{{VSEL}}})', '{{namespace}}/{{variant_name}}'),
], unit="reqps", desc="Requests per second one replica carries with the time to first token within the objective, learned from the replicas' own throughput and latency (after sloHeadroom).")
panel("Learned per request, and the backlog", [
    (f'max by (namespace, model_id) (wva_slo_request_seconds{{{MSEL}}})', '{{model_id}} seconds in a replica'),
    (f'max by (namespace, model_id) (wva_slo_prefill_seconds{{{MSEL}}})', '{{model_id}} prefill seconds'),
    (f'max by (namespace, model_id) (wva_slo_backlog_requests{{{MSEL}}})', '{{model_id}} waiting'),
], desc="A per-replica rate that falls while requests take longer (longer outputs, a slower accelerator) asks for more replicas; a backlog held adds capacity for the start-up delay.")
endrow()

row("Metrics freshness")
panel("Age of the newest sample per model", [
    (f'max by (namespace, model_id) (wva_metrics_sample_age_seconds{{{MSEL}}})', '{{namespace}}/{{model_id}}'),
], unit="s", w=12, desc="Past --metrics-stale-after (2m by default) a model's answers turn 503 (alert WVAModelMetricsStale).")
panel("Models deciding on aging data", [
    (f'max by (namespace, model_id) (wva_model_metrics_aging{{{MSEL}}})', '{{namespace}}/{{model_id}}'),
], w=6, desc="1 while the newest sample is older than --metrics-fresh-within but still used.")
panel("Rejected vLLM samples", [
    (f'sum by (backend, signal, reason) (rate(wva_metrics_samples_rejected_total[{RI}]))', '{{backend}} {{signal}}: {{reason}}'),
], unit="ops", w=6, desc="NaN, infinite or out-of-range values; the last good value is used.")
endrow()

row("Fetching")
panel("Fetch cycle duration and gap", [
    ('max by (instance) (wva_fetch_cycle_duration_seconds)', '{{instance}} duration'),
    ('max by (instance) (wva_fetch_gap_seconds)', '{{instance}} gap to next'),
], unit="s", desc="The last background fetch cycle of each replica, and the gap until the next one starts.")
panel("Fetch cycles by result", [
    (f'sum by (instance, result) (rate(wva_fetch_cycles_total[{RI}]))', '{{instance}} {{result}}'),
], unit="ops")
panel("Backend request latency (p50, p99)", [
    (f'histogram_quantile(0.5, sum by (le, backend, query) (rate(wva_backend_request_duration_seconds_bucket[{RI}])))', 'p50 {{backend}} {{query}}'),
    (f'histogram_quantile(0.99, sum by (le, backend, query) (rate(wva_backend_request_duration_seconds_bucket[{RI}])))', 'p99 {{backend}} {{query}}'),
], unit="s")
panel("Backend errors by backend, query and kind", [
    (f'sum by (backend, query, kind) (rate(wva_backend_errors_total[{RI}]))', '{{backend}} {{query}}: {{kind}}'),
], unit="ops", w=24)
endrow()

row("Metrics API")
panel("Requests by route and code", [
    (f'sum by (route, code) (rate(wva_http_requests_total[{RI}]))', '{{route}} {{code}}'),
], unit="reqps", desc="Every answer of the HTTPS port; the route names the resource and verb (list, values, discovery, probes, /metrics).")
panel("Request latency by route (p50, p99)", [
    (f'histogram_quantile(0.5, sum by (le, route) (rate(wva_http_request_duration_seconds_bucket[{RI}])))', 'p50 {{route}}'),
    (f'histogram_quantile(0.99, sum by (le, route) (rate(wva_http_request_duration_seconds_bucket[{RI}])))', 'p99 {{route}}'),
], unit="s")
panel("Error ratio (5xx) of metric requests", [
    (f'sum by (instance) (rate(wva_http_requests_total{{route!~"healthz|livez|readyz|metrics|unmatched", code=~"5.."}}[{RI}])) / sum by (instance) (rate(wva_http_requests_total{{route!~"healthz|livez|readyz|metrics|unmatched"}}[{RI}]))', '{{instance}}'),
], unit="percentunit", desc="Alert WVAAPIErrors fires above 5 % for 10 minutes.")
panel("KEDA calls by method and code", [
    (f'sum by (method, code) (rate(wva_keda_requests_total[{RI}]))', '{{method}} {{code}}'),
], unit="reqps", desc="Calls of KEDA's external scaler (gRPC): GetMetrics, IsActive, GetMetricSpec, and StreamIsActive openings, by gRPC code.")
panel("Open connections by port", [
    ('sum by (port) (wva_connections_open)', '{{port}}'),
    ('sum(wva_keda_open_connections)', 'keda (gRPC)'),
], desc="Connections held by the HTTPS port and the KEDA port.")
panel("Connections closed by the server", [
    (f'sum by (port, reason) (rate(wva_connections_closed_by_server_total[{RI}]))', '{{port}}: {{reason}}'),
    (f'sum by (reason) (rate(wva_keda_connections_closed_total[{RI}]))', 'keda: {{reason}}'),
], unit="ops", w=8, desc="Connections refused or closed for limits, idle or slow clients, on both ports (KEDA's include handshake failures).")
endrow()

row("Authentication and authorization")
panel("Cache lookups by result", [
    (f'sum by (cache, result) (rate(wva_auth_cache_lookups_total[{RI}]))', '{{cache}} {{result}}'),
], unit="ops", w=12, desc="TokenReview (cache=token) and SubjectAccessReview (cache=access_review) answers: hit is answered from the cache, miss sent a review to the kube-apiserver.")
panel("Cache hit ratio", [
    (f'sum by (cache) (rate(wva_auth_cache_lookups_total{{result="hit"}}[{RI}])) / sum by (cache) (rate(wva_auth_cache_lookups_total[{RI}]))', '{{cache}}'),
], unit="percentunit", w=12, desc="Low ratios with many clients mean reviews on most requests: raise --authentication-token-webhook-cache-ttl / --authorization-webhook-cache-authorized-ttl.")
endrow()

row("Kubernetes API and status writes")
panel("Status write backlog", [
    ('max by (instance) (wva_status_writes_pending)', '{{instance}} pending'),
], desc="VariantAutoscaling status writes waiting (one per object at most); only the leader writes.")
panel("Status writes and Events by result", [
    (f'sum by (result) (rate(wva_status_writes_total[{RI}]))', 'status {{result}}'),
    (f'sum(rate(wva_status_writes_superseded_total[{RI}]))', 'status superseded'),
    (f'sum by (result) (rate(wva_events_total[{RI}]))', 'event {{result}}'),
], unit="ops")
panel("API server calls by budget", [
    (f'sum by (budget) (rate(wva_kube_api_requests_total[{RI}]))', '{{budget}} calls'),
    (f'sum by (budget) (rate(wva_kube_api_rate_limit_wait_seconds_total[{RI}]))', '{{budget}} waiting (s/s)'),
    (f'sum by (budget) (rate(wva_kube_api_retry_after_total[{RI}]))', '{{budget}} 429 Retry-After'),
], unit="ops", desc="Calls to the kube-apiserver past the client-side rate limit (TokenReview, SubjectAccessReview, status patches, Events; watches not counted).")
endrow()

row("Process")
panel("Resident memory", [
    ('max by (instance) (process_resident_memory_bytes{job=~"$job"})', '{{instance}}'),
], unit="bytes", w=12)
panel("Open file descriptors", [
    ('max by (instance) (process_open_fds{job=~"$job"})', '{{instance}}'),
], w=12)
endrow()

def var(name, query, label, include_all=True):
    return {"name": name, "label": label, "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query,
            "refresh": 2, "includeAll": include_all, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "sort": 1}

dash = {
    "title": "wva-metrics-server",
    "uid": "wva-metrics-server",
    "description": "Decisions, data freshness, fetching, the metrics API, status writes and the process of wva-metrics-server (docs/install.md#dashboard).",
    "tags": ["wva", "autoscaling", "vllm"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0},
        var("job", 'label_values(wva_fetch_cycles_total, job)', "Job"),
        var("namespace", 'label_values(wva_desired_replicas, namespace)', "Namespace"),
        var("model", 'label_values(wva_metrics_sample_age_seconds{namespace=~"$namespace"}, model_id)', "Model"),
        var("variant", 'label_values(wva_desired_replicas{namespace=~"$namespace"}, variant_name)', "Variant"),
    ]},
    "annotations": {"list": []},
    "panels": panels,
}
if len(sys.argv) == 1: print(json.dumps(dash, indent=2))
import sys
if len(sys.argv) > 1:
    text = json.dumps(dash, indent=2) + "\n"
    with open(sys.argv[1] + "/dashboards/wva-metrics-server.json", "w") as f:
        f.write(text)
    with open(sys.argv[1] + "/dashboard.yaml", "w") as f:
        f.write("""# The Grafana dashboard for Grafana's dashboard sidecar (kube-prometheus-stack
# loads every ConfigMap labelled grafana_dashboard=1). The same JSON, for
# import by hand: dashboards/wva-metrics-server.json (tests/helm_chart.rs
# checks both hold the same dashboard; the chart renders this ConfigMap).
apiVersion: v1
kind: ConfigMap
metadata:
  name: wva-metrics-server-dashboard
  namespace: wva-system
  labels:
    app.kubernetes.io/name: wva-metrics-server
    grafana_dashboard: "1"
data:
  wva-metrics-server.json: |
""")
        for line in text.splitlines():
            f.write(("    " + line).rstrip() + "\n")
