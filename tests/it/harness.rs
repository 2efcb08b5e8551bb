//! Starting servers for tests: in-process (an engine plus the axum app on
//! 127.0.0.1:0) or as a real `roost serve` child process.

use roost::http::{AppState, HttpLimits, NodeInfo};
use roost::{Engine, EngineConfig};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use tempfile::TempDir;

/// Percent-encodes one path segment (everything but unreserved characters).
pub fn seg(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub struct TestServer {
    pub url: String,
    pub client: reqwest::Client,
    pub engine: Arc<Engine>,
    pub dir: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}, None).await
    }

    pub async fn with(tune: impl FnOnce(&mut EngineConfig), token: Option<&str>) -> Self {
        Self::with_auth(tune, token, None).await
    }

    pub async fn with_auth(
        tune: impl FnOnce(&mut EngineConfig),
        token: Option<&str>,
        jwt_secret: Option<&str>,
    ) -> Self {
        Self::with_limits(tune, token, jwt_secret, HttpLimits::default()).await
    }

    pub async fn with_limits(
        tune: impl FnOnce(&mut EngineConfig),
        token: Option<&str>,
        jwt_secret: Option<&str>,
        limits: HttpLimits,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = EngineConfig {
            data_dir: dir.path().join("data"),
            ..EngineConfig::default()
        };
        tune(&mut config);
        let engine = Arc::new(Engine::open(config).expect("engine opens"));
        let mut state = AppState::new(
            engine.clone(),
            NodeInfo::single("test-machine".into(), "local".into(), None),
        );
        state.auth.token = token.map(str::to_owned);
        state.auth.jwt_secret = jwt_secret.map(str::to_owned);
        state.limits = limits;
        let state = Arc::new(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(roost::http::serve(listener, state, async move {
            let _ = rx.await;
        }));
        TestServer {
            url,
            client: reqwest::Client::new(),
            engine,
            dir,
            shutdown: Some(tx),
        }
    }

    /// `/v1/actors/<id>` plus `rest`, with the ID percent-encoded.
    pub fn actor(&self, id: &str, rest: &str) -> String {
        format!("{}/v1/actors/{}{}", self.url, seg(id), rest)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Every file in the data dir's actor directories (`actors/ab/…`).
    pub fn actor_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data_dir().join("actors"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_dir())
            .flat_map(|dir| std::fs::read_dir(dir).unwrap())
            .map(|entry| entry.unwrap().path())
            .collect()
    }

    pub async fn add(&self, id: &str, counter: &str, by: i64) -> i64 {
        let response = self
            .client
            .post(self.actor(id, &format!("/counters/{}", seg(counter))))
            .json(&serde_json::json!({"by": by}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.expect("json")["value"]
            .as_i64()
            .expect("value")
    }

    pub async fn counter(&self, id: &str, counter: &str) -> i64 {
        let url = self.actor(id, &format!("/counters/{}", seg(counter)));
        let body: Value = self
            .client
            .get(url)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        body["value"].as_i64().expect("value")
    }

    pub async fn counter_with_token(&self, id: &str, counter: &str, token: &str) -> i64 {
        let url = self.actor(id, &format!("/counters/{}", seg(counter)));
        let response = self
            .client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        response.json::<Value>().await.expect("json")["value"]
            .as_i64()
            .expect("value")
    }

    pub async fn sql(&self, id: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.actor(id, "/sql"))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The problem code of an error body (`urn:roost:error:<code>`).
pub fn code(problem: &Value) -> &str {
    problem["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("urn:roost:error:"))
        .unwrap_or("<no problem type>")
}

/// A real `roost serve` process.
pub struct Process {
    pub child: Child,
    pub url: String,
}

impl Process {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", data_dir, extra)
    }

    /// Starts on a given address (to restart a cluster member on its port).
    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roost"))
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn roost serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read banner");
        let url = line
            .trim()
            .strip_prefix("roost: listening on ")
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
            .to_owned();
        Process { child, url }
    }

    pub fn actor(&self, id: &str, rest: &str) -> String {
        format!("{}/v1/actors/{}{}", self.url, seg(id), rest)
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.child.wait().expect("wait")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port that no outgoing connection takes before the
/// process under test binds it.
pub fn free_port() -> u16 {
    roost::dev::ports::spare_port().unwrap()
}

/// A `roost dev` cluster: the proxy and its machines.
pub struct DevCluster {
    child: Child,
    pub proxy: String,
    /// (machine id, region, url)
    pub machines: Vec<(String, String, String)>,
}

impl DevCluster {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roost"))
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn roost dev");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let proxy_line = lines.next().expect("proxy line").expect("read");
        let proxy = proxy_line
            .strip_prefix("proxy: ")
            .unwrap_or_else(|| panic!("{proxy_line:?}"))
            .to_owned();
        let mut machines = Vec::new();
        for line in lines {
            let line = line.expect("read");
            let fields: Vec<&str> = line
                .strip_prefix("machine: ")
                .expect("machine line")
                .split(' ')
                .collect();
            machines.push((
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[2].to_owned(),
            ));
            if machines.len() == expected_machines(extra) {
                break;
            }
        }
        DevCluster {
            child,
            proxy,
            machines,
        }
    }
}

fn expected_machines(extra: &[&str]) -> usize {
    let arg = |name: &str| extra.iter().position(|a| *a == name).map(|i| extra[i + 1]);
    let regions = arg("--regions").map_or(1, |r| r.split(',').count());
    regions * arg("--per-region").map_or(1, |n| n.parse().unwrap())
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
