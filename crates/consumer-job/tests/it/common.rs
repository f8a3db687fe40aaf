//! Test harness for the job: start it on random topics/group/database against real
//! services, produce LIMS events, wait for Mongo to reach a state, read the dead letters.

use std::{future::Future, time::Duration};

use consumer_job::{Job, JobConfig, JobError, JobMetrics, config::EnvConfig};
use leafsync_test_support::metric_value;
use leafsync_test_support::{MongoProcess, create_topic, kafka_brokers, unique_name};
use mongodb::bson::{Document, doc};
use rdkafka::{
    ClientConfig, Message,
    consumer::{Consumer, StreamConsumer},
    message::OwnedMessage,
    producer::{FutureProducer, FutureRecord},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running job and the handles to stop and observe it.
pub struct RunningJob {
    pub metrics: JobMetrics,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), JobError>>,
}

impl RunningJob {
    /// Signals shutdown and waits (bounded) for a clean exit.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("job stops within 30 s of shutdown")
            .expect("job task did not panic")
            .expect("job exits cleanly");
    }

    /// Waits (up to `secs`) until [`Self::metric`] reaches at least `n`.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], n: u64, secs: u64) {
        eventually(secs, &format!("{name}{labels:?} >= {n}"), || async {
            let value = self.metric(name, labels);
            if value >= n {
                Ok(())
            } else {
                Err(format!("{value}"))
            }
        })
        .await;
    }

    /// The value of a counter/gauge sample from the text exposition, summed over the
    /// series whose labels contain every `label="value"` pair given.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        metric_value(&self.metrics.render(), name, labels)
    }
}

/// Names of one test's world: three plant topics, a dead-letter topic, a group, a DB.
#[derive(Clone)]
pub struct World {
    pub brokers: String,
    pub mongo_uri: String,
    pub plants: [String; 3],
    pub dlq: String,
    pub group: String,
    pub db: String,
}

pub const COLLECTIONS: [&str; 3] = [
    "imagecolplantpotato",
    "imagecolplanttomato",
    "imagecolplantpepper",
];

impl World {
    pub fn new(brokers: String, mongo_uri: String) -> Self {
        Self {
            brokers,
            mongo_uri,
            plants: [
                unique_name("potato"),
                unique_name("tomato"),
                unique_name("pepper"),
            ],
            dlq: unique_name("dlq"),
            group: unique_name("group"),
            db: unique_name("job"),
        }
    }

    /// A world on the test broker and DB, its plant topics created with `partitions`
    /// partitions each and its dead-letter topic with one.
    pub async fn with_topics(partitions: i32) -> Self {
        let world = Self::new(
            leafsync_test_support::kafka_brokers(),
            leafsync_test_support::mongo_uri(),
        );
        for topic in &world.plants {
            create_topic(topic, partitions).await;
        }
        create_topic(&world.dlq, 1).await;
        world
    }

    pub fn config(&self) -> JobConfig {
        JobConfig {
            kafka_brokers: self.brokers.clone(),
            kafka_group_id: self.group.clone(),
            topics: self
                .plants
                .iter()
                .zip(COLLECTIONS)
                .map(|(t, c)| format!("{t}={c}"))
                .collect::<Vec<_>>()
                .join(","),
            dlq_topic: self.dlq.clone(),
            kafka_session_timeout_ms: 6_000,
            kafka_statistics_interval_ms: 1_000,
            mongo_uri: self.mongo_uri.clone(),
            mongo_db: self.db.clone(),
            batch_max_messages: 50,
            retry_base_ms: 50,
            retry_max_ms: 1_000,
            drain_timeout_ms: 5_000,
            metrics_addr: "127.0.0.1:0".parse().expect("valid address"),
            ..JobConfig::default()
        }
    }

    pub async fn start(&self) -> RunningJob {
        // Fail loudly now if the test DB is down, rather than time out waiting later.
        self.mongo().await;
        start_job(self.config()).await
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("message.timeout.ms", "30000")
            .create()
            .expect("test producer")
    }

