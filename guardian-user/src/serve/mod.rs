//! The HTTP side: `/metrics` (OpenMetrics text), `/status` (the JSON of
//! `guardian status --json`) and `/events` (WebSocket, or Server-Sent Events for
//! `Accept: text/event-stream`), on a thread of its own running a tokio current-thread runtime
//! — the only async code in Guardian. It reads what the core publishes into the
//! [`Hub`](crate::publish::Hub) and never writes back but its own problem.
//!
//! Invariants: the core never waits on the server (status through `watch`, events through a
//! bounded `broadcast`: a client that falls behind gets the current status again, a resync,
//! never back-pressure); a port that cannot be bound is a status problem and a rate-limited log
//! line, retried, never a reason for the daemon to stop; with `token_file` every request needs
//! `Authorization: Bearer <token>` (else 401); at most [`MAX_STREAMS`] event streams at once.

mod batch;
mod relay;
mod scrape;
mod stream;
#[cfg(test)]
mod test_events;
#[cfg(target_os = "linux")]
mod tls;
pub mod token;
pub mod webhooks;

use crate::config::ServeConfig;
use crate::publish::Hub;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most `/events` clients at once; more get 503.
pub const MAX_STREAMS: usize = 4096;
/// How long a failed bind waits before the next try.
const BIND_RETRY: Duration = Duration::from_secs(30);

/// What stops the server thread from starting (nothing stops the daemon).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serve.token_file: {0}")]
    Token(String),
    #[error("cannot start the serve thread: {0}")]
    Thread(std::io::Error),
}

/// Shared by every request.
#[derive(Clone)]
struct AppState {
    hub: Hub,
    /// The event streams' one subscriber of the core.
    relay: Arc<relay::Relay>,
    token: Option<Arc<str>>,
    streams: Arc<AtomicUsize>,
    version: &'static str,
    planner: Option<Planner>,
    /// One plan at a time: a plan walks the workspaces under pressure.
    planning: Arc<tokio::sync::Semaphore>,
}

/// Makes the plan `GET /plan` returns (what `guardian plan --json` prints). It runs on a
/// blocking thread of the server's runtime, never on the daemon's loop.
pub type Planner = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Longest a `/plan` request waits for its plan.
const PLAN_LIMIT: Duration = Duration::from_secs(120);

/// The running server thread; stops when dropped (or when `cancel` is set).
pub struct Server {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Wakes the runtime to stop (a permit is kept if it is not waiting yet).
    wake: Arc<tokio::sync::Notify>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // A runtime that does not end within 2 s is left behind.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Starts the server thread for `config` (nothing when disabled). The token is read now; a
/// token file that cannot be trusted is an error (the caller reports it and guards on).
pub fn spawn(
    config: &ServeConfig,
    hub: Hub,
    planner: Option<Planner>,
) -> Result<Option<Server>, ServeError> {
    if !config.enabled {
        return Ok(None);
    }
    let token = match &config.token_file {
        Some(path) => Some(Arc::<str>::from(
            token::read(path).map_err(ServeError::Token)?,
        )),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    // Webhooks subscribe here, on the caller's thread: every event published after `spawn`
    // returns reaches them, even before the server's thread has started.
    let hooks = webhooks::subscribe(&config.webhooks, &hub);
    let (relay, from_core) = relay::Relay::new(&hub);
    let state = AppState {
        hub,
        relay: relay.clone(),
        token,
        streams: Arc::new(AtomicUsize::new(0)),
        version: env!("CARGO_PKG_VERSION"),
        planner,
        planning: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    let config = config.clone();
    let stopping = stop.clone();
    let woken = wake.clone();
    let thread = std::thread::Builder::new()
        .name("guardian-serve".into())
        .spawn(move || {
            lower_priority();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    state.hub.set_problem(
                        "start",
                        Some(format!("serve: cannot start its runtime: {e}")),
                    );
                    return;
                }
            };
            runtime.block_on(serve(config, state, hooks, from_core, stopping, woken));
        })
        .map_err(ServeError::Thread)?;
    Ok(Some(Server {
        thread: Some(thread),
        stop,
        wake,
    }))
}

/// The server yields the CPU to the core: its thread (and the threads it starts, which inherit
/// it) runs at nice 10, so a thousand clients never take CPU a cleanup cycle needs. Linux sets
/// nice per thread; elsewhere the thread keeps the process's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take and return plain integers about the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        if let Ok(tid) = libc::id_t::try_from(tid) {
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape::metrics))
        .route("/status", get(status))
        .route("/events", get(stream::events))
        .route("/plan", get(plan))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Binds (retrying every [`BIND_RETRY`] while it fails) and serves until `stop`.
