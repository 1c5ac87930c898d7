//! The metrics backend of `serve` from its flags: the scrape backend, or
//! Prometheus (with a background check of which vLLM series it has).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{BackendKind, ServeArgs};
use crate::collector::prometheus::PrometheusBackend;
use crate::collector::scrape::{ScrapeBackend, ScrapeConfig};
use crate::collector::MetricsBackend;
use crate::saturation::ScaleToZeroConfig;
use crate::telemetry::Telemetry;

/// The backend `--metrics-backend` names and its fetch interval.
pub(crate) fn metrics_backend(
    args: &ServeArgs,
    telemetry: &Telemetry,
    scale_to_zero: &Arc<ArcSwap<ScaleToZeroConfig>>,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<(Arc<dyn MetricsBackend>, Duration)> {
    Ok(match args.metrics.metrics_backend {
        BackendKind::Scrape => {
            let config = ScrapeConfig {
                timeout: args.scrape.scrape_timeout,
                ..ScrapeConfig::default()
            };
            (
                Arc::new(
                    ScrapeBackend::new(config, telemetry.clone())?
                        .with_scale_to_zero(Arc::clone(scale_to_zero))
                        .with_epp_metrics_url(args.scrape.epp_metrics_url.clone()),
                ),
                args.scrape.scrape_interval,
            )
        }
        BackendKind::Prometheus => {
            let config = args.prometheus.config()?;
            if config.url.is_empty() {
                return Err(crate::fatal::CommandError::invalid(
                    "no Prometheus to query: set --prometheus-url (PROMETHEUS_URL) to your Prometheus or Thanos \
                     querier, or use --metrics-backend scrape to scrape the pods' /metrics directly without Prometheus"
                        .to_owned(),
                )
                .into());
            }
            if config.cache_ttl.is_some() {
                tracing::warn!(
                    "--metrics-cache-ttl / METRICS_CACHE_TTL has no effect and will be removed: \
                     requests never refresh metrics on the network; the background fetcher keeps \
                     them current (see --metrics-fetch-interval and --metrics-stale-after)"
                );
            }
            let interval = config.fetch_interval;
            if args.scrape.epp_metrics_url.is_some() {
                tracing::warn!("--epp-metrics-url is used with --metrics-backend scrape only: with Prometheus the endpoint picker's queues are queried there");
            }
            config.validate()?;
            let backend = Arc::new(
                PrometheusBackend::new(config, telemetry.clone())?
                    .with_scale_to_zero(Arc::clone(scale_to_zero)),
            );
            let check = Arc::clone(&backend);
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    checked = check.validate_metrics_availability() => {
                        if let Err(e) = checked {
                            tracing::warn!(error = %e, "cannot check which vLLM series Prometheus has");
                        }
                    }
                }
            }));
            (backend, interval)
        }
    })
}
