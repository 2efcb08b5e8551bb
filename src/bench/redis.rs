//! The Redis every suite compares with: a `redis-server` from PATH started
//! on a free loopback port in its own scratch directory (with or without
//! an fsync per write) and killed when dropped, or one given by URL. Suites
//! drive it with their own commands over one real TCP connection per client.

use anyhow::{anyhow, Context};
use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fixture::ScratchDir;

/// How long a started redis-server may take to answer `PING`.
const STARTUP: Duration = Duration::from_secs(10);

/// What a started redis-server keeps on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Persistence {
    /// `--save '' --appendonly no`: nothing, the fastest Redis.
    None,
    /// `--appendonly yes --appendfsync always`: a write is answered after
    /// its event-loop turn's AOF write and fsync.
    FsyncAlways,
}

impl Persistence {
    fn args(self) -> &'static [&'static str] {
        match self {
            Persistence::None => &["--save", "", "--appendonly", "no"],
            Persistence::FsyncAlways => &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
        }
    }

    /// The flags as the report quotes them.
    pub(super) fn flags(self) -> &'static str {
        match self {
            Persistence::None => "--save '' --appendonly no",
            Persistence::FsyncAlways => "--appendonly yes --appendfsync always",
        }
    }
}

/// A Redis to measure: given, or started (and owned) by this run.
pub(super) struct Redis {
    client: redis::Client,
    url: String,
    /// Killed when this is dropped.
    started: Option<RedisProcess>,
}

impl Redis {
    /// The Redis at `url`, else a started `redis-server` that persists
    /// nothing; `None` when no `redis-server` is installed.
    pub(super) async fn find(url: Option<&str>) -> anyhow::Result<Option<Redis>> {
        match url {
            Some(url) => Ok(Some(Redis::connect(url, None).await?)),
            None => Redis::start(Persistence::None).await,
        }
    }

    /// A `redis-server` from PATH with `persistence`; `None` when none is
    /// installed.
    pub(super) async fn start(persistence: Persistence) -> anyhow::Result<Option<Redis>> {
        match RedisProcess::start(persistence)? {
            None => Ok(None),
            Some(process) => {
                let url = process.url.clone();
                Ok(Some(Redis::connect(&url, Some(process)).await?))
            }
        }
    }

    /// Connects and waits until the server answers `PING`.
    async fn connect(url: &str, mut started: Option<RedisProcess>) -> anyhow::Result<Redis> {
        let client = redis::Client::open(url).with_context(|| format!("Redis URL {url:?}"))?;
        let deadline = Instant::now() + STARTUP;
        loop {
            let ping = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            let err = match ping.await {
                Ok(_) => break,
                Err(err) => err,
            };
            if let Some(process) = started.as_mut() {
                process.check_running()?;
            }
            if Instant::now() >= deadline {
                return Err(anyhow!("no answer to PING from {url} within 10 s: {err}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Redis {
            client,
            url: url.to_owned(),
            started,
        })
    }

    /// A new TCP connection (one per client, so clients never share one).
    pub(super) async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to {}", self.url))
    }

    /// `host:port` for a raw TCP client, and the commands (RESP) that set
    /// up its connection as the URL asks (`AUTH`, `SELECT`).
    pub(super) fn raw_endpoint(&self) -> anyhow::Result<(String, Vec<Vec<u8>>)> {
        let info = self.client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(anyhow!("{} is not a plain TCP Redis URL", self.url));
        };
        let settings = info.redis_settings();
        let mut hello = Vec::new();
        if let Some(password) = settings.password() {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            auth.extend(settings.username().map(str::as_bytes));
            auth.push(password.as_bytes());
            hello.push(super::wire::resp_command(&auth));
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            hello.push(super::wire::resp_command(&[b"SELECT", db.as_bytes()]));
        }
        Ok((format!("{host}:{port}"), hello))
    }

    /// The PID of a server this run started, whose CPU time is the
    /// benchmark's rather than another process's.
    pub(super) fn helpers(&self) -> Vec<u32> {
        self.started.iter().map(|p| p.child.id()).collect()
    }

    /// The server's `redis_version`, if it says.
    pub(super) async fn version(&self) -> Option<String> {
        let mut conn = self.connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
    }

    /// Version and origin, for the report's settings.
    pub(super) async fn describe(&self) -> String {
        let version = self
            .version()
            .await
            .unwrap_or_else(|| "of unknown version".to_owned());
        match &self.started {
            Some(process) => format!(
                "redis-server {version}, started by the bench on loopback with `{}`",
                process.persistence.flags()
            ),
            None => format!("Redis {version} at `--redis-url`"),
        }
    }
}

/// A prefix no earlier run used, so counts never carry over between rows.
pub(super) fn fresh_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("roost-bench:{}-{nanos}:", std::process::id())
}

/// A `redis-server` child process, killed (by its own PID) when dropped.
struct RedisProcess {
    child: Child,
    url: String,
    persistence: Persistence,
    /// Its working directory (the AOF lives here); removed after the kill.
    _dir: ScratchDir,
}

impl RedisProcess {
    /// `Ok(None)` when no `redis-server` is on PATH.
    fn start(persistence: Persistence) -> anyhow::Result<Option<RedisProcess>> {
        let dir = ScratchDir::new("redis")?;
        let port = crate::dev::ports::spare_port().context("finding a free port")?;
        let mut command = Command::new("redis-server");
        crate::placement::float_child(&mut command);
        let spawned = command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(persistence.args())
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => Ok(Some(RedisProcess {
                child,
                url: format!("redis://127.0.0.1:{port}/"),
                persistence,
                _dir: dir,
            })),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).context("starting redis-server"),
        }
    }

    /// An error with the server's output if it has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(status) = self.child.try_wait()? else {
            return Ok(());
        };
        let mut output = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut output);
        }
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut output);
        }
        Err(anyhow!("redis-server exited ({status}): {}", output.trim()))
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_fsync_always_server_keeps_an_append_only_file() {
        let Some(server) = Redis::start(Persistence::FsyncAlways)
            .await
            .expect("starting redis-server")
        else {
            return;
        };
        let mut conn = server.connection().await.expect("connecting");
        let (appendonly, fsync): (Vec<String>, Vec<String>) = redis::pipe()
            .cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query_async(&mut conn)
            .await
            .expect("reading the config");
        assert_eq!(appendonly, ["appendonly", "yes"]);
        assert_eq!(fsync, ["appendfsync", "always"]);
    }
}
