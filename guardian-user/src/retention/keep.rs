//! The pure core of retention: entries of one directory (plain data) and a rule in, the series
//! and a verdict with its reasons for every entry out. No IO, no clock: times come in with the
//! entries, and `keep_within` is measured from the newest entry of each series, never from now,
//! so a series whose producer stalled never ages out.
//!
//! Invariants: an entry the pattern does not match, a pointer (`current`, `latest`) and a pin
//! file are never a candidate; the newest entry of a series, a pinned entry, the target of a
//! pointer and an entry in use are always kept; an entry goes only when no keep rule keeps it.

use crate::config::{Order, RetentionRule};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// The suffix of a file that pins its sibling (`v003.guardian-keep` pins `v003`).
pub const PIN_SUFFIX: &str = ".guardian-keep";
/// The prefix of Guardian's temp files (an archive being written): never a candidate.
pub const TEMP_PREFIX: &str = ".guardian-tmp-";

/// One directory entry, as the IO layer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Allocated bytes of the entry (its whole tree for a directory); `None`: not measured
    /// (a directory is walked only once it is decided to go).
    pub bytes: Option<u64>,
    /// A `.guardian-keep` inside it, or a `NAME.guardian-keep` beside it.
    pub pinned: bool,
    /// The pointer (`current`, …) that resolves to it or into it.
    pub pointed_by: Option<String>,
    /// Why a process holds it, if one does.
    pub in_use: Option<String>,
}

/// What a rule keeps, in plain numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: u32,
    /// Seconds before the newest entry of the series.
    pub within: Option<i64>,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

/// A rule compiled for deciding.
#[derive(Clone, Debug)]
pub struct Selector {
    glob: Option<globset::GlobMatcher>,
    regex: Option<regex::bytes::Regex>,
    order: Order,
    timestamp_format: Option<String>,
    pointers: Vec<String>,
    /// Archives (`.zst`) a compressing rule made are never its candidates again.
    compress: bool,
    pub keep: KeepPolicy,
}

impl Selector {
    /// Compiles a validated rule.
    pub fn from_rule(rule: &RetentionRule) -> Selector {
        Selector {
            glob: rule.compiled_glob(),
            regex: rule.compiled_regex(),
            order: rule.order,
            timestamp_format: rule.timestamp_format.clone(),
            pointers: rule.pointers.clone(),
            compress: rule.compress,
            keep: KeepPolicy {
                last: rule.keep_last,
                within: rule
                    .keep_within
                    .map(|d| i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX)),
                daily: rule.keep_daily,
                weekly: rule.keep_weekly,
                monthly: rule.keep_monthly,
            },
        }
    }

    /// True for the names of the rule's pointers.
    pub fn is_pointer(&self, name: &[u8]) -> bool {
        self.pointers.iter().any(|p| p.as_bytes() == name)
    }

    pub fn pointers(&self) -> &[String] {
        &self.pointers
    }
}

/// The verdict on one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Keep,
    Delete,
}

/// One entry of a series and what happens to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    #[serde(with = "crate::textpath")]
    pub name: std::path::PathBuf,
    pub verdict: Verdict,
    /// `kept by keep_last #2`, `deleted: older than keep_within 7d`, …
    pub reasons: Vec<String>,
    /// Allocated bytes (`null`: a kept directory, not walked).
    pub bytes: Option<u64>,
    /// The time the keep rules used, seconds since the epoch.
    pub time: i64,
}

/// One series, newest entry first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Series {
    /// The `series` capture (escaped like a path); empty for a rule without one.
    pub key: String,
    pub entries: Vec<Decision>,
}

/// An entry the rule leaves alone, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Untouched {
    #[serde(with = "crate::textpath")]
    pub name: std::path::PathBuf,
    pub reason: String,
}

/// The decisions for one directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirDecisions {
    pub series: Vec<Series>,
    pub untouched: Vec<Untouched>,
}

