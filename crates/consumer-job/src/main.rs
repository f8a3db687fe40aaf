//! `consumer-job` entry point: logging, config, build, run until SIGTERM/ctrl-c.

use anyhow::Context;
use consumer_job::{Job, JobConfig, JobMetrics, config::EnvConfig, metrics};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(run());
    // A blocking close that outlived its bound must not hold the exit past the grace period.
    runtime.shutdown_timeout(consumer_job::config::EXIT_BOUND);
    result
}

async fn run() -> anyhow::Result<()> {
    let settings = JobConfig::from_env().context("consumer-job cannot start")?;
    leafsync_core::runtime::init_tracing(settings.log_format);

    let metrics = JobMetrics::new();
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on LEAFSYNC_METRICS_ADDR={}",
                settings.metrics_addr
            )
        })?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(metrics::serve(listener, metrics.clone(), shutdown.clone()));
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            leafsync_core::runtime::shutdown_signal().await;
            shutdown.cancel();
        }
    });

    let job = Job::build(settings, metrics)
        .await
        .context("consumer-job cannot start")?;
    let result = job.run(shutdown.clone()).await;
    shutdown.cancel();
    server
        .await
        .context("metrics server task")?
        .context("metrics server")?;
    result.context("consumer-job failed")
}
