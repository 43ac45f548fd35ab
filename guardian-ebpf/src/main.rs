//! Guardian's kernel probe: counts, per registered project directory, the bytes the write
//! family writes, the bytes copy_file_range/sendfile copy in and the bytes fallocate reserves,
//! per CPU, plus per (cgroup, project). No event per write reaches userspace; userspace reads
//! the maps on a short cadence. It never changes anything in the kernel beyond its own maps.
//!
//! One program per syscall, on its *exit* tracepoint: it reads the return value from the
//! tracepoint record and the fd from the registers the syscall entry saved, so no enter → exit
//! hand-over map is needed. The fd resolves to its `struct file` through
//! `current->files->fdt->fd[fd]`, then to the inode. Where the kernel has `bpf_rdonly_cast`
//! (Linux ≥ 6.2) every step is a typed load the verifier checks against the kernel's BTF, and the
//! saved registers are found at a learned offset from the task's stack; elsewhere the untyped
//! steps use `bpf_probe_read_kernel` and `bpf_task_pt_regs`. The two are separate programs
//! (`exit_<syscall>` and `exit_<syscall>_pr`) from one body with the mode as a compile-time
//! constant; userspace loads one set.
//!
//! A per-CPU write cache, indexed by (fd table, fd), remembers the inode, `css_set` (and so
//! cgroup) and project of the last write there and collects its bytes, so a steady writer costs
//! one slot update per write. A slot that no longer matches moves its bytes to the per-project and per-(cgroup,
//! project) maps and is refilled: from an LRU of resolved inodes, or by walking `d_parent`
//! (bounded) to the first registered project dir. Kernel struct offsets come from userspace (read
//! from BTF) as read-only globals, so the verifier knows them as constants.
//!
//! Project indices are recycled by userspace: each slot remembers the generation of its project
//! index (`GENS`) when it was filled, and bytes whose index has since been given up are dropped,
//! never counted for the index's next project. Every index bytes are moved to is logged per CPU
//! (`MOVED`), so userspace reads only those counters; what the probe cannot store (a full
//! per-cgroup map) is counted in `COUNTERS` and reported.
//!
//! The write countdown: userspace arms, per guarded filesystem, a budget of bytes (its headroom
//! to the next threshold, less a margin) split in equal per-CPU shares (`SETTINGS.budgets`).
//! Every counted write on the filesystem spends from this CPU's share (`WriteCache::spent`, next
//! to the slots), and the write that exhausts it sends one record to userspace through the
//! `WAKE` ring buffer — once per arming and CPU, never per write.
//!
//! Frees, apart from the write path: a BTF tracepoint on `mm_filemap_delete_from_page_cache`
//! sees each page-cache folio leave a file. A folio counts as freed when its file has no link
//! left (unlink, rename over it: the inode is being torn down) or lies wholly beyond the file's
//! end (truncate, ftruncate, `O_TRUNC` set the size before they drop the pages); reclaim and an
//! inode evicted from memory with its file kept meet neither. The file's project comes from the
//! resolution cache the writes filled (its dentry is gone by then), so what is counted is the
//! freeing of files written while the probe watched; the process that loaded the probe
//! (Guardian, whose own deletions are level resets) is left out.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{btf_tracepoint, fexit, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePointContext, FExitContext, TracePointContext},
    EbpfContext,
};
use guardian_common::{
    CgroupKey, FileKey, FsBudget, FsSpent, InodeKey, KernelOffsets, MovedLog, ProbeCounters,
    ProbeSettings, ProjectStats, Resolution, WakeRecord, WriteCache, WriteSlot, KIND_COPY,
    KIND_FALLOCATE, KIND_WRITE, MAX_FS, MAX_PROJECTS, MAX_WALK_DEPTH, MOVED_RING,
    RDONLY_CAST_PLACEHOLDER, WRITE_SLOTS,
};

