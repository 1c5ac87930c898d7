//! `wva-metrics-server emulate`: a vLLM replica emulator. It serves
//! vLLM-format `/metrics` over plain HTTP (as vLLM does) and lets tests and
//! the demo change its state with `POST /admin/state`.

pub mod fleet;
pub(crate) mod load;
pub(crate) mod objects;
pub mod prometheus_api;
pub mod render;
pub(crate) mod state;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use state::ReplicaState;
use state::StatePatch;

use clap::Args;

use crate::cli::parse_request_rate;
use crate::saturation::v2::KvCacheConfig;
use render::Counters;

/// `emulate`'s arguments.
#[derive(Debug, Args, Clone)]
pub struct EmulateArgs {
    /// Port of the plain-HTTP /metrics endpoint.
    #[arg(long)]
    pub(crate) port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) bind_address: IpAddr,
    /// Model name reported in the `model_name` label.
    #[arg(long)]
    pub(crate) model_name: String,
    /// KV-cache usage, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) kv: f64,
    /// Requests waiting.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) waiting: f64,
    /// Requests running.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) running: f64,
    /// Requests completed per second: drives vllm:request_success_total and the token counters
    /// (default: running / 2). Also `request_rate` in POST /admin/state.
    #[arg(long, value_parser = parse_request_rate)]
    pub(crate) request_rate: Option<f64>,
    /// KV-cache blocks reported in `vllm:cache_config_info` (`num_gpu_blocks`).
    #[arg(long, default_value_t = render::NUM_GPU_BLOCKS, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) num_gpu_blocks: u64,
    /// Tokens per KV-cache block reported in `vllm:cache_config_info` (`block_size`).
    #[arg(long, default_value_t = render::BLOCK_SIZE, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) block_size: u64,
    /// Prompt tokens prefilled per second: each finished request's vllm:request_prefill_time_seconds
    /// is its prompt tokens over this. Also `prefill_tokens_per_second` in POST /admin/state.
    #[arg(long, default_value_t = render::DEFAULT_PREFILL_TOKENS_PER_SECOND, value_parser = parse_prefill_throughput)]
    pub(crate) prefill_tokens_per_second: f64,
}

/// A prefill throughput: a finite number > 0 of tokens per second.
fn parse_prefill_throughput(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if valid_prefill_throughput(v) => Ok(v),
        Ok(_) => Err(format!(
            "{s:?}: the prefill throughput must be a finite number > 0 of tokens per second"
        )),
        Err(_) => Err(format!("{s:?} is not a number of tokens per second")),
    }
}

fn valid_prefill_throughput(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// The KV cache an emulated replica reports unless told otherwise.
pub(crate) const DEFAULT_KV_CACHE: KvCacheConfig = KvCacheConfig {
    num_gpu_blocks: render::NUM_GPU_BLOCKS,
    block_size: render::BLOCK_SIZE,
};

/// Largest `POST /admin/state` body accepted.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// What an emulator starts with.
#[derive(Debug, Clone)]
pub(crate) struct EmulatorOptions {
    pub(crate) model_name: String,
    pub(crate) state: ReplicaState,
    /// Requests completed per second (None: running / 2).
    pub(crate) request_rate: Option<f64>,
}

struct Shared {
    model: String,
    state: ReplicaState,
    /// What `vllm:cache_config_info` reports.
    kv_cache: KvCacheConfig,
    counters: Counters,
    last_tick: Instant,
    /// Fractional finished requests carried between renders.
    carry: f64,
    /// Requests completed per second, when set (else running / 2).
    request_rate: Option<f64>,
    /// Flow-control queue reported for the model, when set.
    scheduler_queue: Option<f64>,
}

impl Shared {
    /// Advances counters by the time since the last render: each running
    /// request finishes at about one per two seconds.
    fn tick(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        let running = if self.state.running.is_finite() {
            self.state.running.max(0.0)
        } else {
            0.0
        };
        let rate = self.request_rate.unwrap_or(running * 0.5);
        self.carry += rate * dt;
        let finished = self.carry.floor();
        self.carry -= finished;
        self.counters.finish_requests(finished as u64);
    }
}

/// A running emulator.
pub(crate) struct EmulatorHandle {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding the lock cannot leave the plain data invalid.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl EmulatorHandle {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn set_state(&self, state: ReplicaState) {
        lock(&self.shared).state = state;
    }

    /// Requests completed per second from now on (None: running / 2).
    pub(crate) fn set_request_rate(&self, rate: Option<f64>) {
        let mut s = lock(&self.shared);
        s.tick();
        s.request_rate = rate.filter(|r| r.is_finite() && *r >= 0.0);
    }

    /// Prefills prompts at `tokens_per_second` from now on (requests
    /// finished before keep the prefill time they had).
    pub(crate) fn set_prefill_tokens_per_second(&self, tokens_per_second: f64) {
        let mut s = lock(&self.shared);
        s.tick();
        s.counters.prefill_tokens_per_second = tokens_per_second;
    }

    /// Reports `requests` queued for the model in the endpoint picker's
    /// flow control (None: no flow-control series).
    pub(crate) fn set_scheduler_queue(&self, requests: Option<f64>) {
        lock(&self.shared).scheduler_queue = requests;
    }

    /// Stops accepting and waits (briefly) for the accept loop to end.
    pub(crate) async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Starts an emulator on `bind` (port 0 picks a free port).
pub(crate) async fn start(
    bind: SocketAddr,
    opts: EmulatorOptions,
) -> std::io::Result<EmulatorHandle> {
    start_with_cache(bind, opts, DEFAULT_KV_CACHE).await
}

/// [`start`], reporting `kv_cache` in `vllm:cache_config_info`.
pub(crate) async fn start_with_cache(
    bind: SocketAddr,
    opts: EmulatorOptions,
    kv_cache: KvCacheConfig,
) -> std::io::Result<EmulatorHandle> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Mutex::new(Shared {
        model: opts.model_name,
        state: opts.state,
        kv_cache,
        counters: Counters::default(),
        last_tick: Instant::now(),
        carry: 0.0,
        request_rate: opts.request_rate,
        scheduler_queue: None,
    }));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown.clone()));
    Ok(EmulatorHandle {
        addr,
        shared,
        shutdown,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Mutex<Shared>>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(req, &shared).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// The state as `/admin/state` shows it: the load, and the KV cache that
/// `vllm:cache_config_info` reports.
fn state_json(shared: &Shared) -> String {
    let mut v = serde_json::to_value(shared.state).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "num_gpu_blocks".into(),
            shared.kv_cache.num_gpu_blocks.into(),
        );
        m.insert("block_size".into(), shared.kv_cache.block_size.into());
        m.insert("request_rate".into(), shared.request_rate.into());
        m.insert("scheduler_queue".into(), shared.scheduler_queue.into());
        m.insert(
            "prefill_tokens_per_second".into(),
            shared.counters.prefill_tokens_per_second.into(),
        );
        m.insert(
            "requests_completed".into(),
            (shared.counters.success_stop
                + shared.counters.success_length
                + shared.counters.success_abort)
                .floor()
                .into(),
        );
    }
    v.to_string()
}

