//! The continuous verifier's checkpoint (a stopped verifier resumes its pass) and the
//! `reconcile --watch --repair` binary (probes, repairs, SIGTERM), against SecantusDB.

use std::{process::Command, time::Duration};

use consumer_job::verify::{CheckpointStore, Kind, Options};
use leafsync_core::{
    ImageRepository, WritePath,
    compare::{Verdict, classify},
};
use leafsync_test_support::{
    free_port, http_get, metric_value, mongo_client, mongo_uri, unique_name,
};
use mongodb::{
    Database,
    bson::{DateTime, Document, doc},
};

use crate::{
    common::eventually,
    verify::{COLL, Verifier, lims_image, options},
};

const OLD: i64 = 1_696_779_589_123;

/// `n` images in the producer DB and the same in the consumer DB, but for `missing`.
async fn copies(n: i32, missing: &[i32]) -> (Database, ImageRepository) {
    let client = mongo_client().await;
    let producer = client.database(&unique_name("producer"));
    let repo = ImageRepository::new(client.clone(), &unique_name("consumer"), WritePath::Auto);
    repo.ensure_indexes(&[COLL]).await.unwrap();
    let images: Vec<Document> = (1..=n).map(|id| lims_image(id, OLD)).collect();
    producer
        .collection::<Document>(COLL)
        .insert_many(&images)
        .await
        .unwrap();
    repo.database()
        .collection::<Document>(COLL)
        .insert_many(
            images
                .iter()
                .filter(|d| !missing.contains(&d.get_i32("id").unwrap())),
        )
        .await
        .unwrap();
    (producer, repo)
}

