//! Giving back what start-up and bursts of work needed: large blocks as mappings of their own
//! (glibc's thresholds fixed, [`fix_thresholds`]), the heap glibc keeps after it was freed
//! (BTF parsing, baseline walks, a filled survey index's walks, a cleanup cycle) and the code
//! pages of Guardian's binary and its libraries that were touched once (config parsing, probe
//! loading, the first walks, the last minute's relisting) — when, see [`Schedule`].
//!
//! Invariants: only read-only private file mappings with no private (copied) page are dropped —
//! their content is the file's, so a later touch maps the same bytes again from the page cache;
//! nothing is done off Linux/glibc. An idle daemon gives back at most once a [`IDLE_EVERY`]
//! (one read of `/proc/self/smaps`, ~1 ms).

use std::time::{Duration, Instant};

/// Polls after start-up (and after the project set changed) that end by giving back.
pub const BURST_POLLS: u32 = 6;
/// Otherwise, the least time between two give-backs: what the idle loop touched since (its
/// code, the relisting's, the index refresh's) is all that stays mapped.
pub const IDLE_EVERY: Duration = Duration::from_secs(60);

/// When the main loop gives back: at the end of each of the [`BURST_POLLS`] polls after a
/// burst (start-up, a new project set), then once every [`IDLE_EVERY`]. Pure: the caller passes
/// the time.
#[derive(Debug)]
pub struct Schedule {
    polls_left: u32,
    last: Option<Instant>,
}

impl Schedule {
    /// A schedule starting with a burst (start-up).
    pub fn new() -> Schedule {
        Schedule {
            polls_left: BURST_POLLS,
            last: None,
        }
    }

    /// Work that freed a lot just ended (a new project set): give back over the next polls.
    pub fn burst(&mut self) {
        self.polls_left = BURST_POLLS;
    }

    /// Work that freed something just ended (a relisting of the project dirs): give back at
    /// the end of this poll.
    pub fn soon(&mut self) {
        self.polls_left = self.polls_left.max(1);
    }

    /// Called at the end of each poll: whether to [`give_back`] now.
    pub fn due(&mut self, now: Instant) -> bool {
        let idle_due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= IDLE_EVERY);
        if self.polls_left > 0 {
            self.polls_left -= 1;
        } else if !idle_due {
            return false;
        }
        self.last = Some(now);
        true
    }
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule::new()
    }
}

/// glibc's mmap and trim thresholds, fixed (see [`fix_thresholds`]): 128 KiB, glibc's own
/// starting values.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
pub const ALLOCATOR_THRESHOLD: usize = 128 << 10;

/// Fixes glibc's mmap and trim thresholds at [`ALLOCATOR_THRESHOLD`], which turns off their
/// dynamic raise. By default freeing one large mapped block (a table the baseline walk grew,
/// then compacted) raises the mmap threshold to its size and the trim threshold to twice that:
/// blocks of up to several MiB are then carved from the arenas, and up to twice that of free
/// space at the top of a worker thread's arena stays resident — `malloc_trim` returns the free
/// chunks inside every arena, but the top only of the main one. On the 1M-file scale tree the
/// fanotify and inotify daemons held 1.4–2.5 MiB over their live heap so (heaptrack: the live
/// heaps of the two differed by the 0.5 MiB watch table, their RSS by 1.6 MiB; with the
/// thresholds fixed, RSS 25.2 and 25.7 MiB, was 26.6 and 28.2). Fixed, a thread's arena is
/// trimmed on free, and a large block is a mapping of its own, given back whole when freed.
pub fn fix_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = libc::c_int::try_from(ALLOCATOR_THRESHOLD).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets glibc's allocator parameters; it takes no pointer. A
        // refusal (0) leaves glibc's defaults, which are correct, only larger.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
            libc::mallopt(libc::M_TRIM_THRESHOLD, threshold);
        }
    }
}

/// Returns freed heap and the read-only pages of the binary and its libraries to the OS. A few
/// milliseconds at most; called as [`Schedule`] says, after the survey index filled and after
/// a cleanup cycle — never per sample.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointer.
        unsafe {
            libc::malloc_trim(0);
        }
        drop_code_pages();
    }
}

/// Drops this process's mappings of read-only file pages (see [`unshared_ranges`]): they leave
/// its RSS and become plain page cache the kernel may reclaim; the code an idle daemon runs is
/// mapped back in at its next touch.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn drop_code_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in unshared_ranges(&smaps) {
        let (Ok(addr), Ok(len)) = (usize::try_from(start), usize::try_from(end - start)) else {
            continue;
        };
        // SAFETY: [addr, addr+len) is a whole read-only private file mapping holding no
        // private page (checked just above from smaps, and nothing writes a read-only
        // mapping): MADV_DONTNEED only unmaps its pages, and the next access maps the same
        // file bytes again. No Rust reference is invalidated — the memory reads the same.
        unsafe {
            libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED);
        }
    }
}

