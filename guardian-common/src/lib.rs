//! Types shared by Guardian's kernel probe and its userspace: plain `#[repr(C)]`, `Copy`, no
//! padding (explicit `_pad` fields), `u32` flags instead of `bool`, no std. Nothing here
//! allocates or does IO.
#![no_std]

/// Size of the probe's project index space (the per-CPU stats array); index 0 is unused, so at
/// most `MAX_PROJECTS - 1` projects are counted at once. Userspace recycles indices of vanished
/// projects (see [`WriteSlot::owner_gen`]). 16,383 covers a node of 10,000 project dirs with room
/// to spare; the per-CPU `STATS` array costs 32 B × this per possible CPU of kernel memory
/// (512 KiB per CPU), and the index must fit [`WriteSlot::project`]'s `u16`.
pub const MAX_PROJECTS: u32 = 16384;

/// Deepest `d_parent` walk from a written file to its registered project dir.
pub const MAX_WALK_DEPTH: u32 = 32;

/// Identifies a filesystem object the way the kernel does: device number and inode number.
/// `dev` is the kernel's encoding (`sb->s_dev`, major << 20 | minor), not userspace `st_dev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub dev: u64,
    pub ino: u64,
}

impl InodeKey {
    pub const fn new(dev: u64, ino: u64) -> Self {
        Self { dev, ino }
    }
}

/// Converts a userspace `st_dev` (glibc `makedev` encoding) to the kernel's `s_dev` encoding.
pub const fn kernel_dev(major: u32, minor: u32) -> u64 {
    ((major as u64) << 20) | (minor as u64 & 0xfffff)
}

/// Per-project counters (per CPU in the kernel; summed in userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProjectStats {
    /// Bytes the write family (write, pwrite64, writev, pwritev, pwritev2) returned.
    pub written: u64,
    /// Bytes copied in by copy_file_range and sendfile.
    pub copied: u64,
    /// Bytes reserved by successful fallocate calls.
    pub allocated: u64,
    /// Bytes freed by others (not the process that loaded the probe): page-cache pages of a
    /// written file removed because its last link went (unlink, rename over it) or because it
    /// was truncated below them (truncate, ftruncate, `O_TRUNC`). Counted straight here, not
    /// through the write slots.
    pub freed: u64,
}

/// Key of the per-cgroup counters: who wrote into which project.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CgroupKey {
    pub cgroup: u64,
    pub project: u32,
    pub _pad: u32,
}

/// Identifies a written file's inode in the probe's resolution cache: device, inode number and
/// the inode's generation, so an inode number the filesystem reuses for a new file elsewhere is
/// a new key (ext4 reuses freed inode numbers readily; NFS file handles carry the same triple).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub ino: u64,
    /// The kernel's `s_dev`.
    pub dev: u32,
    pub generation: u32,
}

/// Value of the probe's resolution cache: the project a `FileKey` resolved to (0: none) in the
/// epoch it was resolved in; a write finding an entry from an older epoch resolves it again.
/// The free path cannot resolve (the file's dentry is gone when its pages go): it takes an
/// entry of any epoch whose project index still has the generation it had then (`gen`), so a
/// file written before the project set last changed still has its frees counted, and never
/// for a later owner of the index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub project: u32,
    pub epoch: u32,
    /// `GENS[project]` when resolved.
    pub gen: u32,
    pub _pad: u32,
}

/// Slots per CPU of the probe's write cache (a power of two).
pub const WRITE_SLOTS: usize = 256;

