//! Clients of the test MongoDB, and a SecantusDB server of a test's own.

use std::time::Duration;

use crate::{free_port, mongo_uri, unique_name};

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
