//! The probe's project indices: which project counts into which slot of the kernel's fixed-size
//! tables (`1..MAX_PROJECTS`), independent of the daemon's project ids. Indices of vanished
//! projects are recycled, but only after a *quarantine* that lasts until the next drain, and each
//! index carries a generation that is bumped when it is given up: the probe drops bytes of a
//! write slot whose generation is stale, so no byte of a vanished project is ever counted for the
//! index's next owner. Projects beyond the table wait for a free index. Pure: the caller applies
//! the returned [`Changes`] to the kernel maps.

use crate::sources::ProjectDir;
use std::collections::{BTreeSet, HashMap};

/// A project as registered in the probe's `PROJECTS` map: its id and its dir's (dev, ino) —
/// no path (the table holds up to `MAX_PROJECTS - 1` of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registered {
    pub(crate) id: u32,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl Registered {
    fn of(dir: &ProjectDir) -> Registered {
        Registered {
            id: dir.id,
            dev: dir.dev,
            ino: dir.ino,
        }
    }
}

/// What the kernel maps need after an update.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Indices given up: (index, the project that had it, its new generation).
    pub(crate) freed: Vec<(u32, Registered, u32)>,
    /// Indices given to projects: (index, project, its new generation).
    pub(crate) assigned: Vec<(u32, ProjectDir, u32)>,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.freed.is_empty() && self.assigned.is_empty()
    }
}

#[derive(Debug)]
pub(crate) struct IndexTable {
    /// Project id → its index.
    by_id: HashMap<u32, u32>,
    /// Per index, the project registered there (`slots[0]` unused); covers `0..fresh`.
    slots: Vec<Option<Registered>>,
    /// Generation per index (`gens[0]` unused); covers `0..fresh`.
    gens: Vec<u32>,
    /// Indices given up (and out of quarantine) ready for a new project, smallest first; all
    /// below `fresh`.
    free: BTreeSet<u32>,
    /// The smallest index never handed out: the table grows with the projects it has held, not
    /// with the probe's capacity.
    fresh: u32,
    /// Indices are `1..capacity`.
    capacity: u32,
    /// Indices given up since the last drain.
    quarantine: Vec<u32>,
    /// Projects waiting for an index, in the order they came.
    waiting: Vec<ProjectDir>,
}

