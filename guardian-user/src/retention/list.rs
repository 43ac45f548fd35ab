//! The thin IO layer of retention: lists one retention dir without following symlinks (opened
//! one component at a time from `/`), stats every entry, sizes the directories (`du` semantics,
//! never leaving the filesystem), finds pins and the targets of the rule's pointers, asks the
//! process table who holds what, and builds the pure core's [`Entry`]s. Read-only.

use super::keep::{Entry, Selector, PIN_SUFFIX};
use crate::fsys::{self, EntryKind, EntryStat};
use crate::protect::{self, ProcSnapshot};
use rustix::fd::{AsFd, BorrowedFd};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Most entries one retention dir may hold; a bigger one is reported and left alone.
pub const MAX_ENTRIES: usize = 100_000;

/// One listed entry: what the core decides on and what the executor re-checks.
#[derive(Clone, Debug)]
pub struct Listed {
    pub entry: Entry,
    pub st: EntryStat,
}

/// Lists `dir` for `sel`. `procs` marks the entries a process holds (`None`: every entry counts
/// as in use, nothing can be proven unused).
pub fn list(dir: &Path, sel: &Selector, procs: &ProcSnapshot) -> Result<Vec<Listed>, String> {
    let fd = fsys::open_dir_nofollow(dir).map_err(|e| {
        format!(
            "cannot open {} without following symlinks: {e}",
            crate::textpath::shown(dir)
        )
    })?;
    let names = fsys::list_dir(fd.as_fd())
        .map_err(|e| format!("cannot list {}: {e}", crate::textpath::shown(dir)))?;
    if names.len() > MAX_ENTRIES {
        return Err(format!(
            "{} holds {} entries, more than {MAX_ENTRIES}: left alone",
            crate::textpath::shown(dir),
            names.len()
        ));
    }
    let present: HashSet<OsString> = names.iter().map(|l| l.os_name().to_owned()).collect();
    let mut out = Vec::with_capacity(names.len());
    let mut by_identity: HashMap<(u64, u64), usize> = HashMap::new();
    for listed in &names {
        let name = listed.os_name();
        let Ok(st) = fsys::stat_entry(fd.as_fd(), &listed.name) else {
            continue; // gone meanwhile
        };
        let path = dir.join(name);
        let mut pin = name.to_owned();
        pin.push(PIN_SUFFIX);
        let mut pinned = present.contains(&pin);
        if st.kind == EntryKind::Dir {
            if let Ok(child) = fsys::open_child_dir(fd.as_fd(), &listed.name) {
                pinned |= has_marker(child.as_fd());
            }
        }
        let in_use = if !procs.complete {
            Some("in use: the process table is unreadable".to_string())
        } else {
            protect::check_identity(st.dev, st.ino, &path, procs).map(|p| p.to_string())
        };
        by_identity.insert((st.dev, st.ino), out.len());
        out.push(Listed {
            entry: Entry {
                name: name.to_owned(),
                mtime: st.mtime,
                // Directories are sized by [`size_of`] once decided on (only what goes).
                bytes: (st.kind != EntryKind::Dir).then_some(st.allocated),
                pinned,
                pointed_by: None,
                in_use,
            },
            st,
        });
    }
    let has_pointer = sel
        .pointers()
        .iter()
        .any(|p| present.contains(OsStr::new(p)));
    for l in out.iter_mut().filter(|_| has_pointer) {
        if let Some(p) = pointer_to(fd.as_fd(), dir, sel.pointers(), &l.entry.name, &l.st) {
            l.entry.pointed_by = Some(p);
        }
    }
    Ok(out)
}

/// The allocated bytes of the entry `name` of `dir` (its tree for a directory, `du -sB1 -x`
/// semantics), opened without following symlinks; `None` when it cannot be opened.
pub fn size_of(dir: &Path, name: &OsStr) -> Option<u64> {
    let fd = fsys::open_dir_nofollow(dir).ok()?;
    let c = fsys::c_name(name).ok()?;
    let st = fsys::stat_entry(fd.as_fd(), &c).ok()?;
    if st.kind != EntryKind::Dir {
        return Some(st.allocated);
    }
    let child = fsys::open_child_dir(fd.as_fd(), &c).ok()?;
    let walked =
        crate::scan::walk_tree(child.as_fd(), &dir.join(name), &crate::scan::NoRules).ok()?;
    Some(walked.tally.usage().allocated)
}

