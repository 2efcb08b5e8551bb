//! Lean load-generator clients: each client task owns one TCP connection,
//! writes a request it encoded before the run and parses the answer in
//! place, with no connection task, pool or client library in between.
//!
//! The counter and rate-limit suites drive all of their network rows
//! (HTTP and Redis) this way, as `wrk` or `redis-benchmark` would: a
//! client library's own cost per request (hyper's connection task, the
//! redis crate's multiplexer) is paid by the load generator on the same
//! two cores, so with it the ratios compared client libraries as much as
//! servers.

use anyhow::Context as _;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::load::{Answer, Caller};

/// Headers a response may carry before the client gives up on it.
const MAX_HEADERS: usize = 32;

/// One HTTP/1.1 client: request `k` of task `i` is `requests[(i + k) % len]`,
/// each a complete request (head and body) over a keep-alive connection.
pub(super) struct RawHttp {
    address: Arc<str>,
    requests: Arc<[Vec<u8>]>,
    task: usize,
    /// Whether a 429 is an answer (a rate-limit decision) or a failure.
    denial_answers: bool,
    /// Opened on first use, and again after a failure.
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl RawHttp {
    /// `clients` tasks posting `body` as JSON to each of `paths` on the
    /// server at `address` (`host:port`).
    fn many(
        address: &str,
        paths: &[String],
        body: &[u8],
        clients: usize,
        denial_answers: bool,
    ) -> Vec<RawHttp> {
        let requests: Arc<[Vec<u8>]> = paths
            .iter()
            .map(|path| {
                let mut request = format!(
                    "POST {path} HTTP/1.1\r\nhost: {address}\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(body);
                request
            })
            .collect();
        let address: Arc<str> = address.into();
        (0..clients)
            .map(|task| RawHttp {
                address: address.clone(),
                requests: requests.clone(),
                task,
                denial_answers,
                stream: None,
                buffer: Vec::with_capacity(4096),
            })
            .collect()
    }

    /// `clients` tasks posting `body` to each of `urls` (`http://host:port/path`,
    /// all of one server).
    pub(super) fn for_urls(
        urls: &[String],
        body: &[u8],
        clients: usize,
        denial_answers: bool,
    ) -> anyhow::Result<Vec<RawHttp>> {
        anyhow::ensure!(!urls.is_empty(), "no target URLs");
        let mut address = None;
        let mut paths = Vec::with_capacity(urls.len());
        for url in urls {
            let uri: hyper::Uri = url.parse().with_context(|| format!("target {url}"))?;
            anyhow::ensure!(
                uri.scheme_str() == Some("http"),
                "target {url} is not http://"
            );
            let host = uri
                .authority()
                .with_context(|| format!("target {url} has no host"))?
                .as_str();
            anyhow::ensure!(
                *address.get_or_insert_with(|| host.to_owned()) == host,
                "targets name more than one server"
            );
            paths.push(uri.path_and_query().map_or("/", |p| p.as_str()).to_owned());
        }
        let address = address.unwrap_or_default();
        Ok(RawHttp::many(
            &address,
            &paths,
            body,
            clients,
            denial_answers,
        ))
    }

    async fn exchange(&mut self, request: usize) -> Result<Answer, String> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => connect(&self.address).await?,
        };
        stream
            .write_all(&self.requests[request])
            .await
            .map_err(|err| format!("sending: {err}"))?;
        self.buffer.clear();
        let (status, keep_alive) = loop {
            if let Some(head) = parse_response(&self.buffer)? {
                if self.buffer.len() >= head.length {
                    if self.buffer.len() > head.length {
                        return Err("bytes after the response".into());
                    }
                    break (head.status, head.keep_alive);
                }
            }
            read_more(&mut stream, &mut self.buffer).await?;
        };
        if keep_alive {
            self.stream = Some(stream);
        }
        match status {
            200..=299 => Ok(Answer::Done),
            429 if self.denial_answers => Ok(Answer::Denied),
            _ => Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&self.buffer)
            )),
        }
    }
}

impl Caller for RawHttp {
    async fn call(&mut self, k: usize) -> Result<Answer, String> {
        let request = (self.task + k) % self.requests.len();
        self.exchange(request).await
    }
}

/// What the head of a response says about it.
#[derive(Debug, PartialEq, Eq)]
struct ResponseHead {
    status: u16,
    /// Head and body together, in bytes.
    length: usize,
    keep_alive: bool,
}

/// The head of the response in `bytes`, once all of it has arrived.
fn parse_response(bytes: &[u8]) -> Result<Option<ResponseHead>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_length = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(format!("malformed response: {err}")),
    };
    let mut body_length = None;
    let mut keep_alive = true;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok();
            body_length = value.and_then(|v| v.trim().parse::<usize>().ok());
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a chunked response (the client reads content-length only)".into());
        } else if header.name.eq_ignore_ascii_case("connection") {
            keep_alive = !header.value.eq_ignore_ascii_case(b"close");
        }
    }
    let body_length = body_length.ok_or("a response without content-length")?;
    Ok(Some(ResponseHead {
        status: response.code.unwrap_or(0),
        length: head_length + body_length,
        keep_alive,
    }))
}

