//! `reconcile`: compares the producer DB with the consumer DB image by image and repairs
//! the consumer's copy through the job's own write path. Thin: arguments and consumer-job's
//! environment in, [`consumer_job::reconcile`] does the work, a summary and an exit
//! status out; with `--watch`, [`consumer_job::verify`] verifies pass after pass until
//! SIGTERM or ctrl-c, its findings as metrics.

use std::{io::IsTerminal, net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use consumer_job::{
    JobConfig,
    config::EnvConfig,
    config::Routes,
    progress::Progress,
    reconcile::{Options, Summary, exit_code, reconcile},
    verify::{self, Plant, VerifyMetrics},
};
use leafsync_core::ImageRepository;
use mongodb::{Database, bson::Document};
use tokio_util::sync::CancellationToken;

/// Brings the consumer DB in line with the producer DB: copies missing images, updates
/// stale ones, rewrites mistyped ones, keeps images the stream made newer, reports (and
/// with --delete-orphans deletes) images only the consumer has.
///
/// The consumer DB and the plants come from consumer-job's environment
/// (LEAFSYNC_MONGO_URI, LEAFSYNC_MONGO_DB, LEAFSYNC_TOPICS).
/// Exit status: 0 in sync after the run, 2 differences remain (or were found, with
/// --dry-run), 1 errors.
///
/// With --watch it verifies continuously instead: pass after pass, drift by kind
/// (missing, extra, value, type, future) as metrics on --metrics-addr, images changed
/// within --settle-seconds counted as in flight, progress checkpointed in the consumer
/// DB; it exits 0 on SIGTERM or ctrl-c.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The producer MongoDB (LIMS's `mongodb-producer`).
    // hide_env_values: --help would print the variable's value, credentials included.
    #[arg(long, env = "LEAFSYNC_PRODUCER_MONGO_URI", hide_env_values = true)]
    producer_uri: String,
    /// The producer database.
    #[arg(long, default_value = "imagedbplantproducer")]
    producer_db: String,
    /// Only this plant (repeatable); default: every plant of LEAFSYNC_TOPICS.
    #[arg(long)]
    plant: Vec<String>,
    /// Change nothing; print what would be done.
    #[arg(long)]
    dry_run: bool,
    /// Delete images found only in the consumer DB (default: report them).
    #[arg(long)]
    delete_orphans: bool,
    /// Images per page, read from each DB (memory is bounded by one page of each).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    page_size: u32,
    /// Producer images read per second at most, so the producer DB is not swamped.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    max_per_second: u32,
    #[command(flatten)]
    watch: WatchArgs,
}

