//! The HTTP side end to end, with the real `guardian` binary on a real tmpfs and real sockets on
//! 127.0.0.1: `/metrics` parsed and checked against `statvfs` and the audit log, `/status`
//! against `guardian status --json`, a WebSocket and an SSE client held open while the disk
//! crosses `cleanup_free` (they see `threshold_crossed` → `cleanup_started` → `action`… →
//! `cleanup_finished`, in order), a non-loopback listen without a token refused at load, 401
//! without the token, and 1,000 idle WebSocket clients plus one that never reads not stopping
//! a cleanup cycle (the timed comparison belongs in `cargo xtask bench`).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;
use support::*;

/// A free TCP port on 127.0.0.1 below the ephemeral range (checked by binding it, then released
/// for the daemon): a port the OS handed out for `:0` is one it also hands to the outgoing
/// connections of tests running at the same time (a thousand WebSocket clients), so the daemon
/// could find it taken.
fn free_port() -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut x = u64::from(seed) | 1;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// `GET path` over a fresh connection: (status code, body). `None` while nothing listens.
fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&mut BufReader::new(body.as_bytes()))
    } else {
        body.to_string()
    };
    Some((code, body))
}

/// Reads a chunked body to its end.
fn dechunk(r: &mut impl BufRead) -> String {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(r) {
        out.extend(chunk);
    }
    String::from_utf8(out).unwrap()
}

/// One chunk of a chunked body; `None` at its end.
fn next_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let size = usize::from_str_radix(line.trim(), 16).ok()?;
    if size == 0 {
        return None;
    }
    let mut chunk = vec![0; size + 2];
    r.read_exact(&mut chunk).ok()?;
    chunk.truncate(size);
    Some(chunk)
}

/// The samples of an OpenMetrics text: `name{labels}` → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics: {text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse::<f64>().unwrap())
        })
        .collect()
}

/// The sum of every sample of `name` (any labels).
fn sum_of(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Events an SSE client reads, sent on as JSON.
fn sse_client(port: u16) -> mpsc::Receiver<serde_json::Value> {
    let (tx, rx) = mpsc::channel();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line == "\r\n" {
                break;
            }
            line.clear();
        }
        let mut pending = String::new();
        while let Some(chunk) = next_chunk(&mut r) {
            pending.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some((event, rest)) = pending.split_once("\n\n") {
                for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    if tx.send(serde_json::from_str(data).unwrap()).is_err() {
                        return;
                    }
                }
                pending = rest.to_string();
            }
        }
    });
    rx
}

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn ws_connect(port: u16) -> Ws {
    tungstenite::connect(format!("ws://127.0.0.1:{port}/events"))
        .unwrap()
        .0
}

