//! `[[serve.webhooks]]`: events POSTed to a receiver as an Alertmanager v4 webhook payload (so
//! receivers written for Alertmanager accept them), on the serve thread's runtime. Each webhook
//! has a queue of at most [`QUEUE`] events that drops the oldest when full (counted in
//! `guardian_webhook_dropped_total`), and a sender that tries each delivery [`ATTEMPTS`] times
//! with doubling back-off and a time limit per attempt.
//!
//! Invariants: the core never waits on a webhook (events arrive through the hub's broadcast;
//! a webhook that falls behind loses events and counts them); queues are bounded; a receiver
//! that is down costs log lines at most once a minute per webhook.

use crate::config::{Target, Webhook};
use crate::publish::{Event, Hub, Published};
use axum::body::Bytes;
use http_body_util::Full;
use serde_json::json;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

/// Events queued per webhook; the oldest goes when a new one arrives at a full queue.
pub const QUEUE: usize = 256;
/// Tries per delivery.
pub const ATTEMPTS: u32 = 5;
/// Wait after the first failed try; doubled after each.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Time limit of one try (connect, send, response head).
const TRY_LIMIT: Duration = Duration::from_secs(10);

/// A webhook and its receiver of events, subscribed when the server is spawned.
pub struct Subscribed {
    hook: Webhook,
    rx: tokio::sync::broadcast::Receiver<Arc<Published>>,
}

/// Subscribes every webhook to the hub now (no runtime needed).
pub fn subscribe(hooks: &[Webhook], hub: &Hub) -> Vec<Subscribed> {
    hooks
        .iter()
        .map(|hook| Subscribed {
            hook: hook.clone(),
            rx: hub.subscribe(),
        })
        .collect()
}

/// Runs every webhook until the runtime stops.
pub(super) async fn run_all(hooks: Vec<Subscribed>, hub: Hub) {
    let node = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let runs = hooks
        .into_iter()
        .enumerate()
        .map(|(i, s)| run_one(i, s, hub.clone(), node.clone()));
    futures_util::future::join_all(runs).await;
}

/// A bounded queue that drops its oldest entry when full; returns how many were dropped.
fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, limit: usize) -> u64 {
    queue.push_back(item);
    let mut dropped = 0;
    while queue.len() > limit {
        queue.pop_front();
        dropped += 1;
    }
    dropped
}