/// Offsets of the running kernel, set by userspace before load (`.rodata`: frozen, so the
/// verifier reads them as constants and checks every direct load against the kernel's BTF).
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_f_inode: 0,
    file_f_path: 0,
    path_dentry: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    super_block_s_dev: 0,
    dentry_d_parent: 0,
    dentry_d_inode: 0,
    inode_i_generation: 0,
    regs_args: [0; 4],
    task_stack: 0,
    files_fdtab: 0,
    files_fd_array: 0,
    files_fd_array_len: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    folio_flags: 0,
    folio_mapping: 0,
    folio_index: 0,
    folio_flags_1: 0,
    address_space_host: 0,
    inode_i_nlink: 0,
    inode_i_size: 0,
    pg_head: 0,
    page_shift: 0,
    task_se_cfs_rq: 0,
    cfs_rq_rq: 0,
    rq_to_current: 0,
    current_to_top_of_stack: 0,
    ready: 0,
    file_ref_btf_id: 0,
    pt_regs_btf_id: 0,
    task_ref_btf_id: 0,
};

/// The tgid of the process that loaded the probe (Guardian), whose frees are not counted; set
/// by userspace before load (`.rodata`), 0: every process counts.
#[no_mangle]
static OWN_TGID: u32 = 0;

/// Registered project dirs: (dev, ino) → project id (1..MAX_PROJECTS).
#[map]
static PROJECTS: HashMap<InodeKey, u32> = HashMap::with_max_entries(MAX_PROJECTS, 0);

/// Written inodes already resolved: (dev, ino, generation) → project id (0: in no project) and
/// the epoch it was resolved in.
#[map]
static INODE_PROJECT: LruHashMap<FileKey, Resolution> = LruHashMap::with_max_entries(65536, 0);

/// Learned register offset and the project epoch (see `ProbeSettings`): a global in `.bss`,
/// which the probe reaches through a constant address instead of a map lookup.
#[no_mangle]
static mut SETTINGS: ProbeSettings = ProbeSettings {
    regs_delta: 0,
    epoch: 0,
    _pad: 0,
    budgets: [FsBudget {
        dev: 0,
        gen: 0,
        per_cpu: 0,
    }; MAX_FS],
};

/// Wake-ups of the write countdown (one `WakeRecord` per exhausted per-CPU share); userspace
/// blocks on it in a thread of its own.
#[map]
static WAKE: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Per-CPU write cache (see `WriteSlot`).
#[map]
static SLOTS: PerCpuArray<WriteCache> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU bytes moved out of write slots, indexed by project id.
#[map]
static STATS: PerCpuArray<ProjectStats> = PerCpuArray::with_max_entries(MAX_PROJECTS, 0);

/// Per-CPU bytes per (cgroup, project) moved out of write slots. Userspace prunes entries of
/// vanished projects and idle ones.
#[map]
static CGROUP_BYTES: PerCpuHashMap<CgroupKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Generation of each project index, bumped by userspace when the index's project vanishes.
#[map]
static GENS: Array<u32> = Array::with_max_entries(MAX_PROJECTS, 0);

/// Per-CPU log of the indices bytes were moved to (see `MovedLog`).
#[map]
static MOVED: PerCpuArray<MovedLog> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters of what could not be stored (see `ProbeCounters`).
#[map]
static COUNTERS: PerCpuArray<ProbeCounters> = PerCpuArray::with_max_entries(1, 0);

/// Offset of `ret` in a `syscalls/sys_exit_*` record (after the 8-byte common header and the
/// 4-byte `__syscall_nr` + padding).
const EXIT_RET: usize = 16;

/// Highest fd the probe resolves (the kernel's default `fs.nr_open` is 2^20); it also bounds the
/// fd-array index for the verifier.
const MAX_FD: u64 = 1 << 20;

/// Bound of a learned `regs_delta` (a kernel stack is 16 KiB, 32 KiB with KASAN).
const MAX_REGS_DELTA: u64 = 1 << 20;
/// Bound on the learned distance from the top of a task's stack down to its saved registers
/// (`pt_regs` and the padding above it: under 200 bytes on x86-64).
const MAX_REGS_BELOW_TOP: u64 = 4096;

/// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE`: fallocate modes that free space.
const FALLOC_FREES: u64 = 0x02 | 0x08;

/// Reads one offset of the running kernel; volatile so the compiler keeps the load from the
/// frozen global instead of folding the zero initialiser that userspace overrides.
macro_rules! off {
    ($($field:tt)+) => {
        // SAFETY: a read of our own read-only global.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!(OFFSETS.$($field)+)) }
    };
}

mod kernel;
use kernel::*;

/// The write-cache slot of (`task` writing through its fd table `files`, `fd`) on this CPU.
#[inline(always)]
fn slot_index(task: u64, files: u64, fd: u64) -> usize {
    // The verifier allows no shift of a kernel pointer, but the difference of two is a number.
    // Tasks and fd tables are objects of several hundred bytes: bits 10.. of the distance
    // between a task and its table differ between the processes a CPU sees at once.
    ((files.wrapping_sub(task) >> 10) ^ fd) as usize & (WRITE_SLOTS - 1)
}

/// What a write is made of, for the write cache.
struct Written {
    task: u64,
    file: u64,
    kind: u32,
    bytes: u64,
}

/// Counts one write into `file` in this CPU's write cache: through the slot at `index` (or one
/// picked by inode when the fd is unknown).
#[inline(always)]
fn account<const TYPED: bool>(
    w: Written,
    cache: &mut WriteCache,
    index: Option<usize>,
    settings: &ProbeSettings,
) {
    let inode: u64 = kernel_read::<TYPED, _>(w.file, off!(file_f_inode));
    if inode == 0 {
        return;
    }
    let ino: u64 = kernel_read::<TYPED, _>(inode, off!(inode_i_ino));
    let generation: u32 = kernel_read::<TYPED, _>(inode, off!(inode_i_generation));
    let css_set: u64 = load(w.task, off!(task_cgroups));
    let index =
        index.unwrap_or((ino ^ (ino >> 8) ^ generation as u64) as usize) & (WRITE_SLOTS - 1);
    let (Some(slot), Some(cgroup)) = (cache.slots.get_mut(index), cache.cgroups.get_mut(index))
    else {
        return;
    };
    let epoch = settings.epoch;
    let hit = slot.inode == inode
        && slot.ino == ino
        && slot.generation == generation
        && slot.css_set == css_set
        && slot.epoch == epoch;
    if !hit {
        move_out(slot, *cgroup);
        let dev = dev_of(inode).unwrap_or(0);
        let mut project = resolve(w.file, dev, ino, generation, epoch).unwrap_or(0);
        if project >= MAX_PROJECTS {
            project = 0;
        }
        *cgroup = cgroup_of(css_set);
        slot.inode = inode;
        slot.ino = ino;
        slot.generation = generation;
        slot.css_set = css_set;
        slot.epoch = epoch;
        slot.project = project as u16;
        slot.fs = fs_index(settings, dev);
        slot.owner_gen = gen_of(project);
    }
    if slot.project != 0 {
        match w.kind {
            KIND_WRITE => slot.written += w.bytes,
            KIND_COPY => slot.copied += w.bytes,
            _ => slot.allocated += w.bytes,
        }
    }
    let fs = slot.fs as usize;
    if fs != 0 {
        count_down(&mut cache.spent, fs, w.bytes, settings);
    }
}

/// The countdown index of filesystem `dev` (0: not armed).
#[inline(always)]
fn fs_index(settings: &ProbeSettings, dev: u32) -> u16 {
    if dev == 0 {
        return 0;
    }
    for i in 1..MAX_FS {
        if let Some(budget) = settings.budgets.get(i) {
            if budget.dev == dev {
                return i as u16;
            }
        }
    }
    0
}

