//! Quiet logging: a daemon that repeats itself floods the journal. Every message that can
//! repeat (a failing source, a stalled cycle, an unwritable state file) goes through
//! [`allow`] with a *cause* key and is logged at most once per [`EVERY`] per cause; the line that
//! is logged carries how many were held back since the last one. The table of causes is
//! bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time between two lines of one cause.
pub const EVERY: Duration = Duration::from_secs(60);
/// Most causes remembered; the stalest are forgotten first.
const MAX_CAUSES: usize = 1024;

/// When each cause was last let through and how many were held back since.
#[derive(Debug)]
pub struct Quiet {
    every: Duration,
    seen: HashMap<String, (Instant, u64)>,
}

impl Quiet {
    pub fn new(every: Duration) -> Quiet {
        Quiet {
            every,
            seen: HashMap::new(),
        }
    }

    /// Whether a line of `cause` may be logged at `now`: `Some(held_back)` (how many were held
    /// back since the last one) if so, `None` if it must be held back.
    pub fn allow_at(&mut self, cause: &str, now: Instant) -> Option<u64> {
        if let Some((last, held)) = self.seen.get_mut(cause) {
            if now.saturating_duration_since(*last) < self.every {
                *held += 1;
                return None;
            }
            let was = *held;
            *last = now;
            *held = 0;
            return Some(was);
        }
        if self.seen.len() >= MAX_CAUSES {
            let every = self.every;
            self.seen
                .retain(|_, (last, _)| now.saturating_duration_since(*last) < every);
            if self.seen.len() >= MAX_CAUSES {
                if let Some(stalest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, (last, _))| *last)
                    .map(|(k, _)| k.clone())
                {
                    self.seen.remove(&stalest);
                }
            }
        }
        self.seen.insert(cause.to_string(), (now, 0));
        Some(0)
    }

    /// Forgets `cause`: its next line is logged at once (the condition cleared).
    pub fn clear(&mut self, cause: &str) {
        self.seen.remove(cause);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

static GLOBAL: Mutex<Option<Quiet>> = Mutex::new(None);

/// The process-wide gate: `Some(held_back)` when a line of `cause` may be logged now.
pub fn allow(cause: &str) -> Option<u64> {
    let mut guard = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .get_or_insert_with(|| Quiet::new(EVERY))
        .allow_at(cause, Instant::now())
}

/// The process-wide gate forgets `cause` (the condition it reported is over).
pub fn clear(cause: &str) {
    let mut guard = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(q) = guard.as_mut() {
        q.clear(cause);
    }
}

/// `tracing::warn!` at most once a minute per cause: `warn_quiet!(cause, fields…, "message")`.
/// The logged line carries `held_back`, the number of lines of that cause not logged since.
#[macro_export]
macro_rules! warn_quiet {
    ($cause:expr, $($rest:tt)+) => {
        if let Some(held_back) = $crate::quiet::allow(&$cause) {
            tracing::warn!(held_back, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_cause_per_period_with_the_count_held_back() {
        let mut q = Quiet::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(q.allow_at("a", t0), Some(0));
        assert_eq!(q.allow_at("b", t0), Some(0), "causes are independent");
        for s in 1..60 {
            assert_eq!(q.allow_at("a", t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(q.allow_at("a", t0 + Duration::from_secs(60)), Some(59));
        assert_eq!(q.allow_at("a", t0 + Duration::from_secs(61)), None);
        q.clear("a");
        assert_eq!(q.allow_at("a", t0 + Duration::from_secs(62)), Some(0));
    }

    #[test]
    fn the_table_of_causes_is_bounded() {
        let mut q = Quiet::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_CAUSES * 3) {
            q.allow_at(&format!("cause-{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert!(q.len() <= MAX_CAUSES);
        // The newest cause is still remembered, and still held back.
        let newest = format!("cause-{}", MAX_CAUSES * 3 - 1);
        assert_eq!(q.allow_at(&newest, t0 + Duration::from_secs(1)), None);
    }
}
