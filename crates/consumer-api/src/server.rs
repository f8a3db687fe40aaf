//! Serving the router over HTTP/1.1 with the bounds `axum::serve` does not set: a
//! header-read timeout (a client that sends its request head too slowly, or an idle
//! keep-alive connection that sends none, is closed after `header_read_timeout_ms`), an
//! idle timeout (no byte read or written for `idle_timeout_ms`, whatever the state: a
//! stalled request body), on top of the connection cap and write timeout of
//! [`crate::listener`]. Probes (`/live`, `/ready`) and `/metrics` are also served on a
//! listener of their own, outside that cap, so a flood of silent connections on the API
//! port can never make the kubelet restart the pod or hide it from Prometheus.
//! On shutdown both stop accepting, idle connections close, open requests finish.

use std::{future::Future, time::Duration};

use axum::{Router, body::Body, extract::Request, serve::Listener};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The per-connection time bounds.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest time from waiting for a request head to having all of it.
    pub header_read: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then drains: stops accepting,
/// closes idle connections, lets open requests finish.
pub async fn serve_http<L>(
    mut listener: L,
    router: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
) where
    L: Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        let (io, _) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header_read)
            .keep_alive(true);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Runs both servers until `shutdown` resolves, then drains both.
pub async fn serve_both<A, P>(
    api: (A, Router),
    probes: (P, Router),
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    A: Listener,
    A::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Listener,
    P::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stop = CancellationToken::new();
    let signal = tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    tokio::join!(
        serve_http(api.0, api.1, timeouts, stop.clone()),
        serve_http(probes.0, probes.1, timeouts, stop.clone()),
    );
    signal.abort();
}