/// One slot of the probe's per-CPU write cache, chosen by (fd table, fd): the inode last written
/// there, the writer's `css_set` and project, and the bytes counted since the slot was filled.
/// A write that matches the slot (same in-memory inode, inode number, generation, `css_set` and
/// project epoch) only adds its bytes here. Otherwise the probe first moves the slot's bytes to
/// the per-project and per-(cgroup, project) maps (zeroing the slot before adding them there),
/// then refills it. Userspace reads those maps before the slots, so a racing move can delay bytes
/// to the next read but never count them twice. One cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteSlot {
    /// Address of the in-memory inode (with `ino` and `generation`: the kernel reuses freed
    /// inode structs, and a reused one has a new number or generation).
    pub inode: u64,
    pub ino: u64,
    /// Address of the writer's `css_set` (its set of cgroups); the cgroup id it stood for when
    /// the slot was filled is `WriteCache::cgroups` at the same index.
    pub css_set: u64,
    pub generation: u32,
    /// Project id, 0 for "in no project" (such slots count nothing into projects), below
    /// [`MAX_PROJECTS`].
    pub project: u16,
    /// The countdown's filesystem index of the written file (`ProbeSettings::budgets`), 0 when
    /// its filesystem is not armed. Set when the slot is filled; userspace bumps the epoch when
    /// it gives an index to another filesystem.
    pub fs: u16,
    /// `ProbeSettings::epoch` when the slot was filled; an older one is refilled.
    pub epoch: u32,
    /// The generation of the project index when the slot was filled (`GENS[project]`). Userspace
    /// bumps an index's generation when its project vanishes, before it gives the index to
    /// another project: bytes of a slot whose generation is no longer current are dropped, never
    /// counted for the index's new owner.
    pub owner_gen: u32,
    pub written: u64,
    pub copied: u64,
    pub allocated: u64,
}

/// Entries of the probe's per-CPU log of project indices whose counters changed.
pub const MOVED_RING: usize = 256;

/// Per-CPU log of the project indices the probe moved bytes to (`STATS`), so userspace reads
/// only those counters on each drain instead of every project's. `count` only grows; entry
/// `count % MOVED_RING` is written before `count` is bumped. A CPU whose `count` moved by more
/// than `MOVED_RING` since the last read overflowed the log: userspace then reads every counter.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MovedLog {
    pub count: u64,
    /// The index logged last (consecutive moves to one project are logged once).
    pub last: u32,
    pub _pad: u32,
    pub ids: [u32; MOVED_RING],
}

/// Per-CPU counters of what the probe could not do, so userspace can report it instead of
/// failing silently.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    /// Inserts into the per-(cgroup, project) map that failed (the map was full).
    pub cgroup_insert_failures: u64,
    /// Bytes those failures left without a cgroup (project totals still have them).
    pub cgroup_bytes_lost: u64,
    /// Bytes dropped because their project vanished before they were moved out of a slot.
    pub stale_bytes_dropped: u64,
}

/// The per-CPU write cache: one map value, so userspace reads it in one call. The cgroup ids sit
/// apart from the slots so a write that hits its slot touches one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WriteCache {
    /// cgroup v2 id of each slot's `css_set` when the slot was filled.
    pub cgroups: [u64; WRITE_SLOTS],
    pub slots: [WriteSlot; WRITE_SLOTS],
    /// Address of the per-CPU variable holding `current` on this CPU, once the probe learned
    /// it (0: not yet, 1: unusable, the helper is called). Beside the countdown's spending, so a
    /// write reads both from one cache line.
    pub current_at: u64,
    /// How far below the top of the running task's stack its syscall entry saved the registers,
    /// learned and checked against `bpf_task_pt_regs` on this CPU when `current_at` was (0: not
    /// usable; the probe then goes through `task->stack`). With it, the saved registers come
    /// from the per-CPU variable that holds the top of the current stack, beside `current`.
    pub regs_below_top: u64,
    /// This CPU's spending of each filesystem's armed budget (the probe's own; userspace only
    /// reads it).
    pub spent: [FsSpent; MAX_FS],
}

/// Filesystems the write countdown arms at once; index 0 is unused ("not armed").
pub const MAX_FS: usize = 16;

/// The write countdown of one filesystem, as userspace armed it (`ProbeSettings::budgets`): each
/// CPU may count `per_cpu` bytes written on the filesystem before it wakes userspace through the
/// `WAKE` ring buffer, once per arming. The shares of all CPUs add up to at most the budget, so
/// whichever way writes spread over CPUs, the wake-up comes no later than the budget.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsBudget {
    /// The kernel's `s_dev` of the filesystem (0: entry unused).
    pub dev: u32,
    /// Bumped by userspace each time it arms this budget; 0: disarmed (nothing is sent).
    pub gen: u32,
    /// Bytes each CPU may count before it wakes userspace.
    pub per_cpu: u64,
}

