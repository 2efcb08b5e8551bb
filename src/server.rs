//! `roost serve`: logging, identity, the loopback rule, binding, and a
//! graceful shutdown that flushes every actor before exiting.

use crate::cluster::membership::{follow_fly_dns, parse_peers};
use crate::cluster::{Member, Routing};
use crate::config::{LogFormat, ServeArgs};
use crate::engine::Engine;
use crate::http::{self, AppState, AuthConfig, HttpLimits, NodeInfo};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Runs the server until SIGTERM/SIGINT; returns once everything is flushed.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    if args.token.is_none() && args.jwt_secret.is_none() && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} without a token: set ROOST_TOKEN (or --token) or \
             ROOST_JWT_SECRET, or listen on a loopback address such as 127.0.0.1",
            args.listen
        );
    }
    // Every connection and every open actor holds descriptors; the usual
    // soft limit of 1024 would cap both long before memory does.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(err) => tracing::warn!(error = %err, "could not raise the open-file limit"),
    }
    let config = args.engine_config();
    let engine = tokio::task::spawn_blocking(move || Engine::open(config))
        .await?
        .map_err(|e| anyhow::anyhow!("cannot open data dir {}: {e}", args.data_dir.display()))?;
    let engine = Arc::new(engine);
    if !engine.data_dir_writable() {
        anyhow::bail!("data dir {} is not writable", args.data_dir.display());
    }
    let machine_id = match &args.machine_id {
        Some(id) => id.clone(),
        None => persisted_machine_id(&args.data_dir)?,
    };
    let default_region = args.default_region.clone().or_else(|| {
        std::env::var("PRIMARY_REGION")
            .ok()
            .filter(|r| !r.is_empty())
    });
    let node = cluster_node(&args, machine_id, default_region)?;
    let state = Arc::new(AppState {
        engine: engine.clone(),
        node: node.clone(),
        auth: AuthConfig {
            token: args.token.clone(),
            jwt_secret: args.jwt_secret.clone(),
        },
        limits: HttpLimits {
            request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
            max_concurrent_requests: args.max_concurrent_requests,
            access_log: args.access_log,
            header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
            max_connections: args.max_connections,
            ..HttpLimits::default()
        },
        ratelimit_policies: crate::limiter::NamedPolicies::new(args.ratelimit_policies.clone()),
        realtime: http::Realtime {
            limits: http::RealtimeLimits {
                max_sockets_per_actor: args.ws_max_sockets_per_actor,
                max_message_bytes: args.ws_max_message_bytes,
            },
            allowed_origins: args.allowed_origins.clone(),
            ..Default::default()
        },
        local_usage: Default::default(),
        handoffs: Default::default(),
        drain: Default::default(),
    });
    crate::cluster::drain::resume_if_marked(&state);
    let listener = http::listener::bind(args.listen)?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to learn the port when listening on :0.
    println!("roost: listening on http://{addr}");
    tracing::info!(%addr, machine = %node.machine_id, region = %node.region, "serving");
    let drain = Duration::from_millis(args.shutdown_timeout_ms);
    // The drain deadline runs from the signal, not from the start.
    let (signalled, mut draining) = tokio::sync::oneshot::channel::<()>();
    let served = http::serve(listener, state, async move {
        shutdown_signal().await;
        let _ = signalled.send(());
    });
    let mut served = std::pin::pin!(served);
    tokio::select! {
        result = &mut served => result?,
        _ = &mut draining => match tokio::time::timeout(drain, &mut served).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!("in-flight requests did not finish in time; closing anyway"),
        },
    }
    let flushed = tokio::task::spawn_blocking(move || engine.shutdown(drain)).await?;
    if !flushed {
        anyhow::bail!("some actors did not close within {drain:?}");
    }
    tracing::info!("all actors flushed; bye");
    Ok(())
}

/// This machine's view of the cluster: static peers, Fly DNS, or alone.
fn cluster_node(
    args: &ServeArgs,
    machine_id: String,
    default_region: Option<String>,
) -> anyhow::Result<NodeInfo> {
    let me = Member {
        machine_id,
        region: args.region.clone(),
        address: format!("http://{}", args.listen),
    };
    let peers = match &args.peers {
        Some(text) => parse_peers(text).map_err(|e| anyhow::anyhow!("--peers: {e}"))?,
        None => Vec::new(),
    };
    let regions: std::collections::BTreeSet<&str> = peers
        .iter()
        .map(|p| p.region.as_str())
        .chain([me.region.as_str()])
        .collect();
    if regions.len() > 1 && default_region.is_none() {
        anyhow::bail!(
            "the cluster spans regions {regions:?}: set --default-region (or PRIMARY_REGION) \
             so every machine computes the same home for IDs without an @region suffix"
        );
    }
    let on_fly = args.fly_app.is_some();
    let routing = args.routing.unwrap_or(if on_fly {
        Routing::Replay
    } else {
        Routing::Forward
    });
    let mut node = NodeInfo::cluster(me, peers, default_region, routing);
    node.forward_timeout = Duration::from_millis(args.forward_timeout_ms.max(1));
    if on_fly && args.peers.is_none() {
        tokio::spawn(follow_fly_dns(
            node.membership.clone(),
            args.listen.port(),
            Duration::from_secs(5),
            Duration::from_secs(600),
        ));
    }
    Ok(node)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing in-flight requests");
}

/// A machine id generated on first start and kept in the data dir.
fn persisted_machine_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("machine-id");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(existing.to_owned());
        }
    }
    let id = format!("{:014x}", rand::random::<u64>() & 0x00ff_ffff_ffff_ffff);
    std::fs::write(&path, &id)?;
    Ok(id)
}
