//! KEDA's external-scaler gRPC service (`externalscaler.ExternalScaler`).
//! In clusters where KEDA owns `external.metrics.k8s.io`, KEDA calls this
//! instead of the APIService; the answers come from the same decisions.

pub mod metadata;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;

pub use service::KedaScaler;

/// Code generated from `proto/externalscaler.proto` by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/externalscaler.rs"));
}

/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the scaler on `listener` until `shutdown`: over TLS with `tls`,
/// or in plain text when `tls` is None (for set-ups that terminate TLS in
/// front of the pod).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    scaler: KedaScaler,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let service = proto::external_scaler_server::ExternalScalerServer::new(scaler);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service);
    let stop = shutdown.clone();
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
        }
        Some(config) => {
            let incoming = tls_incoming(listener, TlsAcceptor::from(config), shutdown);
            router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        }
    }
}

/// Accepts connections and completes their TLS handshakes off the accept
/// loop, so that one slow client cannot hold the others up.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>>
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer): (_, SocketAddr) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
