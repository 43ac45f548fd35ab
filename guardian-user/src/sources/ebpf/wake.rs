//! The eBPF source's half of the write countdown (`sources::countdown`): gives each guarded
//! filesystem one of the probe's budget entries (`ProbeSettings::budgets`, by the kernel's
//! `s_dev`), arms it as equal per-CPU shares of the daemon's budget, and runs the thread that
//! blocks on the probe's `WAKE` ring buffer and turns its records into wake-ups of the daemon.
//! The probe sends one record per arming and CPU; the thread counts them (tests and the bench
//! read the count) and hands on at most one waiting wake-up.

use crate::sources::countdown::{self, Budget, Wake, Waker};
use guardian_common::{kernel_dev, ProbeSettings, WakeRecord};
use rustix::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the ring-buffer thread shares with the source.
#[derive(Default)]
struct Shared {
    waker: Mutex<Option<Waker>>,
    /// Records read from the ring buffer since the probe was loaded.
    records: AtomicU64,
}

/// The countdown of one loaded probe.
pub(super) struct Countdown {
    /// CPUs the kernel may run the probe on (each gets an equal share of a budget).
    cpus: u64,
    /// The last `gen` given out (never 0: 0 is "disarmed").
    gen: u32,
    /// `records` when the budgets were last armed: a record since means a share is spent, and
    /// the next arming must start every share over even if the budgets did not change.
    records_at_arm: u64,
    /// The budgets armed last ((probe dev, bytes)).
    last: Vec<(u32, u64)>,
    /// Budgets the daemon asked for that found no free entry (more than `MAX_FS - 1`
    /// filesystems).
    pub(super) unarmed: usize,
    shared: Arc<Shared>,
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Countdown {
    /// Starts the thread reading the probe's ring buffer.
    pub(super) fn start(
        ring: aya::maps::RingBuf<aya::maps::MapData>,
        cpus: u64,
    ) -> io::Result<Countdown> {
        // SAFETY: plain syscall, result checked and owned.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor.
        let stop = Arc::new(unsafe { OwnedFd::from_raw_fd(stop) });
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("guardian-ebpf-wake".into())
            .spawn({
                let stop = stop.clone();
                let shared = shared.clone();
                move || read_wakes(ring, &stop, &shared)
            })?;
        Ok(Countdown {
            cpus: cpus.max(1),
            gen: 0,
            records_at_arm: 0,
            last: Vec::new(),
            unarmed: 0,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    pub(super) fn set_waker(&self, waker: Waker) {
        if let Ok(mut w) = self.shared.waker.lock() {
            *w = Some(waker);
        }
    }

    /// Ring-buffer records read so far.
    pub(super) fn records(&self) -> u64 {
        self.shared.records.load(Ordering::Relaxed)
    }

    /// Updates `settings` for `budgets`; false when nothing needs writing (same budgets, and no
    /// share was spent since they were armed: the probe's counts stand).
    pub(super) fn arm(&mut self, settings: &mut ProbeSettings, budgets: &[Budget]) -> bool {
        let records = self.records();
        let spent = records != self.records_at_arm;
        let wanted = wanted(budgets);
        let plan = plan(settings, &wanted, self.cpus, spent, &mut self.gen);
        self.last = wanted;
        self.unarmed = plan.unarmed;
        if plan.changed {
            self.records_at_arm = records;
        }
        plan.changed
    }
}

impl Countdown {
    /// True when arming `budgets` would change nothing (the same budgets, no share spent since):
    /// then the probe's settings need not even be read — an idle sampler makes no syscall here.
    pub(super) fn unchanged(&self, budgets: &[Budget]) -> bool {
        self.records() == self.records_at_arm && wanted(budgets) == self.last
    }
}

/// The budgets the probe can hold, as (probe dev, bytes).
fn wanted(budgets: &[Budget]) -> Vec<(u32, u64)> {
    budgets
        .iter()
        .filter_map(|b| Some((probe_dev(b.dev)?, b.bytes)))
        .collect()
}

impl Drop for Countdown {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes eight bytes from a local buffer to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A userspace `st_dev` as the probe sees it (`s_dev`, 32 bits); `None` for one it cannot hold.
fn probe_dev(dev: u64) -> Option<u32> {
    let kdev = kernel_dev(rustix::fs::major(dev), rustix::fs::minor(dev));
    u32::try_from(kdev).ok().filter(|d| *d != 0)
}

/// The probe's `s_dev` as a userspace `st_dev`.
fn user_dev(kdev: u32) -> u64 {
    rustix::fs::makedev(kdev >> 20, kdev & 0xfffff)
}

/// What arming changed.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    changed: bool,
    unarmed: usize,
}

/// Arms `wanted` ((probe dev, bytes)) in `settings.budgets`: filesystems no longer wanted give
/// up their entry, new ones take a free one — either bumps the project epoch, so every write
/// slot (which remembers its filesystem's entry) is refilled. A budget is re-armed (new `gen`:
/// every CPU's spending starts over) when its per-CPU share changed, or when `spent` says a
/// share ran out since the last arming.
fn plan(
    settings: &mut ProbeSettings,
    wanted: &[(u32, u64)],
    cpus: u64,
    spent: bool,
    gen: &mut u32,
) -> Plan {
    let mut changed = false;
    let mut moved = false;
    for entry in settings.budgets.iter_mut().skip(1) {
        if entry.dev != 0 && !wanted.iter().any(|(dev, _)| *dev == entry.dev) {
            *entry = Default::default();
            moved = true;
        }
    }
    let mut unarmed = 0;
    for &(dev, bytes) in wanted {
        let at = match settings.budgets.iter().skip(1).position(|e| e.dev == dev) {
            Some(i) => i + 1,
            None => match settings.budgets.iter().skip(1).position(|e| e.dev == 0) {
                Some(i) => {
                    moved = true;
                    i + 1
                }
                None => {
                    unarmed += 1;
                    continue;
                }
            },
        };
        let Some(entry) = settings.budgets.get_mut(at) else {
            continue;
        };
        let per_cpu = (bytes / cpus.max(1)).max(1);
        if entry.dev != dev || entry.gen == 0 || entry.per_cpu != per_cpu || spent {
            *gen = gen.wrapping_add(1).max(1);
            entry.dev = dev;
            entry.gen = *gen;
            entry.per_cpu = per_cpu;
            changed = true;
        }
    }
    if moved {
        settings.epoch = settings.epoch.wrapping_add(1);
    }
    Plan {
        changed: changed || moved,
        unarmed,
    }
}

/// The ring-buffer thread: blocks until the probe sends a record (or `stop` is written), counts
/// the records and wakes the daemon.
fn read_wakes(mut ring: aya::maps::RingBuf<aya::maps::MapData>, stop: &OwnedFd, shared: &Shared) {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            crate::warn_quiet!("ebpf.wake", error = %err, "ebpf: the countdown's ring buffer cannot be read; crossings wait for the next sample");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        while let Some(item) = ring.next() {
            let Some(record) = parse(&item) else {
                continue;
            };
            shared.records.fetch_add(1, Ordering::Relaxed);
            let waker = shared.waker.lock().ok().and_then(|w| w.clone());
            countdown::wake(
                waker.as_ref(),
                Wake {
                    source: "ebpf",
                    dev: user_dev(record.dev),
                    bytes: record.spent,
                },
            );
        }
    }
}

/// A `WakeRecord` from ring-buffer bytes (`None` for a record of another size).
fn parse(bytes: &[u8]) -> Option<WakeRecord> {
    let dev = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?);
    let gen = u32::from_ne_bytes(bytes.get(4..8)?.try_into().ok()?);
    let spent = u64::from_ne_bytes(bytes.get(8..16)?.try_into().ok()?);
    (bytes.len() == std::mem::size_of::<WakeRecord>()).then_some(WakeRecord { dev, gen, spent })
}

#[cfg(test)]
mod tests {
    use super::*;
    use guardian_common::MAX_FS;

    fn armed(s: &ProbeSettings) -> Vec<(usize, u32, u32, u64)> {
        s.budgets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.dev != 0)
            .map(|(i, b)| (i, b.dev, b.gen, b.per_cpu))
            .collect()
    }

    #[test]
    fn arming_splits_budgets_per_cpu_and_moves_the_epoch_only_when_entries_move() {
        let mut s = ProbeSettings::default();
        let mut gen = 0;
        let p = plan(&mut s, &[(10, 800), (20, 80)], 4, false, &mut gen);
        assert_eq!(
            p,
            Plan {
                changed: true,
                unarmed: 0
            }
        );
        assert_eq!(armed(&s), vec![(1, 10, 1, 200), (2, 20, 2, 20)]);
        assert_eq!(s.epoch, 1, "new entries: slots must learn their filesystem");
        // Same budgets, nothing spent: nothing to write, the probe's counts stand.
        let p = plan(&mut s, &[(10, 800), (20, 80)], 4, false, &mut gen);
        assert!(!p.changed);
        // A share ran out since: every budget starts over, the entries stay.
        let p = plan(&mut s, &[(10, 800), (20, 80)], 4, true, &mut gen);
        assert!(p.changed);
        assert_eq!(armed(&s), vec![(1, 10, 3, 200), (2, 20, 4, 20)]);
        assert_eq!(s.epoch, 1);
        // A new budget for one: only it is re-armed.
        plan(&mut s, &[(10, 400), (20, 80)], 4, false, &mut gen);
        assert_eq!(armed(&s), vec![(1, 10, 5, 100), (2, 20, 4, 20)]);
        // One filesystem gone: its entry is freed, the epoch moves.
        plan(&mut s, &[(20, 80)], 4, false, &mut gen);
        assert_eq!(armed(&s), vec![(2, 20, 4, 20)]);
        assert_eq!(s.epoch, 2);
        // A share never rounds down to zero.
        plan(&mut s, &[(20, 3)], 4, false, &mut gen);
        assert_eq!(armed(&s), vec![(2, 20, 6, 1)]);
    }

    #[test]
    fn filesystems_beyond_the_probe_entries_are_left_unarmed() {
        let mut s = ProbeSettings::default();
        let mut gen = 0;
        let wanted: Vec<(u32, u64)> = (1..=MAX_FS as u32 + 2).map(|d| (d, 100)).collect();
        let p = plan(&mut s, &wanted, 1, false, &mut gen);
        assert_eq!(p.unarmed, 3);
        assert_eq!(armed(&s).len(), MAX_FS - 1);
    }

    #[test]
    fn ring_records_parse_and_devices_convert() {
        let mut bytes = Vec::new();
        bytes.extend(((8u32 << 20) | 3).to_ne_bytes());
        bytes.extend(7u32.to_ne_bytes());
        bytes.extend(4096u64.to_ne_bytes());
        let r = parse(&bytes).unwrap();
        assert_eq!((r.dev, r.gen, r.spent), ((8 << 20) | 3, 7, 4096));
        assert_eq!(parse(&bytes[..12]), None);
        let dev = rustix::fs::makedev(8, 3);
        assert_eq!(user_dev(probe_dev(dev).unwrap()), dev);
        assert_eq!(probe_dev(0), None);
    }
}