fn has_marker(dir: BorrowedFd<'_>) -> bool {
    fsys::c_name(OsStr::new(crate::scan::KEEP_MARKER))
        .map(|m| fsys::stat_entry(dir, &m).is_ok())
        .unwrap_or(true)
}

/// The pointer among `pointers` (symlinks in `dir`, shown as `shown`) that resolves to the
/// entry `name` (stated as `st`) or to something inside it: by the identity of what the link
/// leads to, by the first component of its text, and by its canonical path. A pointer that
/// exists but cannot be read protects nothing but is not a reason to delete either: the entry
/// it might name is kept (fail safe).
pub fn pointer_to(
    dir: BorrowedFd<'_>,
    shown: &Path,
    pointers: &[String],
    name: &OsStr,
    st: &EntryStat,
) -> Option<String> {
    for p in pointers {
        let Ok(c) = fsys::c_name(OsStr::new(p)) else {
            continue;
        };
        let Ok(pst) = fsys::stat_entry(dir, &c) else {
            continue;
        };
        if pst.kind != EntryKind::Symlink {
            continue;
        }
        let Ok(target) = rustix::fs::readlinkat(dir, c.as_c_str(), Vec::new()) else {
            return Some(p.clone());
        };
        let target = target.as_bytes();
        if first_component(target, shown).is_some_and(|first| first == name.as_bytes()) {
            return Some(p.clone());
        }
        if let Ok(followed) = rustix::fs::statat(dir, c.as_c_str(), rustix::fs::AtFlags::empty()) {
            if fsys::stat_identity(&followed) == (st.dev, st.ino) {
                return Some(p.clone());
            }
        }
        if let (Ok(resolved), Ok(base)) = (
            std::fs::canonicalize(shown.join(p)),
            std::fs::canonicalize(shown),
        ) {
            if resolved.starts_with(base.join(name)) {
                return Some(p.clone());
            }
        }
    }
    None
}

/// The first component a link text names inside `dir`: `v9`, `./v9/x` → `v9`; an absolute
/// text below `dir` → its first component there.
fn first_component<'a>(target: &'a [u8], dir: &Path) -> Option<&'a [u8]> {
    let mut rest: &[u8] = target;
    if rest.starts_with(b"/") {
        let prefix = dir.as_os_str().as_bytes();
        rest = rest.strip_prefix(prefix)?;
        rest = rest.strip_prefix(b"/")?;
    }
    loop {
        rest = match rest {
            [b'.', b'/', tail @ ..] => tail,
            [b'/', tail @ ..] => tail,
            _ => break,
        };
    }
    let first = rest.split(|b| *b == b'/').next()?;
    (!first.is_empty() && first != b"." && first != b"..").then_some(first)
}

/// The retention dirs of a rule: its `dir`, or `project_dir` inside every project of every
/// workspace (protected names left out), where that exists as a real directory.
pub fn dirs_of(
    rule: &crate::config::RetentionRule,
    workspaces: &[crate::config::Workspace],
) -> Vec<PathBuf> {
    if let Some(dir) = &rule.dir {
        return vec![dir.clone()];
    }
    let Some(rel) = &rule.project_dir else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ws in workspaces {
        let Ok(root) = fsys::open_dir_nofollow(&ws.path) else {
            continue;
        };
        let Ok(projects) = fsys::list_dir(root.as_fd()) else {
            continue;
        };
        for project in projects {
            let name = project.os_name();
            if ws.protect.iter().any(|p| OsStr::new(p) == name) {
                continue;
            }
            let dir = ws.path.join(name).join(rel);
            // Every component a real directory (no symlink), or the project has no such dir.
            if fsys::open_dir_nofollow(&dir).is_ok() {
                out.push(dir);
            }
        }
    }
    out.sort();
    out
}
