//! Reading the running kernel: typed loads from BTF pointers, probe reads where the verifier
//! cannot type an address, the task's saved syscall registers and arguments, the `struct file`
//! behind an fd, a `css_set`'s cgroup id, an inode's device and a syscall's return value. Every
//! offset comes from userspace (`OFFSETS`, read from the kernel's BTF).

use super::*;

/// A direct load from a BTF-typed kernel pointer at a constant offset; the verifier checks it
/// against the kernel's type and turns it into a fault-tolerant load.
#[inline(always)]
pub(super) fn load<T: Copy>(base: u64, offset: u64) -> T {
    // SAFETY: `base` is a BTF pointer the verifier tracks; a bad address reads as zero.
    unsafe { core::ptr::read_volatile((base + offset) as *const T) }
}

/// A checked read of kernel memory at an address the verifier cannot type.
#[inline(always)]
pub(super) fn read<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad pointer is an error, not a fault.
    unsafe { bpf_probe_read_kernel(addr as *const T).map_err(|e| e as i64) }
}

/// `bpf_rdonly_cast(addr, btf_id)`: `addr` as an untrusted pointer to BTF type `btf_id`, whose
/// loads the JIT turns into fault-tolerant ones. Userspace rewrites the placeholder call (see
/// `RDONLY_CAST_PLACEHOLDER`); the kernel inlines the kfunc into a register move.
#[inline(always)]
pub(super) fn rdonly_cast(addr: u64, btf_id: u32) -> u64 {
    // SAFETY: a call the loader rewrites into the kfunc; it only retypes `addr`.
    unsafe {
        let cast: unsafe extern "C" fn(u64, u32) -> u64 =
            core::mem::transmute(RDONLY_CAST_PLACEHOLDER as usize);
        cast(addr, btf_id)
    }
}

/// A BTF pointer's value as a number the verifier lets the probe compute with: its distance
/// from a pointer of BTF type `btf_id` whose value is 0 (the difference of two pointers is a
/// number; a pointer cannot be shifted or subtracted from a number).
#[inline(always)]
pub(super) fn as_number(pointer: u64, btf_id: u32) -> u64 {
    pointer.wrapping_sub(rdonly_cast(0, btf_id))
}

/// A `T` at `base + offset` of kernel memory: a typed load when `TYPED` (where `base` is a BTF
/// pointer), else a probe read; 0 when the memory cannot be read.
#[inline(always)]
pub(super) fn kernel_read<const TYPED: bool, T: Copy + Default>(base: u64, offset: u64) -> T {
    if TYPED {
        load(base, offset)
    } else {
        read(base + offset).unwrap_or_default()
    }
}

/// The current task (a trusted BTF pointer), from the helper.
#[inline(always)]
pub(super) fn current_task() -> u64 {
    // SAFETY: helper with no preconditions.
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// This CPU's write cache.
#[inline(always)]
pub(super) fn write_cache() -> Option<&'static mut WriteCache> {
    // SAFETY: this CPU's value; programs do not nest on one CPU.
    SLOTS.get_ptr_mut(0).map(|cache| unsafe { &mut *cache })
}

/// The current task, read from the per-CPU variable that holds it (an untrusted BTF pointer,
/// good for typed loads): on a kernel whose returns go through a mitigation thunk (x86 with
/// SRSO "Safe RET"), calling `bpf_get_current_task_btf` cost this probe about as much as all its
/// loads together. The variable's address on this CPU is learned on the CPU's first call, checked
/// against the helper and kept in this CPU's write cache (`cache.current_at`); where it cannot be
/// learned or does not match, the helper is called every time.
#[inline(always)]
pub(super) fn current_task_cached(cache: &mut WriteCache) -> u64 {
    let at = cache.current_at;
    if at > 1 {
        return load(rdonly_cast(at, off!(task_ref_btf_id)), 0);
    }
    let task = current_task();
    if at == 0 {
        let at = learn_current_at(task);
        cache.current_at = at;
        cache.regs_below_top = if at > 1 {
            learn_regs_below_top(at, task)
        } else {
            0
        };
    }
    task
}

/// The per-CPU variable beside `current` (at `current_at`) that holds the top of the running
/// task's stack, as a number (loaded through the `pt_regs` view: its first member is an
/// `unsigned long`).
#[inline(always)]
fn top_of_stack(current_at: u64) -> u64 {
    let at = current_at.wrapping_add(off!(current_to_top_of_stack));
    load(rdonly_cast(at, off!(pt_regs_btf_id)), 0)
}

/// How far below the top of `task`'s stack (the running task's, read from its per-CPU variable
/// beside `current` at `current_at`) `bpf_task_pt_regs` finds its saved registers, or 0 where
/// the kernel has no such variable or the distance is not plausible.
#[inline(always)]
fn learn_regs_below_top(current_at: u64, task: u64) -> u64 {
    if off!(current_to_top_of_stack) == 0 || off!(pt_regs_btf_id) == 0 {
        return 0;
    }
    let top = top_of_stack(current_at);
    // SAFETY: helper on the trusted current task (`task` is the helper's).
    let regs = unsafe { bpf_task_pt_regs(task as *mut _) as u64 };
    let below = top.wrapping_sub(as_number(regs, off!(pt_regs_btf_id)));
    if below != 0 && below < MAX_REGS_BELOW_TOP {
        below
    } else {
        0
    }
}

