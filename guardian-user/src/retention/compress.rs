//! Retention's `compress = true`: the archive of one entry, written next to it — a file as
//! `NAME.zst`, a directory as `NAME.tar.zst` (tar of the tree, read fd-relative without
//! following a symlink; a symlink is stored as one) — under an unpredictable temp name created
//! `O_EXCL`, fsync'd, verified by decompressing it again (length and hash of the stream must be
//! what was written), renamed into place without replacing anything, and given the original's
//! owner. The executor removes the original afterwards (`Executor::compress_retention`).
//!
//! Invariants: nothing is unlinked here but this module's own temp file when an archive fails;
//! an entry holding a device, FIFO or socket is not archived (an archive must stand for all of
//! it); an archive that does not verify is never renamed into place.

use crate::fsys::{self, EntryKind, EntryStat};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::hash::Hasher;
use std::io::{self, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// zstd level: a good ratio at a speed that keeps up with a disk.
const LEVEL: i32 = 3;
/// Deepest tree archived.
const MAX_DEPTH: usize = 256;
pub use super::keep::TEMP_PREFIX;

/// A verified archive in place.
#[derive(Debug)]
pub struct Archived {
    pub name: OsString,
    /// Bytes of the archive on disk (allocated).
    pub allocated: u64,
    /// Bytes of the uncompressed stream (the file, or the tar of the tree).
    pub stream_bytes: u64,
}

/// The archive name of an entry.
pub fn archive_name(name: &OsStr, kind: EntryKind) -> OsString {
    let mut out = name.to_owned();
    out.push(if kind == EntryKind::Dir {
        ".tar.zst"
    } else {
        ".zst"
    });
    out
}

/// Archives the entry `name` of `parent` (stated as `st`, shown as `shown`) next to it.
/// Stops (an error, the temp file removed) as soon as `cancel` is set: a large archive never
/// holds up the daemon's stop.
pub fn archive(
    parent: BorrowedFd<'_>,
    name: &CStr,
    st: &EntryStat,
    shown: &Path,
    cancel: &AtomicBool,
) -> Result<Archived, String> {
    if !matches!(st.kind, EntryKind::File | EntryKind::Dir) {
        return Err("only files and directories are compressed".into());
    }
    let final_name = archive_name(OsStr::from_bytes(name.to_bytes()), st.kind);
    let final_c = fsys::c_name(&final_name).map_err(|e| e.to_string())?;
    if fsys::stat_entry(parent, &final_c).is_ok() {
        return Err(format!(
            "{} already exists: not replaced",
            crate::textpath::shown(&shown.with_file_name(&final_name))
        ));
    }
    let (temp_name, temp) = create_temp(parent)?;
    let result =
        write_and_verify(parent, name, st, shown, &temp, cancel).and_then(|stream_bytes| {
            rustix::fs::renameat_with(
                parent,
                temp_name.as_c_str(),
                parent,
                final_c.as_c_str(),
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| format!("cannot rename the archive into place: {e}"))?;
            let _ = rustix::fs::fsync(parent);
            let allocated = fsys::stat_entry(parent, &final_c)
                .map(|s| s.allocated)
                .unwrap_or(0);
            Ok(Archived {
                name: final_name,
                allocated,
                stream_bytes,
            })
        });
    if result.is_err() {
        // Our own temp file, created O_EXCL above: nothing else can be at that name.
        let _ = rustix::fs::unlinkat(parent, temp_name.as_c_str(), rustix::fs::AtFlags::empty());
    }
    result
}

/// A new temp file in `parent` with a random name, created `O_EXCL` (mode 0600).
fn create_temp(parent: BorrowedFd<'_>) -> Result<(CString, File), String> {
    for _ in 0..8 {
        let mut bytes = [0u8; 12];
        getrandom(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let name = CString::new(format!("{TEMP_PREFIX}{hex}.zst")).map_err(|e| e.to_string())?;
        match rustix::fs::openat(
            parent,
            name.as_c_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((name, File::from(fd))),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(format!("cannot create the archive's temp file: {e}")),
        }
    }
    Err("cannot find a free temp name for the archive".into())
}

fn getrandom(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) if n > 0 => filled += n,
            _ => break,
        }
    }
    if filled < buf.len() {
        // No entropy source answered: the time and pid still make the name unpredictable
        // enough for O_EXCL to do the rest.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        for (i, b) in h
            .finish()
            .to_le_bytes()
            .iter()
            .cycle()
            .take(buf.len())
            .enumerate()
        {
            if let Some(slot) = buf.get_mut(i) {
                *slot ^= *b;
            }
        }
    }
}

/// Counts and hashes what passes through.
struct Tap<'c, W> {
    inner: W,
    bytes: u64,
    hash: std::collections::hash_map::DefaultHasher,
    /// Set on shutdown: the next write fails.
    cancel: Option<&'c AtomicBool>,
}

impl<'c, W> Tap<'c, W> {
    fn new(inner: W) -> Tap<'c, W> {
        Tap {
            inner,
            bytes: 0,
            hash: std::collections::hash_map::DefaultHasher::new(),
            cancel: None,
        }
    }

    /// Fails every write once `cancel` is set.
    fn stopping_on(mut self, cancel: &'c AtomicBool) -> Tap<'c, W> {
        self.cancel = Some(cancel);
        self
    }
}

