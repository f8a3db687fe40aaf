//! `consumer-api` entry point: config, logging, connect, serve until SIGTERM/ctrl-c.

use anyhow::Context;
use consumer_api::{ApiConfig, AppState, config::EnvConfig, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::from_env().context("consumer-api cannot start")?;
    leafsync_core::runtime::init_tracing(config.log_format);
    let state = AppState::connect(&config)
        .await
        .context("consumer-api cannot start: LEAFSYNC_MONGO_URI")?;
    let listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("cannot listen on LEAFSYNC_API_ADDR={}", config.api_addr))?;
    let probes = tokio::net::TcpListener::bind(config.probe_addr)
        .await
        .with_context(|| format!("cannot listen on LEAFSYNC_PROBE_ADDR={}", config.probe_addr))?;
    serve(
        listener,
        probes,
        state,
        &config,
        leafsync_core::runtime::shutdown_signal(),
    )
    .await
    .context("consumer-api server")?;
    tracing::info!("consumer-api stopped");
    Ok(())
}
