//! The connection driver under pressure, over real sockets: reading goes on while a write is
//! blocked, the write timeout measures progress (not time since the first blocked write),
//! deadlines too far away to represent are "never", and messages the writer cannot send are
//! counted as dropped.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use wshub::ws::{Client, Config, HandlerError, Heartbeat};
use wshub::{HubConfig, Message, OverflowPolicy};

/// A 16 KiB text message: a few of them fill a socket buffer quickly.
fn big(i: usize) -> Message {
    Message::text(format!("{i:08}") + &"x".repeat(16 * 1024))
}

/// Broadcasts big messages without pause until `stop` passes, so a slow reader's mailbox is
/// never empty.
fn flood(hub: wshub::Hub<Message>, stop: Instant) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut i = 0;
        while Instant::now() < stop {
            for _ in 0..8 {
                hub.broadcast(big(i));
                i += 1;
            }
            tokio::task::yield_now().await;
        }
        i
    })
}

/// DropOldest keeps a slow reader connected; the write timeout must then only cut off a
/// reader that makes no progress at all. Over an in-memory pipe of 16 KiB, which reports every
/// byte the reader frees (a TCP socket reports itself writable only once a good part of its
/// send buffer is free, so over TCP the slowest reader that counts as progressing depends on
/// the kernel's buffer sizes). The reader takes one 4 KiB message every 5 ms, a few percent
/// of what is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_timeout_counts_from_the_last_progress_not_the_first_blocked_write() {
    let hub = wshub::Hub::with_config(
        HubConfig::default()
            .mailbox_capacity(16)
            .overflow(OverflowPolicy::DropOldest),
    );
    let heartbeat = Heartbeat::off().write_timeout(Some(Duration::from_millis(300)));
    let server =
        wshub::ws::Server::new(hub.clone(), Config::default().heartbeat(heartbeat), ignore);
    let (client_end, server_end) = tokio::io::duplex(16 * 1024);
    let serving = tokio::spawn(async move { server.serve_connection(server_end, None).await });
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/", client_end)
        .await
        .unwrap();
    wait_for(|| hub.client_count() == 1).await;
    let stop = Instant::now() + Duration::from_millis(1_500);
    let publisher = tokio::spawn({
        let hub = hub.clone();
        async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                hub.broadcast(Message::text(format!("{i:08}") + &"x".repeat(4096)));
                i += 1;
                tokio::task::yield_now().await;
            }
            i
        }
    });
    let mut received = 0u64;
    while Instant::now() < stop {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => received += 1,
            other => panic!("dropped after {received} messages: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let published = publisher.await.unwrap();
    assert!(
        published > 5 * received,
        "the reader was not slower ({published} vs {received})"
    );
    assert_eq!(hub.client_count(), 1, "a steady reader was dropped");
    assert!(!serving.is_finished());
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_dropped_at_the_write_timeout() {
    let hub_config = HubConfig::default()
        .mailbox_capacity(16)
        .overflow(OverflowPolicy::DropOldest);
    let heartbeat = Heartbeat::off().write_timeout(Some(Duration::from_millis(300)));
    let (server, addr) = start(hub_config, Config::default().heartbeat(heartbeat), ignore).await;
    let _ws = connect(addr, "/").await;
    wait_for(|| server.hub().client_count() == 1).await;
    let publisher = flood(
        server.hub().clone(),
        Instant::now() + Duration::from_secs(5),
    );
    wait_for(|| server.hub().client_count() == 0).await;
    publisher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_messages_are_read_while_the_socket_is_full() {
    // The client never reads, so the server's writes block; its messages (and so its proof
    // of life against the read deadline) must still be read.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let handler = move |_: &Client, _: Message| -> Result<(), HandlerError> {
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    };
    let hub_config = HubConfig::default()
        .mailbox_capacity(16)
        .overflow(OverflowPolicy::DropOldest);
    let heartbeat = Heartbeat::idle_timeout(Duration::from_millis(800)).write_timeout(None);
    let (server, addr) = start(hub_config, Config::default().heartbeat(heartbeat), handler).await;
    let mut ws = connect(addr, "/").await;
    wait_for(|| server.hub().client_count() == 1).await;
    let publisher = flood(
        server.hub().clone(),
        Instant::now() + Duration::from_secs(4),
    );
    // Let the socket fill up first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..30 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(|| seen.load(Ordering::Relaxed) == 30).await;
    assert_eq!(
        server.hub().client_count(),
        1,
        "a client sending steadily hit the read deadline"
    );
    publisher.abort();
}

#[tokio::test]
async fn deadlines_beyond_what_an_instant_holds_mean_never() {
    let echo = |client: &Client, msg: Message| -> Result<(), HandlerError> {
        client.send(msg)?;
        Ok(())
    };
    for heartbeat in [
        Heartbeat::idle_timeout(Duration::MAX),
        Heartbeat::ping(Duration::MAX / 2, Duration::MAX).write_timeout(Some(Duration::MAX)),
    ] {
        let (_server, addr) = start(
            HubConfig::default(),
            Config::default().heartbeat(heartbeat),
            echo,
        )
        .await;
        let mut ws = connect(addr, "/").await;
        send_text(&mut ws, "still here").await;
        assert_eq!(next_text(&mut ws).await, "still here");
    }
}

#[tokio::test]
async fn a_message_the_writer_cannot_send_is_counted_as_dropped() {
    let (server, addr) = start(HubConfig::default(), Config::default(), ignore).await;
    let mut ws = connect(addr, "/").await;
    wait_for(|| server.hub().client_count() == 1).await;
    // A close frame cannot be broadcast as data: it is refused, and counted.
    server.hub().broadcast(Message::Close(None));
    server.hub().broadcast(Message::text("after"));
    assert_eq!(next_text(&mut ws).await, "after");
    let stats = server.hub().stats();
    assert_eq!((stats.delivered, stats.dropped), (1, 1));
    assert_eq!(stats.sent, stats.delivered + stats.dropped);
}
