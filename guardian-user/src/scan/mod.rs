//! The scanner: sizes directory trees as `du -sB1 -x` does (allocated bytes, hard links counted
//! once) plus apparent bytes, in parallel, relative to directory fds, never following symlinks
//! and never leaving the filesystem (device and mount) it started on. It also finds the entries
//! cleanup rules name, telling the classifier what sits beside and inside each (for the markers
//! of artifact types) from the fds and stats the walk already holds. It never modifies anything.

mod tally;

pub use tally::{SharedInode, Tally, Usage};

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

/// What a classifier may ask about the entries around a candidate: no more than whether a
/// regular file with a given kind of name is there.
pub trait Neighbours {
    /// True when a regular file (not a symlink to one) whose name `is_marker` accepts is here.
    fn has_file(&self, is_marker: &dyn Fn(&OsStr) -> bool) -> bool;
}

/// Where an entry sits: its siblings (the entries of its parent, stat'ed by the walk) and, for a
/// directory the walk could list, its children (stat'ed relative to the fd the walk holds,
/// without following links, only for names a marker asks about).
#[derive(Clone, Copy)]
pub struct Around<'a> {
    pub siblings: &'a dyn Neighbours,
    pub children: Option<&'a dyn Neighbours>,
}

/// No entries: what a project entry sees of its workspace (artifacts need markers in a project).
pub struct Nothing;

impl Neighbours for Nothing {
    fn has_file(&self, _: &dyn Fn(&OsStr) -> bool) -> bool {
        false
    }
}

/// The entries of one dir as the walk stat'ed them.
struct Siblings<'a>(&'a [(&'a fsys::Listed, EntryStat)]);

impl Neighbours for Siblings<'_> {
    fn has_file(&self, is_marker: &dyn Fn(&OsStr) -> bool) -> bool {
        self.0
            .iter()
            .any(|(l, st)| st.kind == EntryKind::File && is_marker(l.os_name()))
    }
}

/// The listed entries of an open dir; a name a marker asks about is stat'ed relative to `dir`,
/// without following links (the walk's children of a dir; the executor's re-check of markers).
pub struct Listing<'a> {
    pub dir: BorrowedFd<'a>,
    pub listed: &'a [fsys::Listed],
}

impl Neighbours for Listing<'_> {
    fn has_file(&self, is_marker: &dyn Fn(&OsStr) -> bool) -> bool {
        self.listed.iter().any(|l| {
            is_marker(l.os_name())
                && fsys::stat_entry(self.dir, &l.name).is_ok_and(|st| st.kind == EntryKind::File)
        })
    }
}

/// Decides, for each entry below the root, whether a cleanup rule names it.
pub trait Classify: Sync {
    /// Returns the index of the rule that names this entry, if any. Matched directories are
    /// measured whole and not searched for further matches. `around` holds the entry's
    /// siblings and, for a dir, its children (for rules that need a marker to prove the entry).
    fn rule_for(
        &self,
        name: &OsStr,
        stat: &EntryStat,
        depth: usize,
        around: &Around<'_>,
    ) -> Option<usize>;

    /// Whether this entry's change times count as activity (false for a directory whose last
    /// change was Guardian's own deletion inside it).
    fn counts_times(&self, _stat: &EntryStat) -> bool {
        true
    }
}

/// A classifier that matches nothing (plain sizing).
pub struct NoRules;

impl Classify for NoRules {
    fn rule_for(&self, _: &OsStr, _: &EntryStat, _: usize, _: &Around<'_>) -> Option<usize> {
        None
    }
}

/// Inside a matched directory: no further matches, the same view of activity.
struct Measure<'a>(&'a dyn Classify);

