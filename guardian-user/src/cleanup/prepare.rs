//! The checks right before a deletion (`Executor::prepare`): the path located in the most
//! specific workspace, every directory down to the target opened without following a symlink
//! or crossing the mount boundary, the target re-identified by (dev, ino), its rule's idle time,
//! its markers (artifact types), protection and the target kind's own re-check (a `.git` with
//! unpushed work) read again now.

use super::{now_secs, own, Executor, Outcome, Prepared, Stop};
use crate::config::Workspace;
use crate::fsys::{self, Boundary, EntryKind, EntryStat};
use crate::policy::PlannedAction;
use crate::protect;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

impl Executor {
    /// Everything checked before the intent is written: the path against the configuration,
    /// every directory down to the target opened without following symlinks or crossing a
    /// mount, the target still the entry the survey measured and idle as its rule requires, and
    /// protection read again now.
    /// The workspace root opened without following a link, its mount boundary, and a complete
    /// process table — what every deletion starts from.
    pub(super) fn open_root(
        &self,
        workspace: &Workspace,
    ) -> Result<(OwnedFd, Boundary, std::sync::Arc<protect::ProcSnapshot>), Stop> {
        let refuse = |why: String| Stop(Outcome::Refused, why);
        let root = fsys::open_dir_nofollow(&workspace.path).map_err(|e| {
            refuse(format!(
                "cannot open workspace {} without following symlinks: {e}",
                crate::textpath::escape(&workspace.path)
            ))
        })?;
        let boundary = Boundary::of(root.as_fd(), &workspace.path)
            .map_err(|e| refuse(format!("{e}: refusing to delete")))?;
        let procs = self.process_table();
        if !procs.complete {
            return Err(refuse(
                "process table unreadable: cannot prove the entry is unused".into(),
            ));
        }
        Ok((root, boundary, procs))
    }

    pub(super) fn prepare(&self, action: &PlannedAction) -> Result<Prepared, Stop> {
        let refuse = |why: String| Stop(Outcome::Refused, why);
        let (workspace, rel) = self.locate(&action.path).map_err(refuse)?;
        let mut parts = rel.components();
        let project_name = parts
            .next()
            .map(|c| c.as_os_str().to_owned())
            .ok_or_else(|| refuse("refusing to delete a workspace root".into()))?;
        if workspace
            .protect
            .iter()
            .any(|p| std::ffi::OsStr::new(p) == project_name)
        {
            return Err(refuse(format!(
                "`{}` is on the protect list",
                crate::textpath::escape(Path::new(&project_name))
            )));
        }
        let project_path = workspace.path.join(&project_name);
        if action.project != project_path {
            return Err(refuse(format!(
                "planned for project {} but lies in {}",
                crate::textpath::escape(&action.project),
                crate::textpath::escape(&project_path)
            )));
        }
        let (root, boundary, procs) = self.open_root(workspace)?;
        // Down from the workspace root, each directory opened, checked against the boundary,
        // and — from the project on — against protection.
        let names: Vec<_> = rel.components().map(|c| c.as_os_str().to_owned()).collect();
        let (last, dirs) = names
            .split_last()
            .ok_or_else(|| refuse("empty path".into()))?;
        let (current, _) = descend(
            root,
            &workspace.path,
            dirs,
            &boundary,
            |fd, opened, shown| match protect::check_open_dir(fd, opened, shown, &procs) {
                Some(p) => Err(refuse(p.to_string())),
                None => Ok(()),
            },
        )?;
        let name = fsys::c_name(last).map_err(|_| refuse("a NUL byte in the path".into()))?;
        let st = match fsys::stat_entry(current.as_fd(), &name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Stop(Outcome::Skipped, "already gone".into()))
            }
            Err(e) => return Err(refuse(format!("cannot stat: {e}"))),
        };
        if (st.dev, st.ino) != action.identity {
            return Err(Stop(
                Outcome::Skipped,
                format!(
                    "another entry is in its place (dev {} ino {}, planned dev {} ino {})",
                    st.dev, st.ino, action.identity.0, action.identity.1
                ),
            ));
        }
        if !boundary.admits(current.as_fd(), &name, &st) {
            return Err(refuse("is a mount point or on another filesystem".into()));
        }
        let protection = if st.kind == EntryKind::Dir {
            let fd = fsys::open_child_dir(current.as_fd(), &name)
                .map_err(|e| refuse(format!("cannot open without following symlinks: {e}")))?;
            let opened = fsys::stat_fd(fd.as_fd()).map_err(|e| refuse(e.to_string()))?;
            if (opened.dev, opened.ino) != (st.dev, st.ino) {
                return Err(refuse("changed while it was opened".into()));
            }
            if let Some(why) = self.marker_gone(action, current.as_fd(), fd.as_fd()) {
                return Err(Stop(Outcome::Skipped, why));
            }
            protect::check_open_dir(fd.as_fd(), &opened, &action.path, &procs)
        } else {
            protect::check_identity(st.dev, st.ino, &action.path, &procs)
        };
        if let Some(p) = protection {
            return Err(refuse(p.to_string()));
        }
        if let Some(why) = (self.extra_protection)(&project_path) {
            return Err(refuse(why));
        }
        // The re-check a kind of target names for itself (a `.git` with unpushed work).
        if let Some(why) = crate::git::keep_reason(&action.path, st.kind, action.phase) {
            return Err(Stop(Outcome::Skipped, why));
        }
        if let Some(cutoff) = cutoff(action) {
            if st.changed() > cutoff && !own::is_own(&st) {
                return Err(Stop(
                    Outcome::Skipped,
                    format!(
                        "changed {}s ago, under the {}s its rule requires",
                        now_secs().saturating_sub(st.changed()),
                        action.min_idle_secs.unwrap_or(0)
                    ),
                ));
            }
        }
        Ok(Prepared {
            parent: current,
            name,
            boundary,
            depth: names.len(),
            st,
        })
    }

    /// Why a target an artifact rule planned no longer counts as that artifact (its marker is
    /// gone or no longer a regular file); `None` when it still does, or the rule has no markers.
    /// `parent` and `dir` are the open parent and target.
    pub(super) fn marker_gone(
        &self,
        action: &PlannedAction,
        parent: rustix::fd::BorrowedFd<'_>,
        dir: rustix::fd::BorrowedFd<'_>,
    ) -> Option<String> {
        let rule = self.marked_rules.iter().find(|r| r.name == action.rule)?;
        let name = action.path.file_name()?.to_str()?;
        let beside = fsys::list_dir(parent).unwrap_or_default();
        let inside = fsys::list_dir(dir).unwrap_or_default();
        let siblings = crate::scan::Listing {
            dir: parent,
            listed: &beside,
        };
        let children = crate::scan::Listing {
            dir,
            listed: &inside,
        };
        (!rule.matches(name, true, &siblings, Some(&children))).then(|| {
            format!(
                "no longer proven a `{}` artifact: its marker is gone",
                rule.name
            )
        })
    }

    /// The most specific workspace holding `path` and the path relative to it. Only plain
    /// components are accepted: no `..`, no `.`, nothing outside a configured workspace.
    pub(super) fn locate(&self, path: &Path) -> Result<(&Workspace, PathBuf), String> {
        let raw = path.as_os_str().as_encoded_bytes();
        if !path.is_absolute()
            || raw
                .split(|b| *b == b'/')
                .skip(1)
                .any(|seg| seg.is_empty() || seg == b"." || seg == b"..")
            || path
                .components()
                .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        {
            return Err(format!(
                "{} is not a plain absolute path",
                crate::textpath::escape(path)
            ));
        }
        self.workspaces
            .iter()
            .find_map(|ws| {
                let rel = path.strip_prefix(&ws.path).ok()?;
                (!rel.as_os_str().is_empty()).then(|| (ws, rel.to_path_buf()))
            })
            .ok_or_else(|| {
                format!(
                    "{} is not inside a configured workspace",
                    crate::textpath::escape(path)
                )
            })
    }
}

