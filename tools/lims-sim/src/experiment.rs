//! Batch vs stream, side by side: the simulator feeds one producer DB and its topics; the
//! batch synchronizer copies the producer DB into one consumer DB every 600 s / speedup,
//! while consumer-job streams the events into another. Every sample records what each
//! side has moved (images, bytes) and how stale each consumer DB is (images missing or
//! different from the producer DB, by [`crate::verify`]).

use std::{fmt::Write as _, path::Path, time::Duration};

use consumer_job::{Job, JobConfig, JobMetrics, config::EnvConfig};
use leafsync_core::PlantType;
use mongodb::Client;
use plotters::style::RGBColor;
use tokio_util::sync::CancellationToken;

use crate::{
    batch_sync::{self, SyncMetrics},
    plot::{Panel, Series, line_chart_png},
    simulator::{self, SimConfig},
    verify,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct ExperimentConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// MongoDB for the producer and both consumer DBs.
    pub mongo_uri: String,
    /// Divides LIMS's intervals, the batch job's 600 s included.
    pub speedup: f64,
    /// How long the simulator produces.
    pub duration: Duration,
    /// Time between samples.
    pub sample_every: Duration,
    /// Prefix of the run's topic and database names.
    pub run_id: String,
}

/// One sample.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Images the stream inserted or updated so far.
    pub stream_images: u64,
    /// Event bytes the stream consumed so far (hex JSON, as it travels through Kafka).
    pub stream_bytes: u64,
    /// Images the batch job copied so far.
    pub batch_images: u64,
    /// BSON bytes the batch job copied so far.
    pub batch_bytes: u64,
    /// Images missing or different in the stream's consumer DB.
    pub stream_stale: u64,
    /// Images missing or different in the batch's consumer DB.
    pub batch_stale: u64,
}

fn stale(report: &verify::Report) -> u64 {
    report
        .plants
        .values()
        .map(|p| (p.missing.len() + p.different.len() + p.extra.len()) as u64)
        .sum()
}

fn sum(counter: &prometheus::IntCounterVec, labels: impl Fn(PlantType) -> Vec<String>) -> u64 {
    PlantType::ALL
        .iter()
        .map(|p| {
            let l = labels(*p);
            let refs: Vec<&str> = l.iter().map(String::as_str).collect();
            counter.with_label_values(&refs).get()
        })
        .sum()
}

/// Runs the experiment; returns the samples (the simulator's duration plus one batch
/// interval, so the batch side's last copy is included, and on a slow machine on until both
/// sides have converged, a few batch intervals at most).
pub async fn run(config: &ExperimentConfig) -> anyhow::Result<Vec<Sample>> {
    let client: Client =
        leafsync_core::mongo::connect(&config.mongo_uri, "lims-sim-experiment").await?;
    let producer = client.database(&format!("{}_producer", config.run_id));
    let stream_db = client.database(&format!("{}_stream", config.run_id));
    let batch_db = client.database(&format!("{}_batch", config.run_id));
    let topics = PlantType::ALL.map(|p| format!("{}_{p}", config.run_id));

    let job_config = JobConfig {
        kafka_brokers: config.brokers.clone(),
        kafka_group_id: format!("{}_group", config.run_id),
        topics: topics
            .iter()
            .zip(PlantType::ALL)
            .map(|(t, p)| format!("{t}={}", p.collection()))
            .collect::<Vec<_>>()
            .join(","),
        dlq_topic: format!("{}_dlq", config.run_id),
        mongo_uri: config.mongo_uri.clone(),
        mongo_db: stream_db.name().to_owned(),
        ..JobConfig::default()
    };
    for t in &topics {
        consumer_job::kafka::ensure_topic(&config.brokers, t, 3).await;
    }
    let stop = CancellationToken::new();
    let job_metrics = JobMetrics::new();
    let job = tokio::spawn(
        Job::build(job_config.validate()?, job_metrics.clone())
            .await?
            .run(stop.clone()),
    );
    let sync_metrics = SyncMetrics::default();
    let batch_interval = Duration::from_secs_f64(600.0 / config.speedup);
    let batch = tokio::spawn({
        let (producer, batch_db, metrics, stop) = (
            producer.clone(),
            batch_db.clone(),
            sync_metrics.clone(),
            stop.clone(),
        );
        async move { batch_sync::run(&producer, &batch_db, &metrics, batch_interval, stop).await }
    });
    let sim_config = SimConfig {
        brokers: config.brokers.clone(),
        topics: topics.clone(),
        speedup: config.speedup,
        max_images: None,
        duration: Some(config.duration),
        duplicate_rate: 0.0,
        reorder_rate: 0.0,
        poison_rate: 0.0,
        seed: 42,
    };
    let simulation = tokio::spawn({
        let producer = producer.clone();
        async move { simulator::run(&sim_config, &producer, CancellationToken::new()).await }
    });

    let start = tokio::time::Instant::now();
    let end = start + config.duration + batch_interval + Duration::from_secs(2);
    // On a loaded machine the batch side's last copy may finish later: keep sampling,
    // for at most a few more batch intervals, until both sides have converged.
    let hard_end = end + batch_interval * 3 + Duration::from_secs(10);
    let mut ticks = tokio::time::interval(config.sample_every);
    let mut samples: Vec<Sample> = Vec::new();
    let converged = |s: &[Sample]| {
        s.last()
            .is_some_and(|l| l.stream_stale == 0 && l.batch_stale == 0)
    };
    loop {
        let now = tokio::time::Instant::now();
        if now >= hard_end || (now >= end && converged(&samples)) {
            break;
        }
        ticks.tick().await;
        let svc = |p: PlantType| vec!["db-synchronizer".to_owned(), p.as_str().to_owned()];
        samples.push(Sample {
            t: start.elapsed().as_secs_f64(),
            stream_images: sum(&job_metrics.images, |p| {
                vec![p.as_str().to_owned(), "inserted".to_owned()]
            }) + sum(&job_metrics.images, |p| {
                vec![p.as_str().to_owned(), "updated".to_owned()]
            }),
            stream_bytes: sum(&job_metrics.bytes_processed, |p| {
                vec![p.as_str().to_owned()]
            }),
            batch_images: sum(&sync_metrics.images_total, svc),
            batch_bytes: sum(&sync_metrics.bytes_total, svc),
            stream_stale: stale(&verify::verify(&producer, &stream_db).await?),
            batch_stale: stale(&verify::verify(&producer, &batch_db).await?),
        });
    }
    let stats = simulation.await??;
    stop.cancel();
    job.await??;
    batch.await??;
    tracing::info!(?stats, "experiment finished");
    Ok(samples)
}

