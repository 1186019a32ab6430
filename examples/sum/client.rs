//! The sum client: dial, print the handshake response headers, send `{"A":7,"B":4}` N times.
//!
//! Shared by `examples/sum_client.rs` and the end-to-end tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::Write;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What the client does.
pub struct Options {
    pub url: String,
    pub cookie_name: String,
    pub count: usize,
    pub interval: Duration,
}

/// Runs the exchange, writing what the user sees to `out`. Returns the sums received.
pub async fn run(opts: &Options, out: &mut impl Write) -> Result<Vec<i64>, String> {
    let mut request = opts
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad URL: {e}"))?;
    let cookie =
        HeaderValue::from_str(&format!("name={}", opts.cookie_name)).map_err(|e| e.to_string())?;
    request.headers_mut().insert("cookie", cookie);

    let (mut ws, response) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            return Err(format!(
                "handshake failed: HTTP {}: {}",
                resp.status().as_u16(),
                body.trim()
            ));
        }
        Err(e) => return Err(format!("cannot connect to {}: {e}", opts.url)),
    };
    let _ = writeln!(out, "connected: HTTP {}", response.status().as_u16());
    for (name, value) in response.headers() {
        let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }

    let mut sums = Vec::with_capacity(opts.count);
    for i in 0..opts.count {
        if i > 0 {
            tokio::time::sleep(opts.interval).await;
        }
        ws.send(Message::text(r#"{"A":7,"B":4}"#))
            .await
            .map_err(|e| e.to_string())?;
        let reply = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break t,
                Some(Ok(Message::Close(frame))) => return Err(format!("server closed: {frame:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("server closed the connection".into()),
            }
        };
        let value: serde_json::Value =
            serde_json::from_str(&reply).map_err(|e| format!("bad reply {reply:?}: {e}"))?;
        let Some(sum) = value.get("Sum").and_then(|s| s.as_i64()) else {
            return Err(format!("unexpected reply: {reply}"));
        };
        let _ = writeln!(out, "Sum: {sum}");
        sums.push(sum);
    }
    let _ = ws.close(None).await;
    Ok(sums)
}
