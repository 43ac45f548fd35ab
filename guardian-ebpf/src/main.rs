//! Guardian's kernel probe: counts, per registered project directory, the bytes the write
//! family writes, the bytes copy_file_range/sendfile copy in and the bytes fallocate reserves,
//! per CPU, plus per (cgroup, project). No event per write reaches userspace; userspace reads
//! the maps on a short cadence. It never changes anything in the kernel beyond its own maps.
//!
//! The enter hook of each syscall resolves the fd to its file (`current->files->fdt->fd[fd]`),
//! looks the file's inode up in a cache, and on a miss walks `d_parent` (bounded) to the first
//! registered project dir; only writes into projects leave a `Pending` for the exit hook, which
//! adds the returned byte count. Kernel struct offsets come from userspace (read from BTF).
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_probe_read_kernel,
    },
    macros::{fexit, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{FExitContext, TracePointContext},
};
use guardian_common::{
    CgroupKey, InodeKey, KernelOffsets, Pending, ProjectStats, KIND_COPY, KIND_FALLOCATE,
    KIND_WRITE, MAX_PROJECTS, MAX_WALK_DEPTH,
};

/// Offsets of the running kernel, set by userspace before load.
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
    ready: 0,
    _pad: 0,
};

/// Registered project dirs: (dev, ino) → project id (1..MAX_PROJECTS).
#[map]
static PROJECTS: HashMap<InodeKey, u32> = HashMap::with_max_entries(MAX_PROJECTS, 0);

/// Written inodes already resolved: (dev, ino) → project id, 0 for "in no project".
/// Userspace clears it when the project set changes.
#[map]
static INODE_PROJECT: LruHashMap<InodeKey, u32> = LruHashMap::with_max_entries(65536, 0);

/// Enter → exit hand-over per thread (pid_tgid).
#[map]
static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// Per-CPU counters indexed by project id.
#[map]
static STATS: PerCpuArray<ProjectStats> = PerCpuArray::with_max_entries(MAX_PROJECTS, 0);

/// Per-CPU bytes per (cgroup, project).
#[map]
static CGROUP_BYTES: PerCpuHashMap<CgroupKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Offset of the first syscall argument in a `syscalls/sys_enter_*` record, and of `ret` in
/// `sys_exit_*` (after the 8-byte common header and the 4-byte `__syscall_nr` + padding).
const ARG0: usize = 16;
const ARG: usize = 8;

#[inline(always)]
fn offsets() -> KernelOffsets {
    // SAFETY: a read of our own global; volatile keeps the compiler from folding the zero
    // initialiser that userspace overrides at load time.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
fn read<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad pointer is an error, not a fault.
    unsafe { bpf_probe_read_kernel(addr as *const T).map_err(|e| e as i64) }
}

/// The project id of the file behind `fd` of the current task, or 0.
#[inline(always)]
fn project_of_fd(fd: u64) -> Result<u32, i64> {
    let off = &offsets();
    if off.ready == 0 {
        return Ok(0);
    }
    // SAFETY: helper with no preconditions.
    let task = unsafe { bpf_get_current_task() } as u64;
    let files: u64 = read(task + off.task_files)?;
    let fdt: u64 = read(files + off.files_fdt)?;
    let max_fds: u32 = read(fdt + off.fdtable_max_fds)?;
    if fd >= max_fds as u64 {
        return Ok(0);
    }
    let fd_array: u64 = read(fdt + off.fdtable_fd)?;
    let file: u64 = read(fd_array + fd * 8)?;
    if file == 0 {
        return Ok(0);
    }
    project_of_file(file, off)
}

/// The project id of `struct file *file`, through the inode cache or a bounded `d_parent` walk.
#[inline(always)]
fn project_of_file(file: u64, off: &KernelOffsets) -> Result<u32, i64> {
    let inode: u64 = read(file + off.file_f_inode)?;
    let ino: u64 = read(inode + off.inode_i_ino)?;
    let sb: u64 = read(inode + off.inode_i_sb)?;
    let dev: u32 = read(sb + off.super_block_s_dev)?;
    let key = InodeKey::new(dev as u64, ino);
    // SAFETY: map values are plain integers; a concurrent update is a benign race.
    if let Some(cached) = unsafe { INODE_PROJECT.get(&key) } {
        return Ok(*cached);
    }
    let mut dentry: u64 = read(file + off.file_f_path + off.path_dentry)?;
    let mut project = 0u32;
    for _ in 0..MAX_WALK_DEPTH {
        let d_inode: u64 = read(dentry + off.dentry_d_inode)?;
        if d_inode != 0 {
            let d_ino: u64 = read(d_inode + off.inode_i_ino)?;
            // SAFETY: as above.
            if let Some(id) = unsafe { PROJECTS.get(&InodeKey::new(dev as u64, d_ino)) } {
                project = *id;
                break;
            }
        }
        let parent: u64 = read(dentry + off.dentry_d_parent)?;
        if parent == dentry || parent == 0 {
            break;
        }
        dentry = parent;
    }
    let _ = INODE_PROJECT.insert(&key, &project, 0);
    Ok(project)
}

