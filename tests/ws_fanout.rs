//! Fan-out over real sockets: broadcast, send_to, broadcast_except, slow-client eviction.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpSocket};
use wshub::ws::{Client, Config, ConnInfo, Handler, HandlerError, Heartbeat, Server};
use wshub::{ClientId, CloseCode, Hub, HubConfig, Message};

/// Answers "whoami" with the client's id and remembers every id.
#[derive(Default, Clone)]
struct Directory {
    ids: Arc<Mutex<HashMap<u64, ClientId>>>,
}

impl Handler for Directory {
    fn on_connect(&self, client: &Client, _: &ConnInfo) {
        self.ids
            .lock()
            .unwrap()
            .insert(client.id().as_u64(), client.id());
    }
    fn on_message(&self, client: &Client, msg: Message) -> Result<(), HandlerError> {
        if msg.to_text()? == "whoami" {
            client.send(Message::text(client.id().as_u64().to_string()))?;
        }
        Ok(())
    }
}

async fn whoami(ws: &mut Ws, dir: &Directory) -> ClientId {
    send_text(ws, "whoami").await;
    let n: u64 = next_text(ws).await.parse().unwrap();
    dir.ids.lock().unwrap()[&n]
}

#[tokio::test]
async fn broadcast_reaches_all_100_clients_in_order() {
    let (server, addr) = start(HubConfig::default(), Config::default(), ignore).await;
    let mut clients = connect_many(&server, addr, 100).await;
    for i in 0..50 {
        assert_eq!(server.hub().broadcast(Message::text(format!("m{i}"))), 100);
    }
    for ws in &mut clients {
        for i in 0..50 {
            assert_eq!(next_text(ws).await, format!("m{i}"));
        }
    }
    let stats = server.hub().stats();
    assert_eq!((stats.sent, stats.dropped, stats.evicted), (5000, 0, 0));
}

#[tokio::test]
async fn send_to_reaches_only_its_target_and_broadcast_except_skips_one() {
    let dir = Directory::default();
    let (server, addr) = start(HubConfig::default(), Config::default(), dir.clone()).await;
    let mut clients = connect_many(&server, addr, 3).await;
    let mut ids = Vec::new();
    for ws in &mut clients {
        ids.push(whoami(ws, &dir).await);
    }

    server
        .hub()
        .send_to(ids[1], Message::text("only you"))
        .unwrap();
    assert_eq!(next_text(&mut clients[1]).await, "only you");
    assert!(silent_for(&mut clients[0], Duration::from_millis(200)).await);
    assert!(silent_for(&mut clients[2], Duration::from_millis(50)).await);

    assert_eq!(
        server
            .hub()
            .broadcast_except(ids[0], Message::text("not you")),
        2
    );
    assert_eq!(next_text(&mut clients[1]).await, "not you");
    assert_eq!(next_text(&mut clients[2]).await, "not you");
    assert!(silent_for(&mut clients[0], Duration::from_millis(200)).await);
}

/// A server whose sockets have a small send buffer (the kernel would otherwise grow it to
/// megabytes and absorb a whole test): its own accept loop around `serve_connection`.
async fn start_small_send_buffer(
    hub_config: HubConfig,
    config: Config,
    handler: impl wshub::ws::Handler,
) -> (Server, std::net::SocketAddr) {
    let server = Server::new(Hub::with_config(hub_config), config, handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let std = stream.into_std().unwrap();
            TcpSocket::from_std_stream(std.try_clone().unwrap())
                .set_send_buffer_size(4096)
                .unwrap();
            let stream = tokio::net::TcpStream::from_std(std).unwrap();
            let s = s.clone();
            tokio::spawn(async move { s.serve_connection(stream, Some(peer)).await });
        }
    });
    (server, addr)
}

/// A client whose socket stops draining: tiny receive buffer, never reads.
async fn stalled_client(addr: std::net::SocketAddr) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    ws
}

#[tokio::test]
async fn stalled_client_is_evicted_with_1008_while_50_others_get_everything() {
    const CAPACITY: usize = 64;
    const MESSAGES: usize = 400;
    let hub_config = HubConfig::default().mailbox_capacity(CAPACITY);
    let config = Config::default().heartbeat(Heartbeat::off());
    let (server, addr) = start_small_send_buffer(hub_config, config, ignore).await;
    let mut others = connect_many(&server, addr, 50).await;
    let mut stalled = stalled_client(addr).await;
    wait_for(|| server.hub().client_count() == 51).await;

    let readers: Vec<_> = others
        .drain(..)
        .map(|mut ws| {
            tokio::spawn(async move {
                for i in 0..MESSAGES {
                    let text = next_text(&mut ws).await;
                    assert_eq!(text[..8], format!("{i:08}"));
                }
                ws
            })
        })
        .collect();

    let payload = "x".repeat(1024);
    let mut max_queued = 0;
    for i in 0..MESSAGES {
        server
            .hub()
            .broadcast(Message::text(format!("{i:08}{payload}")));
        max_queued = max_queued.max(server.hub().max_queued());
        if i % 8 == 7 {
            // Pace the publisher so the 50 live readers keep up with a 64-message mailbox.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for r in readers {
        r.await.unwrap();
    }
    let stats = server.hub().stats();
    assert_eq!(stats.evicted, 1, "{stats:?}");
    assert_eq!(stats.connected, 50);
    assert!(
        max_queued <= CAPACITY,
        "a mailbox held {max_queued} > {CAPACITY}"
    );
    // Nothing lost silently: the evicted client's backlog is counted as dropped, everything
    // else accepted was taken out by a writer.
    assert!(stats.sent >= 50 * MESSAGES as u64);
    assert_eq!(stats.sent, stats.delivered + stats.dropped, "{stats:?}");

    // The stalled client, once it reads, finds what fit in the socket, then close 1008.
    let mut data = 0;
    let code = loop {
        match tokio::time::timeout(PATIENCE, stalled.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(_))) => data += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(
        data < MESSAGES,
        "the stalled client cannot have received everything"
    );
}

/// Regression: while a frame is half written the driver does not read; once the write
/// completes it must read what arrived meanwhile at once (not at the next timer).
#[tokio::test]
async fn a_message_that_arrives_during_a_blocked_write_is_read_when_the_write_completes() {
    let echo = |c: &Client, m: Message| -> Result<(), HandlerError> {
        c.send(Message::text(format!("echo:{}", m.to_text()?)))?;
        Ok(())
    };
    let hub_config = HubConfig::default().mailbox_capacity(10_000);
    let (server, addr) = start_small_send_buffer(
        hub_config,
        Config::default().heartbeat(Heartbeat::off()),
        echo,
    )
    .await;
    let mut ws = stalled_client(addr).await;
    wait_for(|| server.hub().client_count() == 1).await;
    let payload = "y".repeat(1024);
    for _ in 0..300 {
        server.hub().broadcast(Message::text(payload.clone()));
    }
    // The server is now blocked half-way through its batch; this arrives meanwhile.
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_text(&mut ws, "hello").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Drain the burst; the echo must follow promptly.
    let started = tokio::time::Instant::now();
    let mut bulk = 0;
    loop {
        let text = next_text(&mut ws).await;
        if text == "echo:hello" {
            break;
        }
        bulk += 1;
    }
    assert_eq!(bulk, 300);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "echo took {:?}",
        started.elapsed()
    );
}
