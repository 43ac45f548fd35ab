//! Which project dirs exist: listing every workspace's dirs (only when a workspace dir changed,
//! see [`Listed`]), re-registering them with the source, and grouping workspaces by filesystem.
//!
//! Invariants: an idle node does not `lstat` every project every poll; a listing is trusted at
//! most `RELIST_EVERY`, and never while a workspace dir changed within `RECENT_CHANGE`.

use super::{GuardedFs, Guardian};
use crate::config::Workspace;
use crate::fsys;
use crate::sources::ProjectDir;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

impl Guardian {
    /// Lists the project dirs of every workspace and re-registers them with the source when
    /// the set changed. Skipped while no workspace dir changed since the last listing (see
    /// [`Listed`]): an idle node does not `lstat` every project every poll.
    pub(super) fn refresh_projects(&mut self) {
        use std::os::unix::fs::MetadataExt;
        // Asked at every refresh, so a mount seen once is not seen again.
        // The mount table names real paths: a workspace reached through a symlink is resolved
        // (only when the table changed and has to be read).
        let workspaces = &self.config.workspaces;
        let mounts_changed = self.listing.mounts.changed_below(|| {
            (workspaces.iter())
                .map(|w| std::fs::canonicalize(&w.path).unwrap_or_else(|_| w.path.clone()))
                .collect()
        });
        let seen = Listed::now(&self.config.workspaces);
        if !mounts_changed && self.listing.last.as_ref().is_some_and(|l| l.still(&seen)) {
            return;
        }
        self.listing.last = Some(seen);
        let mut dirs = Vec::new();
        for ws in &self.config.workspaces {
            let Ok(entries) = std::fs::read_dir(&ws.path) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = path.symlink_metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    dirs.push((path, meta.dev(), meta.ino()));
                }
            }
        }
        dirs.sort();
        let projects = self.aggregator.project_dirs(&dirs);
        // What the listing allocated (10,000 paths: ~1 MB) goes back with the next poll's end,
        // not a minute later.
        self.give_back.soon();
        if *projects != *self.watched {
            let projects: Arc<[ProjectDir]> = projects.into();
            let alive: std::collections::HashSet<&Path> =
                dirs.iter().map(|d| d.0.as_path()).collect();
            self.aggregator.retain_paths(&|p| alive.contains(p));
            self.hub.counters.written.retain(&|p| alive.contains(p));
            self.last_write.retain(|p, _| alive.contains(p.as_path()));
            self.tasks.retain_writes(&|p| alive.contains(p));
            if let Err(e) = self.source.watch_shared(&projects) {
                crate::warn_quiet!("source.watch", error = %e, "write source cannot watch the projects");
                self.problems.push(e.to_string());
            }
            self.forecasts.retain_projects(&projects);
            self.watched = projects;
            self.give_back.burst();
        }
    }
}

/// A listing of the workspace dirs is trusted this long at most (a safety net: what can change
/// a project dir's identity without changing its workspace dir's times — a mount over it — is
/// watched; re-listing 10,000 projects costs ~10,000 `statx`).
const RELIST_EVERY: Duration = Duration::from_secs(600);

/// The last listing of the project dirs, and the mount table's watch: a mount or unmount (a
/// bind mount over a project dir changes its identity, not its workspace dir's times) re-lists.
#[derive(Debug, Default)]
pub(super) struct Listing {
    last: Option<Listed>,
    mounts: crate::fsys::MountWatch,
    /// Whether the mount table changed at all (the guarded filesystems' mount points).
    pub(super) table: crate::fsys::MountWatch,
}
/// A workspace dir changed less than this long before it was listed is listed again (a change
/// within the same tick of the filesystem's clock would not move its times).
const RECENT_CHANGE: Duration = Duration::from_secs(2);

/// Each workspace dir's identity and change times when its project dirs were listed: adding,
/// removing or renaming a project dir changes them, so while they stay the same (and no mount
/// or unmount happened) the listing holds (re-listed anyway every [`RELIST_EVERY`], and while a
/// change is under [`RECENT_CHANGE`] old).
#[derive(Debug)]
pub(super) struct Listed {
    at: Instant,
    dirs: Vec<Option<DirStamp>>,
}

#[derive(Debug, PartialEq, Eq)]
struct DirStamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Listed {
    pub(super) fn now(workspaces: &[Workspace]) -> Listed {
        use std::os::unix::fs::MetadataExt;
        let dirs = workspaces
            .iter()
            .map(|ws| {
                let m = std::fs::symlink_metadata(&ws.path).ok()?;
                Some(DirStamp {
                    dev: m.dev(),
                    ino: m.ino(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    ctime: (m.ctime(), m.ctime_nsec()),
                })
            })
            .collect();
        Listed {
            at: Instant::now(),
            dirs,
        }
    }

    /// Whether the listing taken at `self` still holds, `now` the workspaces' stamps now.
    pub(super) fn still(&self, now: &Listed) -> bool {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let settled = |d: &Option<DirStamp>| {
            d.as_ref().is_some_and(|d| {
                let newest = d.mtime.0.max(d.ctime.0);
                u64::try_from(newest)
                    .is_ok_and(|n| n.saturating_add(RECENT_CHANGE.as_secs()) < wall)
            })
        };
        now.at.saturating_duration_since(self.at) < RELIST_EVERY
            && self.dirs == now.dirs
            && self.dirs.iter().all(settled)
    }
}

/// Groups the workspaces by the filesystem they are on (a missing workspace by its nearest
/// existing ancestor's).
pub fn guarded_filesystems(workspaces: &[Workspace]) -> Vec<GuardedFs> {
    guarded_filesystems_knowing(workspaces, &[])
}

/// [`guarded_filesystems`], taking the mount point of a filesystem from `known` (an earlier
/// listing, while the mount table has not changed since) when its device and probe path are
/// the same: a poll then costs a `stat` per workspace, not a read of the mount table.
pub(super) fn guarded_filesystems_knowing(
    workspaces: &[Workspace],
    known: &[GuardedFs],
) -> Vec<GuardedFs> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<GuardedFs> = Vec::new();
    for ws in workspaces {
        let probe = fsys::nearest_existing(&ws.path).to_path_buf();
        let Ok(meta) = std::fs::metadata(&probe) else {
            continue;
        };
        match out.iter_mut().find(|fs| fs.dev == meta.dev()) {
            Some(fs) => fs.workspaces.push(ws.clone()),
            None => out.push(GuardedFs {
                dev: meta.dev(),
                mount: match known
                    .iter()
                    .find(|k| k.dev == meta.dev() && k.probe == probe)
                {
                    Some(k) => k.mount.clone(),
                    None => fsys::mount_point_of(&probe).unwrap_or_else(|| probe.clone()),
                },
                probe,
                workspaces: vec![ws.clone()],
            }),
        }
    }
    out
}