/// Enter hook body: remember the project of `fd` for the exit hook, if it is in one.
#[inline(always)]
fn enter(ctx: &TracePointContext, fd_arg: usize, kind: u32, hint_arg: Option<usize>) -> u32 {
    // SAFETY: the offsets are those of the sys_enter_* record format (see module doc).
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(ARG0 + fd_arg * ARG) }) else {
        return 0;
    };
    let project = match project_of_fd(fd) {
        Ok(p) if p != 0 && p < MAX_PROJECTS => p,
        _ => return 0,
    };
    let hint = match hint_arg {
        // SAFETY: as above.
        Some(i) => unsafe { ctx.read_at::<u64>(ARG0 + i * ARG) }.unwrap_or(0),
        None => 0,
    };
    let pending = Pending {
        project,
        kind,
        hint,
    };
    let _ = PENDING.insert(&bpf_get_current_pid_tgid(), &pending, 0);
    0
}

/// Exit hook body: add what the call returned to its project's counters.
#[inline(always)]
fn exit(ctx: &TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain integers.
    let Some(pending) = (unsafe { PENDING.get(&id) }).copied() else {
        return 0;
    };
    let _ = PENDING.remove(&id);
    // SAFETY: `ret` of the sys_exit_* record.
    let ret = unsafe { ctx.read_at::<i64>(ARG0) }.unwrap_or(-1);
    let bytes = match pending.kind {
        KIND_FALLOCATE if ret == 0 => pending.hint,
        KIND_FALLOCATE => 0,
        _ if ret > 0 => ret as u64,
        _ => 0,
    };
    if bytes > 0 {
        count(pending.project, pending.kind, bytes);
    }
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
    let key = CgroupKey {
        // SAFETY: helper with no preconditions.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        project,
        _pad: 0,
    };
    match CGROUP_BYTES.get_ptr_mut(&key) {
        // SAFETY: per-CPU value of this CPU.
        Some(total) => unsafe { *total += bytes },
        None => {
            let _ = CGROUP_BYTES.insert(&key, &bytes, 0);
        }
    }
}

macro_rules! syscall_hooks {
    ($enter:ident, $exit:ident, $sys:literal, fd_arg = $fd:expr, kind = $kind:expr, hint_arg = $hint:expr) => {
        #[doc = $sys]
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            enter(&ctx, $fd, $kind, $hint)
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            exit(&ctx)
        }
    };
}

syscall_hooks!(
    enter_write,
    exit_write,
    "sys_enter_write",
    fd_arg = 0,
    kind = KIND_WRITE,
    hint_arg = None
);
syscall_hooks!(
    enter_pwrite64,
    exit_pwrite64,
    "sys_enter_pwrite64",
    fd_arg = 0,
    kind = KIND_WRITE,
    hint_arg = None
);
syscall_hooks!(
    enter_writev,
    exit_writev,
    "sys_enter_writev",
    fd_arg = 0,
    kind = KIND_WRITE,
    hint_arg = None
);
syscall_hooks!(
    enter_pwritev,
    exit_pwritev,
    "sys_enter_pwritev",
    fd_arg = 0,
    kind = KIND_WRITE,
    hint_arg = None
);
syscall_hooks!(
    enter_pwritev2,
    exit_pwritev2,
    "sys_enter_pwritev2",
    fd_arg = 0,
    kind = KIND_WRITE,
    hint_arg = None
);
// fallocate(fd, mode, offset, len)
syscall_hooks!(
    enter_fallocate,
    exit_fallocate,
    "sys_enter_fallocate",
    fd_arg = 0,
    kind = KIND_FALLOCATE,
    hint_arg = Some(3)
);
// copy_file_range(fd_in, off_in, fd_out, off_out, len, flags)
syscall_hooks!(
    enter_copy_file_range,
    exit_copy_file_range,
    "sys_enter_copy_file_range",
    fd_arg = 2,
    kind = KIND_COPY,
    hint_arg = None
);
// sendfile64(out_fd, in_fd, offset, count)
syscall_hooks!(
    enter_sendfile64,
    exit_sendfile64,
    "sys_enter_sendfile64",
    fd_arg = 0,
    kind = KIND_COPY,
    hint_arg = None
);

/// fexit on `vfs_write(file, buf, count, pos)`: the trampoline path where the kernel allows it.
/// One hook sees write and pwrite64 with the file at hand, no enter/exit hand-over needed.
#[fexit(function = "vfs_write")]
pub fn fexit_vfs_write(ctx: FExitContext) -> i32 {
    let file: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(4);
    fexit_count(file, ret, KIND_WRITE);
    0
}

/// fexit on `vfs_writev(file, vec, vlen, pos, flags)` (writev, pwritev, pwritev2).
#[fexit(function = "vfs_writev")]
pub fn fexit_vfs_writev(ctx: FExitContext) -> i32 {
    let file: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(5);
    fexit_count(file, ret, KIND_WRITE);
    0
}

#[inline(always)]
fn fexit_count(file: u64, ret: i64, kind: u32) {
    let off = &offsets();
    if ret <= 0 || off.ready == 0 {
        return;
    }
    if let Ok(project) = project_of_file(file, off) {
        if project != 0 && project < MAX_PROJECTS {
            count(project, kind, ret as u64);
        }
    }
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
