//! Processes for the ghost reaper: reads `/proc/PID/stat` (parent, process group, state, start
//! time), finds a task's process group and descendants, and signals them through pidfds so a
//! reused PID is never signalled. It never touches a process it has not identified by PID *and*
//! start time.

use rustix::fd::OwnedFd;
use rustix::process::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::time::{Duration, Instant};

/// One process as `/proc/PID/stat` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    /// `R`, `S`, `D`, `Z`, `X`, …
    pub state: char,
    /// Field 9: the kernel's per-process flags (`PF_*`).
    pub flags: u64,
    /// Field 22: clock ticks after boot when the process started.
    pub start_ticks: u64,
}

/// `PF_KTHREAD`: the process is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

impl ProcStat {
    /// Exited (a zombie waiting to be reaped counts as gone: it runs nothing and holds nothing).
    pub fn is_gone(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// A kernel thread (`kthreadd` and its children): never a task's, never signalled.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0 || self.pid == 2 || self.ppid == 2
    }
}

/// Parses the text of `/proc/PID/stat`. The command name may hold spaces and parentheses, so
/// fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        flags: fields.get(6)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// `/proc/PID/stat` of one process; `Ok(None)` when there is no such process.
pub fn read_stat(pid: i32) -> io::Result<Option<ProcStat>> {
    // The command name may hold any bytes; the fields read are all after it.
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(bytes) => Ok(parse_stat(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Every process now, by PID.
pub fn all_processes() -> io::Result<BTreeMap<i32, ProcStat>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(Some(st)) = read_stat(pid) {
            out.insert(pid, st);
        }
    }
    Ok(out)
}

/// Converts start ticks to seconds since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    /// Boot time, seconds since the epoch (`btime` in `/proc/stat`).
    pub boot: i64,
    pub ticks_per_sec: u64,
}

impl BootClock {
    pub fn read() -> io::Result<BootClock> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let boot = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other("no btime line in /proc/stat"))?;
        // SAFETY: sysconf has no preconditions; it only reads a system constant.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(BootClock {
            boot,
            ticks_per_sec: u64::try_from(tck).ok().filter(|t| *t > 0).unwrap_or(100),
        })
    }

    /// Start time of a process in seconds since the epoch (whole seconds, rounded down).
    pub fn start_secs(&self, st: &ProcStat) -> i64 {
        let after_boot = st.start_ticks / self.ticks_per_sec.max(1);
        self.boot
            .saturating_add(i64::try_from(after_boot).unwrap_or(i64::MAX))
    }
}

/// The processes that make up a task whose recorded process is `leader`: its process group when
/// it leads one, and every descendant (children may have moved to groups or sessions of their
/// own). Only processes that still exist are returned; whether each may be signalled is decided
/// by the caller.
pub fn task_processes(leader: &ProcStat, table: &BTreeMap<i32, ProcStat>) -> Vec<ProcStat> {
    let mut set: BTreeSet<i32> = BTreeSet::new();
    set.insert(leader.pid);
    if leader.pgrp == leader.pid {
        set.extend(
            table
                .values()
                .filter(|p| p.pgrp == leader.pgrp)
                .map(|p| p.pid),
        );
    }
    descendants(&mut set, table);
    set.into_iter()
        .filter_map(|pid| table.get(&pid).copied())
        .filter(|p| !p.is_gone())
        .collect()
}

/// Adds every descendant of the processes in `set`, by parent links, to a fixed point.
pub fn descendants(set: &mut BTreeSet<i32>, table: &BTreeMap<i32, ProcStat>) {
    loop {
        let before = set.len();
        let found: Vec<i32> = table
            .values()
            .filter(|p| set.contains(&p.ppid) && !set.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
        set.extend(found);
        if set.len() == before {
            break;
        }
    }
}

/// Live members of the process group `pgid` (used when the task's leader is already gone: its
/// orphans, to be checked by start time).
pub fn group_members(pgid: i32, table: &BTreeMap<i32, ProcStat>) -> Vec<ProcStat> {
    table
        .values()
        .filter(|p| p.pgrp == pgid && !p.is_gone())
        .copied()
        .collect()
}

/// Guardian's own PID and every ancestor: never signalled.
pub fn own_lineage(table: &BTreeMap<i32, ProcStat>) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let mut pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    while pid > 1 && out.insert(pid) {
        pid = match table.get(&pid) {
            Some(p) => p.ppid,
            None => break,
        };
    }
    out
}

/// A process pinned by a pidfd opened after it was identified by PID and start time.
pub struct Pinned {
    pub stat: ProcStat,
    fd: OwnedFd,
}

/// Opens a pidfd for `st` and checks that the PID still names the same process (same start
/// time); `None` when it is gone or was replaced.
#[cfg(target_os = "linux")]
pub fn pin(st: &ProcStat) -> Option<Pinned> {
    use rustix::process::{Pid, PidfdFlags};
    let fd = rustix::process::pidfd_open(Pid::from_raw(st.pid)?, PidfdFlags::empty()).ok()?;
    let now = read_stat(st.pid).ok()??;
    (now.start_ticks == st.start_ticks && !now.is_gone()).then_some(Pinned { stat: *st, fd })
}

/// Without pidfds (and `/proc`) no process can be pinned, so the reaper signals nothing.
#[cfg(not(target_os = "linux"))]
pub fn pin(_st: &ProcStat) -> Option<Pinned> {
    None
}