async fn run_one(index: usize, subscribed: Subscribed, hub: Hub, node: String) {
    let Subscribed { hook, mut rx } = subscribed;
    let Ok(target) = hook.target() else {
        return; // refused at config load
    };
    let tls = if target.tls {
        match tls_for(&hook, &target) {
            Ok(tls) => Some(tls),
            Err(e) => {
                // An explicit choice that cannot be honoured: the webhook sends nothing and
                // the status says why (no fall back to other roots or to plain HTTP).
                let what = PROBLEM_KEYS.get(index).copied().unwrap_or("webhook");
                hub.set_problem(what, Some(format!("webhook {}: {e}", hook.url)));
                crate::warn_quiet!(&format!("serve.webhook.{index}"), url = %hook.url, error = %e, "webhook cannot verify TLS: disabled");
                return;
            }
        }
    } else {
        None
    };
    let queue: RefCell<VecDeque<Arc<Published>>> = RefCell::new(VecDeque::new());
    let ready = Notify::new();
    let counters = hub.counters.clone();
    let collect = async {
        loop {
            match rx.recv().await {
                Ok(p) => {
                    if hook.events.iter().any(|e| e == p.event.kind())
                        && p.event.severity() >= hook.min_level
                    {
                        let dropped = push_bounded(&mut queue.borrow_mut(), p, QUEUE);
                        if dropped > 0 {
                            counters.webhook_dropped(index, dropped);
                        }
                        ready.notify_one();
                    }
                }
                Err(RecvError::Lagged(n)) => counters.webhook_dropped(index, n),
                Err(RecvError::Closed) => break,
            }
        }
    };
    let send = async {
        loop {
            let next = queue.borrow_mut().pop_front();
            let Some(p) = next else {
                ready.notified().await;
                continue;
            };
            let body = payload(&p.event, &node).to_string();
            let mut wait = FIRST_BACKOFF;
            let mut sent = false;
            for attempt in 1..=ATTEMPTS {
                match tokio::time::timeout(TRY_LIMIT, post(&target, tls.as_ref(), &body)).await {
                    Ok(Ok(())) => {
                        sent = true;
                        break;
                    }
                    Ok(Err(e)) => {
                        crate::warn_quiet!(&format!("serve.webhook.{index}"), url = %hook.url, attempt, error = %e, "webhook delivery failed");
                    }
                    Err(_) => {
                        crate::warn_quiet!(&format!("serve.webhook.{index}"), url = %hook.url, attempt, "webhook delivery timed out");
                    }
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
            }
            counters.webhook_delivered(index, sent);
        }
    };
    tokio::join!(collect, send);
}

/// The status problem keys of webhooks by index (at most `MAX_WEBHOOKS`).
const PROBLEM_KEYS: [&str; crate::config::MAX_WEBHOOKS] = [
    "webhook.0",
    "webhook.1",
    "webhook.2",
    "webhook.3",
    "webhook.4",
    "webhook.5",
    "webhook.6",
    "webhook.7",
    "webhook.8",
    "webhook.9",
    "webhook.10",
    "webhook.11",
    "webhook.12",
    "webhook.13",
    "webhook.14",
    "webhook.15",
];

#[cfg(target_os = "linux")]
type Tls = (
    tokio_rustls::TlsConnector,
    tokio_rustls::rustls::pki_types::ServerName<'static>,
);
/// No TLS in this build: `https://` is refused at config load.
#[cfg(not(target_os = "linux"))]
type Tls = std::convert::Infallible;

#[cfg(target_os = "linux")]
fn tls_for(hook: &Webhook, target: &Target) -> Result<Tls, String> {
    let connector = super::tls::connector(hook.ca_file.as_deref())?;
    Ok((connector, super::tls::server_name(&target.host)?))
}

#[cfg(not(target_os = "linux"))]
fn tls_for(_: &Webhook, _: &Target) -> Result<Tls, String> {
    Err("https:// webhooks are not built on this platform".into())
}

/// One POST; `Ok` on a 2xx answer. Over TLS when `tls` is given (the receiver's certificate
/// verified for the URL's host).
async fn post(target: &Target, tls: Option<&Tls>, body: &str) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match tls {
        #[cfg(target_os = "linux")]
        Some((connector, name)) => {
            let stream = connector
                .connect(name.clone(), stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(stream, target, body).await
        }
        #[cfg(not(target_os = "linux"))]
        Some(never) => match *never {},
        None => exchange(stream, target, body).await,
    }
}

/// The HTTP/1.1 request and its answer over a connected stream.
async fn exchange<IO>(stream: IO, target: &Target, body: &str) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (host, port, path) = (&target.host, target.port, &target.path);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = hyper::Request::post(path.as_str())
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("guardian/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("request: {e}"))?;
    // The connection is driven until the response arrives; when it ends first (the receiver
    // closed it), the response it may have delivered on the way is still taken.
    let mut conn = std::pin::pin!(conn);
    let mut send = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        r = &mut send => r,
        _ = &mut conn => send.await,
    }
    .map_err(|e| format!("send: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}

/// The Alertmanager v4 webhook payload for `event`: one alert, `firing` (a crossing back to
/// `ok` is `resolved`), labels `alertname`, `severity`, `instance` (the node), `mountpoint` /
/// `rule` where the event has them, the event itself as JSON in the `event` annotation.
pub fn payload(event: &Event, node: &str) -> serde_json::Value {
    let alertname = match event.kind() {
        "disk_pressure" => "GuardianDiskPressure",
        "threshold_crossed" => "GuardianThresholdCrossed",
        "forecast_trigger" => "GuardianForecastTrigger",
        "cleanup_started" => "GuardianCleanupStarted",
        "action" => "GuardianAction",
        "cleanup_finished" => "GuardianCleanupFinished",
        "ghost_reaped" => "GuardianGhostReaped",
        "source_changed" => "GuardianSourceChanged",
        _ => "GuardianStatus",
    };
    let resolved = matches!(
        event,
        Event::ThresholdCrossed {
            to: crate::policy::Pressure::Ok,
            ..
        }
    );
    let status = if resolved { "resolved" } else { "firing" };
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), json!(alertname));
    labels.insert("severity".into(), json!(event.severity().as_str()));
    labels.insert("instance".into(), json!(node));
    let (summary, mount) = describe(event);
    if let Some(m) = &mount {
        labels.insert("mountpoint".into(), json!(m));
    }
    if let Event::Action { record } | Event::GhostReaped { record } = event {
        labels.insert("rule".into(), json!(record.rule));
    }
    let now = crate::cleanup::audit::timestamp(SystemTime::now());
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        alertname.hash(&mut h);
        node.hash(&mut h);
        mount.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let event_json = serde_json::to_string(event).unwrap_or_default();
    let labels = serde_json::Value::Object(labels);
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "guardian",
        "groupLabels": { "alertname": alertname },
        "commonLabels": labels,
        "commonAnnotations": { "summary": summary },
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": { "summary": summary, "event": event_json },
            "startsAt": now,
            "endsAt": if resolved { now.clone() } else { "0001-01-01T00:00:00Z".to_string() },
            "generatorURL": "",
            "fingerprint": fingerprint,
        }],
    })
}

