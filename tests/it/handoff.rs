//! Moving actors when a machine joins a region: real processes whose
//! static membership changes across restarts. The new owner fetches each
//! actor that now hashes to it from the machine holding it; until both
//! agree on the owner, nobody serves a second copy.

use crate::harness::{code, free_port, seg, Process};
use futures::StreamExt;
use roost::cluster::placement::owner_of;
use roost::cluster::Member;
use roost::ActorId;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const ACTORS: usize = 24;

struct Machine {
    listen: String,
    process: Option<Process>,
}

/// Machines of one region, `fra`, each started with its own peer list.
struct Region {
    dir: tempfile::TempDir,
    machines: BTreeMap<&'static str, Machine>,
    /// `forward` or `replay`.
    routing: &'static str,
}

impl Region {
    fn new(ids: &[&'static str]) -> Self {
        let machines = ids
            .iter()
            .map(|id| {
                let listen = format!("127.0.0.1:{}", free_port());
                (
                    *id,
                    Machine {
                        listen,
                        process: None,
                    },
                )
            })
            .collect();
        Region {
            dir: tempfile::tempdir().unwrap(),
            machines,
            routing: "forward",
        }
    }

    fn peers(&self, ids: &[&str]) -> String {
        ids.iter()
            .map(|id| format!("{id}=fra=http://{}", self.machines[id].listen))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (Re)starts `id` believing the region is `view`.
    fn start(&mut self, id: &str, view: &[&str]) {
        let peers = self.peers(view);
        let data = self.dir.path().join(id);
        let machine = self.machines.get_mut(id).unwrap();
        if let Some(mut old) = machine.process.take() {
            assert!(old.terminate().success());
        }
        machine.process = Some(start(&machine.listen, &data, id, &peers, self.routing));
    }

    fn url(&self, id: &str) -> String {
        self.machines[id].process.as_ref().unwrap().url.clone()
    }

    fn kill9(&mut self, id: &str) {
        let machine = self.machines.get_mut(id).unwrap();
        machine.process.take().unwrap().kill9();
    }
}

fn start(listen: &str, data: &Path, id: &str, peers: &str, routing: &str) -> Process {
    let args = [
        "--region",
        "fra",
        "--machine-id",
        id,
        "--peers",
        peers,
        "--routing",
        routing,
        "--forward-timeout-ms",
        "1500",
        "--durability",
        "durable",
    ];
    Process::start_on(listen, data, &args)
}

/// Which of `ids` owns `actor` when they make up the region.
fn owner(actor: &str, ids: &[&str]) -> String {
    let members: Vec<Member> = ids
        .iter()
        .map(|id| Member {
            machine_id: (*id).into(),
            region: "fra".into(),
            address: String::new(),
        })
        .collect();
    owner_of(&ActorId::parse(actor).unwrap(), "fra", &members)
        .unwrap()
        .machine_id
        .clone()
}

async fn add(client: &reqwest::Client, base: &str, actor: &str, by: i64) -> (u16, Value, String) {
    let response = client
        .post(format!("{base}/v1/actors/{}/counters/n", seg(actor)))
        .json(&serde_json::json!({ "by": by }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let machine = response.headers()["roost-machine"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, response.json().await.unwrap(), machine)
}

async fn value(client: &reqwest::Client, base: &str, actor: &str) -> (i64, String) {
    let response = client
        .get(format!("{base}/v1/actors/{}/counters/n", seg(actor)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{actor} via {base}");
    let machine = response.headers()["roost-machine"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    (body["value"].as_i64().unwrap(), machine)
}

async fn listed(client: &reqwest::Client, base: &str) -> Vec<String> {
    let body: Value = client
        .get(format!("{base}/v1/actors?prefix=room-&limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

/// No pooled connections: machines restart on the same ports.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn actor(i: usize) -> String {
    format!("room-{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_machine_takes_over_its_actors_with_their_state_and_never_forks_them() {
    let client = fresh_client();
    let mut region = Region::new(&["fra-1", "fra-2"]);

    // fra-1 alone: every actor is created there, actor i counting to i + 1.
    region.start("fra-1", &["fra-1"]);
    for i in 0..ACTORS {
        let (status, body, _) = add(&client, &region.url("fra-1"), &actor(i), i as i64 + 1).await;
        assert_eq!((status, body["value"].as_i64()), (200, Some(i as i64 + 1)));
    }
    let both = ["fra-1", "fra-2"];
    let moving: Vec<usize> = (0..ACTORS)
        .filter(|i| owner(&actor(*i), &both) == "fra-2")
        .collect();
    assert!(
        !moving.is_empty() && moving.len() < ACTORS,
        "rendezvous hashing should move some actors, not all: {moving:?}"
    );

    // fra-2 joins, but fra-1 does not know it yet: fra-1 refuses to hand
    // anything over, so fra-2 answers 503 rather than serve an empty actor.
    region.start("fra-2", &both);
    let first = actor(moving[0]);
    let (status, problem, _) = add(&client, &region.url("fra-2"), &first, 100).await;
    assert_eq!((status, code(&problem)), (503, "owner-unavailable"));
    assert!(
        problem["detail"].as_str().unwrap().contains("fra-1"),
        "{problem}"
    );
    let (held, machine) = value(&client, &region.url("fra-1"), &first).await;
    assert_eq!(
        (held, machine.as_str()),
        (moving[0] as i64 + 1, "fra-1"),
        "fra-1 still serves its copy"
    );
    assert!(listed(&client, &region.url("fra-2")).await.is_empty());

    // fra-1 learns of fra-2 (restart with the new peer list). Concurrent
    // increments entering at both machines: every moved actor is fetched
    // once and every total is exact.
    region.start("fra-1", &both);
    let urls = [region.url("fra-1"), region.url("fra-2")];
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (client, urls) = (client.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..ACTORS {
                let entry = &urls[(w + i) % 2];
                let (status, body, _) = add(&client, entry, &actor(i), 1).await;
                assert_eq!(status, 200, "{} via {entry}: {body}", actor(i));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for i in 0..ACTORS {
        let expected = i as i64 + 1 + 8;
        let home = owner(&actor(i), &both);
        for url in &urls {
            let (total, machine) = value(&client, url, &actor(i)).await;
            assert_eq!(
                (total, &machine),
                (expected, &home),
                "{} via {url}",
                actor(i)
            );
        }
    }
    // Each actor is stored by its owner only (the old copies are deleted
    // once the new owner confirmed it has them).
    let mut on_1 = listed(&client, &urls[0]).await;
    let mut on_2 = listed(&client, &urls[1]).await;
    let mut expect_2: Vec<String> = moving.iter().map(|i| actor(*i)).collect();
    on_2.sort();
    expect_2.sort();
    assert_eq!(on_2, expect_2);
    on_1.retain(|id| expect_2.contains(id));
    assert!(on_1.is_empty(), "fra-1 still lists {on_1:?}");

    // The hand-off survives restarts of the old holder: it keeps sending
    // the actor's requests to fra-2 and never serves its old copy.
    region.start("fra-1", &both);
    let (status, body, machine) = add(&client, &region.url("fra-1"), &first, 1).await;
    assert_eq!(
        (status, body["value"].as_i64(), machine.as_str()),
        (200, Some(moving[0] as i64 + 1 + 8 + 1), "fra-2")
    );

    // While fra-1 is down, fra-2 keeps serving what it holds, but cannot
    // create an actor fra-1 might hold; once fra-1 is back, it can.
    region.kill9("fra-1");
    let (status, _, _) = add(&client, &region.url("fra-2"), &first, 1).await;
    assert_eq!(status, 200);
    let fresh = (ACTORS..ACTORS + 200)
        .map(actor)
        .find(|id| owner(id, &both) == "fra-2")
        .unwrap();
    let (status, problem, _) = add(&client, &region.url("fra-2"), &fresh, 1).await;
    assert_eq!((status, code(&problem)), (503, "owner-unavailable"));
    region.start("fra-1", &both);
    let (status, body, machine) = add(&client, &region.url("fra-1"), &fresh, 1).await;
    assert_eq!(
        (status, body["value"].as_i64(), machine.as_str()),
        (200, Some(1), "fra-2")
    );

    // fra-2 is removed without a drain: its actors' data goes with it
    // (SPEC §4), and fra-1, alone again, starts them afresh rather than
    // answering 503 for ever.
    region.kill9("fra-2");
    region.start("fra-1", &["fra-1"]);
    let (status, body, machine) = add(&client, &region.url("fra-1"), &first, 1).await;
    assert_eq!(
        (status, body["value"].as_i64(), machine.as_str()),
        (200, Some(1), "fra-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_whose_copy_was_lost_is_sent_again() {
    let client = fresh_client();
    let mut region = Region::new(&["fra-1", "fra-2"]);
    let both = ["fra-1", "fra-2"];
    region.start("fra-1", &["fra-1"]);
    let moving = (0..200)
        .map(actor)
        .find(|id| owner(id, &both) == "fra-2")
        .unwrap();
    for key in ["a", "b", "c"] {
        let put = client
            .put(format!(
                "{}/v1/actors/{}/kv/{key}",
                region.url("fra-1"),
                seg(&moving)
            ))
            .body(format!("value of {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
    add(&client, &region.url("fra-1"), &moving, 41).await;
    region.start("fra-1", &both);
    // A WebSocket on fra-1's copy, which fra-1 serves until it is asked.
    let ws_url = format!(
        "{}/v1/actors/{}/ws",
        region.url("fra-1").replace("http://", "ws://"),
        seg(&moving)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();

    // fra-2 asks, receives the copy, and "crashes" before importing it:
    // the copy is taken here by hand and dropped.
    let handoff = format!(
        "{}/v1/cluster/handoff/{}",
        region.url("fra-1"),
        seg(&moving)
    );
    let refused = client.post(&handoff).send().await.unwrap();
    assert_eq!(refused.status(), 400, "the claimant must name itself");
    let wrong = client
        .post(&handoff)
        .header("roost-claimant", "fra-9")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 503, "fra-9 is not the owner");
    let lost = client
        .post(&handoff)
        .header("roost-claimant", "fra-2")
        .send()
        .await
        .unwrap();
    assert_eq!(lost.status(), 200);
    assert_eq!(lost.headers()["roost-durability"], "durable");
    assert!(lost
        .bytes()
        .await
        .unwrap()
        .starts_with(b"SQLite format 3\0"));
    // Its listeners are told to reconnect (1001: going away).
    let closed = loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("a close frame within 10 s");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => break close,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(closed.code, CloseCode::Away);
    assert!(closed.reason.contains("fra-2"), "{}", closed.reason);

    // From now on fra-1 serves none of it; its requests go to fra-2, which
    // asks again and gets the same state.
    region.start("fra-2", &both);
    let (total, machine) = value(&client, &region.url("fra-1"), &moving).await;
    assert_eq!((total, machine.as_str()), (41, "fra-2"));
    for key in ["a", "b", "c"] {
        let got = client
            .get(format!(
                "{}/v1/actors/{}/kv/{key}",
                region.url("fra-2"),
                seg(&moving)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.text().await.unwrap(), format!("value of {key}"));
    }
    assert!(listed(&client, &region.url("fra-1")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_machine_hands_every_actor_to_its_next_owner_before_it_leaves() {
    let client = fresh_client();
    let both = ["fra-1", "fra-2"];
    let mut region = Region::new(&both);
    region.start("fra-1", &both);
    region.start("fra-2", &both);
    let urls = [region.url("fra-1"), region.url("fra-2")];
    for i in 0..ACTORS {
        let (status, _, _) = add(&client, &urls[i % 2], &actor(i), i as i64 + 1).await;
        assert_eq!(status, 200);
    }
    let on_2 = (0..ACTORS)
        .filter(|i| owner(&actor(*i), &both) == "fra-2")
        .count();
    assert!(on_2 > 0);
    assert_eq!(listed(&client, &urls[1]).await.len(), on_2);

    let started = client
        .post(format!("{}/v1/cluster/drain", urls[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let progress = loop {
        let progress: Value = client
            .get(format!("{}/v1/cluster/drain", urls[1]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if progress["remaining"] == 0 {
            break progress;
        }
        assert!(std::time::Instant::now() < deadline, "{progress}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(progress["draining"], true);
    assert_eq!(progress["moved"], on_2 as u64, "{progress}");

    // Everything is on fra-1 now, whichever machine a request enters at;
    // fra-2 owns nothing new either.
    for i in 0..ACTORS {
        for url in &urls {
            let (total, machine) = value(&client, url, &actor(i)).await;
            assert_eq!((total, machine.as_str()), (i as i64 + 1, "fra-1"));
        }
    }
    let fresh = (ACTORS..ACTORS + 200)
        .map(actor)
        .find(|id| owner(id, &both) == "fra-2")
        .unwrap();
    let (status, _, machine) = add(&client, &urls[1], &fresh, 1).await;
    assert_eq!((status, machine.as_str()), (200, "fra-1"));
    assert!(listed(&client, &urls[1]).await.is_empty());

    // fra-2 is stopped but still listed in fra-1's peers. It announced that
    // it holds nothing (every 2 s), so new actors do not wait for it.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    region.kill9("fra-2");
    let newer = actor(ACTORS + 500);
    let (status, body, machine) = add(&client, &urls[0], &newer, 1).await;
    assert_eq!((status, machine.as_str()), (200, "fra-1"), "{body}");

    // fra-2 is removed from the list: fra-1, alone, has every actor.
    region.start("fra-1", &["fra-1"]);
    for i in 0..ACTORS {
        let (total, _) = value(&client, &region.url("fra-1"), &actor(i)).await;
        assert_eq!(total, i as i64 + 1);
    }
    assert_eq!(value(&client, &region.url("fra-1"), &fresh).await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fly_replay_a_moved_actor_is_replayed_to_where_it_went() {
    let client = fresh_client();
    let both = ["fra-1", "fra-2"];
    let mut region = Region::new(&both);
    region.routing = "replay";
    region.start("fra-1", &["fra-1"]);
    let mut moving = (0..400).map(actor).filter(|id| owner(id, &both) == "fra-2");
    let (pulled, held) = (moving.next().unwrap(), moving.next().unwrap());
    for id in [&pulled, &held] {
        assert_eq!(add(&client, &region.url("fra-1"), id, 5).await.0, 200);
    }
    region.start("fra-1", &both);
    region.start("fra-2", &both);

    // The new owner pulls the actor on its first request.
    let (status, body, machine) = add(&client, &region.url("fra-2"), &pulled, 1).await;
    assert_eq!(
        (status, body["value"].as_i64(), machine.as_str()),
        (200, Some(6), "fra-2")
    );
    // The old holder now answers with a replay to it, touching nothing.
    let replayed = client
        .post(format!(
            "{}/v1/actors/{}/counters/n",
            region.url("fra-1"),
            seg(&pulled)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 409);
    assert_eq!(replayed.headers()["fly-replay"], "instance=fra-2");
    // An actor nobody asked for yet is still served where it lives.
    let (status, body, machine) = add(&client, &region.url("fra-1"), &held, 1).await;
    assert_eq!(
        (status, body["value"].as_i64(), machine.as_str()),
        (200, Some(6), "fra-1")
    );
    assert_eq!(value(&client, &region.url("fra-2"), &pulled).await.0, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_to_a_machine_removed_without_a_drain_does_not_wedge_the_actor() {
    let client = fresh_client();
    let mut region = Region::new(&["fra-1", "fra-2", "fra-3"]);
    // An actor that moves fra-1 -> fra-2, and belongs to fra-3 once fra-2 is gone.
    let id = (0..1000)
        .map(actor)
        .find(|id| {
            owner(id, &["fra-1", "fra-2"]) == "fra-2" && owner(id, &["fra-1", "fra-3"]) == "fra-3"
        })
        .unwrap();
    region.start("fra-1", &["fra-1"]);
    assert_eq!(add(&client, &region.url("fra-1"), &id, 7).await.0, 200);
    region.start("fra-1", &["fra-1", "fra-2"]);
    region.start("fra-2", &["fra-1", "fra-2"]);
    let (status, body, machine) = add(&client, &region.url("fra-2"), &id, 1).await;
    assert_eq!(
        (status, body["value"].as_i64(), machine.as_str()),
        (200, Some(8), "fra-2")
    );

    // fra-2 leaves without a drain; fra-3 joins. fra-1's tombstone points
    // to a machine that is gone: the actor starts afresh on fra-3 (SPEC §4)
    // instead of answering 503 for ever.
    region.kill9("fra-2");
    region.start("fra-1", &["fra-1", "fra-3"]);
    region.start("fra-3", &["fra-1", "fra-3"]);
    for entry in ["fra-1", "fra-3"] {
        let (status, body, machine) = add(&client, &region.url(entry), &id, 1).await;
        assert_eq!((status, machine.as_str()), (200, "fra-3"), "{body}");
    }
    assert_eq!(
        value(&client, &region.url("fra-1"), &id).await,
        (2, "fra-3".to_owned())
    );
}
