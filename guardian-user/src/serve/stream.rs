//! `GET /events`: the event stream, as a WebSocket or (for `Accept: text/event-stream`) as
//! Server-Sent Events. Every client first gets the current status (`{"type":"status"}`), then
//! each event as one JSON text; a client that fell more than
//! [`EVENT_BUFFER`](crate::publish::EVENT_BUFFER) events behind gets the status again
//! (`"resync": true`) and continues from there — the core never waits for it.

use super::{AppState, MAX_STREAMS};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

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

/// Where a client stands in the event stream.
struct Feed {
    rx: tokio::sync::broadcast::Receiver<Arc<crate::publish::Published>>,
    hub: crate::publish::Hub,
    first: Option<String>,
}

/// One text to send and its `type` (the SSE `event:` field).
struct Text {
    kind: &'static str,
    json: String,
}

impl Feed {
    fn new(hub: &crate::publish::Hub) -> Feed {
        // Subscribe before taking the status: nothing falls between the two.
        let rx = hub.subscribe();
        Feed {
            first: Some(hub.status_event(false)),
            rx,
            hub: hub.clone(),
        }
    }

    /// The next text to send, waiting for it; `None` when the daemon stops.
    async fn next(&mut self) -> Option<Text> {
        if let Some(first) = self.first.take() {
            return Some(status_text(first));
        }
        let received = self.rx.recv().await;
        self.received(received)
    }

    /// The next text already queued, without waiting (so a client that wakes for one event
    /// sends everything queued behind it in one write).
    fn queued(&mut self) -> Option<Text> {
        use tokio::sync::broadcast::error::TryRecvError;
        match self.rx.try_recv() {
            Ok(p) => Some(text(&p)),
            Err(TryRecvError::Lagged(_)) => Some(status_text(self.hub.status_event(true))),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        }
    }

    fn received(
        &self,
        received: Result<Arc<crate::publish::Published>, RecvError>,
    ) -> Option<Text> {
        match received {
            Ok(p) => Some(text(&p)),
            Err(RecvError::Lagged(_)) => Some(status_text(self.hub.status_event(true))),
            Err(RecvError::Closed) => None,
        }
    }
}

fn text(p: &crate::publish::Published) -> Text {
    Text {
        kind: p.event.kind(),
        json: p.json.clone(),
    }
}

fn status_text(json: String) -> Text {
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
        let feed = Feed::new(&state.hub);
        return ws.on_upgrade(move |socket| websocket(socket, feed, slot));
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
    let feed = Feed::new(&state.hub);
    let stream = futures_util::stream::unfold((feed, slot), |(mut feed, slot)| async move {
        let text = feed.next().await?;
        let event = SseEvent::default().event(text.kind).data(text.json);
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
                let mut sent = socket.feed(Message::Text(text.json.into())).await;
                while sent.is_ok() {
                    let Some(text) = feed.queued() else { break };
                    sent = socket.feed(Message::Text(text.json.into())).await;
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
    use crate::publish::{Event, Hub, EVENT_BUFFER};

    fn changed(i: usize) -> Event {
        Event::SourceChanged {
            from: "a".into(),
            to: format!("{i}"),
            degraded: None,
        }
    }

    #[test]
    fn a_client_sends_what_is_queued_behind_an_event_in_order_then_waits() {
        let hub = Hub::new();
        let mut feed = Feed::new(&hub);
        for i in 0..3 {
            hub.publish(changed(i));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let first = rt.block_on(feed.next()).unwrap();
        assert_eq!(first.kind, "status");
        let next = rt.block_on(feed.next()).unwrap();
        assert_eq!(next.kind, "source_changed");
        assert!(next.json.contains("\"to\":\"0\""), "{}", next.json);
        let queued: Vec<String> = std::iter::from_fn(|| feed.queued().map(|t| t.json)).collect();
        assert_eq!(queued.len(), 2);
        assert!(queued[0].contains("\"to\":\"1\"") && queued[1].contains("\"to\":\"2\""));
        assert!(feed.queued().is_none());
    }

    #[test]
    fn a_client_that_fell_behind_while_draining_gets_the_status_again() {
        let hub = Hub::new();
        let mut feed = Feed::new(&hub);
        feed.first = None;
        for i in 0..EVENT_BUFFER + 5 {
            hub.publish(changed(i));
        }
        let resync = feed.queued().unwrap();
        assert_eq!(resync.kind, "status");
        assert!(resync.json.contains("\"resync\":true"), "{}", resync.json);
        assert_eq!(feed.queued().unwrap().kind, "source_changed");
    }
}
