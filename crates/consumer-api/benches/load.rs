//! Load benchmark of consumer-api, printed as figures (not a timed test). Run with
//! `scripts/bench.sh api` (starts SecantusDB).
//!
//! Seeds a fresh database with LIMS-sized images through `core`, starts the release
//! `consumer-api` binary as its own process, and drives it with a minimal HTTP/1.1
//! keep-alive client: `BENCH_CONNECTIONS` (64) connections for `BENCH_SECONDS` (10) per
//! endpoint (list pages of 100 images with twice as many). Prints requests/s and latency percentiles, the API process's peak RSS, and
//! the database's own latency for the same lookup at the same concurrency, so the DB
//! stand-in's share of the API's latency is visible.

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use leafsync_core::{ImageChange, ImageRepository, Write, WritePath};
use leafsync_test_support::{env_or, mongo_client, mongo_uri, percentile, unique_name};
use rand::Rng;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

const IMAGES: i64 = 200;

async fn seed(db: &str) -> ImageRepository {
    let repo = ImageRepository::new(mongo_client().await, db, WritePath::Auto);
    repo.ensure_indexes(&["imagecolplantpotato"])
        .await
        .expect("index");
    let writes: Vec<Write> = (1..=IMAGES)
        .map(|id| {
            let data = hex::encode(
                (0..15 * 1024)
                    .map(|i| u8::try_from((i + id) % 251).unwrap_or(0))
                    .collect::<Vec<u8>>(),
            );
            let event = serde_json::json!({
                "id": id, "camera_id": 1, "data": data, "gps_coordinates": [48.47, 16.58],
                "created_at": "2023-10-08T15:39:49.123123", "updated_at": null,
                "is_active": id % 2 == 0, "is_deleted": false, "disease": null, "percentage": null,
            });
            Write {
                collection: leafsync_core::PlantType::Potato.into(),
                change: ImageChange::from_json_slice(event.to_string().as_bytes()).expect("event"),
            }
        })
        .collect();
    repo.apply(&writes).await.expect("seed");
    repo
}

fn start_api(db: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_consumer-api"))
        .env("LEAFSYNC_API_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "LEAFSYNC_PROBE_ADDR",
            format!("127.0.0.1:{}", leafsync_test_support::free_port()),
        )
        .env("LEAFSYNC_MONGO_URI", mongo_uri())
        .env("LEAFSYNC_MONGO_DB", db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start consumer-api")
}

/// One GET on a keep-alive connection; returns the status code.
async fn get(conn: &mut BufReader<TcpStream>, path: &str) -> std::io::Result<u16> {
    conn.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok(status)
}

struct Run {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

#[allow(clippy::cast_precision_loss)] // figures for humans
fn print(label: &str, mut run: Run) {
    run.latencies.sort_unstable();
    let n = run.latencies.len();
    println!(
        "{label:<38} {:8.0} req/s  p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms  ({n} ok, {} errors)",
        n as f64 / run.elapsed.as_secs_f64(),
        percentile(&run.latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&run.latencies, 0.99).as_secs_f64() * 1e3,
        run.latencies
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3,
        run.errors,
    );
}

/// `connections` loops, each calling `op(its index)` back to back until `duration` is over.
async fn drive<F, Fut>(connections: u64, duration: Duration, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Duration, bool)> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let tasks: Vec<_> = (0..usize::try_from(connections).expect("small count"))
        .map(|task| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let (mut ok, mut errors) = (Vec::new(), 0);
                while started.elapsed() < duration {
                    match op(task).await {
                        (latency, true) => ok.push(latency),
                        (_, false) => errors += 1,
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut run = Run {
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (ok, errors) = t.await.expect("load task");
        run.latencies.extend(ok);
        run.errors += errors;
    }
    run.elapsed = started.elapsed();
    run
}

async fn http_load(
    port: u16,
    connections: u64,
    duration: Duration,
    path: impl Fn() -> String + Send + Sync + 'static,
) -> Run {
    let path = Arc::new(path);
    let conns: Vec<_> = futures::future::join_all((0..connections).map(|_| async move {
        Arc::new(tokio::sync::Mutex::new(BufReader::new(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        )))
    }))
    .await;
    drive(connections, duration, move |task| {
        // Each loop owns one connection; the mutex is never contended.
        let conn = Arc::clone(&conns[task]);
        let path = path();
        async move {
            let mut conn = conn.lock().await;
            let started = Instant::now();
            let ok = matches!(get(&mut conn, &path).await, Ok(200));
            (started.elapsed(), ok)
        }
    })
    .await
}

fn peak_rss_kib(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let field = |name: &str| {
                s.lines()
                    .find(|l| l.starts_with(name))
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
            };
            Some(format!(
                "peak RSS {} KiB, RSS now {} KiB",
                field("VmHWM:")?,
                field("VmRSS:")?
            ))
        })
        .unwrap_or_else(|| "RSS unknown (no /proc)".to_owned())
}

#[tokio::main]
async fn main() {
    let connections = env_or::<u64>("BENCH_CONNECTIONS", 64);
    let duration = Duration::from_secs(env_or::<u64>("BENCH_SECONDS", 10));
    let db = unique_name("bench_api");
    let repo = seed(&db).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut api = start_api(&db, port);
    for _ in 0..100 {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            if matches!(get(&mut BufReader::new(stream), "/ready").await, Ok(200)) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "consumer-api load benchmark: {connections} connections, {} s per endpoint, {IMAGES} images of 15 KiB (responses ~31 KiB)",
        duration.as_secs()
    );
    println!("Mongo {}", leafsync_core::redact::redact_uri(&mongo_uri()));

    let random_id = || {
        format!(
            "/image-plant/potato/{}",
            rand::rng().random_range(1..=IMAGES)
        )
    };
    let one = http_load(port, 1, duration, random_id).await;
    print("GET /image-plant/potato/{id}, 1 conn", one);
    let by_id = http_load(port, connections, duration, random_id).await;
    print("GET /image-plant/potato/{id}", by_id);
    let total = http_load(port, connections, duration, || {
        "/image-plant/potato/total".to_owned()
    })
    .await;
    print("GET /image-plant/potato/total", total);
    println!(
        "consumer-api process, one-image reads: {}",
        peak_rss_kib(api.id())
    );
    // Full pages (~3 MiB each) from twice the connections: the response budget, not the
    // database's speed, bounds what the process holds.
    let pages = http_load(port, connections * 2, duration, || {
        let from = rand::rng().random_range(1..=IMAGES);
        format!("/image-plant/potato?limit=100&from_id={from}")
    })
    .await;
    print("GET /image-plant/potato?limit=100, 2× conns", pages);
    println!(
        "consumer-api process, then pages: {}",
        peak_rss_kib(api.id())
    );

    let repo = Arc::new(repo);
    for (label, conns) in [
        ("DB alone: find_one by id, 1 conn", 1),
        ("DB alone: find_one by id", connections),
    ] {
        let repo = Arc::clone(&repo);
        let run = drive(conns, duration, move |_| {
            let repo = Arc::clone(&repo);
            async move {
                let started = Instant::now();
                let id = rand::rng().random_range(1..=IMAGES);
                let ok = matches!(
                    repo.find_by_id("imagecolplantpotato", id).await,
                    Ok(Some(_))
                );
                (started.elapsed(), ok)
            }
        })
        .await;
        print(label, run);
    }

    let _ = Command::new("kill")
        .args(["-TERM", &api.id().to_string()])
        .status();
    let _ = api.wait();
    // Close the driver's background tasks before the runtime goes away.
    let client = repo.database().client().clone();
    drop(repo);
    client.shutdown().await;
}