async fn handle(req: Request<Incoming>, shared: &Mutex<Shared>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
    const JSON: &str = "application/json";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let page = {
                let mut s = lock(shared);
                s.tick();
                let mut page =
                    render::render_with_cache(&s.model, &s.state, &s.counters, s.kv_cache);
                if let Some(q) = s.scheduler_queue {
                    page.push_str(&render::flow_control(&s.model, q));
                }
                page
            };
            reply(StatusCode::OK, TEXT, page)
        }
        (&Method::GET, "/admin/state") => {
            let mut s = lock(shared);
            s.tick();
            reply(StatusCode::OK, JSON, state_json(&s))
        }
        (&Method::POST, "/admin/state") => {
            let body = match Limited::new(req.into_body(), MAX_ADMIN_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        TEXT,
                        format!("cannot read body: {e}\n"),
                    )
                }
            };
            match serde_json::from_slice::<StatePatch>(&body) {
                Ok(patch) if patch.num_gpu_blocks == Some(0) || patch.block_size == Some(0) => {
                    reply(
                        StatusCode::BAD_REQUEST,
                        TEXT,
                        "num_gpu_blocks and block_size must be positive integers\n",
                    )
                }
                Ok(patch)
                    if [patch.request_rate, patch.scheduler_queue]
                        .iter()
                        .flatten()
                        .any(|v| !v.is_finite() || *v < 0.0) =>
                {
                    reply(
                        StatusCode::BAD_REQUEST,
                        TEXT,
                        "request_rate and scheduler_queue must be finite numbers >= 0\n",
                    )
                }
                Ok(patch)
                    if patch
                        .prefill_tokens_per_second
                        .is_some_and(|v| !valid_prefill_throughput(v)) =>
                {
                    reply(
                        StatusCode::BAD_REQUEST,
                        TEXT,
                        "prefill_tokens_per_second must be a finite number > 0\n",
                    )
                }
                Ok(patch) => {
                    let (state, body) = {
                        let mut s = lock(shared);
                        s.tick();
                        s.state.apply(patch);
                        if let Some(n) = patch.num_gpu_blocks {
                            s.kv_cache.num_gpu_blocks = n;
                        }
                        if let Some(b) = patch.block_size {
                            s.kv_cache.block_size = b;
                        }
                        if let Some(r) = patch.request_rate {
                            s.request_rate = Some(r);
                        }
                        if let Some(q) = patch.scheduler_queue {
                            s.scheduler_queue = Some(q);
                        }
                        // After the tick: requests finished until now keep
                        // the throughput they were prefilled at.
                        if let Some(t) = patch.prefill_tokens_per_second {
                            s.counters.prefill_tokens_per_second = t;
                        }
                        (s.state, state_json(&s))
                    };
                    tracing::info!(
                        kv = state.kv,
                        waiting = state.waiting,
                        running = state.running,
                        "emulator state changed"
                    );
                    reply(StatusCode::OK, JSON, body)
                }
                Err(e) => reply(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("expected JSON like {{\"kv\":0.9,\"waiting\":7,\"running\":4}}: {e}\n"),
                ),
            }
        }
        (_, "/metrics" | "/admin/state") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics or /admin/state\n",
        ),
    }
}

/// The `emulate` command: serves until SIGTERM/SIGINT.
pub async fn run_cli(args: EmulateArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bind = SocketAddr::new(args.bind_address, args.port);
    let handle = start_with_cache(
        bind,
        EmulatorOptions {
            model_name: args.model_name.clone(),
            state: ReplicaState {
                kv: args.kv,
                waiting: args.waiting,
                running: args.running,
            },
            request_rate: args.request_rate,
        },
        KvCacheConfig {
            num_gpu_blocks: args.num_gpu_blocks,
            block_size: args.block_size,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    handle.set_prefill_tokens_per_second(args.prefill_tokens_per_second);
    tracing::info!(address = %handle.addr(), model = %args.model_name, "emulated vLLM replica serving /metrics");
    shutdown.cancelled().await;
    handle.shutdown().await;
    Ok(())
}