/// The (start, end) of each mapping in `smaps` (the text of `/proc/self/smaps`) of a file
/// (the executable, a shared library) that is read-only and private (`r--p`/`r-xp`) and holds no
/// anonymous (copied-on-write) page: code and constants, not relocated or writable data, not
/// anonymous memory, not shared mappings (BPF maps, shared memory).
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
pub fn unshared_ranges(smaps: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut current: Option<(u64, u64)> = None;
    for line in smaps.lines() {
        if let Some(range) = mapping_of(line) {
            current = range;
            continue;
        }
        if let Some(value) = line.strip_prefix("Anonymous:") {
            let anonymous = value
                .trim()
                .strip_suffix("kB")
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let (Some(range), Some(0)) = (current.take(), anonymous) {
                out.push(range);
            }
        }
    }
    out
}

/// For a mapping header line (`start-end perms offset dev inode path`): `Some(range)` when it
/// is a read-only private mapping of a file (an inode, a path from `/`), `Some(None)` for any
/// other mapping; `None` when the line is not a header.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn mapping_of(line: &str) -> Option<Option<(u64, u64)>> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
    );
    let perms = fields.next()?;
    if perms.len() != 4 {
        return None;
    }
    let (_offset, _dev, inode) = (fields.next()?, fields.next()?, fields.next()?);
    let file = inode != "0" && fields.next().is_some_and(|path| path.starts_with('/'));
    let read_only = matches!(perms, "r--p" | "r-xp");
    Some((file && read_only && end > start).then_some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether glibc serves a block of `size` bytes as a mapping of its own (the `IS_MMAPPED`
    /// bit of the chunk's size field, the word before the block). A block above the threshold
    /// still comes from the arena when a free chunk or the arena's top holds it: the trim
    /// threshold keeps the top small.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn mapped(size: usize) -> bool {
        // SAFETY: a block from malloc, its header word read (glibc keeps it there) and the
        // block freed once.
        unsafe {
            let p = libc::malloc(size);
            assert!(!p.is_null());
            let head = p.cast::<usize>().sub(1).read();
            libc::free(p);
            head & 2 != 0
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_large_block_stays_a_mapping_of_its_own_after_a_larger_one_was_freed() {
        fix_thresholds();
        // Freeing a mapped 8 MiB block raises glibc's mmap threshold to 8 MiB by default.
        let big = vec![1u8; 8 << 20];
        drop(std::hint::black_box(big));
        assert!(mapped(3 << 20), "a 3 MiB block came from the arena");
    }

    const SMAPS: &str = "\
55bf71164000-55bf71744000 r--p 00000000 00:2a 123 /usr/bin/guardian
Size:               6016 kB
Rss:                3248 kB
Anonymous:             0 kB
55bf71744000-55bf724e3000 r-xp 005e0000 00:2a 123 /usr/bin/guardian
Size:              13948 kB
Anonymous:             0 kB
55bf724e3000-55bf7258b000 r--p 0137f000 00:2a 123 /usr/bin/guardian
Anonymous:           672 kB
55bf7258b000-55bf7258d000 rw-p 01427000 00:2a 123 /usr/bin/guardian
Anonymous:             8 kB
55bf8268d000-55bf85c3d000 rw-p 00000000 00:00 0 [heap]
Anonymous:         12884 kB
7fe4bb7e1000-7fe4bb937000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7fe4bb937000-7fe4bb93b000 r--p 00170000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:            16 kB
7fe4bb940000-7fe4bb950000 r--p 00000000 00:00 0
Anonymous:             0 kB
7fe4bb950000-7fe4bb953000 r--s 00001000 00:10 26 anon_inode:bpf-map
Anonymous:             0 kB
7fe4bb960000-7fe4bb970000 r--s 00000000 00:01 77 /SYSV00000000 (deleted)
Anonymous:             0 kB
7fe4bb9ad000-7fe4bba21000 r-xp 00000000 00:2a 124 /usr/bin/guardian with space (deleted)
Anonymous:             0 kB
7ffd6b5f3000-7ffd6b5f5000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_read_only_file_pages_without_copies_are_dropped() {
        assert_eq!(
            unshared_ranges(SMAPS),
            vec![
                (0x55bf71164000, 0x55bf71744000),
                (0x55bf71744000, 0x55bf724e3000),
                (0x7fe4bb7e1000, 0x7fe4bb937000),
                (0x7fe4bb9ad000, 0x7fe4bba21000)
            ],
            "the binary's and libc's code and constants, a replaced binary's too; not \
             relocated read-only data (it has copied pages), not writable data, not the heap, \
             not anonymous read-only memory, not shared mappings, not the vDSO"
        );
        assert!(unshared_ranges("garbage\nAnonymous: 0 kB\n").is_empty());
        assert!(unshared_ranges("").is_empty());
    }

    #[test]
    fn gives_back_over_the_polls_after_a_burst_then_once_a_minute() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut schedule = Schedule::new();
        let polls: Vec<bool> = (0..24).map(|i| schedule.due(at(i * 5))).collect();
        // Start-up: six polls in a row; then the next at 60 s after the last of them (25 s).
        let expected: Vec<bool> = (0..24).map(|i| i < 6 || i == 17).collect();
        assert_eq!(polls, expected);
        schedule.burst();
        assert!((0..6).all(|i| schedule.due(at(200 + i))));
        assert!(!schedule.due(at(206)));
        assert!(!schedule.due(at(264)));
        assert!(schedule.due(at(265)));
        schedule.soon();
        assert!(schedule.due(at(266)), "soon: at the end of this poll");
        assert!(!schedule.due(at(271)), "once");
        // A clock that goes backwards does not make it due.
        assert!(!schedule.due(at(100)));
    }
}
