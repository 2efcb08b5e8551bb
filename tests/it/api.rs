//! The SQL, KV, counter and actor routes behave as SPEC §2–§3 say.

use crate::harness::{code, seg, TestServer};
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_lose_and_duplicate_nothing() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..40 {
                seen.push(server.add("room-1", "hits", 1).await);
            }
            seen
        }));
    }
    let mut values = BTreeSet::new();
    for task in tasks {
        for value in task.await.unwrap() {
            assert!(values.insert(value), "value {value} returned twice");
        }
    }
    assert_eq!(values, (1..=1280).collect::<BTreeSet<i64>>());
    assert_eq!(server.counter("room-1", "hits").await, 1280);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_start_at_zero_take_deltas_and_refuse_overflow() {
    let server = TestServer::start().await;
    assert_eq!(server.counter("c", "never").await, 0);
    assert_eq!(server.add("c", "n", -5).await, -5);
    let response = server
        .client
        .post(server.actor("c", "/counters/n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["value"], -4);
    assert_eq!(server.add("c", "n", i64::MAX).await, i64::MAX - 4);
    let response = server
        .client
        .post(server.actor("c", "/counters/n"))
        .json(&json!({"by": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(code(&response.json().await.unwrap()), "invalid-request");
    assert_eq!(server.counter("c", "n").await, i64::MAX - 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_compare_and_set_honours_if_match_and_if_none_match() {
    let server = TestServer::start().await;
    let url = server.actor("doc", "/kv/title");
    let c = &server.client;

    let created = c
        .put(&url)
        .header("if-none-match", "*")
        .body("v1")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let v1 = created.headers()["etag"].to_str().unwrap().to_owned();

    let again = c
        .put(&url)
        .header("if-none-match", "*")
        .body("dup")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 412);
    assert_eq!(code(&again.json().await.unwrap()), "version-mismatch");

    let updated = c
        .put(&url)
        .header("if-match", &v1)
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let v2 = updated.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(v1, v2);

    let stale = c
        .put(&url)
        .header("if-match", &v1)
        .body("lost update")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let stale_delete = c.delete(&url).header("if-match", &v1).send().await.unwrap();
    assert_eq!(stale_delete.status(), 412);

    let current = c.get(&url).send().await.unwrap();
    assert_eq!(current.headers()["etag"].to_str().unwrap(), v2);
    assert_eq!(current.bytes().await.unwrap(), "v2");

    assert_eq!(
        c.delete(&url)
            .header("if-match", &v2)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let gone = c.get(&url).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(code(&gone.json().await.unwrap()), "not-found");
    assert_eq!(
        c.delete(&url).send().await.unwrap().status(),
        204,
        "delete is idempotent"
    );

    // A re-created key never reuses an old version, so old ETags stay stale.
    let recreated = c.put(&url).body("v3").send().await.unwrap();
    let v3 = recreated.headers()["etag"].to_str().unwrap().to_owned();
    assert!(v3 != v1 && v3 != v2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_set_lets_exactly_one_writer_win() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let url = server.actor("race", "/kv/slot");
    let base = server.client.put(&url).body("start").send().await.unwrap();
    let etag = base.headers()["etag"].to_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (server, url, etag) = (server.clone(), url.clone(), etag.clone());
        tasks.push(tokio::spawn(async move {
            let r = server
                .client
                .put(&url)
                .header("if-match", etag)
                .body(format!("w{i}"))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|&&s| s == 412).count(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_list_paging_visits_every_key_once() {
    let server = TestServer::start().await;
    let c = &server.client;
    let mut expected = Vec::new();
    for i in 0..57 {
        let key = format!("user:{i:03}");
        c.put(server.actor("dir", &format!("/kv/{}", seg(&key))))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
        expected.push(key);
    }
    c.put(server.actor("dir", "/kv/other"))
        .body("x")
        .send()
        .await
        .unwrap();

    for reverse in [false, true] {
        let mut visited = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("prefix", "user:".to_owned()), ("limit", "10".to_owned())];
            if reverse {
                query.push(("reverse", "true".into()));
            }
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let page: Value = c
                .get(server.actor("dir", "/kv"))
                .query(&query)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for item in page["items"].as_array().unwrap() {
                assert!(
                    item.get("value").is_none(),
                    "values are only sent on request"
                );
                visited.push(item["key"].as_str().unwrap().to_owned());
            }
            match page["cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let mut want = expected.clone();
        if reverse {
            want.reverse();
        }
        assert_eq!(visited, want, "reverse={reverse}");
    }

    let ranged: Value = c
        .get(server.actor("dir", "/kv"))
        .query(&[
            ("start", "user:010"),
            ("end", "user:013"),
            ("values", "true"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = ranged["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["user:010", "user:011", "user:012"]);
    assert_eq!(ranged["items"][0]["value"], "v10");

    let bad = c
        .get(server.actor("dir", "/kv"))
        .query(&[("cursor", "!!!")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(code(&bad.json().await.unwrap()), "invalid-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_batch_whose_second_statement_fails_applies_nothing() {
    let server = TestServer::start().await;
    let (status, _) = server
        .sql(
            "shop",
            json!({"sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .sql(
            "shop",
            json!({"statements": [
                {"sql": "INSERT INTO items (name) VALUES (?)", "params": ["first"]},
                {"sql": "INSERT INTO missing_table VALUES (1)"},
            ]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "sql-error");
    let (_, body) = server
        .sql("shop", json!({"sql": "SELECT count(*) AS n FROM items"}))
        .await;
    assert_eq!(body["results"][0]["rows"][0][0], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_values_round_trip_with_positional_and_named_parameters() {
    let server = TestServer::start().await;
    let (status, body) = server
        .sql(
            "vals",
            json!({"statements": [
                {"sql": "CREATE TABLE v (i INTEGER, r REAL, t TEXT, b BLOB, n)"},
                {"sql": "INSERT INTO v VALUES (?1, ?2, ?3, ?4, ?5)", "params": [9223372036854775807i64, 1.5, "héllo", {"base64": "AAEC/w=="}, null]},
                {"sql": "INSERT INTO v (i, t) VALUES (:i, @t)", "params": {"i": -9223372036854775808i64, "@t": "named"}},
                {"sql": "SELECT i, r, t, b, n FROM v ORDER BY rowid"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[1]["rows_affected"], 1);
    assert_eq!(results[1]["last_insert_rowid"], 1);
    let select = &results[3];
    assert_eq!(select["columns"], json!(["i", "r", "t", "b", "n"]));
    assert_eq!(
        select["rows"][0],
        json!([9223372036854775807i64, 1.5, "héllo", {"base64": "AAEC/w=="}, null])
    );
    assert_eq!(select["rows"][1][0], json!(-9223372036854775808i64));
    assert_eq!(select["rows"][1][2], "named");

    // Several statements in one string run in order (triggers stay whole).
    let (status, body) = server
        .sql("vals", json!({"sql": "CREATE TABLE log (x); CREATE TRIGGER t AFTER INSERT ON v BEGIN INSERT INTO log VALUES (1); END; INSERT INTO v (i) VALUES (3); SELECT count(*) FROM log"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 4);
    assert_eq!(body["results"][3]["rows"][0][0], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_and_kv_share_the_actor_database() {
    let server = TestServer::start().await;
    server
        .client
        .put(server.actor("mix", "/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    server.add("mix", "c", 7).await;
    let (status, body) = server
        .sql("mix", json!({"sql": "SELECT (SELECT count(*) FROM _roost_kv), (SELECT value FROM _roost_counters WHERE name = 'c')"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["rows"][0], json!([1, 7]));
    let (status, body) = server
        .sql("mix", json!({"sql": "DELETE FROM _roost_kv"}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (403, "sql-denied"),
        "reserved tables are read-only to SQL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_are_described_listed_and_deleted() {
    let server = TestServer::start().await;
    let c = &server.client;
    let missing = c.get(server.actor("nobody", "")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(server.actor_files().is_empty(), "reads create no files");

    for id in ["room-a", "room-b", "room-c", "user-1"] {
        server.add(id, "n", 1).await;
    }
    let info: Value = c
        .get(server.actor("room-b", ""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["id"], "room-b");
    assert_eq!(info["home_region"], "local");
    assert_eq!(info["owner"], "test-machine");
    assert_eq!(info["durability"], "durable");
    assert_eq!(info["open"], true);
    assert!(info["size_bytes"].as_u64().unwrap() > 0);

    let page: Value = c
        .get(format!("{}/v1/actors", server.url))
        .query(&[("prefix", "room-"), ("limit", "2")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["room-a", "room-b"]);
    let next: Value = c
        .get(format!("{}/v1/actors", server.url))
        .query(&[
            ("prefix", "room-"),
            ("limit", "2"),
            ("cursor", page["cursor"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(next["actors"][0]["id"], "room-c");
    assert_eq!(next["cursor"], Value::Null);

    assert_eq!(
        c.delete(server.actor("room-b", ""))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.get(server.actor("room-b", ""))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        server.counter("room-b", "n").await,
        0,
        "deleted data is gone"
    );
    assert_eq!(
        server.add("room-b", "n", 1).await,
        1,
        "the ID can be used again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_actors_keep_no_file() {
    let server = TestServer::start().await;
    let response = server
        .client
        .post(server.actor("scratch", "/counters/n"))
        .header("roost-durability", "memory")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.add("scratch", "n", 1).await, 2);
    let info: Value = server
        .client
        .get(server.actor("scratch", ""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["durability"], "memory");
    assert_eq!(info["size_bytes"], 0);
    assert!(server.actor_files().is_empty());
    let bad = server
        .client
        .post(server.actor("other", "/counters/n"))
        .header("roost-durability", "sometimes")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_names_the_serving_machine_and_region() {
    let server = TestServer::start().await;
    for url in [
        format!("{}/healthz", server.url),
        server.actor("x", "/counters/n"),
        format!("{}/nope", server.url),
    ] {
        let response = server.client.get(url).send().await.unwrap();
        assert_eq!(response.headers()["roost-region"], "local");
        assert_eq!(response.headers()["roost-machine"], "test-machine");
    }
    let ready = server
        .client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let nope = server
        .client
        .get(format!("{}/nope", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(nope.status(), 404);
    assert_eq!(nope.headers()["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_when_configured() {
    let server = TestServer::with(|_| {}, Some("s3cret")).await;
    let url = server.actor("a", "/counters/n");
    let none = server.client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(code(&none.json().await.unwrap()), "unauthorized");
    let wrong = server
        .client
        .get(&url)
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = server
        .client
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let health = server
        .client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "health checks need no token");
}
