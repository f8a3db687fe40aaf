//! `dlq-replay`: sends dead letters back to the topics they came from, once their cause is
//! fixed. Thin: options in, [`consumer_job::replay`] does the work, one line per record.

use anyhow::Context;
use clap::Parser;
use consumer_job::{
    JobConfig,
    replay::{ReplayOptions, replay},
};

/// Replays consumer-job's dead-letter topic into the records' source topics.
///
/// Reads the dead-letter topic up to its end as of the start (records dead-lettered again
/// meanwhile are left for a later run), prints one line per record and a summary. Commits
/// nothing: rerun with --from-offset to skip what was already sent.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Kafka bootstrap servers (default: consumer-job's).
    #[arg(long, env = "LEAFSYNC_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// The dead-letter topic (default: consumer-job's).
    #[arg(long, env = "LEAFSYNC_DLQ_TOPIC")]
    dlq_topic: Option<String>,
    /// Only dead letters with this leafsync-reason (repeatable), e.g. mongo-rejected.
    #[arg(long = "reason")]
    reasons: Vec<String>,
    /// Only dead letters from this source topic (repeatable).
    #[arg(long = "source-topic")]
    source_topics: Vec<String>,
    /// Start at this offset in every dead-letter partition.
    #[arg(long, default_value_t = 0)]
    from_offset: i64,
    /// List what would be replayed; produce nothing.
    #[arg(long)]
    dry_run: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let defaults = JobConfig::default();
    let options = ReplayOptions {
        brokers: cli.brokers.unwrap_or(defaults.kafka_brokers),
        dlq_topic: cli.dlq_topic.unwrap_or(defaults.dlq_topic),
        reasons: cli.reasons,
        source_topics: cli.source_topics,
        from_offset: cli.from_offset,
        dry_run: cli.dry_run,
    };
    let summary = replay(&options, |outcome| println!("{outcome}"))
        .await
        .with_context(|| format!("dlq-replay stopped (Kafka at {})", options.brokers))?;
    println!("{summary}");
    Ok(())
}