/// A one-line summary and the mount point the event is about, if any.
fn describe(event: &Event) -> (String, Option<String>) {
    let shown = |p: &std::path::Path| crate::textpath::escape(p);
    match event {
        Event::DiskPressure {
            level,
            scope,
            path,
            used,
            limit,
        } => (
            format!(
                "{level:?} disk pressure ({scope:?}{}): {used} bytes used, limit {limit}",
                path.as_deref()
                    .map(|p| format!(" {}", shown(p)))
                    .unwrap_or_default()
            ),
            path.as_deref().map(shown),
        ),
        Event::ThresholdCrossed {
            mount,
            from,
            to,
            reason,
            ..
        } => (
            format!("{}: {from:?} → {to:?} ({reason})", shown(mount)),
            Some(shown(mount)),
        ),
        Event::ForecastTrigger { mount, trigger, .. } => (
            format!("{}: forecast: {trigger}", shown(mount)),
            Some(shown(mount)),
        ),
        Event::CleanupStarted { mount, trigger, .. } => (
            format!("{}: cleanup started ({trigger})", shown(mount)),
            Some(shown(mount)),
        ),
        Event::CleanupFinished { summary, .. } => (
            format!(
                "{}: cleanup finished, {} bytes freed, target {}",
                shown(&summary.mount),
                summary.bytes_freed,
                if summary.reached_target {
                    "reached".to_string()
                } else {
                    format!("missed: {}", summary.shortfall.as_deref().unwrap_or(""))
                }
            ),
            Some(shown(&summary.mount)),
        ),
        Event::Action { record } | Event::GhostReaped { record } => (
            format!(
                "{} {}: {}",
                record.action,
                shown(&record.path),
                record.outcome
            ),
            None,
        ),
        Event::SourceChanged { from, to, degraded } => (
            format!(
                "write source {from} → {to}{}",
                degraded
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            None,
        ),
        Event::Status { .. } => ("status".into(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let mut q = VecDeque::new();
        let mut dropped = 0;
        for i in 0..(QUEUE + 7) {
            dropped += push_bounded(&mut q, i, QUEUE);
        }
        assert_eq!(dropped, 7);
        assert_eq!(q.len(), QUEUE);
        assert_eq!(q.front(), Some(&7));
    }

    #[test]
    fn the_payload_is_shaped_like_alertmanager_v4() {
        let e = Event::ThresholdCrossed {
            mount: "/srv".into(),
            from: crate::policy::Pressure::Ok,
            to: crate::policy::Pressure::Critical,
            avail_bytes: 1,
            threshold_bytes: 2,
            reason: "free 5% < critical_free 10%".into(),
        };
        let p = payload(&e, "node-1");
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        let a = &p["alerts"][0];
        assert_eq!(a["labels"]["alertname"], "GuardianThresholdCrossed");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["instance"], "node-1");
        assert_eq!(a["labels"]["mountpoint"], "/srv");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        for key in ["startsAt", "generatorURL", "fingerprint"] {
            assert!(a[key].is_string(), "{key}");
        }
        let inner: serde_json::Value =
            serde_json::from_str(a["annotations"]["event"].as_str().unwrap()).unwrap();
        assert_eq!(inner["type"], "threshold_crossed");
        let back = Event::ThresholdCrossed {
            mount: "/srv".into(),
            from: crate::policy::Pressure::Critical,
            to: crate::policy::Pressure::Ok,
            avail_bytes: 1,
            threshold_bytes: 2,
            reason: String::new(),
        };
        assert_eq!(payload(&back, "n")["status"], "resolved");
    }
}