/// Events a WebSocket client reads, sent on as JSON.
fn ws_client(port: u16) -> mpsc::Receiver<serde_json::Value> {
    let (tx, rx) = mpsc::channel();
    let mut ws = ws_connect(port);
    std::thread::spawn(move || {
        while let Ok(msg) = ws.read() {
            if let tungstenite::Message::Text(t) = msg {
                if tx.send(serde_json::from_str(t.as_str()).unwrap()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Collects events until `cleanup_finished` (or 30 s).
fn until_finished(rx: &mpsc::Receiver<serde_json::Value>) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Ok(e) = rx.recv_timeout(Duration::from_secs(30)) {
        let done = e["type"] == "cleanup_finished";
        out.push(e);
        if done {
            break;
        }
    }
    out
}

struct Node {
    mount: TestMount,
    ws: PathBuf,
    state: tempfile::TempDir,
    config: PathBuf,
    port: u16,
}

impl Node {
    /// A 128 MiB tmpfs with three idle projects holding `node_modules`; the audit log and state
    /// on another filesystem (so only the test's own writes move the tmpfs's free space).
    fn new(serve_extra: &str) -> Node {
        Node::with_port(serve_extra, free_port())
    }

    fn with_port(serve_extra: &str, port: u16) -> Node {
        let mount = TestMount::tmpfs(128 * MIB);
        let ws = mount.path("dispatch");
        for (name, mib) in [("alpha", 12), ("beta", 10), ("gamma", 8)] {
            write_files(&ws.join(name).join("node_modules"), 8, mib * MIB / 8);
            write_file(&ws.join(name).join("src/main.rs"), 4096);
        }
        age_tree(&ws, Duration::from_secs(3 * 86400));
        let state = tempfile::tempdir().unwrap();
        let config = state.path().join("guardian.toml");
        write_config(
            &config,
            &ws,
            &state.path().join("g"),
            "200ms",
            &format!("\n[serve]\nlisten = \"127.0.0.1:{port}\"\n{serve_extra}"),
        );
        Node {
            mount,
            ws,
            state,
            config,
            port,
        }
    }

    fn spawn(&self) -> Reaped {
        let daemon = Reaped::spawn(
            Command::new(guardian_bin())
                .args(["run", "--config", self.config.to_str().unwrap()])
                .env("GUARDIAN_LOG", "info"),
        );
        assert!(
            wait_until(Duration::from_secs(15), || get(self.port, "/status", None)
                .is_some_and(|(c, b)| c == 200
                    && b.contains(&format!(
                        "\"mount\":\"{}\"",
                        self.mount.dir.display()
                    )))),
            "the daemon never served its status"
        );
        daemon
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.state.path().join("g/audit.jsonl"))
    }

    fn metrics(&self) -> HashMap<String, f64> {
        let (code, body) = get(self.port, "/metrics", None).unwrap();
        assert_eq!(code, 200, "{body}");
        parse_metrics(&body)
    }

    fn fs_labels(&self) -> String {
        format!(
            "{{mountpoint=\"{}\",device=\"guardian-test\",fstype=\"tmpfs\"}}",
            self.mount.dir.display()
        )
    }
}

/// Takes the filesystem to `used_percent` used in one `fallocate`: one crossing, so exactly one
/// cycle follows (a filler written in chunks could cross again after a cycle that ran while it
/// was still writing).
fn fill_at_once(mount: &std::path::Path, filler: &std::path::Path, used_percent: f64) {
    let (total, avail) = space(mount);
    let want_avail = (total as f64 * (100.0 - used_percent) / 100.0) as u64;
    let file = std::fs::File::create(filler).unwrap();
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::empty(),
        0,
        avail - want_avail,
    )
    .unwrap();
}

/// The position of the first event of `kind`.
fn first(events: &[serde_json::Value], kind: &str) -> usize {
    events
        .iter()
        .position(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {events:#?}"))
}

#[test]
fn metrics_status_and_both_streams_follow_a_crossing_of_cleanup_free() {
    if !require_root("metrics_status_and_both_streams_follow_a_crossing_of_cleanup_free") {
        return;
    }
    let node = Node::new("");
    let _daemon = node.spawn();
    let ws = ws_client(node.port);
    let sse = sse_client(node.port);
    for rx in [&ws, &sse] {
        let hello = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(hello["type"], "status", "{hello}");
        assert_eq!(hello["status"]["pid"], _daemon.0.id());
    }
    // Before: sizes as statvfs has them, nothing done.
    let (total, _) = space(&node.mount.dir);
    let m = node.metrics();
    assert_eq!(
        m[&format!("guardian_filesystem_size_bytes{}", node.fs_labels())],
        total as f64
    );
    assert_eq!(sum_of(&m, "guardian_cleanup_actions_total"), 0.0);
    assert!(m.keys().all(|k| !k.contains("quantile")));

    // Bytes written into a project count under its name (once the daemon watches it).
    let writer = node.ws.join("delta");
    std::fs::create_dir(&writer).unwrap();
    let key = format!(
        "guardian_project_written_bytes_total{{project=\"{}\"}}",
        writer.display()
    );
    let mut out = std::fs::File::create(writer.join("log")).unwrap();
    let mut written = 0u64;
    let counted = wait_until(Duration::from_secs(10), || {
        if written < 8 << 20 {
            std::io::Write::write_all(&mut out, &[7u8; 256 << 10]).unwrap();
            written += 256 << 10;
        }
        node.metrics().get(&key).copied().unwrap_or(0.0) > 0.0
    });
    assert!(counted, "no series {key} after writing {written} bytes");
    assert!(node.metrics()[&key] <= written as f64);

    fill_at_once(&node.mount.dir, &node.mount.path("filler.bin"), 82.0);
    let ws_events = until_finished(&ws);
    let sse_events = until_finished(&sse);
    let audit = node.audit();
    assert!(!audit.is_empty(), "the cycle deleted nothing");
    for events in [&ws_events, &sse_events] {
        let crossed = first(events, "threshold_crossed");
        let pressure = first(events, "disk_pressure");
        let started = first(events, "cleanup_started");
        let finished = first(events, "cleanup_finished");
        assert_eq!(events[crossed]["from"], "ok");
        assert_eq!(events[crossed]["to"], "pressure");
        assert_eq!(events[pressure]["level"], "warning");
        assert_eq!(events[pressure]["scope"], "filesystem");
        assert!(crossed < started && started < finished, "{events:#?}");
        let actions: Vec<&serde_json::Value> = events[started..finished]
            .iter()
            .filter(|e| e["type"] == "action")
            .map(|e| &e["record"])
            .collect();
        assert!(events[..started].iter().all(|e| e["type"] != "action"));
        // Each audit outcome line of the cycle, as written, in the order written.
        assert_eq!(actions.len(), audit.len(), "{events:#?}");
        for (a, b) in actions.iter().zip(&audit) {
            assert_eq!(*a, b);
        }
        assert_eq!(events[finished]["reached_target"], true);
        assert_eq!(events[finished]["kind"], "reactive");
    }
    assert!(free_percent(&node.mount.dir) >= 30.0);

    // After: the counters are the audit log's, free space is statvfs's (once a poll saw it).
    let freed: u64 = audit
        .iter()
        .map(|l| l["bytes_freed"].as_u64().unwrap())
        .sum();
    let avail_key = format!("guardian_filesystem_avail_bytes{}", node.fs_labels());
    assert!(
        wait_until(Duration::from_secs(5), || node.metrics()[&avail_key]
            == space(&node.mount.dir).1 as f64),
        "avail never matched statvfs"
    );
    let m = node.metrics();
    // Every family the fleet files may name is in a real scrape (tests/fleet.rs checks the
    // files name no other). A forecast time is absent while nothing fills: the unit test
    // `a_filling_filesystem_exports_its_time_to_each_threshold` covers it.
    let (_, raw) = get(node.port, "/metrics", None).unwrap();
    for family in EXPORTED_METRICS
        .iter()
        .filter(|f| **f != "guardian_filesystem_time_to_threshold_seconds")
    {
        let declared = raw.lines().any(|l| {
            l.strip_prefix("# TYPE ")
                .and_then(|t| t.split_whitespace().next())
                .is_some_and(|name| *family == name || family.strip_suffix("_total") == Some(name))
        });
        assert!(
            declared || m.keys().any(|k| k.starts_with(family)),
            "{family} is not exported:\n{raw}"
        );
    }
    assert_eq!(
        sum_of(&m, "guardian_cleanup_freed_bytes_total"),
        freed as f64
    );
    assert_eq!(
        sum_of(&m, "guardian_cleanup_actions_total"),
        audit.len() as f64
    );
    assert_eq!(
        m["guardian_cleanup_cycles_total{trigger=\"reactive\"}"],
        1.0
    );
    assert_eq!(m["guardian_cleanup_cycle_duration_seconds_count"], 1.0);
    let size = |level: &str| {
        let labels = node.fs_labels();
        m[&format!(
            "guardian_filesystem_threshold_bytes{},level=\"{level}\"}}",
            labels.trim_end_matches('}')
        )]
    };
    // The thresholds as configured (20% and 30% of the size, rounded to a byte).
    assert!((size("cleanup") - total as f64 * 0.20).abs() <= 1.0);
    assert!((size("target") - total as f64 * 0.30).abs() <= 1.0);
    assert!(m.contains_key(&format!(
        "guardian_build_info{{version=\"{}\",os=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS
    )));
    assert!(m
        .keys()
        .any(|k| k.starts_with("guardian_source_info{source=")));

    // /status is `guardian status --json` (once the state file caught up).
    let cli = || {
        let out = guardian(&[
            "status",
            "--config",
            node.config.to_str().unwrap(),
            "--json",
        ]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let served: serde_json::Value =
                serde_json::from_str(&get(node.port, "/status", None).unwrap().1).unwrap();
            let file = cli();
            served["recent_actions"] == file["recent_actions"]
                && served["last_cycle"] == file["last_cycle"]
                && served["pid"] == file["pid"]
                && served.as_object().unwrap().keys().collect::<Vec<_>>()
                    == file.as_object().unwrap().keys().collect::<Vec<_>>()
        }),
        "/status and `guardian status --json` disagree"
    );
    let _ = &node.ws;
}

#[test]
fn a_non_loopback_listen_without_a_token_is_refused_at_config_load() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let config = dir.path().join("g.toml");
    write_config(
        &config,
        &ws,
        &dir.path().join("state"),
        "1s",
        "\n[serve]\nlisten = \"0.0.0.0:9867\"\n",
    );
    let out = guardian(&["config", "check", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serve.listen"), "{err}");
    assert!(err.contains("token_file"), "{err}");
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("state").exists(), "nothing written");
}

#[test]
fn with_a_token_requests_without_it_get_401() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let config = dir.path().join("g.toml");
    write_config(
        &config,
        &ws,
        &dir.path().join("state"),
        "1s",
        &format!(
            "\n[serve]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    );
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "info"),
    );
    assert!(wait_until(Duration::from_secs(15), || get(
        port,
        "/status",
        Some("s3cret-token")
    )
    .is_some_and(|(c, _)| c == 200)));
    for path in ["/status", "/metrics", "/events"] {
        assert_eq!(get(port, path, None).unwrap().0, 401, "{path}");
        assert_eq!(
            get(port, path, Some("s3cret-tokeN")).unwrap().0,
            401,
            "{path}"
        );
    }
    assert_eq!(get(port, "/metrics", Some("s3cret-token")).unwrap().0, 200);
    match tungstenite::connect(format!("ws://127.0.0.1:{port}/events")) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a WebSocket without the token: {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_port_already_taken_is_a_status_problem_and_the_daemon_guards_on() {
    if !require_root("a_port_already_taken_is_a_status_problem_and_the_daemon_guards_on") {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let node = Node::with_port("", taken.local_addr().unwrap().port());
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", node.config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "info"),
    );
    let status = || {
        let out = guardian(&[
            "status",
            "--config",
            node.config.to_str().unwrap(),
            "--json",
        ]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(15), || status()["problems"]
            .to_string()
            .contains(&format!("cannot listen on 127.0.0.1:{}", node.port))),
        "{}",
        status()
    );
    fill_at_once(&node.mount.dir, &node.mount.path("filler.bin"), 82.0);
    assert!(
        wait_until(Duration::from_secs(20), || free_percent(&node.mount.dir)
            >= 30.0),
        "the daemon stopped guarding"
    );
}

/// Lifts this process's open-file limit to its hard limit (1,000 clients need the fds).
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

#[test]
fn a_thousand_idle_websockets_and_one_that_never_reads_do_not_stop_a_cleanup_cycle() {
    if !require_root(
        "a_thousand_idle_websockets_and_one_that_never_reads_do_not_stop_a_cleanup_cycle",
    ) {
        return;
    }
    raise_fd_limit();
    // No forecast: the fill comes at once, and whether the filesystem's forecast then runs a
    // preemptive phase 1 after the reactive cycle (it may: 100 MB in one sample, 20 MB of
    // headroom left) decides which cycle `last_cycle` shows; this test is about the clients.
    let node = Node::new("\n[forecast]\nenabled = false\n");
    let _daemon = node.spawn();
    // One that never reads: its socket buffers fill, its queue falls behind.
    let stalled = ws_connect(node.port);
    let idle: Vec<Ws> = (0..1000).map(|_| ws_connect(node.port)).collect();
    fill_at_once(&node.mount.dir, &node.mount.path("filler.bin"), 82.0);
    assert!(
        wait_until(Duration::from_secs(30), || free_percent(&node.mount.dir)
            >= 30.0
            && node.audit().len() >= 2),
        "the cycle did not complete with 1,001 clients connected"
    );
    let (code, body) = get(node.port, "/status", None).unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, b) = get(node.port, "/status", None).unwrap();
            serde_json::from_str::<serde_json::Value>(&b).unwrap()["last_cycle"]["reached_target"]
                == true
        }),
        "{status}"
    );
    drop(idle);
    drop(stalled);
}

#[path = "serve/unix.rs"]
mod unix;
#[path = "serve/webhooks.rs"]
mod webhooks;

/// The daemon's fd table is grown at start, before any thread runs: a thread that opens the fd
/// past the table's size grows it, and growing a table its threads share waits out an RCU grace
/// period while every thread that opens a file waits too — a thousand `/events` clients filling
/// the first 1,024 slots made the cleanup cycle that followed wait 10–20 ms (the serve bench's
/// fanotify cycle went 28 → 38 ms with the clients, 27 → 27 ms with the table grown at start).
#[test]
fn the_daemons_fd_table_is_grown_before_its_threads_start() {
    if !require_root("the_daemons_fd_table_is_grown_before_its_threads_start") {
        return;
    }
    let node = Node::new("");
    let daemon = node.spawn();
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let slots: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("FDSize in /proc/PID/status");
    assert!(slots >= 8192, "the daemon's fd table has {slots} slots");
}