/// A matched entry with its series key and ordering time.
struct Member<'a> {
    entry: &'a Entry,
    /// Seconds since the epoch: the `ts` capture with `order = "timestamp"`, else mtime.
    time: i64,
}

/// Decides every entry of one directory.
pub fn decide(entries: &[Entry], sel: &Selector) -> DirDecisions {
    let mut out = DirDecisions::default();
    let mut groups: BTreeMap<Vec<u8>, Vec<Member<'_>>> = BTreeMap::new();
    for entry in entries {
        let name = entry.name.as_bytes();
        let untouched = |reason: String| Untouched {
            name: entry.name.clone().into(),
            reason,
        };
        if sel.is_pointer(name) {
            out.untouched
                .push(untouched("untouched: a pointer name".into()));
            continue;
        }
        if name.ends_with(PIN_SUFFIX.as_bytes()) {
            out.untouched.push(untouched("untouched: a pin".into()));
            continue;
        }
        if name.starts_with(TEMP_PREFIX.as_bytes()) {
            out.untouched
                .push(untouched("untouched: Guardian's temp file".into()));
            continue;
        }
        if sel.compress && name.ends_with(b".zst") {
            out.untouched
                .push(untouched("untouched: already compressed".into()));
            continue;
        }
        match classify(entry, sel) {
            Ok((series, time)) => groups
                .entry(series)
                .or_default()
                .push(Member { entry, time }),
            Err(reason) => out.untouched.push(untouched(reason)),
        }
    }
    for (key, mut members) in groups {
        members.sort_by(|a, b| newest_first(a, b, sel.order));
        out.series.push(Series {
            key: crate::textpath::escape(std::path::Path::new(std::ffi::OsStr::from_bytes(&key))),
            entries: decide_series(&members, &sel.keep),
        });
    }
    out
}

/// The series key and ordering time of a matching entry, or why it is left alone.
fn classify(entry: &Entry, sel: &Selector) -> Result<(Vec<u8>, i64), String> {
    let name = entry.name.as_bytes();
    if let Some(glob) = &sel.glob {
        if !glob.is_match(std::path::Path::new(&entry.name)) {
            return Err("untouched: does not match the glob".into());
        }
        return Ok((Vec::new(), entry.mtime));
    }
    let Some(regex) = &sel.regex else {
        return Err("untouched: the rule has no pattern".into());
    };
    let Some(caps) = regex.captures(name) else {
        return Err("untouched: does not match the regex".into());
    };
    let series = caps
        .name("series")
        .map(|m| m.as_bytes().to_vec())
        .unwrap_or_default();
    let time = match (sel.order, &sel.timestamp_format) {
        (Order::Timestamp, Some(format)) => {
            let Some(ts) = caps.name("ts") else {
                return Err("untouched: the `ts` group did not take part in the match".into());
            };
            match super::parse_timestamp(format, ts.as_bytes()) {
                Some(t) => t.as_second(),
                None => {
                    return Err(format!(
                        "untouched: timestamp {:?} does not read as `{format}`",
                        String::from_utf8_lossy(ts.as_bytes())
                    ))
                }
            }
        }
        _ => entry.mtime,
    };
    Ok((series, time))
}

fn newest_first(a: &Member<'_>, b: &Member<'_>, order: Order) -> Ordering {
    let by_name = natural_cmp(b.entry.name.as_bytes(), a.entry.name.as_bytes());
    match order {
        Order::Name => by_name,
        Order::Timestamp | Order::Mtime => b.time.cmp(&a.time).then(by_name),
    }
}

