//! The counters `/metrics` serves, kept from the events the core publishes (one place, updated
//! on the publishing thread with atomics, so no event is missed by a slow reader): freed bytes
//! and actions by rule/phase(/outcome), cycles by trigger, cycle durations, ghosts reaped; and
//! bytes written per project ([`written`](super::written)), fed by the daemon's samples.
//!
//! Invariants: bounded label sets — rules are configured names (a label is cut to
//! [`MAX_LABEL`] bytes and at most [`MAX_SERIES`] rule/phase pairs are kept, the rest counted
//! under `other`), outcomes and triggers are closed sets.

use super::Event;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::Mutex;

/// Most distinct rule/phase pairs labelled by name; later ones count under `other`.
pub const MAX_SERIES: usize = 200;
/// Longest label value kept (bytes, cut at a character boundary).
pub const MAX_LABEL: usize = 64;

type Labels = Vec<(&'static str, String)>;

/// Bucket bounds of `guardian_cleanup_cycle_duration_seconds`.
const CYCLE_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

pub struct Counters {
    freed: Family<Labels, Counter>,
    actions: Family<Labels, Counter>,
    cycles: Family<Labels, Counter>,
    duration: Histogram,
    ghosts: Counter,
    webhook_dropped: Family<Labels, Counter>,
    webhook_deliveries: Family<Labels, Counter>,
    /// Bytes written per project (fed by the daemon's samples, not by events).
    pub written: super::written::ProjectWritten,
    /// The rule/phase pairs labelled so far.
    seen: Mutex<HashSet<(String, u8)>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            freed: Family::default(),
            actions: Family::default(),
            cycles: Family::default(),
            duration: Histogram::new(CYCLE_BUCKETS),
            ghosts: Counter::default(),
            webhook_dropped: Family::default(),
            webhook_deliveries: Family::default(),
            written: Default::default(),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Counts what `event` says happened.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::Action { record } => {
                let rule = self.rule_label(&record.rule, record.phase);
                let phase = record.phase.to_string();
                self.actions
                    .get_or_create(&vec![
                        ("rule", rule.clone()),
                        ("phase", phase.clone()),
                        ("outcome", outcome_label(&record.outcome).into()),
                    ])
                    .inc();
                if !record.dry_run {
                    self.freed
                        .get_or_create(&vec![("rule", rule), ("phase", phase)])
                        .inc_by(record.bytes_freed);
                }
            }
            Event::CleanupFinished { kind, seconds, .. } => {
                self.cycles
                    .get_or_create(&vec![("trigger", trigger_label(kind).into())])
                    .inc();
                if seconds.is_finite() && *seconds >= 0.0 {
                    self.duration.observe(*seconds);
                }
            }
            Event::GhostReaped { .. } => {
                self.ghosts.inc();
            }
            _ => {}
        }
    }

    /// `n` events webhook `index` dropped (its queue was full, or it fell behind).
    pub fn webhook_dropped(&self, index: usize, n: u64) {
        self.webhook_dropped
            .get_or_create(&vec![("webhook", index.to_string())])
            .inc_by(n);
    }

    /// One delivery of webhook `index` ended: sent, or failed after every retry.
    pub fn webhook_delivered(&self, index: usize, sent: bool) {
        let outcome = if sent { "sent" } else { "failed" };
        self.webhook_deliveries
            .get_or_create(&vec![
                ("webhook", index.to_string()),
                ("outcome", outcome.into()),
            ])
            .inc();
    }

    /// Registers the counters (shared, not copied) into a scrape's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "guardian_cleanup_freed_bytes",
            "Free bytes gained by Guardian's actions, as statvfs measured them",
            self.freed.clone(),
        );
        registry.register(
            "guardian_cleanup_actions",
            "Actions (audit outcome lines) by rule, phase and outcome",
            self.actions.clone(),
        );
        registry.register(
            "guardian_cleanup_cycles",
            "Cleanup cycles finished, by trigger (reactive or preemptive)",
            self.cycles.clone(),
        );
        registry.register(
            "guardian_cleanup_cycle_duration_seconds",
            "Duration of cleanup cycles",
            self.duration.clone(),
        );
        registry.register(
            "guardian_ghosts_reaped",
            "Ghost tasks the reaper handled",
            self.ghosts.clone(),
        );
        registry.register(
            "guardian_webhook_dropped",
            "Events a webhook dropped (oldest first) because its queue was full or it fell behind",
            self.webhook_dropped.clone(),
        );
        registry.register(
            "guardian_webhook_deliveries",
            "Webhook deliveries by outcome (sent, or failed after every retry)",
            self.webhook_deliveries.clone(),
        );
        self.written.register(registry);
    }

    /// The rule's label: its name (cut to [`MAX_LABEL`]) while fewer than [`MAX_SERIES`]
    /// pairs are known, else `other`.
    fn rule_label(&self, rule: &str, phase: u8) -> String {
        let rule = cut(rule);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (rule, phase);
        if seen.contains(&key) {
            return key.0;
        }
        if seen.len() >= MAX_SERIES {
            return "other".into();
        }
        seen.insert(key.clone());
        key.0
    }
}

/// The audit outcomes, a closed set (anything else is `other`).
fn outcome_label(outcome: &str) -> &'static str {
    match outcome {
        "deleted" => "deleted",
        "partial" => "partial",
        "would_delete" => "would_delete",
        "refused" => "refused",
        "skipped" => "skipped",
        "failed" => "failed",
        "interrupted" => "interrupted",
        "ok" => "ok",
        _ => "other",
    }
}

fn trigger_label(kind: &str) -> &'static str {
    match kind {
        "preemptive" => "preemptive",
        _ => "reactive",
    }
}

/// `s` cut to at most [`MAX_LABEL`] bytes at a character boundary.
pub fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_LABEL);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::AuditRecord;
    use std::path::PathBuf;

    fn action(rule: &str, outcome: &str, freed: u64) -> Event {
        let mut record = AuditRecord::event(
            "delete",
            PathBuf::from("/w/p"),
            rule,
            1,
            String::new(),
            false,
            outcome,
        );
        record.bytes_freed = freed;
        Event::Action { record }
    }

    fn text(c: &Counters) -> String {
        let mut registry = Registry::default();
        c.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn rule_labels_are_bounded_and_freed_bytes_summed() {
        let c = Counters::new();
        c.observe(&action("npm", "deleted", 100));
        c.observe(&action("npm", "deleted", 50));
        c.observe(&action("npm", "weird", 0));
        for i in 0..(MAX_SERIES + 50) {
            c.observe(&action(&format!("r{i}"), "skipped", 1));
        }
        let out = text(&c);
        assert!(
            out.contains("guardian_cleanup_freed_bytes_total{rule=\"npm\",phase=\"1\"} 150"),
            "{out}"
        );
        assert!(out.contains("outcome=\"other\""));
        assert!(
            out.contains("guardian_cleanup_freed_bytes_total{rule=\"other\",phase=\"1\"} 51"),
            "{out}"
        );
        let series = out
            .lines()
            .filter(|l| l.starts_with("guardian_cleanup_freed_bytes_total"))
            .count();
        assert_eq!(series, MAX_SERIES + 1);
        assert!(!out.contains("quantile"));
    }

    #[test]
    fn a_long_multibyte_rule_name_is_cut_at_a_character_boundary() {
        let name = "é".repeat(100);
        assert!(cut(&name).len() <= MAX_LABEL);
        assert!(name.starts_with(&cut(&name)));
    }
}