#[tokio::test]
async fn a_stopped_verifier_resumes_its_pass_from_the_checkpoint() {
    const N: u64 = 3_000;
    let (producer, repo) = copies(3_000, &[100, 2_900]).await;
    let slow = Options {
        max_docs_per_second: 2_000, // 6,000 documents a pass: about 3 s
        pass_pause: Duration::from_secs(600),
        ..options(100)
    };
    let first = Verifier::start(&producer, &repo, slow.clone());
    eventually(30, "a third of the pass checked", || async {
        let n = first.metric("leafsync_verify_images_checked_total", &[]);
        if n >= 1_000 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    assert_eq!(first.metrics.completed_passes("potato"), 0);
    first.stop().await;
    let store = CheckpointStore::new(repo.database(), COLL);
    let stopped = store.load().await.unwrap().expect("a checkpoint");
    let after = u64::try_from(stopped.last_id.expect("a last id")).unwrap();
    assert_eq!(stopped.pass, 1);
    assert!((1_000..N).contains(&after), "stopped mid-pass: {stopped:?}");
    assert_eq!(stopped.checked, after, "{stopped:?}");
    assert_eq!(stopped.drift.get(Kind::Missing), 1, "#100 is behind it");

    let second = Verifier::start(&producer, &repo, slow);
    second.wait_passes(1, 60).await;
    let checked = second.metric("leafsync_verify_images_checked_total", &[]);
    assert_eq!(checked, N - after, "only the rest of the pass");
    assert_eq!(
        second.drift(Kind::Missing),
        2,
        "the pass's drift, both runs together"
    );
    second.stop().await;
    let next = store.load().await.unwrap().expect("a checkpoint");
    assert_eq!(
        (next.pass, next.last_id, next.checked),
        (2, None, 0),
        "pass 1 is complete, numbering goes on"
    );
}

/// A child process killed when the test fails before it is stopped.
struct Killed(Option<std::process::Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn get(port: u16, path: &str) -> (u16, String) {
    http_get(([127, 0, 0, 1], port).into(), path)
        .await
        .unwrap_or_default()
}

/// `reconcile --watch --repair` over `producer` and `repo`, its metrics on `port`.
fn watch_binary(producer: &Database, repo: &ImageRepository, port: u16) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_reconcile"))
        .args([
            "--producer-uri",
            &mongo_uri(),
            "--producer-db",
            producer.name(),
        ])
        .args([
            "--plant",
            "potato",
            "--watch",
            "--repair",
            "--page-size",
            "7",
        ])
        .args(["--settle-seconds", "2", "--pass-pause-seconds", "1"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("LEAFSYNC_MONGO_URI", mongo_uri())
        .env("LEAFSYNC_MONGO_DB", repo.database().name())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("reconcile --watch starts");
    Killed(Some(child))
}

#[tokio::test]
async fn the_watch_binary_repairs_and_counts_serves_its_probes_and_exits_0_on_sigterm() {
    let (producer, repo) = copies(50, &[5]).await;
    let consumer = repo.database().collection::<Document>(COLL);
    consumer
        .update_one(doc! { "id": 6 }, doc! { "$set": { "camera_id": 99 } })
        .await
        .unwrap();
    consumer
        .update_one(doc! { "id": 7 }, doc! { "$set": { "data": "ffd8ffe007" } })
        .await
        .unwrap();
    let future = DateTime::parse_rfc3339_str("2999-01-01T00:00:00Z").unwrap();
    consumer
        .update_one(doc! { "id": 8 }, doc! { "$set": { "updated_at": future } })
        .await
        .unwrap();
    consumer.insert_one(lims_image(1_000, OLD)).await.unwrap();
    let port = free_port();
    let mut child = watch_binary(&producer, &repo, port);
    let metric = |text: &str, name: &str, kind: &str| {
        metric_value(text, name, &[("plant", "potato"), ("kind", kind)])
    };
    eventually(
        60,
        "two passes: the repairs, then only the extra image",
        || async {
            let (status, text) = get(port, "/metrics").await;
            let repaired = metric_value(
                &text,
                "leafsync_verify_repaired_total",
                &[("plant", "potato")],
            );
            let drift: Vec<u64> = Kind::ALL
                .iter()
                .map(|k| metric(&text, "leafsync_verify_drift", k.as_str()))
                .collect();
            // missing, extra, value, type, future: after a repairing pass only the extra stays.
            if status == 200 && repaired == 4 && drift == [0, 1, 0, 0, 0] {
                Ok(())
            } else {
                Err(format!("{status} repaired {repaired} drift {drift:?}"))
            }
        },
    )
    .await;
    assert_eq!(get(port, "/ready").await.0, 200);
    assert_eq!(get(port, "/live").await.0, 200);
    for id in 1..=50 {
        let p = producer
            .collection::<Document>(COLL)
            .find_one(doc! { "id": id })
            .await
            .unwrap()
            .unwrap();
        let c = consumer.find_one(doc! { "id": id }).await.unwrap();
        assert_eq!(classify(&p, c.as_ref(), i64::MAX), Verdict::InSync, "#{id}");
    }
    assert!(
        consumer
            .find_one(doc! { "id": 1_000 })
            .await
            .unwrap()
            .is_some(),
        "an extra image is only reported"
    );
    let mut child = child.0.take().expect("running");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("exits within 20 s of SIGTERM")
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status}");
    let store = CheckpointStore::new(repo.database(), COLL);
    assert!(store.load().await.unwrap().is_some_and(|cp| cp.pass >= 2));
}

#[test]
fn watch_conflicts_with_dry_run_and_delete_orphans_and_its_settings_need_it() {
    // Bounded: a --watch that starts instead of refusing would run until stopped.
    let run = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_reconcile"))
            .args(["--producer-uri", "mongodb://127.0.0.1:1"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("reconcile runs");
        let started = std::time::Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status.code();
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            use std::io::Read;
            let _ = err.read_to_string(&mut stderr);
        }
        (code, stderr)
    };
    for other in ["--dry-run", "--delete-orphans"] {
        let (code, stderr) = run(&["--watch", other]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
    let (code, stderr) = run(&["--repair"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--watch"), "{stderr}");
}
