//! Guardian's own files (the audit log, state files, registries) and the directories that hold
//! them. Guardian runs as root on nodes where tasks run as other users, so a path it writes to
//! must not be one a task can redirect: every directory is checked to be Guardian's own (owned
//! by its user, not writable by anyone else, no ancestor a task could swap), every file is opened
//! relative to that directory's fd without following a symlink, and a file is replaced through a
//! temp file with an unpredictable name created exclusively in the same directory.
//!
//! This is the one mechanism for atomic file replacement; nothing here deletes anything but its
//! own temp files.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// Why a directory is not safe for Guardian's files.
#[derive(Debug, thiserror::Error)]
#[error("refusing to write Guardian's files in {path}: {why}")]
pub struct UnsafeDir {
    pub path: String,
    pub why: String,
}

/// A directory checked to be Guardian's own, held open.
#[derive(Debug)]
pub struct OwnDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// rwxr-x---
const DIR_MODE: Mode = Mode::RWXU.union(Mode::RGRP).union(Mode::XGRP);
/// rw-r-----
const FILE_MODE: Mode = Mode::RUSR.union(Mode::WUSR).union(Mode::RGRP);

impl OwnDir {
    /// Opens the directory at `path` (absolute), creating missing components (mode 0750) when
    /// `create`, and checks that it is safe to write Guardian's files there:
    /// - no component is a symlink the process would follow into a place a task controls: each
    ///   ancestor must be owned by root or Guardian's user and not group/world-writable unless
    ///   sticky (like `/tmp`);
    /// - the directory itself is a real directory (not a symlink), owned by Guardian's user and
    ///   writable by nobody else.
    pub fn open(path: &Path, create: bool) -> Result<OwnDir, UnsafeDir> {
        let err = |why: String| UnsafeDir {
            path: crate::textpath::escape(path),
            why,
        };
        if !path.is_absolute() {
            return Err(err("not an absolute path".into()));
        }
        let me = rustix::process::geteuid().as_raw();
        let mut fd = super::open_dir_path(Path::new("/")).map_err(|e| err(format!("/: {e}")))?;
        let mut shown = PathBuf::from("/");
        let parts: Vec<_> = path.components().collect();
        for (i, part) in parts.iter().enumerate() {
            let name = match part {
                Component::RootDir => continue,
                Component::Normal(n) => *n,
                _ => return Err(err("`.` and `..` are not allowed".into())),
            };
            let is_last = i + 1 == parts.len();
            check_ancestor(&fd, &shown, me).map_err(&err)?;
            shown.push(name);
            let c = super::c_name(name).map_err(|_| err("a NUL byte in the path".into()))?;
            let opened =
                match rustix::fs::openat(&fd, c.as_c_str(), dir_flags(is_last), Mode::empty()) {
                    Ok(next) => next,
                    Err(rustix::io::Errno::NOENT) if create => {
                        match rustix::fs::mkdirat(&fd, c.as_c_str(), DIR_MODE) {
                            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                            Err(e) => {
                                return Err(err(format!(
                                    "cannot create {}: {e}",
                                    crate::textpath::escape(&shown)
                                )))
                            }
                        }
                        rustix::fs::openat(&fd, c.as_c_str(), dir_flags(is_last), Mode::empty())
                            .map_err(|e| {
                                err(format!(
                                    "cannot open {}: {e}",
                                    crate::textpath::escape(&shown)
                                ))
                            })?
                    }
                    Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) if is_last => {
                        return Err(err("it is a symlink or not a directory".into()))
                    }
                    Err(e) => {
                        return Err(err(format!(
                            "cannot open {}: {e}",
                            crate::textpath::escape(&shown)
                        )))
                    }
                };
            fd = opened;
        }
        let st = rustix::fs::fstat(&fd).map_err(|e| err(format!("cannot stat it: {e}")))?;
        if st.st_uid != me {
            return Err(err(format!(
                "it is owned by uid {}, not by Guardian's user (uid {me})",
                st.st_uid
            )));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(err(format!(
                "it is writable by group or others (mode {:o}): a task could replace Guardian's files",
                st.st_mode & 0o7777
            )));
        }
        Ok(OwnDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file `name` with `bytes` atomically: a reader sees the old file or the new
    /// one. The temp file has an unpredictable name and is created exclusively, without
    /// following a symlink; it is fsync'd, renamed over `name`, and the directory fsync'd. On
    /// any failure the temp file is removed and `name` is untouched.
    pub fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!(".{name}.{}.tmp", random_suffix()?);
        let file = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            FILE_MODE,
        )?;
        let mut file = File::from(file);
        let written = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| {
                rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(Into::into)
            });
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), rustix::fs::AtFlags::empty());
            return Err(e);
        }
        // The rename is durable once the directory is.
        let _ = rustix::fs::fsync(&self.fd);
        Ok(())
    }

    /// Opens `name` for appending, creating it (mode 0640) if missing, without following a
    /// symlink; it must be a regular file owned by Guardian's user and writable by nobody else.
    pub fn open_append(&self, name: &str) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            FILE_MODE,
        )?;
        check_own_file(&fd)?;
        Ok(File::from(fd))
    }

    /// Opens `name` for locking (`flock`), creating it if missing, without following a symlink.
    pub fn open_lock(&self, name: &str) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            FILE_MODE,
        )?;
        check_own_file(&fd)?;
        Ok(File::from(fd))
    }

    /// Reads `name` (at most `limit` bytes, more is an error), without following a symlink.
    /// `Ok(None)` when it does not exist.
    pub fn read(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(io::Error::other(format!("{name} is not a regular file")));
        }
        let mut out = Vec::new();
        File::from(fd).take(limit + 1).read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(io::Error::other(format!(
                "{name} is larger than {limit} bytes"
            )));
        }
        Ok(Some(out))
    }

    /// Renames `from` to `to` within this directory.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(Into::into)
    }

    /// Removes the file `name` (Guardian's own), if present.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The open directory.
    pub fn fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn dir_flags(last: bool) -> OFlags {
    // Ancestors may be root-owned symlinks (`/var/run` → `/run`); the directory itself may not.
    let base = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if last {
        base | OFlags::NOFOLLOW
    } else {
        base
    }
}

