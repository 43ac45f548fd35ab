//! The scanner: sizes directory trees as `du -sB1 -x` does (allocated bytes, hard links counted
//! once) plus apparent bytes, in parallel, relative to directory fds, never following symlinks
//! and never leaving the filesystem (device and mount) it started on. It also finds the entries
//! cleanup rules name. It never modifies anything.

mod tally;

pub use tally::{Tally, Usage};

use crate::fsys::{self, Boundary, EntryKind, EntryStat};
use rayon::prelude::*;
use rustix::fd::{AsFd, BorrowedFd};
use serde::Serialize;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

pub use crate::fsys::MAX_DEPTH;

/// The marker file that exempts a directory (and everything above it that would contain it)
/// from deletion.
pub const KEEP_MARKER: &str = ".guardian-keep";

/// Something the walk could not read; reported, never fatal.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WalkError {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    pub error: String,
}

/// Decides, for each entry below the root, whether a cleanup rule names it.
pub trait Classify: Sync {
    /// Returns the index of the rule that names this entry, if any. Matched directories are
    /// measured whole and not searched for further matches.
    fn rule_for(&self, name: &OsStr, stat: &EntryStat, depth: usize) -> Option<usize>;

    /// Whether this entry's change times count as activity (false for a directory whose last
    /// change was Guardian's own deletion inside it).
    fn counts_times(&self, _stat: &EntryStat) -> bool {
        true
    }
}

/// A classifier that matches nothing (plain sizing).
pub struct NoRules;

impl Classify for NoRules {
    fn rule_for(&self, _: &OsStr, _: &EntryStat, _: usize) -> Option<usize> {
        None
    }
}

/// Inside a matched directory: no further matches, the same view of activity.
struct Measure<'a>(&'a dyn Classify);

impl Classify for Measure<'_> {
    fn rule_for(&self, _: &OsStr, _: &EntryStat, _: usize) -> Option<usize> {
        None
    }

    fn counts_times(&self, stat: &EntryStat) -> bool {
        self.0.counts_times(stat)
    }
}

/// An entry a rule names, with what deleting it would free.
#[derive(Clone, Debug)]
pub struct RuleMatch {
    /// Path relative to the walked root.
    pub rel_path: PathBuf,
    /// The entry's (dev, ino).
    pub identity: (u64, u64),
    pub rule: usize,
    pub kind: EntryKind,
    /// What deleting the entry frees: hard-linked inodes count only when every link is inside.
    pub freeable: Usage,
}

/// The result of walking one tree.
#[derive(Debug, Default)]
pub struct Walked {
    pub tally: Tally,
    pub matches: Vec<RuleMatch>,
    /// True when a `.guardian-keep` marker sits somewhere in the tree.
    pub contains_keep: bool,
    pub errors: Vec<WalkError>,
    /// Mount points (other devices or mounts) found inside and not entered.
    pub mounts_skipped: Vec<PathBuf>,
}

impl Walked {
    fn merge(&mut self, mut other: Walked) {
        self.tally.merge(std::mem::take(&mut other.tally));
        self.matches.append(&mut other.matches);
        self.contains_keep |= other.contains_keep;
        self.errors.append(&mut other.errors);
        self.mounts_skipped.append(&mut other.mounts_skipped);
    }
}

struct Walk<'a, C: Classify + ?Sized> {
    classify: &'a C,
    boundary: &'a Boundary,
    /// Display path of the root, for error messages.
    root: &'a Path,
    /// On the walk pool: sibling subdirectories are walked in parallel.
    parallel: bool,
}

/// Sizes the tree at `path` (a directory or a single entry), like `du -sB1 -x`.
pub fn scan_path(path: &Path) -> io::Result<Walked> {
    match fsys::open_dir_path(path) {
        Ok(fd) => walk_tree(fd.as_fd(), path, &NoRules),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOTDIR) || e.raw_os_error() == Some(libc::ELOOP) =>
        {
            let parent = path.parent().unwrap_or(Path::new("."));
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let name = path
                .file_name()
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            let dir = fsys::open_dir_path(parent)?;
            let st = fsys::stat_entry(dir.as_fd(), &fsys::c_name(name)?)?;
            let mut walked = Walked::default();
            walked.tally.add_entry(&st);
            Ok(walked)
        }
        Err(e) => Err(e),
    }
}

/// Walks the open directory `dir` (displayed as `root`, its absolute path), sizing it and
/// collecting the entries `classify` names. Runs on the walk pool ([`fsys::on_walk_pool`]).
pub fn walk_tree<C: Classify>(
    dir: BorrowedFd<'_>,
    root: &Path,
    classify: &C,
) -> io::Result<Walked> {
    let root_stat = fsys::stat_fd(dir)?;
    let (boundary, unsure) = Boundary::lenient(dir, root)?;
    let mut walked = fsys::on_walk_pool(|parallel| {
        let walk = Walk {
            classify,
            boundary: &boundary,
            root,
            parallel,
        };
        walk.dir(dir, Path::new(""), 0)
    });
    if let Some(why) = unsure {
        walked.errors.push(WalkError {
            path: root.to_path_buf(),
            error: format!("{why}; sized by device only"),
        });
    }
    walked
        .tally
        .add_entry_times(&root_stat, classify.counts_times(&root_stat));
    Ok(walked)
}

