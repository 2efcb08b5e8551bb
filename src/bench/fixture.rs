//! What a scenario stands up and tears down: a server on `127.0.0.1:0`, a
//! real roost server behind one, and a scratch directory for their files.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use anyhow::{ensure, Context};

use crate::http::{AppState, NodeInfo};
use crate::{Durability, Engine, EngineConfig};

/// A server on `127.0.0.1:0` that stops when told to.
pub(super) struct Server {
    pub(super) base: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub(super) async fn start<F, Fut>(serve: F) -> anyhow::Result<Server>
    where
        F: FnOnce(
            tokio::net::TcpListener,
            std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        ) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            Box::pin(async move {
                let _ = stopped.await;
            }),
        ));
        Ok(Server { base, stop, task })
    }

    /// Serves a plain axum router, as the baseline handlers do.
    pub(super) async fn axum(app: axum::Router) -> anyhow::Result<Server> {
        Server::start(|listener, stop| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        })
        .await
    }

    /// Signals a graceful shutdown and waits for it (at most 10 s).
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => eprintln!("bench: server failed: {err}"),
            Ok(Err(err)) => eprintln!("bench: server task failed: {err}"),
            Err(_) => {
                eprintln!("bench: server did not stop within 10 s; aborting it");
                abort.abort();
            }
        }
    }
}

/// A real roost server (engine and HTTP API) over a fresh data dir.
pub(super) struct RoostServer {
    pub(super) server: Server,
    engine: Arc<Engine>,
    /// Removed once the engine has shut down.
    _dir: ScratchDir,
}

impl RoostServer {
    pub(super) async fn start(durability: Durability) -> anyhow::Result<RoostServer> {
        let dir = ScratchDir::new("roost")?;
        let config = EngineConfig {
            data_dir: dir.path().to_path_buf(),
            durability,
            ..Default::default()
        };
        let engine = Arc::new(tokio::task::spawn_blocking(move || Engine::open(config)).await??);
        // No token: the server only listens on loopback, as `roost serve` would.
        let node = NodeInfo::single("bench".into(), "local".into(), None);
        let state = Arc::new(AppState::new(engine.clone(), node));
        let server =
            Server::start(|listener, stop| crate::http::serve(listener, state, stop)).await?;
        Ok(RoostServer {
            server,
            engine,
            _dir: dir,
        })
    }

    /// Stops the server, then shuts the engine down (at most 30 s).
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await;
        let engine = self.engine;
        let clean =
            tokio::task::spawn_blocking(move || engine.shutdown(Duration::from_secs(30))).await?;
        ensure!(clean, "the engine did not shut down within 30 s");
        Ok(())
    }
}

/// A directory under the system temp dir, removed when dropped.
pub(super) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(super) fn new(label: &str) -> anyhow::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "roost-bench-{label}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0) {
            eprintln!("bench: could not remove {}: {err}", self.0.display());
        }
    }
}
