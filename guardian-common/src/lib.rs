//! Types shared by Guardian's kernel probe and its userspace: plain `#[repr(C)]`, `Copy`, no
//! padding, no std. Nothing here allocates or does IO.
#![no_std]

/// Identifies a filesystem object the way the kernel does: device number and inode number.
/// Used as the key that maps a project directory to its project id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    /// `st_dev` as the kernel encodes it (`new_encode_dev`).
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl InodeKey {
    pub const fn new(dev: u64, ino: u64) -> Self {
        Self { dev, ino }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_key_has_no_padding() {
        assert_eq!(core::mem::size_of::<InodeKey>(), 16);
    }
}