impl<W: Write> Write for Tap<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            // Not `Interrupted`: `io::copy` would retry that.
            return Err(io::Error::other("Guardian is stopping"));
        }
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or(buf);
        self.hash.write(done);
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(done.len()).unwrap_or(0));
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the compressed stream to `temp`, fsyncs it, decompresses it again and compares.
/// Returns the uncompressed stream's length.
fn write_and_verify(
    parent: BorrowedFd<'_>,
    name: &CStr,
    st: &EntryStat,
    shown: &Path,
    temp: &File,
    cancel: &AtomicBool,
) -> Result<u64, String> {
    let encoder = zstd::stream::write::Encoder::new(temp, LEVEL).map_err(|e| e.to_string())?;
    let mut tap = Tap::new(encoder).stopping_on(cancel);
    let owner = if st.kind == EntryKind::Dir {
        let dir = fsys::open_child_dir(parent, name).map_err(|e| e.to_string())?;
        same(&dir, st)?;
        let mut builder = tar::Builder::new(&mut tap);
        builder.mode(tar::HeaderMode::Complete);
        let top = PathBuf::from(OsStr::from_bytes(name.to_bytes()));
        append_dir(&mut builder, dir.as_fd(), &top, shown, 0)?;
        builder.finish().map_err(|e| e.to_string())?;
        drop(builder);
        rustix::fs::fstat(&dir).map_err(|e| e.to_string())?
    } else {
        let fd = open_file(parent, name)?;
        same(&fd, st)?;
        let owner = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
        let mut file = File::from(fd);
        io::copy(&mut file, &mut tap)
            .map_err(|e| format!("cannot read {}: {e}", crate::textpath::shown(shown)))?;
        owner
    };
    let (written, hash) = (tap.bytes, tap.hash.finish());
    tap.inner
        .finish()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    temp.sync_all()
        .map_err(|e| format!("cannot fsync the archive: {e}"))?;
    verify(temp, written, hash)?;
    // The original's owner; its mode without execute bits.
    let _ = rustix::fs::fchown(
        temp,
        Some(rustix::fs::Uid::from_raw(owner.st_uid)),
        Some(rustix::fs::Gid::from_raw(owner.st_gid)),
    );
    let _ = rustix::fs::fchmod(
        temp,
        Mode::from_raw_mode(owner.st_mode & 0o666 & !0o022 | 0o600),
    );
    Ok(written)
}

/// Decompresses what is on disk in `archive` and compares the stream's length and hash with
/// what was written.
fn verify(archive: &File, written: u64, hash: u64) -> Result<(), String> {
    let mut reread = archive.try_clone().map_err(|e| e.to_string())?;
    reread.rewind().map_err(|e| e.to_string())?;
    let mut decoder =
        zstd::stream::read::Decoder::new(reread).map_err(|e| format!("archive unreadable: {e}"))?;
    let mut check = Tap::new(io::sink());
    io::copy(&mut decoder, &mut check)
        .map_err(|e| format!("archive does not verify: it does not decompress: {e}"))?;
    if check.bytes != written || check.hash.finish() != hash {
        return Err(format!(
            "archive does not verify: {} bytes read back, {written} written",
            check.bytes
        ));
    }
    Ok(())
}

fn open_file(parent: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, String> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open without following symlinks: {e}"))
}

/// The opened fd must be the entry that was stated.
fn same(fd: &OwnedFd, st: &EntryStat) -> Result<(), String> {
    let now = rustix::fs::fstat(fd).map_err(|e| e.to_string())?;
    if fsys::stat_identity(&now) != (st.dev, st.ino) {
        return Err("changed while it was opened".into());
    }
    Ok(())
}

