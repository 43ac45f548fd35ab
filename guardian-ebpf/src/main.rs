//! Guardian's kernel probe: counts, per registered project directory, the bytes the write
//! family writes, the bytes copy_file_range/sendfile copy in and the bytes fallocate reserves,
//! per CPU, plus per (cgroup, project). No event per write reaches userspace; userspace reads
//! the maps on a short cadence. It never changes anything in the kernel beyond its own maps.
//!
//! One program per syscall, on its *exit* tracepoint: it reads the return value from the
//! tracepoint record and the fd from the registers the syscall entry saved (`bpf_task_pt_regs`),
//! so no enter → exit hand-over map is needed. The fd resolves to its `struct file` through
//! `current->files->fdt->fd[fd]` with direct (BTF-typed) loads; a per-CPU direct-mapped cache of
//! recently written files answers the project of a file seen before, checked against the file's
//! inode and its generation; on a miss the inode's (dev, ino, generation) is looked up in an LRU
//! cache and, failing that, `d_parent` is walked (bounded) to the first registered project dir.
//! Per-project bytes go to per-CPU counters; per-(cgroup, project) bytes accumulate in a per-CPU
//! slot that reaches a hash map only when the pair changes. Kernel struct offsets come from
//! userspace (read from BTF) as read-only globals, so the verifier knows them as constants.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{fexit, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{FExitContext, TracePointContext},
};
use guardian_common::{
    CgroupKey, CgroupSlot, FileKey, FileSlot, InodeKey, KernelOffsets, ProjectStats,
    FILE_CACHE_SLOTS, KIND_COPY, KIND_FALLOCATE, KIND_WRITE, MAX_PROJECTS, MAX_WALK_DEPTH,
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
    ready: 0,
    _pad: 0,
};

/// Registered project dirs: (dev, ino) → project id (1..MAX_PROJECTS).
#[map]
static PROJECTS: HashMap<InodeKey, u32> = HashMap::with_max_entries(MAX_PROJECTS, 0);

/// Written inodes already resolved: (dev, ino, generation) → project id, 0 for "in no project".
/// Userspace clears it when the project set changes.
#[map]
static INODE_PROJECT: LruHashMap<FileKey, u32> = LruHashMap::with_max_entries(65536, 0);

/// Per-CPU direct-mapped cache of recently written files (see `FileSlot`). Userspace clears it
/// with `INODE_PROJECT`.
#[map]
static FILE_CACHE: PerCpuArray<FileSlot> = PerCpuArray::with_max_entries(FILE_CACHE_SLOTS, 0);

/// Per-CPU counters indexed by project id.
#[map]
static STATS: PerCpuArray<ProjectStats> = PerCpuArray::with_max_entries(MAX_PROJECTS, 0);

/// Per-CPU bytes of the last (cgroup, project) pair written on each CPU.
#[map]
static CGROUP_SLOT: PerCpuArray<CgroupSlot> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU bytes per (cgroup, project), flushed from `CGROUP_SLOT` when the pair changes.
#[map]
static CGROUP_BYTES: PerCpuHashMap<CgroupKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Offset of `ret` in a `syscalls/sys_exit_*` record (after the 8-byte common header and the
/// 4-byte `__syscall_nr` + padding).
const EXIT_RET: usize = 16;

/// Highest fd the probe resolves (the kernel's default `fs.nr_open` is 2^20); it also bounds the
/// fd-array index for the verifier.
const MAX_FD: u64 = 1 << 20;

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

/// A direct load from a BTF-typed kernel pointer at a constant offset; the verifier checks it
/// against the kernel's type and turns it into a fault-tolerant load.
#[inline(always)]
fn load<T: Copy>(base: u64, offset: u64) -> T {
    // SAFETY: `base` is a BTF pointer the verifier tracks; a bad address reads as zero.
    unsafe { core::ptr::read_volatile((base + offset) as *const T) }
}

/// A checked read of kernel memory at an address the verifier cannot type.
#[inline(always)]
fn read<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad pointer is an error, not a fault.
    unsafe { bpf_probe_read_kernel(addr as *const T).map_err(|e| e as i64) }
}

/// Syscall argument `N` (0..4) of the current task, from the registers its syscall entry saved.
#[inline(always)]
fn syscall_arg<const N: usize>(regs: u64) -> u64 {
    load::<u64>(regs, off!(regs_args[N]))
}

