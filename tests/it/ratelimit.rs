//! The rate limiter over HTTP (SPEC §6): exact limits under concurrency,
//! truthful `Retry-After`, named policies and bad input, state that
//! survives restarts (clean and `kill -9`), and one global limit across a
//! two-region cluster.

use crate::harness::{code, seg, DevCluster, Process, TestServer};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// Sends one decision request; returns (status, headers, body).
async fn limit(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client
        .post(format!("{base}/v1/ratelimit/{}", seg(key)))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Counts allowed and denied answers among `total` concurrent requests.
async fn burst(
    base: &str,
    key: &str,
    policy: Value,
    total: usize,
    clients: usize,
) -> (usize, usize) {
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, base, key, policy) = (
            client.clone(),
            base.to_owned(),
            key.to_owned(),
            policy.clone(),
        );
        let share = total / clients + usize::from(c < total % clients);
        tasks.spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..share {
                let (status, _, body) = limit(&client, &base, &key, policy.clone()).await;
                answers.push((status, body));
            }
            answers
        });
    }
    let (mut allowed, mut denied) = (0, 0);
    while let Some(answers) = tasks.join_next().await {
        for (status, body) in answers.unwrap() {
            match status {
                200 => {
                    assert_eq!(body["allowed"], true);
                    allowed += 1;
                }
                429 => {
                    assert_eq!(code(&body), "rate-limited");
                    assert_eq!(body["allowed"], false);
                    denied += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
    }
    (allowed, denied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_limit_is_allowed_under_concurrency() {
    let server = TestServer::start().await;
    // A long window: refills (one per 6 s) cannot land inside the burst.
    let policy = json!({"limit": 100, "window_ms": 600_000});
    assert_eq!(
        burst(&server.url, "10.0.0.1", policy.clone(), 400, 64).await,
        (100, 300)
    );
    // Another key has its own allowance; costs are weighed.
    let weighted = json!({"limit": 100, "window_ms": 600_000, "cost": 7});
    assert_eq!(
        burst(&server.url, "10.0.0.2", weighted, 40, 16).await,
        (14, 26)
    );
    // A zero cost only looks.
    let (status, headers, body) = limit(
        &server.client,
        &server.url,
        "10.0.0.2",
        json!({"limit": 100, "window_ms": 600_000, "cost": 0}),
    )
    .await;
    assert_eq!((status, body["remaining"].as_u64()), (200, Some(2)));
    assert_eq!(headers["ratelimit-policy"], "\"default\";q=100;w=600");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_says_when_to_retry_and_that_is_true() {
    let server = TestServer::start().await;
    let policy = json!({"limit": 2, "window_ms": 2000});
    for remaining in [1, 0] {
        let (status, headers, body) =
            limit(&server.client, &server.url, "user-7", policy.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["remaining"], remaining);
        assert_eq!(
            headers["ratelimit"].to_str().unwrap().split(';').nth(1),
            Some(format!("r={remaining}").as_str())
        );
    }
    let (status, headers, body) =
        limit(&server.client, &server.url, "user-7", policy.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["retry-after"], "1");
    let wait = body["retry_after_ms"].as_u64().unwrap();
    assert!((900..=1000).contains(&wait), "retry_after_ms {wait}");
    assert_eq!(headers["ratelimit-policy"], "\"default\";q=2;w=2");
    // Just before the promised time: still denied; just after: allowed.
    tokio::time::sleep(Duration::from_millis(wait.saturating_sub(150))).await;
    assert_eq!(
        limit(&server.client, &server.url, "user-7", policy.clone())
            .await
            .0,
        429
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        limit(&server.client, &server.url, "user-7", policy.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        limit(&server.client, &server.url, "user-7", policy).await.0,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_policies_and_bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start(dir.path(), &["--ratelimit-policy", "api=2/1m,login=1/15m"]);
    let client = reqwest::Client::new();
    let base = process.url.as_str();
    for _ in 0..2 {
        let (status, headers, _) = limit(&client, base, "k", json!({"policy": "api"})).await;
        assert_eq!(status, 200);
        assert_eq!(headers["ratelimit-policy"], "\"api\";q=2;w=60");
    }
    assert_eq!(
        limit(&client, base, "k", json!({"policy": "api"})).await.0,
        429
    );
    assert_eq!(
        limit(&client, base, "k", json!({"policy": "login"}))
            .await
            .0,
        429,
        "one state per key"
    );

    let long_key = "k".repeat(3000);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("k2", json!({}), 400, "invalid-request"),
        ("k2", json!({"policy": "nope"}), 400, "invalid-request"),
        (
            "k2",
            json!({"policy": "api", "limit": 3, "window_ms": 1}),
            400,
            "invalid-request",
        ),
        ("k2", json!({"limit": 3}), 400, "invalid-request"),
        (
            "k2",
            json!({"limit": 0, "window_ms": 1000}),
            400,
            "invalid-request",
        ),
        (
            "k2",
            json!({"limit": 1, "window_ms": 0}),
            400,
            "invalid-request",
        ),
        (
            "k2",
            json!({"limit": 1, "window_ms": 1u64 << 60}),
            400,
            "invalid-request",
        ),
        (
            "k2",
            json!({"limit": 2, "window_ms": 1000, "cost": 3}),
            400,
            "invalid-request",
        ),
        (
            "k2",
            json!({"limit": 2, "window_ms": 1000, "cost": -1}),
            400,
            "invalid-request",
        ),
        (
            "k2",
            json!({"limit": 2, "window_ms": 1000, "mode": "sideways"}),
            400,
            "invalid-request",
        ),
        (
            &long_key,
            json!({"limit": 2, "window_ms": 1000}),
            413,
            "payload-too-large",
        ),
    ];
    for (key, body, status, expected) in cases {
        let (got, _, problem) = limit(&client, base, key, body.clone()).await;
        assert_eq!(
            (got, code(&problem)),
            (status, expected),
            "{body}: {problem}"
        );
    }
    let malformed = client
        .post(format!("{base}/v1/ratelimit/k2"))
        .header("content-type", "application/json")
        .body("{\"limit\": 2,")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    // Nothing above spent k2's allowance or harmed the server.
    let (status, _, body) = limit(
        &client,
        base,
        "k2",
        json!({"limit": 2, "window_ms": 60_000}),
    )
    .await;
    assert_eq!((status, body["remaining"].as_u64()), (200, Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_clients_allowance() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let policy = json!({"limit": 3, "window_ms": 600_000});
    let mut process = Process::start(dir.path(), &["--flush-interval-ms", "100"]);
    for key in ["a", "b"] {
        for _ in 0..3 {
            assert_eq!(
                limit(&client, &process.url, key, policy.clone()).await.0,
                200
            );
        }
    }
    assert!(process.terminate().success());

    // A clean stop flushed the state: both keys are still spent.
    let mut process = Process::start(dir.path(), &["--flush-interval-ms", "100"]);
    for key in ["a", "b"] {
        let (status, _, body) = limit(&client, &process.url, key, policy.clone()).await;
        assert_eq!(status, 429, "{key}: {body}");
    }
    assert_eq!(
        limit(&client, &process.url, "c", policy.clone()).await.0,
        200
    );
    // kill -9 after the buffered window has passed loses nothing either.
    tokio::time::sleep(Duration::from_millis(600)).await;
    process.kill9();
    let process = Process::start(dir.path(), &[]);
    let (status, _, body) = limit(&client, &process.url, "c", policy.clone()).await;
    assert_eq!(
        (status, body["remaining"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (status, _, _) = limit(&client, &process.url, "a", policy).await;
    assert_eq!(status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_limit_holds_across_a_two_region_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(dir.path(), &["--regions", "fra,iad", "--per-region", "2"]);
    let client = reqwest::Client::new();
    let policy = json!({"limit": 20, "window_ms": 600_000});
    let mut allowed = 0;
    let mut deciders = BTreeSet::new();
    for i in 0..60 {
        let region = ["fra", "iad"][i % 2];
        let response = client
            .post(format!("{}/v1/ratelimit/203.0.113.9", cluster.proxy))
            .header("fly-prefer-region", region)
            .json(&policy)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        deciders.insert(
            response.headers()["roost-machine"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        match status {
            200 => allowed += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(allowed, 20, "the limit is one worldwide limit");
    assert_eq!(deciders.len(), 1, "one owner decides: {deciders:?}");

    // A machine that does not own the key's limiter replays, deciding nothing.
    let owner = deciders.into_iter().next().unwrap();
    let other = cluster.machines.iter().find(|m| m.0 != owner).unwrap();
    let (status, headers, body) = limit(&client, &other.2, "203.0.113.9", policy.clone()).await;
    assert_eq!((status, code(&body)), (409, "wrong-owner"));
    assert_eq!(headers["fly-replay"], format!("instance={owner}").as_str());
    let owner_url = &cluster.machines.iter().find(|m| m.0 == owner).unwrap().2;
    let (status, _, body) = limit(
        &client,
        owner_url,
        "203.0.113.9",
        json!({"limit": 20, "window_ms": 600_000, "cost": 0}),
    )
    .await;
    assert_eq!((status, body["remaining"].as_u64()), (200, Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_cannot_rate_limit_and_full_tokens_can() {
    let server = TestServer::with_auth(|_| {}, Some("full"), Some("secret")).await;
    let url = format!("{}/v1/ratelimit/{}", server.url, seg("k"));
    let body = json!({"limit": 1, "window_ms": 1000});
    let anonymous = server.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let claims = json!({"actors": ["*"], "perm": "rw", "exp": 4_000_000_000u64});
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let scoped = server
        .client
        .post(&url)
        .bearer_auth(jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(scoped.status(), 403);
    let full = server
        .client
        .post(&url)
        .bearer_auth("full")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_decides_in_region_from_a_share_and_syncs_usage_to_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(dir.path(), &["--regions", "fra,iad", "--per-region", "2"]);
    let client = reqwest::Client::new();
    let local = json!({"limit": 20, "window_ms": 600_000, "mode": "local"});
    for region in ["fra", "iad"] {
        let mut allowed = 0;
        let mut deciders = BTreeSet::new();
        for _ in 0..25 {
            let response = client
                .post(format!("{}/v1/ratelimit/198.51.100.7", cluster.proxy))
                .header("fly-prefer-region", region)
                .json(&local)
                .send()
                .await
                .unwrap();
            deciders.insert(
                response.headers()["roost-region"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
            if response.status() == 200 {
                assert_eq!(
                    response.headers()["ratelimit-policy"],
                    "\"default\";q=10;w=600"
                );
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10, "{region} decides from its half of the limit");
        assert_eq!(
            deciders,
            BTreeSet::from([region.to_owned()]),
            "decided in the receiving region"
        );
    }
    // Within a sync interval the global owner has counted all 20.
    let global = json!({"limit": 20, "window_ms": 600_000, "cost": 0});
    let mut remaining = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let response = client
            .post(format!("{}/v1/ratelimit/198.51.100.7", cluster.proxy))
            .json(&global)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        remaining = body["remaining"].as_u64();
        if remaining == Some(0) {
            break;
        }
    }
    assert_eq!(remaining, Some(0), "local usage reached the global owner");
    let spent = client
        .post(format!("{}/v1/ratelimit/198.51.100.7", cluster.proxy))
        .json(&json!({"limit": 20, "window_ms": 600_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 429);
}
