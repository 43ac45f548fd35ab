//! The event streams' one subscriber of the core: a task on the server's runtime receives each
//! event from the [`Hub`], wraps its JSON (written once by the publisher) in a shared
//! WebSocket text, and hands it to every `/events` client through a broadcast of the server's
//! own runtime — the first event after a quiet spell at once, those that follow within
//! [`HOLD`] together, a cycle's end at once ([`Batch`]), so a burst costs each client one
//! write; it also keeps the
//! status event texts, made once per status change.
//!
//! Why: a `tokio::sync::broadcast::send` wakes every waiting receiver on the sender's thread,
//! and waking a task of another thread's runtime costs that thread a lock of the runtime's
//! queue and an `eventfd` write. With a receiver per client the core paid that a thousand
//! times per event; now it pays it once, and the clients are woken by the relay, on the
//! server's own thread, where a wake is a push onto the local run queue.
//!
//! Invariants: the relay never blocks the core (a relay that falls behind the core's buffer
//! loses the oldest events and tells every client to resync); a client that falls behind the
//! relay's buffer gets the status again (`"resync": true`); nothing is serialized per client.

use super::batch::{Batch, HOLD};
use crate::publish::{Event, Hub, Published, EVENT_BUFFER};
use axum::extract::ws::Utf8Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// What the relay hands to the clients.
#[derive(Clone, Debug)]
pub(super) enum Item {
    /// An event: its `type` (the SSE `event:` field) and its JSON, shared by every client.
    Event { kind: &'static str, text: Utf8Bytes },
    /// The relay fell behind the core and lost events: every client sends the status again.
    Resync,
}

/// The relay's side shared with the request handlers.
pub(super) struct Relay {
    hub: Hub,
    tx: broadcast::Sender<Item>,
    status: Mutex<StatusTexts>,
}

/// The status event texts of one status snapshot (`None` until first asked for).
struct StatusTexts {
    of: Arc<str>,
    fresh: Option<Utf8Bytes>,
    resync: Option<Utf8Bytes>,
}

/// The relay's receiver of the core's events, to be run by [`run`] on the server's runtime.
pub(super) struct FromCore(broadcast::Receiver<Arc<Published>>);

impl Relay {
    /// A relay of `hub`'s events, subscribed now (so nothing published after this returns is
    /// missed); its task is [`run`].
    pub(super) fn new(hub: &Hub) -> (Arc<Relay>, FromCore) {
        let from_core = FromCore(hub.subscribe());
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        let relay = Relay {
            status: Mutex::new(StatusTexts {
                of: hub.status(),
                fresh: None,
                resync: None,
            }),
            hub: hub.clone(),
            tx,
        };
        (Arc::new(relay), from_core)
    }

    /// A receiver of what the relay hands on from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Item> {
        self.tx.subscribe()
    }

    /// The current status as an event text (`"resync": true` after a client fell behind),
    /// made once per status snapshot and shared by every client that asks.
    pub(super) fn status_text(&self, resync: bool) -> Utf8Bytes {
        let now = self.hub.status();
        let mut texts = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&texts.of, &now) {
            *texts = StatusTexts {
                of: now.clone(),
                fresh: None,
                resync: None,
            };
        }
        let slot = if resync {
            &mut texts.resync
        } else {
            &mut texts.fresh
        };
        slot.get_or_insert_with(|| Utf8Bytes::from(Hub::status_event_of(&now, resync)))
            .clone()
    }
}

