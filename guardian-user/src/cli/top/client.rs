//! `guardian top`'s side of the daemon's HTTP API: `/status` read every second, `/events` held
//! open as Server-Sent Events, `/plan` on request — each on a thread of its own that sends what
//! it read to the UI thread, so a slow or gone daemon never freezes the screen. Reconnects with
//! back-off (1 s doubling to 30 s).

use crossbeam_channel::{Receiver, Sender};
use guardian::daemon::state::DaemonState;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the reader threads tell the UI.
pub enum Msg {
    Status(Box<Result<DaemonState, String>>),
    Event(Value),
    /// The events stream is (re)connected, or why it is not.
    Stream(Result<(), String>),
    Plan(Result<Value, String>),
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Longest a status or plan request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest document read.
const MAX_DOCUMENT: u64 = 64 << 20;
/// A plan walks the workspaces under pressure: give it longer.
const PLAN_TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    /// `base`: `http://HOST:PORT` (no trailing slash needed). `token`: the bearer token.
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(2))
                .build(),
        }
    }

    fn get(&self, path: &str, timeout: Option<Duration>) -> ureq::Request {
        let mut req = self.agent.get(&format!("{}{path}", self.base));
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(token) = &self.token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        req
    }

    fn json(&self, path: &str, timeout: Duration) -> Result<Value, String> {
        let resp = self.get(path, Some(timeout)).call().map_err(describe)?;
        // Bounded: a status holds at most 100 projects, a plan one line per entry.
        serde_json::from_reader(std::io::Read::take(resp.into_reader(), MAX_DOCUMENT))
            .map_err(|e| format!("{path}: not JSON: {e}"))
    }

    pub fn status(&self) -> Result<DaemonState, String> {
        let value = self.json("/status", REQUEST_TIMEOUT)?;
        serde_json::from_value(value).map_err(|e| format!("/status: unexpected document: {e}"))
    }

    pub fn plan(&self) -> Result<Value, String> {
        self.json("/plan", PLAN_TIMEOUT)
    }

    /// Reads `/events` (SSE) until it ends or fails, sending each event's JSON.
    fn stream(&self, tx: &Sender<Msg>, stop: &AtomicBool) -> Result<(), String> {
        let resp = self
            .get("/events", None)
            .set("Accept", "text/event-stream")
            .call()
            .map_err(describe)?;
        let _ = tx.send(Msg::Stream(Ok(())));
        let reader = BufReader::new(resp.into_reader());
        let mut data = String::new();
        for line in reader.lines() {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let line = line.map_err(|e| format!("/events: {e}"))?;
            if let Some(rest) = line.strip_prefix("data:") {
                data.push_str(rest.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                if let Ok(event) = serde_json::from_str::<Value>(&data) {
                    if tx.send(Msg::Event(event)).is_err() {
                        return Ok(());
                    }
                }
                data.clear();
            }
        }
        Err("/events: the daemon closed the stream".into())
    }
}

fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(401, _) => {
            "401 Unauthorized: the daemon wants a token (--token-file)".into()
        }
        ureq::Error::Status(code, r) => format!("HTTP {code} from {}", r.get_url()),
        ureq::Error::Transport(t) => format!("cannot reach the daemon: {t}"),
    }
}

/// The reader threads; they end when `stop` is set or the UI's receiver is gone.
pub struct Readers {
    pub rx: Receiver<Msg>,
    plan_tx: Sender<()>,
    stop: Arc<AtomicBool>,
}

impl Readers {
    pub fn start(client: Client) -> std::io::Result<Readers> {
        let (tx, rx) = crossbeam_channel::bounded(1024);
        let (plan_tx, plan_rx) = crossbeam_channel::bounded::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (client, tx, stop) = (client.clone(), tx.clone(), stop.clone());
            spawn("guardian-top-status", move || {
                while !stop.load(Ordering::Relaxed) {
                    if tx.send(Msg::Status(Box::new(client.status()))).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })?;
        }
        {
            let (client, tx, stop) = (client.clone(), tx.clone(), stop.clone());
            spawn("guardian-top-events", move || {
                let mut backoff = Duration::from_secs(1);
                while !stop.load(Ordering::Relaxed) {
                    let result = client.stream(&tx, &stop);
                    if let Err(e) = result {
                        if tx.send(Msg::Stream(Err(e))).is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            })?;
        }
        spawn("guardian-top-plan", move || {
            while plan_rx.recv().is_ok() {
                if tx.send(Msg::Plan(client.plan())).is_err() {
                    return;
                }
            }
        })?;
        Ok(Readers { rx, plan_tx, stop })
    }

    /// Asks for a plan; a request already waiting is enough.
    pub fn request_plan(&self) {
        let _ = self.plan_tx.try_send(());
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
}