impl Classify for Measure<'_> {
    fn rule_for(&self, _: &OsStr, _: &EntryStat, _: usize, _: &Around<'_>) -> Option<usize> {
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

/// Where a subdirectory sits: its parent's fd and entries, whether the walk may match in it
/// (not below a keep marker), its parent's path below the root and depth.
struct Place<'a> {
    parent: BorrowedFd<'a>,
    siblings: &'a dyn Neighbours,
    classify: bool,
    rel: &'a Path,
    depth: usize,
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

/// Sizes the directory at `path` as [`scan_path`] does, but on the calling thread, one entry
/// after another: for the poll source's sampler, whose CPU time is measured on its own thread
/// and must count exactly its walks.
pub fn size_dir_here(path: &Path) -> io::Result<Walked> {
    let fd = fsys::open_dir_path(path)?;
    walk_tree_on(fd.as_fd(), path, &NoRules, false)
}

/// Walks the open directory `dir` (displayed as `root`, its absolute path), sizing it and
/// collecting the entries `classify` names. Runs on the walk pool ([`fsys::on_walk_pool`]).
pub fn walk_tree<C: Classify>(
    dir: BorrowedFd<'_>,
    root: &Path,
    classify: &C,
) -> io::Result<Walked> {
    walk_tree_on(dir, root, classify, true)
}

/// [`walk_tree`], on the walk pool when `pool`, else on the calling thread.
fn walk_tree_on<C: Classify>(
    dir: BorrowedFd<'_>,
    root: &Path,
    classify: &C,
    pool: bool,
) -> io::Result<Walked> {
    let root_stat = fsys::stat_fd(dir)?;
    let (boundary, unsure) = Boundary::lenient(dir, root)?;
    let walk = |parallel| {
        let walk = Walk {
            classify,
            boundary: &boundary,
            root,
            parallel,
        };
        walk.dir(dir, Path::new(""), 0)
    };
    let mut walked = if pool {
        fsys::on_walk_pool(walk)
    } else {
        walk(false)
    };
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
        match fsys::list_dir(dir) {
            Ok(listed) => self.listed_dir(dir, &listed, rel, depth),
            Err(e) => {
                let mut walked = Walked::default();
                walked
                    .errors
                    .push(self.error(rel, "cannot read directory", e));
                walked
            }
        }
    }

    /// Walks the contents of `dir`, already listed.
    fn listed_dir(
        &self,
        dir: BorrowedFd<'_>,
        listed: &[fsys::Listed],
        rel: &Path,
        depth: usize,
    ) -> Walked {
        let mut walked = Walked::default();
        // A marker exempts this dir's subtree only; siblings' matches stay.
        let kept_here = listed.iter().any(|l| l.os_name() == KEEP_MARKER);
        walked.contains_keep = kept_here;
        let mut stated = Vec::with_capacity(listed.len());
        for entry in listed {
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
            stated.push((entry, st));
        }
        let siblings = Siblings(&stated);
        let mut subdirs = Vec::new();
        for &(entry, st) in &stated {
            let name = entry.os_name();
            if st.kind == EntryKind::Dir {
                subdirs.push((entry, st));
                continue;
            }
            let around = Around {
                siblings: &siblings,
                children: None,
            };
            let rule = if kept_here {
                None
            } else {
                self.classify.rule_for(name, &st, depth + 1, &around)
            };
            match rule {
                Some(rule) => {
                    let mut single = Tally::default();
                    single.add_entry(&st);
                    walked.matches.push(RuleMatch {
                        rel_path: rel.join(name),
                        identity: (st.dev, st.ino),
                        rule,
                        kind: st.kind,
                        freeable: single.freeable(),
                    });
                    walked.tally.merge(single);
                }
                None => walked
                    .tally
                    .add_entry_times(&st, self.classify.counts_times(&st)),
            }
        }
        let walk_one = |(entry, st)| {
            let at = Place {
                parent: dir,
                siblings: &siblings,
                classify: !kept_here,
                rel,
                depth,
            };
            self.subdir(&at, entry, st)
        };
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

    /// Opens, classifies (siblings known, children listed) and walks one subdirectory; a rule
    /// match records the whole subtree.
    fn subdir(&self, at: &Place<'_>, entry: &fsys::Listed, st: EntryStat) -> Walked {
        let rel = at.rel.join(entry.os_name());
        let classify = |children: Option<&dyn Neighbours>| {
            let around = Around {
                siblings: at.siblings,
                children,
            };
            at.classify
                .then(|| {
                    self.classify
                        .rule_for(entry.os_name(), &st, at.depth + 1, &around)
                })
                .flatten()
        };
        let (mut walked, rule) = if at.depth + 1 >= MAX_DEPTH {
            let mut w = Walked::default();
            w.errors.push(WalkError {
                path: self.root.join(&rel),
                error: format!("deeper than {MAX_DEPTH} levels; not walked"),
            });
            (w, classify(None))
        } else {
            match fsys::open_child_dir(at.parent, &entry.name) {
                // Sizing only: a dir swapped between the stat and the open is measured as it
                // is (the executor re-identifies whatever it deletes).
                Ok(fd) => match fsys::list_dir(fd.as_fd()) {
                    Ok(listed) => {
                        let children = Listing {
                            dir: fd.as_fd(),
                            listed: &listed,
                        };
                        let rule = classify(Some(&children));
                        let walked = if rule.is_some() {
                            let plain = Walk {
                                classify: &Measure(self.classify),
                                boundary: self.boundary,
                                root: self.root,
                                parallel: self.parallel,
                            };
                            plain.listed_dir(fd.as_fd(), &listed, &rel, at.depth + 1)
                        } else {
                            self.listed_dir(fd.as_fd(), &listed, &rel, at.depth + 1)
                        };
                        (walked, rule)
                    }
                    Err(e) => {
                        let mut w = Walked::default();
                        w.errors.push(self.error(&rel, "cannot read directory", e));
                        (w, classify(None))
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Walked::default(),
                Err(e) => {
                    let mut w = Walked::default();
                    w.errors.push(self.error(&rel, "cannot open directory", e));
                    (w, classify(None))
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