/// The address of the per-CPU variable holding `current` on this CPU, checked to hold `task`
/// (the helper's), or 1 (unusable). The running task's runqueue is this CPU's copy of the
/// per-CPU `runqueues`, and the variable lies at a fixed distance from it in every copy.
#[inline(always)]
fn learn_current_at(task: u64) -> u64 {
    let distance = off!(rq_to_current);
    if distance == 0 || off!(task_ref_btf_id) == 0 {
        return 1;
    }
    let cfs_rq: u64 = load(task, off!(task_se_cfs_rq));
    if cfs_rq == 0 {
        return 1;
    }
    let rq: u64 = load(cfs_rq, off!(cfs_rq_rq));
    if rq == 0 {
        return 1;
    }
    let at = as_number(rq, off!(task_ref_btf_id)).wrapping_add(distance);
    if at <= 1 {
        return 1;
    }
    let seen: u64 = load(rdonly_cast(at, off!(task_ref_btf_id)), 0);
    if seen == task {
        at
    } else {
        1
    }
}

/// The shared settings.
#[inline(always)]
pub(super) fn settings() -> &'static mut ProbeSettings {
    // SAFETY: our own global; concurrent writers store the same learned value.
    unsafe { &mut *core::ptr::addr_of_mut!(SETTINGS) }
}

/// The registers the current `task`'s syscall entry saved, when typed: below the top of the
/// stack this CPU's per-CPU variable holds, where this CPU learned the distance (one load beside
/// `current`'s, not a dependent load of `task->stack`), else at the learned offset from its
/// stack; else (and once, to learn the offset) from `bpf_task_pt_regs`.
#[inline(always)]
pub(super) fn saved_regs<const TYPED: bool>(
    task: u64,
    cache: &WriteCache,
    settings: &mut ProbeSettings,
) -> u64 {
    if !TYPED {
        // SAFETY: helper on the trusted current task (the helper's, in this mode).
        return unsafe { bpf_task_pt_regs(task as *mut _) as u64 };
    }
    // Checked when learned: 0 or a plausible distance.
    let below = cache.regs_below_top;
    if below != 0 {
        let top = top_of_stack(cache.current_at);
        return rdonly_cast(top.wrapping_sub(below), off!(pt_regs_btf_id));
    }
    let stack: u64 = load(task, off!(task_stack));
    let delta = settings.regs_delta;
    if delta != 0 && delta < MAX_REGS_DELTA {
        return rdonly_cast(stack + delta, off!(pt_regs_btf_id));
    }
    // SAFETY: helper on the trusted current task (`task` may be an untrusted view of it).
    let regs = unsafe { bpf_task_pt_regs(current_task() as *mut _) as u64 };
    settings.regs_delta = regs.wrapping_sub(stack);
    regs
}

/// Syscall argument `N` (0..4), from the registers its entry saved.
#[inline(always)]
pub(super) fn syscall_arg<const N: usize>(regs: u64) -> u64 {
    load::<u64>(regs, off!(regs_args[N]))
}

/// The `struct file *` behind `fd` in the fd table `files`, or 0.
#[inline(always)]
pub(super) fn file_of_fd<const TYPED: bool>(files: u64, fd: u64) -> u64 {
    let entry = fd_table_entry(files, fd);
    if entry == 0 {
        0
    } else if TYPED {
        // The entry viewed as a struct whose first member is the `struct file *`.
        load(rdonly_cast(entry, off!(file_ref_btf_id)), 0)
    } else {
        read::<u64>(entry).unwrap_or(0)
    }
}

/// Address of `fd`'s entry in the fd table of `files`, or 0 when `fd` is out of range.
#[inline(always)]
pub(super) fn fd_table_entry(files: u64, fd: u64) -> u64 {
    let fdt: u64 = load(files, off!(files_fdt));
    if fd < off!(files_fd_array_len) && fdt == files + off!(files_fdtab) {
        // The table embedded in `files_struct` (a process with few fds): no need to load
        // `fdt->fd`, which is `files->fd_array`.
        return files + off!(files_fd_array) + fd * 8;
    }
    if fdt == 0 {
        return 0;
    }
    let max_fds: u32 = load(fdt, off!(fdtable_max_fds));
    if fd >= max_fds as u64 || fd >= MAX_FD {
        return 0;
    }
    let fd_array: u64 = load(fdt, off!(fdtable_fd));
    fd_array + fd * 8
}

/// The cgroup v2 id of a task's `css_set` (as `bpf_get_current_cgroup_id` computes it), or 0.
#[inline(always)]
pub(super) fn cgroup_of(css_set: u64) -> u64 {
    if css_set == 0 {
        return 0;
    }
    let cgroup: u64 = load(css_set, off!(css_set_dfl_cgrp));
    if cgroup == 0 {
        return 0;
    }
    let kn: u64 = load(cgroup, off!(cgroup_kn));
    if kn == 0 {
        return 0;
    }
    load(kn, off!(kernfs_node_id))
}

/// The kernel's `s_dev` of an inode's filesystem.
#[inline(always)]
pub(super) fn dev_of(inode: u64) -> Result<u32, i64> {
    let sb: u64 = read(inode + off!(inode_i_sb))?;
    read(sb + off!(super_block_s_dev))
}

/// The syscall's return value from a `sys_exit_*` record.
#[inline(always)]
pub(super) fn exit_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: `ret` of the sys_exit_* record format (see EXIT_RET); a direct context load,
    // which the verifier bounds-checks against the record.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(EXIT_RET) as *const i64) }
}