/// Spends `bytes` of this CPU's share of filesystem `fs`'s budget; the write that exhausts the
/// share wakes userspace (once per arming: `fired`).
#[inline(always)]
fn count_down(spent: &mut [FsSpent; MAX_FS], fs: usize, bytes: u64, settings: &ProbeSettings) {
    let (Some(budget), Some(mine)) = (settings.budgets.get(fs), spent.get_mut(fs)) else {
        return;
    };
    // SAFETY: a field of our own global, which userspace rewrites while the probe runs.
    let gen = unsafe { core::ptr::read_volatile(&budget.gen) };
    if mine.gen != gen {
        mine.gen = gen;
        mine.spent = 0;
        mine.fired = 0;
    }
    mine.spent += bytes;
    if mine.fired == 0 && gen != 0 && mine.spent >= budget.per_cpu {
        mine.fired = 1;
        let wake = WakeRecord {
            dev: budget.dev,
            gen,
            spent: mine.spent,
        };
        let _ = WAKE.output::<WakeRecord>(wake, 0);
    }
}

/// The current generation of project index `project` (0 for index 0 or one out of range).
#[inline(always)]
fn gen_of(project: u32) -> u32 {
    if project == 0 || project >= MAX_PROJECTS {
        return 0;
    }
    GENS.get(project).copied().unwrap_or(0)
}

/// Adds to this CPU's counters of what could not be stored.
#[inline(always)]
fn count_problem(update: impl FnOnce(&mut ProbeCounters)) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: this CPU's value; programs do not nest on one CPU.
        update(unsafe { &mut *counters });
    }
}

/// Logs that `project`'s counters changed on this CPU (see `MovedLog`).
#[inline(always)]
fn log_moved(project: u32) {
    let Some(log) = MOVED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value; programs do not nest on one CPU.
    let log = unsafe { &mut *log };
    if log.last == project {
        return;
    }
    let count = log.count;
    if let Some(entry) = log.ids.get_mut(count as usize & (MOVED_RING - 1)) {
        *entry = project;
    }
    log.last = project;
    // SAFETY: a field of this CPU's value, written after the entry it covers.
    unsafe { core::ptr::write_volatile(&mut log.count, count + 1) };
}

/// Moves a slot's bytes to the per-project and per-(cgroup, project) maps: zeroes the slot
/// first, so a userspace read (maps, then slots) can miss them once but never count them twice.
/// Bytes of a project index given up since the slot was filled are dropped.
#[inline(always)]
fn move_out(slot: &mut WriteSlot, cgroup: u64) {
    let (written, copied, allocated) = (slot.written, slot.copied, slot.allocated);
    let total = written + copied + allocated;
    let project = slot.project as u32;
    if total == 0 || project == 0 || project >= MAX_PROJECTS {
        return;
    }
    // SAFETY: fields of this CPU's slot.
    unsafe {
        core::ptr::write_volatile(&mut slot.written, 0);
        core::ptr::write_volatile(&mut slot.copied, 0);
        core::ptr::write_volatile(&mut slot.allocated, 0);
    }
    if gen_of(project) != slot.owner_gen {
        count_problem(|c| c.stale_bytes_dropped += total);
        return;
    }
    log_moved(project);
    if let Some(stats) = STATS.get_ptr_mut(project) {
        // SAFETY: this CPU's counters.
        let stats = unsafe { &mut *stats };
        stats.written += written;
        stats.copied += copied;
        stats.allocated += allocated;
    }
    let key = CgroupKey {
        cgroup,
        project,
        _pad: 0,
    };
    match CGROUP_BYTES.get_ptr_mut(&key) {
        // SAFETY: this CPU's value.
        Some(bytes) => unsafe { *bytes += total },
        None => {
            if CGROUP_BYTES.insert(&key, &total, 0).is_err() {
                count_problem(|c| {
                    c.cgroup_insert_failures += 1;
                    c.cgroup_bytes_lost += total;
                });
            }
        }
    }
}

