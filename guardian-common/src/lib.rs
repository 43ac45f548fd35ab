//! Types shared by Guardian's kernel probe and its userspace: plain `#[repr(C)]`, `Copy`, no
//! padding (explicit `_pad` fields), `u32` flags instead of `bool`, no std. Nothing here
//! allocates or does IO.
#![no_std]

/// Most projects the probe can count (index space of the per-CPU stats array; id 0 is unused).
pub const MAX_PROJECTS: u32 = 8192;

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
    /// Number of counted calls.
    pub calls: u64,
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

/// Slots per CPU of the probe's direct-mapped cache of recently written `struct file`s.
pub const FILE_CACHE_SLOTS: u32 = 256;

/// One slot of the per-CPU file cache: a `struct file *` the probe resolved, checked on reuse
/// against the file's inode pointer and generation (the kernel reuses freed structs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSlot {
    pub file: u64,
    pub inode: u64,
    pub generation: u32,
    /// Project id, 0 for "in no project".
    pub project: u32,
}

/// Per-CPU accumulator of the bytes of the last (cgroup, project) seen on that CPU; the probe
/// moves them into the per-(cgroup, project) hash only when the pair changes, so a steady writer
/// costs no hash update per write. Userspace adds the slots to the hash's totals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupSlot {
    pub cgroup: u64,
    pub bytes: u64,
    pub project: u32,
    pub _pad: u32,
}

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
    /// 1 once userspace filled the offsets; the probe counts nothing while 0.
    pub ready: u32,
    pub _pad: u32,
}

#[cfg(all(feature = "user", target_os = "linux"))]
mod pod {
    // SAFETY: all of these are repr(C), Copy, made of integers only, with explicit padding, so
    // every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::ProjectStats {}
    unsafe impl aya::Pod for super::CgroupKey {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::FileSlot {}
    unsafe impl aya::Pod for super::CgroupSlot {}
    unsafe impl aya::Pod for super::KernelOffsets {}
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
        assert_eq!(core::mem::size_of::<FileSlot>(), 24);
        assert_eq!(core::mem::size_of::<CgroupSlot>(), 24);
        assert_eq!(core::mem::size_of::<KernelOffsets>(), 17 * 8 + 8);
    }

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(kernel_dev(8, 1), (8 << 20) | 1);
        assert_eq!(kernel_dev(259, 70000), (259 << 20) | 70000);
    }
}
