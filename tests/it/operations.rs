//! The operable API: metrics, the OpenAPI document, export/import and
//! scoped tokens (issue: a complete, operable HTTP API).

use crate::harness::{code, TestServer};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn metric(text: &str, name: &str, label_part: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l.contains(label_part))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every sample line is `name{labels} value` or `name value`; every family has TYPE.
fn assert_prometheus_text(text: &str) {
    let mut typed = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line}");
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| typed.contains(*base))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample without TYPE: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let server = TestServer::start().await;
    let scrape = |s: &TestServer| {
        let (client, url) = (s.client.clone(), format!("{}/metrics", s.url));
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let route = "route=\"/v1/actors/{id}/counters/{name}\"";
    let before = scrape(&server).await;
    for _ in 0..25 {
        server.add("metered", "n", 1).await;
    }
    // A durable SQL write commits (and fsyncs) on the actor's file.
    let (status, _) = server
        .sql(
            "metered",
            serde_json::json!({"sql": "CREATE TABLE IF NOT EXISTS t (x)"}),
        )
        .await;
    assert_eq!(status, 200);
    let after = scrape(&server).await;
    assert_prometheus_text(&after);
    let requests = metric(&after, "roost_http_requests_total", route)
        - metric(&before, "roost_http_requests_total", route);
    assert!(requests >= 25.0, "requests moved by {requests}");
    assert!(metric(&after, "roost_http_request_duration_seconds_bucket", route) > 0.0);
    // Durable counter increments share journal syncs, not commits.
    assert!(
        metric(&after, "roost_journal_sync_records_count", "")
            > metric(&before, "roost_journal_sync_records_count", "")
    );
    assert!(metric(&after, "roost_commit_duration_seconds_count", "") > 0.0);
    assert!(metric(&after, "roost_actor_opens_total", "") >= 1.0);
    assert!(after.contains("roost_open_actors"));
    assert!(after.contains("roost_actor_threads"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route_and_every_documented_route_exists() {
    let server = TestServer::start().await;
    let doc: Value = server
        .client
        .get(format!("{}/v1/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let expected: BTreeSet<String> = [
        "GET /v1/actors",
        "GET /v1/actors/{id}",
        "DELETE /v1/actors/{id}",
        "POST /v1/actors/{id}/sql",
        "GET /v1/actors/{id}/kv",
        "GET /v1/actors/{id}/kv/{key}",
        "PUT /v1/actors/{id}/kv/{key}",
        "DELETE /v1/actors/{id}/kv/{key}",
        "GET /v1/actors/{id}/counters/{name}",
        "POST /v1/actors/{id}/counters/{name}",
        "GET /v1/actors/{id}/export",
        "PUT /v1/actors/{id}/import",
        "POST /v1/ratelimit/{key}",
        "POST /v1/cluster/handoff/{id}",
        "DELETE /v1/cluster/handoff/{id}",
        "POST /v1/cluster/claim/{id}",
        "POST /v1/cluster/leaving/{machine}",
        "POST /v1/cluster/drain",
        "GET /v1/cluster/drain",
        "GET /v1/actors/{id}/ws",
        "GET /v1/actors/{id}/events",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /v1/openapi.json",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(documented, expected);
    // Each documented route is served (not the fallback's "no route").
    for entry in &documented {
        let (method, path) = entry.split_once(' ').unwrap();
        let url = format!(
            "{}{}",
            server.url,
            path.replace("{id}", "probe")
                .replace("{key}", "k")
                .replace("{name}", "n")
        );
        let response = server
            .client
            .request(method.parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        let status = response.status();
        if path.ends_with("/events") {
            // An endless stream: its head is enough.
            assert_eq!(status, 200, "{entry}");
            continue;
        }
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("no route for") && status != 405,
            "{entry} is documented but not routed: {status} {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_gives_a_plain_sqlite_file_that_imports_into_another_actor() {
    let server = TestServer::start().await;
    let (status, _) = server
        .sql(
            "source",
            json!({"statements": [
                {"sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"},
                {"sql": "INSERT INTO notes (body) VALUES ('first'), ('second')"}
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    server
        .client
        .put(server.actor("source", "/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    server.add("source", "n", 41).await;

    let exported = server
        .client
        .get(server.actor("source", "/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(exported.status(), 200);
    assert_eq!(
        exported.headers()["content-type"],
        "application/vnd.sqlite3"
    );
    let bytes = exported.bytes().await.unwrap();
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    let file = server.dir.path().join("export.db");
    std::fs::write(&file, &bytes).unwrap();

    // A plain SQLite client (Python's sqlite3 module) reads it.
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('PRAGMA integrity_check').fetchone()[0]); print([r[0] for r in c.execute('SELECT body FROM notes ORDER BY id')])")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ok\n['first', 'second']\n"
    );

    let imported = server
        .client
        .put(server.actor("copy", "/import"))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 204);
    let (_, body) = server
        .sql("copy", json!({"sql": "SELECT count(*) FROM notes"}))
        .await;
    assert_eq!(body["results"][0]["rows"][0][0], 2);
    assert_eq!(server.counter("copy", "n").await, 41);
    assert_eq!(
        server
            .client
            .get(server.actor("copy", "/kv/k"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "v"
    );
    assert_eq!(
        server.add("copy", "n", 1).await,
        42,
        "the imported actor takes writes"
    );
    assert_eq!(
        server.counter("source", "n").await,
        41,
        "the source is untouched"
    );
    let info: Value = server
        .client
        .get(server.actor("copy", ""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["id"], "copy");

    // A plain (non-roost) SQLite file imports too.
    let plain = server.dir.path().join("plain.db");
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE t (x)'); c.execute('INSERT INTO t VALUES (7)'); c.commit()")
        .arg(&plain)
        .status()
        .unwrap();
    assert!(made.success());
    let imported = server
        .client
        .put(server.actor("plain", "/import"))
        .body(std::fs::read(&plain).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 204);
    let (_, body) = server.sql("plain", json!({"sql": "SELECT x FROM t"})).await;
    assert_eq!(body["results"][0]["rows"][0][0], 7);
    assert_eq!(server.add("plain", "n", 1).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_oversized_imports_are_rejected_and_old_data_stays() {
    let server = TestServer::with(|c| c.limits.max_actor_bytes = 256 * 1024, None).await;
    server.add("keep", "n", 5).await;
    let good = server
        .client
        .get(server.actor("keep", "/export"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();

    let mut corrupt = good.clone();
    let half = corrupt.len() / 2;
    for b in &mut corrupt[half..] {
        *b = 0xA5;
    }
    let mut truncated_header = good.clone();
    truncated_header.truncate(100);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            b"definitely not a database".to_vec(),
            400,
            "invalid-request",
        ),
        (Vec::new(), 400, "invalid-request"),
        (corrupt, 400, "invalid-request"),
        (truncated_header, 400, "invalid-request"),
        (vec![0u8; 300 * 1024], 413, "payload-too-large"),
    ];
    for (body, status, expected) in cases {
        let response = server
            .client
            .put(server.actor("keep", "/import"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "expected {expected}");
        assert_eq!(code(&response.json().await.unwrap()), expected);
        assert_eq!(
            server.counter("keep", "n").await,
            5,
            "a bad upload changes nothing"
        );
    }
    let leftovers = std::fs::read_dir(server.data_dir().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "rejected uploads leave no files");
    assert_eq!(
        server
            .client
            .get(server.actor("ghost", "/export"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

fn token(secret: &str, actors: &[&str], perm: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"actors": actors, "perm": perm, "exp": now + exp_offset});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_reach_only_their_actors_and_read_only_ones_cannot_write() {
    let secret = "jwt-secret";
    let server = TestServer::with_auth(|_| {}, Some("admin"), Some(secret)).await;
    let c = &server.client;
    let rooms_rw = token(secret, &["room-*"], "rw", 600);
    let rooms_r = token(secret, &["room-*"], "r", 600);

    let ok = c
        .post(server.actor("room-1", "/counters/n"))
        .bearer_auth(&rooms_rw)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let outside = c
        .get(server.actor("user-1", "/counters/n"))
        .bearer_auth(&rooms_rw)
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 403);
    assert_eq!(code(&outside.json().await.unwrap()), "forbidden");

    let read = c
        .get(server.actor("room-1", "/counters/n"))
        .bearer_auth(&rooms_r)
        .send()
        .await
        .unwrap();
    assert_eq!(read.json::<Value>().await.unwrap()["value"], 1);
    for write in [
        c.post(server.actor("room-1", "/counters/n")),
        c.put(server.actor("room-1", "/kv/k")).body("x"),
        c.delete(server.actor("room-1", "")),
        c.post(server.actor("room-1", "/sql"))
            .json(&json!({"sql": "SELECT 1"})),
    ] {
        let denied = write.bearer_auth(&rooms_r).send().await.unwrap();
        assert_eq!(denied.status(), 403);
    }
    let list = c
        .get(format!("{}/v1/actors", server.url))
        .bearer_auth(&rooms_rw)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 403, "listing every actor needs full access");
    let admin = c
        .get(format!("{}/v1/actors", server.url))
        .bearer_auth("admin")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);

    for bad in [
        token(secret, &["room-*"], "rw", -120),
        token("other-secret", &["room-*"], "rw", 600),
        "not.a.jwt".to_owned(),
    ] {
        let denied = c
            .get(server.actor("room-1", "/counters/n"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), 401);
        assert_eq!(code(&denied.json().await.unwrap()), "unauthorized");
    }
    assert_eq!(
        server.counter_with_token("room-1", "n", "admin").await,
        1,
        "nothing was written by denied requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated() {
    let server = TestServer::start().await;
    let given = server
        .client
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "abc-123");
    let generated = server
        .client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(generated.headers()["x-request-id"].len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_request_timeout_gets_408_and_the_server_keeps_serving() {
    let limits = roost::http::HttpLimits {
        request_timeout: std::time::Duration::from_millis(300),
        ..roost::http::HttpLimits::default()
    };
    let server =
        TestServer::with_limits(|c| c.limits.query_timeout_ms = 1500, None, None, limits).await;
    server.add("slow", "n", 1).await;
    let started = std::time::Instant::now();
    let (status, body) = server
        .sql("slow", json!({"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"}))
        .await;
    assert_eq!((status, code(&body)), (408, "request-timeout"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_millis(1200));
    // The actor still runs the abandoned query until its own limit stops it.
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(
        server.add("slow", "n", 1).await,
        2,
        "then it goes on serving"
    );
}

#[test]
fn json_access_logs_carry_request_id_actor_status_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roost"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut banner,
    )
    .unwrap();
    let url = banner
        .trim()
        .strip_prefix("roost: listening on ")
        .unwrap()
        .to_owned();
    let status = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-H",
            "x-request-id: trace-me",
        ])
        .arg(format!("{url}/v1/actors/room%2F1/counters/n"))
        .status()
        .unwrap();
    assert!(status.success());
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    let access: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["target"] == "roost::access")
        .unwrap_or_else(|| panic!("no access log line in {logs}"));
    let fields = &access["fields"];
    assert_eq!(fields["request_id"], "trace-me");
    assert_eq!(fields["actor"], "room/1");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["route"], "/v1/actors/{id}/counters/{name}");
    assert!(fields["latency_ms"].as_f64().is_some());
}

/// The shutdown timeout bounds the drain after SIGTERM; it is no lifetime:
/// a server keeps serving long past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outlives_its_shutdown_timeout_and_drains_within_it_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut process = crate::harness::Process::start(dir.path(), &["--shutdown-timeout-ms", "500"]);
    let add = |n: i64| {
        client
            .post(process.actor("up", "/counters/n"))
            .json(&json!({ "by": n }))
            .send()
    };
    assert_eq!(add(1).await.unwrap().status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let later = add(1).await.expect("still serving three timeouts later");
    assert_eq!(later.json::<Value>().await.unwrap()["value"], 2);
    let asked = std::time::Instant::now();
    assert!(process.terminate().success());
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "stopped {:?} after SIGTERM",
        asked.elapsed()
    );
}