/// The current task and its saved user registers (both BTF pointers).
#[inline(always)]
fn current_task_and_regs() -> (u64, u64) {
    // SAFETY: helpers with no preconditions; the task pointer is trusted.
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as u64;
        (task as u64, regs)
    }
}

/// The `struct file *` behind `fd` of `task`, or 0.
#[inline(always)]
fn file_of_fd(task: u64, fd: u64) -> u64 {
    let files: u64 = load(task, off!(task_files));
    if files == 0 {
        return 0;
    }
    let fdt: u64 = load(files, off!(files_fdt));
    if fdt == 0 {
        return 0;
    }
    let max_fds: u32 = load(fdt, off!(fdtable_max_fds));
    if fd >= max_fds as u64 || fd >= MAX_FD {
        return 0;
    }
    let fd_array: u64 = load(fdt, off!(fdtable_fd));
    read::<u64>(fd_array + fd * 8).unwrap_or(0)
}

/// The project id of `struct file *file`, or 0: through the per-CPU file cache, then the inode
/// cache, then a bounded `d_parent` walk.
#[inline(always)]
fn project_of_file(file: u64) -> Result<u32, i64> {
    let inode: u64 = read(file + off!(file_f_inode))?;
    let generation: u32 = read(inode + off!(inode_i_generation))?;
    let index = (((file >> 8) ^ (file >> 16)) as u32) & (FILE_CACHE_SLOTS - 1);
    let slot = FILE_CACHE.get_ptr_mut(index).ok_or(0i64)?;
    // SAFETY: this CPU's slot; no other program touches it while this one runs.
    let slot = unsafe { &mut *slot };
    if slot.file == file && slot.inode == inode && slot.generation == generation {
        return Ok(slot.project);
    }
    let project = project_of_inode(file, inode, generation)?;
    *slot = FileSlot {
        file,
        inode,
        generation,
        project,
    };
    Ok(project)
}

/// Slow path of `project_of_file`: the inode cache, then the `d_parent` walk.
#[inline(always)]
fn project_of_inode(file: u64, inode: u64, generation: u32) -> Result<u32, i64> {
    let ino: u64 = read(inode + off!(inode_i_ino))?;
    let sb: u64 = read(inode + off!(inode_i_sb))?;
    let dev: u32 = read(sb + off!(super_block_s_dev))?;
    let key = FileKey {
        ino,
        dev,
        generation,
    };
    // SAFETY: map values are plain integers; a concurrent update is a benign race.
    if let Some(cached) = unsafe { INODE_PROJECT.get(&key) } {
        return Ok(*cached);
    }
    let project = walk_to_project(file, dev as u64)?;
    let _ = INODE_PROJECT.insert(&key, &project, 0);
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

/// Exit hook body: `ret` is the syscall's result, `fd` its target fd, `len` the fallocate length.
#[inline(always)]
fn on_exit(file: u64, kind: u32, bytes: u64) {
    if file == 0 || bytes == 0 || off!(ready) == 0 {
        return;
    }
    match project_of_file(file) {
        Ok(project) if project != 0 && project < MAX_PROJECTS => count(project, kind, bytes),
        _ => {}
    }
}

/// The syscall's return value from a `sys_exit_*` record.
#[inline(always)]
fn exit_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: `ret` of the sys_exit_* record format (see EXIT_RET).
    unsafe { ctx.read_at::<i64>(EXIT_RET) }.unwrap_or(-1)
}

/// Exit of a call that returns the bytes it wrote or copied into argument `FD`'s file.
#[inline(always)]
fn exit_counting_ret<const FD: usize>(ctx: &TracePointContext, kind: u32) -> u32 {
    let ret = exit_ret(ctx);
    if ret <= 0 {
        return 0;
    }
    let (task, regs) = current_task_and_regs();
    let fd = syscall_arg::<FD>(regs);
    on_exit(file_of_fd(task, fd), kind, ret as u64);
    0
}

/// Exit of `fallocate(fd, mode, offset, len)`: a success reserves `len` bytes unless the mode
/// frees space.
#[inline(always)]
fn exit_fallocate_body(ctx: &TracePointContext) -> u32 {
    if exit_ret(ctx) != 0 {
        return 0;
    }
    let (task, regs) = current_task_and_regs();
    if syscall_arg::<1>(regs) & FALLOC_FREES != 0 {
        return 0;
    }
    let len = syscall_arg::<3>(regs);
    on_exit(
        file_of_fd(task, syscall_arg::<0>(regs)),
        KIND_FALLOCATE,
        len,
    );
    0
}