/// An ancestor of an own dir: owned by root or Guardian's user, and not writable by group or
/// others unless sticky (then only its owner can rename what is in it away).
fn check_ancestor(fd: &OwnedFd, shown: &Path, me: u32) -> Result<(), String> {
    let st = rustix::fs::fstat(fd).map_err(|e| format!("cannot stat {}: {e}", shown.display()))?;
    if st.st_uid != 0 && st.st_uid != me {
        return Err(format!(
            "its ancestor {} is owned by uid {}: that user could swap it",
            crate::textpath::escape(shown),
            st.st_uid
        ));
    }
    let sticky = st.st_mode & 0o1000 != 0;
    if st.st_mode & 0o022 != 0 && !sticky {
        return Err(format!(
            "its ancestor {} is writable by group or others (mode {:o})",
            crate::textpath::escape(shown),
            st.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// A file Guardian writes: regular, owned by its user, writable by nobody else.
fn check_own_file(fd: &OwnedFd) -> io::Result<()> {
    let st = rustix::fs::fstat(fd)?;
    let me = rustix::process::geteuid().as_raw();
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(io::Error::other("not a regular file"));
    }
    if st.st_uid != me || st.st_mode & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "owned by uid {} with mode {:o}: only Guardian's user (uid {me}) may write it",
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// Creates a new directory `parent/<prefix><random>` (mode 0700) that did not exist before —
/// never an existing one, never through a symlink — and returns its path.
pub fn make_private_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    let dir = super::open_dir_path(parent)?;
    for _ in 0..16 {
        let name = format!("{prefix}{}", random_suffix()?);
        match rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                let made = rustix::fs::openat(
                    &dir,
                    name.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let st = rustix::fs::fstat(&made)?;
                if st.st_uid != rustix::process::geteuid().as_raw() {
                    return Err(io::Error::other("the new directory is not ours"));
                }
                return Ok(parent.join(name));
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free name for a private directory"))
}

/// 16 random hex digits from the kernel.
pub fn random_suffix() -> io::Result<String> {
    let mut buf = [0u8; 8];
    #[cfg(target_os = "linux")]
    rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty())?;
    #[cfg(not(target_os = "linux"))]
    io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replace_is_atomic_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OwnDir::open(&tmp.path().join("state/nested"), true).unwrap();
        dir.replace("state.json", b"one").unwrap();
        dir.replace("state.json", b"two").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        assert_eq!(dir.read("state.json", 10).unwrap().unwrap(), b"two");
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750);
    }

    #[test]
    fn a_symlink_in_place_of_a_file_or_the_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let dir = OwnDir::open(&tmp.path().join("audit"), true).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("audit.jsonl")).unwrap();
        assert!(dir.open_append("audit.jsonl").is_err());
        assert!(dir.read("audit.jsonl", 100).is_err());
        // A replace goes through a fresh temp file and renames over the link, never writing
        // through it.
        dir.replace("audit.jsonl", b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("linked")).unwrap();
        let e = OwnDir::open(&tmp.path().join("linked"), false).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn a_dir_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = OwnDir::open(&open, false).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        // Below it, the ancestor check refuses too.
        let e = OwnDir::open(&open.join("below"), true).unwrap_err();
        assert!(e.to_string().contains("ancestor"), "{e}");
        assert!(
            !open.join("below").exists(),
            "nothing created under an unsafe ancestor"
        );
    }
}
