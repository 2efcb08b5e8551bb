//! `roost dev`: a whole multi-region cluster on one machine. One `roost
//! serve` process per machine (own data dir, own port, the full peer
//! list) plus a front proxy that behaves like Fly's: it sends each request
//! to some machine and honours `fly-replay`, so routing can be tried
//! without a Fly account.

pub mod ports;
mod proxy;

use crate::cluster::{Member, Routing};
use clap::Args;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Regions to run, e.g. `fra,iad,syd`; the first is the default home region.
    #[arg(long, value_delimiter = ',', required = true)]
    pub regions: Vec<String>,
    /// Machines per region.
    #[arg(long, default_value_t = 1)]
    pub per_region: usize,
    /// Address of the front proxy.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Parent of the machines' data dirs.
    #[arg(long, default_value = "./roost-dev")]
    pub data_dir: PathBuf,
    /// How machines answer requests for actors they do not own.
    #[arg(long, value_enum, default_value_t = Routing::Replay)]
    pub routing: Routing,
    /// Simulated latency of one inter-region hop in the proxy (ms).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Durability of new actors on every machine.
    #[arg(long, value_enum, default_value_t = crate::config::Durability::Durable)]
    pub durability: crate::config::Durability,
}

/// Starts the machines and the proxy; runs until SIGINT/SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let regions: Vec<String> = args
        .regions
        .iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    if regions.is_empty() || args.per_region == 0 {
        anyhow::bail!("roost dev needs at least one region and one machine per region");
    }
    let mut members = Vec::new();
    for region in &regions {
        for n in 1..=args.per_region {
            let port = ports::spare_port()?;
            members.push(Member {
                machine_id: format!("{region}-{n}"),
                region: region.clone(),
                address: format!("http://127.0.0.1:{port}"),
            });
        }
    }
    let peers = members
        .iter()
        .map(|m| format!("{}={}={}", m.machine_id, m.region, m.address))
        .collect::<Vec<_>>()
        .join(",");
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for member in &members {
        let listen = member.address.trim_start_matches("http://");
        let mut child = Command::new(&exe)
            .arg("serve")
            .args(["--listen", listen])
            .arg("--data-dir")
            .arg(args.data_dir.join(&member.machine_id))
            .args([
                "--region",
                &member.region,
                "--machine-id",
                &member.machine_id,
            ])
            .args(["--peers", &peers, "--default-region", &regions[0]])
            // Several servers share this machine's cores.
            .args(["--pin-workers", "false"])
            .args([
                "--routing",
                routing_name(args.routing),
                "--durability",
                args.durability.as_str(),
            ])
            .env_remove("FLY_APP_NAME")
            .env_remove("FLY_REGION")
            .env_remove("FLY_MACHINE_ID")
            .env_remove("ROOST_TOKEN")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        wait_until_listening(&mut child, &member.machine_id).await?;
        children.push(child);
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    println!("proxy: http://{addr}");
    for m in &members {
        println!("machine: {} {} {}", m.machine_id, m.region, m.address);
    }
    let proxy = Arc::new(proxy::Proxy::new(
        members,
        Duration::from_millis(args.delay_ms),
    ));
    let app = proxy::app(proxy);
    let served =
        axum::serve(listener, app).with_graceful_shutdown(crate::server::shutdown_signal());
    let outcome = served.await;
    for child in &children {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    for child in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    Ok(outcome?)
}

fn routing_name(routing: Routing) -> &'static str {
    match routing {
        Routing::Replay => "replay",
        Routing::Forward => "forward",
    }
}

/// Waits for the machine's `roost: listening on` line.
async fn wait_until_listening(child: &mut Child, id: &str) -> anyhow::Result<()> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("machine {id} has no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    match first {
        Ok(Ok(Some(line))) if line.starts_with("roost: listening on") => Ok(()),
        other => anyhow::bail!("machine {id} did not start: {other:?}"),
    }
}
