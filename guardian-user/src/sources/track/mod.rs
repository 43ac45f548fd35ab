//! What the fanotify and inotify sources share: the size table that mirrors the project trees
//! (`tree.rs`: per directory a list of 12-byte entries, a segment of one pool in `entries.rs`,
//! no name or map entry per file; the directories packed in `dirs/` (their watches in `dirs/watches.rs`); hard links counted once in `links.rs`; one changed name re-read in
//! `names.rs`; its project set in `projects.rs` and the event summary it decides by in
//! `change.rs`), walking directories into it (`walk.rs`), the schedule of re-walks that repairs
//! lost events and drift at a CPU budget (`rewalk.rs`), the polling of directories the source could
//! not watch, at a budget too (`unwatched.rs`), and the worker thread that owns the
//! kernel queue (`worker.rs`).

mod change;
mod cost;
mod dirs;
mod entries;
mod links;
mod names;
mod projects;
mod rewalk;
mod tree;
mod unwatched;
mod walk;
mod worker;

pub(crate) use change::Change;
pub(crate) use tree::{key_of, At, Hooks, Key, NoHooks, Refused, Tree, Watch};
pub(crate) use unwatched::{SHALLOW, UNWATCHED_BUDGET};
pub(crate) use worker::Backend;
pub use worker::{Worker, FORCE_WORKER_FAILURE_ENV};

/// A 32-bit record, row or pool number as an index (saturating where `usize` is narrower).
pub(crate) fn us(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// An index or count as the 32 bits the packed tables keep, saturating.
pub(crate) fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod countdown_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod unwatched_tests;
