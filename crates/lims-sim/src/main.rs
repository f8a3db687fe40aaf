//! `lims-sim`: `simulate` LIMS's producer side, or `verify` the consumer DB against it.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lims_sim::{PRODUCER_DB, simulator, verify};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "A stand-in for LIMS's producer side, and a producer/consumer DB verifier"
)]
struct Cli {
    /// MongoDB holding both the producer and the consumer database.
    #[arg(
        long,
        env = "LEAFSYNC_MONGO_URI",
        default_value = "mongodb://127.0.0.1:27017"
    )]
    mongo_uri: String,
    /// Producer database.
    #[arg(long, default_value = PRODUCER_DB)]
    producer_db: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the camera, disease, users and delete jobs: producer DB writes + Kafka events.
    Simulate {
        /// Kafka bootstrap servers.
        #[arg(long, env = "LEAFSYNC_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Topics for potato, tomato and pepper.
        #[arg(long, num_args = 3, default_values = ["potato", "tomato", "pepper"])]
        topics: Vec<String>,
        /// Divides LIMS's job intervals (camera 30 s, disease 100 s, users 300 s, delete 700 s).
        #[arg(long, default_value_t = 1.0)]
        speedup: f64,
        /// Stop after this many camera images.
        #[arg(long)]
        max_images: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        /// Probability that an event is sent twice.
        #[arg(long, default_value_t = 0.0)]
        duplicate_rate: f64,
        /// Probability that an update is delivered out of order.
        #[arg(long, default_value_t = 0.0)]
        reorder_rate: f64,
        /// Probability that a poison record follows an event.
        #[arg(long, default_value_t = 0.0)]
        poison_rate: f64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// LIMS's Db Synchronizer: copy new/changed images in pages of 50, at start and every
    /// interval, exposing its gauges at /metrics.
    BatchSync {
        /// Database the batch copies into (keep it apart from the stream's).
        #[arg(long, default_value = "imagedbplantbatch")]
        consumer_db: String,
        /// Seconds between runs (LIMS: 600).
        #[arg(long, default_value_t = 600.0)]
        interval_seconds: f64,
        /// Address of /metrics.
        #[arg(long, default_value = "127.0.0.1:8051")]
        metrics_addr: std::net::SocketAddr,
        /// Run once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Run simulator, batch synchronizer and consumer-job side by side; write
    /// batch-vs-stream.csv and .png (images moved, bytes moved, stale images).
    Experiment {
        /// Kafka bootstrap servers.
        #[arg(long, env = "LEAFSYNC_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Seconds the simulator produces (the run adds one batch interval).
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Divides LIMS's intervals, the batch job's 600 s included.
        #[arg(long, default_value_t = 60.0)]
        speedup: f64,
        /// Output directory.
        #[arg(long, default_value = "experiment")]
        out: std::path::PathBuf,
    },
    /// Print the annual-cost tables of the README (batch vs stream on GKE, own hardware).
    Cost,
    /// Compare the producer DB with the consumer DB; exit 1 when they differ.
    Verify {
        /// Consumer database.
        #[arg(long, default_value = leafsync_core::CONSUMER_DB)]
        consumer_db: String,
        /// Compare again every second while they differ, for up to this many seconds
        /// (events still in flight reach the consumer DB meanwhile).
        #[arg(long, default_value_t = 0)]
        wait_seconds: u64,
    },
}

/// `lims-sim experiment`: run, write the CSV and PNG, print the final sample.
async fn experiment(
    brokers: String,
    mongo_uri: String,
    seconds: u64,
    speedup: f64,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(speedup > 0.0, "--speedup must be positive");
    let config = lims_sim::experiment::ExperimentConfig {
        brokers,
        mongo_uri,
        speedup,
        duration: Duration::from_secs(seconds),
        sample_every: Duration::from_secs(1),
        run_id: format!("exp{}", chrono::Utc::now().format("%Y%m%d%H%M%S")),
    };
    let samples = lims_sim::experiment::run(&config).await?;
    lims_sim::experiment::write(&samples, out)?;
    if let Some(last) = samples.last() {
        print!("{}", lims_sim::experiment::csv(std::slice::from_ref(last)));
    }
    println!(
        "wrote {0}/batch-vs-stream.csv and {0}/batch-vs-stream.png",
        out.display()
    );
    Ok(())
}

/// `lims-sim batch-sync`: once, or every interval with the gauges served at /metrics.
async fn batch_sync(
    producer_db: &mongodb::Database,
    consumer: &mongodb::Database,
    interval_seconds: f64,
    metrics_addr: std::net::SocketAddr,
    once: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        interval_seconds > 0.0,
        "--interval-seconds must be positive"
    );
    let metrics = lims_sim::batch_sync::SyncMetrics::default();
    if once {
        let report = lims_sim::batch_sync::run_once(producer_db, consumer, &metrics).await?;
        println!("{report:?}");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("--metrics-addr {metrics_addr}"))?;
    let interval = Duration::from_secs_f64(interval_seconds);
    lims_sim::batch_sync::serve(
        producer_db,
        consumer,
        &metrics,
        interval,
        listener,
        signal_token(),
    )
    .await?;
    Ok(())
}