/// The newest change an entry of `action` may have: now minus the rule's idle time.
pub(super) fn cutoff(action: &PlannedAction) -> Option<i64> {
    action
        .min_idle_secs
        .map(|s| now_secs().saturating_sub(i64::try_from(s).unwrap_or(i64::MAX)))
}

/// Opens every directory of `dirs` down from the open workspace root `root` (shown as `base`):
/// one component at a time without following a symlink, each checked against the mount
/// `boundary` and re-identified once open, then handed to `check` (protection, keep markers).
/// Returns the deepest directory opened and its path.
pub(super) fn descend(
    root: OwnedFd,
    base: &Path,
    dirs: &[OsString],
    boundary: &Boundary,
    mut check: impl FnMut(BorrowedFd<'_>, &EntryStat, &Path) -> Result<(), Stop>,
) -> Result<(OwnedFd, PathBuf), Stop> {
    let refuse = |why: String| Stop(Outcome::Refused, why);
    let mut current = root;
    let mut shown = base.to_path_buf();
    for part in dirs {
        shown.push(part);
        let name = fsys::c_name(part).map_err(|_| refuse("a NUL byte in the path".into()))?;
        let st = fsys::stat_entry(current.as_fd(), &name).map_err(|e| {
            Stop(
                Outcome::Skipped,
                format!("{} is gone: {e}", crate::textpath::escape(&shown)),
            )
        })?;
        if !boundary.admits(current.as_fd(), &name, &st) {
            return Err(refuse(format!(
                "{} is a mount point or on another filesystem",
                crate::textpath::escape(&shown)
            )));
        }
        let next = fsys::open_child_dir(current.as_fd(), &name).map_err(|e| {
            refuse(format!(
                "cannot open {} without following symlinks: {e}",
                crate::textpath::escape(&shown)
            ))
        })?;
        let opened = fsys::stat_fd(next.as_fd()).map_err(|e| refuse(e.to_string()))?;
        if (opened.dev, opened.ino) != (st.dev, st.ino) {
            return Err(refuse(format!(
                "{} changed while it was opened",
                crate::textpath::escape(&shown)
            )));
        }
        check(next.as_fd(), &opened, &shown)?;
        current = next;
    }
    Ok((current, shown))
}
