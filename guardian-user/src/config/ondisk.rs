//! The config's paths as they are on disk, read-only (lstat, fstat, opening directories with
//! `O_PATH`): no workspace, audit log or state dir is reached through a symbolic link, and, for
//! the paths that exist, the overlap rules of `paths.rs` hold by identity too — (dev, ino) of
//! each directory and of every ancestor up through `..` — so two spellings of one directory
//! (a bind mount, a second mount of the filesystem) are caught. A path that does not exist yet
//! gets the text checks, and the part of it that exists is checked for links and identity.

use super::paths::{
    inside_workspace_message, workspace_in_state_message, workspace_overlap_message, Overlap,
    SYSTEM_DIRS,
};
use super::{Config, KeyError};
use rustix::fs::{FileType, Mode, OFlags};
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// (st_dev, st_ino): a directory's identity.
type Id = (u64, u64);

/// The most `..` steps walked up from one directory (far deeper than any real path).
const MAX_DEPTH: usize = 4096;

/// What the disk says about one configured path.
#[derive(Debug)]
struct OnDisk {
    /// The path is itself an existing directory: its identity.
    own: Option<Id>,
    /// The identities of the deepest existing directory at or above the path, and of every
    /// directory above that one up to `/` (empty when nothing could be opened).
    chain: HashSet<Id>,
}

