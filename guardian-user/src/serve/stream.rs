//! `GET /events`: the event stream, as a WebSocket or (for `Accept: text/event-stream`) as
//! Server-Sent Events. Every client first gets the current status (`{"type":"status"}`), then
//! each event as one JSON text; a client that fell more than
//! [`EVENT_BUFFER`](crate::publish::EVENT_BUFFER) events behind gets the status again
//! (`"resync": true`) and continues from there — the core never waits for it. Clients read
//! from the [relay](super::relay), never from the core: an event's text is made once and
//! shared by every client, and a burst of events queued behind one costs a client one write.

use super::relay::{Item, Relay};
use super::{AppState, MAX_STREAMS};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// The read buffer of a WebSocket client, and the largest message it may send: clients only
/// ping and close (tungstenite's default is 128 KiB a client, allocated at the upgrade).
const CLIENT_BUFFER: usize = 4096;

/// A slot among [`MAX_STREAMS`]; given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Option<Slot> {
        let before = count.fetch_add(1, Ordering::Relaxed);
        if before >= MAX_STREAMS {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a client stands in the event stream (the relay's, not the core's).
struct Feed {
    rx: tokio::sync::broadcast::Receiver<Item>,
    relay: Arc<Relay>,
    first: Option<Utf8Bytes>,
}

/// One text to send and its `type` (the SSE `event:` field); the text is shared, not copied.
struct Text {
    kind: &'static str,
    json: Utf8Bytes,
}

impl Feed {
    fn new(relay: &Arc<Relay>) -> Feed {
        // Subscribe before taking the status: nothing falls between the two.
        let rx = relay.subscribe();
        Feed {
            first: Some(relay.status_text(false)),
            rx,
            relay: relay.clone(),
        }
    }

    /// The next text to send, waiting for it; `None` when the daemon stops.
    async fn next(&mut self) -> Option<Text> {
        if let Some(first) = self.first.take() {
            return Some(status_text(first));
        }
        match self.rx.recv().await {
            Ok(item) => Some(self.text(item)),
            Err(RecvError::Lagged(_)) => Some(self.resync()),
            Err(RecvError::Closed) => None,
        }
    }

    /// The next text already queued, without waiting (so a client that wakes for one event
    /// sends everything queued behind it in one write).
    fn queued(&mut self) -> Option<Text> {
        use tokio::sync::broadcast::error::TryRecvError;
        match self.rx.try_recv() {
            Ok(item) => Some(self.text(item)),
            Err(TryRecvError::Lagged(_)) => Some(self.resync()),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        }
    }

    fn text(&self, item: Item) -> Text {
        match item {
            Item::Event { kind, text } => Text { kind, json: text },
            Item::Resync => self.resync(),
        }
    }

    fn resync(&self) -> Text {
        status_text(self.relay.status_text(true))
    }
}

fn status_text(json: Utf8Bytes) -> Text {
    Text {
        kind: "status",
        json,
    }
}

pub(super) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Some(slot) = Slot::take(&state.streams) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many event streams\n").into_response();
    };
    if let Ok(ws) = ws {
        let feed = Feed::new(&state.relay);
        return ws
            .read_buffer_size(CLIENT_BUFFER)
            .max_message_size(CLIENT_BUFFER)
            .max_frame_size(CLIENT_BUFFER)
            .on_upgrade(move |socket| websocket(socket, feed, slot));
    }
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_sse {
        return (
            StatusCode::BAD_REQUEST,
            "/events is a WebSocket, or Server-Sent Events with `Accept: text/event-stream`\n",
        )
            .into_response();
    }
    let feed = Feed::new(&state.relay);
    let stream = futures_util::stream::unfold((feed, slot), |(mut feed, slot)| async move {
        let text = feed.next().await?;
        let event = SseEvent::default()
            .event(text.kind)
            .data(text.json.as_str());
        Some((Ok::<_, Infallible>(event), (feed, slot)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn websocket(mut socket: WebSocket, mut feed: Feed, _slot: Slot) {
    use futures_util::SinkExt;
    loop {
        tokio::select! {
            next = feed.next() => {
                let Some(text) = next else { break };
                // Everything already queued goes out with it, flushed once: a burst of events
                // (a cycle's start, its actions) costs each client one write, not one per event.
                let mut sent = socket.feed(Message::Text(text.json)).await;
                while sent.is_ok() {
                    let Some(text) = feed.queued() else { break };
                    sent = socket.feed(Message::Text(text.json)).await;
                }
                if sent.is_err() || socket.flush().await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                // Pings are answered by the library; anything else from the client is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{Hub, EVENT_BUFFER};
    use crate::serve::test_events::{changed, runtime};

    #[test]
    fn a_client_sends_what_is_queued_behind_an_event_in_order_then_waits() {
        let hub = Hub::new();
        let (relay, from_core) = Relay::new(&hub);
        let mut feed = Feed::new(&relay);
        for i in 0..3 {
            hub.publish(changed(i));
        }
        let rt = runtime();
        rt.spawn(super::super::relay::run(relay.clone(), from_core));
        let first = rt.block_on(feed.next()).unwrap();
        assert_eq!(first.kind, "status");
        let next = rt.block_on(feed.next()).unwrap();
        assert_eq!(next.kind, "source_changed");
        assert!(next.json.contains("\"to\":\"0\""), "{}", next.json.as_str());
        // The two that followed the first are handed on together when the relay's hold ends:
        // the client wakes for one and finds the other queued behind it.
        let after = rt.block_on(feed.next()).unwrap();
        assert!(
            after.json.contains("\"to\":\"1\""),
            "{}",
            after.json.as_str()
        );
        let queued: Vec<Utf8Bytes> = std::iter::from_fn(|| feed.queued().map(|t| t.json)).collect();
        assert_eq!(queued.len(), 1);
        assert!(queued[0].contains("\"to\":\"2\""));
        assert!(feed.queued().is_none());
    }

    #[test]
    fn a_client_that_fell_behind_while_draining_gets_the_status_again() {
        let hub = Hub::new();
        let (relay, from_core) = Relay::new(&hub);
        let mut feed = Feed::new(&relay);
        feed.first = None;
        let rt = runtime();
        rt.spawn(super::super::relay::run(relay.clone(), from_core));
        // Published in steps the relay keeps up with: the client alone falls behind.
        // (64 at a time: fewer than a task's cooperative budget, so one yield drains them.)
        for step in 0..(2 * EVENT_BUFFER / 64) {
            for i in 0..64 {
                hub.publish(changed(step * 64 + i));
            }
            rt.block_on(tokio::task::yield_now());
        }
        let resync = feed.queued().unwrap();
        assert_eq!(resync.kind, "status");
        assert!(
            resync.json.contains("\"resync\":true"),
            "{}",
            resync.json.as_str()
        );
        assert_eq!(feed.queued().unwrap().kind, "source_changed");
    }

    #[test]
    fn a_thousand_streams_are_one_receiver_of_the_core() {
        let hub = Hub::new();
        let (relay, _from_core) = Relay::new(&hub);
        let feeds: Vec<Feed> = (0..1000).map(|_| Feed::new(&relay)).collect();
        // What one publish wakes on the core's thread: the relay, not each client.
        assert_eq!(hub.receivers(), 1);
        drop(feeds);
    }
}
