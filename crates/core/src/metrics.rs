//! The Prometheus text exposition both binaries serve at `/metrics`, in one place.

use prometheus::{Encoder, Registry, TextEncoder};

/// The text exposition (format 0.0.4) of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("text encoding into a Vec cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";