/// One CPU's spending of one filesystem's budget: reset when the budget's `gen` changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsSpent {
    pub spent: u64,
    /// The `FsBudget::gen` this spending counts against.
    pub gen: u32,
    /// 1 once this CPU sent its wake-up for `gen`.
    pub fired: u32,
}

/// The ring-buffer record a CPU sends when it spent its share of a filesystem's budget.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WakeRecord {
    /// The kernel's `s_dev` of the filesystem.
    pub dev: u32,
    /// The `FsBudget::gen` that ran out.
    pub gen: u32,
    /// Bytes this CPU counted against it.
    pub spent: u64,
}

/// Settings shared by userspace and the probe: the probe's `SETTINGS` global, in the object's
/// `.bss` (a one-entry array map userspace reads and writes as `.bss`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeSettings {
    /// `task_pt_regs(task) - task->stack`, the same for every task of a kernel; the probe learns
    /// it once from `bpf_task_pt_regs` (0 until then).
    pub regs_delta: u64,
    /// Bumped by userspace whenever the project set changes: write slots and cached resolutions
    /// from an older epoch are resolved again.
    pub epoch: u32,
    pub _pad: u32,
    /// The write countdown, per filesystem index (index 0 unused).
    pub budgets: [FsBudget; MAX_FS],
}

/// Helper number the probe calls in place of the `bpf_rdonly_cast` kfunc. aya cannot relocate
/// kfunc calls, so userspace rewrites each such call before load: into the kfunc call where the
/// kernel has it, else into `r0 = r1` (and the probe then reads kernel memory with
/// `bpf_probe_read_kernel` instead of typed loads).
pub const RDONLY_CAST_PLACEHOLDER: i32 = 0x7f1c_a57d;

pub const KIND_WRITE: u32 = 1;
pub const KIND_COPY: u32 = 2;
pub const KIND_FALLOCATE: u32 = 3;

/// Kernel struct member offsets, read from the running kernel's BTF at load time and handed to
/// the probe as a global, so one object runs on many kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u64,
    pub files_fdt: u64,
    pub fdtable_max_fds: u64,
    pub fdtable_fd: u64,
    pub file_f_inode: u64,
    pub file_f_path: u64,
    pub path_dentry: u64,
    pub inode_i_ino: u64,
    pub inode_i_sb: u64,
    pub super_block_s_dev: u64,
    pub dentry_d_parent: u64,
    pub dentry_d_inode: u64,
    pub inode_i_generation: u64,
    /// Offsets in `struct pt_regs` of the first four syscall arguments as the syscall entry saved
    /// them (x86_64: di, si, dx, r10; aarch64: orig_x0, x1, x2, x3).
    pub regs_args: [u64; 4],
    pub task_stack: u64,
    /// `files_struct.fdtab` and `files_struct.fd_array`: the fd table embedded in `files_struct`
    /// (used while a process has few fds), and its length (`NR_OPEN_DEFAULT`).
    pub files_fdtab: u64,
    pub files_fd_array: u64,
    pub files_fd_array_len: u64,
    pub task_cgroups: u64,
    pub css_set_dfl_cgrp: u64,
    pub cgroup_kn: u64,
    pub kernfs_node_id: u64,
    /// The free path (`mm_filemap_delete_from_page_cache`): `folio.flags`, `folio.mapping`,
    /// `folio.index`, `folio._flags_1` (the order of a large folio in its low byte),
    /// `address_space.host`, `inode.i_nlink`, `inode.i_size`; the `PG_head` bit of the flags
    /// and the page shift. `page_shift` is 0 where the kernel lacks one of them: then the probe
    /// counts no frees and userspace does not attach that program.
    pub folio_flags: u64,
    pub folio_mapping: u64,
    pub folio_index: u64,
    pub folio_flags_1: u64,
    pub address_space_host: u64,
    pub inode_i_nlink: u64,
    pub inode_i_size: u64,
    pub pg_head: u64,
    pub page_shift: u64,
    /// `task_struct.se.cfs_rq` and `cfs_rq.rq`: the way from a running task to its CPU's
    /// runqueue (`CONFIG_FAIR_GROUP_SCHED`), where the probe finds each CPU's per-CPU area.
    pub task_se_cfs_rq: u64,
    pub cfs_rq_rq: u64,
    /// The distance (wrapping) from the per-CPU `runqueues` to the per-CPU variable that holds
    /// `current` (`current_task`, or `pcpu_hot.current_task` on Linux 6.2–6.14), the same in
    /// every CPU's copy of the per-CPU section; 0 where the kernel's BTF lacks either (the probe
    /// then calls `bpf_get_current_task_btf` for every write).
    pub rq_to_current: u64,
    /// The distance (wrapping) from the per-CPU variable that holds `current` to the one that
    /// holds the top of the current task's stack (`cpu_current_top_of_stack`, or
    /// `pcpu_hot.top_of_stack` on Linux 6.2–6.14); 0 where the kernel's BTF lacks it.
    pub current_to_top_of_stack: u64,
    /// 1 once userspace filled the offsets; the probe counts nothing while 0.
    pub ready: u32,
    /// BTF id of a struct whose first member is a `struct file *` (`kiocb`), to view an fd-table
    /// slot as one through `bpf_rdonly_cast`; 0 where the kernel has no such kfunc, and userspace
    /// then loads the probe's `_pr` programs, which read the fd table, file and inode with
    /// `bpf_probe_read_kernel`.
    pub file_ref_btf_id: u32,
    /// BTF id of `struct pt_regs`, to view `task->stack + regs_delta` as the saved registers
    /// through `bpf_rdonly_cast` (instead of calling `bpf_task_pt_regs` per write); 0 with
    /// `file_ref_btf_id`.
    pub pt_regs_btf_id: u32,
    /// BTF id of a struct whose first member is a `struct task_struct *` (`rcuwait`), to read
    /// the per-CPU variable that holds `current` through `bpf_rdonly_cast`; 0 with
    /// `file_ref_btf_id`.
    pub task_ref_btf_id: u32,
}

