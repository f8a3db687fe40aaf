//! Topics on the test broker, and an Apache Kafka broker of a test's own.

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
};

use crate::{free_port, kafka_brokers, unique_name};

/// Base librdkafka settings for [`kafka_brokers`].
pub fn kafka_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", kafka_brokers())
        .set("broker.address.family", "v4");
    config
}

/// Creates `name` with `partitions` partitions on the test broker; panics with a hint
/// when the broker is unreachable or refuses.
pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]).await;
}

/// [`create_topic`] with topic configs (e.g. `max.message.bytes`).
pub async fn create_topic_with(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        kafka_config().create().expect("kafka admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        admin.create_topics([&topic], &options),
    )
    .await;
    match result {
        Ok(Ok(results)) => {
            for r in results {
                if let Err((topic, code)) = r {
                    panic!("creating topic {topic} failed: {code}");
                }
            }
        }
        Ok(Err(e)) => panic!(
            "Kafka test broker at {} refused CreateTopics ({e}). Run the tests with scripts/test.sh.",
            kafka_brokers()
        ),
        Err(elapsed) => panic!(
            "Kafka test broker at {} did not answer ({elapsed}). Run the tests with scripts/test.sh, \
             or start it with scripts/kafka-start.sh and export LEAFSYNC_TEST_KAFKA_BROKERS.",
            kafka_brokers()
        ),
    }
}

/// An Apache Kafka broker of a test's own (one KRaft node on free ports, throwaway data),
/// started and restarted by `scripts/kafka-start.sh` itself, so the test runs the same
/// broker, settings and topic creation as every other test. The test may kill it with
/// SIGKILL, as a crash would, and start it again on the same data.
pub struct KafkaProcess {
    /// The broker's client port.
    pub port: u16,
    controller_port: u16,
    dir: std::path::PathBuf,
    topics: String,
    dlq: String,
    partitions: i32,
}

impl KafkaProcess {
    /// Starts a broker holding `topics` with `partitions` partitions each (and a
    /// one-partition dead-letter topic named `dlq`); waits until it answers.
    pub fn start(topics: &[&str], dlq: &str, partitions: i32) -> Self {
        let dir = std::env::temp_dir().join(unique_name("leafsync-kafka"));
        std::fs::create_dir_all(&dir).expect("kafka test dir");
        let process = Self {
            port: free_port(),
            controller_port: free_port(),
            dir,
            topics: topics.join(" "),
            dlq: dlq.to_owned(),
            partitions,
        };
        process.script("kafka-start.sh");
        process
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker's JVM at once (SIGKILL): no controlled shutdown, no flush.
    pub fn kill(&self) {
        let pid = self.pid().expect("the test broker is running");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -KILL {pid} failed");
        for _ in 0..100 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the broker again on the same ports and data (the script sees the dead pid).
    pub fn restart(&self) {
        self.script("kafka-start.sh");
    }

    fn pid(&self) -> Option<String> {
        let file = self
            .dir
            .join("run")
            .join(format!("kafka-{}.pid", self.port));
        std::fs::read_to_string(file)
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn script(&self, name: &str) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts")
            .join(name);
        let mut command = std::process::Command::new("bash");
        command
            .arg(&script)
            .env("LEAFSYNC_KAFKA_PORT", self.port.to_string())
            .env(
                "LEAFSYNC_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .env("LEAFSYNC_DATA_DIR", self.dir.join("data"))
            .env("LEAFSYNC_RUN_DIR", self.dir.join("run"))
            .env("LEAFSYNC_TOPICS", &self.topics)
            .env("LEAFSYNC_TOPIC_PARTITIONS", self.partitions.to_string())
            .env("LEAFSYNC_DLQ_TOPIC", &self.dlq);
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e})", script.display()));
        assert!(
            output.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for KafkaProcess {
    fn drop(&mut self) {
        self.script("kafka-stop.sh");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
