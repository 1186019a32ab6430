//! Rooms and presence, without I/O.

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wshub::{CloseReason, Error, Hub, HubConfig, Mailbox, OverflowPolicy, Presence};

fn drain(mail: &mut Mailbox<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Ok(_)) = mail.poll_recv_many(&mut cx, &mut out, usize::MAX) {}
    out
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn room_broadcasts_reach_members_only_and_one_mailbox_serves_several_rooms() {
    let hub: Hub<String> = Hub::new();
    let (a, mut a_mail) = hub.register().unwrap();
    let (b, mut b_mail) = hub.register().unwrap();
    let (_c, mut c_mail) = hub.register().unwrap();
    assert!(a.join("red").unwrap());
    assert!(!a.join("red").unwrap(), "joining twice is a no-op");
    a.join("blue").unwrap();
    b.join("blue").unwrap();
    assert_eq!(hub.room_count("red"), 1);
    assert_eq!(hub.room_count("blue"), 2);
    let mut rooms: Vec<String> = hub.rooms().iter().map(|r| r.to_string()).collect();
    rooms.sort();
    assert_eq!(rooms, ["blue", "red"]);

    assert_eq!(hub.broadcast_to("red", s("r1")), 1);
    assert_eq!(hub.broadcast_to("blue", s("b1")), 2);
    assert_eq!(hub.broadcast_to_except("blue", a.id(), s("b2")), 1);
    assert_eq!(hub.broadcast_to("green", s("nobody")), 0);
    hub.broadcast(s("all"));

    let mut got_a = drain(&mut a_mail);
    got_a.sort();
    assert_eq!(got_a, ["all", "b1", "r1"]);
    let mut got_b = drain(&mut b_mail);
    got_b.sort();
    assert_eq!(got_b, ["all", "b1", "b2"]);
    assert_eq!(drain(&mut c_mail), ["all"]);
}

#[test]
fn order_within_a_room_is_kept() {
    let hub: Hub<String> = Hub::new();
    let (a, mut mail) = hub.register().unwrap();
    a.join("r").unwrap();
    for i in 0..100 {
        hub.broadcast_to("r", i.to_string());
    }
    let got: Vec<String> = drain(&mut mail);
    assert_eq!(got, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[test]
fn rooms_disappear_when_empty_and_unregistering_leaves_every_room() {
    let hub: Hub<String> = Hub::new();
    let (a, a_mail) = hub.register().unwrap();
    let (b, _b_mail) = hub.register().unwrap();
    a.join("x").unwrap();
    a.join("y").unwrap();
    b.join("y").unwrap();
    assert!(a.leave("x"));
    assert!(!a.leave("x"));
    assert_eq!(hub.room_count("x"), 0);
    assert!(
        !hub.rooms().iter().any(|r| &**r == "x"),
        "an empty room is removed"
    );
    drop((a, a_mail));
    assert_eq!(hub.room_count("y"), 1);
    drop(b);
    assert!(hub.rooms().is_empty());
}

#[test]
fn presence_reports_joins_and_leaves_to_subscribers() {
    let hub: Hub<String> = Hub::new();
    let mut presence = hub.presence();
    let (a, _a_mail) = hub.register().unwrap();
    let (b, _b_mail) = hub.register().unwrap();
    a.join("lobby").unwrap();
    b.join("lobby").unwrap();
    b.leave("lobby");
    drop(a);
    let events: Vec<Presence> = std::iter::from_fn(|| presence.try_recv().ok()).collect();
    let expected = [
        Presence::Joined {
            room: "lobby".into(),
            client: a_id(&events, 0),
            members: 1,
        },
        Presence::Joined {
            room: "lobby".into(),
            client: b.id(),
            members: 2,
        },
        Presence::Left {
            room: "lobby".into(),
            client: b.id(),
            members: 1,
        },
        Presence::Left {
            room: "lobby".into(),
            client: a_id(&events, 0),
            members: 0,
        },
    ];
    assert_eq!(events, expected);
}

fn a_id(events: &[Presence], i: usize) -> wshub::ClientId {
    match &events[i] {
        Presence::Joined { client, .. } | Presence::Left { client, .. } => *client,
        _ => unreachable!(),
    }
}

#[test]
fn a_client_too_slow_in_a_room_is_evicted_from_the_hub() {
    let hub: Hub<String> = Hub::with_config(
        HubConfig::default()
            .mailbox_capacity(2)
            .overflow(OverflowPolicy::Disconnect),
    );
    let (slow, mut slow_mail) = hub.register().unwrap();
    let (fast, mut fast_mail) = hub.register().unwrap();
    slow.join("r").unwrap();
    fast.join("r").unwrap();
    for i in 0..3 {
        hub.broadcast_to("r", i.to_string());
        drain(&mut fast_mail);
    }
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    assert_eq!(
        slow_mail.poll_recv_many(&mut cx, &mut out, 10),
        Poll::Ready(Err(CloseReason::Evicted))
    );
    assert_eq!(hub.client_count(), 1);
    assert!(matches!(
        slow.send(s("late")).map_err(|e| e.into_parts().0),
        Err(Error::ClientClosed(_))
    ));
    let stats = hub.stats();
    assert_eq!(stats.evicted, 1);
    drop((slow, slow_mail));
    assert_eq!(hub.room_count("r"), 1);
    let stats = hub.stats();
    assert_eq!(stats.sent, stats.delivered + stats.dropped, "{stats:?}");
}

#[tokio::test]
async fn a_parked_receiver_wakes_for_its_room() {
    let hub: Hub<String> = Hub::new();
    let (a, mut mail) = hub.register().unwrap();
    let waiter = tokio::spawn(async move {
        let got = mail.recv().await;
        (got, mail)
    });
    tokio::task::yield_now().await;
    a.join("r").unwrap();
    hub.broadcast_to("r", s("hello"));
    let (got, _mail) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Ok(s("hello")));
}

#[tokio::test]
async fn shutdown_delivers_room_messages_then_closes() {
    let hub: Hub<String> = Hub::new();
    let (a, mut mail) = hub.register().unwrap();
    a.join("r").unwrap();
    hub.broadcast_to("r", s("last"));
    hub.shutdown();
    assert_eq!(hub.broadcast_to("r", s("too late")), 0);
    assert!(matches!(a.join("other"), Err(Error::Shutdown)));
    assert_eq!(mail.recv().await, Ok(s("last")));
    assert_eq!(mail.recv().await, Err(CloseReason::Shutdown));
}

#[test]
fn a_client_evicted_by_the_hub_leaves_its_rooms() {
    let hub: Hub<String> = Hub::with_config(HubConfig::default().mailbox_capacity(2));
    let (slow, mut slow_mail) = hub.register().unwrap();
    let (other, _other_mail) = hub.register().unwrap();
    slow.join("r").unwrap();
    other.join("r").unwrap();
    for i in 0..3 {
        hub.broadcast(i.to_string());
    }
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    assert_eq!(
        slow_mail.poll_recv_many(&mut cx, &mut out, 10),
        Poll::Ready(Err(CloseReason::Evicted))
    );
    assert_eq!(
        hub.room_count("r"),
        1,
        "the evicted client still holds a room membership"
    );
}