async fn serve(
    config: ServeConfig,
    state: AppState,
    hooks: Vec<webhooks::Subscribed>,
    from_core: relay::FromCore,
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
) {
    let app = router(state.clone());
    let stopped = wake.notified();
    let hooks = webhooks::run_all(hooks, state.hub.clone());
    let relayed = relay::run(state.relay.clone(), from_core);
    let tcp = serve_tcp(config.clone(), app.clone(), state.hub.clone(), stop.clone());
    let unix = serve_unix(config.unix.clone(), app, state.hub.clone(), stop.clone());
    tokio::select! {
        _ = stopped => {}
        _ = async { tokio::join!(tcp, unix, hooks, relayed) } => {}
    }
}

async fn serve_tcp(config: ServeConfig, app: Router, hub: Hub, stop: Arc<AtomicBool>) {
    let addr = match config.listen_addr() {
        Ok(a) => a,
        Err(e) => {
            hub.set_problem("tcp", Some(format!("serve.listen: {e}")));
            return;
        }
    };
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                hub.set_problem("tcp", None);
                crate::quiet::clear("serve.bind");
                tracing::info!(%addr, "serving /metrics, /status, /events");
                if let Err(e) = axum::serve(listener, app.clone()).await {
                    crate::warn_quiet!("serve.run", error = %e, "the HTTP server stopped; restarting");
                }
            }
            Err(e) => {
                let why = format!("serve: cannot listen on {addr}: {e} (retried every {BIND_RETRY:?}; guarding goes on)");
                crate::warn_quiet!("serve.bind", error = %e, %addr, "cannot listen; guarding goes on");
                hub.set_problem("tcp", Some(why));
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(BIND_RETRY).await;
    }
}

async fn serve_unix(
    path: Option<std::path::PathBuf>,
    app: Router,
    hub: Hub,
    stop: Arc<AtomicBool>,
) {
    let Some(path) = path else {
        return;
    };
    loop {
        match token::bind_unix(&path) {
            Ok(listener) => {
                hub.set_problem("unix", None);
                crate::quiet::clear("serve.unix");
                tracing::info!(socket = %crate::textpath::shown(&path), "serving on a Unix socket");
                if let Err(e) = axum::serve(listener, app.clone()).await {
                    crate::warn_quiet!("serve.unix.run", error = %e, "the Unix socket server stopped; restarting");
                }
            }
            Err(e) => {
                crate::warn_quiet!("serve.unix", error = %e, "cannot listen on the Unix socket; guarding goes on");
                hub.set_problem(
                    "unix",
                    Some(format!(
                        "serve: cannot listen on {}: {e}",
                        crate::textpath::escape(&path)
                    )),
                );
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(BIND_RETRY).await;
    }
}

/// With a token: `Authorization: Bearer <token>` or 401.
async fn auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        if !bearer_matches(request.headers(), token) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Whether the request carries `Bearer <token>` (compared in constant time).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let want = token.as_bytes();
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// `GET /status`: the newest snapshot, the JSON `guardian status --json` prints.
async fn status(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.hub.status().to_string(),
    )
        .into_response()
}

/// `GET /plan`: what a cleanup cycle would do now, with why each entry stays (the JSON of
/// `guardian plan --json`). One at a time (429 while one is being made), within
/// [`PLAN_LIMIT`] (504 past it).
async fn plan(State(state): State<AppState>) -> Response {
    let Some(planner) = state.planner.clone() else {
        return (StatusCode::NOT_FOUND, "this server makes no plans\n").into_response();
    };
    let Ok(_permit) = state.planning.clone().try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "a plan is being made; ask again\n",
        )
            .into_response();
    };
    match tokio::time::timeout(PLAN_LIMIT, tokio::task::spawn_blocking(move || planner())).await {
        Ok(Ok(plan)) => (
            [(header::CONTENT_TYPE, "application/json")],
            plan.to_string(),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the plan failed: {e}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "the plan took too long\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(bearer_matches(&h, "s3cret"));
        assert!(!bearer_matches(&h, "s3cre"));
        assert!(!bearer_matches(&h, "s3cretx"));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!bearer_matches(&h, "s3cret"));
    }
}
