//! The baseline of the load benchmark: a bare hyper + rustls server with
//! the same TLS configuration (certificate type, protocol versions, ALPN)
//! as `serve`, answering every request with a fixed body. The difference
//! between the two under the same load is the cost of our tower stack,
//! routing, selector matching, analysis and JSON.
//!
//! ```text
//! cargo run --release --example bare_tls -- --port 9443 --body-file answer.json
//! ```

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use wva_metrics_server::server::tls;

/// The server's allocator, so that the comparison is of code, not allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 9443)]
    port: u16,
    /// The body to answer with (for the same size as the real answer).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Size of a generated body when no file is given.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wva_metrics_server::certs::install_crypto_provider();
    let args = Args::parse();
    let body = match &args.body_file {
        Some(path) => Bytes::from(std::fs::read(path)?),
        None => Bytes::from(vec![b'x'; args.body_bytes]),
    };
    let (pem, _) = tls::self_signed(&[])?;
    let cert = tls::ReloadingCert::fixed(pem)?;
    let acceptor = TlsAcceptor::from(tls::server_config(cert, tls::ClientAuth::Optional)?);
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))).await?;
    println!(
        "listening on {} ({} byte body)",
        listener.local_addr()?,
        body.len()
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| {
                let mut response = hyper::Response::new(Full::new(body.clone()));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