/// The samples as CSV (header first).
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "seconds,stream_images,stream_bytes,batch_images,batch_bytes,stream_stale_images,batch_stale_images\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{:.1},{},{},{},{},{},{}",
            s.t,
            s.stream_images,
            s.stream_bytes,
            s.batch_images,
            s.batch_bytes,
            s.stream_stale,
            s.batch_stale
        );
    }
    out
}

/// Reads back what [`csv`] wrote (to redraw a checked-in run's chart).
pub fn parse_csv(text: &str) -> Result<Vec<Sample>, String> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let [t, si, sb, bi, bb, ss, bs] = f[..] else {
                return Err(format!("expected 7 columns: {line}"));
            };
            let n = |v: &str| v.trim().parse::<u64>().map_err(|e| format!("{v}: {e}"));
            Ok(Sample {
                t: t.trim().parse().map_err(|e| format!("{t}: {e}"))?,
                stream_images: n(si)?,
                stream_bytes: n(sb)?,
                batch_images: n(bi)?,
                batch_bytes: n(bb)?,
                stream_stale: n(ss)?,
                batch_stale: n(bs)?,
            })
        })
        .collect()
}

#[allow(clippy::cast_precision_loss)] // plotted values
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One panel of the chart: stream in blue, batch in orange.
fn panel<'a>(title: &'a str, y_label: &'a str, lines: &'a [Vec<(f64, f64)>; 2]) -> Panel<'a> {
    let series = |name, points, color| Series {
        name,
        points,
        color,
    };
    Panel {
        title,
        x_label: "time since the start (s)",
        y_label,
        series: vec![
            series("stream (consumer-job)", &lines[0], RGBColor(31, 119, 180)),
            series("batch (Db Synchronizer)", &lines[1], RGBColor(255, 127, 14)),
        ],
    }
}

/// The chart of a run: images moved, MiB moved and stale images over time, as a PNG.
#[allow(clippy::cast_precision_loss)] // plotted values
pub fn chart(samples: &[Sample]) -> std::io::Result<Vec<u8>> {
    let points = |f: fn(&Sample) -> f64| samples.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>();
    let images = [
        points(|s| s.stream_images as f64),
        points(|s| s.batch_images as f64),
    ];
    let bytes = [
        points(|s| mib(s.stream_bytes)),
        points(|s| mib(s.batch_bytes)),
    ];
    let stale = [
        points(|s| s.stream_stale as f64),
        points(|s| s.batch_stale as f64),
    ];
    let panels = [
        panel(
            "Images moved to the consumer DB (cumulative)",
            "images",
            &images,
        ),
        panel("Data moved (cumulative)", "MiB", &bytes),
        panel(
            "Images stale in the consumer DB (missing or different)",
            "images",
            &stale,
        ),
    ];
    line_chart_png(&panels, 900, 280).map_err(std::io::Error::other)
}

/// Writes `batch-vs-stream.csv` and `batch-vs-stream.png` into `dir`.
pub fn write(samples: &[Sample], dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("batch-vs-stream.csv"), csv(samples))?;
    std::fs::write(dir.join("batch-vs-stream.png"), chart(samples)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_reads_back_as_it_was_written() {
        let samples = vec![
            Sample {
                t: 1.0,
                stream_images: 2,
                batch_stale: 3,
                ..Sample::default()
            },
            Sample {
                t: 2.5,
                batch_bytes: 9,
                ..Sample::default()
            },
        ];
        let back = parse_csv(&csv(&samples)).unwrap();
        assert_eq!(csv(&back), csv(&samples));
        assert!(parse_csv("header\n1,2,3").is_err());
    }

    #[test]
    fn the_csv_has_a_header_and_one_row_per_sample() {
        let samples = [Sample {
            t: 1.0,
            stream_images: 2,
            batch_stale: 3,
            ..Sample::default()
        }];
        assert_eq!(
            csv(&samples),
            "seconds,stream_images,stream_bytes,batch_images,batch_bytes,stream_stale_images,batch_stale_images\n1.0,2,0,0,0,0,3\n"
        );
    }
}