impl<C: Classify> Walk<'_, C> {
    /// Walks the contents of `dir` (at `rel` below the root, `depth` levels down).
    fn dir(&self, dir: BorrowedFd<'_>, rel: &Path, depth: usize) -> Walked {
        let mut walked = Walked::default();
        let listed = match fsys::list_dir(dir) {
            Ok(listed) => listed,
            Err(e) => {
                walked
                    .errors
                    .push(self.error(rel, "cannot read directory", e));
                return walked;
            }
        };
        // A marker exempts this dir's subtree only; siblings' matches stay.
        let kept_here = listed.iter().any(|l| l.os_name() == KEEP_MARKER);
        walked.contains_keep = kept_here;
        let mut subdirs = Vec::new();
        for entry in &listed {
            let name = entry.os_name();
            let st = match fsys::stat_entry(dir, &entry.name) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    walked
                        .errors
                        .push(self.error(&rel.join(name), "cannot stat", e));
                    continue;
                }
            };
            if !self.boundary.admits(dir, &entry.name, &st) {
                walked.mounts_skipped.push(self.root.join(rel).join(name));
                continue;
            }
            let rule = if kept_here {
                None
            } else {
                self.classify.rule_for(name, &st, depth + 1)
            };
            match (st.kind, rule) {
                (EntryKind::Dir, _) => subdirs.push((entry, st, rule)),
                (kind, Some(rule)) => {
                    let mut single = Tally::default();
                    single.add_entry(&st);
                    walked.matches.push(RuleMatch {
                        rel_path: rel.join(name),
                        identity: (st.dev, st.ino),
                        rule,
                        kind,
                        freeable: single.freeable(),
                    });
                    walked.tally.merge(single);
                }
                (_, None) => walked
                    .tally
                    .add_entry_times(&st, self.classify.counts_times(&st)),
            }
        }
        let walk_one = |(entry, st, rule)| self.subdir(dir, entry, st, rule, rel, depth);
        let children = if self.parallel {
            subdirs
                .into_par_iter()
                .map(walk_one)
                .reduce(Walked::default, |mut a, b| {
                    a.merge(b);
                    a
                })
        } else {
            subdirs
                .into_iter()
                .map(walk_one)
                .fold(Walked::default(), |mut a, b| {
                    a.merge(b);
                    a
                })
        };
        walked.merge(children);
        if kept_here {
            walked.matches.clear();
        }
        walked
    }

    /// Opens and walks one subdirectory; a rule match records the whole subtree.
    fn subdir(
        &self,
        parent: BorrowedFd<'_>,
        entry: &fsys::Listed,
        st: EntryStat,
        rule: Option<usize>,
        rel: &Path,
        depth: usize,
    ) -> Walked {
        let rel = rel.join(entry.os_name());
        let mut walked = if depth + 1 >= MAX_DEPTH {
            let mut w = Walked::default();
            w.errors.push(WalkError {
                path: self.root.join(&rel),
                error: format!("deeper than {MAX_DEPTH} levels; not walked"),
            });
            w
        } else {
            match fsys::open_child_dir(parent, &entry.name) {
                // Sizing only: a dir swapped between the stat and the open is measured as it
                // is (the executor re-identifies whatever it deletes).
                Ok(fd) => {
                    if rule.is_some() {
                        let plain = Walk {
                            classify: &Measure(self.classify),
                            boundary: self.boundary,
                            root: self.root,
                            parallel: self.parallel,
                        };
                        plain.dir(fd.as_fd(), &rel, depth + 1)
                    } else {
                        self.dir(fd.as_fd(), &rel, depth + 1)
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Walked::default(),
                Err(e) => {
                    let mut w = Walked::default();
                    w.errors.push(self.error(&rel, "cannot open directory", e));
                    w
                }
            }
        };
        walked
            .tally
            .add_entry_times(&st, self.classify.counts_times(&st));
        if let Some(rule) = rule {
            if !walked.contains_keep {
                walked.matches.push(RuleMatch {
                    rel_path: rel,
                    identity: (st.dev, st.ino),
                    rule,
                    kind: EntryKind::Dir,
                    freeable: walked.tally.freeable(),
                });
            }
        }
        walked
    }

    fn error(&self, rel: &Path, what: &str, e: io::Error) -> WalkError {
        WalkError {
            path: self.root.join(rel),
            error: format!("{what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