/// `--watch` and its settings.
#[derive(clap::Args)]
struct WatchArgs {
    /// Verify continuously, pass after pass, until SIGTERM or ctrl-c (report only unless
    /// --repair).
    #[arg(long, conflicts_with_all = ["dry_run", "delete_orphans"])]
    watch: bool,
    /// --watch: an image that changed this recently (either side) is in flight, not drift.
    #[arg(long, default_value_t = 30, requires = "watch")]
    settle_seconds: u64,
    /// --watch: documents read per second at most, both DBs together (0: unthrottled).
    #[arg(long, default_value_t = 1000, requires = "watch")]
    max_docs_per_second: u32,
    /// --watch: repair drift as a run would (extra images are only reported).
    #[arg(long, requires = "watch")]
    repair: bool,
    /// --watch: where /metrics, /live and /ready are served.
    #[arg(long, default_value = "0.0.0.0:9102", requires = "watch")]
    metrics_addr: SocketAddr,
    /// --watch: the pause between two passes.
    #[arg(long, default_value_t = 10, requires = "watch")]
    pass_pause_seconds: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    leafsync_core::runtime::init_tracing(leafsync_core::runtime::LogFormat::Text);
    match run(&cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("reconcile failed: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<u8> {
    let settings = JobConfig::from_env().context("reconcile reads consumer-job's configuration")?;
    let mut routes = settings.routes;
    routes
        .only(&cli.plant)
        .map_err(|e| anyhow::anyhow!("--plant {e} (the plants of LEAFSYNC_TOPICS)"))?;
    let producer = leafsync_core::mongo::connect(&cli.producer_uri, "leafsync-reconcile")
        .await
        .context("--producer-uri")?
        .database(&cli.producer_db);
    let client = leafsync_core::mongo::connect(&settings.mongo.uri, "leafsync-reconcile")
        .await
        .context("LEAFSYNC_MONGO_URI")?;
    let consumer = ImageRepository::new(client, &settings.mongo.db, settings.mongo.write_path);
    let collections = routes.collections();
    if cli.watch.watch {
        if cli.watch.repair {
            consumer.ensure_indexes(&collections).await?;
        }
        let skew = settings.limits.max_future_skew;
        return watch(
            &cli.watch,
            cli.page_size,
            &producer,
            &consumer,
            &routes,
            skew,
        )
        .await;
    }
    if !cli.dry_run {
        // The stale guard needs the unique index; the job builds the same one.
        consumer.ensure_indexes(&collections).await?;
    }
    let options = Options {
        page_size: cli.page_size,
        max_per_second: cli.max_per_second,
        dry_run: cli.dry_run,
        delete_orphans: cli.delete_orphans,
        max_future_skew: settings.limits.max_future_skew,
    };
    let mut plants = Vec::new();
    for route in &routes {
        let total = producer
            .collection::<Document>(route.collection.as_str())
            .estimated_document_count()
            .await
            .with_context(|| format!("counting the producer's {}", route.collection))?;
        let mut progress = Progress::new(&route.label, total);
        let tally = reconcile(
            &producer,
            &consumer,
            &route.collection,
            &options,
            &mut |done| progress.set(done),
        )
        .await
        .with_context(|| format!("reconciling {}", route.collection))?;
        progress.finish(tally.checked);
        plants.push((route.label.clone(), tally));
    }
    println!(
        "{}",
        Summary {
            plants: &plants,
            dry_run: cli.dry_run
        }
    );
    Ok(exit_code(&plants, cli.dry_run))
}

/// `--watch`: the metrics server, the shutdown signal, and the verifier until it fires.
async fn watch(
    cli: &WatchArgs,
    page_size: u32,
    producer: &Database,
    consumer: &ImageRepository,
    routes: &Routes,
    max_future_skew: Duration,
) -> anyhow::Result<u8> {
    let metrics = VerifyMetrics::new();
    let listener = tokio::net::TcpListener::bind(cli.metrics_addr)
        .await
        .with_context(|| format!("--metrics-addr {}", cli.metrics_addr))?;
    let cancel = CancellationToken::new();
    let server = tokio::spawn(verify::metrics::serve(
        listener,
        metrics.clone(),
        cancel.clone(),
    ));
    let signal = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            leafsync_core::runtime::shutdown_signal().await;
            cancel.cancel();
        }
    });
    let plants: Vec<Plant> = routes
        .iter()
        .map(|r| Plant {
            label: r.label.clone(),
            collection: r.collection.clone(),
        })
        .collect();
    let options = verify::Options {
        page_size,
        max_docs_per_second: cli.max_docs_per_second,
        settle: Duration::from_secs(cli.settle_seconds),
        pass_pause: Duration::from_secs(cli.pass_pause_seconds),
        repair: cli.repair,
        max_future_skew,
    };
    let shown = std::io::stderr().is_terminal().then(|| {
        tokio::spawn(show_passes(
            producer.clone(),
            plants.clone(),
            metrics.clone(),
        ))
    });
    verify::watch(producer, consumer, &plants, &options, &metrics, &cancel).await;
    cancel.cancel();
    signal.abort();
    if let Some(shown) = shown {
        shown.abort();
    }
    server.await?.context("the metrics server")?;
    Ok(0)
}

/// On a terminal: a bar per plant for the pass in progress (images checked since the
/// plant's last complete pass, against the producer's count).
async fn show_passes(producer: Database, plants: Vec<Plant>, metrics: VerifyMetrics) {
    let mut shown = Vec::new();
    for plant in plants {
        let total = producer
            .collection::<Document>(plant.collection.as_str())
            .estimated_document_count()
            .await
            .unwrap_or(0);
        shown.push((plant.label, total, u64::MAX, 0_u64, None::<Progress>));
    }
    loop {
        for (label, total, passes, start, progress) in &mut shown {
            let checked = metrics.checked.with_label_values(&[label.as_str()]).get();
            let now = metrics.completed_passes(label);
            if now != *passes {
                if let Some(done) = progress.take() {
                    done.finish(checked - *start);
                }
                *passes = now;
                *start = checked;
                *progress = Some(Progress::new(&format!("{label} #{}", now + 1), *total));
            }
            if let Some(progress) = progress {
                progress.set(checked - *start);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