/// The project of an inode: from the LRU of resolved inodes (this epoch's), else by walking
/// `d_parent` from the file's dentry.
#[inline(always)]
fn resolve(file: u64, dev: u32, ino: u64, generation: u32, epoch: u32) -> Result<u32, i64> {
    let key = FileKey {
        ino,
        dev,
        generation,
    };
    // SAFETY: map values are plain integers; a concurrent update is a benign race.
    if let Some(known) = unsafe { INODE_PROJECT.get(&key) } {
        if known.epoch == epoch {
            return Ok(known.project);
        }
    }
    let project = walk_to_project(file, dev as u64)?;
    let resolution = Resolution {
        project,
        epoch,
        gen: gen_of(project),
        _pad: 0,
    };
    let _ = INODE_PROJECT.insert(&key, &resolution, 0);
    Ok(project)
}

/// Walks `d_parent` from the file's dentry to the first registered project dir (bounded).
#[inline(always)]
fn walk_to_project(file: u64, dev: u64) -> Result<u32, i64> {
    let mut dentry: u64 = read(file + off!(file_f_path) + off!(path_dentry))?;
    for _ in 0..MAX_WALK_DEPTH {
        let d_inode: u64 = read(dentry + off!(dentry_d_inode))?;
        if d_inode != 0 {
            let d_ino: u64 = read(d_inode + off!(inode_i_ino))?;
            // SAFETY: as above.
            if let Some(id) = unsafe { PROJECTS.get(&InodeKey::new(dev, d_ino)) } {
                return Ok(*id);
            }
        }
        let parent: u64 = read(dentry + off!(dentry_d_parent))?;
        if parent == dentry || parent == 0 {
            break;
        }
        dentry = parent;
    }
    Ok(0)
}

/// Counts into the file behind argument `FD_ARG` of the current syscall the bytes `bytes`
/// computes from the saved registers (0: nothing to count, e.g. a fallocate that frees space).
#[inline(always)]
fn account_syscall<const FD_ARG: usize, const TYPED: bool>(
    kind: u32,
    bytes: impl FnOnce(u64) -> u64,
) {
    if off!(ready) == 0 {
        return;
    }
    let Some(cache) = write_cache() else {
        return;
    };
    let task = if TYPED {
        current_task_cached(cache)
    } else {
        current_task()
    };
    let settings = settings();
    let regs = saved_regs::<TYPED>(task, cache, settings);
    let bytes = bytes(regs);
    if bytes == 0 {
        return;
    }
    let fd = syscall_arg::<FD_ARG>(regs);
    let files: u64 = load(task, off!(task_files));
    if files == 0 {
        return;
    }
    let file = file_of_fd::<TYPED>(files, fd);
    if file == 0 {
        return;
    }
    let w = Written {
        task,
        file,
        kind,
        bytes,
    };
    account::<TYPED>(w, cache, Some(slot_index(task, files, fd)), settings);
}

/// Exit of a call that returns the bytes it wrote or copied into argument `FD`'s file.
#[inline(always)]
fn exit_counting_ret<const FD: usize, const TYPED: bool>(
    ctx: &TracePointContext,
    kind: u32,
) -> u32 {
    let ret = exit_ret(ctx);
    if ret > 0 {
        account_syscall::<FD, TYPED>(kind, |_| ret as u64);
    }
    0
}

/// Exit of `fallocate(fd, mode, offset, len)`: a success reserves `len` bytes unless the mode
/// frees space.
#[inline(always)]
fn exit_fallocate_body<const TYPED: bool>(ctx: &TracePointContext) -> u32 {
    if exit_ret(ctx) == 0 {
        account_syscall::<0, TYPED>(KIND_FALLOCATE, |regs| {
            if syscall_arg::<1>(regs) & FALLOC_FREES != 0 {
                0
            } else {
                syscall_arg::<3>(regs)
            }
        });
    }
    0
}