/// Hands every event of the core on to the clients until the hub is gone: the ones that arrive
/// within [`HOLD`](super::batch::HOLD) of a quiet spell's first together, a cycle's end at once
/// with what was held (see [`Batch`]).
pub(super) async fn run(relay: Arc<Relay>, from_core: FromCore) {
    let FromCore(mut rx) = from_core;
    // At most a quarter of the clients' buffer at once, so a client that was up to date never
    // falls behind by a batch alone.
    let mut batch = Batch::new(HOLD, EVENT_BUFFER / 4);
    loop {
        let received = match batch.deadline() {
            Some(at) => tokio::select! {
                received = rx.recv() => Some(received),
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => None,
            },
            None => Some(rx.recv().await),
        };
        let now = Instant::now();
        let out = match received {
            None => batch.due(now),
            Some(Ok(published)) => batch.arrived(
                Item::Event {
                    kind: published.event.kind(),
                    text: Utf8Bytes::from(published.json.as_str()),
                },
                matches!(published.event, Event::CleanupFinished { .. }),
                now,
            ),
            Some(Err(RecvError::Lagged(_))) => batch.arrived(Item::Resync, false, now),
            Some(Err(RecvError::Closed)) => {
                for item in batch.drain() {
                    let _ = relay.tx.send(item);
                }
                return;
            }
        };
        for item in out {
            // An error only says no client listens now.
            let _ = relay.tx.send(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::test_events::{changed, runtime};

    #[test]
    fn a_thousand_clients_are_one_receiver_of_the_core() {
        let hub = Hub::new();
        let (relay, from_core) = Relay::new(&hub);
        let clients: Vec<_> = (0..1000).map(|_| relay.subscribe()).collect();
        // The core's send wakes the relay alone, however many clients listen.
        assert_eq!(hub.receivers(), 1);
        assert_eq!(relay.tx.receiver_count(), 1000);
        hub.publish(changed(7));
        let rt = runtime();
        rt.block_on(async {
            tokio::spawn(run(relay.clone(), from_core));
            let mut clients = clients;
            for rx in &mut clients {
                match rx.recv().await.unwrap() {
                    Item::Event { kind, text } => {
                        assert_eq!(kind, "source_changed");
                        assert!(text.contains("\"to\":\"7\""), "{}", text.as_str());
                    }
                    Item::Resync => panic!("no resync expected"),
                }
            }
        });
    }

    #[test]
    fn every_client_shares_one_text_of_an_event() {
        let hub = Hub::new();
        let (relay, from_core) = Relay::new(&hub);
        let (mut a, mut b) = (relay.subscribe(), relay.subscribe());
        hub.publish(changed(1));
        runtime().block_on(async {
            tokio::spawn(run(relay.clone(), from_core));
            let (Item::Event { text: ta, .. }, Item::Event { text: tb, .. }) =
                (a.recv().await.unwrap(), b.recv().await.unwrap())
            else {
                panic!("events expected");
            };
            assert_eq!(ta.as_str().as_ptr(), tb.as_str().as_ptr());
        });
    }

    #[test]
    fn a_relay_that_fell_behind_the_core_tells_every_client_to_resync() {
        let hub = Hub::new();
        let (relay, from_core) = Relay::new(&hub);
        let mut client = relay.subscribe();
        for i in 0..EVENT_BUFFER + 3 {
            hub.publish(changed(i));
        }
        runtime().block_on(async {
            tokio::spawn(run(relay.clone(), from_core));
            assert!(matches!(client.recv().await.unwrap(), Item::Resync));
            let Item::Event { text, .. } = client.recv().await.unwrap() else {
                panic!("an event expected after the resync");
            };
            // The oldest three were lost; the relay goes on from the oldest kept.
            assert!(text.contains("\"to\":\"3\""), "{}", text.as_str());
        });
    }

    #[test]
    fn the_status_text_is_made_once_per_status_and_again_when_it_changes() {
        let hub = Hub::new();
        hub.set_status("{\"pid\":1,\"source\":\"ebpf\"}".into());
        let (relay, _from_core) = Relay::new(&hub);
        let first = relay.status_text(false);
        let again = relay.status_text(false);
        assert_eq!(first.as_str().as_ptr(), again.as_str().as_ptr());
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(v["type"], "status");
        assert_eq!(v["resync"], false);
        assert_eq!(v["status"]["source"], "ebpf");
        let resync: serde_json::Value = serde_json::from_str(&relay.status_text(true)).unwrap();
        assert_eq!(resync["resync"], true);
        assert_eq!(resync["status"]["pid"], 1);
        hub.set_status("{\"pid\":2}".into());
        let changed: serde_json::Value = serde_json::from_str(&relay.status_text(false)).unwrap();
        assert_eq!(changed["status"]["pid"], 2);
    }
}
