//! The audit log read strictly: every line must be a complete audit record (a torn or
//! unparseable line is an error naming it), and every deletion's intent line is paired with its
//! outcome line by `id`.

use anyhow::{bail, Context, Result};
use guardian::cleanup::AuditRecord;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Every record of an audit log, in order.
pub struct AuditCheck {
    pub records: Vec<AuditRecord>,
}

impl AuditCheck {
    /// Reads `path` (a missing file is an empty log). Fails on a line that is not a complete
    /// record or on a last line without its newline.
    pub fn read(path: &Path) -> Result<AuditCheck> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
            bail!(
                "{}: the last line has no newline (torn write): {}",
                path.display(),
                guardian::textpath::escape_bytes(tail(&bytes, 200))
            );
        }
        let mut records = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let record: AuditRecord = serde_json::from_slice(line).with_context(|| {
                format!(
                    "{} line {}: not an audit record: {}",
                    path.display(),
                    i + 1,
                    guardian::textpath::escape_bytes(line)
                )
            })?;
            records.push(record);
        }
        Ok(AuditCheck { records })
    }

    /// Intent lines with no outcome line of the same id (in order).
    pub fn dangling(&self) -> Vec<&AuditRecord> {
        let mut open: Vec<&AuditRecord> = Vec::new();
        for r in &self.records {
            if r.id.is_empty() {
                continue;
            }
            open.retain(|o| o.id != r.id);
            if r.outcome == guardian::cleanup::audit::INTENT {
                open.push(r);
            }
        }
        open
    }

    /// Outcome lines (everything but intents).
    pub fn outcomes(&self) -> impl Iterator<Item = &AuditRecord> {
        self.records
            .iter()
            .filter(|r| r.outcome != guardian::cleanup::audit::INTENT)
    }

    /// How many outcome lines of each outcome.
    pub fn outcome_counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.outcomes() {
            *out.entry(r.outcome.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Outcome lines of deletions that removed something (`deleted`, `partial`).
    pub fn deletions(&self) -> impl Iterator<Item = &AuditRecord> {
        self.outcomes()
            .filter(|r| r.action == "delete" && matches!(r.outcome.as_str(), "deleted" | "partial"))
    }

    /// Allocated bytes whose last link the deletions removed.
    pub fn bytes_unlinked(&self) -> u64 {
        self.deletions().map(|r| r.bytes_unlinked).sum()
    }

    /// Free bytes the deletions gained, as `statvfs` measured them.
    pub fn bytes_freed(&self) -> u64 {
        self.deletions().map(|r| r.bytes_freed).sum()
    }

    /// Outcome lines whose id has more than one outcome (an action recorded twice).
    pub fn duplicate_outcomes(&self) -> Vec<String> {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for r in self.outcomes().filter(|r| !r.id.is_empty()) {
            *seen.entry(r.id.as_str()).or_insert(0) += 1;
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, _)| id.to_string())
            .collect()
    }
}

fn tail(bytes: &[u8], n: usize) -> &[u8] {
    &bytes[bytes.len().saturating_sub(n)..]
}
