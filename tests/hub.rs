//! The hub without I/O: policies, counters, registration, the Sink, shutdown.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::SinkExt;
use wshub::{ClientHandle, CloseReason, Error, Hub, HubConfig, Mailbox, OverflowPolicy};

fn hub_with(capacity: usize, policy: OverflowPolicy) -> Hub<u32> {
    Hub::with_config(
        HubConfig::default()
            .mailbox_capacity(capacity)
            .overflow(policy),
    )
}

fn drain(mail: &mut Mailbox<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    while let Poll::Ready(Ok(_)) = mail.poll_recv_many(&mut cx, &mut out, usize::MAX) {}
    out
}

#[test]
fn public_types_are_send_and_sync() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Hub<u32>>();
    is_send_sync::<ClientHandle<u32>>();
    is_send_sync::<Mailbox<u32>>();
    is_send_sync::<wshub::ws::Server>();
    is_send_sync::<Error>();
}

#[test]
fn drop_newest_keeps_the_queue_and_counts_each_drop() {
    let hub = hub_with(3, OverflowPolicy::DropNewest);
    let (fast, mut fast_mail) = hub.register().unwrap();
    let (slow, mut slow_mail) = hub.register().unwrap();
    for i in 0..3 {
        assert_eq!(hub.broadcast(i), 2);
        drain(&mut fast_mail);
    }
    assert_eq!(
        hub.broadcast(3),
        1,
        "the full mailbox refuses, the other accepts"
    );
    assert_eq!(hub.broadcast(4), 1);
    let refused = slow.send(5).unwrap_err();
    assert!(matches!(refused.reason(), Error::MailboxFull(_)));
    assert_eq!(refused.into_inner(), 5, "the message comes back");
    assert_eq!(drain(&mut slow_mail), vec![0, 1, 2]);
    assert_eq!(drain(&mut fast_mail), vec![3, 4]);
    let stats = hub.stats();
    assert_eq!((stats.dropped, stats.evicted, stats.connected), (3, 0, 2));
    assert_eq!(stats.sent, stats.delivered + stats.dropped);
    drop((fast, slow));
}

#[test]
fn drop_oldest_keeps_the_most_recent() {
    let hub = hub_with(3, OverflowPolicy::DropOldest);
    let (_c, mut mail) = hub.register().unwrap();
    for i in 0..10 {
        assert_eq!(hub.broadcast(i), 1);
    }
    assert_eq!(drain(&mut mail), vec![7, 8, 9]);
    let stats = hub.stats();
    assert_eq!((stats.sent, stats.delivered, stats.dropped), (10, 3, 7));
}

#[test]
fn shutdown_counts_what_a_lagging_client_had_already_lost() {
    // A lagging client's loss is settled when it next reads, or when it leaves the log: a
    // shutdown before it reads again must count it too. (Found by the threaded stress: the
    // gap of clients lagging at shutdown was never counted.)
    for policy in [OverflowPolicy::DropOldest, OverflowPolicy::DropNewest] {
        let hub = hub_with(3, policy);
        let (_c, mut mail) = hub.register().unwrap();
        for i in 0..10 {
            hub.broadcast(i);
        }
        hub.shutdown();
        let kept = match policy {
            OverflowPolicy::DropOldest => vec![7, 8, 9],
            _ => vec![0, 1, 2],
        };
        assert_eq!(drain(&mut mail), kept, "{policy:?}");
        let stats = hub.stats();
        assert_eq!(
            (stats.sent, stats.delivered, stats.dropped),
            (10, 3, 7),
            "{policy:?}"
        );
    }
}

#[test]
fn disconnect_evicts_only_the_full_client_and_counts_its_queue() {
    let hub = hub_with(2, OverflowPolicy::Disconnect);
    let (_fast, mut fast_mail) = hub.register().unwrap();
    let (slow, mut slow_mail) = hub.register().unwrap();
    for i in 0..5 {
        hub.broadcast(i);
        drain(&mut fast_mail);
    }
    assert_eq!(hub.client_count(), 1);
    assert!(matches!(
        slow.send(9).map_err(Error::from),
        Err(Error::ClientClosed(_))
    ));
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut out = Vec::new();
    assert_eq!(
        slow_mail.poll_recv_many(&mut cx, &mut out, 10),
        Poll::Ready(Err(CloseReason::Evicted))
    );
    let stats = hub.stats();
    // 0 and 1 were waiting when 2 found the backlog full: the client was evicted and its two
    // messages dropped; 2 and later were never offered to it. The fast client got all five.
    assert_eq!((stats.evicted, stats.dropped, stats.delivered), (1, 2, 5));
    assert_eq!(stats.sent, stats.delivered + stats.dropped);
    // Dropping the evicted client's handle does not unregister anyone a second time.
    drop(slow);
    assert_eq!(hub.client_count(), 1);
}

#[test]
fn send_to_an_unknown_client_says_so() {
    let hub: Hub<u32> = Hub::new();
    let (c, _mail) = hub.register().unwrap();
    let id = c.id();
    c.unregister();
    assert!(
        matches!(hub.send_to(id, 1).map_err(Error::from), Err(Error::NoSuchClient(x)) if x == id)
    );
}

