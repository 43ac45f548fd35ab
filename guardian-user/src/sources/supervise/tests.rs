use super::*;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

/// A fake source per kind: `broken` makes `open` (and a running one's `drain`) fail.
#[derive(Default)]
struct Switches {
    broken: Mutex<Vec<SourceKind>>,
    opened: AtomicU32,
    fail_watch: AtomicBool,
}

impl Switches {
    fn set(&self, kind: SourceKind, broken: bool) {
        let mut b = self.broken.lock().unwrap();
        b.retain(|k| *k != kind);
        if broken {
            b.push(kind);
        }
    }

    fn is_broken(&self, kind: SourceKind) -> bool {
        self.broken.lock().unwrap().contains(&kind)
    }
}

struct Fake {
    kind: SourceKind,
    switches: Arc<Switches>,
}

impl Source for Fake {
    fn name(&self) -> &'static str {
        kind_name(self.kind)
    }

    fn watch(&mut self, _: &[ProjectDir]) -> Result<(), SourceError> {
        if self.switches.fail_watch.load(Ordering::Relaxed) {
            return Err(SourceError::Unavailable {
                source_name: self.name(),
                reason: "refused".into(),
            });
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<Sample, SourceError> {
        if self.switches.is_broken(self.kind) {
            return Err(SourceError::Failed {
                source_name: self.name(),
                reason: "broken".into(),
            });
        }
        let mut s = Sample::default();
        s.growth.insert(1, 1);
        Ok(s)
    }
}

fn opener(switches: &Arc<Switches>) -> Opener {
    let switches = switches.clone();
    Arc::new(move |kind, _| {
        switches.opened.fetch_add(1, Ordering::Relaxed);
        if switches.is_broken(kind) {
            return Err(SourceError::Unavailable {
                source_name: kind_name(kind),
                reason: "broken".into(),
            });
        }
        Ok(Box::new(Fake {
            kind,
            switches: switches.clone(),
        }) as Box<dyn Source>)
    })
}

/// Drains until the active source is `want` or five seconds pass.
fn drain_until(s: &mut Supervisor, want: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        s.drain().unwrap();
        if s.name() == want && s.bring_up.is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn an_explicit_choice_that_cannot_start_is_an_error_and_auto_skips_it() {
    let switches = Arc::new(Switches::default());
    switches.set(SourceKind::Ebpf, true);
    let err = Supervisor::start(SourceKind::Ebpf, vec![], opener(&switches))
        .err()
        .expect("an explicit ebpf that cannot load must not start");
    assert!(err.to_string().contains("broken"), "{err}");
    let auto = Supervisor::start(SourceKind::Auto, vec![], opener(&switches)).unwrap();
    assert_eq!(auto.name(), "fanotify");
    assert_eq!(auto.skipped().len(), 1);
    assert_eq!(auto.status().configured, "auto");
}

#[test]
fn a_failed_source_falls_back_to_the_next_and_is_retried_with_back_off() {
    let switches = Arc::new(Switches::default());
    let mut s = Supervisor::start(SourceKind::Auto, vec![], opener(&switches)).unwrap();
    assert_eq!(s.name(), "ebpf");
    switches.set(SourceKind::Ebpf, true);
    let sample = s.drain().unwrap();
    assert_eq!(sample, Sample::default(), "a failure is not handed on");
    assert!(
        drain_until(&mut s, "fanotify"),
        "falls back to the next source"
    );
    let status = s.status();
    let d = status.degraded.clone().expect("degraded");
    assert_eq!(d.failed, "ebpf");
    assert!(d.retry_in_secs > 0 && d.retry_in_secs <= RETRY_FIRST.as_secs());
    let text = status.to_string();
    assert!(
        text.starts_with("fanotify (ebpf failed at ") && text.contains("broken; retrying in"),
        "{text}"
    );
    // The retry is due: it fails (still broken), the back-off doubles.
    s.degraded.as_mut().unwrap().retry_at = Instant::now();
    let opened = switches.opened.load(Ordering::Relaxed);
    assert!(drain_until(&mut s, "fanotify"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.status().degraded.unwrap().attempts == 0 && Instant::now() < deadline {
        s.drain().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(switches.opened.load(Ordering::Relaxed) > opened);
    let d = s.status().degraded.unwrap();
    assert_eq!(d.attempts, 1);
    assert!(d.retry_in_secs > RETRY_FIRST.as_secs(), "{d:?}");
    // Repaired: the next retry restores it.
    switches.set(SourceKind::Ebpf, false);
    s.degraded.as_mut().unwrap().retry_at = Instant::now();
    assert!(drain_until(&mut s, "ebpf"));
    assert!(s.status().degraded.is_none());
    assert_eq!(s.status().switches, 3, "poll, fanotify, ebpf again");
}

#[test]
fn an_explicit_choice_falls_back_to_polling_and_flapping_doubles_the_back_off() {
    let switches = Arc::new(Switches::default());
    let mut s = Supervisor::start(SourceKind::Inotify, vec![], opener(&switches)).unwrap();
    switches.set(SourceKind::Inotify, true);
    s.drain().unwrap();
    assert_eq!(s.name(), "poll");
    assert!(
        s.bring_up.is_none() && s.pending.is_none(),
        "nothing but polling"
    );
    let first = s.backoff;
    assert_eq!(first, RETRY_FIRST);
    switches.set(SourceKind::Inotify, false);
    s.degraded.as_mut().unwrap().retry_at = Instant::now();
    assert!(drain_until(&mut s, "inotify"));
    // Fails again right after it came back: the next wait is longer.
    switches.set(SourceKind::Inotify, true);
    s.drain().unwrap();
    assert_eq!(s.name(), "poll");
    assert!(s.backoff > first, "{:?}", s.backoff);
}

#[test]
fn a_refused_watch_fails_over_like_a_failed_drain() {
    let switches = Arc::new(Switches::default());
    let mut s = Supervisor::start(SourceKind::Fanotify, vec![], opener(&switches)).unwrap();
    switches.fail_watch.store(true, Ordering::Relaxed);
    s.watch(&[]).expect("the supervisor absorbs the failure");
    assert_eq!(s.name(), "poll");
    assert_eq!(s.status().degraded.unwrap().reason, "refused");
}

#[test]
fn the_status_line_names_the_failure_and_the_retry() {
    let status = SourceStatus {
        active: "inotify".into(),
        configured: "auto".into(),
        degraded: Some(Degradation {
            failed: "fanotify".into(),
            reason: "reading events: EIO".into(),
            since: "2026-01-01T00:00:00.000Z".into(),
            attempts: 2,
            failures: 1,
            last_attempt: Some("fanotify failed: x".into()),
            retry_in_secs: 40,
        }),
        ..SourceStatus::default()
    };
    assert_eq!(
        status.to_string(),
        "inotify (fanotify failed at 2026-01-01T00:00:00.000Z: reading events: EIO; \
         retrying in 40 s, 2 retries failed, last: fanotify failed: x)"
    );
}
