//! Which live processes are a ghost task's, and which of those Guardian may signal. Pure: a
//! process table in, a verdict out.
//!
//! A process is the task's only when its start time fits: the recorded leader must have
//! started within `start_tolerance` of the task's `started_at`; every other member (its group,
//! its descendants, or — the leader gone — the remaining members of its group) must have
//! started no earlier than the leader (or than the task, less the tolerance, when the leader
//! is gone). A process that is the task's but that Guardian may not signal — PID 1, a kernel
//! thread, Guardian itself or one of its ancestors — means the task still runs and nothing of
//! it is signalled.

use super::procs::{self, BootClock, ProcStat};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What became of the recorded leader process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leader {
    /// Alive, and the task's (start time within the tolerance).
    Alive,
    /// Its PID now names a process that started `delta` seconds away from the task (positive:
    /// after): not the task's, left alone.
    Reused { delta: i64 },
    /// No such process (or a zombie).
    Gone,
}

/// The task's live processes, as far as they can be identified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskProcs {
    pub leader: Leader,
    /// Whether the leader leads its own process group.
    pub leads_group: bool,
    /// The task's processes Guardian may signal.
    pub targets: Vec<ProcStat>,
    /// The task's processes Guardian never signals, with why.
    pub untouchable: Vec<(ProcStat, &'static str)>,
    /// Processes of the group (or below it) whose start time shows they are not the task's.
    pub strangers: Vec<ProcStat>,
}

impl TaskProcs {
    /// Nothing of the task runs any more.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.untouchable.is_empty()
    }
}

/// Why Guardian may not signal `p`, if it may not.
fn untouchable(p: &ProcStat, own: &BTreeSet<i32>) -> Option<&'static str> {
    if p.pid <= 1 {
        Some("PID 1 (init)")
    } else if p.is_kernel_thread() {
        Some("a kernel thread")
    } else if own.contains(&p.pid) {
        if i64::from(p.pid) == i64::from(std::process::id()) {
            Some("Guardian itself")
        } else {
            Some("an ancestor of Guardian")
        }
    } else {
        None
    }
}

