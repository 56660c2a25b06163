//! `cutover-demo probe <url>`: the image's Docker `HEALTHCHECK`.
//!
//! The images are `FROM scratch`, so there is no curl: the binary checks itself. The probe
//! sends a hand-written HTTP/1.0 GET (the server closes the connection after answering, so
//! there is no keep-alive or chunking to handle), reads the status line and exits 0 on a 2xx
//! status and 1 otherwise. Docker reserves exit code 2 for health checks, so even a bad
//! command line exits 1. The URL's host must be an IP address: no DNS lookups.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The whole probe (connect, send, receive) must be done within this.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the probe subcommand with its arguments (after `probe`).
pub fn main(args: &[OsString]) -> ExitCode {
    let url = match args {
        [url] => url.to_string_lossy(),
        _ => {
            eprintln!("usage: cutover-demo probe http://IP:PORT/PATH");
            return ExitCode::FAILURE;
        }
    };
    match get_status(&url, TIMEOUT) {
        Ok(status) if (200..300).contains(&status) => {
            println!("probe: GET {url}: {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("probe: GET {url}: {status}, not 2xx");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("probe: GET {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A parsed `http://` URL.
#[derive(Debug, PartialEq)]
struct Target {
    addr: SocketAddr,
    /// The `Host` header: the authority as written.
    host: String,
    /// Path and query, starting with `/`.
    path: String,
}

/// Parses `http://IP[:PORT][/PATH]`; IPv6 addresses go in brackets.
fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    // The fragment is never sent.
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr = authority
        .parse::<SocketAddr>()
        .or_else(|_| {
            let ip = authority
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'));
            ip.unwrap_or(authority)
                .parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, 80))
        })
        .map_err(|_| format!("{authority:?} is not an IP address with an optional port"))?;
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path,
    })
}

/// GETs `url` and answers the HTTP status code, all within `timeout`.
fn get_status(url: &str, timeout: Duration) -> Result<u16, String> {
    let target = parse_url(url)?;
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("timed out after {timeout:?}"))
    };

    let mut stream = TcpStream::connect_timeout(&target.addr, remaining()?)
        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: cutover-demo-probe\r\nConnection: close\r\n\r\n",
        target.path, target.host
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;

    // Only the status line matters: read until its end (or the connection's).
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the response: {e}")),
        }
    }
    parse_status_line(&head)
}

/// `HTTP/1.1 200 OK\r\n...` → 200.
fn parse_status_line(head: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/") => Ok(status),
        _ => Err(format!("not an HTTP response: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:8080/health").expect("valid");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("address"));
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/health")
        );

        let t = parse_url("http://127.0.0.1").expect("valid");
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/"));

        let t = parse_url("http://[::1]:9000?x=1#frag").expect("valid");
        assert_eq!(t.addr, "[::1]:9000".parse().expect("address"));
        assert_eq!(t.path, "/?x=1");

        assert_eq!(parse_url("http://[::1]").expect("valid").addr.port(), 80);
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(
            parse_url("http://localhost:8080/").is_err(),
            "no DNS lookups"
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Ok(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500 Internal\r\nx"), Ok(500));
        assert!(parse_status_line(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_status_line(b"").is_err());
    }

    /// Serves one canned response on a local port and probes it.
    fn probe_against(response: &'static str) -> Result<u16, String> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut request = [0u8; 1024];
            let n = conn.read(&mut request).expect("read request");
            conn.write_all(response.as_bytes()).expect("write response");
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let status = get_status(&format!("http://{addr}/health"), TIMEOUT);
        let request = server.join().expect("server thread");
        assert!(request.starts_with("GET /health HTTP/1.0\r\n"), "{request}");
        status
    }

    #[test]
    fn probes_a_server() {
        assert_eq!(probe_against("HTTP/1.1 200 OK\r\n\r\nok\n"), Ok(200));
        assert_eq!(
            probe_against("HTTP/1.1 500 Internal Server Error\r\n\r\n"),
            Ok(500)
        );
    }

    #[test]
    fn a_closed_port_fails() {
        // Bind then drop, so the port is very likely closed.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        assert!(get_status(&format!("http://{addr}/"), TIMEOUT).is_err());
    }
}