/// The keep rules over one series, newest first.
fn decide_series(members: &[Member<'_>], keep: &KeepPolicy) -> Vec<Decision> {
    let newest_time = members.first().map(|m| m.time).unwrap_or(0);
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); members.len()];
    for (i, m) in members.iter().enumerate() {
        let r = &mut reasons[i];
        if i == 0 {
            r.push("kept: newest of the series".into());
        }
        if i < usize::try_from(keep.last).unwrap_or(usize::MAX) {
            r.push(format!("kept by keep_last #{}", i + 1));
        }
        if let Some(within) = keep.within {
            let age = newest_time.saturating_sub(m.time);
            if age <= within {
                r.push(format!(
                    "kept by keep_within {} ({} before the newest)",
                    human_secs(within),
                    human_secs(age.max(0))
                ));
            }
        }
        if m.entry.pinned {
            r.push(format!("kept: pinned ({})", crate::scan::KEEP_MARKER));
        }
        if let Some(p) = &m.entry.pointed_by {
            r.push(format!("kept: target of `{p}`"));
        }
        if let Some(why) = &m.entry.in_use {
            r.push(format!("kept: {why}"));
        }
    }
    for (period, count) in [
        (Period::Day, keep.daily),
        (Period::Week, keep.weekly),
        (Period::Month, keep.monthly),
    ] {
        let mut kept = 0u32;
        let mut last: Option<String> = None;
        for (i, m) in members.iter().enumerate() {
            if kept >= count {
                break;
            }
            let bucket = period.bucket(m.time);
            if last.as_ref() != Some(&bucket) {
                kept += 1;
                reasons[i].push(format!("kept by {} #{kept} ({bucket})", period.key()));
            }
            last = Some(bucket);
        }
    }
    members
        .iter()
        .zip(reasons)
        .map(|(m, mut r)| {
            let verdict = if r.is_empty() {
                r.push(format!("deleted: {}", why_not_kept(keep)));
                Verdict::Delete
            } else {
                Verdict::Keep
            };
            Decision {
                name: m.entry.name.clone().into(),
                verdict,
                reasons: r,
                bytes: m.entry.bytes,
                time: m.time,
            }
        })
        .collect()
}

/// Why an entry no rule kept goes: every configured keep rule it fell out of.
fn why_not_kept(keep: &KeepPolicy) -> String {
    let mut parts = Vec::new();
    if keep.last > 0 {
        parts.push(format!("beyond keep_last {}", keep.last));
    }
    if let Some(within) = keep.within {
        parts.push(format!("older than keep_within {}", human_secs(within)));
    }
    for (key, n) in [
        ("keep_daily", keep.daily),
        ("keep_weekly", keep.weekly),
        ("keep_monthly", keep.monthly),
    ] {
        if n > 0 {
            parts.push(format!("not the newest of one of the {n} periods of {key}"));
        }
    }
    if parts.is_empty() {
        "no keep rule keeps it".into()
    } else {
        parts.join(", ")
    }
}

fn human_secs(secs: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(
        u64::try_from(secs).unwrap_or(0),
    ))
    .to_string()
}

#[derive(Clone, Copy)]
enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    fn key(self) -> &'static str {
        match self {
            Period::Day => "keep_daily",
            Period::Week => "keep_weekly",
            Period::Month => "keep_monthly",
        }
    }

    /// The calendar bucket (UTC) of `secs`.
    fn bucket(self, secs: i64) -> String {
        let date = jiff::tz::Offset::UTC
            .to_datetime(jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
            .date();
        match self {
            Period::Day => date.to_string(),
            Period::Week => {
                let w = date.iso_week_date();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Month => format!("{}-{:02}", date.year(), date.month()),
        }
    }
}

/// Orders names with digit runs compared as numbers: `v9` < `v10` < `v010a`.
pub fn natural_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (ca, cb) = (a[i], b[j]);
        if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let ea = i + a[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let eb = j + b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
            let da = trim_zeros(&a[i..ea]);
            let db = trim_zeros(&b[j..eb]);
            let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
            if ord != Ordering::Equal {
                return ord;
            }
            // Equal numbers: fewer leading zeros first, so the order is total.
            let ord = (ea - i).cmp(&(eb - j));
            if ord != Ordering::Equal {
                return ord;
            }
            i = ea;
            j = eb;
        } else {
            if ca != cb {
                return ca.cmp(&cb);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits.iter().take_while(|c| **c == b'0').count();
    &digits[start..]
}
