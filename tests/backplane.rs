//! Rooms across hubs through the in-memory backplane: exactly once, no leaks, no echoes.

mod common;

use wshub::backplane::{InMemoryBackplane, Node};
use wshub::{Hub, Message};

#[tokio::test]
async fn a_room_broadcast_reaches_every_member_on_every_node_once() {
    let bus = InMemoryBackplane::new();
    let (hub_a, hub_b) = (Hub::new(), Hub::new());
    let node_a = Node::new(hub_a.clone(), bus.clone());
    let node_b = Node::new(hub_b.clone(), bus.clone());

    let (a1, mut a1_mail) = hub_a.register().unwrap();
    let (a2, mut a2_mail) = hub_a.register().unwrap();
    let (b1, mut b1_mail) = hub_b.register().unwrap();
    let (other, mut other_mail) = hub_b.register().unwrap();
    for c in [&a1, &a2] {
        c.join("r").unwrap();
    }
    b1.join("r").unwrap();
    other.join("elsewhere").unwrap();

    assert_eq!(node_a.broadcast_to("r", Message::text("from A")), 2);
    assert_eq!(node_b.broadcast_to("r", Message::text("from B")), 1);
    for mail in [&mut a1_mail, &mut a2_mail, &mut b1_mail] {
        let mut got = vec![
            common::next_in_mailbox(mail).await,
            common::next_in_mailbox(mail).await,
        ];
        got.sort();
        assert_eq!(got, ["from A", "from B"]);
        assert!(common::mailbox_quiet(mail).await, "a message arrived twice");
    }
    assert!(
        common::mailbox_quiet(&mut other_mail).await,
        "a room leaked into another"
    );
    assert_eq!(node_a.stats().echoes_ignored, 1);
    assert_eq!(node_b.stats().received, 1);

    drop((a1, a2, b1, other));
    assert_eq!(hub_a.room_count("r") + hub_b.room_count("r"), 0);
    assert!(hub_a.rooms().is_empty() && hub_b.rooms().is_empty());
}

#[tokio::test]
async fn a_node_whose_room_is_empty_delivers_nothing_and_keeps_working() {
    let bus = InMemoryBackplane::new();
    let (hub_a, hub_b) = (Hub::new(), Hub::new());
    let node_a = Node::new(hub_a.clone(), bus.clone());
    let node_b = Node::new(hub_b.clone(), bus);
    // Nobody on B is in "r": the envelope arrives and goes nowhere.
    node_a.broadcast_to("r", Message::text("nobody there"));
    common::wait_for(|| node_b.stats().received == 1).await;
    let (b1, mut b1_mail) = hub_b.register().unwrap();
    b1.join("r").unwrap();
    node_a.broadcast_to("r", Message::text("now someone"));
    assert_eq!(common::next_in_mailbox(&mut b1_mail).await, "now someone");
    assert!(common::mailbox_quiet(&mut b1_mail).await);
}

#[tokio::test]
async fn a_node_that_falls_behind_the_in_memory_bus_counts_what_it_lost() {
    use wshub::backplane::{Backplane, Envelope, Payload};

    let bus = InMemoryBackplane::new();
    // A subscriber that reads nothing yet: its forwarding task blocks on the first envelope
    // and the bus (4 096 envelopes) overflows behind it.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    bus.subscribe(tx);
    const SENT: u64 = 6_000;
    for i in 0..SENT {
        let envelope = Envelope {
            origin: 1,
            room: "r".into(),
            payload: Payload::Text(bytes::Bytes::from(i.to_string())),
        };
        bus.publish(envelope).unwrap();
    }
    let mut received = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await
    {
        received += 1;
    }
    assert!(bus.lost() > 0, "the overflow was not counted");
    assert_eq!(received + bus.lost(), SENT, "lost {}", bus.lost());
}
