//! The daemon's stderr, read back: `tracing`'s default format
//! (`2026-01-02T03:04:05.123456Z  WARN guardian::daemon: message key=value …`) parsed into
//! time, level, target, message and fields, and checked for spam: a warning or error of one
//! *cause* (level, target, message with its numbers blanked, and the `mount` it is about) more
//! than once per minute. Lines that report one event each (a cycle starting, an interrupted
//! deletion being finished, the reserve given up) are counted apart, not as spam.

use std::collections::BTreeMap;

/// Messages that stand for one event each (one per cycle, per intent, per full disk), by prefix.
pub const EVENT_MESSAGES: &[&str] = &[
    "pressure: starting a cleanup cycle",
    "forecast: starting a preemptive phase 1",
    "finishing a deletion interrupted by the end of process",
    "disk full: gave up the audit log's reserve",
];

/// The shortest allowed gap between two lines of one cause.
pub const SPAM_WINDOW_SECS: f64 = 60.0;

/// One parsed log line.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// Seconds since the Unix epoch.
    pub t: f64,
    pub level: String,
    pub target: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// What makes two lines "the same message": level, target, message with digits blanked,
    /// and the filesystem it is about.
    pub fn cause(&self) -> String {
        let message: String = self
            .message
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        let mut key = format!("{} {}: {message}", self.level, self.target);
        if let Some(mount) = self.field("mount") {
            key.push_str(&format!(" [mount={mount}]"));
        }
        key
    }

    pub fn is_event(&self) -> bool {
        EVENT_MESSAGES.iter().any(|m| self.message.starts_with(m))
    }
}

/// Parses one line; `None` for lines not in the format (continuations, other output).
pub fn parse_line(line: &str) -> Option<LogLine> {
    let (ts, rest) = line.split_once(' ')?;
    let t = parse_rfc3339(ts)?;
    let rest = rest.trim_start();
    let (level, rest) = rest.split_once(' ')?;
    if !matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR") {
        return None;
    }
    let (target, rest) = rest.trim_start().split_once(": ")?;
    let (message, fields) = split_fields(rest);
    Some(LogLine {
        t,
        level: level.to_string(),
        target: target.to_string(),
        message,
        fields,
    })
}

/// Splits `message k=v k2="v 2"` at the first ` ident=`.
fn split_fields(text: &str) -> (String, Vec<(String, String)>) {
    let starts: Vec<usize> = text
        .match_indices(' ')
        .map(|(i, _)| i + 1)
        .filter(|&i| is_field_start(&text[i..]))
        .collect();
    let Some(&first) = starts.first() else {
        return (text.to_string(), Vec::new());
    };
    let message = text[..first - 1].to_string();
    let mut fields = Vec::new();
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(text.len(), |&e| e - 1);
        if let Some((k, v)) = text[s..end].split_once('=') {
            fields.push((k.to_string(), v.trim_matches('"').to_string()));
        }
    }
    (message, fields)
}

fn is_field_start(s: &str) -> bool {
    let Some(eq) = s.find('=') else { return false };
    let key = &s[..eq];
    !key.is_empty()
        && key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

/// `YYYY-MM-DDTHH:MM:SS(.frac)Z` → seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let min: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next()?.parse().ok()?;
    let days = days_from_civil(y, m, day);
    Some((days * 86400 + h * 3600 + min * 60) as f64 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What the log shows over a run.
#[derive(Clone, Debug, Default)]
pub struct LogSummary {
    pub lines: u64,
    /// Lines by level.
    pub by_level: BTreeMap<String, u64>,
    /// Warnings and errors of one cause closer together than [`SPAM_WINDOW_SECS`]: cause → (how
    /// many such repeats, the shortest gap in seconds).
    pub spam: BTreeMap<String, (u64, f64)>,
    /// Event lines by message (see [`EVENT_MESSAGES`]).
    pub events: BTreeMap<String, u64>,
    /// The cause with the most lines (any level) and its count.
    pub busiest: Option<(String, u64)>,
    /// Lines that are not in the log format (panics, backtraces).
    pub unparsed: Vec<String>,
}

/// Reads a whole log.
pub fn summarize(text: &str) -> LogSummary {
    let mut s = LogSummary::default();
    let mut last: BTreeMap<String, f64> = BTreeMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for raw in text.lines().filter(|l| !l.trim().is_empty()) {
        s.lines += 1;
        let Some(line) = parse_line(raw) else {
            if s.unparsed.len() < 20 {
                s.unparsed.push(raw.to_string());
            }
            continue;
        };
        *s.by_level.entry(line.level.clone()).or_insert(0) += 1;
        let cause = line.cause();
        *counts.entry(cause.clone()).or_insert(0) += 1;
        if line.is_event() {
            *s.events.entry(cause).or_insert(0) += 1;
            continue;
        }
        if !matches!(line.level.as_str(), "WARN" | "ERROR") {
            continue;
        }
        if let Some(prev) = last.insert(cause.clone(), line.t) {
            let gap = line.t - prev;
            if gap < SPAM_WINDOW_SECS {
                let e = s.spam.entry(cause).or_insert((0, f64::INFINITY));
                e.0 += 1;
                e.1 = e.1.min(gap);
            }
        }
    }
    s.busiest = counts.into_iter().max_by_key(|(_, n)| *n);
    s
}
