//! The small HTTP client cutover needs outside its proxy: `GET` a URL with an overall limit,
//! for the container runtime's health probes and the stack file's `http` checks and steps.
//! Plain HTTP/1.1; an error is one line that names the URL.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// `GET url` (plain HTTP) with an overall `timeout`: the status and the body.
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = url.parse().map_err(|e| format!("GET {url}: {e}"))?;
    let fetch = async {
        let resp = client
            .get(uri)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("GET {url}: no answer within {}", seconds(timeout)))?
}

/// `10s`, `0.5s`.
pub fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_get_returns_status_and_body_and_a_silent_server_times_out_naming_the_url() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            // First connection answers; the second is accepted and never answered.
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 7\r\n\r\nwarming")
                .await;
            let (_silent, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let url = format!("http://{addr}/health");
        assert_eq!(
            get(&url, Duration::from_secs(5)).await,
            Ok((503, "warming".to_string()))
        );
        assert_eq!(
            get(&url, Duration::from_millis(300)).await,
            Err(format!("GET {url}: no answer within 0.3s"))
        );
        assert!(get("not a url", Duration::from_secs(1)).await.is_err());
    }
}
