//! `lims-sim`: `simulate` LIMS's producer side, or `verify` the consumer DB against it.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
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
        hide_env_values = true,
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
    Simulate(SimulateArgs),
    /// LIMS's Db Synchronizer: copy new/changed images in pages of 50, at start and every
    /// interval, exposing its gauges at /metrics.
    BatchSync(BatchSyncArgs),
    /// Run simulator, batch synchronizer and consumer-job side by side; write
    /// batch-vs-stream.csv and .png (images moved, bytes moved, stale images).
    Experiment(ExperimentArgs),
    /// Print the annual-cost tables of docs/assignment.md (batch vs stream on GKE, own hardware).
    Cost,
    /// Compare the producer DB with the consumer DB; exit 1 when they differ.
    Verify(VerifyArgs),
    /// Redraw an experiment's PNG from its CSV (e.g. the run checked in under docs/).
    Plot(PlotArgs),
}

#[derive(Args)]
struct PlotArgs {
    /// The experiment's CSV.
    #[arg(long, default_value = "docs/experiment/batch-vs-stream.csv")]
    csv: std::path::PathBuf,
    /// The PNG to write.
    #[arg(long, default_value = "docs/experiment/batch-vs-stream.png")]
    out: std::path::PathBuf,
}

impl PlotArgs {
    fn run(self) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.csv)
            .with_context(|| format!("--csv {}", self.csv.display()))?;
        let samples = lims_sim::experiment::parse_csv(&text)
            .map_err(|e| anyhow::anyhow!("--csv {}: {e}", self.csv.display()))?;
        std::fs::write(&self.out, lims_sim::experiment::chart(&samples)?)
            .with_context(|| format!("--out {}", self.out.display()))?;
        println!("wrote {}", self.out.display());
        Ok(())
    }
}

#[derive(Args)]
struct SimulateArgs {
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
}

impl SimulateArgs {
    async fn run(self, producer_db: &mongodb::Database) -> anyhow::Result<()> {
        for (name, p) in [
            ("--duplicate-rate", self.duplicate_rate),
            ("--reorder-rate", self.reorder_rate),
            ("--poison-rate", self.poison_rate),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&p), "{name} must be between 0 and 1");
        }
        anyhow::ensure!(self.speedup > 0.0, "--speedup must be positive");
        let config = simulator::SimConfig {
            brokers: self.brokers,
            topics: self
                .topics
                .try_into()
                .map_err(|_| anyhow::anyhow!("--topics takes three names"))?,
            speedup: self.speedup,
            max_images: self.max_images,
            duration: self.seconds.map(Duration::from_secs),
            duplicate_rate: self.duplicate_rate,
            reorder_rate: self.reorder_rate,
            poison_rate: self.poison_rate,
            seed: self.seed,
        };
        let stats = simulator::run(&config, producer_db, signal_token()).await?;
        println!("{stats:?}");
        Ok(())
    }
}

#[derive(Args)]
struct BatchSyncArgs {
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
}

impl BatchSyncArgs {
    /// Once, or every interval with the gauges served at /metrics.
    async fn run(
        self,
        client: &mongodb::Client,
        producer_db: &mongodb::Database,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.interval_seconds > 0.0,
            "--interval-seconds must be positive"
        );
        let consumer = client.database(&self.consumer_db);
        let metrics = lims_sim::batch_sync::SyncMetrics::default();
        if self.once {
            let report = lims_sim::batch_sync::run_once(producer_db, &consumer, &metrics).await?;
            println!("{report:?}");
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(self.metrics_addr)
            .await
            .with_context(|| format!("--metrics-addr {}", self.metrics_addr))?;
        let interval = Duration::from_secs_f64(self.interval_seconds);
        lims_sim::batch_sync::serve(
            producer_db,
            &consumer,
            &metrics,
            interval,
            listener,
            signal_token(),
        )
        .await?;
        Ok(())
    }
}

#[derive(Args)]
struct ExperimentArgs {
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
}

impl ExperimentArgs {
    /// Runs, writes the CSV and PNG, prints the final sample.
    async fn run(self, mongo_uri: String) -> anyhow::Result<()> {
        anyhow::ensure!(self.speedup > 0.0, "--speedup must be positive");
        let config = lims_sim::experiment::ExperimentConfig {
            brokers: self.brokers,
            mongo_uri,
            speedup: self.speedup,
            duration: Duration::from_secs(self.seconds),
            sample_every: Duration::from_secs(1),
            run_id: format!("exp{}", chrono::Utc::now().format("%Y%m%d%H%M%S")),
        };
        let samples = lims_sim::experiment::run(&config).await?;
        lims_sim::experiment::write(&samples, &self.out)?;
        if let Some(last) = samples.last() {
            print!("{}", lims_sim::experiment::csv(std::slice::from_ref(last)));
        }
        println!(
            "wrote {0}/batch-vs-stream.csv and {0}/batch-vs-stream.png",
            self.out.display()
        );
        Ok(())
    }
}

#[derive(Args)]
struct VerifyArgs {
    /// Consumer database.
    #[arg(long, default_value = leafsync_core::CONSUMER_DB)]
    consumer_db: String,
    /// Compare again every second while they differ, for up to this many seconds
    /// (events still in flight reach the consumer DB meanwhile).
    #[arg(long, default_value_t = 0)]
    wait_seconds: u64,
}

impl VerifyArgs {
    /// Prints the report; `false` when the databases differ.
    async fn run(
        self,
        client: &mongodb::Client,
        producer_db: &mongodb::Database,
    ) -> anyhow::Result<bool> {
        let report = verify::verify_within(
            producer_db,
            &client.database(&self.consumer_db),
            Duration::from_secs(self.wait_seconds),
        )
        .await?;
        println!("{report}");
        Ok(report.is_clean())
    }
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
async fn main() -> anyhow::Result<ExitCode> {
    leafsync_core::runtime::init_tracing(leafsync_core::runtime::LogFormat::Text);
    let Cli {
        mongo_uri,
        producer_db,
        command,
    } = Cli::parse();
    let connect = || async {
        let client = leafsync_core::mongo::connect(&mongo_uri, "lims-sim")
            .await
            .context("--mongo-uri")?;
        let producer = client.database(&producer_db);
        anyhow::Ok((client, producer))
    };
    match command {
        Command::Cost => print!(
            "{}",
            lims_sim::cost::render(&lims_sim::cost::CostInputs::default())
        ),
        Command::Plot(args) => args.run()?,
        Command::Experiment(args) => args.run(mongo_uri.clone()).await?,
        Command::Simulate(args) => args.run(&connect().await?.1).await?,
        Command::BatchSync(args) => {
            let (client, producer) = connect().await?;
            args.run(&client, &producer).await?;
        }
        Command::Verify(args) => {
            let (client, producer) = connect().await?;
            if !args.run(&client, &producer).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