#[cfg(all(feature = "user", target_os = "linux"))]
mod pod {
    // SAFETY: all of these are repr(C), Copy, made of integers only, with explicit padding, so
    // every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::ProjectStats {}
    unsafe impl aya::Pod for super::CgroupKey {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::WriteSlot {}
    unsafe impl aya::Pod for super::WriteCache {}
    unsafe impl aya::Pod for super::Resolution {}
    unsafe impl aya::Pod for super::ProbeSettings {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::MovedLog {}
    unsafe impl aya::Pod for super::ProbeCounters {}
    unsafe impl aya::Pod for super::FsBudget {}
    unsafe impl aya::Pod for super::FsSpent {}
    unsafe impl aya::Pod for super::WakeRecord {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_types_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<InodeKey>(), 16);
        assert_eq!(core::mem::size_of::<ProjectStats>(), 32);
        assert_eq!(core::mem::size_of::<CgroupKey>(), 16);
        assert_eq!(core::mem::size_of::<FileKey>(), 16);
        assert_eq!(core::mem::size_of::<WriteSlot>(), 64, "one cache line");
        assert_eq!(core::mem::size_of::<ProbeSettings>(), 16 + 16 * MAX_FS);
        assert_eq!(core::mem::size_of::<FsBudget>(), 16);
        assert_eq!(core::mem::size_of::<FsSpent>(), 16);
        assert_eq!(core::mem::size_of::<WakeRecord>(), 16);
        assert!(MAX_PROJECTS <= u16::MAX as u32 && MAX_FS <= u16::MAX as usize);
        assert_eq!(core::mem::size_of::<Resolution>(), 16);
        assert_eq!(core::mem::size_of::<KernelOffsets>(), 38 * 8 + 16);
        assert!(WRITE_SLOTS.is_power_of_two());
        assert_eq!(
            core::mem::size_of::<WriteCache>(),
            WRITE_SLOTS * (8 + 64) + 16 + 16 * MAX_FS
        );
        assert_eq!(core::mem::size_of::<MovedLog>(), 16 + 4 * MOVED_RING);
        assert_eq!(core::mem::size_of::<ProbeCounters>(), 24);
        assert!(MOVED_RING.is_power_of_two());
    }

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(kernel_dev(8, 1), (8 << 20) | 1);
        assert_eq!(kernel_dev(259, 70000), (259 << 20) | 70000);
    }
}
