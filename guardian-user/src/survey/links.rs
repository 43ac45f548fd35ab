//! The survey index's hard-link partners: for every inode a kept project holds only some links
//! of (pnpm-style stores, `cp -l` trees), how many of its links the kept projects hold, how many
//! of those projects are stale, and the last sync at which one of them was reported written.
//! Pure bookkeeping on plain data; `index.rs` decides with it whether a project that shares
//! inodes may be served.
//!
//! Why it is enough: a shared inode changes (size, times, links) only through one of its links.
//! When every link lies in a kept project, each of those projects fresh (nothing reported into
//! it since its walk) and none reported written since the served project's walk began, nothing
//! changed it since that walk. A write through a link the index does not know of (outside every
//! project, or made unseen after the walks) is caught by the count: the kept projects then hold
//! fewer links than the served project's walk counted, and it is walked. Deleting a file linked
//! from two projects frees its bytes only when both go: each project's freeable bytes leave it
//! out, as a fresh walk's do; the executor measures what a deletion really freed.
//!
//! Bounded: [`MAX_PROJECT_LINKS`] shared inodes per project (a project with more is walked at
//! every cycle), [`MAX_LINKS`] in all.

use crate::scan::SharedInode;
use std::collections::HashMap;

/// A project sharing more inodes than this is not served (it is walked at every cycle).
pub const MAX_PROJECT_LINKS: usize = 4096;
/// Most shared inodes the kept projects may hold in all (counted once per holder).
pub const MAX_LINKS: usize = 262_144;

/// One shared inode as a project holds it; its device is the project's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub ino: u64,
    /// Its link count when the project was walked.
    pub nlink: u32,
    /// How many of those links lie in the project.
    pub seen: u32,
}

/// What the kept projects hold of one inode.
#[derive(Clone, Copy, Debug, Default)]
struct Partners {
    /// Links, summed over the kept projects holding it.
    seen: u64,
    /// Holders that were reported written since their walk (or walked before writes may have
    /// been missed).
    stale: u32,
    /// The last sync at which a holder was reported written.
    written: u64,
}

/// The table of shared inodes, owned by the index.
#[derive(Debug, Default)]
pub struct Links {
    table: HashMap<(u64, u64), Partners>,
    /// Held records over all kept projects.
    held: usize,
}

impl Links {
    /// What a project walked on device `dev` shares, in the index's compact form; `None` when it
    /// cannot be kept (more than [`MAX_PROJECT_LINKS`], an inode on another device, a count
    /// beyond 32 bits): such a project is never served.
    pub fn compact(dev: u64, shared: &[SharedInode]) -> Option<Box<[Held]>> {
        if shared.len() > MAX_PROJECT_LINKS {
            return None;
        }
        shared
            .iter()
            .map(|s| {
                (s.identity.0 == dev).then_some(())?;
                Some(Held {
                    ino: s.identity.1,
                    nlink: u32::try_from(s.nlink).ok()?,
                    seen: u32::try_from(s.seen).ok()?,
                })
            })
            .collect()
    }

    /// The shared inodes of `held` (on `dev`) back in the scanner's form.
    pub fn expand(dev: u64, held: &[Held]) -> Vec<SharedInode> {
        held.iter()
            .map(|h| SharedInode {
                identity: (dev, h.ino),
                nlink: u64::from(h.nlink),
                seen: u64::from(h.seen),
            })
            .collect()
    }

    /// Whether `n` more held records fit.
    pub fn room(&self, n: usize) -> bool {
        self.held.saturating_add(n) <= MAX_LINKS
    }

    /// A kept project's shared inodes come in: `stale` when it was reported written since its
    /// walk began, `written` the last sync at which it was reported written (a write reported
    /// before it was kept may have changed a shared inode after a partner's walk).
    pub fn add(&mut self, dev: u64, held: &[Held], stale: bool, written: Option<u64>) {
        for h in held {
            let p = self.table.entry((dev, h.ino)).or_default();
            p.seen += u64::from(h.seen);
            p.stale += u32::from(stale);
            p.written = p.written.max(written.unwrap_or(0));
        }
        self.held += held.len();
    }

    /// A kept project goes (replaced by a new walk, vanished): `stale` as it was last counted.
    pub fn remove(&mut self, dev: u64, held: &[Held], stale: bool) {
        for h in held {
            let key = (dev, h.ino);
            if let Some(p) = self.table.get_mut(&key) {
                p.seen = p.seen.saturating_sub(u64::from(h.seen));
                p.stale = p.stale.saturating_sub(u32::from(stale));
                if p.seen == 0 {
                    self.table.remove(&key);
                }
            }
        }
        self.held = self.held.saturating_sub(held.len());
    }

    /// A kept project was reported written at sync `at`; `newly_stale` when it was fresh until
    /// now (it counts as stale once, until it is kept again).
    pub fn written(&mut self, dev: u64, held: &[Held], at: u64, newly_stale: bool) {
        for h in held {
            if let Some(p) = self.table.get_mut(&(dev, h.ino)) {
                p.written = p.written.max(at);
                p.stale += u32::from(newly_stale);
            }
        }
    }