#[allow(clippy::useless_conversion)] // u64 on Linux; `from` refuses a lossy type elsewhere.
fn id_of(st: &rustix::fs::Stat) -> Id {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

fn open_dir_no_follow(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The identities of the directory `fd` and of every directory above it, through `..`.
fn ancestry(fd: OwnedFd) -> std::io::Result<HashSet<Id>> {
    let mut ids = HashSet::new();
    let mut current = fd;
    let mut id = id_of(&rustix::fs::fstat(&current)?);
    for _ in 0..MAX_DEPTH {
        ids.insert(id);
        let parent = rustix::fs::openat(
            &current,
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let parent_id = id_of(&rustix::fs::fstat(&parent)?);
        if parent_id == id {
            break; // `/`: its `..` is itself.
        }
        current = parent;
        id = parent_id;
    }
    Ok(ids)
}

/// Walks the components of `path` (normalized, absolute) with lstat: `Err` when one is a
/// symbolic link (the message names it and the real path), otherwise the deepest existing
/// prefix and its file type. Stops quietly where a component is missing or cannot be seen.
fn walk_components(path: &Path) -> Result<(PathBuf, FileType), String> {
    let mut existing = PathBuf::from("/");
    let mut kind = FileType::Directory;
    let mut current = PathBuf::from("/");
    for part in path.iter().skip(1) {
        if kind != FileType::Directory {
            break;
        }
        current.push(part);
        let Ok(st) = rustix::fs::lstat(&current) else {
            break;
        };
        let this = FileType::from_raw_mode(st.st_mode);
        if this == FileType::Symlink {
            return Err(symlink_message(path, &current));
        }
        existing.clone_from(&current);
        kind = this;
    }
    Ok((existing, kind))
}

fn symlink_message(path: &Path, link: &Path) -> String {
    let target = std::fs::read_link(link)
        .map(|t| format!(" (to `{}`)", t.display()))
        .unwrap_or_default();
    let real = std::fs::canonicalize(path).ok().or_else(|| {
        let rest = path.strip_prefix(link).ok()?;
        Some(std::fs::canonicalize(link).ok()?.join(rest))
    });
    let what = if link == path {
        format!("`{}`{target} is a symbolic link", path.display())
    } else {
        format!(
            "`{}` is reached through the symbolic link `{}`{target}",
            path.display(),
            link.display()
        )
    };
    let real = real
        .map(|r| format!(" `{}`", r.display()))
        .unwrap_or_default();
    format!("{what}; Guardian never deletes through a link: configure the real path{real}")
}

/// Looks at `path` on disk: links refused (`Err`), identity collected where it exists.
/// `dir_expected`: the path names a directory (a workspace, the state dir), not a file.
fn look(path: &Path, dir_expected: bool) -> Result<OnDisk, String> {
    let (existing, kind) = walk_components(path)?;
    let full = existing == path;
    if full && dir_expected && kind != FileType::Directory {
        return Err(format!(
            "`{}` exists and is not a directory",
            path.display()
        ));
    }
    if full && !dir_expected && kind == FileType::Directory {
        return Err(format!("`{}` is a directory, not a file", path.display()));
    }
    // The deepest existing directory at or above the path.
    let anchor = if kind == FileType::Directory {
        existing.as_path()
    } else {
        existing.parent().unwrap_or(Path::new("/"))
    };
    let Ok(fd) = open_dir_no_follow(anchor) else {
        return Ok(OnDisk {
            own: None,
            chain: HashSet::new(),
        });
    };
    let own = if full && dir_expected {
        rustix::fs::fstat(&fd).ok().map(|st| id_of(&st))
    } else {
        None
    };
    let chain = ancestry(fd).unwrap_or_default();
    Ok(OnDisk { own, chain })
}

/// `a.b.c` → `["a", "b", "c"]`.
fn key(dotted: &str) -> Vec<String> {
    dotted.split('.').map(str::to_string).collect()
}

/// Identities of the system directories (and `/`) that exist here.
fn system_ids() -> Vec<(Id, &'static str)> {
    SYSTEM_DIRS
        .iter()
        .filter_map(|d| rustix::fs::stat(*d).ok().map(|st| (id_of(&st), *d)))
        .collect()
}

impl Config {
    /// The disk half of validation (read-only): see the module doc. Called by `Config::load`
    /// and at daemon start; `Config::parse` stays pure.
    pub(super) fn check_on_disk(&self) -> Result<(), KeyError> {
        let audit =
            look(&self.daemon.audit_log, false).map_err(|m| (key("daemon.audit_log"), m))?;
        let state = look(&self.daemon.state_dir, true).map_err(|m| (key("daemon.state_dir"), m))?;
        let system = system_ids();
        let mut seen: Vec<(String, &Path, OnDisk)> = Vec::new();
        for (i, ws) in self.workspaces.iter().enumerate() {
            let ws_key = format!("workspaces.{i}.path");
            let here = look(&ws.path, true).map_err(|m| (key(&ws_key), m))?;
            if let Some(own) = here.own {
                if let Some((_, dir)) = system.iter().find(|(id, _)| *id == own) {
                    return Err((
                        key(&ws_key),
                        format!(
                            "`{}` is the system directory `{dir}` (same device and inode): it \
                             cannot be a workspace",
                            ws.path.display()
                        ),
                    ));
                }
                if audit.chain.contains(&own) {
                    return Err((
                        key("daemon.audit_log"),
                        inside_workspace_message(
                            "audit log",
                            &self.daemon.audit_log,
                            &ws_key,
                            &ws.path,
                            true,
                        ),
                    ));
                }
                if state.chain.contains(&own) {
                    return Err((
                        key("daemon.state_dir"),
                        inside_workspace_message(
                            "state dir",
                            &self.daemon.state_dir,
                            &ws_key,
                            &ws.path,
                            true,
                        ),
                    ));
                }
            }
            if state.own.is_some_and(|s| here.chain.contains(&s)) {
                return Err((
                    key(&ws_key),
                    workspace_in_state_message(&ws.path, &self.daemon.state_dir, true),
                ));
            }
            for (earlier_key, earlier_path, earlier) in &seen {
                let how = match (here.own, earlier.own) {
                    (Some(a), Some(b)) if a == b => Some(Overlap::Same),
                    (_, Some(b)) if here.chain.contains(&b) => Some(Overlap::Inside),
                    (Some(a), _) if earlier.chain.contains(&a) => Some(Overlap::Contains),
                    _ => None,
                };
                if let Some(how) = how {
                    return Err((
                        key(&ws_key),
                        workspace_overlap_message(how, &ws.path, earlier_key, earlier_path, true),
                    ));
                }
            }
            seen.push((ws_key, &ws.path, here));
        }
        Ok(())
    }
}
