//! Filesystems for the harness: fresh tmpfs mounts (unmounted on drop, never removed
//! recursively), free space, fills that refuse to write anywhere but on the filesystem they were
//! meant for, byte-exact tree digests, allocated sizes, and unmounting what was mounted below a
//! directory.

use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const TMPFS_MAGIC: u64 = 0x0102_1994;
pub const MIB: u64 = 1 << 20;

/// A tmpfs mounted on a fresh directory for one run; lazily unmounted on drop (after whatever
/// was mounted below it).
pub struct Tmpfs {
    pub dir: PathBuf,
    base: PathBuf,
}

impl Tmpfs {
    /// A tmpfs of `bytes` (mode 0755: Guardian keeps its own files only in directories nobody
    /// else can write).
    pub fn mount(bytes: u64, tag: &str) -> Result<Tmpfs> {
        let base = fresh_dir(tag)?;
        let dir = base.join("mnt");
        std::fs::create_dir(&dir)?;
        let data = std::ffi::CString::new(format!("size={bytes},mode=0755"))?;
        if let Err(e) = rustix::mount::mount(
            "guardian-stress",
            &dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            data.as_c_str(),
        ) {
            let _ = std::fs::remove_dir(&dir);
            let _ = std::fs::remove_dir(&base);
            bail!("cannot mount a tmpfs on {}: {e}", dir.display());
        }
        let fs = Tmpfs { dir, base };
        ensure!(
            is_tmpfs(&fs.dir)? && is_mount_point(&fs.dir)?,
            "{} is not the tmpfs just mounted",
            fs.dir.display()
        );
        Ok(fs)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn space(&self) -> Space {
        space(&self.dir).unwrap_or_default()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount_below(&self.dir);
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        // Only empty directories are removed: if the unmount failed, nothing below is touched.
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// A new directory `/tmp/guardian-TAG-PID-N` (mode 0755).
pub fn fresh_dir(tag: &str) -> Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("guardian-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(dir)
}

pub fn is_tmpfs(path: &Path) -> Result<bool> {
    let st = rustix::fs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    Ok(st.f_type as u64 == TMPFS_MAGIC)
}

/// True when `path` is the root of a mount (its device differs from its parent's, or it is a
/// mount point in the mount table).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let meta = std::fs::metadata(path)?;
    let parent = std::fs::metadata(path.join(".."))?;
    Ok(meta.dev() != parent.dev() || mount_points().iter().any(|m| m == path))
}

/// Free space of the filesystem holding `path`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Space {
    pub total: u64,
    /// Available to unprivileged users (what `df` shows).
    pub avail: u64,
    /// Free including the root reserve.
    pub free: u64,
}

impl Space {
    pub fn used_percent(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        100.0 - self.avail as f64 * 100.0 / self.total as f64
    }

    pub fn free_percent(&self) -> f64 {
        100.0 - self.used_percent()
    }
}

pub fn space(path: &Path) -> Result<Space> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok(Space {
        total: st.f_blocks * st.f_frsize,
        avail: st.f_bavail * st.f_frsize,
        free: st.f_bfree * st.f_frsize,
    })
}

/// Refuses unless `path` (or its nearest existing ancestor) lies on the filesystem mounted at
/// `mount`, and that filesystem is not the one holding `/`: every fill goes through this, so a
/// wrong path can never fill the machine's root filesystem.
pub fn ensure_on(mount: &Path, path: &Path) -> Result<()> {
    let mount_dev = std::fs::metadata(mount)
        .with_context(|| format!("stat {}", mount.display()))?
        .dev();
    let root_dev = std::fs::metadata("/")?.dev();
    let mut probe = path;
    let dev = loop {
        match std::fs::symlink_metadata(probe) {
            Ok(m) => break m.dev(),
            Err(_) => match probe.parent() {
                Some(p) => probe = p,
                None => bail!("{} has no existing ancestor", path.display()),
            },
        }
    };
    ensure!(
        mount_dev != root_dev && is_mount_point(mount)?,
        "refusing to fill {}: not a separate mounted filesystem",
        mount.display()
    );
    ensure!(
        dev == mount_dev && path.starts_with(mount),
        "refusing to fill {}: not on the filesystem mounted at {}",
        path.display(),
        mount.display()
    );
    Ok(())
}

/// Writes `bytes` of non-zero data to a new file `path` on `mount` (allocated on every
/// filesystem). Stops early without error on ENOSPC; returns the bytes written.
pub fn write_fill(mount: &Path, path: &Path, bytes: u64) -> Result<u64> {
    ensure_on(mount, path)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let chunk = vec![0x5au8; MIB as usize];
    let mut written = 0;
    while written < bytes {
        let n = usize::try_from((bytes - written).min(MIB)).unwrap_or(MIB as usize);
        match file.write(&chunk[..n]) {
            Ok(0) => break,
            Ok(k) => written += k as u64,
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
            Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
        }
    }
    let _ = file.sync_all();
    Ok(written)
}

/// Grows `filler` (on `mount`) until the filesystem is `used_percent` used as `df` counts it.
pub fn fill_to_used(mount: &Path, filler: &Path, used_percent: f64) -> Result<()> {
    let s = space(mount)?;
    let want_avail = (s.total as f64 * (100.0 - used_percent) / 100.0) as u64;
    if s.avail > want_avail {
        write_fill(mount, filler, s.avail - want_avail)?;
    }
    Ok(())
}

