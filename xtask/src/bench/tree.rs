//! Generates a realistic build-node tree: projects with sources and deeply nested
//! `node_modules` (many small files, scoped packages, nested dependencies, `.bin` symlinks,
//! some dangling symlinks and hard links shared across packages as pnpm stores make them).
//! Everything is created relative to directory fds; the same seed and size give the same tree.

use anyhow::{bail, Context, Result};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Independent generators run in parallel; fixed so the tree does not depend on the machine.
const SHARDS: u64 = 4;
/// Largest file written.
const MAX_FILE: usize = 128 * 1024;

/// What a generated tree holds. `entries` counts every name below the root.
#[derive(Clone, Copy, Debug, Default)]
pub struct TreeStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Extra names of already existing files (`linkat`).
    pub hard_links: u64,
    /// Bytes written (apparent size of the regular files, each inode once).
    pub bytes: u64,
}

impl TreeStats {
    fn add(&mut self, o: &TreeStats) {
        self.entries += o.entries;
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.hard_links += o.hard_links;
        self.bytes += o.bytes;
    }
}

/// Creates `root` (which must not exist) and fills it with at least `entries` entries.
pub fn generate(root: &Path, entries: u64, seed: u64, cancel: &AtomicBool) -> Result<TreeStats> {
    std::fs::create_dir(root).with_context(|| format!("cannot create {}", root.display()))?;
    let data: Vec<u8> = (0..MAX_FILE).map(|i| b"guardian\n"[i % 9]).collect();
    let results: Vec<Result<TreeStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SHARDS)
            .map(|shard| {
                let target = entries / SHARDS + u64::from(shard < entries % SHARDS);
                let data = &data;
                s.spawn(move || {
                    let root_fd = open_dir(CWD, root)?;
                    let mut g = Gen {
                        rng: Rng::new(seed ^ (shard + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                        stats: TreeStats::default(),
                        target,
                        link_sources: Vec::new(),
                        cancel,
                        data,
                    };
                    let mut project = 0;
                    while !g.full() {
                        let budget = g.rng.range(5_000, 40_000);
                        g.project(
                            root_fd.as_fd(),
                            root,
                            &format!("app-{shard}-{project}"),
                            budget,
                        )?;
                        project += 1;
                    }
                    Ok(g.stats)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("generator thread panicked"))
            .collect()
    });
    let mut total = TreeStats::default();
    for r in results {
        total.add(&r?);
    }
    Ok(total)
}

struct Gen<'a> {
    rng: Rng,
    stats: TreeStats,
    target: u64,
    /// Files that later entries may hard-link to (absolute paths), a bounded sample.
    link_sources: Vec<PathBuf>,
    cancel: &'a AtomicBool,
    data: &'a [u8],
}

impl Gen<'_> {
    fn full(&self) -> bool {
        self.stats.entries >= self.target
    }

    /// One project: a few top-level files, a source tree, and `node_modules` until `budget`
    /// entries (or the shard's target) are reached.
    fn project(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_path: &Path,
        name: &str,
        budget: u64,
    ) -> Result<()> {
        let end = (self.stats.entries + budget).min(self.target);
        let path = parent_path.join(name);
        let dir = self.dir(parent, name)?;
        let fd = dir.as_fd();
        let (manifest, readme) = (self.rng.range(400, 2_400), self.rng.range(200, 9_000));
        self.file(fd, &path, "package.json", manifest as usize)?;
        self.file(fd, &path, "README.md", readme as usize)?;
        self.file(fd, &path, ".gitignore", 40)?;
        self.file(fd, &path, "tsconfig.json", 600)?;
        self.source_dir(fd, &path, "src", 0)?;
        let nm_path = path.join("node_modules");
        let nm = self.dir(fd, "node_modules")?;
        let bin = self.dir(nm.as_fd(), ".bin")?;
        let mut i = 0;
        while self.stats.entries < end {
            if self.rng.chance(0.15) {
                let scope = format!("@scope-{i}");
                let scope_path = nm_path.join(&scope);
                let scope_fd = self.dir(nm.as_fd(), &scope)?;
                for j in 0..self.rng.range(1, 6) {
                    self.package(
                        scope_fd.as_fd(),
                        &scope_path,
                        &format!("pkg-{i}-{j}"),
                        0,
                        None,
                    )?;
                }
            } else {
                self.package(
                    nm.as_fd(),
                    &nm_path,
                    &format!("pkg-{i}"),
                    0,
                    Some(bin.as_fd()),
                )?;
            }
            i += 1;
        }
        Ok(())
    }

    /// One npm package; `bin` is the `.bin` dir its command is linked from (top level only).
    fn package(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_path: &Path,
        name: &str,
        depth: u32,
        bin: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let path = parent_path.join(name);
        let dir = self.dir(parent, name)?;
        let fd = dir.as_fd();
        let manifest = self.rng.range(300, 3_000);
        self.file(fd, &path, "package.json", manifest as usize)?;
        if self.rng.chance(0.7) {
            let size = self.size();
            self.file(fd, &path, "README.md", size)?;
        }
        if self.rng.chance(0.8) {
            self.file(fd, &path, "LICENSE", 1_078)?;
        }
        let size = self.size();
        self.file(fd, &path, "index.js", size)?;
        self.source_dir(fd, &path, "lib", 1)?;
        if self.rng.chance(0.4) {
            let dist_path = path.join("dist");
            let dist = self.dir(fd, "dist")?;
            for k in 0..self.rng.range(1, 12) {
                let size = self.size();
                self.file(dist.as_fd(), &dist_path, &format!("bundle-{k}.js"), size)?;
                self.file(
                    dist.as_fd(),
                    &dist_path,
                    &format!("bundle-{k}.js.map"),
                    size * 3,
                )?;
            }
        }
        if self.rng.chance(0.3) {
            let size = self.rng.range(100, 4_000);
            self.file(fd, &path, "index.d.ts", size as usize)?;
            if self.rng.chance(0.2) {
                self.symlink("index.d.ts", fd, "types.d.ts")?;
            }
        }
        if self.rng.chance(0.02) {
            self.symlink("../missing/target.js", fd, "broken-link.js")?;
        }
        if let Some(bin) = bin {
            if self.rng.chance(0.25) {
                let bin_dir = self.dir(fd, "bin")?;
                self.file(bin_dir.as_fd(), &path.join("bin"), "cli.js", 2_000)?;
                self.symlink(&format!("../{name}/bin/cli.js"), bin, name)?;
            }
        }
        if depth < 3 && self.rng.chance(0.2) {
            let nm_path = path.join("node_modules");
            let nm = self.dir(fd, "node_modules")?;
            for k in 0..self.rng.range(1, 5) {
                self.package(
                    nm.as_fd(),
                    &nm_path,
                    &format!("dep-{depth}-{k}"),
                    depth + 1,
                    None,
                )?;
            }
        }
        Ok(())
    }

    /// A source directory: some files and, up to two levels down, a few subdirectories.
    fn source_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_path: &Path,
        name: &str,
        level: u32,
    ) -> Result<()> {
        let path = parent_path.join(name);
        let dir = self.dir(parent, name)?;
        let files = if self.rng.chance(0.7) {
            self.rng.range(1, 8)
        } else {
            self.rng.range(8, 40)
        };
        const EXT: [&str; 6] = ["js", "cjs", "mjs", "ts", "json", "d.ts"];
        for k in 0..files {
            let ext = EXT[self.rng.range(0, EXT.len() as u64) as usize];
            let size = self.size();
            self.file(dir.as_fd(), &path, &format!("module-{k}.{ext}"), size)?;
        }
        if level < 3 && self.rng.chance(0.35) {
            for k in 0..self.rng.range(1, 4) {
                self.source_dir(dir.as_fd(), &path, &format!("part-{k}"), level + 1)?;
            }
        }
        Ok(())
    }

    /// File sizes of a `node_modules` tree: mostly under 6 KiB, a few up to 128 KiB.
    fn size(&mut self) -> usize {
        let r = self.rng.unit();
        let (lo, hi) = if r < 0.05 {
            (0, 1)
        } else if r < 0.50 {
            (1, 1_024)
        } else if r < 0.90 {
            (1_024, 6_144)
        } else if r < 0.99 {
            (6_144, 24_576)
        } else {
            (24_576, MAX_FILE as u64 / 3)
        };
        self.rng.range(lo, hi) as usize
    }

    fn dir(&mut self, parent: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755))
            .with_context(|| format!("mkdir {name}"))?;
        self.stats.entries += 1;
        self.stats.dirs += 1;
        open_dir(parent, name)
    }

    /// A regular file of `size` bytes, or (3 % of the time) a hard link to an earlier file.
    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        name: &str,
        size: usize,
    ) -> Result<()> {
        self.stats.entries += 1;
        if !self.link_sources.is_empty() && self.rng.chance(0.03) {
            let source =
                &self.link_sources[self.rng.range(0, self.link_sources.len() as u64) as usize];
            rustix::fs::linkat(CWD, source, dir, name, AtFlags::empty())
                .with_context(|| format!("link {} to {name}", source.display()))?;
            self.stats.hard_links += 1;
            return Ok(());
        }
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .with_context(|| format!("create {}", dir_path.join(name).display()))?;
        let mut left = &self.data[..size.min(MAX_FILE)];
        while !left.is_empty() {
            let n = rustix::io::write(&fd, left).context("write")?;
            left = &left[n..];
        }
        self.stats.files += 1;
        self.stats.bytes += size as u64;
        if self.rng.chance(0.05) {
            let path = dir_path.join(name);
            if self.link_sources.len() < 1_024 {
                self.link_sources.push(path);
            } else {
                let i = self.rng.range(0, 1_024) as usize;
                self.link_sources[i] = path;
            }
        }
        Ok(())
    }

    fn symlink(&mut self, target: &str, dir: BorrowedFd<'_>, name: &str) -> Result<()> {
        rustix::fs::symlinkat(target, dir, name).with_context(|| format!("symlink {name}"))?;
        self.stats.entries += 1;
        self.stats.symlinks += 1;
        Ok(())
    }
}

fn open_dir<Fd: AsFd, P: rustix::path::Arg>(parent: Fd, name: P) -> Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// splitmix64: small, fast and good enough to shape a test tree.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}