/// fexit body: the kernel hands over the file; there is no fd, so the slot is picked by inode.
#[inline(always)]
fn fexit_account(file: u64, ret: i64) {
    if ret <= 0 || file == 0 || off!(ready) == 0 {
        return;
    }
    let Some(cache) = write_cache() else {
        return;
    };
    let settings = settings();
    let w = Written {
        task: current_task_cached(cache),
        file,
        kind: KIND_WRITE,
        bytes: ret as u64,
    };
    // The kernel hands fexit programs the file as a BTF pointer: always typed loads.
    account::<true>(w, cache, None, settings);
}

/// Two exit-tracepoint programs per syscall that returns a byte count into argument `fd`'s file:
/// `exit_<syscall>` reads the file and inode with typed loads (kernels with `bpf_rdonly_cast`),
/// `exit_<syscall>_pr` with probe reads. Userspace loads one set.
macro_rules! exit_hook {
    ($name:ident, $probe_read:ident, $event:literal, fd_arg = $fd:literal, kind = $kind:expr) => {
        #[doc = concat!("`syscalls/", $event, "`, typed loads")]
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            exit_counting_ret::<$fd, true>(&ctx, $kind)
        }

        #[doc = concat!("`syscalls/", $event, "`, probe reads")]
        #[tracepoint]
        pub fn $probe_read(ctx: TracePointContext) -> u32 {
            exit_counting_ret::<$fd, false>(&ctx, $kind)
        }
    };
}

exit_hook!(
    exit_write,
    exit_write_pr,
    "sys_exit_write",
    fd_arg = 0,
    kind = KIND_WRITE
);
exit_hook!(
    exit_pwrite64,
    exit_pwrite64_pr,
    "sys_exit_pwrite64",
    fd_arg = 0,
    kind = KIND_WRITE
);
exit_hook!(
    exit_writev,
    exit_writev_pr,
    "sys_exit_writev",
    fd_arg = 0,
    kind = KIND_WRITE
);
exit_hook!(
    exit_pwritev,
    exit_pwritev_pr,
    "sys_exit_pwritev",
    fd_arg = 0,
    kind = KIND_WRITE
);
exit_hook!(
    exit_pwritev2,
    exit_pwritev2_pr,
    "sys_exit_pwritev2",
    fd_arg = 0,
    kind = KIND_WRITE
);
// copy_file_range(fd_in, off_in, fd_out, off_out, len, flags)
exit_hook!(
    exit_copy_file_range,
    exit_copy_file_range_pr,
    "sys_exit_copy_file_range",
    fd_arg = 2,
    kind = KIND_COPY
);
// sendfile64(out_fd, in_fd, offset, count)
exit_hook!(
    exit_sendfile64,
    exit_sendfile64_pr,
    "sys_exit_sendfile64",
    fd_arg = 0,
    kind = KIND_COPY
);

/// `syscalls/sys_exit_fallocate`, typed loads
#[tracepoint]
pub fn exit_fallocate(ctx: TracePointContext) -> u32 {
    exit_fallocate_body::<true>(&ctx)
}

/// `syscalls/sys_exit_fallocate`, probe reads
#[tracepoint]
pub fn exit_fallocate_pr(ctx: TracePointContext) -> u32 {
    exit_fallocate_body::<false>(&ctx)
}

/// fexit on `vfs_write(file, buf, count, pos)`: the trampoline path where the kernel allows it.
/// One hook sees write and pwrite64 with the file at hand.
#[fexit(function = "vfs_write")]
pub fn fexit_vfs_write(ctx: FExitContext) -> i32 {
    fexit_account(ctx.arg(0), ctx.arg(4));
    0
}

/// fexit on `vfs_writev(file, vec, vlen, pos, flags)` (writev, pwritev, pwritev2).
#[fexit(function = "vfs_writev")]
pub fn fexit_vfs_writev(ctx: FExitContext) -> i32 {
    fexit_account(ctx.arg(0), ctx.arg(5));
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

/// An empty program for benchmarks: attached to the same tracepoints as the probe, it measures
/// the floor cost of merely having a BPF program on those hooks (`cargo xtask bench`).
#[tracepoint]
pub fn noop(_ctx: TracePointContext) -> u32 {
    0
}

mod free;
