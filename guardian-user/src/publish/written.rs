//! `guardian_project_written_bytes_total{project}`: bytes written into each project, as counters
//! that only go up, under a bounded set of labels — the projects writing now, each by name, the
//! rest under `project="other"`.
//!
//! Invariants: at most [`TOP_PROJECTS`] names plus `other`. A name, once given, keeps its series
//! while the project writes (its counter never moves to `other`, so no series ever goes down);
//! a named project that vanished, or wrote nothing for [`IDLE_LABEL`] while another wants its
//! place, loses its series (the series ends; a new one starts at zero if it comes back). So
//! `rate()` of every series is exact, and `sum()` over series is the rate of all writes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Projects labelled by name.
pub const TOP_PROJECTS: usize = 20;
/// A named project silent this long gives its name's place to a new writer.
pub const IDLE_LABEL: Duration = Duration::from_secs(600);

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
pub struct ProjectWritten {
    family: Family<Labels, Counter>,
    /// Named projects and when each last wrote.
    named: Mutex<HashMap<PathBuf, Instant>>,
}

fn labels(project: &Path) -> Labels {
    vec![("project", crate::textpath::escape(project))]
}

fn other() -> Labels {
    vec![("project", "other".into())]
}

impl ProjectWritten {
    /// `bytes` written into `project` (the source's count) at `now`.
    pub fn add(&self, project: &Path, bytes: u64, now: Instant) {
        if bytes == 0 {
            return;
        }
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = named.get_mut(project) {
            *last = now;
            self.family.get_or_create(&labels(project)).inc_by(bytes);
            return;
        }
        if named.len() >= TOP_PROJECTS {
            let stalest = named
                .iter()
                .min_by_key(|(_, last)| **last)
                .map(|(p, last)| (p.clone(), *last));
            match stalest {
                Some((path, last)) if now.saturating_duration_since(last) >= IDLE_LABEL => {
                    named.remove(&path);
                    self.family.remove(&labels(&path));
                }
                _ => {
                    self.family.get_or_create(&other()).inc_by(bytes);
                    return;
                }
            }
        }
        named.insert(project.to_path_buf(), now);
        self.family.get_or_create(&labels(project)).inc_by(bytes);
    }

    /// Ends the series of named projects that no longer exist.
    pub fn retain(&self, alive: &dyn Fn(&Path) -> bool) {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        named.retain(|path, _| {
            let keep = alive(path);
            if !keep {
                self.family.remove(&labels(path));
            }
            keep
        });
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "guardian_project_written_bytes",
            "Bytes written into each project as the write source saw them (projects writing now \
             by name, the rest as other)",
            self.family.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(w: &ProjectWritten) -> Vec<(String, u64)> {
        let mut registry = Registry::default();
        w.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        let mut v: Vec<(String, u64)> = out
            .lines()
            .filter_map(|l| l.strip_prefix("guardian_project_written_bytes_total{project=\""))
            .filter_map(|l| {
                let (name, value) = l.split_once("\"} ")?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn names_are_bounded_and_the_rest_counts_as_other_without_any_series_going_down() {
        let w = ProjectWritten::default();
        let t0 = Instant::now();
        for i in 0..TOP_PROJECTS + 5 {
            w.add(Path::new(&format!("/w/p{i:02}")), 10, t0);
        }
        let s = series(&w);
        assert_eq!(s.len(), TOP_PROJECTS + 1, "{s:?}");
        assert!(s.contains(&("other".into(), 50)), "{s:?}");
        // A named project writing again adds to its own series, never to other.
        w.add(Path::new("/w/p00"), 5, t0 + Duration::from_secs(1));
        let s = series(&w);
        assert!(s.contains(&("/w/p00".into(), 15)), "{s:?}");
        assert!(s.contains(&("other".into(), 50)), "{s:?}");
    }

    #[test]
    fn a_new_writer_takes_the_name_of_one_silent_for_ten_minutes() {
        let w = ProjectWritten::default();
        let t0 = Instant::now();
        for i in 0..TOP_PROJECTS {
            w.add(Path::new(&format!("/w/p{i:02}")), 10, t0);
        }
        let later = t0 + IDLE_LABEL;
        for i in 1..TOP_PROJECTS {
            w.add(Path::new(&format!("/w/p{i:02}")), 1, later);
        }
        w.add(Path::new("/w/new"), 7, later);
        let s = series(&w);
        assert!(s.contains(&("/w/new".into(), 7)), "{s:?}");
        assert!(!s.iter().any(|(n, _)| n == "/w/p00"), "{s:?}");
        assert!(!s.iter().any(|(n, _)| n == "other"), "{s:?}");
        // Not silent long enough: the next newcomer counts as other.
        w.add(Path::new("/w/newer"), 3, later + Duration::from_secs(1));
        assert!(series(&w).contains(&("other".into(), 3)));
    }

    #[test]
    fn a_vanished_project_ends_its_series_and_frees_its_name() {
        let w = ProjectWritten::default();
        let t0 = Instant::now();
        for i in 0..TOP_PROJECTS {
            w.add(Path::new(&format!("/w/p{i:02}")), 10, t0);
        }
        w.retain(&|p| p != Path::new("/w/p03"));
        w.add(Path::new("/w/next"), 4, t0);
        let s = series(&w);
        assert!(!s.iter().any(|(n, _)| n == "/w/p03"));
        assert!(s.contains(&("/w/next".into(), 4)), "{s:?}");
    }

    #[test]
    fn a_name_that_is_not_utf8_is_escaped_in_its_label() {
        use std::os::unix::ffi::OsStrExt;
        let w = ProjectWritten::default();
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(b"/w/\xff\"x"));
        w.add(&p, 1, Instant::now());
        let mut registry = Registry::default();
        w.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("\\\\xff"), "{out}");
    }
}