/// Fills the filesystem at `mount` completely (root's reserve included), through `filler`:
/// large writes, then ever smaller ones until not one more byte fits. Returns the bytes written.
pub fn fill_completely(mount: &Path, filler: &Path) -> Result<u64> {
    ensure_on(mount, filler)?;
    if let Some(parent) = filler.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(filler)
        .with_context(|| format!("cannot create {}", filler.display()))?;
    // The bulk at once (fallocate), so that a daemon watching the filesystem sees it go from
    // its current state to full between two polls instead of deleting while the filler still
    // grows and eating what it freed.
    let mut total = 0u64;
    let mut want = space(mount)?.free;
    while want > MIB {
        let offset = file.metadata()?.len();
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), offset, want) {
            Ok(()) => {
                total += want;
                break;
            }
            Err(rustix::io::Errno::NOSPC) => want = want / 16 * 15,
            Err(e) => return Err(e).with_context(|| format!("fallocate {}", filler.display())),
        }
    }
    let chunk = vec![0xa5u8; MIB as usize];
    for size in [MIB as usize, 64 << 10, 4096, 512, 1] {
        loop {
            match file.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(k) => total += k as u64,
                Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
                Err(e) => return Err(e).with_context(|| format!("filling {}", filler.display())),
            }
        }
    }
    // Delayed allocation (ext4) may refuse only at writeback: sync, then top up again.
    let _ = file.sync_all();
    loop {
        match file.write(&chunk[..1]) {
            Ok(k) if k > 0 => total += k as u64,
            _ => break,
        }
    }
    let _ = file.sync_all();
    Ok(total)
}

/// Shortens `filler` by `bytes` (frees that much on `mount`).
pub fn shrink(mount: &Path, filler: &Path, bytes: u64) -> Result<()> {
    ensure_on(mount, filler)?;
    let len = std::fs::metadata(filler)?.len();
    let file = std::fs::OpenOptions::new().write(true).open(filler)?;
    file.set_len(len.saturating_sub(bytes))?;
    file.sync_all()?;
    Ok(())
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

/// True when `e` is "no space left on device".
pub fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc_enospc())
}

/// A digest of the tree at `root`: every entry's relative path (bytes) → kind, size, content
/// hash, link target. Equal digests mean the tree is unchanged byte for byte. A missing root is
/// an empty digest with one `missing` entry.
pub fn digest(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    digest_into(root, root, &mut out);
    out
}

fn digest_into(root: &Path, p: &Path, out: &mut BTreeMap<Vec<u8>, String>) {
    let rel = p
        .strip_prefix(root)
        .unwrap_or(p)
        .as_os_str()
        .as_bytes()
        .to_vec();
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) => {
            out.insert(rel, format!("missing: {}", e.kind()));
            return;
        }
    };
    let desc = if meta.file_type().is_symlink() {
        match std::fs::read_link(p) {
            Ok(t) => format!("link -> {:?}", t.as_os_str()),
            Err(e) => format!("link unreadable: {}", e.kind()),
        }
    } else if meta.is_dir() {
        match std::fs::read_dir(p) {
            Ok(entries) => {
                for e in entries.flatten() {
                    digest_into(root, &e.path(), out);
                }
                "dir".to_string()
            }
            Err(e) => format!("dir unreadable: {}", e.kind()),
        }
    } else if meta.is_file() {
        match hash_file(p) {
            Ok(h) => format!("file {} {h:016x}", meta.len()),
            Err(e) => format!("file unreadable: {}", e.kind()),
        }
    } else {
        format!("special {:o}", meta.mode())
    };
    out.insert(rel, desc);
}

/// FNV-1a over the file's content.
fn hash_file(p: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(p)?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        for b in &buf[..n] {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What differs between two digests (at most `limit` lines).
pub fn digest_diff(
    before: &BTreeMap<Vec<u8>, String>,
    after: &BTreeMap<Vec<u8>, String>,
    limit: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => out.push(format!("gone: {}", shown(k))),
            Some(w) if w != v => out.push(format!("changed: {} ({v} -> {w})", shown(k))),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        out.push(format!("new: {}", shown(k)));
    }
    out.truncate(limit);
    out
}

fn shown(bytes: &[u8]) -> String {
    guardian::textpath::escape_bytes(bytes)
}

/// Allocated bytes of the tree at `root` (hard-linked inodes once), not crossing devices.
pub fn du(root: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return 0;
    };
    let mut seen = HashSet::new();
    du_into(root, meta.dev(), &mut seen)
}

fn du_into(p: &Path, dev: u64, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if meta.dev() != dev || !seen.insert((meta.dev(), meta.ino())) {
        return 0;
    }
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(p) {
            for e in entries.flatten() {
                total += du_into(&e.path(), dev, seen);
            }
        }
    }
    total
}

/// Every mount point in this process's mount table (`/proc/self/mountinfo`, octal escapes
/// decoded).
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_octal(field))))
        .collect()
}

fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            let digits = field.get(i + 1..i + 4);
            if let Some(d) = digits.filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c))) {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Lazily unmounts everything mounted strictly below `dir`, deepest first (repeatedly, for
/// mounts stacked on one another). Returns how many unmounts succeeded.
pub fn unmount_below(dir: &Path) -> usize {
    let mut done = 0;
    for _ in 0..64 {
        let mut below: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|m| m != dir && m.starts_with(dir))
            .collect();
        if below.is_empty() {
            break;
        }
        below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        let mut progress = false;
        for m in below {
            if rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH).is_ok() {
                done += 1;
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    done
}
