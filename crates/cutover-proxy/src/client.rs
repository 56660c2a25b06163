//! The engine's side of the control API: one short HTTP/1.1 exchange per call over the
//! proxy's unix socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::admin::{
    DrainRequest, DrainResponse, HoldRequest, MaintenanceRequest, SwitchRequest, SwitchResponse,
};
use crate::proxy::{MaintenancePage, ProxyState};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no traffic proxy answers on {socket}: {reason} (start it with `cutover serve`)")]
    Unreachable { socket: PathBuf, reason: String },
    #[error("the traffic proxy refused `{call}`: {message}")]
    Refused { call: String, message: String },
    #[error("talking to the traffic proxy ({call}): {reason}")]
    Protocol { call: String, reason: String },
}

/// A handle on the proxy of one stack.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

/// How long one call may take, beyond a drain's own timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<Option<T>, ClientError> {
        let call = format!("{method} {path}");
        let protocol = |reason: String| ClientError::Protocol {
            call: call.clone(),
            reason,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| ClientError::Unreachable {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| protocol(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| protocol(e.to_string()))?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "cutover-proxy")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| protocol(e.to_string()))?;
        let exchange = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| protocol(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| protocol(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout + CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| protocol("no answer in time".into()))??;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused { call, message });
        }
        if body.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| protocol(e.to_string()))
    }

    pub async fn state(&self) -> Result<ProxyState, ClientError> {
        self.call::<ProxyState>("GET", "/state", None::<&()>, Duration::ZERO)
            .await?
            .ok_or_else(|| ClientError::Protocol {
                call: "GET /state".into(),
                reason: "empty answer".into(),
            })
    }

    /// Sends new requests for `service` to `upstreams`; returns the previous set.
    pub async fn switch(
        &self,
        service: &str,
        upstreams: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, ClientError> {
        let resp: Option<SwitchResponse> = self
            .call(
                "PUT",
                &format!("/services/{service}/upstreams"),
                Some(&SwitchRequest {
                    upstreams: upstreams.to_vec(),
                }),
                Duration::ZERO,
            )
            .await?;
        Ok(resp.map(|r| r.previous).unwrap_or_default())
    }

    /// Waits until nothing is in flight to `upstreams`, up to `timeout`; returns what was
    /// still in flight then.
    pub async fn drain(
        &self,
        upstreams: &[SocketAddr],
        timeout: Duration,
    ) -> Result<DrainResponse, ClientError> {
        self.call(
            "POST",
            "/drain",
            Some(&DrainRequest {
                upstreams: upstreams.to_vec(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
            timeout,
        )
        .await?
        .ok_or_else(|| ClientError::Protocol {
            call: "POST /drain".into(),
            reason: "empty answer".into(),
        })
    }

    pub async fn hold(&self, service: &str, max_hold: Duration) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(
            "POST",
            &format!("/services/{service}/hold"),
            Some(&HoldRequest {
                max_hold_ms: u64::try_from(max_hold.as_millis()).unwrap_or(u64::MAX),
            }),
            Duration::ZERO,
        )
        .await
        .map(|_| ())
    }

    pub async fn release(&self, service: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(
            "POST",
            &format!("/services/{service}/release"),
            None::<&()>,
            Duration::ZERO,
        )
        .await
        .map(|_| ())
    }

    pub async fn maintenance(
        &self,
        service: Option<&str>,
        page: Option<MaintenancePage>,
    ) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(
            "PUT",
            "/maintenance",
            Some(&MaintenanceRequest {
                service: service.map(str::to_string),
                page,
            }),
            Duration::ZERO,
        )
        .await
        .map(|_| ())
    }
}