/// Pure: the processes of a task recorded with `pid`, started at `task_start` (seconds since
/// the epoch). `own` is Guardian's own PID and its ancestors.
pub fn find(
    pid: i32,
    task_start: i64,
    tolerance: Duration,
    clock: &BootClock,
    table: &BTreeMap<i32, ProcStat>,
    own: &BTreeSet<i32>,
) -> TaskProcs {
    let tol = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    let mut out = TaskProcs {
        leader: Leader::Gone,
        leads_group: false,
        targets: Vec::new(),
        untouchable: Vec::new(),
        strangers: Vec::new(),
    };
    let candidates: Vec<ProcStat> = match table.get(&pid).filter(|s| !s.is_gone()) {
        Some(leader) => {
            let delta = clock.start_secs(leader).saturating_sub(task_start);
            if delta.unsigned_abs() > tol.unsigned_abs() {
                out.leader = Leader::Reused { delta };
                return out;
            }
            out.leader = Leader::Alive;
            out.leads_group = leader.pgrp == leader.pid;
            // Members and descendants started after the leader, or they are not its.
            let (mine, others): (Vec<_>, Vec<_>) = procs::task_processes(leader, table)
                .into_iter()
                .partition(|p| p.start_ticks >= leader.start_ticks);
            out.strangers = others;
            mine
        }
        None => {
            // A group id is not handed out while a member lives, but a member older than the
            // task cannot be its: only members started since the task (less the tolerance).
            let earliest = task_start.saturating_sub(tol);
            let (mine, others): (Vec<_>, Vec<_>) = procs::group_members(pid, table)
                .into_iter()
                .partition(|p| clock.start_secs(p) >= earliest);
            out.strangers = others;
            let mut set: BTreeSet<i32> = mine.iter().map(|p| p.pid).collect();
            procs::descendants(&mut set, table);
            set.into_iter()
                .filter_map(|p| table.get(&p).copied())
                .filter(|p| !p.is_gone())
                .collect()
        }
    };
    for p in candidates {
        match untouchable(&p, own) {
            Some(why) => out.untouchable.push((p, why)),
            None => out.targets.push(p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKS: u64 = 100;

    fn p(pid: i32, ppid: i32, pgrp: i32, started: u64) -> ProcStat {
        ProcStat {
            pid,
            ppid,
            pgrp,
            state: 'S',
            flags: 0,
            start_ticks: started * TICKS,
        }
    }

    fn table(list: &[ProcStat]) -> BTreeMap<i32, ProcStat> {
        list.iter().map(|s| (s.pid, *s)).collect()
    }

    const CLOCK: BootClock = BootClock {
        boot: 1_000_000,
        ticks_per_sec: TICKS,
    };
    const TOL: Duration = Duration::from_secs(120);

    fn pids(v: &[ProcStat]) -> Vec<i32> {
        v.iter().map(|s| s.pid).collect()
    }

    #[test]
    fn a_live_leader_brings_its_group_and_descendants_even_after_setsid() {
        let t = table(&[
            p(1, 0, 1, 0),
            p(100, 1, 100, 10),    // the worker
            p(200, 100, 200, 500), // the task
            p(201, 200, 200, 501),
            p(202, 201, 202, 502), // setsid: a session and group of its own
            p(300, 100, 300, 400), // another task
        ]);
        let found = find(200, 1_000_500, TOL, &CLOCK, &t, &BTreeSet::new());
        assert_eq!(found.leader, Leader::Alive);
        assert_eq!(pids(&found.targets), [200, 201, 202]);
        assert!(found.untouchable.is_empty() && found.strangers.is_empty());
    }

    #[test]
    fn a_leader_that_is_an_ancestor_of_guardian_is_untouchable() {
        let t = table(&[
            p(1, 0, 1, 0),
            p(200, 1, 200, 500), // the task's shell, which runs Guardian
            p(201, 200, 200, 501),
            p(210, 200, 200, 502), // Guardian
        ]);
        let own: BTreeSet<i32> = [210, 200].into();
        let found = find(200, 1_000_500, TOL, &CLOCK, &t, &own);
        assert_eq!(
            found
                .untouchable
                .iter()
                .map(|(s, _)| s.pid)
                .collect::<Vec<_>>(),
            [200, 210]
        );
        assert!(!found.is_empty(), "the task still runs");
    }

    #[test]
    fn pid_1_and_kernel_threads_are_never_targets() {
        let mut kthread = p(2, 0, 0, 0);
        kthread.flags = 0x0020_0000;
        let t = table(&[p(1, 0, 1, 0), kthread, p(50, 2, 0, 0)]);
        let found = find(2, 1_000_000, TOL, &CLOCK, &t, &BTreeSet::new());
        assert!(found.targets.is_empty());
        assert_eq!(found.untouchable.len(), 2, "{found:?}");
        let found = find(1, 1_000_000, TOL, &CLOCK, &t, &BTreeSet::new());
        assert!(found.targets.is_empty() && !found.untouchable.is_empty());
    }

    #[test]
    fn leader_gone_members_older_than_the_task_are_left_alone() {
        let t = table(&[
            p(1, 0, 1, 0),
            p(201, 1, 200, 100),   // started long before the task: not its
            p(202, 1, 200, 600),   // started after the task: its orphan
            p(203, 202, 203, 601), // the orphan's setsid child
        ]);
        let found = find(200, 1_000_500, TOL, &CLOCK, &t, &BTreeSet::new());
        assert_eq!(found.leader, Leader::Gone);
        assert_eq!(pids(&found.targets), [202, 203]);
        assert_eq!(pids(&found.strangers), [201]);
    }

    #[test]
    fn a_reused_pid_is_not_the_task() {
        let t = table(&[
            p(1, 0, 1, 0),
            p(200, 1, 200, 9_000),
            p(201, 200, 200, 9_001),
        ]);
        let found = find(200, 1_000_500, TOL, &CLOCK, &t, &BTreeSet::new());
        assert_eq!(found.leader, Leader::Reused { delta: 8_500 });
        assert!(found.is_empty());
    }
}