    pub async fn mongo(&self) -> mongodb::Database {
        leafsync_test_support::mongo_client_at(&self.mongo_uri)
            .await
            .database(&self.db)
    }
}

pub async fn start_job(config: JobConfig) -> RunningJob {
    // `RUST_LOG=info cargo test …` shows the job's logs; without it tests stay quiet.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
    let metrics = JobMetrics::new();
    let settings = config
        .validate()
        .expect("the test's configuration is valid");
    let job = Job::build(settings, metrics.clone())
        .await
        .expect("job builds");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(job.run(shutdown.clone()));
    RunningJob {
        metrics,
        shutdown,
        handle,
    }
}

/// Sends `value` to `topic`, keyed by `key` (so an image's events share a partition).
pub async fn send(producer: &FutureProducer, topic: &str, key: &str, value: Option<&[u8]>) {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("test event is produced");
}

pub async fn send_json(producer: &FutureProducer, topic: &str, event: &Value) {
    let key = event["id"].to_string();
    send(producer, topic, &key, Some(event.to_string().as_bytes())).await;
}

/// A LIMS create event: `data` is ~`kb` KiB of JPEG-looking bytes, hex-encoded.
pub fn created(id: i64, kb: usize) -> Value {
    let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0];
    bytes.extend(
        (0..kb * 1024)
            .map(|i| u8::try_from((i * 31 + usize::try_from(id).unwrap_or(0)) % 251).unwrap_or(0)),
    );
    json!({
        "id": id, "camera_id": 1 + id % 4, "data": hex::encode(bytes),
        "gps_coordinates": [48.47, 16.58], "created_at": "2023-10-08T15:39:49.123123",
        "updated_at": null, "is_active": false, "is_deleted": false,
        "disease": null, "percentage": null,
    })
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `secs` seconds
/// with the last state `describe` gives.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(state) => state,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}; last state: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the job has reported an outcome for at least `n` records.
pub async fn wait_applied(job: &RunningJob, n: u64) {
    job.wait_metric("leafsync_job_images_total", &[], n, 60)
        .await;
}

/// Waits until `collection` holds exactly `n` documents.
pub async fn wait_for_count(db: &mongodb::Database, collection: &str, n: u64, secs: u64) {
    eventually(secs, &format!("{n} images in {collection}"), || async {
        let count = db
            .collection::<Document>(collection)
            .count_documents(doc! {})
            .await
            .map_err(|e| e.to_string())?;
        if count == n {
            Ok(())
        } else {
            Err(format!("{count} images"))
        }
    })
    .await;
}

pub async fn image(db: &mongodb::Database, collection: &str, id: i32) -> Document {
    db.collection::<Document>(collection)
        .find_one(doc! { "id": id })
        .await
        .expect("find_one")
        .unwrap_or_else(|| panic!("image {id} is not in {collection}"))
}

/// Reads `n` records from the start of `topic` (fails after `secs` seconds).
pub async fn read_topic(brokers: &str, topic: &str, n: usize, secs: u64) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => eprintln!("reader: {e}"),
            Err(elapsed) => panic!("read {} of {n} records from {topic} ({elapsed})", out.len()),
        }
    }
    out
}

pub fn header<'a>(msg: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    use rdkafka::message::Headers;
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The release-shaped `consumer-job` binary as a process of its own, configured through
/// the same `LEAFSYNC_*` variables a pod gets, so a test can SIGKILL it like a crash.
pub struct JobProcess {
    child: std::process::Child,
    metrics_port: u16,
}

