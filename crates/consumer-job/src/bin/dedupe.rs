//! `dedupe`: lists images stored more than once under one `id` in the consumer DB (and a
//! non-unique index on `id`), and with `--apply` keeps the newest copy of each and drops
//! that index, so consumer-job can build the unique index its stale guard needs. Thin:
//! the consumer-job environment in, [`consumer_job::dedupe`] does the work.

use anyhow::Context;
use clap::Parser;
use consumer_job::{JobConfig, config::EnvConfig, dedupe::dedupe};

/// Finds duplicate image ids in the consumer DB; `--apply` keeps the newest of each.
///
/// Uses consumer-job's environment (LEAFSYNC_MONGO_URI, LEAFSYNC_MONGO_DB, LEAFSYNC_TOPICS).
/// Exit status: 0 when nothing is (left) to do, 2 when a report found something to fix or
/// documents with a non-integer id are left for a person.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Delete the older copies and drop a non-unique index on `id` (default: report only).
    #[arg(long)]
    apply: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let settings = JobConfig::from_env().context("dedupe reads consumer-job's configuration")?;
    let client = leafsync_core::mongo::connect(&settings.mongo.uri, "leafsync-dedupe")
        .await
        .context("cannot reach MongoDB")?;
    let db = client.database(&settings.mongo.db);
    // Something left to do: anything found, in a report; what --apply leaves, after it.
    let mut left = false;
    for route in settings.routes.iter() {
        let report = dedupe(&db, route.collection.as_str(), cli.apply)
            .await
            .with_context(|| format!("dedupe of {}", route.collection))?;
        for duplicate in &report.duplicates {
            println!("{duplicate}");
        }
        for unresolved in &report.unresolved {
            println!("{unresolved}");
        }
        if let Some(index) = &report.non_unique_index {
            println!("{}: non-unique index {index} on id", route.collection);
        }
        let n = report.duplicates.len();
        let verb = if cli.apply { "fixed" } else { "to fix" };
        println!("{}: {n} duplicated id(s) {verb}", route.collection);
        if !report.unresolved.is_empty() {
            println!(
                "{}: {} document(s) with an id that is not an integer, left as they are: \
                 correct or delete them by hand (a double equal to another image's id also \
                 keeps the unique index from being built)",
                route.collection,
                report.unresolved.len()
            );
        }
        left |= !report.unresolved.is_empty()
            || (!cli.apply && (n > 0 || report.non_unique_index.is_some()));
    }
    Ok(if left {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}