    /// Whether a project whose walk began at sync `walked_at` and counted `held` may be served:
    /// for each inode, the kept projects hold exactly the links its walk counted, none of them
    /// is stale, and none was reported written since that walk began.
    pub fn servable(&self, dev: u64, held: &[Held], walked_at: u64) -> bool {
        held.iter().all(|h| {
            self.table.get(&(dev, h.ino)).is_some_and(|p| {
                p.seen == u64::from(h.nlink) && p.stale == 0 && p.written <= walked_at
            })
        })
    }

    /// Whether a partner was reported written since the walk (at sync `walked_at`) that counted
    /// `held`: only a new walk of the project can make it servable again.
    pub fn written_since(&self, dev: u64, held: &[Held], walked_at: u64) -> bool {
        held.iter().any(|h| {
            self.table
                .get(&(dev, h.ino))
                .is_some_and(|p| p.written > walked_at)
        })
    }

    /// Forgets everything (the index was cleared), giving the table's memory back.
    pub fn clear(&mut self) {
        self.table = HashMap::new();
        self.held = 0;
    }

    /// Shared inodes in the table (each once, however many projects hold it).
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: u64 = 7;

    fn held(ino: u64, nlink: u32, seen: u32) -> Held {
        Held { ino, nlink, seen }
    }

    #[test]
    fn a_project_is_servable_only_while_its_partners_hold_every_link_and_stay_fresh() {
        let mut links = Links::default();
        // Inode 1 has three links: two in `a` (walked at sync 5), one in `b` (walked at 6).
        let a = [held(1, 3, 2)];
        let b = [held(1, 3, 1)];
        links.add(DEV, &a, false, None);
        assert!(
            !links.servable(DEV, &a, 5),
            "b not kept yet: a link unknown"
        );
        links.add(DEV, &b, false, None);
        assert!(links.servable(DEV, &a, 5));
        assert!(links.servable(DEV, &b, 6));
        // Another device's inode 1 is another inode.
        assert!(!links.servable(DEV + 1, &a, 5));
        // b is written at sync 8: both are stale now, neither is served, and only a new walk
        // of a (b's is due anyway) can bring a back.
        links.written(DEV, &b, 8, true);
        assert!(!links.servable(DEV, &a, 5));
        assert!(links.written_since(DEV, &a, 5));
        // b walked again at 9 (still one link), a still from 5: a stays unservable...
        links.remove(DEV, &b, true);
        links.add(DEV, &b, false, Some(8));
        assert!(!links.servable(DEV, &a, 5));
        assert!(links.servable(DEV, &b, 9));
        // ...until a is walked again too.
        links.remove(DEV, &a, false);
        links.add(DEV, &a, false, None);
        assert!(links.servable(DEV, &a, 10));
        assert!(!links.written_since(DEV, &a, 10));
    }

    #[test]
    fn a_partner_written_before_it_was_kept_still_invalidates_an_older_walk() {
        // a walked at 5; b reported written at 7 while it had no entry, walked at 9 and kept.
        let mut links = Links::default();
        let a = [held(1, 2, 1)];
        let b = [held(1, 2, 1)];
        links.add(DEV, &a, false, None);
        links.add(DEV, &b, false, Some(7));
        assert!(!links.servable(DEV, &a, 5));
        assert!(links.servable(DEV, &b, 9));
    }

    #[test]
    fn counts_that_do_not_add_up_are_never_served() {
        let mut links = Links::default();
        // A link outside every project: the kept ones hold 2 of 3.
        let a = [held(1, 3, 1)];
        let b = [held(1, 3, 1)];
        links.add(DEV, &a, false, None);
        links.add(DEV, &b, false, None);
        assert!(!links.servable(DEV, &a, 5));
        // A stale record of a holder counting one link too many.
        let c = [held(2, 2, 1)];
        let d = [held(2, 2, 1)];
        let e = [held(2, 2, 1)];
        for h in [&c, &d, &e] {
            links.add(DEV, h, false, None);
        }
        assert!(!links.servable(DEV, &c, 5));
        // A stale holder whose walk happened before any write was reported.
        links.remove(DEV, &e, false);
        links.remove(DEV, &d, false);
        links.add(DEV, &d, true, None);
        assert!(!links.servable(DEV, &c, 5));
        links.remove(DEV, &d, true);
        links.add(DEV, &d, false, None);
        assert!(links.servable(DEV, &c, 5));
    }

    #[test]
    fn the_table_is_bounded_and_emptied_as_projects_go() {
        let many: Vec<SharedInode> = (0..=MAX_PROJECT_LINKS as u64)
            .map(|i| SharedInode {
                identity: (DEV, i),
                nlink: 2,
                seen: 1,
            })
            .collect();
        assert!(Links::compact(DEV, &many).is_none());
        let fits = Links::compact(DEV, &many[..10]).unwrap();
        assert_eq!(Links::expand(DEV, &fits), &many[..10]);
        assert!(
            Links::compact(DEV + 1, &many[..10]).is_none(),
            "other device"
        );
        let mut links = Links::default();
        links.add(DEV, &fits, false, None);
        assert_eq!(links.len(), 10);
        assert!(links.room(MAX_LINKS - 10) && !links.room(MAX_LINKS - 9));
        links.remove(DEV, &fits, false);
        assert_eq!((links.len(), links.held), (0, 0));
    }
}
