//! Actors are closed when idle or least recently used and reopen with their
//! state; buffered actors keep acknowledged writes across SQLite's own
//! rollbacks and across engine restarts.

use crate::harness::{code, TestServer};
use roost::{ActorId, Durability, Engine, EngineConfig};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_recently_used_actors_close_and_reopen_with_their_state() {
    let server = TestServer::with(|c| c.max_open_actors = 3, None).await;
    for round in 1..=3 {
        for i in 0..10 {
            assert_eq!(server.add(&format!("lru-{i}"), "n", 1).await, round);
        }
        assert!(server.engine.open_actors() <= 3);
    }
    for i in 0..10 {
        assert_eq!(server.counter(&format!("lru-{i}"), "n").await, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_are_closed() {
    let server = TestServer::with(|c| c.idle_timeout_ms = 100, None).await;
    server.add("sleepy", "n", 5).await;
    assert_eq!(server.engine.open_actors(), 1);
    // The reaper closes it a few idle timeouts later; on a loaded machine
    // (tests run side by side) later still, so wait up to a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.engine.open_actors() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.engine.open_actors(), 0);
    let wal = server
        .actor_files()
        .into_iter()
        .filter(|path| path.to_string_lossy().ends_with("-wal"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .collect::<Vec<_>>();
    // The WAL is kept between opens (see store::vfs), checkpointed and empty.
    assert_eq!(
        wal,
        vec![0],
        "a closed actor's WAL is checkpointed and empty"
    );
    assert_eq!(server.counter("sleepy", "n").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_writes_survive_an_interrupted_write_in_the_same_transaction() {
    let server = TestServer::with(
        |c| {
            c.durability = Durability::Buffered;
            c.flush_interval_ms = 60_000;
            c.limits.query_timeout_ms = 200;
        },
        None,
    )
    .await;
    let (status, _) = server
        .sql("buf", json!({"sql": "CREATE TABLE big (x)"}))
        .await;
    assert_eq!(status, 200);
    for i in 1..=50 {
        assert_eq!(server.add("buf", "n", 1).await, i);
    }
    // These 50 acknowledged increments sit in the open transaction that the
    // interrupted INSERT makes SQLite roll back.
    let (status, body) = server
        .sql("buf", json!({"sql": "INSERT INTO big WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"}))
        .await;
    assert_eq!((status, code(&body)), (408, "query-timeout"));
    assert_eq!(server.counter("buf", "n").await, 50);
    let (_, body) = server
        .sql("buf", json!({"sql": "SELECT count(*) FROM big"}))
        .await;
    assert_eq!(body["results"][0]["rows"][0][0], 0);
    // Counters live in memory until a flush; SQL still sees their values,
    // put back into the table after the rollback took them out.
    let (_, body) = server
        .sql(
            "buf",
            json!({"sql": "SELECT value FROM _roost_counters WHERE name = 'n'"}),
        )
        .await;
    assert_eq!(body["results"][0]["rows"][0][0], 50);
}

#[test]
fn engine_shutdown_flushes_buffered_actors() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        data_dir: dir.path().to_path_buf(),
        durability: Durability::Buffered,
        flush_interval_ms: 3_600_000,
        flush_max_ops: 1_000_000,
        ..EngineConfig::default()
    };
    let ids: Vec<ActorId> = (0..20)
        .map(|i| ActorId::parse(&format!("a{i}")).unwrap())
        .collect();
    {
        let engine = Engine::open(config.clone()).unwrap();
        for id in &ids {
            for _ in 0..25 {
                futures::executor::block_on(engine.counter_add(id, "n".into(), 1, None)).unwrap();
            }
        }
        assert!(engine.shutdown(Duration::from_secs(30)));
    }
    let engine = Engine::open(config).unwrap();
    for id in &ids {
        assert_eq!(
            futures::executor::block_on(engine.counter_get(id, "n".into())).unwrap(),
            25
        );
    }
    assert!(matches!(
        futures::executor::block_on(engine.counter_add(&ids[0], "n".into(), 1, None)),
        Ok(26)
    ));
    engine.shutdown(Duration::from_secs(30));
    assert!(matches!(
        futures::executor::block_on(engine.counter_add(&ids[0], "n".into(), 1, None)),
        Err(roost::EngineError::Closed)
    ));
}

#[test]
fn one_engine_holds_a_data_dir_until_it_has_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        data_dir: dir.path().to_path_buf(),
        ..EngineConfig::default()
    };
    let first = Engine::open(config.clone()).unwrap();
    let id = ActorId::parse("held").unwrap();
    futures::executor::block_on(first.counter_add(&id, "n".into(), 1, None)).unwrap();
    let refused = Engine::open(config.clone()).err().expect("a second engine");
    assert!(
        refused
            .to_string()
            .contains("in use by another roost engine"),
        "{refused}"
    );
    // The refused engine deleted nothing of the first one's.
    assert_eq!(
        futures::executor::block_on(first.counter_add(&id, "n".into(), 1, None)).unwrap(),
        2
    );
    assert!(first.shutdown(Duration::from_secs(30)));
    let second = Engine::open(config).unwrap();
    assert_eq!(
        futures::executor::block_on(second.counter_get(&id, "n".into())).unwrap(),
        2
    );
    drop(first);
}
