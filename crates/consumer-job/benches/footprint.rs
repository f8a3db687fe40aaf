//! What the release `consumer-job` binary costs in CPU and memory: the figures behind
//! the manifests' requests and limits (docs/assignment.md: "vCPU and memory, justified").
//! Printed, not timed-tested. Run with `scripts/bench.sh footprint`.
//!
//! N LIMS-sized events are produced to fresh topics first; then the binary starts as its
//! own process on them with the default configuration and drains the backlog. Read from `/proc`: CPU seconds (user + system) and peak RSS
//! (`VmHWM`) when the last image is applied, and RSS idle afterwards. Then SIGTERM: it
//! must exit 0.
//!
//! Env: `BENCH_EVENTS` (3000), `BENCH_IMAGE_KB` (15). `scripts/bench.sh large-records` runs
//! it with 50 images of 4 MiB (8 MiB records once hex-encoded), on topics and a job that
//! allow records of that size, against the manifest's memory limit.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{event, fresh_topics_for, job_config, produce};
use leafsync_test_support::{env_or, http_get, metric_value};

/// `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// User + system CPU seconds of `pid` (`/proc/PID/stat` fields 14 and 15, in USER_HZ =
/// 100 ticks per second on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    #[allow(clippy::cast_precision_loss)]
    let secs = ticks as f64 / 100.0;
    secs
}

/// The sum of a counter in the job's `/metrics` (0 while it is not up).
async fn metric(port: u16, name: &str) -> u64 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (_, body) = http_get(addr, "/metrics").await.unwrap_or_default();
    metric_value(&body, name, &[])
}

/// The consumer-job container's memory limit in the base manifest, in MiB.
fn manifest_memory_limit_mib() -> u64 {
    let manifest = include_str!("../../../manifests/base/consumer-job.yaml");
    let limits = &manifest[manifest.find("limits:").expect("a limits block")..];
    let memory = limits
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory:"))
        .expect("a memory limit");
    memory
        .trim()
        .trim_end_matches("Mi")
        .parse()
        .expect("a limit in Mi")
}

#[tokio::main]
async fn main() {
    let n = env_or::<usize>("BENCH_EVENTS", 3000);
    let kb = env_or::<usize>("BENCH_IMAGE_KB", 15);
    let events: Vec<(usize, String)> = (1..=n).map(|i| (i, event(i, kb))).collect();
    let largest = events.iter().map(|(_, e)| e.len()).max().unwrap_or(0);
    let defaults = consumer_job::JobConfig::default();
    let max_record_bytes = largest.max(defaults.max_record_bytes);
    let topics = fresh_topics_for(3, max_record_bytes).await;
    produce(&topics, &events).await;
    let config = job_config(&topics, defaults.batch_max_messages);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_consumer-job"))
        .env("LEAFSYNC_KAFKA_BROKERS", &config.kafka_brokers)
        .env("LEAFSYNC_KAFKA_GROUP_ID", &config.kafka_group_id)
        .env("LEAFSYNC_TOPICS", &config.topics)
        .env("LEAFSYNC_DLQ_TOPIC", &config.dlq_topic)
        .env("LEAFSYNC_MONGO_URI", &config.mongo_uri)
        .env("LEAFSYNC_MONGO_DB", &config.mongo_db)
        .env("LEAFSYNC_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("LEAFSYNC_MAX_RECORD_BYTES", max_record_bytes.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start consumer-job");
    let pid = child.id();
    let started = Instant::now();
    let mut first = None;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not drained in 600 s"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "consumer-job exited"
        );
        if first.is_none() && metric(port, "leafsync_job_events_consumed_total").await > 0 {
            first = Some((Instant::now(), cpu_seconds(pid)));
        }
        if metric(port, "leafsync_job_images_total").await >= n as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t0, cpu0) = first.unwrap_or((started, 0.0));
    let drain = t0.elapsed().as_secs_f64();
    let cpu_total = cpu_seconds(pid);
    let peak = status_kib(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = status_kib(pid, "VmRSS:");
    let idle_cpu = cpu_seconds(pid) - cpu_total;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait for exit");
    println!(
        "consumer-job footprint: {n} events of {:.1} KiB, default settings (batches of at most {} records / {} KiB, {} KiB prefetch per partition, 9 partitions)",
        {
            #[allow(clippy::cast_precision_loss)]
            let kib = events.iter().map(|(_, e)| e.len()).sum::<usize>() as f64 / n as f64 / 1024.0;
            kib
        },
        defaults.batch_max_messages,
        defaults.batch_max_bytes / 1024,
        defaults.kafka_queued_max_kbytes,
    );
    println!(
        "drain: {drain:.1} s; CPU {:.2} s while draining ({:.2} cores), {cpu_total:.2} s since start",
        cpu_total - cpu0,
        (cpu_total - cpu0) / drain
    );
    println!(
        "memory: peak RSS {} MiB; RSS idle afterwards {} MiB; CPU idle for 5 s: {idle_cpu:.2} s",
        peak / 1024,
        idle / 1024
    );
    let limit = manifest_memory_limit_mib();
    #[allow(clippy::cast_precision_loss)] // MiB figures are small
    let share = 100.0 * peak as f64 / 1024.0 / limit as f64;
    println!(
        "memory limit in manifests/base/consumer-job.yaml: {limit} MiB; peak is {share:.0} % of it{}",
        if peak / 1024 <= limit {
            ""
        } else {
            ": OVER THE LIMIT"
        }
    );
    println!(
        "SIGTERM: exit code {}",
        exit.code()
            .map_or_else(|| "none (killed by a signal)".to_owned(), |c| c.to_string())
    );
    assert!(exit.success(), "consumer-job exits 0 on SIGTERM");
}
