//! One actor, one owner: a 3-region, 2-machines-per-region cluster of real
//! processes, through the Fly-like dev proxy (replay) and with forwarding.

use crate::harness::{code, free_port, seg, DevCluster, Process};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const REGIONS: [&str; 3] = ["fra", "iad", "syd"];

async fn add(client: &reqwest::Client, base: &str, actor: &str) -> (u16, Option<i64>, String) {
    let response = client
        .post(format!("{base}/v1/actors/{}/counters/n", seg(actor)))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let machine = response
        .headers()
        .get("roost-machine")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let value = response
        .json::<Value>()
        .await
        .ok()
        .and_then(|v| v["value"].as_i64());
    (status, value, machine)
}

/// The machine at `url` stores no actor whose ID starts with `prefix`.
async fn assert_holds_no_copy(client: &reqwest::Client, url: &str, prefix: &str) {
    let listed: Value = client
        .get(format!("{url}/v1/actors?prefix={prefix}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["actors"],
        serde_json::json!([]),
        "{url} holds a second copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_dev_proxy_each_actor_is_served_by_one_machine_of_its_home_region() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(
        dir.path(),
        &["--regions", "fra,iad,syd", "--per-region", "2"],
    );
    assert_eq!(cluster.machines.len(), 6);
    let client = reqwest::Client::new();
    for actor in ["room@fra", "room@iad", "room@syd", "lobby"] {
        let mut servers = BTreeSet::new();
        for i in 1..=8 {
            let (status, value, machine) = add(&client, &cluster.proxy, actor).await;
            assert_eq!((status, value), (200, Some(i)), "{actor}");
            servers.insert(machine);
        }
        assert_eq!(servers.len(), 1, "{actor} was served by {servers:?}");
        let machine = servers.into_iter().next().unwrap();
        let home = actor.split('@').nth(1).unwrap_or("fra");
        assert!(machine.starts_with(home), "{actor} served by {machine}");
    }

    // Straight to a non-owner: 409 wrong-owner naming the owner.
    let owner = add(&client, &cluster.proxy, "room@fra").await.2;
    let other = cluster.machines.iter().find(|m| m.0 != owner).unwrap();
    let direct = client
        .post(format!("{}/v1/actors/room%40fra/counters/n", other.2))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 409);
    assert_eq!(
        direct.headers()["fly-replay"],
        format!("instance={owner}").as_str()
    );
    assert_eq!(code(&direct.json().await.unwrap()), "wrong-owner");

    // A replayed request that reaches a non-owner is not replayed again.
    let looped = client
        .post(format!("{}/v1/actors/room%40fra/counters/n", other.2))
        .header("fly-replay-src", "instance=somewhere;region=iad;t=1")
        .send()
        .await
        .unwrap();
    assert_eq!(looped.status(), 503);
    assert!(looped.headers().get("fly-replay").is_none());
    assert!(looped.headers().contains_key("retry-after"));
    assert_eq!(code(&looped.json().await.unwrap()), "owner-unavailable");

    // Unknown regions are refused wherever the request enters.
    let unknown = client
        .post(format!("{}/v1/actors/room%40zz/counters/n", cluster.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(code(&unknown.json().await.unwrap()), "unknown-region");

    // GETs on a non-owner may be cached by Fly's proxy for that actor.
    let get = client
        .get(format!("{}/v1/actors/room%40fra/counters/n", other.2))
        .send()
        .await
        .unwrap();
    assert_eq!(get.headers()["fly-replay-cache"], "/v1/actors/room%40fra/*");
}

struct StaticCluster {
    processes: BTreeMap<String, Process>,
    listen: BTreeMap<String, String>,
    peers: String,
    dir: tempfile::TempDir,
}

impl StaticCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut listen = BTreeMap::new();
        for region in REGIONS {
            for n in 1..=2 {
                listen.insert(
                    format!("{region}-{n}"),
                    format!("127.0.0.1:{}", free_port()),
                );
            }
        }
        let peers = listen
            .iter()
            .map(|(id, addr)| format!("{id}={}=http://{addr}", &id[..3]))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = StaticCluster {
            processes: BTreeMap::new(),
            listen,
            peers,
            dir,
        };
        for id in cluster.listen.keys().cloned().collect::<Vec<_>>() {
            cluster.start_machine(&id);
        }
        cluster
    }

    fn start_machine(&mut self, id: &str) {
        let data = self.dir.path().join(id);
        let args = [
            "--region",
            &id[..3],
            "--machine-id",
            id,
            "--peers",
            &self.peers,
            "--default-region",
            "fra",
            "--routing",
            "forward",
            "--forward-timeout-ms",
            "1500",
        ];
        let process = Process::start_on(&self.listen[id], &data, &args);
        self.processes.insert(id.to_owned(), process);
    }

    fn urls(&self) -> Vec<String> {
        self.processes.values().map(|p| p.url.clone()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_gives_one_owner_and_exact_totals_from_any_entry() {
    let mut cluster = StaticCluster::start();
    let urls = cluster.urls();
    let client = reqwest::Client::new();

    let mut tasks = Vec::new();
    for w in 0..12 {
        let (client, urls) = (client.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let mut served = BTreeSet::new();
            for i in 0..25 {
                let entry = &urls[(w * 7 + i * 3) % urls.len()];
                let (status, _, machine) = add(&client, entry, "room@iad").await;
                assert_eq!(status, 200);
                served.insert(machine);
            }
            served
        }));
    }
    let mut served = BTreeSet::new();
    for task in tasks {
        served.extend(task.await.unwrap());
    }
    assert_eq!(served.len(), 1, "served by {served:?}");
    let owner = served.into_iter().next().unwrap();
    assert!(owner.starts_with("iad"));
    for url in &urls {
        let body: Value = client
            .get(format!("{url}/v1/actors/room%40iad/counters/n"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["value"], 300, "every entry sees the exact total");
    }

    // Stop the owner: its actors answer 503 + Retry-After and no other machine takes them.
    cluster.processes.get_mut(&owner).unwrap().kill9();
    for url in cluster.urls().iter().filter(|u| !u.is_empty()) {
        if cluster.processes[&owner].url == *url {
            continue;
        }
        let (status, ..) = add(&client, url, "room@iad").await;
        assert_eq!(status, 503, "entry {url}");
        let response = client
            .get(format!("{url}/v1/actors/room%40iad"))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("retry-after"));
        assert_holds_no_copy(&client, url, "room%40iad").await;
    }

    // Restarted on its port, the owner resumes from its old state.
    cluster.start_machine(&owner);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let entry = cluster
        .processes
        .iter()
        .find(|(id, _)| **id != owner)
        .unwrap()
        .1
        .url
        .clone();
    let (status, value, machine) = add(&client, &entry, "room@iad").await;
    assert_eq!((status, value, machine), (200, Some(301), owner));
}

fn signal(process: &Process, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_owner_keeps_its_actors_and_loses_no_acknowledged_write() {
    let cluster = StaticCluster::start();
    let client = reqwest::Client::new();
    let urls = cluster.urls();
    let (status, value, owner) = add(&client, &urls[0], "part@syd").await;
    assert_eq!((status, value), (200, Some(1)));
    let others: Vec<String> = cluster
        .processes
        .iter()
        .filter(|(id, _)| **id != owner)
        .map(|(_, p)| p.url.clone())
        .collect();
    let mut acknowledged = 1;
    let mut unknown = 0;

    // The owner stops answering (SIGSTOP): its sockets accept, nothing replies.
    signal(&cluster.processes[&owner], "-STOP");
    let mut waits = Vec::new();
    for url in &others {
        let started = std::time::Instant::now();
        let response = client
            .post(format!("{url}/v1/actors/part%40syd/counters/n"))
            .send()
            .await
            .unwrap();
        waits.push(started.elapsed());
        assert_eq!(response.status(), 503, "entry {url}");
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(code(&response.json().await.unwrap()), "owner-unavailable");
        unknown += 1;
    }
    assert!(
        waits.iter().all(|w| *w < Duration::from_secs(10)),
        "{waits:?}"
    );
    // Nobody else took the actor over meanwhile.
    for url in &others {
        assert_holds_no_copy(&client, url, "part").await;
    }

    // The partition heals: the same owner serves again, with every
    // acknowledged write (the timed-out ones may or may not have landed).
    signal(&cluster.processes[&owner], "-CONT");
    for url in &others {
        let (status, _, machine) = add(&client, url, "part@syd").await;
        assert_eq!((status, machine.as_str()), (200, owner.as_str()));
        acknowledged += 1;
    }
    let body: Value = client
        .get(format!("{}/v1/actors/part%40syd/counters/n", others[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let value = body["value"].as_i64().unwrap();
    assert!(
        (acknowledged..=acknowledged + unknown).contains(&value),
        "value {value}, acknowledged {acknowledged}, unknown {unknown}"
    );
}

#[test]
fn a_multi_region_cluster_without_a_default_region_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_roost"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--region",
            "fra",
            "--machine-id",
            "a",
        ])
        .args([
            "--peers",
            "a=fra=http://127.0.0.1:1,b=iad=http://127.0.0.1:2",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("PRIMARY_REGION")
        .env_remove("ROOST_DEFAULT_REGION")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--default-region"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_forward_mode_a_non_owner_relays_websockets_to_the_owner() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let cluster = StaticCluster::start();
    let client = reqwest::Client::new();
    let urls = cluster.urls();
    let (status, _, owner) = add(&client, &urls[0], "chat@fra").await;
    assert_eq!(status, 200);
    let owner_url = cluster.processes[&owner].url.clone();
    let relay_url = cluster
        .processes
        .iter()
        .find(|(id, _)| **id != owner)
        .map(|(_, p)| p.url.clone())
        .unwrap();
    let ws = |base: &str| {
        format!(
            "{}/v1/actors/chat%40fra/ws",
            base.replace("http://", "ws://")
        )
    };
    let (mut relayed, _) = tokio_tungstenite::connect_async(ws(&relay_url))
        .await
        .unwrap();
    let (mut direct, _) = tokio_tungstenite::connect_async(ws(&owner_url))
        .await
        .unwrap();

    async fn next_text(
        socket: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> String {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                return text.to_string();
            }
        }
    }
    relayed
        .send(Message::text("hello from afar"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut direct).await, "hello from afar");
    assert_eq!(next_text(&mut relayed).await, "hello from afar");
    direct.send(Message::text("hello back")).await.unwrap();
    assert_eq!(next_text(&mut relayed).await, "hello back");
    // Change events reach the relayed socket too.
    add(&client, &urls[urls.len() - 1], "chat@fra").await;
    let event: Value = serde_json::from_str(&next_text(&mut relayed).await).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["value"].as_i64()),
        (Some("counter"), Some(2))
    );
    // The relay holds no copy of the actor.
    assert_holds_no_copy(&client, &relay_url, "chat").await;
    relayed.close(None).await.unwrap();
}