/// Appends the tree of the open directory `dir` (named `rel` in the archive) to `builder`.
fn append_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    rel: &Path,
    shown: &Path,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("deeper than {MAX_DEPTH} levels: not compressed"));
    }
    let meta = File::from(rustix::io::dup(dir).map_err(|e| e.to_string())?)
        .metadata()
        .map_err(|e| e.to_string())?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    header.set_size(0);
    builder
        .append_data(&mut header, rel, io::empty())
        .map_err(|e| e.to_string())?;
    let mut entries = fsys::list_dir(dir).map_err(|e| e.to_string())?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for entry in entries {
        let child_rel = rel.join(entry.os_name());
        let child_shown = shown.join(entry.os_name());
        let st = fsys::stat_entry(dir, &entry.name)
            .map_err(|e| format!("cannot stat {}: {e}", crate::textpath::shown(&child_shown)))?;
        match st.kind {
            EntryKind::Dir => {
                let child = fsys::open_child_dir(dir, &entry.name).map_err(|e| e.to_string())?;
                same(&child, &st)?;
                append_dir(builder, child.as_fd(), &child_rel, &child_shown, depth + 1)?;
            }
            EntryKind::File => {
                let fd = open_file(dir, &entry.name)?;
                same(&fd, &st)?;
                let file = File::from(fd);
                let meta = file.metadata().map_err(|e| e.to_string())?;
                let mut header = tar::Header::new_gnu();
                header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                builder
                    .append_data(&mut header, &child_rel, file)
                    .map_err(|e| {
                        format!("cannot read {}: {e}", crate::textpath::shown(&child_shown))
                    })?;
            }
            EntryKind::Symlink => {
                let target = rustix::fs::readlinkat(dir, entry.name.as_c_str(), Vec::new())
                    .map_err(|e| e.to_string())?;
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                header.set_mtime(u64::try_from(st.mtime).unwrap_or(0));
                builder
                    .append_link(
                        &mut header,
                        &child_rel,
                        Path::new(OsStr::from_bytes(target.as_bytes())),
                    )
                    .map_err(|e| e.to_string())?;
            }
            EntryKind::Other => {
                return Err(format!(
                    "{} is a device, FIFO or socket: not compressed",
                    crate::textpath::shown(&child_shown)
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    static NOT_STOPPING: AtomicBool = AtomicBool::new(false);

    fn decompress(path: &Path) -> Vec<u8> {
        zstd::stream::decode_all(File::open(path).unwrap()).unwrap()
    }

    #[test]
    fn an_archive_under_way_stops_on_shutdown_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("big.log"), vec![1u8; 1 << 20]).unwrap();
        let parent = fsys::open_dir_path(dir).unwrap();
        let c = fsys::c_name(OsStr::new("big.log")).unwrap();
        let st = fsys::stat_entry(parent.as_fd(), &c).unwrap();
        let stopping = AtomicBool::new(true);
        let e = archive(parent.as_fd(), &c, &st, &dir.join("big.log"), &stopping).unwrap_err();
        assert!(e.contains("stopping"), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("big.log")]);
    }

    #[test]
    fn a_file_and_a_tree_round_trip_and_leave_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("a.log"), b"hello hello hello hello".repeat(1000)).unwrap();
        std::fs::create_dir_all(dir.join("v1/sub")).unwrap();
        std::fs::write(dir.join("v1/sub/w.bin"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("sub/w.bin", dir.join("v1/link")).unwrap();
        let parent = fsys::open_dir_path(dir).unwrap();
        for name in ["a.log", "v1"] {
            let c = fsys::c_name(OsStr::new(name)).unwrap();
            let st = fsys::stat_entry(parent.as_fd(), &c).unwrap();
            let done = archive(parent.as_fd(), &c, &st, &dir.join(name), &NOT_STOPPING).unwrap();
            assert!(done.stream_bytes > 0);
            assert!(dir.join(&done.name).exists());
        }
        assert_eq!(
            decompress(&dir.join("a.log.zst")),
            std::fs::read(dir.join("a.log")).unwrap()
        );
        let tar_bytes = decompress(&dir.join("v1.tar.zst"));
        let mut unpacked = tar::Archive::new(&tar_bytes[..]);
        let mut seen = Vec::new();
        for e in unpacked.entries().unwrap() {
            let e = e.unwrap();
            seen.push((
                e.path().unwrap().display().to_string(),
                e.header().entry_type(),
            ));
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<_> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["v1", "v1/link", "v1/sub", "v1/sub/w.bin"]);
        assert!(seen[1].1.is_symlink());
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(TEMP_PREFIX)
            })
            .collect();
        assert!(leftovers.is_empty());
        // A second archive of the same entry never replaces the first.
        let c = fsys::c_name(OsStr::new("a.log")).unwrap();
        let st = fsys::stat_entry(parent.as_fd(), &c).unwrap();
        let e = archive(parent.as_fd(), &c, &st, &dir.join("a.log"), &NOT_STOPPING).unwrap_err();
        assert!(e.contains("already exists"), "{e}");
    }

    #[test]
    fn a_tree_with_a_fifo_is_not_archived_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir(dir.join("v1")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("v1/fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let parent = fsys::open_dir_path(dir).unwrap();
        let c = fsys::c_name(OsStr::new("v1")).unwrap();
        let st = fsys::stat_entry(parent.as_fd(), &c).unwrap();
        let e = archive(parent.as_fd(), &c, &st, &dir.join("v1"), &NOT_STOPPING).unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from("v1")]);
    }

    #[test]
    fn verification_refuses_a_cut_or_altered_archive() {
        let data = b"model weights ".repeat(5000);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(&data);
        let hash = h.finish();
        let len = u64::try_from(data.len()).unwrap();
        let compressed = zstd::stream::encode_all(&data[..], LEVEL).unwrap();
        let file = |bytes: &[u8]| {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(bytes).unwrap();
            f
        };
        verify(&file(&compressed), len, hash).unwrap();
        let cut = &compressed[..compressed.len() / 2];
        assert!(verify(&file(cut), len, hash).is_err());
        assert!(verify(&file(&compressed), len + 1, hash).is_err());
        assert!(verify(&file(&compressed), len, hash ^ 1).is_err());
        assert!(verify(&file(b"not zstd at all"), len, hash).is_err());
    }
}
