//! HTTP abuse (issue: fault suite): slow headers, silent connections, slow
//! bodies, header floods and 10,000 idle connections are each cut off by a
//! limit or a timeout, while a well-behaved client keeps being served.

use crate::harness::{Process, TestServer};
use roost::http::HttpLimits;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn strict() -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(800),
        ..HttpLimits::default()
    }
}

/// Waits until the server closes the connection; returns what it sent.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let seen = bytes_until_closed(stream, within).await?;
    Some(String::from_utf8_lossy(&seen).into_owned())
}

/// [`until_closed`], as bytes.
async fn bytes_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()?;
    Some(seen)
}

/// A raw connection to `server` that has sent `bytes`.
async fn sent(server: &TestServer, bytes: &[u8]) -> TcpStream {
    let addr = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// A well-behaved client: `n` increments, all answered.
async fn behaves(server_url: &str, actor: &str, n: i64) {
    let client = reqwest::Client::new();
    for i in 1..=n {
        let response = client
            .post(format!("{server_url}/v1/actors/{actor}/counters/n"))
            .send()
            .await
            .expect("served");
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["value"], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off_while_others_are_served() {
    let server = TestServer::with_limits(|_| {}, None, None, strict()).await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    // Slowloris: a header line every 100 ms, never finishing the head.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"POST /v1/actors/x/counters/n HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let trickle = tokio::spawn(async move {
        for i in 0..40 {
            for stream in &mut slow {
                let _ = stream
                    .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    // Silent: connected, never a byte.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    let started = Instant::now();
    behaves(&server.url, "polite", 50).await;
    for stream in &mut silent {
        assert!(
            until_closed(stream, Duration::from_secs(3)).await.is_some(),
            "a silent connection stayed open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut slow = trickle.await.unwrap();
    for stream in &mut slow {
        assert!(
            until_closed(stream, Duration::from_secs(3)).await.is_some(),
            "a slowloris connection stayed open"
        );
    }
    // No request of theirs reached an actor.
    assert_eq!(server.counter("x", "n").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_and_changes_nothing() {
    let server = TestServer::with_limits(|_| {}, None, None, strict()).await;
    let mut stream = sent(&server, b"POST /v1/actors/drip/counters/n HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"by\": 1").await;
    let writer = async {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), writer).await;
    let answer = until_closed(&mut stream, Duration::from_secs(3))
        .await
        .unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    assert_eq!(server.counter("drip", "n").await, 0);
    behaves(&server.url, "drip", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_get_431_and_the_server_carries_on() {
    let server = TestServer::with_limits(|_| {}, None, None, strict()).await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let many: String = (0..1000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let huge = format!("x-big: {}\r\n", "a".repeat(200 << 10));
    for flood in [many, huge] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!("GET /healthz HTTP/1.1\r\nHost: a\r\n{flood}\r\n");
        let _ = stream.write_all(head.as_bytes()).await;
        let answer = until_closed(&mut stream, Duration::from_secs(3))
            .await
            .unwrap_or_default();
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    behaves(&server.url, "after-flood", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_starve_a_client() {
    // Client sockets live here, server sockets in the child process.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let wanted = 10_000usize;
    let count = wanted.min(limit.saturating_sub(500) as usize);
    if count < wanted {
        eprintln!("open-file limit {limit}: opening {count} connections instead of {wanted}");
    }
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start(dir.path(), &["--header-timeout-ms", "3000"]);
    let addr = process.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::with_capacity(count);
    let connecting = std::time::Instant::now();
    for chunk in 0..count.div_ceil(500) {
        let batch = (chunk * 500..((chunk + 1) * 500).min(count))
            .map(|_| TcpStream::connect(addr.clone()))
            .collect::<Vec<_>>();
        for stream in futures::future::join_all(batch).await {
            idle.push(stream.expect("connect"));
        }
    }
    assert_eq!(idle.len(), count);
    eprintln!("{count} connections in {:?}", connecting.elapsed());
    // All of them are open at the server, and a client is still served.
    let metrics = reqwest::get(format!("{}/metrics", process.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open = metrics
        .lines()
        .find_map(|l| l.strip_prefix("roost_http_connections "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        open >= count as f64 * 0.95,
        "only {open} of {count} connections open"
    );
    behaves(&process.url, "busy", 100).await;
    // The header timeout then closes every idle one.
    let mut closed = 0;
    for stream in &mut idle[..200] {
        closed += usize::from(until_closed(stream, Duration::from_secs(8)).await.is_some());
    }
    assert_eq!(closed, 200);
    drop(idle);
    behaves(&process.url, "after", 3).await;
}

/// Sends one counter increment on `stream` and reads its whole answer.
async fn increment_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"POST /v1/actors/kept/counters/n HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"by\":1}")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"value\"") {
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .expect("an answer within 2 s")
            .unwrap();
        assert!(n > 0, "closed while in use");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_keep_alive_connection_stays_open_and_an_idle_one_is_closed() {
    let server = TestServer::with_limits(|_| {}, None, None, strict()).await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    // Three times the header timeout in all, never idle for as long as it.
    let started = Instant::now();
    let mut idle = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(increment_on(&mut stream).await.starts_with("HTTP/1.1 200"));
        idle = Instant::now();
    }
    assert!(until_closed(&mut stream, Duration::from_secs(3))
        .await
        .is_some());
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500),
        "closed after {waited:?} idle; the header timeout is 500 ms"
    );
    assert!(server.counter("kept", "n").await >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_outlives_the_header_timeout() {
    let server = TestServer::with_limits(|_| {}, None, None, strict()).await;
    let mut stream = sent(
        &server,
        b"GET /v1/actors/feed/events HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    // Quiet for three header timeouts: a response is still being sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = reqwest::Client::new()
        .post(server.actor("feed", "/counters/n"))
        .json(&serde_json::json!({"by": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let event = async {
        while !String::from_utf8_lossy(&seen).contains("\"counter\"") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream was closed");
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(3), event)
        .await
        .expect("the change event arrives on the open stream");
}

/// HTTP/2 frames (type, payload) in `bytes`, in order.
fn h2_frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        if rest.len() < 9 + length {
            break;
        }
        frames.push((rest[3], rest[9..9 + length].to_vec()));
        rest = &rest[9 + length..];
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_a_goaway_before_it_is_closed() {
    let server = TestServer::with_limits(|_| {}, None, None, strict()).await;
    // HTTP/2 with prior knowledge: the preface, then empty SETTINGS.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let mut stream = sent(&server, preface).await;
    let started = Instant::now();
    let seen = bytes_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the idle HTTP/2 connection stayed open");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed after {:?}; the header timeout is 500 ms",
        started.elapsed()
    );
    let frames = h2_frames(&seen);
    let goaway = frames.iter().find(|(kind, _)| *kind == 0x7);
    let Some((_, payload)) = goaway else {
        panic!("no GOAWAY before the close; frames: {frames:?}");
    };
    // Error code 0, NO_ERROR: a graceful close (hyper's first GOAWAY names
    // the largest stream id; a client that answered its PING would get a
    // second one naming the last stream served).
    assert_eq!(payload[4..8], [0u8; 4], "GOAWAY payload {payload:?}");
}
