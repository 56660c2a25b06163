//! Loopback ports and a blocking HTTP/1.0 client over `std::net`, the way a client of the
//! app sees it: one request per connection, read until the server closes it.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("its address")
        .port()
}

/// What a server answered: the status, the head (status line and headers) and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// The whole answer as it came: head, blank line, body.
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n\r\n{}", self.head, self.body)
    }
}

/// `METHOD path` with `body` over HTTP/1.0 on a new connection. Connecting gives up after
/// 2 s, a read that waits longer than `read_timeout` fails. Any status is an answer; the
/// error says what went wrong on the way.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    read_timeout: Duration,
) -> Result<Answer, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(read_timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {addr}{path}: no complete answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {addr}{path}: bad status line in {head:?}"))?;
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// `GET path`: the status and the body (reads wait up to 5 s).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    request(addr, "GET", path, "", Duration::from_secs(5)).map(|a| (a.status, a.body))
}

/// `POST path` with `body` (reads wait up to 5 s); the server must answer 2xx.
pub fn post_ok(addr: SocketAddr, path: &str, body: &str) {
    match request(addr, "POST", path, body, Duration::from_secs(5)) {
        Ok(a) if (200..300).contains(&a.status) => {}
        Ok(a) => panic!("POST {path}: {a}"),
        Err(e) => panic!("POST {path}: {e}"),
    }
}

/// `GET path` until it answers 2xx, retried for ten seconds (a container that just
/// started); the body, trimmed. Panics with the last failure after that.
pub fn get_now(addr: SocketAddr, path: &str) -> String {
    get_within(addr, path, Duration::from_secs(10))
}

fn get_within(addr: SocketAddr, path: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let failure = match http_get(addr, path) {
            Ok((200..=299, body)) => return body.trim().to_string(),
            Ok((status, body)) => format!("{status}: {}", body.trim()),
            Err(e) => e,
        };
        assert!(start.elapsed() <= limit, "GET {path}: {failure}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A server that answers one connection with `answer` and hands back the request.
    fn serve_once(answer: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            let mut reader = std::io::BufReader::new(conn);
            let mut request = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read");
                if let Some(n) = line.strip_prefix("Content-Length: ") {
                    length = n.trim().parse().expect("length");
                }
                request.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("body");
            request.push_str(&String::from_utf8_lossy(&body));
            reader
                .get_mut()
                .write_all(answer.as_bytes())
                .expect("answer");
            request
        });
        (addr, server)
    }

    #[test]
    fn a_request_sends_its_body_and_splits_the_answer() {
        let (addr, server) = serve_once("HTTP/1.0 201 Created\r\nX-A: b\r\n\r\nmade\n");
        let a = request(addr, "POST", "/items", "one", Duration::from_secs(5)).expect("answer");
        assert_eq!(
            server.join().expect("server"),
            format!("POST /items HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 3\r\n\r\none")
        );
        assert_eq!(a.status, 201);
        assert_eq!(a.head, "HTTP/1.0 201 Created\r\nX-A: b");
        assert_eq!(a.body, "made\n");
        assert_eq!(
            a.to_string(),
            "HTTP/1.0 201 Created\r\nX-A: b\r\n\r\nmade\n"
        );
    }

    #[test]
    fn a_get_answers_any_status_and_a_closed_port_is_an_error() {
        let (addr, server) = serve_once("HTTP/1.0 503 Service Unavailable\r\n\r\nlater");
        assert_eq!(http_get(addr, "/"), Ok((503, "later".to_string())));
        server.join().expect("server");
        let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let e = http_get(closed, "/").expect_err("nothing listens");
        assert!(e.starts_with(&format!("connect {closed}: ")), "{e}");
    }

    #[test]
    #[should_panic(expected = "POST /items: HTTP/1.0 400 Bad Request\r\n\r\nno name")]
    fn post_ok_says_what_a_refusal_answered() {
        let (addr, _server) = serve_once("HTTP/1.0 400 Bad Request\r\n\r\nno name");
        post_ok(addr, "/items", "");
    }

    #[test]
    fn get_now_returns_the_trimmed_body_of_a_2xx() {
        let (addr, server) = serve_once("HTTP/1.0 200 OK\r\n\r\n v2 \n");
        assert_eq!(get_now(addr, "/version"), "v2");
        server.join().expect("server");
    }

    #[test]
    #[should_panic(expected = "GET /version: 500: boom")]
    fn get_within_gives_up_with_the_last_failure() {
        let (addr, _server) = serve_once("HTTP/1.0 500 Internal\r\n\r\nboom");
        get_within(addr, "/version", Duration::ZERO);
    }
}
