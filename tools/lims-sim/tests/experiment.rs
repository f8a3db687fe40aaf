//! A short batch-vs-stream experiment against real services: both consumer DBs end
//! identical to the producer DB, the stream is never as stale as the batch at its worst,
//! and the CSV and PNG are written.

use std::time::Duration;

use leafsync_test_support::{kafka_brokers, mongo_uri, unique_name};
use lims_sim::experiment::{self, ExperimentConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_stays_fresher_than_the_batch_and_both_converge() {
    // 300x LIMS: a camera image every 0.1 s, a batch run every 2 s.
    let config = ExperimentConfig {
        brokers: kafka_brokers(),
        mongo_uri: mongo_uri(),
        speedup: 300.0,
        duration: Duration::from_secs(8),
        sample_every: Duration::from_millis(250),
        run_id: unique_name("exp"),
    };
    let samples = experiment::run(&config).await.expect("experiment");
    let last = samples.last().expect("samples");
    assert_eq!(
        (last.stream_stale, last.batch_stale),
        (0, 0),
        "both sides converge: {last:?}"
    );
    assert!(
        last.stream_images >= 60 && last.batch_images >= 60,
        "{last:?}"
    );
    let worst = |f: fn(&experiment::Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    assert!(
        worst(|s| s.stream_stale) < worst(|s| s.batch_stale),
        "stream worst {} vs batch worst {}",
        worst(|s| s.stream_stale),
        worst(|s| s.batch_stale)
    );
    let dir = std::env::temp_dir().join(unique_name("experiment"));
    experiment::write(&samples, &dir).expect("write");
    let csv = std::fs::read_to_string(dir.join("batch-vs-stream.csv")).unwrap();
    assert_eq!(csv.lines().count(), samples.len() + 1);
    assert!(
        std::fs::read(dir.join("batch-vs-stream.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    std::fs::remove_dir_all(dir).ok();
}
