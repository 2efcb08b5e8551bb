//! Real-time actors (SPEC §8) with real WebSocket and SSE clients: one
//! message order for every socket, change events on sockets and streams,
//! gap-free resume, slow consumers dropped, limits, shutdown close frames,
//! and upgrades that reach a non-owner replayed.

use crate::harness::{code, DevCluster, Process, TestServer};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, actor: &str) -> Socket {
    let url = format!("{}/v1/actors/{actor}/ws", base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade")
        .0
}

/// The next text message, skipping pings.
async fn next_text(socket: &mut Socket) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("valid frame");
        match message {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads SSE events (id, event, data) from a streaming response.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl SseReader {
    async fn open(base: &str, actor: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(format!("{base}/v1/actors/{actor}/events"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                    }
                }
                if event.data.is_empty() && event.id.is_none() {
                    continue; // keep-alive comment
                }
                return event;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("stream open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_see_the_same_message_order() {
    let server = TestServer::start().await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(connect(&server.url, "lobby").await);
    }
    let per_client = 50;
    let mut readers = Vec::new();
    for (c, socket) in sockets.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            let (mut sink, mut stream) = socket.split();
            let writer = tokio::spawn(async move {
                for n in 0..per_client {
                    sink.send(Message::text(format!("c{c}-{n}"))).await.unwrap();
                }
                sink
            });
            let mut seen = Vec::new();
            while seen.len() < 3 * per_client {
                if let Message::Text(text) = stream.next().await.unwrap().unwrap() {
                    seen.push(text.to_string());
                }
            }
            let _sink = writer.await.unwrap();
            seen
        }));
    }
    let mut orders = Vec::new();
    for reader in readers {
        orders.push(reader.await.unwrap());
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
    // Each sender's messages keep their sending order.
    for c in 0..3 {
        let mine: Vec<_> = orders[0]
            .iter()
            .filter(|m| m.starts_with(&format!("c{c}-")))
            .cloned()
            .collect();
        let sent: Vec<_> = (0..per_client).map(|n| format!("c{c}-{n}")).collect();
        assert_eq!(mine, sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_sockets_and_event_streams_with_consecutive_seqs() {
    let server = TestServer::start().await;
    let mut socket = connect(&server.url, "doc").await;
    let mut sse = SseReader::open(&server.url, "doc", None).await;
    let put = server
        .client
        .put(server.actor("doc", "/kv/title"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(server.add("doc", "edits", 5).await, 5);
    let deleted = server
        .client
        .delete(server.actor("doc", "/kv/title"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let mut from_socket = Vec::new();
    for _ in 0..3 {
        from_socket.push(serde_json::from_str::<Value>(&next_text(&mut socket).await).unwrap());
    }
    assert_eq!(from_socket[0]["type"], "kv.put");
    assert_eq!(from_socket[0]["key"], "title");
    assert!(from_socket[0]["version"].as_i64().unwrap() > 0);
    assert_eq!(from_socket[1]["type"], "counter");
    assert_eq!(from_socket[1]["name"], "edits");
    assert_eq!(from_socket[1]["value"], 5);
    assert_eq!(from_socket[2]["type"], "kv.delete");
    let seq0 = from_socket[0]["seq"].as_u64().unwrap();
    for (i, event) in from_socket.iter().enumerate() {
        assert_eq!(event["seq"].as_u64().unwrap(), seq0 + i as u64);
    }
    for expected in &from_socket {
        let event = sse.next().await;
        assert_eq!(
            serde_json::from_str::<Value>(&event.data).unwrap(),
            *expected
        );
        assert_eq!(event.id, Some(expected["seq"].to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_without_gaps_and_says_when_it_cannot() {
    let server = TestServer::start().await;
    let mut sse = SseReader::open(&server.url, "feed", None).await;
    for _ in 0..3 {
        server.add("feed", "n", 1).await;
    }
    let mut last = None;
    for _ in 0..3 {
        last = sse.next().await.id;
    }
    drop(sse);
    // Changes while nobody listens are kept in the backlog.
    for _ in 0..5 {
        server.add("feed", "n", 1).await;
    }
    let last = last.unwrap();
    let mut resumed = SseReader::open(&server.url, "feed", Some(&last)).await;
    let last: u64 = last.parse().unwrap();
    for i in 1..=5u64 {
        let event = resumed.next().await;
        assert_eq!(event.id, Some((last + i).to_string()), "gap or duplicate");
        assert_eq!(
            serde_json::from_str::<Value>(&event.data).unwrap()["value"],
            3 + i
        );
    }
    // Live events follow the replay seamlessly.
    server.add("feed", "n", 1).await;
    assert_eq!(resumed.next().await.id, Some((last + 6).to_string()));

    // A position older than the backlog is reported, not silently skipped.
    let mut stale = SseReader::open(&server.url, "feed", Some("1")).await;
    let reset = stale.next().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    let detail: Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(detail["requested"], 1);
    let bad = server
        .client
        .get(server.actor("feed", "/events"))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_dropped_while_the_others_continue() {
    let server = TestServer::start().await;
    let mut slow = connect(&server.url, "arena").await;
    let received = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut readers = Vec::new();
    for r in 0..2 {
        let (received, mut socket) = (received.clone(), connect(&server.url, "arena").await);
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Binary(_) = message {
                    received[r].fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // The sender hears its own messages too, and must read them.
    let (mut sender, mut echoes) = connect(&server.url, "arena").await.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });
    let payload = vec![7u8; 32 << 10];
    let rounds = 60;
    let burst = 50;
    for round in 1..=rounds {
        for _ in 0..burst {
            sender.send(Message::binary(payload.clone())).await.unwrap();
        }
        // Keep pace with the fast readers (a test-side flow control), so
        // only the reader that never reads can fall behind.
        let target = round * burst;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while received.iter().any(|r| r.load(Ordering::SeqCst) < target) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fast readers stalled at round {round}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for r in received.iter() {
        assert_eq!(r.load(Ordering::SeqCst), rounds * burst);
    }
    // The slow one got a prefix, then a 1008 close (or, stalled, a drop).
    let mut got = 0;
    let ending = loop {
        match tokio::time::timeout(Duration::from_secs(15), slow.next())
            .await
            .expect("slow socket ends")
        {
            Some(Ok(Message::Binary(_))) => got += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(got < rounds * burst, "the slow reader was never dropped");
    if let Some(code) = ending {
        assert_eq!(code, CloseCode::Policy);
    }
    drop(sender);
    drain.abort();
    for reader in readers {
        reader.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_and_socket_count_are_bounded() {
    let server = TestServer::with_limits(|_| {}, None, None, Default::default()).await;
    let mut socket = connect(&server.url, "limits").await;
    socket
        .send(Message::binary(vec![0u8; 128 << 10]))
        .await
        .unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(close, Some(CloseCode::Size));

    let dir = tempfile::tempdir().unwrap();
    let process = Process::start(dir.path(), &["--ws-max-sockets-per-actor", "2"]);
    let _a = connect(&process.url, "full").await;
    let b = connect(&process.url, "full").await;
    let ws_url = format!(
        "{}/v1/actors/full/ws",
        process.url.replace("http://", "ws://")
    );
    let refused = tokio_tungstenite::connect_async(&ws_url).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
        panic!("not refused with an HTTP answer: {refused:?}");
    };
    assert_eq!(response.status(), 503);
    let body: Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(code(&body), "too-many-sockets");
    // A slot comes back when a socket leaves; other actors are unaffected.
    drop(b);
    let _other = connect(&process.url, "elsewhere").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _c = connect(&process.url, "full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::start(dir.path(), &[]);
    let mut socket = connect(&process.url, "bye").await;
    let mut sse = SseReader::open(&process.url, "bye", None).await;
    let terminate = tokio::task::spawn_blocking(move || process.terminate());
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close, Some(CloseCode::Away));
    assert!(terminate.await.unwrap().success());
    // The event stream ended too (the client reconnects elsewhere).
    let ended = tokio::time::timeout(Duration::from_secs(5), sse.response.chunk())
        .await
        .unwrap();
    assert!(matches!(ended, Ok(None) | Err(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_a_non_owner_is_replayed_not_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(dir.path(), &["--regions", "fra,iad", "--per-region", "2"]);
    let client = reqwest::Client::new();
    let owner = client
        .post(format!("{}/v1/actors/room%40iad/counters/n", cluster.proxy))
        .send()
        .await
        .unwrap()
        .headers()["roost-machine"]
        .to_str()
        .unwrap()
        .to_owned();
    for (id, _, url) in cluster.machines.iter().filter(|m| m.0 != owner) {
        let ws_url = format!(
            "{}/v1/actors/room%40iad/ws",
            url.replace("http://", "ws://")
        );
        let refused = tokio_tungstenite::connect_async(ws_url).await.unwrap_err();
        let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
            panic!("{id} did not refuse with an HTTP answer: {refused:?}");
        };
        assert_eq!(response.status(), 409, "{id}");
        assert_eq!(
            response.headers()["fly-replay"],
            format!("instance={owner}").as_str()
        );
    }
    let owner_url = &cluster.machines.iter().find(|m| m.0 == owner).unwrap().2;
    let mut socket = connect(owner_url, "room%40iad").await;
    client
        .post(format!("{owner_url}/v1/actors/room%40iad/counters/n"))
        .send()
        .await
        .unwrap();
    let event: Value = serde_json::from_str(&next_text(&mut socket).await).unwrap();
    assert_eq!(event["value"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_from_other_sites_cannot_join_a_room() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start(dir.path(), &["--allowed-origins", "https://app.example"]);
    let ws_url = format!(
        "{}/v1/actors/room/ws",
        process.url.replace("http://", "ws://")
    );
    let with_origin = |origin: &str| {
        let mut request = ws_url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        request
    };
    let refused = tokio_tungstenite::connect_async(with_origin("https://evil.example"))
        .await
        .unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
        panic!("not refused with an HTTP answer: {refused:?}");
    };
    assert_eq!(response.status(), 403);
    for allowed in ["https://app.example", "http://localhost:5173"] {
        assert!(
            tokio_tungstenite::connect_async(with_origin(allowed))
                .await
                .is_ok(),
            "{allowed}"
        );
    }
    let stream = reqwest::Client::new()
        .get(format!("{}/v1/actors/room/events", process.url))
        .header("origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 403);
    assert_eq!(code(&stream.json().await.unwrap()), "forbidden");
}
