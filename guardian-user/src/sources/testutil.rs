//! Real-filesystem fixtures shared by the fanotify and inotify tests.

use super::{ProjectDir, Sample, Source};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;

/// Serializes tests that change global kernel knobs (queue sizes are read when a group is
/// created) with the creation of sources in other tests.
pub static KNOBS: Mutex<()> = Mutex::new(());

pub fn knobs() -> std::sync::MutexGuard<'static, ()> {
    KNOBS.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn skip(test: &str, why: &str) {
    crate::testkit::skip(test, why);
}

/// A tempdir on `/tmp` (ext4 on the reference machine).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("guardian-src-")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// A tmpfs mounted on a fresh tempdir, unmounted (lazily) on drop.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount() -> std::io::Result<Tmpfs> {
        Tmpfs::mount_with(c"size=512m")
    }

    /// A tmpfs with these mount options (`size=0,nr_inodes=0`: unbounded, no counts).
    pub fn mount_with(options: &std::ffi::CStr) -> std::io::Result<Tmpfs> {
        let dir = tempdir();
        let path = dir.path().join("mnt");
        fs::create_dir(&path)?;
        rustix::mount::mount(
            "guardian-test",
            &path,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            options,
        )?;
        Ok(Tmpfs { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Sets a sysctl for the life of the guard.
pub struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    pub fn set(path: &'static str, value: &str) -> std::io::Result<Sysctl> {
        let old = fs::read_to_string(path)?;
        fs::write(path, value)?;
        Ok(Sysctl {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(self.path, &self.old) {
            eprintln!("cannot restore {} to {}: {e}", self.path, self.old);
        }
    }
}

pub fn project(id: u32, path: &Path) -> ProjectDir {
    let md = fs::symlink_metadata(path).expect("project dir");
    ProjectDir {
        id,
        path: path.into(),
        dev: md.dev(),
        ino: md.ino(),
    }
}

/// Everything drained so far.
#[derive(Default, Debug)]
pub struct Seen {
    pub growth: HashMap<u32, i64>,
    pub freed: HashMap<u32, u64>,
    pub rescan: Vec<PathBuf>,
    pub notes: Vec<String>,
}

impl Seen {
    /// Adds another record of drains.
    pub fn absorb_seen(&mut self, other: Seen) {
        for (id, bytes) in other.growth {
            *self.growth.entry(id).or_default() += bytes;
        }
        for (id, bytes) in other.freed {
            *self.freed.entry(id).or_default() += bytes;
        }
        self.rescan.extend(other.rescan);
        self.notes.extend(other.notes);
    }

    pub fn absorb(&mut self, sample: Sample) {
        for (id, bytes) in sample.growth {
            *self.growth.entry(id).or_default() += bytes;
        }
        for (id, bytes) in sample.freed {
            *self.freed.entry(id).or_default() += bytes;
        }
        self.rescan.extend(sample.rescan);
        self.notes.extend(sample.notes.into_iter().map(|n| n.text));
    }

    pub fn get(&self, id: u32) -> i64 {
        self.growth.get(&id).copied().unwrap_or(0)
    }

    /// Bytes others freed in project `id`.
    pub fn freed(&self, id: u32) -> i64 {
        i64::try_from(self.freed.get(&id).copied().unwrap_or(0)).unwrap_or(i64::MAX)
    }

    /// Net growth of project `id`: growth less what others freed.
    pub fn net(&self, id: u32) -> i64 {
        self.get(id) - self.freed(id)
    }
}

/// Runs `program` with `args` in a child process (another process than this one, which loaded
/// the source: the probe leaves its loader's frees out) and checks it succeeded.
pub fn run_child(program: &str, args: &[&std::ffi::OsStr]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Issue 17: a project writes 50 MiB (ten 5 MiB files) and another process deletes them; then
/// an 8 MiB file is truncated to 1 MiB and another emptied through `O_TRUNC`, by other
/// processes too. Returns what was seen: the test of each source checks it (the eBPF source
/// counts writes as growth and deletions as `freed`; the size-tracking ones report changes of
/// sizes) — net growth must be ~0 after the deletion and −15 MiB after the truncations.
pub fn write_then_delete(source: &mut dyn Source, dir: &Path, id: u32) -> (Seen, Seen) {
    let mut seen = Seen::default();
    for i in 0..10 {
        write_with_write(&dir.join(format!("tmp-{i}.o")), 5 * MIB, 1 << 20);
    }
    settle(source, &mut seen, &[(id, 50 * MIB as i64)]);
    let files: Vec<PathBuf> = (0..10).map(|i| dir.join(format!("tmp-{i}.o"))).collect();
    let mut args: Vec<&std::ffi::OsStr> = vec!["-f".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    run_child("rm", &args);
    let mut deleted = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        deleted.absorb(source.drain().expect("drain"));
        if seen.net(id) + deleted.net(id) <= MIB as i64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    settle(source, &mut deleted, &[]);
    let (a, b) = (dir.join("trunc-a"), dir.join("trunc-b"));
    write_with_write(&a, 8 * MIB, 1 << 20);
    write_with_write(&b, 8 * MIB, 1 << 20);
    let mut truncated = Seen::default();
    settle(source, &mut truncated, &[(id, 16 * MIB as i64)]);
    run_child("truncate", &["-s".as_ref(), "1M".as_ref(), a.as_os_str()]);
    run_child("sh", &["-c".as_ref(), ": > \"$0\"".as_ref(), b.as_os_str()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        truncated.absorb(source.drain().expect("drain"));
        if truncated.net(id) <= MIB as i64 + MIB as i64 / 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    settle(source, &mut truncated, &[]);
    seen.absorb_seen(deleted);
    (seen, truncated)
}

fn within(got: i64, want: i64, percent: f64) -> bool {
    (got - want).abs() as f64 <= want.abs().max(MIB as i64) as f64 * percent / 100.0
}

/// Drains until every expected total is within 2% and nothing changed for a few drains,
/// or a minute passed. Returns whether the expectation was met.
pub fn settle(source: &mut dyn Source, seen: &mut Seen, want: &[(u32, i64)]) -> bool {
    settle_within(source, seen, want, 2.0)
}

/// [`settle`] with exact totals.
pub fn settle_exact(source: &mut dyn Source, seen: &mut Seen, want: &[(u32, i64)]) -> bool {
    settle_within(source, seen, want, 0.0)
}

fn settle_within(
    source: &mut dyn Source,
    seen: &mut Seen,
    want: &[(u32, i64)],
    percent: f64,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    loop {
        let sample = source.drain().expect("drain");
        let changed = sample != Sample::default();
        seen.absorb(sample);
        let ok = want
            .iter()
            .all(|(id, w)| within(seen.get(*id), *w, percent));
        quiet = if changed { 0 } else { quiet + 1 };
        if ok && quiet >= 5 {
            return true;
        }
        if Instant::now() > deadline {
            return ok;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`write_then_delete`] for a source whose growth is a change of sizes (fanotify, inotify):
/// the deletion is −50 MiB of growth (net ≈ 0), the truncations −15 MiB; `freed` stays empty.
pub fn net_of_sizes(source: &mut dyn Source, base: &Path, label: &str) {
    let dir = base.join("churn");
    fs::create_dir(&dir).expect("project dir");
    source.watch_and_wait(&[project(1, &dir)]).expect("watch");
    source.drain().expect("drain");
    let (written, truncated) = write_then_delete(source, &dir, 1);
    eprintln!(
        "{label}: net {} after 50 MiB written and deleted; {} after 16 MiB written and 15 MiB \
         truncated",
        written.net(1),
        truncated.net(1)
    );
    let mib = MIB as i64;
    assert!(
        written.net(1).abs() <= mib / 2,
        "{label}: net ≈ 0 after the deletion: {written:?}"
    );
    assert!(
        (truncated.net(1) - mib).abs() <= mib / 2,
        "{label}: 1 MiB left after the truncations: {truncated:?}"
    );
    assert!(written.freed.is_empty() && truncated.freed.is_empty());
}

pub fn write_with_write(path: &Path, bytes: u64, chunk: usize) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for write");
    let buf = vec![0x5au8; chunk];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        f.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
}

pub fn write_with_pwrite(path: &Path, bytes: u64, chunk: usize) {
    let f = File::create(path).expect("create");
    let buf = vec![0xa5u8; chunk];
    let mut off = 0;
    while off < bytes {
        let n = (bytes - off).min(chunk as u64) as usize;
        f.write_all_at(&buf[..n], off).expect("pwrite");
        off += n as u64;
    }
}

pub fn write_with_writev(path: &Path, bytes: u64) {
    let mut f = File::create(path).expect("create");
    let (a, b, c) = (
        vec![1u8; 256 << 10],
        vec![2u8; 512 << 10],
        vec![3u8; 256 << 10],
    );
    let mut left = bytes as usize;
    while left > 0 {
        let mut parts = Vec::new();
        let mut room = left;
        for buf in [&a, &b, &c] {
            let n = room.min(buf.len());
            if n > 0 {
                parts.push(IoSlice::new(&buf[..n]));
                room -= n;
            }
        }
        let n = f.write_vectored(&parts).expect("writev");
        assert!(n > 0, "writev wrote nothing");
        left -= n;
    }
}

/// The acceptance workload. Projects A (id 1) and B (id 2) and an outside dir under `base`;
/// phase 1 writes 64 MiB into A (write, pwrite, writev, into nested dirs made after
/// `watch`, plus a rename and a written-then-deleted file), 8 MiB into B and 16 MiB outside;
/// phase 2 moves a 20 MiB subtree from A to B; phase 3 deletes a 40 MiB subtree of A.
pub fn accuracy(source: &mut dyn Source, base: &Path, label: &str) -> Vec<String> {
    let (a, b, out) = (base.join("A"), base.join("B"), base.join("outside"));
    for dir in [&a, &b, &out, &a.join("keep"), &b.join("sub")] {
        fs::create_dir_all(dir).unwrap();
    }
    write_with_write(&a.join("old.bin"), 2 * MIB, 1 << 20);
    write_with_write(&b.join("pre.bin"), MIB, 1 << 20);
    write_with_write(&out.join("pre.bin"), MIB, 1 << 20);
    source
        .watch_and_wait(&[project(1, &a), project(2, &b)])
        .expect("watch");
    let mut seen = Seen::default();
    let mut lines = Vec::new();
    let mut check = |source: &mut dyn Source, seen: &mut Seen, phase: &str, want_a, want_b| {
        let ok = settle(source, seen, &[(1, want_a), (2, want_b)]);
        let (ga, gb) = (seen.get(1), seen.get(2));
        let err = |g: i64, w: i64| (g - w) as f64 * 100.0 / (w.abs().max(1)) as f64;
        let line = format!(
            "{label} {phase}: A {ga} B (want {want_a}, error {:+.3}%), B {gb} B (want {want_b}, \
             error {:+.3}%), other ids {:?}, rescans {}",
            err(ga, want_a),
            err(gb, want_b),
            seen.growth.keys().filter(|k| **k > 2).collect::<Vec<_>>(),
            seen.rescan.len(),
        );
        eprintln!("{line}");
        assert!(ok, "{line}");
        assert!(
            seen.growth.keys().all(|id| *id == 1 || *id == 2),
            "growth for unknown projects: {line}"
        );
        lines.push(line);
    };
    let mib = MIB as i64;

    // Phase 1.
    write_with_write(&a.join("old.bin"), 4 * MIB, 256 << 10);
    write_with_write(&out.join("x.bin"), 8 * MIB, 1 << 20);
    fs::create_dir_all(a.join("new1/new2/new3")).unwrap();
    write_with_write(&a.join("new1/new2/new3/f1.bin"), 18 * MIB, 1 << 20);
    write_with_pwrite(&a.join("new1/p.bin"), 20 * MIB, 1 << 20);
    fs::create_dir_all(a.join("w/x")).unwrap();
    write_with_writev(&a.join("w/x/v.bin"), 20 * MIB);
    write_with_write(&a.join("keep/r1.bin"), 2 * MIB, 64 << 10);
    fs::rename(a.join("keep/r1.bin"), a.join("new1/r2.bin")).unwrap();
    write_with_write(&a.join("keep/tmp.bin"), 8 * MIB, 1 << 20);
    fs::remove_file(a.join("keep/tmp.bin")).unwrap();
    fs::create_dir_all(b.join("sub/deeper")).unwrap();
    write_with_write(&b.join("sub/deeper/b.bin"), 8 * MIB, 128 << 10);
    fs::create_dir_all(out.join("o1/o2")).unwrap();
    write_with_write(&out.join("o1/o2/y.bin"), 8 * MIB, 1 << 20);
    check(source, &mut seen, "phase 1 (writes)", 64 * mib, 8 * mib);

    // Phase 2: a subtree moves from A to B.
    fs::rename(a.join("w"), b.join("moved")).unwrap();
    write_with_write(&out.join("z.bin"), 4 * MIB, 1 << 20);
    check(source, &mut seen, "phase 2 (move A→B)", 44 * mib, 28 * mib);

    // Phase 3: a subtree of A is deleted.
    fs::remove_dir_all(a.join("new1")).unwrap();
    fs::remove_dir_all(out.join("o1")).unwrap();
    check(source, &mut seen, "phase 3 (delete)", 4 * mib, 28 * mib);
    lines
}

/// The drift workload: `rounds` times, `files` × 1 KiB files are created in `base/A/batch`,
/// counted, and deleted with the directory (`rm -rf batch`), which the next round makes
/// again; the file names differ per round. ext4 gives the new `batch` the inode number of the
/// deleted one more often than not. Every round's total must be exact, and zero at the end.
/// Returns how many rounds reused the inode number.
pub fn recreated_dir_rounds(source: &mut dyn Source, base: &Path, files: usize) -> usize {
    let a = base.join("A");
    fs::create_dir_all(&a).unwrap();
    source.watch_and_wait(&[project(1, &a)]).expect("watch");
    let mut seen = Seen::default();
    let buf = vec![1u8; 1024];
    let mut last_ino = None;
    let (mut reused, mut round) = (0, 0);
    while round < 10 || (reused < 3 && round < 40) {
        let batch = a.join("batch");
        fs::create_dir(&batch).unwrap();
        let ino = fs::metadata(&batch).unwrap().ino();
        reused += usize::from(last_ino == Some(ino));
        last_ino = Some(ino);
        for i in 0..files {
            fs::write(batch.join(format!("r{round}-f{i}")), &buf).unwrap();
        }
        let want = (files * 1024) as i64;
        assert!(
            settle_exact(source, &mut seen, &[(1, want)]),
            "round {round}: {} bytes counted, {want} written ({reused} reused inode(s))",
            seen.get(1)
        );
        fs::remove_dir_all(&batch).unwrap();
        round += 1;
    }
    assert!(
        settle_exact(source, &mut seen, &[(1, 0)]),
        "after {round} rounds ({reused} reused the inode) the project counts {} bytes, 0 are left",
        seen.get(1)
    );
    eprintln!("{round} rounds of {files} files, {reused} reused the directory's inode: exact");
    reused
}

/// Creates `dirs` × `files` small files of `size` bytes under `root` (new dirs).
pub fn burst(root: &Path, dirs: usize, files: usize, size: usize) -> u64 {
    let buf = vec![7u8; size];
    for d in 0..dirs {
        let dir = root.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            fs::write(dir.join(format!("f{f}")), &buf).unwrap();
        }
    }
    (dirs * files * size) as u64
}
