//! The project set of the size table: projects joining (with a baseline walk: no growth for what
//! they already hold), leaving (forgotten without reporting shrinkage), or nested in another's
//! tree (taken out of it).

use super::tree::{key_of, Hooks, Key, Place, Root, Tree};
use super::unwatched::FsStamp;
use super::walk::{fs_stamp, stamp_of};
use crate::fsys;
use crate::sources::ProjectDir;
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::time::Instant;

impl Tree {
    /// Replaces the project set: unchanged projects keep their state, removed ones are
    /// forgotten, new ones get a baseline (no growth for what they already hold).
    pub(crate) fn set_projects(&mut self, projects: &[ProjectDir], hooks: &mut dyn Hooks) {
        let wanted: HashMap<u32, &ProjectDir> = projects.iter().map(|p| (p.id, p)).collect();
        let mut old: Vec<u32> = self.roots.keys().copied().collect();
        old.sort_unstable();
        for id in old {
            let same = match (wanted.get(&id), self.roots.get(&id)) {
                (Some(p), Some(root)) => **p == root.project,
                _ => false,
            };
            if !same {
                self.drop_project(id, hooks);
            }
        }
        // What each filesystem looked like before the walks below read it: every directory they
        // leave unwatched, and every project they add, is as fresh as that (`unwatched.rs`,
        // `rewalk.rs`), so an idle node needs no polling round or periodic walk after start-up.
        let mut before: HashMap<u64, Option<FsStamp>> = HashMap::new();
        for project in projects {
            if !self.roots.contains_key(&project.id) && !before.contains_key(&project.dev) {
                before.insert(project.dev, fs_stamp(&project.path, project.dev));
            }
        }
        let unwatched_before = self.dirs.unwatched() > 0;
        let mut added = Vec::new();
        for project in projects {
            if self.roots.contains_key(&project.id) {
                continue;
            }
            match self.add_project(project, hooks) {
                Ok(()) => added.push(project.id),
                Err(e) => self.note(
                    "cannot-watch",
                    format!(
                        "cannot watch project {}: {e}",
                        crate::textpath::shown(&project.path)
                    ),
                ),
            }
        }
        // Hard links among the new trees (and to the old ones) are counted once before the
        // baselines are taken.
        self.resolve_twins();
        if !added.is_empty() {
            // The walks are done: every list packed, no room to spare.
            self.dirs.compact();
            self.wide.compact();
        }
        for id in added {
            let total = self.totals.get(&id).copied().unwrap_or(0);
            self.reported.insert(id, total);
            self.dirty.remove(&id);
            self.walks.added(id, Instant::now());
            let dev = self.roots.get(&id).map(|r| r.key.0);
            let stamp = dev.and_then(|dev| before.get(&dev).copied().flatten());
            self.walks.stamped(id, stamp);
        }
        if !unwatched_before && self.dirs.unwatched() > 0 {
            let stamp = stamp_of(&self.dirs.unwatched_devs(), |dev| {
                before.get(&dev).copied().flatten()
            });
            self.unwatched_pace.read_by_walk(stamp);
        }
        tracing::debug!(
            projects = self.roots.len(),
            dirs = self.dirs.len(),
            wide = self.wide.len(),
            files = self.tracked_files(),
            heap_bytes = self.heap_bytes(),
            dir_heap_bytes = self.dirs.dir_heap_bytes(),
            "size table watched"
        );
    }

    fn add_project(&mut self, project: &ProjectDir, hooks: &mut dyn Hooks) -> io::Result<()> {
        let fd = fsys::open_dir_path(&project.path)?;
        let st = fsys::stat_fd(&fd)?;
        let key = key_of(&st);
        if key != (project.dev, project.ino) {
            tracing::debug!(
                path = %crate::textpath::shown(&project.path),
                "project dir is not the (dev, ino) it was announced with; watching what is there"
            );
        }
        if let Some(other) = self.root_keys.get(&key) {
            return Err(io::Error::other(format!(
                "same directory as project {other}"
            )));
        }
        if self.dirs.contains(key) {
            // Nested inside another project's tree: it becomes its own project.
            self.forget_subtree(key, hooks);
        }
        self.roots.insert(
            project.id,
            Root {
                project: project.clone(),
                key,
            },
        );
        self.root_keys.insert(key, project.id);
        self.totals.entry(project.id).or_default();
        let place = Place {
            key,
            parent: None,
            name: CString::default(),
            project: project.id,
        };
        self.scan_new(fd, st.mnt_id, place, hooks);
        Ok(())
    }

    /// Removes a subtree that belongs elsewhere without reporting it as shrinkage.
    fn forget_subtree(&mut self, key: Key, hooks: &mut dyn Hooks) {
        let Some(project) = self.dirs.project(key) else {
            return;
        };
        if let Some((parent, hash)) = self
            .dirs
            .parent(key)
            .zip(self.dirs.name(key).map(|n| self.bytes_hash(n)))
        {
            self.unlist_dir(parent, hash, key);
        }
        let before = self.totals.get(&project).copied().unwrap_or(0);
        self.drop_subtree(key, hooks);
        let change = self.totals.get(&project).copied().unwrap_or(0) - before;
        *self.reported.entry(project).or_default() += change;
    }

    fn drop_project(&mut self, id: u32, hooks: &mut dyn Hooks) {
        let Some(root) = self.roots.remove(&id) else {
            return;
        };
        self.root_keys.remove(&root.key);
        self.drop_subtree(root.key, hooks);
        self.totals.remove(&id);
        self.reported.remove(&id);
        self.dirty.remove(&id);
        self.walks.removed(id);
    }
}
