//! Request metrics: a counter and a latency histogram labelled by matched route (never the
//! raw path, so ids do not become labels), method and status; served at `/metrics`.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// The API's metrics and their registry.
#[derive(Clone)]
pub struct ApiMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Response bytes held by requests (see `budget`).
    pub response_bytes: IntGauge,
    /// TCP connections open (see `listener`).
    pub open_connections: IntGauge,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let labels = ["route", "method", "status"];
        let requests = IntCounterVec::new(
            Opts::new("leafsync_api_requests_total", "HTTP requests answered."),
            &labels,
        )
        .expect("valid metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "leafsync_api_request_duration_seconds",
                "HTTP request latency.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &labels,
        )
        .expect("valid metric definition");
        let response_bytes = IntGauge::new(
            "leafsync_api_response_bytes",
            "Response bytes held by requests being built or sent (bounded by LEAFSYNC_MAX_RESPONSE_BYTES).",
        )
        .expect("valid metric definition");
        let open_connections = IntGauge::new(
            "leafsync_api_open_connections",
            "TCP connections open (bounded by LEAFSYNC_MAX_CONNECTIONS).",
        )
        .expect("valid metric definition");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(response_bytes.clone()),
            Box::new(open_connections.clone()),
        ] {
            registry.register(metric).expect("unique metric");
        }
        Self {
            registry,
            requests,
            latency,
            response_bytes,
            open_connections,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        leafsync_core::metrics::render(&self.registry)
    }
}

/// The method as a label from a fixed set: a client may send any token as a method, and
/// each would otherwise become a new series.
fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| method.as_str() == *known)
        .unwrap_or("other")
}

/// Middleware: time every request and count it by route template.
pub async fn track(State(metrics): State<ApiMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [route.as_str(), method, status.as_str()];
    metrics.requests.with_label_values(&labels).inc();
    metrics
        .latency
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn render(State(metrics): State<ApiMetrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, leafsync_core::metrics::CONTENT_TYPE)],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_methods_share_one_label() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(
            method_label(&Method::from_bytes(b"XYZZY").unwrap()),
            "other"
        );
    }
}
