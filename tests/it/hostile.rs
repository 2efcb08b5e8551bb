//! Every hostile input gets its specific problem code, and the actor, the
//! process and all acknowledged data survive it.

use crate::harness::{code, seg, TestServer};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Checks that `victim` still answers and still holds its earlier data.
async fn assert_intact(server: &TestServer, victim: &str, hits: i64) {
    assert_eq!(server.counter(victim, "hits").await, hits);
    let value = server
        .client
        .get(server.actor(victim, "/kv/keep"))
        .send()
        .await
        .unwrap();
    assert_eq!(value.status(), 200);
    assert_eq!(value.bytes().await.unwrap(), "safe");
}

async fn seed(server: &TestServer, victim: &str) {
    server
        .client
        .put(server.actor(victim, "/kv/keep"))
        .body("safe")
        .send()
        .await
        .unwrap();
    server.add(victim, "hits", 3).await;
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_like_ids_create_no_file_outside_the_data_dir() {
    let server = TestServer::start().await;
    // (A bare ".." segment is resolved away by URL parsers before it is sent.)
    for id in [
        "../../etc/passwd",
        "../x",
        "/abs/path",
        "a/../../b",
        "C:\\windows",
        "nul",
    ] {
        assert_eq!(server.add(id, "n", 1).await, 1, "{id}");
        assert_eq!(server.counter(id, "n").await, 1);
    }
    let mut files = Vec::new();
    all_files(server.dir.path(), &mut files);
    let data = server.data_dir();
    for file in &files {
        assert!(file.starts_with(&data), "{file:?} escaped the data dir");
        let name = file.file_name().unwrap().to_string_lossy();
        let journal = file.parent() == Some(data.join("journal").as_path());
        let allowed = name.starts_with("catalog.db")
            || name == "machine-id"
            || name == "roost.lock"
            || (file.parent() == Some(data.join("actors").as_path()) && name == "layout-2")
            || (journal && name.ends_with(".log"))
            || {
                let stem = name.split('.').next().unwrap_or_default();
                stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit())
            };
        assert!(allowed, "unexpected file {file:?}");
    }
    let listed: Value = server
        .client
        .get(format!("{}/v1/actors", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"../../etc/passwd"),
        "the raw ID is kept inside the database: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_bodies_and_json_get_specific_codes() {
    let server = TestServer::start().await;
    seed(&server, "victim").await;
    let c = &server.client;

    let long_id = "x".repeat(513);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(format!("{}/v1/actors/a%00b/counters/n", server.url)),
            400,
            "invalid-actor-id",
        ),
        (
            c.post(format!("{}/v1/actors/a%0Ab/counters/n", server.url)),
            400,
            "invalid-actor-id",
        ),
        (
            c.post(format!("{}/v1/actors/a%7Fb/counters/n", server.url)),
            400,
            "invalid-actor-id",
        ),
        (
            c.post(format!("{}/v1/actors/%FF%FE/counters/n", server.url)),
            400,
            "invalid-actor-id",
        ),
        (
            c.post(server.actor(&long_id, "/counters/n")),
            400,
            "invalid-actor-id",
        ),
        (
            c.post(server.actor("room@zz9", "/counters/n")),
            400,
            "unknown-region",
        ),
        (
            c.put(server.actor("victim", "/kv/big"))
                .body(vec![0u8; 2 << 20]),
            413,
            "payload-too-large",
        ),
        (
            c.post(server.actor("victim", "/sql"))
                .body(vec![b' '; 2 << 20]),
            413,
            "payload-too-large",
        ),
        (
            c.put(server.actor("victim", &format!("/kv/{}", "k".repeat(3000))))
                .body("v"),
            413,
            "payload-too-large",
        ),
        (
            c.post(server.actor("victim", "/sql")).body("{\"sql\": "),
            400,
            "invalid-request",
        ),
        (
            c.post(server.actor("victim", "/sql")).body("[1, 2]"),
            400,
            "invalid-request",
        ),
        (
            c.post(server.actor("victim", "/sql"))
                .body("{\"sql\": \"SELECT ?\", \"params\": [18446744073709551615]}"),
            400,
            "invalid-request",
        ),
        (
            c.post(server.actor("victim", "/counters/hits"))
                .body("{\"by\": \"many\"}"),
            400,
            "invalid-request",
        ),
        (
            c.put(server.actor("victim", "/kv/keep"))
                .header("if-match", "not-a-version")
                .body("x"),
            400,
            "invalid-request",
        ),
        (
            c.get(server.actor("victim", "/kv"))
                .query(&[("limit", "lots")]),
            400,
            "invalid-request",
        ),
    ];
    for (request, status, expected) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "expected {expected}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(code(&body), expected, "{body}");
        assert_eq!(body["status"], status);
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    assert_intact(&server, "victim", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_sql_gets_sql_denied_and_the_actor_stays_usable() {
    let server = TestServer::start().await;
    seed(&server, "victim").await;
    let denied = [
        "ATTACH DATABASE '/tmp/roost-evil.db' AS evil",
        "DETACH DATABASE main",
        "SELECT load_extension('/tmp/evil.so')",
        "VACUUM INTO '/tmp/roost-copy.db'",
        "VACUUM",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA synchronous = OFF",
        "PRAGMA writable_schema = 1",
        "PRAGMA max_page_count = 10",
        "PRAGMA page_size = 512",
        "BEGIN",
        "COMMIT",
        "SAVEPOINT x",
        "INSERT INTO _roost_counters VALUES ('hits', 999)",
        "DROP TABLE _roost_kv",
    ];
    for sql in denied {
        let (status, body) = server.sql("victim", json!({"sql": sql})).await;
        assert_eq!((status, code(&body)), (403, "sql-denied"), "{sql}: {body}");
    }
    assert!(!Path::new("/tmp/roost-evil.db").exists() && !Path::new("/tmp/roost-copy.db").exists());
    let (status, body) = server
        .sql(
            "victim",
            json!({"sql": "PRAGMA user_version = 7; PRAGMA user_version"}),
        )
        .await;
    assert_eq!(status, 200, "harmless pragmas are allowed: {body}");
    assert_eq!(body["results"][1]["rows"][0][0], 7);
    assert_intact(&server, "victim", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_queries_are_interrupted_and_the_actor_stays_usable() {
    let server = TestServer::with(|c| c.limits.query_timeout_ms = 300, None).await;
    seed(&server, "victim").await;
    let started = Instant::now();
    let (status, body) = server
        .sql("victim", json!({"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"}))
        .await;
    assert_eq!((status, code(&body)), (408, "query-timeout"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_intact(&server, "victim", 3).await;

    // A runaway write is rolled back by SQLite as a whole transaction; the
    // engine replays the other ops of its batch, so none are lost.
    let (status, _) = server
        .sql("victim", json!({"sql": "CREATE TABLE big (x)"}))
        .await;
    assert_eq!(status, 200);
    let bomb = tokio::spawn({
        let (client, url) = (server.client.clone(), server.actor("victim", "/sql"));
        async move {
            let body = json!({"sql": "INSERT INTO big WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"});
            let response = client.post(url).json(&body).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    });
    let mut acked = 3;
    while !bomb.is_finished() {
        acked = server.add("victim", "hits", 1).await;
    }
    let (status, body) = bomb.await.unwrap();
    assert_eq!((status, code(&body)), (408, "query-timeout"), "{body}");
    assert_eq!(server.counter("victim", "hits").await, acked);
    let (_, body) = server
        .sql("victim", json!({"sql": "SELECT count(*) FROM big"}))
        .await;
    assert_eq!(body["results"][0]["rows"][0][0], 0);
    assert_intact(&server, "victim", acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_values_fail_fast_without_allocating_them() {
    let server = TestServer::start().await;
    seed(&server, "victim").await;
    for sql in [
        "SELECT randomblob(1000000000)",
        "SELECT zeroblob(2000000000)",
        "SELECT length(hex(zeroblob(100000000)))",
    ] {
        let started = Instant::now();
        let (status, body) = server.sql("victim", json!({"sql": sql})).await;
        assert_eq!(
            (status, code(&body)),
            (413, "payload-too-large"),
            "{sql}: {body}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{sql} was slow");
    }
    // A result set larger than the response limit is refused, not streamed out.
    let (status, body) = server
        .sql("victim", json!({"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 40) SELECT randomblob(1000000) FROM c"}))
        .await;
    assert_eq!((status, code(&body)), (413, "payload-too-large"), "{body}");
    assert_intact(&server, "victim", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_names_with_odd_characters_round_trip() {
    let server = TestServer::start().await;
    for key in [
        "a/b",
        "with space",
        "ünïcødé",
        "emoji-🦀",
        "%2F",
        "...",
        "q?x=1#frag",
    ] {
        let url = server.actor("odd", &format!("/kv/{}", seg(key)));
        assert_eq!(
            server
                .client
                .put(&url)
                .body(key.to_owned())
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{key}"
        );
        assert_eq!(
            server
                .client
                .get(&url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            key
        );
        assert_eq!(server.add("odd", key, 2).await, 2);
    }
}