/// One Redis client: request `k` of task `i` sends `pipelines[(i + k) % len]`
/// (commands already encoded as RESP) and reads one integer reply per
/// command; `judge` turns the first reply into an answer.
pub(super) struct RawRedis {
    address: Arc<str>,
    /// RESP commands sent on connect (`AUTH`, `SELECT`), each answered `+OK`.
    hello: Arc<[Vec<u8>]>,
    pipelines: Arc<[Vec<u8>]>,
    replies: usize,
    judge: fn(i64) -> Answer,
    task: usize,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl RawRedis {
    /// `clients` tasks, each sending `pipelines` in turn; every pipeline
    /// holds `replies` commands answered with integers.
    pub(super) fn many(
        redis: &super::redis::Redis,
        pipelines: Vec<Vec<u8>>,
        replies: usize,
        judge: fn(i64) -> Answer,
        clients: usize,
    ) -> anyhow::Result<Vec<RawRedis>> {
        let (address, hello) = redis.raw_endpoint()?;
        let address: Arc<str> = address.into();
        let hello: Arc<[Vec<u8>]> = hello.into();
        let pipelines: Arc<[Vec<u8>]> = pipelines.into();
        Ok((0..clients)
            .map(|task| RawRedis {
                address: address.clone(),
                hello: hello.clone(),
                pipelines: pipelines.clone(),
                replies,
                judge,
                task,
                stream: None,
                buffer: Vec::with_capacity(256),
            })
            .collect())
    }

    async fn open(&mut self) -> Result<TcpStream, String> {
        let mut stream = connect(&self.address).await?;
        for command in self.hello.iter() {
            stream
                .write_all(command)
                .await
                .map_err(|err| format!("sending: {err}"))?;
            self.buffer.clear();
            while !self.buffer.ends_with(b"\r\n") {
                read_more(&mut stream, &mut self.buffer).await?;
            }
            if !self.buffer.starts_with(b"+OK") {
                return Err(format!(
                    "Redis refused the connection setup: {}",
                    String::from_utf8_lossy(&self.buffer).trim_end()
                ));
            }
        }
        Ok(stream)
    }

    async fn exchange(&mut self, pipeline: usize) -> Result<Answer, String> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.open().await?,
        };
        stream
            .write_all(&self.pipelines[pipeline])
            .await
            .map_err(|err| format!("sending: {err}"))?;
        self.buffer.clear();
        let first = loop {
            if let Some(first) = integer_replies(&self.buffer, self.replies)? {
                break first;
            }
            read_more(&mut stream, &mut self.buffer).await?;
        };
        self.stream = Some(stream);
        Ok((self.judge)(first))
    }
}

impl Caller for RawRedis {
    async fn call(&mut self, k: usize) -> Result<Answer, String> {
        let pipeline = (self.task + k) % self.pipelines.len();
        self.exchange(pipeline).await
    }
}

/// A Redis command in RESP, ready to send.
pub(super) fn resp_command(parts: &[&[u8]]) -> Vec<u8> {
    let mut encoded = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        encoded.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        encoded.extend_from_slice(part);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded
}

/// The first of `count` integer replies in `bytes`, once all have arrived;
/// an error reply (or any other kind) fails the request.
fn integer_replies(bytes: &[u8], count: usize) -> Result<Option<i64>, String> {
    let mut first = None;
    let mut rest = bytes;
    for _ in 0..count {
        let Some(end) = rest.windows(2).position(|pair| pair == b"\r\n") else {
            return Ok(None);
        };
        let line = &rest[..end];
        let value = match line.split_first() {
            Some((b':', digits)) => std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<i64>().ok())
                .ok_or_else(|| format!("a malformed integer reply {line:?}"))?,
            _ => return Err(format!("Redis answered {}", String::from_utf8_lossy(line))),
        };
        first.get_or_insert(value);
        rest = &rest[end + 2..];
    }
    if !rest.is_empty() {
        return Err("bytes after the replies".into());
    }
    Ok(first)
}

async fn connect(address: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|err| format!("connecting to {address}: {err}"))?;
    stream.set_nodelay(true).map_err(|err| err.to_string())?;
    Ok(stream)
}

/// Appends what the peer sent next; its closing the connection is an error.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    match stream.read_buf(buffer).await {
        Ok(0) => Err("the server closed the connection".into()),
        Ok(_) => Ok(()),
        Err(err) => Err(format!("reading: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_once_its_body_has_arrived() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(&response[..10]), Ok(None));
        assert_eq!(
            parse_response(response),
            Ok(Some(ResponseHead {
                status: 200,
                length: response.len(),
                keep_alive: true
            }))
        );
        let closing = b"HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let head = parse_response(closing).unwrap().unwrap();
        assert_eq!((head.status, head.keep_alive), (429, false));
    }

    #[test]
    fn responses_the_client_cannot_frame_are_errors() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_response(chunked).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"NOT HTTP\r\n\r\n").is_err());
    }

    #[test]
    fn integer_replies_wait_for_every_reply_and_reject_errors() {
        assert_eq!(integer_replies(b":7\r\n", 2), Ok(None));
        assert_eq!(integer_replies(b":7\r\n:1\r\n", 2), Ok(Some(7)));
        assert!(integer_replies(b"-ERR wrong type\r\n:1\r\n", 2).is_err());
        assert!(integer_replies(b":7\r\n:1\r\n:2\r\n", 2).is_err());
    }

    #[test]
    fn commands_are_encoded_as_resp_arrays() {
        assert_eq!(
            resp_command(&[b"INCR", b"k"]),
            b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n".to_vec()
        );
    }
}
