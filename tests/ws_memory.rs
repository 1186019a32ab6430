//! What an open connection costs the server in memory, beyond its buffers: the future its
//! task holds for the connection's whole life. (README: about 4 KB per idle connection in
//! all, measured with `scripts/bench_e2e.sh`; this pins the part the crate's own code
//! decides.)

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use wshub::ws::{Client, Config, ConnInfo, Server};
use wshub::{Hub, Message};

/// Before the fix, 3 064 and 3 160 bytes: `async fn` wrappers kept their arguments and a
/// second copy of the driver, and the handshake's state stayed reserved after it finished.
const MAX_FUTURE: usize = 1_280;

fn server() -> Server {
    Server::new(Hub::new(), Config::default(), |_: &Client, _: Message| {
        Ok(())
    })
}

async fn stream_pair() -> (TcpStream, TcpStream, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), accepted.unwrap().0, addr)
}

#[tokio::test]
async fn a_served_connection_holds_a_small_future() {
    let server = server();
    let (_client, stream, addr) = stream_pair().await;
    let serving = server.serve_connection(stream, Some(addr));
    let size = std::mem::size_of_val(&serving);
    assert!(size <= MAX_FUTURE, "serve_connection future: {size} bytes");
}

#[tokio::test]
async fn an_upgraded_connection_holds_a_small_future() {
    let server = server();
    let (_client, stream, _) = stream_pair().await;
    let req = tungstenite::http::Request::builder()
        .uri("/")
        .header("Host", "localhost")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    let (_, admission) = server.upgrade_response(&req).unwrap();
    let info = ConnInfo::new(None, req.uri().clone(), req.headers().clone());
    let serving = server.serve_upgraded(admission, stream, info);
    let size = std::mem::size_of_val(&serving);
    assert!(size <= MAX_FUTURE, "serve_upgraded future: {size} bytes");
}
