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
    /// Bumped by every change to the table: a [`Verdict`] taken at one count holds until the
    /// next (the index keeps one per entry instead of looking up every held inode per lookup).
    changes: u64,
}

/// What the partner table says of one project's shared inodes (see [`Links::verdict`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The kept projects hold exactly the links its walk counted, none stale or written since.
    pub servable: bool,
    /// A partner was reported written since its walk began.
    pub written_since: bool,
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

    /// The shared inodes of `held` (on `dev`) back in the scanner's form (tests compare them
    /// with a walk's; a served survey does not carry them).
    #[cfg(test)]
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
        self.changed(held);
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
        self.changed(held);
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
        self.changed(held);
    }

    /// Counts a change of the records of `held` (none when it is empty).
    fn changed(&mut self, held: &[Held]) {
        if !held.is_empty() {
            self.changes += 1;
        }
    }

    /// How many times the table changed: a [`Verdict`] holds while this stays the same.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// For a project whose walk began at sync `walked_at` and counted `held`, in one pass: may
    /// it be served (for each inode, the kept projects hold exactly the links its walk counted,
    /// none of them is stale, and none was reported written since that walk began), and was a
    /// partner reported written since (then only a new walk of it can make it servable again).
    pub fn verdict(&self, dev: u64, held: &[Held], walked_at: u64) -> Verdict {
        let mut v = Verdict {
            servable: true,
            written_since: false,
        };
        for h in held {
            match self.table.get(&(dev, h.ino)) {
                Some(p) => {
                    let written = p.written > walked_at;
                    v.written_since |= written;
                    v.servable &= !written && p.seen == u64::from(h.nlink) && p.stale == 0;
                }
                None => v.servable = false,
            }
        }
        v
    }

    /// Forgets everything (the index was cleared), giving the table's memory back.
    pub fn clear(&mut self) {
        self.table = HashMap::new();
        self.held = 0;
        self.changes += 1;
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
            !links.verdict(DEV, &a, 5).servable,
            "b not kept yet: a link unknown"
        );
        links.add(DEV, &b, false, None);
        assert!(links.verdict(DEV, &a, 5).servable);
        assert!(links.verdict(DEV, &b, 6).servable);
        // Another device's inode 1 is another inode.
        assert!(!links.verdict(DEV + 1, &a, 5).servable);
        // b is written at sync 8: both are stale now, neither is served, and only a new walk
        // of a (b's is due anyway) can bring a back.
        links.written(DEV, &b, 8, true);
        assert!(!links.verdict(DEV, &a, 5).servable);
        assert!(links.verdict(DEV, &a, 5).written_since);
        // b walked again at 9 (still one link), a still from 5: a stays unservable...
        links.remove(DEV, &b, true);
        links.add(DEV, &b, false, Some(8));
        assert!(!links.verdict(DEV, &a, 5).servable);
        assert!(links.verdict(DEV, &b, 9).servable);
        // ...until a is walked again too.
        links.remove(DEV, &a, false);
        links.add(DEV, &a, false, None);
        assert!(links.verdict(DEV, &a, 10).servable);
        assert!(!links.verdict(DEV, &a, 10).written_since);
    }

    /// A verdict is kept per index entry until the table changes: every change to a record
    /// counts, and a verdict taken before one may differ from one taken after.
    #[test]
    fn every_change_of_the_table_is_counted() {
        let mut links = Links::default();
        let a = [held(1, 2, 1)];
        let b = [held(1, 2, 1)];
        let mut last = links.changes();
        let mut changed = |links: &Links| {
            let now = links.changes();
            let moved = now != last;
            last = now;
            moved
        };
        links.add(DEV, &a, false, None);
        assert!(changed(&links));
        let before = links.verdict(DEV, &a, 5);
        links.add(DEV, &b, false, None);
        assert!(changed(&links));
        assert_ne!(
            before,
            links.verdict(DEV, &a, 5),
            "b's link completes a's count"
        );
        links.written(DEV, &b, 8, true);
        assert!(changed(&links));
        links.remove(DEV, &b, true);
        assert!(changed(&links));
        // A project sharing nothing changes nothing.
        links.add(DEV, &[], false, None);
        links.written(DEV, &[], 9, true);
        links.remove(DEV, &[], false);
        assert!(!changed(&links));
        links.clear();
        assert!(changed(&links));
    }

    #[test]
    fn a_partner_written_before_it_was_kept_still_invalidates_an_older_walk() {
        // a walked at 5; b reported written at 7 while it had no entry, walked at 9 and kept.
        let mut links = Links::default();
        let a = [held(1, 2, 1)];
        let b = [held(1, 2, 1)];
        links.add(DEV, &a, false, None);
        links.add(DEV, &b, false, Some(7));
        assert!(!links.verdict(DEV, &a, 5).servable);
        assert!(links.verdict(DEV, &b, 9).servable);
    }

    #[test]
    fn counts_that_do_not_add_up_are_never_served() {
        let mut links = Links::default();
        // A link outside every project: the kept ones hold 2 of 3.
        let a = [held(1, 3, 1)];
        let b = [held(1, 3, 1)];
        links.add(DEV, &a, false, None);
        links.add(DEV, &b, false, None);
        assert!(!links.verdict(DEV, &a, 5).servable);
        // A stale record of a holder counting one link too many.
        let c = [held(2, 2, 1)];
        let d = [held(2, 2, 1)];
        let e = [held(2, 2, 1)];
        for h in [&c, &d, &e] {
            links.add(DEV, h, false, None);
        }
        assert!(!links.verdict(DEV, &c, 5).servable);
        // A stale holder whose walk happened before any write was reported.
        links.remove(DEV, &e, false);
        links.remove(DEV, &d, false);
        links.add(DEV, &d, true, None);
        assert!(!links.verdict(DEV, &c, 5).servable);
        links.remove(DEV, &d, true);
        links.add(DEV, &d, false, None);
        assert!(links.verdict(DEV, &c, 5).servable);
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
