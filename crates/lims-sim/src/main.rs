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
    /// Compare the producer DB with the consumer DB; exit 1 when they differ.
    Verify {
        /// Consumer database.
        #[arg(long, default_value = leafsync_core::CONSUMER_DB)]
        consumer_db: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    leafsync_core::runtime::init_tracing(false);
    let cli = Cli::parse();
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
            let shutdown = CancellationToken::new();
            tokio::spawn({
                let shutdown = shutdown.clone();
                async move {
                    leafsync_core::runtime::shutdown_signal().await;
                    shutdown.cancel();
                }
            });
            let stats = simulator::run(&config, &producer_db, shutdown).await?;
            println!("{stats:?}");
        }
        Command::Verify { consumer_db } => {
            let report = verify::verify(&producer_db, &client.database(&consumer_db)).await?;
            println!("{report}");
            if !report.is_clean() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