#[test]
fn dropping_the_mailbox_counts_what_it_held() {
    let hub: Hub<u32> = Hub::new();
    let (c, mail) = hub.register().unwrap();
    hub.broadcast(1);
    hub.broadcast(2);
    drop(mail);
    assert_eq!(hub.stats().dropped, 2);
    assert!(matches!(
        c.send(3).map_err(Error::from),
        Err(Error::ClientClosed(_))
    ));
}

#[test]
fn ids_are_unique_and_unregistering_is_exactly_once() {
    let hub: Hub<u32> = Hub::new();
    let clients: Vec<_> = (0..100).map(|_| hub.register().unwrap()).collect();
    let mut ids: Vec<_> = clients.iter().map(|(c, _)| c.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert_eq!(hub.client_count(), 100);
    // Remove from the middle and the ends: the rest still receive.
    let mut clients = clients;
    clients.remove(50);
    clients.remove(0);
    clients.pop();
    assert_eq!(hub.broadcast(7), 97);
    for (_, mail) in &mut clients {
        assert_eq!(drain(mail), vec![7]);
    }
    drop(clients);
    assert_eq!(hub.client_count(), 0);
}

#[tokio::test]
async fn client_handle_is_a_sink() {
    let hub: Hub<u32> = Hub::new();
    let (mut c, mut mail) = hub.register().unwrap();
    c.send(1).unwrap();
    SinkExt::send(&mut c, 2).await.unwrap();
    c.feed(3).await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(drain(&mut mail), vec![1, 2, 3]);
    let _: Pin<&mut ClientHandle<u32>> = Pin::new(&mut c);
}

#[tokio::test]
async fn recv_wakes_on_broadcast_from_another_task() {
    // The publisher does not yield: the mailbox must hold the whole burst.
    let hub = hub_with(1000, OverflowPolicy::Disconnect);
    let (_c, mut mail) = hub.register().unwrap();
    let h = hub.clone();
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for i in 0..1000 {
            h.broadcast(i);
        }
    });
    let mut got = Vec::new();
    while got.len() < 1000 {
        mail.recv_many(&mut got, 64).await.unwrap();
    }
    publisher.await.unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn shutdown_refuses_new_clients_and_wait_empty_returns_when_all_leave() {
    let hub: Hub<u32> = Hub::new();
    let (c, mut mail) = hub.register().unwrap();
    hub.broadcast(1);
    hub.shutdown();
    assert!(matches!(hub.register(), Err(Error::Shutdown)));
    assert_eq!(hub.broadcast(2), 0);
    assert_eq!(mail.recv().await, Ok(1));
    assert_eq!(mail.recv().await, Err(CloseReason::Shutdown));
    let waiter = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.wait_empty().await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    drop(c);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn try_recv_and_the_stream_see_what_recv_sees() {
    use futures_util::StreamExt;
    use wshub::TryRecvError;

    let hub = hub_with(8, OverflowPolicy::Disconnect);
    let (client, mut mail) = hub.register().unwrap();
    assert_eq!(mail.try_recv(), Err(TryRecvError::Empty));
    hub.broadcast(1);
    client.send(2).unwrap();
    assert_eq!(mail.try_recv(), Ok(1));
    hub.broadcast(3);
    assert_eq!(mail.next().await, Some(2));
    assert_eq!(mail.next().await, Some(3));
    assert_eq!(mail.try_recv(), Err(TryRecvError::Empty));
    // A task waiting on the stream is woken by a broadcast from another task.
    let h = hub.clone();
    let waiter = tokio::spawn(async move { mail.next().await.map(|m| (m, mail)) });
    tokio::task::yield_now().await;
    h.broadcast(4);
    let (m, mut mail) = waiter.await.unwrap().unwrap();
    assert_eq!(m, 4);
    drop(client);
    assert_eq!(
        mail.try_recv(),
        Err(TryRecvError::Closed(CloseReason::Unregistered))
    );
    assert_eq!(mail.next().await, None, "the stream ends once closed");
    let stats = hub.stats();
    assert_eq!((stats.sent, stats.delivered), (4, 4));
}

#[test]
fn client_ids_go_through_text_and_the_hub_lists_its_clients() {
    let hub = hub_with(8, OverflowPolicy::Disconnect);
    let (a, _ma) = hub.register().unwrap();
    let (b, _mb) = hub.register().unwrap();
    let text = a.id().to_string();
    assert!(text.chars().all(|c| c.is_ascii_digit()), "{text}");
    assert_eq!(text.parse::<wshub::ClientId>(), Ok(a.id()));
    assert!("#1".parse::<wshub::ClientId>().is_err());
    assert_eq!(wshub::ClientId::from(b.id().as_u64()), b.id());
    let mut listed = hub.clients();
    listed.sort();
    assert_eq!(listed, vec![a.id(), b.id()]);
    drop(a);
    assert_eq!(hub.clients(), vec![b.id()]);
}