impl JobProcess {
    /// Starts `consumer-job` with `config` (its metrics on a free port).
    pub fn spawn(config: &JobConfig) -> Self {
        let metrics_port = leafsync_test_support::free_port();
        let mut config = config.clone();
        config.metrics_addr = ([127, 0, 0, 1], metrics_port).into();
        let Value::Object(fields) = serde_json::to_value(&config).expect("config serializes")
        else {
            unreachable!("JobConfig is a struct")
        };
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_consumer-job"));
        for (field, value) in fields {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            command.env(format!("LEAFSYNC_{}", field.to_uppercase()), value);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.stderr(std::process::Stdio::null());
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("consumer-job starts");
        Self {
            child,
            metrics_port,
        }
    }

    /// Kills the process at once (SIGKILL): no drain, no commit, no LeaveGroup.
    pub fn kill(mut self) {
        self.child.kill().expect("kill consumer-job");
        self.child.wait().expect("reap consumer-job");
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub async fn stop(mut self) {
        let (_, status) = self.terminate(Duration::from_secs(30)).await;
        assert!(
            status.success(),
            "consumer-job exited with {status} after SIGTERM"
        );
    }

    /// SIGTERM; how long the process took to exit (at most `bound`) and how it exited.
    pub async fn terminate(&mut self, bound: Duration) -> (Duration, std::process::ExitStatus) {
        let pid = self.child.id().to_string();
        let sent = std::time::Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM runs");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for consumer-job") {
                return (sent.elapsed(), status);
            }
            assert!(
                sent.elapsed() < bound,
                "consumer-job still runs {bound:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A metric from the process's `/metrics` (0 while it is not serving yet).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        metric_value(&self.get("/metrics").await.1, name, labels)
    }

    /// Status and body of `GET path` on the metrics port; `(0, "")` while the process is
    /// not serving.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
        leafsync_test_support::http_get(addr, path)
            .await
            .unwrap_or_default()
    }
}

impl Drop for JobProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the group's committed offsets reach the end of every partition of
/// `topics`: everything consumed has been applied and committed.
pub async fn wait_committed_to_end(brokers: &str, group: &str, topics: &[String], secs: u64) {
    use rdkafka::{TopicPartitionList, consumer::BaseConsumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offset reader");
    eventually(secs, &format!("group {group} committed to the end"), || {
        let state = (|| {
            let mut behind = Vec::new();
            for topic in topics {
                let meta = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                let partitions = meta.topics()[0].partitions().len();
                let mut tpl = TopicPartitionList::new();
                for p in 0..partitions {
                    tpl.add_partition(topic, i32::try_from(p).expect("partition"));
                }
                let committed = consumer
                    .committed_offsets(tpl, Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                for element in committed.elements() {
                    let (_, high) = consumer
                        .fetch_watermarks(topic, element.partition(), Duration::from_secs(5))
                        .map_err(|e| e.to_string())?;
                    let at = element.offset().to_raw().unwrap_or(-1);
                    if high > 0 && at != high {
                        behind.push(format!("{topic}/{}: {at} of {high}", element.partition()));
                    }
                }
            }
            if behind.is_empty() {
                Ok(())
            } else {
                Err(behind.join(", "))
            }
        })();
        async move { state }
    })
    .await;
}

/// A world whose MongoDB is a server of the test's own (the test may kill it), with plant
/// topics of `partitions` partitions.
pub async fn world_with_its_own_mongo(partitions: i32) -> (MongoProcess, World) {
    let mongo = MongoProcess::start().await;
    let w = World::new(kafka_brokers(), mongo.uri());
    for topic in &w.plants {
        create_topic(topic, partitions).await;
    }
    create_topic(&w.dlq, 1).await;
    (mongo, w)
}

/// How many records `topic` (one partition) holds: its high watermark.
pub fn topic_end(brokers: &str, topic: &str) -> i64 {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("watermark reader");
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks")
        .1
}

/// The members of consumer group `group`, as the broker lists them (and its state).
pub fn group_members(brokers: &str, group: &str) -> (usize, String) {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("group reader");
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("group list");
    list.groups().first().map_or((0, "absent".to_owned()), |g| {
        (g.members().len(), g.state().to_owned())
    })
}
