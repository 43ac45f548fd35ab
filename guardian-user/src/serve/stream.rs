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

    /// The next text to send; `None` when the daemon stops.
    async fn next(&mut self) -> Option<String> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        match self.rx.recv().await {
            Ok(p) => Some(p.json.clone()),
            Err(RecvError::Lagged(_)) => Some(self.hub.status_event(true)),
            Err(RecvError::Closed) => None,
        }
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
        let kind = event_type(&text);
        let event = SseEvent::default().event(kind).data(text);
        Some((Ok::<_, Infallible>(event), (feed, slot)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The `type` of an event's JSON (for the SSE `event:` field).
fn event_type(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(String::from))
        .unwrap_or_else(|| "message".into())
}

async fn websocket(mut socket: WebSocket, mut feed: Feed, _slot: Slot) {
    loop {
        tokio::select! {
            next = feed.next() => {
                let Some(text) = next else { break };
                if socket.send(Message::Text(text.into())).await.is_err() {
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
