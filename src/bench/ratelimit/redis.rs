//! The Redis baseline: the fixed-window pattern roost's limiter replaces,
//! `INCR key` then `PEXPIRE key window NX`, sent as one pipeline (one round
//! trip, not a MULTI transaction: NX makes the pair safe to repeat) over a
//! real TCP connection per client. The server is `--redis-url`, or a
//! `redis-server` from PATH started on a free loopback port with nothing
//! persisted and killed when the suite ends.

use anyhow::{anyhow, Context};
use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Plan, POLICY};
use crate::bench::load::{drive, Answer, Caller, Load};

/// How long a started redis-server may take to answer `PING`.
const STARTUP: Duration = Duration::from_secs(10);

/// A Redis to measure: given, or started (and owned) by this run.
pub(super) struct Redis {
    client: redis::Client,
    url: String,
    /// Killed when this is dropped.
    started: Option<RedisProcess>,
}

impl Redis {
    /// The Redis at `url`, else a started `redis-server`; `None` when no
    /// `redis-server` is installed.
    pub(super) async fn find(url: Option<&str>) -> anyhow::Result<Option<Redis>> {
        let redis = match url {
            Some(url) => Redis::connect(url, None).await?,
            None => match RedisProcess::start()? {
                None => return Ok(None),
                Some(process) => {
                    let url = process.url.clone();
                    Redis::connect(&url, Some(process)).await?
                }
            },
        };
        Ok(Some(redis))
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

    /// One connection per client, each looping INCR + PEXPIRE NX over the
    /// keys; a count above the limit is a denial.
    pub(super) async fn measure(
        &self,
        keys: &[String],
        clients: usize,
        plan: Plan,
    ) -> anyhow::Result<Load> {
        // Fresh keys for every row, so counts never carry over.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix = format!("roost-bench:{}-{nanos}:", std::process::id());
        let keys: Arc<[String]> = keys.iter().map(|key| format!("{prefix}{key}")).collect();
        let mut callers = Vec::with_capacity(clients);
        for task in 0..clients {
            let conn = self
                .client
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("connecting to {}", self.url))?;
            callers.push(IncrExpire {
                conn,
                keys: keys.clone(),
                task,
            });
        }
        let helpers: Vec<u32> = self.started.iter().map(|p| p.child.id()).collect();
        drive(callers, plan.measure, &helpers).await
    }

    /// Version and origin, for the report's settings.
    pub(super) async fn describe(&self) -> String {
        let version = async {
            let mut conn = self.client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .ok()?;
            info.lines()
                .find_map(|line| line.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_owned())
        }
        .await
        .unwrap_or_else(|| "of unknown version".to_owned());
        match &self.started {
            Some(_) => format!(
                "redis-server {version}, started by the bench on loopback with \
                 `--save '' --appendonly no`"
            ),
            None => format!("Redis {version} at `--redis-url`"),
        }
    }
}

/// One Redis client: request `k` of task `i` spends one unit of
/// `keys[(i + k) % len]`.
struct IncrExpire {
    conn: redis::aio::MultiplexedConnection,
    keys: Arc<[String]>,
    task: usize,
}

impl Caller for IncrExpire {
    async fn call(&mut self, k: usize) -> Result<Answer, String> {
        let key = &self.keys[(self.task + k) % self.keys.len()];
        let (count, _expiry_set): (u64, i64) = redis::pipe()
            .incr(key, 1)
            .cmd("PEXPIRE")
            .arg(key)
            .arg(POLICY.window_ms)
            .arg("NX")
            .query_async(&mut self.conn)
            .await
            .map_err(|err| err.to_string())?;
        Ok(match count <= POLICY.limit {
            true => Answer::Done,
            false => Answer::Denied,
        })
    }
}

/// A `redis-server` child process, killed (by its own PID) when dropped.
struct RedisProcess {
    child: Child,
    url: String,
}

impl RedisProcess {
    /// `Ok(None)` when no `redis-server` is on PATH.
    fn start() -> anyhow::Result<Option<RedisProcess>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free port")?
            .port();
        let spawned = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => Ok(Some(RedisProcess {
                child,
                url: format!("redis://127.0.0.1:{port}/"),
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
    async fn one_decision_counts_and_sets_the_window_once() {
        let Some(server) = Redis::find(None).await.expect("starting redis-server") else {
            return;
        };
        let mut conn = server
            .client
            .get_multiplexed_async_connection()
            .await
            .expect("connecting");
        let mut caller = IncrExpire {
            conn: conn.clone(),
            keys: vec!["roost-bench-test:k".to_owned()].into(),
            task: 0,
        };
        for _ in 0..3 {
            assert_eq!(caller.call(0).await, Ok(Answer::Done));
        }
        let (count, ttl): (u64, i64) = redis::pipe()
            .get("roost-bench-test:k")
            .cmd("PTTL")
            .arg("roost-bench-test:k")
            .query_async(&mut conn)
            .await
            .expect("reading back");
        assert_eq!(count, 3);
        assert!(ttl > 0 && ttl <= POLICY.window_ms as i64, "PTTL {ttl}");
    }
}
