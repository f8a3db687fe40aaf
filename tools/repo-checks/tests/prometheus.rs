//! The dashboard and the alert rules, evaluated by a real Prometheus against real scrapes.
//!
//! `dashboard.rs` and promtool check names and rule logic on made-up series; neither
//! knows whether a query returns anything from the metrics the binaries really expose
//! (a label renamed in code, a histogram without buckets, a recording rule nobody feeds).
//! This test runs the pipeline end to end, in process, against the local Kafka and a
//! SecantusDB of its own: consumer-job, consumer-api, the verifier (`reconcile --watch`,
//! comparing the job's DB with itself) and LIMS's batch synchronizer gauges
//! (`lims_sim::batch_sync`), scraped every second by Debian's `prometheus` with
//! leafsync's rules loaded (`scripts/prometheus-rules.sh`). The run has a poison record
//! and a MongoDB stop, so dead-letter, retry and stalled series exist. Then, through
//! Prometheus's HTTP API, every panel expression of the dashboard must return a series
//! without an error, every rule expression must evaluate without an error, and the held
//! alert's expression must name `mongo-unavailable` while MongoDB is down.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use consumer_api::{ApiConfig, AppState};
use consumer_job::{Job, JobConfig, JobMetrics, config::EnvConfig};
use leafsync_test_support::{
    MongoProcess, create_topic, free_port, kafka_brokers, kafka_config, metric_value, mongo_client,
    unique_name,
};
use mongodb::bson::{Binary, DateTime, doc, spec::BinarySubtype};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const COLLECTIONS: [&str; 3] = [
    "imagecolplantpotato",
    "imagecolplanttomato",
    "imagecolplantpepper",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Debian's `prometheus` binary (LEAFSYNC_TEST_PROMETHEUS_BIN overrides the PATH).
fn prometheus_bin() -> String {
    let bin = std::env::var("LEAFSYNC_TEST_PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{bin}` does not run: install Debian's prometheus package (scripts/test.sh does it \
         when missing) or set LEAFSYNC_TEST_PROMETHEUS_BIN"
    );
    bin
}

/// A Prometheus process on a free port, killed (and its temp dir removed) on drop.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    /// Scrapes `targets` (job name, address) every second, with leafsync's rules.
    fn start(targets: &[(&str, SocketAddr)]) -> Self {
        let bin = prometheus_bin();
        let dir = std::env::temp_dir().join(unique_name("leafsync-prometheus"));
        std::fs::create_dir_all(dir.join("data")).expect("temp dir");
        let rules = Command::new("bash")
            .arg(root().join("scripts/prometheus-rules.sh"))
            .arg(dir.join("rules.yaml"))
            .status()
            .expect("bash runs scripts/prometheus-rules.sh");
        assert!(rules.success(), "scripts/prometheus-rules.sh failed");
        let mut scrapes = String::new();
        for (job, addr) in targets {
            let _ = write!(
                scrapes,
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n        labels: {{namespace: test}}\n"
            );
        }
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yaml\nscrape_configs:\n{scrapes}"
            ),
        )
        .expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` (HTTP/1.0, so the body is never chunked): status and parsed JSON.
    async fn get(&self, path: &str) -> Option<(u16, Value)> {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let (status, body) = leafsync_test_support::parse_response(&raw);
        Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// An instant query: Ok(the result vector) or Err(Prometheus's error).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let Some((status, body)) = self.get(&path).await else {
            return Err("no answer".into());
        };
        if status != 200 || body["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        match &body["data"]["result"] {
            Value::Array(result) => Ok(result.clone()),
            // A scalar or string result is one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// Waits until `expr` returns a series satisfying `ok`, or fails with what it saw.
    async fn wait_for(&self, what: &str, expr: &str, secs: u64, ok: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.query(expr).await;
            if got.as_deref().is_ok_and(&ok) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: `{expr}` gave {got:?} for {secs} s\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every panel expression of the dashboard, with Grafana's variables substituted as
/// Grafana would for a 1 s scrape interval.
fn dashboard_exprs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(root().join("observability/grafana/leafsync-dashboard.json"))
            .expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1s")
                .replace("${datasource}", "")
                .replace("$datasource", "");
            assert!(
                !expr.contains('$'),
                "an unsubstituted variable in panel {}: {expr}",
                panel["title"]
            );
            exprs.push((panel["title"].as_str().unwrap_or("?").to_owned(), expr));
        }
    }
    assert!(exprs.len() >= 10, "the dashboard's panels have expressions");
    exprs
}

/// Every rule (alert or record) of the rules file: (name, expression).
fn rule_exprs() -> Vec<(String, String)> {
    let dir = std::env::temp_dir().join(unique_name("leafsync-rules"));
    let file = dir.join("rules.yaml");
    let ok = Command::new("bash")
        .arg(root().join("scripts/prometheus-rules.sh"))
        .arg(&file)
        .status()
        .expect("bash");
    assert!(ok.success());
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&file).expect("rules")).expect("YAML");
    let _ = std::fs::remove_dir_all(&dir);
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .expect("a rule has a name");
            let expr = rule["expr"].as_str().expect("a rule has an expr");
            exprs.push((name.to_owned(), expr.to_owned()));
        }
    }
    exprs
}

fn event(id: u32, plant_seed: u32) -> String {
    let now = chrono::Utc::now().naive_utc();
    serde_json::json!({
        "id": id,
        "camera_id": plant_seed,
        "data": "ffd8ffe000104a464946",
        "gps_coordinates": [48.47, 16.58],
        "created_at": now.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        "updated_at": null,
        "is_active": false,
        "is_deleted": false,
        "disease": null,
        "percentage": null,
    })
    .to_string()
}

async fn send(producer: &FutureProducer, topic: &str, payload: &str) {
    producer
        .send(
            FutureRecord::<(), str>::to(topic).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
}

async fn http(addr: SocketAddr, path: &str) -> u16 {
    leafsync_test_support::http_get(addr, path)
        .await
        .map_or(0, |(status, _)| status)
}

async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    (listener, addr)
}

/// consumer-job, in process, over three fresh topics and `mongo_uri`, its metrics served
/// on a port of its own: (plant topics, metrics, metrics address, the run).
async fn start_job(
    mongo_uri: String,
    db: &str,
    shutdown: &CancellationToken,
) -> (
    Vec<String>,
    JobMetrics,
    SocketAddr,
    tokio::task::JoinHandle<Result<(), consumer_job::JobError>>,
) {
    let plants: Vec<String> = ["potato", "tomato", "pepper"]
        .iter()
        .map(|p| unique_name(p))
        .collect();
    let dlq = unique_name("dlq");
    for topic in plants.iter().chain([&dlq]) {
        create_topic(topic, 1).await;
    }
    let config = JobConfig {
        kafka_brokers: kafka_brokers(),
        kafka_group_id: unique_name("prometheus"),
        topics: plants
            .iter()
            .zip(COLLECTIONS)
            .map(|(t, c)| format!("{t}={c}"))
            .collect::<Vec<_>>()
            .join(","),
        dlq_topic: dlq,
        kafka_session_timeout_ms: 6_000,
        kafka_statistics_interval_ms: 1_000,
        mongo_uri,
        mongo_db: db.to_owned(),
        batch_max_messages: 20,
        retry_base_ms: 50,
        retry_max_ms: 500,
        drain_timeout_ms: 3_000,
        ..JobConfig::default()
    };
    let metrics = JobMetrics::new();
    let (listener, addr) = bind().await;
    tokio::spawn(consumer_job::metrics::serve(
        listener,
        metrics.clone(),
        shutdown.clone(),
    ));
    let job = Job::build(config.validate().expect("valid config"), metrics.clone())
        .await
        .expect("the job starts");
    let run = tokio::spawn(job.run(shutdown.clone()));
    (plants, metrics, addr, run)
}

/// consumer-api, in process, over `db`: (API address, probe address).
async fn start_api(
    mongo_uri: &str,
    db: &str,
    shutdown: &CancellationToken,
) -> (SocketAddr, SocketAddr) {
    let config = ApiConfig {
        mongo_uri: format!("{mongo_uri}/?serverSelectionTimeoutMS=1000"),
        mongo_db: db.to_owned(),
        ..ApiConfig::default()
    };
    let state = AppState::connect(&config).await.expect("lazy client");
    let ((api, api_addr), (probes, probe_addr)) = (bind().await, bind().await);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        consumer_api::serve(api, probes, state, &config, shutdown.cancelled_owned()).await
    });
    (api_addr, probe_addr)
}

/// The verifier (`reconcile --watch`) over `db` as both producer and consumer (no drift),
/// its metrics served on a port of its own: the address.
async fn start_verifier(mongo_uri: &str, db: &str, shutdown: &CancellationToken) -> SocketAddr {
    use consumer_job::verify::{self, Options, Plant, VerifyMetrics};
    let client = leafsync_test_support::mongo_client_at(mongo_uri).await;
    let producer = client.database(db);
    let consumer = leafsync_core::ImageRepository::new(client, db, leafsync_core::WritePath::Auto);
    let plants: Vec<Plant> = ["potato", "tomato", "pepper"]
        .iter()
        .zip(COLLECTIONS)
        .map(|(label, c)| Plant {
            label: (*label).to_owned(),
            collection: leafsync_core::CollectionName::parse(c).expect("collection"),
        })
        .collect();
    let options = Options {
        page_size: 50,
        max_docs_per_second: 0,
        settle: Duration::from_secs(1),
        pass_pause: Duration::from_secs(1),
        repair: false,
        max_future_skew: Duration::from_secs(300),
    };
    let metrics = VerifyMetrics::new();
    let (listener, addr) = bind().await;
    tokio::spawn(verify::metrics::serve(
        listener,
        metrics.clone(),
        shutdown.clone(),
    ));
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        verify::watch(&producer, &consumer, &plants, &options, &metrics, &shutdown).await;
    });
    addr
}

/// LIMS's batch synchronizer gauges (`lims_sim::batch_sync`), from one producer DB image,
/// on the shared server: the address they are served on.
async fn start_batch_gauges(
    shutdown: &CancellationToken,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let shared = mongo_client().await;
    let producer_db = shared.database(&unique_name("prometheus_producer"));
    producer_db
        .collection(COLLECTIONS[0])
        .insert_one(doc! {
            "id": 1, "camera_id": 1,
            "data": Binary { subtype: BinarySubtype::Generic, bytes: vec![0xff, 0xd8] },
            "created_at": DateTime::now(), "updated_at": DateTime::now(),
            "is_active": false, "is_deleted": false,
        })
        .await
        .expect("producer image");
    let consumer_db = shared.database(&unique_name("prometheus_batch"));
    let (listener, addr) = bind().await;
    let shutdown = shutdown.clone();
    let run = tokio::spawn(async move {
        let served = lims_sim::batch_sync::serve(
            &producer_db,
            &consumer_db,
            &lims_sim::batch_sync::SyncMetrics::default(),
            Duration::from_secs(2),
            listener,
            shutdown,
        )
        .await;
        // The gauges are what this test reads; a failed sync run shows as their absence.
        drop(served);
    });
    (addr, run)
}

/// Every dashboard expression must return a series, every rule must evaluate: the
/// failures, described.
async fn evaluate_all(
    prometheus: &Prometheus,
    panels: &[(String, String)],
    rules: &[(String, String)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (panel, expr) in panels {
        match prometheus.query(expr).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => failures.push(format!("panel {panel:?}: `{expr}` returned no series")),
            Err(e) => failures.push(format!("panel {panel:?}: `{expr}` failed: {e}")),
        }
    }
    for (rule, expr) in rules {
        if let Err(e) = prometheus.query(expr).await {
            failures.push(format!("rule {rule}: `{expr}` failed: {e}"));
        }
    }
    // Prometheus itself evaluated every rule group without an error.
    let (_, groups) = prometheus.get("/api/v1/rules").await.expect("rules API");
    for group in groups["data"]["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            if rule["health"] == "err" {
                failures.push(format!("rule {}: {}", rule["name"], rule["lastError"]));
            }
        }
    }
    failures
}

/// Waits until the job has applied `n` images and dead-lettered at least one record.
async fn wait_applied(metrics: &JobMetrics, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = metrics.render();
        if metric_value(&text, "leafsync_job_images_total", &[]) >= n
            && metric_value(&text, "leafsync_job_dead_lettered_total", &[]) >= 1
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_and_alert_rule_evaluates_against_real_scrapes_of_a_run_with_a_poison_record_and_a_mongo_stop()
 {
    let panels = dashboard_exprs();
    let rules = rule_exprs();
    let mut mongo = MongoProcess::start().await;
    let shutdown = CancellationToken::new();
    let db = unique_name("prometheus");
    let (plants, job_metrics, job_addr, job) = start_job(mongo.uri(), &db, &shutdown).await;
    let (api_addr, probe_addr) = start_api(&mongo.uri(), &db, &shutdown).await;
    let (batch_addr, batch) = start_batch_gauges(&shutdown).await;
    let verifier_addr = start_verifier(&mongo.uri(), &db, &shutdown).await;
    let prometheus = Prometheus::start(&[
        ("consumer-job", job_addr),
        ("consumer-api", probe_addr),
        ("db-synchronizer", batch_addr),
        ("leafsync-verifier", verifier_addr),
    ]);

    // The run: good records on every plant, one poison record, API traffic.
    let producer: FutureProducer = kafka_config().create().expect("producer");
    for id in 1..=30 {
        let plant = usize::try_from(id % 3).expect("small");
        send(&producer, &plants[plant], &event(id, id)).await;
    }
    send(&producer, &plants[0], "{ not json").await;
    wait_applied(&job_metrics, 30, "the job did not apply the run").await;
    for path in [
        "/image-plant/potato/3",
        "/image-plant/potato/total",
        "/image-plant/tomato/999999",
    ] {
        http(api_addr, path).await;
    }
    http(probe_addr, "/ready").await;

    // Enough scrapes that rates over short windows have two samples, and the recording
    // rules have run; and a complete verification pass of every plant.
    prometheus
        .wait_for(
            "scrapes of all four targets",
            "count(count_over_time(up[1m]) >= 5)",
            60,
            |r| r.first().and_then(|s| s["value"][1].as_str()) == Some("4"),
        )
        .await;
    prometheus
        .wait_for(
            "a complete verification pass of every plant, without drift",
            "sum by (plant) (leafsync_verify_drift) == 0 and on (plant) (leafsync_verify_last_pass_timestamp_seconds > 0)",
            60,
            |r| r.len() == 3,
        )
        .await;

    // MongoDB stops while records keep coming: the job holds, /ready answers 503.
    mongo.kill();
    for id in 31..=36 {
        send(&producer, &plants[0], &event(id, id)).await;
    }
    let held = &rules
        .iter()
        .find(|(name, _)| name == "LeafsyncJobHeld")
        .expect("the held alert")
        .1;
    prometheus
        .wait_for(
            "the held alert's expression while MongoDB is down",
            held,
            90,
            |r| {
                r.iter()
                    .any(|s| s["metric"]["reason"] == "mongo-unavailable")
            },
        )
        .await;
    for _ in 0..3 {
        http(api_addr, "/image-plant/potato/3").await;
        http(probe_addr, "/ready").await;
    }
    // The kubelet's view (the probe listener's /ready answers) reaches a scrape.
    prometheus
        .wait_for(
            "the probe listener's /ready answers while MongoDB is down",
            "sum(leafsync_api_requests_total{route=\"/ready\", status=\"503\"})",
            30,
            |r| !r.is_empty(),
        )
        .await;

    let failures = evaluate_all(&prometheus, &panels, &rules).await;
    assert!(
        failures.is_empty(),
        "{} expression(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // MongoDB returns and nothing was lost.
    mongo.restart().await;
    wait_applied(
        &job_metrics,
        36,
        "the job did not resume after MongoDB returned",
    )
    .await;
    shutdown.cancel();
    job.await.expect("job task").expect("job run");
    let _ = batch.await;
}
