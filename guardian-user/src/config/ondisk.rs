//! The config's paths as they are on disk, read-only (lstat, fstat, opening directories with
//! `O_PATH`): no workspace, audit log or state dir is reached through a symbolic link, and, for
//! the paths that exist, the overlap rules of `paths.rs` hold by identity too — (dev, ino) of
//! each directory and of every ancestor up through `..` — so two spellings of one directory
//! (a bind mount, a second mount of the filesystem) are caught. Where a directory sits under a
//! bind mount of a subdirectory, `..` leads to the mount point, not to where the directory
//! really is: its other spellings through `/proc/self/mountinfo` are walked up too. A path that
//! does not exist yet gets the text checks, and the part of it that exists is checked for links
//! and identity.

use super::paths::{
    inside_workspace_message, workspace_in_state_message, workspace_overlap_message, Overlap,
    SYSTEM_DIRS,
};
use super::{Config, KeyError};
use crate::textpath::shown;
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

fn id_of(st: &rustix::fs::Stat) -> Id {
    crate::fsys::stat_identity(st)
}

fn open_dir_no_follow(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        crate::fsys::handle_flags() | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
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
            crate::fsys::handle_flags() | OFlags::DIRECTORY | OFlags::CLOEXEC,
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
        .map(|t| format!(" (to `{}`)", shown(&t)))
        .unwrap_or_default();
    let real = std::fs::canonicalize(path).ok().or_else(|| {
        let rest = path.strip_prefix(link).ok()?;
        Some(std::fs::canonicalize(link).ok()?.join(rest))
    });
    let what = if link == path {
        format!("`{}`{target} is a symbolic link", shown(path))
    } else {
        format!(
            "`{}` is reached through the symbolic link `{}`{target}",
            shown(path),
            shown(link)
        )
    };
    let real = real
        .map(|r| format!(" `{}`", shown(&r)))
        .unwrap_or_default();
    format!("{what}; Guardian never deletes through a link: configure the real path{real}")
}

/// Looks at `path` on disk: links refused (`Err`), identity collected where it exists.
/// `dir_expected`: the path names a directory (a workspace, the state dir), not a file.
fn look(path: &Path, dir_expected: bool, mounts: &[Mount]) -> Result<OnDisk, String> {
    let (existing, kind) = walk_components(path)?;
    let full = existing == path;
    if full && dir_expected && kind != FileType::Directory {
        return Err(format!("`{}` exists and is not a directory", shown(path)));
    }
    if full && !dir_expected && kind == FileType::Directory {
        return Err(format!("`{}` is a directory, not a file", shown(path)));
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
    let anchor_id = rustix::fs::fstat(&fd).ok().map(|st| id_of(&st));
    let own = if full && dir_expected {
        anchor_id
    } else {
        None
    };
    let mut chain = ancestry(fd).unwrap_or_default();
    // Under a bind mount of a subdirectory, `..` from the mount's root leads to where it is
    // mounted, not to where the directory really is: walk up from its other spellings too.
    if let Some(anchor_id) = anchor_id {
        for other in other_spellings(anchor, anchor_id, mounts) {
            if let Ok(fd) = open_dir_no_follow(&other) {
                chain.extend(ancestry(fd).unwrap_or_default());
            }
        }
    }
    Ok(OnDisk { own, chain })
}

/// One line of `/proc/self/mountinfo`: the filesystem (`major:minor`), the directory of it
/// that is mounted (`root`) and where.
#[derive(Debug)]
struct Mount {
    dev: String,
    root: PathBuf,
    point: PathBuf,
}

/// The mount table, or nothing where it cannot be read (then only `..` walks count).
fn mounts() -> Vec<Mount> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ').skip(2);
            let dev = fields.next()?.to_string();
            let root = PathBuf::from(unescape_octal(fields.next()?));
            let point = PathBuf::from(unescape_octal(fields.next()?));
            Some(Mount { dev, root, point })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_octal(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let digits = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match digits {
            Some(&[a, b2, c]) if b == b'\\' => {
                let value =
                    (u32::from(a - b'0') << 6) | (u32::from(b2 - b'0') << 3) | u32::from(c - b'0');
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// Other paths of the directory `path` (identity `id`) through other mounts of its filesystem:
/// where the same directory is reachable with a different ancestry.
fn other_spellings(path: &Path, id: Id, mounts: &[Mount]) -> Vec<PathBuf> {
    // The mount holding `path`: the deepest mount point above it, the last one when stacked.
    let Some(holder) = mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.point))
        .max_by_key(|(i, m)| (m.point.components().count(), *i))
        .map(|(_, m)| m)
    else {
        return Vec::new();
    };
    let Ok(rel) = path.strip_prefix(&holder.point) else {
        return Vec::new();
    };
    let in_fs = holder.root.join(rel);
    mounts
        .iter()
        .filter(|m| m.dev == holder.dev && m.point != holder.point)
        .filter_map(|m| Some(m.point.join(in_fs.strip_prefix(&m.root).ok()?)))
        .filter(|candidate| {
            open_dir_no_follow(candidate)
                .and_then(|fd| Ok(rustix::fs::fstat(&fd)?))
                .is_ok_and(|st| id_of(&st) == id)
        })
        .take(16)
        .collect()
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
        let mounts = mounts();
        let audit = look(&self.daemon.audit_log, false, &mounts)
            .map_err(|m| (key("daemon.audit_log"), m))?;
        let state = look(&self.daemon.state_dir, true, &mounts)
            .map_err(|m| (key("daemon.state_dir"), m))?;
        let runtime = match &self.daemon.runtime_dir {
            Some(dir) => Some((
                dir,
                look(dir, true, &mounts).map_err(|m| (key("daemon.runtime_dir"), m))?,
            )),
            None => None,
        };
        let system = system_ids();
        let mut seen: Vec<(String, &Path, OnDisk)> = Vec::new();
        for (i, ws) in self.workspaces.iter().enumerate() {
            let ws_key = format!("workspaces.{i}.path");
            let here = look(&ws.path, true, &mounts).map_err(|m| (key(&ws_key), m))?;
            if let Some(own) = here.own {
                if let Some((_, dir)) = system.iter().find(|(id, _)| *id == own) {
                    return Err((
                        key(&ws_key),
                        format!(
                            "`{}` is the system directory `{dir}` (same device and inode): it \
                             cannot be a workspace",
                            shown(&ws.path)
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
                    workspace_in_state_message(
                        &ws.path,
                        &self.daemon.state_dir,
                        "daemon.state_dir",
                        true,
                    ),
                ));
            }
            if let Some((dir, runtime)) = &runtime {
                if here.own.is_some_and(|own| runtime.chain.contains(&own)) {
                    return Err((
                        key("daemon.runtime_dir"),
                        inside_workspace_message("runtime dir", dir, &ws_key, &ws.path, true),
                    ));
                }
                if runtime.own.is_some_and(|r| here.chain.contains(&r)) {
                    return Err((
                        key(&ws_key),
                        workspace_in_state_message(&ws.path, dir, "daemon.runtime_dir", true),
                    ));
                }
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
        // A retention dir lies in a workspace (checked as text by `retention::validate`): no
        // component of it may be a link either.
        for (i, rule) in self.retention.iter().enumerate() {
            if let Some(dir) = &rule.dir {
                look(dir, true, &mounts).map_err(|m| (key(&format!("retention.{i}.dir")), m))?;
            }
        }
        Ok(())
    }
}