#[inline(always)]
fn count(project: u32, kind: u32, bytes: u64) {
    if let Some(stats) = STATS.get_ptr_mut(project) {
        // SAFETY: a per-CPU slot only this CPU writes while this program runs.
        let stats = unsafe { &mut *stats };
        match kind {
            KIND_WRITE => stats.written += bytes,
            KIND_COPY => stats.copied += bytes,
            _ => stats.allocated += bytes,
        }
        stats.calls += 1;
    }
    // SAFETY: helper with no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let Some(slot) = CGROUP_SLOT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let slot = unsafe { &mut *slot };
    if slot.cgroup == cgroup && slot.project == project {
        slot.bytes += bytes;
        return;
    }
    flush_cgroup_slot(slot);
    *slot = CgroupSlot {
        cgroup,
        bytes,
        project,
        _pad: 0,
    };
}

/// Moves a slot's bytes into the per-(cgroup, project) hash (before the slot is reused;
/// userspace reads the hash before the slots, so a racing read misses bytes for one sample at
/// most and never counts them twice).
#[inline(always)]
fn flush_cgroup_slot(slot: &CgroupSlot) {
    if slot.bytes == 0 {
        return;
    }
    let key = CgroupKey {
        cgroup: slot.cgroup,
        project: slot.project,
        _pad: 0,
    };
    match CGROUP_BYTES.get_ptr_mut(&key) {
        // SAFETY: per-CPU value of this CPU.
        Some(total) => unsafe { *total += slot.bytes },
        None => {
            let _ = CGROUP_BYTES.insert(&key, &slot.bytes, 0);
        }
    }
}

/// One exit-tracepoint program per syscall that returns a byte count into argument `fd`'s file.
macro_rules! exit_hook {
    ($name:ident, $event:literal, fd_arg = $fd:literal, kind = $kind:expr) => {
        #[doc = concat!("`syscalls/", $event, "`")]
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            exit_counting_ret::<$fd>(&ctx, $kind)
        }
    };
}

exit_hook!(exit_write, "sys_exit_write", fd_arg = 0, kind = KIND_WRITE);
exit_hook!(
    exit_pwrite64,
    "sys_exit_pwrite64",
    fd_arg = 0,
    kind = KIND_WRITE
);
exit_hook!(
    exit_writev,
    "sys_exit_writev",
    fd_arg = 0,
    kind = KIND_WRITE
);
exit_hook!(
    exit_pwritev,
    "sys_exit_pwritev",
    fd_arg = 0,
    kind = KIND_WRITE
);
exit_hook!(
    exit_pwritev2,
    "sys_exit_pwritev2",
    fd_arg = 0,
    kind = KIND_WRITE
);
// copy_file_range(fd_in, off_in, fd_out, off_out, len, flags)
exit_hook!(
    exit_copy_file_range,
    "sys_exit_copy_file_range",
    fd_arg = 2,
    kind = KIND_COPY
);
// sendfile64(out_fd, in_fd, offset, count)
exit_hook!(
    exit_sendfile64,
    "sys_exit_sendfile64",
    fd_arg = 0,
    kind = KIND_COPY
);

/// `syscalls/sys_exit_fallocate`
#[tracepoint]
pub fn exit_fallocate(ctx: TracePointContext) -> u32 {
    exit_fallocate_body(&ctx)
}

/// fexit on `vfs_write(file, buf, count, pos)`: the trampoline path where the kernel allows it.
/// One hook sees write and pwrite64 with the file at hand.
#[fexit(function = "vfs_write")]
pub fn fexit_vfs_write(ctx: FExitContext) -> i32 {
    let file: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(4);
    if ret > 0 {
        on_exit(file, KIND_WRITE, ret as u64);
    }
    0
}

/// fexit on `vfs_writev(file, vec, vlen, pos, flags)` (writev, pwritev, pwritev2).
#[fexit(function = "vfs_writev")]
pub fn fexit_vfs_writev(ctx: FExitContext) -> i32 {
    let file: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(5);
    if ret > 0 {
        on_exit(file, KIND_WRITE, ret as u64);
    }
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