impl Pinned {
    /// Sends `sig` to exactly this process (never to a process that reused its PID).
    #[cfg(target_os = "linux")]
    pub fn signal(&self, sig: Signal) -> Result<(), rustix::io::Errno> {
        rustix::process::pidfd_send_signal(&self.fd, sig)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn signal(&self, _sig: Signal) -> Result<(), rustix::io::Errno> {
        let _ = &self.fd;
        Err(rustix::io::Errno::NOSYS)
    }

    /// True once the process has exited (zombie or reaped) or its PID names another process.
    pub fn is_gone(&self) -> bool {
        match read_stat(self.stat.pid) {
            Ok(Some(now)) => now.start_ticks != self.stat.start_ticks || now.is_gone(),
            Ok(None) => true,
            Err(_) => false,
        }
    }
}

/// How a kill went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillResult {
    /// PIDs signalled.
    pub signalled: Vec<i32>,
    /// PIDs that needed SIGKILL after the grace period.
    pub killed_hard: Vec<i32>,
    /// PIDs a signal could not be sent to (other than because they had exited), and why.
    pub denied: Vec<(i32, String)>,
    /// PIDs still alive at the end.
    pub survivors: Vec<i32>,
    /// The wait was cut short because Guardian is stopping.
    pub cancelled: bool,
}

/// SIGTERM every process, wait up to `grace` for all to exit, SIGKILL what is left, then wait up
/// to `confirm` for those to disappear. Processes that appear in the group or as children while
/// this runs are picked up by `rescan`, which gets the PIDs still alive.
pub fn terminate(
    initial: Vec<Pinned>,
    mut rescan: impl FnMut(&[i32]) -> Vec<Pinned>,
    grace: Duration,
    confirm: Duration,
    cancel: &super::Cancel,
) -> KillResult {
    let mut result = KillResult::default();
    let mut live: Vec<Pinned> = Vec::new();
    let send = |p: &Pinned, sig: Signal, result: &mut KillResult| -> bool {
        match p.signal(sig) {
            Ok(()) => true,
            Err(rustix::io::Errno::SRCH) => false,
            Err(e) => {
                if !result.denied.iter().any(|(pid, _)| *pid == p.stat.pid) {
                    result.denied.push((p.stat.pid, e.to_string()));
                }
                false
            }
        }
    };
    let add = |p: Pinned, live: &mut Vec<Pinned>, result: &mut KillResult, sig: Signal| {
        if live.iter().any(|l| l.stat.pid == p.stat.pid) {
            return;
        }
        if send(&p, sig, result) {
            result.signalled.push(p.stat.pid);
        }
        live.push(p);
    };
    for p in initial {
        add(p, &mut live, &mut result, Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    let pids = |live: &[Pinned]| live.iter().map(|p| p.stat.pid).collect::<Vec<_>>();
    loop {
        for p in rescan(&pids(&live)) {
            add(p, &mut live, &mut result, Signal::TERM);
        }
        live.retain(|p| !p.is_gone());
        if live.is_empty() || Instant::now() >= deadline {
            break;
        }
        if cancel.is_set() {
            result.cancelled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !live.is_empty() && !result.cancelled {
        for p in rescan(&pids(&live)) {
            add(p, &mut live, &mut result, Signal::KILL);
        }
        for p in &live {
            if send(p, Signal::KILL, &mut result) {
                result.killed_hard.push(p.stat.pid);
            }
        }
        let deadline = Instant::now() + confirm;
        loop {
            live.retain(|p| !p.is_gone());
            if live.is_empty() || Instant::now() >= deadline || cancel.is_set() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    result.survivors = live.iter().map(|p| p.stat.pid).collect();
    result.signalled.sort_unstable();
    result.signalled.dedup();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) cmd) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let st = parse_stat(line).unwrap();
        assert_eq!(
            st,
            ProcStat {
                pid: 4242,
                ppid: 17,
                pgrp: 4242,
                state: 'S',
                flags: 4194560,
                start_ticks: 987654
            }
        );
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn task_processes_are_the_group_and_descendants_only() {
        let p = |pid, ppid, pgrp| ProcStat {
            pid,
            ppid,
            pgrp,
            state: 'S',
            flags: 0,
            start_ticks: 1,
        };
        let table: BTreeMap<i32, ProcStat> = [
            p(1, 0, 1),
            p(100, 1, 100),   // the worker
            p(200, 100, 200), // the task, leads its group
            p(201, 200, 200), // child in the group
            p(202, 201, 300), // grandchild in a group of its own
            p(250, 1, 200),   // reparented group member
            p(400, 100, 100), // another task of the worker, not a group leader
            p(401, 400, 100),
        ]
        .into_iter()
        .map(|s| (s.pid, s))
        .collect();
        let pids = |v: Vec<ProcStat>| v.iter().map(|s| s.pid).collect::<Vec<_>>();
        assert_eq!(
            pids(task_processes(&table[&200], &table)),
            [200, 201, 202, 250]
        );
        // Not a group leader: its group is the worker's, so only it and its descendants.
        assert_eq!(pids(task_processes(&table[&400], &table)), [400, 401]);
        assert_eq!(pids(group_members(200, &table)), [200, 201, 250]);
    }
}