impl IndexTable {
    /// Indices `1..capacity`.
    pub(crate) fn new(capacity: u32) -> IndexTable {
        IndexTable {
            by_id: HashMap::new(),
            slots: vec![None],
            gens: vec![0],
            free: BTreeSet::new(),
            fresh: 1,
            capacity,
            quarantine: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// Makes the table match `projects`: frees the indices of projects that vanished or changed
    /// (another dir under the same id), assigns free indices to new ones.
    pub(crate) fn update(&mut self, projects: &[ProjectDir]) -> Changes {
        let wanted: HashMap<u32, &ProjectDir> = projects.iter().map(|p| (p.id, p)).collect();
        let mut changes = Changes::default();
        let mut gone: Vec<u32> = self
            .by_id
            .iter()
            .filter(|(id, index)| {
                let now = wanted.get(id).map(|w| Registered::of(w));
                now.is_none() || now != self.registered(**index)
            })
            .map(|(id, _)| *id)
            .collect();
        gone.sort_unstable();
        for id in gone {
            if let Some(freed) = self.release(id) {
                changes.freed.push(freed);
            }
        }
        self.waiting = projects
            .iter()
            .filter(|p| !self.by_id.contains_key(&p.id))
            .cloned()
            .collect();
        self.waiting.shrink_to_fit();
        changes.assigned = self.assign_waiting();
        self.by_id.shrink_to_fit();
        changes
    }

    fn registered(&self, index: u32) -> Option<Registered> {
        self.slots.get(index as usize).copied().flatten()
    }

    /// Gives up the index of project `id` (into quarantine); returns (index, project, new
    /// generation).
    pub(crate) fn release(&mut self, id: u32) -> Option<(u32, Registered, u32)> {
        let index = self.by_id.remove(&id)?;
        let dir = self.slots.get_mut(index as usize)?.take()?;
        let gen = self.gens.get_mut(index as usize)?;
        *gen = gen.wrapping_add(1);
        self.quarantine.push(index);
        Some((index, dir, *gen))
    }

    /// A project whose registration failed goes back to waiting.
    pub(crate) fn unassign(&mut self, dir: &ProjectDir) -> Option<(u32, Registered, u32)> {
        let released = self.release(dir.id)?;
        self.waiting.push(dir.clone());
        Some(released)
    }

    /// The smallest index free for a project: a given-up one, else the next never used (the
    /// tables grow to cover it), else none (the table is full).
    fn take_index(&mut self) -> Option<u32> {
        if let Some(index) = self.free.pop_first() {
            return Some(index);
        }
        if self.fresh >= self.capacity {
            return None;
        }
        let index = self.fresh;
        self.fresh += 1;
        self.slots.push(None);
        self.gens.push(0);
        Some(index)
    }

    fn assign_waiting(&mut self) -> Vec<(u32, ProjectDir, u32)> {
        let mut assigned = Vec::new();
        let mut still = Vec::new();
        for dir in std::mem::take(&mut self.waiting) {
            let next = self.take_index();
            let slot = next.and_then(|index| {
                let gen = self.gens.get_mut(index as usize)?;
                let slot = self.slots.get_mut(index as usize)?;
                Some((index, gen, slot))
            });
            match slot {
                Some((index, gen, slot)) => {
                    *gen = gen.wrapping_add(1);
                    *slot = Some(Registered::of(&dir));
                    let gen = *gen;
                    self.by_id.insert(dir.id, index);
                    assigned.push((index, dir, gen));
                }
                None => {
                    // No index (or one beyond the table, which cannot be): back where it was.
                    if let Some(index) = next {
                        self.free.insert(index);
                    }
                    still.push(dir);
                }
            }
        }
        self.waiting = still;
        assigned
    }

    /// A drain happened: quarantined indices become free, and projects waiting get them.
    pub(crate) fn drained(&mut self) -> Changes {
        self.free.extend(self.quarantine.drain(..));
        Changes {
            freed: Vec::new(),
            assigned: if self.waiting.is_empty() {
                Vec::new()
            } else {
                self.assign_waiting()
            },
        }
    }

    /// The project id counting into `index`.
    pub(crate) fn owner(&self, index: u32) -> Option<u32> {
        self.registered(index).map(|r| r.id)
    }

    /// The generation of `index`.
    pub(crate) fn gen(&self, index: u32) -> u32 {
        self.gens.get(index as usize).copied().unwrap_or(0)
    }

    /// Every index in use.
    pub(crate) fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_id.values().copied()
    }

    /// Projects without an index (beyond the table).
    pub(crate) fn waiting(&self) -> &[ProjectDir] {
        &self.waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dir(id: u32, name: &str) -> ProjectDir {
        ProjectDir {
            id,
            path: PathBuf::from(format!("/w/{name}")).into(),
            dev: 1,
            ino: u64::from(id) + 1000,
        }
    }

    #[test]
    fn indices_of_vanished_projects_are_reused_only_after_a_drain_with_a_new_generation() {
        let mut t = IndexTable::new(4); // indices 1..=3
        let c = t.update(&[dir(10, "a"), dir(11, "b")]);
        assert_eq!(
            c.assigned
                .iter()
                .map(|(i, d, _)| (*i, d.id))
                .collect::<Vec<_>>(),
            vec![(1, 10), (2, 11)]
        );
        // b vanishes, c and d come: c gets 3, d waits (2 is in quarantine).
        let c = t.update(&[dir(10, "a"), dir(12, "c"), dir(13, "d")]);
        assert_eq!(c.freed.len(), 1);
        let (index, gone, gen) = c.freed[0];
        assert_eq!(
            (index, gone.id, gen),
            (2, 11, 2),
            "bumped when given and when given up"
        );
        assert_eq!(
            c.assigned
                .iter()
                .map(|(i, d, _)| (*i, d.id))
                .collect::<Vec<_>>(),
            vec![(3, 12)]
        );
        assert_eq!(t.waiting().len(), 1);
        // After a drain, d gets index 2 with generation 3: bytes of b's slots (generation 1, or
        // 2 if filled while b was given up) are dropped by the probe.
        let c = t.drained();
        assert_eq!(
            c.assigned
                .iter()
                .map(|(i, d, g)| (*i, d.id, *g))
                .collect::<Vec<_>>(),
            vec![(2, 13, 3)]
        );
        assert_eq!(t.gen(2), 3);
        assert_eq!(t.owner(2), Some(13));
        assert!(t.waiting().is_empty());
    }

    #[test]
    fn another_dir_under_the_same_id_gets_a_fresh_index() {
        let mut t = IndexTable::new(8);
        t.update(&[dir(1, "a")]);
        let mut moved = dir(1, "a");
        moved.ino += 1;
        let c = t.update(&[moved]);
        assert_eq!(c.freed.len(), 1);
        assert_eq!(c.assigned.len(), 1);
        assert_ne!(c.assigned[0].0, c.freed[0].0);
    }

    /// 10 rounds of 1,000 projects created and removed, a drain between rounds: every project
    /// gets an index, and a new one afterwards too; the table's memory follows the projects it
    /// held at once (two rounds, one in quarantine), not the probe's capacity.
    #[test]
    fn ten_rounds_of_a_thousand_projects_never_exhaust_the_table() {
        let mut t = IndexTable::new(guardian_common::MAX_PROJECTS);
        for round in 0..10u32 {
            let dirs: Vec<ProjectDir> = (0..1000)
                .map(|i| dir(round * 1000 + i + 1, &format!("r{round}-{i}")))
                .collect();
            t.update(&dirs);
            assert!(t.waiting().is_empty());
            t.drained();
        }
        let c = t.update(&[dir(99_999, "new")]);
        assert_eq!(c.assigned.len(), 1);
        assert!(t.waiting().is_empty());
        assert_eq!(t.fresh, 2001);
        assert_eq!((t.slots.len(), t.gens.len()), (2001, 2001));
    }

    /// A node holds 10,000 project dirs: every one gets an index (the probe's table had 8,191,
    /// and 1,809 of them went uncounted); one more than the table holds waits.
    #[test]
    fn ten_thousand_projects_all_get_an_index_and_one_beyond_the_table_waits() {
        let mut t = IndexTable::new(guardian_common::MAX_PROJECTS);
        let dirs: Vec<ProjectDir> = (1..=10_000).map(|i| dir(i, &format!("p{i}"))).collect();
        let c = t.update(&dirs);
        assert_eq!(c.assigned.len(), 10_000);
        assert!(t.waiting().is_empty());
        let full = guardian_common::MAX_PROJECTS - 1;
        let dirs: Vec<ProjectDir> = (1..=full + 1).map(|i| dir(i, &format!("p{i}"))).collect();
        t.update(&dirs);
        assert_eq!(t.waiting().len(), 1);
        assert_eq!(t.indices().count(), full as usize);
        assert!(t
            .indices()
            .all(|i| (1..guardian_common::MAX_PROJECTS).contains(&i)));
    }
}
