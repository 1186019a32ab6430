//! The sum service: `{"A": 7, "B": 4}` in, `{"Sum": 11}` out, on the same connection.
//!
//! Shared by `examples/sum_server.rs` and the end-to-end tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use wshub::ws::{
    Accept, Client, Config, ConnInfo, Disconnect, Handler, HandlerError, HandshakeRequest,
    Heartbeat, OriginPolicy, Reject, Server,
};
use wshub::{Hub, Message};

/// The seed's read deadline: a connection that sends nothing for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Requests larger than this close the connection with 1009.
pub const MAX_REQUEST_BYTES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

/// The reply to one text message: `{"Sum":n}` or `{"error":"..."}`.
pub fn reply(text: &str) -> String {
    match serde_json::from_str::<Request>(text) {
        Ok(Request { a, b }) => match a.checked_add(b) {
            Some(sum) => serde_json::json!({ "Sum": sum }).to_string(),
            None => error_reply(&format!("{a} + {b} overflows a 64-bit integer")),
        },
        Err(e) => error_reply(&format!("expected {{\"A\": <int>, \"B\": <int>}}: {e}")),
    }
}

fn error_reply(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// The `name` cookie a client sent with its handshake (the seed's client sends one).
struct Name(String);

struct Sum {
    /// Every `name` cookie received, in order (for the tests).
    names: Arc<Mutex<Vec<String>>>,
}

impl Handler for Sum {
    /// Prints the `Cookie: name=` of each handshake, as the seed's Go server printed the
    /// request headers, and keeps it with the client. Anyone may call the service: the name
    /// is only shown, never trusted.
    fn on_handshake(&self, req: &HandshakeRequest<'_>) -> Result<Accept, Reject> {
        let Some(name) = req.cookie("name") else {
            return Ok(Accept::new());
        };
        println!("handshake from {:?}: cookie name={name}", req.peer);
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.to_string());
        Ok(Accept::with_data(Name(name.to_string())))
    }

    fn on_connect(&self, client: &Client, info: &ConnInfo) {
        let headers: Vec<String> = info
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        tracing::info!(client = %client.id(), peer = ?info.peer, path = %info.uri, ?headers, "accepted");
    }

    fn on_message(&self, client: &Client, msg: Message) -> Result<(), HandlerError> {
        let answer = match &msg {
            Message::Text(text) => reply(text),
            _ => error_reply("binary messages are not supported: send JSON text"),
        };
        let name = client.data::<Name>().map(|n| n.0.as_str());
        tracing::info!(client = %client.id(), ?name, request = %msg, reply = %answer, "reply");
        // A client that does not read its replies fills its mailbox and is evicted; the
        // connection is then closing, so there is nothing more to do here.
        if let Err(e) = client.send(Message::text(answer)) {
            tracing::debug!(client = %client.id(), error = %e, "reply not queued");
        }
        Ok(())
    }

    fn on_disconnect(&self, d: &Disconnect) {
        if d.timed_out {
            tracing::info!(client = %d.client, "closed after the idle timeout");
        } else {
            tracing::info!(client = %d.client, end = ?d.end, peer_code = ?d.peer_code, "closed");
        }
    }
}

/// The sum server: path `/add`, 5 s handshake timeout, the given idle timeout.
pub fn server(idle_timeout: Duration) -> Server {
    server_recording(idle_timeout).0
}

/// [`server`], and the `name` cookies its handshakes received.
pub fn server_recording(idle_timeout: Duration) -> (Server, Arc<Mutex<Vec<String>>>) {
    let config = Config::default()
        .path("/add")
        .handshake_timeout(Duration::from_secs(5))
        .heartbeat(Heartbeat::idle_timeout(idle_timeout))
        .max_message_size(MAX_REQUEST_BYTES)
        // The service is public and trusts no cookie (it only prints the name), so any page may
        // call it (as the seed's CheckOrigin allowed). A service that trusts cookies must keep
        // the same-origin default.
        .origin(OriginPolicy::Any);
    let names = Arc::new(Mutex::new(Vec::new()));
    let sum = Sum {
        names: names.clone(),
    };
    (Server::new(Hub::new(), config, sum), names)
}
