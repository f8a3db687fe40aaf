//! Helpers every integration test uses to reach the real local services (SecantusDB and
//! Apache Kafka, started by `scripts/`) under names of its own, so tests never share state.
//! Tests that kill a service get a server of their own ([`MongoProcess`], [`KafkaProcess`]).
//!
//! Addresses come from `LEAFSYNC_TEST_MONGO_URI` and `LEAFSYNC_TEST_KAFKA_BROKERS`, which
//! `scripts/test.sh` exports. When a service does not answer, the helpers panic with a
//! message saying how to start it: an integration test never skips silently.

use std::time::Duration;

use rand::Rng;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
};

/// `(name, value)` pairs as owned strings: an environment for config parsers under test.
pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A benchmark knob: `name` parsed from the environment, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`-quantile (0.0–1.0, nearest rank) of `sorted`; zero when it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// A counter or gauge from a Prometheus text exposition, summed over the series whose
/// labels contain every `label="value"` pair given (whole, non-negative counts).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The MongoDB wire server the tests use.
pub fn mongo_uri() -> String {
    std::env::var("LEAFSYNC_TEST_MONGO_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}

/// The Kafka broker the tests use.
pub fn kafka_brokers() -> String {
    std::env::var("LEAFSYNC_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// `prefix_` followed by 12 random lowercase letters and digits: a database, topic or
/// group name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..12)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect();
    format!("{prefix}_{suffix}")
}

/// A client for [`mongo_uri`], checked with a `ping`; panics with a hint when unreachable.
pub async fn mongo_client() -> mongodb::Client {
    mongo_client_at(&mongo_uri()).await
}

/// A client for `uri`, checked with a `ping`; panics with a hint when unreachable.
pub async fn mongo_client_at(uri: &str) -> mongodb::Client {
    let mut options = mongodb::options::ClientOptions::parse(uri)
        .await
        .expect("LEAFSYNC_TEST_MONGO_URI is not a valid MongoDB URI");
    options.server_selection_timeout = Some(Duration::from_secs(5));
    // Tests write as the job does: majority, journaled.
    options.write_concern = Some(
        mongodb::options::WriteConcern::builder()
            .w(mongodb::options::Acknowledgment::Majority)
            .journal(true)
            .build(),
    );
    let client = mongodb::Client::with_options(options).expect("mongodb client options");
    if let Err(e) = client
        .database("admin")
        .run_command(mongodb::bson::doc! { "ping": 1 })
        .await
    {
        panic!(
            "MongoDB test server at {uri} is unreachable ({e}). Run the tests with scripts/test.sh, \
             or start it with scripts/mongo-start.sh and export LEAFSYNC_TEST_MONGO_URI."
        );
    }
    client
}

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
    let admin: AdminClient<DefaultClientContext> =
        kafka_config().create().expect("kafka admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
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

/// A SecantusDB server of a test's own, on a free port, that the test may kill and
/// restart (to simulate a MongoDB outage) without disturbing other tests. It honours
/// `j: true` (`--sync-on-commit`), as a real MongoDB does.
pub struct MongoProcess {
    /// The port it listens on (kept across restarts).
    pub port: u16,
    data: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl MongoProcess {
    /// Starts a server with an empty data directory and waits until it answers.
    pub async fn start() -> Self {
        let port = free_port();
        let data = std::env::temp_dir().join(unique_name("leafsync-mongo"));
        std::fs::create_dir_all(&data).expect("data dir");
        let mut process = Self {
            port,
            data,
            child: None,
        };
        process.restart().await;
        process
    }

    /// The connection string.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data, and waits until it answers.
    pub async fn restart(&mut self) {
        let bin = std::env::var("LEAFSYNC_TEST_SECANTUS_BIN")
            .unwrap_or_else(|_| ".cache/secantus/bin/secantusd-py".to_owned());
        let child = std::process::Command::new(&bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--standalone",
            ])
            // Without it SecantusDB acknowledges `j: true` writes that a SIGKILL can
            // still lose; real MongoDB does not, and these tests kill the server.
            .arg("--sync-on-commit")
            .args(["--cache-size", "128M", "--storage-path"])
            .arg(&self.data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin} ({e}); run the tests with scripts/test.sh")
            });
        self.child = Some(child);
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "SecantusDB ({bin}) did not listen on port {} within 30 s",
            self.port
        );
    }
}

impl Drop for MongoProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released: good enough for a test server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
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

/// A TCP proxy on 127.0.0.1 that holds every chunk the upstream sends for `delay` before
/// passing it on: a server whose every answer takes that long, whatever its real speed.
/// Runs until the test's runtime ends.
pub async fn latency_proxy(upstream: std::net::SocketAddr, delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let port = listener.local_addr().expect("proxy address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
                    tokio::time::sleep(delay).await;
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// `GET path` over a new HTTP/1.1 connection to `addr` (`Connection: close`): the status
/// and the body as text. For tests and benches that talk to a server over real TCP.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(parse_response(&response))
}

/// The status and body of a raw HTTP/1.1 response (status 0 when it is not one).
pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned());
    (status, body)
}