/// A token cancelled by the first ctrl-c or SIGTERM.
fn signal_token() -> CancellationToken {
    let token = CancellationToken::new();
    tokio::spawn({
        let token = token.clone();
        async move {
            leafsync_core::runtime::shutdown_signal().await;
            token.cancel();
        }
    });
    token
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    leafsync_core::runtime::init_tracing(false);
    let cli = Cli::parse();
    if matches!(cli.command, Command::Cost) {
        print!(
            "{}",
            lims_sim::cost::render(&lims_sim::cost::CostInputs::default())
        );
        return Ok(());
    }
    let client = leafsync_core::mongo::connect(&cli.mongo_uri, "lims-sim")
        .await
        .context("--mongo-uri")?;
    let producer_db = client.database(&cli.producer_db);
    match cli.command {
        Command::Simulate {
            brokers,
            topics,
            speedup,
            max_images,
            seconds,
            duplicate_rate,
            reorder_rate,
            poison_rate,
            seed,
        } => {
            for (name, p) in [
                ("--duplicate-rate", duplicate_rate),
                ("--reorder-rate", reorder_rate),
                ("--poison-rate", poison_rate),
            ] {
                anyhow::ensure!((0.0..=1.0).contains(&p), "{name} must be between 0 and 1");
            }
            anyhow::ensure!(speedup > 0.0, "--speedup must be positive");
            let config = simulator::SimConfig {
                brokers,
                topics: topics
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("--topics takes three names"))?,
                speedup,
                max_images,
                duration: seconds.map(Duration::from_secs),
                duplicate_rate,
                reorder_rate,
                poison_rate,
                seed,
            };
            let stats = simulator::run(&config, &producer_db, signal_token()).await?;
            println!("{stats:?}");
        }
        Command::BatchSync {
            consumer_db,
            interval_seconds,
            metrics_addr,
            once,
        } => {
            let consumer = client.database(&consumer_db);
            batch_sync(
                &producer_db,
                &consumer,
                interval_seconds,
                metrics_addr,
                once,
            )
            .await?;
        }
        Command::Experiment {
            brokers,
            seconds,
            speedup,
            out,
        } => {
            experiment(brokers, cli.mongo_uri.clone(), seconds, speedup, &out).await?;
        }
        Command::Cost => unreachable!("handled before connecting"),
        Command::Verify {
            consumer_db,
            wait_seconds,
        } => {
            let report = verify::verify_within(
                &producer_db,
                &client.database(&consumer_db),
                Duration::from_secs(wait_seconds),
            )
            .await?;
            println!("{report}");
            if !report.is_clean() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
