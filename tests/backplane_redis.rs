//! Rooms across hubs through a real Redis (`redis-server` started by the test on a free port).
#![cfg(feature = "redis")]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wshub::backplane::{Backplane, Envelope, Node, Payload, RedisBackplane, RedisConfig};
use wshub::{Hub, Message};

/// A redis-server child process on 127.0.0.1, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is required for these tests (apt-get install redis-server)");
        let redis = Redis { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::start_on(port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn backplane(redis: &Redis, prefix: &str) -> RedisBackplane {
    RedisBackplane::new(
        RedisConfig::new(redis.url())
            .prefix(prefix)
            .max_backoff(Duration::from_millis(300)),
    )
    .unwrap()
}

async fn subscribed(bp: &RedisBackplane) {
    tokio::time::timeout(common::PATIENCE, bp.wait_subscribed())
        .await
        .expect("never subscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_rooms_through_redis_exactly_once() {
    let redis = Redis::start();
    let (bp_a, bp_b) = (backplane(&redis, "t1"), backplane(&redis, "t1"));
    let (hub_a, hub_b) = (Hub::new(), Hub::new());
    let node_a = Node::new(hub_a.clone(), bp_a.clone());
    let node_b = Node::new(hub_b.clone(), bp_b.clone());
    subscribed(&bp_a).await;
    subscribed(&bp_b).await;

    let (a1, mut a1_mail) = hub_a.register().unwrap();
    let (b1, mut b1_mail) = hub_b.register().unwrap();
    let (b2, mut b2_mail) = hub_b.register().unwrap();
    a1.join("chat").unwrap();
    b1.join("chat").unwrap();
    b2.join("other").unwrap();

    node_a.broadcast_to("chat", Message::text("hello from A"));
    node_b.broadcast_to("chat", Message::text("hello from B"));
    for mail in [&mut a1_mail, &mut b1_mail] {
        let mut got = vec![
            common::next_in_mailbox(mail).await,
            common::next_in_mailbox(mail).await,
        ];
        got.sort();
        assert_eq!(got, ["hello from A", "hello from B"]);
        assert!(common::mailbox_quiet(mail).await, "delivered twice");
    }
    assert!(common::mailbox_quiet(&mut b2_mail).await, "a room leaked");

    // Another application on the same Redis (another prefix) hears nothing.
    let bp_c = backplane(&redis, "t2");
    let hub_c = Hub::new();
    let _node_c = Node::new(hub_c.clone(), bp_c.clone());
    subscribed(&bp_c).await;
    let (c1, mut c1_mail) = hub_c.register().unwrap();
    c1.join("chat").unwrap();
    node_a.broadcast_to("chat", Message::text("t1 only"));
    assert_eq!(common::next_in_mailbox(&mut b1_mail).await, "t1 only");
    assert!(
        common::mailbox_quiet(&mut c1_mail).await,
        "prefixes did not separate applications"
    );

    drop((a1, b1, b2, c1));
    assert_eq!(hub_a.room_count("chat") + hub_b.room_count("chat"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_local_delivery_continues_and_cross_node_resumes_without_duplicates() {
    let mut redis = Redis::start();
    let port = redis.port;
    let (bp_a, bp_b) = (backplane(&redis, "t3"), backplane(&redis, "t3"));
    let (hub_a, hub_b) = (Hub::new(), Hub::new());
    let node_a = Node::new(hub_a.clone(), bp_a.clone());
    let _node_b = Node::new(hub_b.clone(), bp_b.clone());
    subscribed(&bp_a).await;
    subscribed(&bp_b).await;
    let (local, mut local_mail) = hub_a.register().unwrap();
    let (remote, mut remote_mail) = hub_b.register().unwrap();
    local.join("r").unwrap();
    remote.join("r").unwrap();

    let mut sent = 0u32;
    let mut send = |n: u32| {
        for _ in 0..n {
            sent += 1;
            node_a.broadcast_to("r", Message::text(sent.to_string()));
        }
    };
    send(50);
    assert_eq!(common::next_in_mailbox(&mut remote_mail).await, "1");

    redis.kill();
    send(50); // Redis is down: local members must still get these.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis = Redis::start_on(port);
    subscribed(&bp_b).await;
    // Publish until the remote node hears us again.
    let resumed = tokio::time::timeout(common::PATIENCE, async {
        loop {
            send(1);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if bp_a.stats().errors > 0 && !remote_mail.is_empty() {
                // Drain below; stop once a post-restart message has arrived.
                let mut last = 0;
                while !remote_mail.is_empty() {
                    last = common::next_in_mailbox(&mut remote_mail)
                        .await
                        .parse::<u32>()
                        .unwrap();
                }
                if last > 100 {
                    return last;
                }
            }
        }
    })
    .await
    .expect("cross-node delivery did not resume after the restart");
    assert!(resumed > 100);

    // The local member got every message, in order, despite the outage.
    for i in 1..=sent {
        assert_eq!(
            common::next_in_mailbox(&mut local_mail).await,
            i.to_string()
        );
    }
    assert!(common::mailbox_quiet(&mut local_mail).await);
    assert!(bp_a.stats().errors > 0 || bp_b.stats().errors > 0);
    assert!(bp_b.stats().subscriptions >= 2, "{:?}", bp_b.stats());
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_messages_arrive_in_order_and_at_most_once_across_a_restart() {
    let mut redis = Redis::start();
    let port = redis.port;
    let (bp_a, bp_b) = (backplane(&redis, "t4"), backplane(&redis, "t4"));
    // The remote member reads only at the end: its backlog must hold the whole stream.
    let hub_b = Hub::with_config(wshub::HubConfig::default().mailbox_capacity(1000));
    let hub_a = Hub::new();
    let node_a = Node::new(hub_a.clone(), bp_a.clone());
    let _node_b = Node::new(hub_b.clone(), bp_b.clone());
    subscribed(&bp_a).await;
    subscribed(&bp_b).await;
    let (_local, _local_mail) = hub_a.register().unwrap();
    let (remote, mut remote_mail) = hub_b.register().unwrap();
    remote.join("r").unwrap();

    let publisher = tokio::spawn(async move {
        for i in 1..=400u32 {
            node_a.broadcast_to("r", Message::text(i.to_string()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        node_a
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _redis = Redis::start_on(port);
    let _node_a = publisher.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut got = Vec::new();
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), remote_mail.recv()).await
    {
        got.push(m.to_text().unwrap().parse::<u32>().unwrap());
    }
    assert!(!got.is_empty());
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "duplicate or out of order: {got:?}"
    );
    assert!(
        *got.last().unwrap() > 300,
        "delivery did not resume: last {:?}",
        got.last()
    );
}

/// How many clients the Redis server has connected right now, not counting the connection
/// that asks.
async fn redis_clients(redis: &Redis) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines().filter(|l| !l.trim().is_empty()).count() - 1
}

/// Polls the server's client count until it equals `want`; panics after `within`.
async fn redis_clients_become(redis: &Redis, want: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = redis_clients(redis).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis has {now} clients, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_ends_the_tasks_and_closes_their_connections() {
    let redis = Redis::start();
    let baseline = redis_clients(&redis).await;
    let bp = backplane(&redis, "t5");
    let hub = Hub::new();
    let node = Node::new(hub.clone(), bp.clone());
    subscribed(&bp).await;
    let (member, mut mail) = hub.register().unwrap();
    member.join("r").unwrap();
    node.broadcast_to("r", Message::text("hello"));
    assert_eq!(common::next_in_mailbox(&mut mail).await, "hello");
    // The publisher and the subscriber are connected.
    redis_clients_become(&redis, baseline + 2, common::PATIENCE).await;

    // The node's subscriber ends with the node, even while a clone of the backplane lives.
    drop(node);
    redis_clients_become(&redis, baseline + 1, Duration::from_secs(3)).await;
    // The publisher ends with the last handle.
    drop(bp);
    redis_clients_become(&redis, baseline, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_dropped_during_an_outage_stop_reconnecting() {
    let mut redis = Redis::start();
    let port = redis.port;
    let bp = backplane(&redis, "t6");
    let node = Node::new(Hub::new(), bp.clone());
    subscribed(&bp).await;
    redis.kill();
    // Both tasks are now reconnecting with backoff (at most 300 ms apart).
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop((node, bp));
    let redis = Redis::start_on(port);
    // Several backoff periods: nobody may connect.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(redis_clients(&redis).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_falls_behind_loses_and_counts_what_does_not_fit() {
    let redis = Redis::start();
    let (sender, receiver) = (backplane(&redis, "t7"), backplane(&redis, "t7"));
    // A node that reads nothing: its inbound queue holds 4 envelopes.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    receiver.subscribe(tx);
    subscribed(&receiver).await;
    const SENT: u64 = 200;
    for i in 0..SENT {
        sender
            .publish(Envelope {
                origin: 1,
                room: "r".into(),
                payload: Payload::Text(i.to_string().into()),
            })
            .unwrap();
    }
    // Every envelope that did not fit was dropped and counted, none buffered elsewhere.
    common::wait_for(|| receiver.stats().dropped == SENT - 4).await;
    let mut got = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        got.push(e.payload);
    }
    let first: Vec<_> = (0..4u64)
        .map(|i| Payload::Text(i.to_string().into()))
        .collect();
    assert_eq!(got, first, "the oldest are kept, the newest dropped");
    assert_eq!(receiver.stats().dropped, SENT - 4);

    // Once the node catches up, delivery resumes.
    sender
        .publish(Envelope {
            origin: 1,
            room: "r".into(),
            payload: Payload::Text("again".into()),
        })
        .unwrap();
    let next = tokio::time::timeout(common::PATIENCE, rx.recv())
        .await
        .unwrap();
    assert_eq!(next.map(|e| e.payload), Some(Payload::Text("again".into())));
    assert_eq!(receiver.stats().dropped, SENT - 4);

    // What another writer puts on the channels is not an envelope: ignored, and counted too.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("t7:r")
        .arg("not an envelope")
        .query_async(&mut conn)
        .await
        .unwrap();
    common::wait_for(|| receiver.stats().malformed == 1).await;
    assert!(rx.try_recv().is_err());
}
