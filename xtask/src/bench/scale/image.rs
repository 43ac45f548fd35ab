//! The scale section's trees: a loop-mounted ext4 image per size, built once into
//! [`CACHE_DIR`] and reused while its stamp file (the tree's parameters, then its counts) matches,
//! or a fresh tmpfs generated for the run.

use super::*;

/// A generated workspace, mounted.
pub(super) struct Tree {
    pub(super) size: Size,
    pub(super) ws: PathBuf,
    pub(super) stats: TreeStats,
    pub(super) filesystem: String,
    /// "built in N s" or "reused (built …)".
    pub(super) built: String,
    stamp: Option<PathBuf>,
    _mount: Mount,
}

/// Unmounted on drop (a tmpfs by its own drop).
enum Mount {
    Image(PathBuf),
    Tmpfs(#[allow(dead_code)] Tmpfs),
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Mount::Image(mnt) = self {
            unmount_retrying(mnt);
        }
    }
}

impl Tree {
    pub(super) fn open(size: Size, base: &Path, cancel: &AtomicBool) -> Result<Tree> {
        if size.tmpfs {
            let bytes = (size.entries * 8 * 1024 + (512 << 20)).next_multiple_of(1 << 20);
            let tmpfs = Tmpfs::mount(&base.join(format!("mnt-{size}")), bytes)?;
            let ws = tmpfs.root.join("ws");
            let start = Instant::now();
            let stats = tree::generate(&ws, size.entries, SEED, cancel)?;
            return Ok(Tree {
                size,
                ws,
                stats,
                filesystem: tmpfs.describe(),
                built: format!("generated in {:.0} s", start.elapsed().as_secs_f64()),
                stamp: None,
                _mount: Mount::Tmpfs(tmpfs),
            });
        }
        let dir = Path::new(CACHE_DIR);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {CACHE_DIR}"))?;
        let image = dir.join(format!("ext4-{size}.img"));
        let stamp = dir.join(format!("ext4-{size}.stamp"));
        let image_bytes = (size.entries * 8 * 1024 + (2 << 30)).next_multiple_of(1 << 30);
        let inodes = size.entries + size.entries / 4 + 20_000;
        let key = format!(
            "layout={LAYOUT} entries={} seed={SEED:x} victim={VICTIM_ENTRIES} image={image_bytes} \
             inodes={inodes}",
            size.entries
        );
        let mnt = base.join(format!("mnt-{size}"));
        std::fs::create_dir_all(&mnt)?;
        let kept = std::fs::read_to_string(&stamp).ok();
        let reused = kept
            .as_deref()
            .and_then(|t| t.lines().next().map(|l| l == key))
            .unwrap_or(false)
            && image.is_file();
        let (stats, built) = if reused {
            mount_image(&image, &mnt)?;
            let text = kept.unwrap_or_default();
            let stats = stats_from_stamp(&text).context("the stamp has no tree stats")?;
            let when = text.lines().find_map(|l| l.strip_prefix("built "));
            (stats, format!("reused ({})", when.unwrap_or("?")))
        } else {
            let _ = std::fs::remove_file(&stamp);
            let _ = std::fs::remove_file(&image);
            check_host_space(dir, size.entries)?;
            eprintln!(
                "bench: scale: building the {size} tree in {} (once; reused later)",
                image.display()
            );
            let start = Instant::now();
            std::fs::File::create(&image)?.set_len(image_bytes)?;
            run_cmd(
                Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-N", &inodes.to_string()])
                    .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
                    .arg(&image),
            )?;
            mount_image(&image, &mnt)?;
            let stats = match tree::generate(&mnt.join("ws"), size.entries, SEED, cancel) {
                Ok(s) => s,
                Err(e) => {
                    unmount_retrying(&mnt);
                    let _ = std::fs::remove_file(&image);
                    return Err(e);
                }
            };
            syncfs(&mnt)?;
            std::fs::File::open(&image)?.sync_all()?;
            let secs = start.elapsed().as_secs_f64();
            let when = crate::bench::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
            let built = format!("{} in {secs:.0} s", when.unwrap_or_default());
            std::fs::write(
                &stamp,
                format!("{key}\n{}\nbuilt {built}\n", stamp_stats(&stats)),
            )?;
            eprintln!("bench: scale: built the {size} tree in {secs:.0} s");
            (stats, format!("built {built}"))
        };
        Ok(Tree {
            size,
            ws: mnt.join("ws"),
            stats,
            filesystem: format!(
                "ext4 on a loop-mounted sparse image ({} GiB, {} inodes) on {}",
                image_bytes >> 30,
                thousands(inodes),
                describe_fs(dir)
            ),
            built,
            stamp: Some(stamp),
            _mount: Mount::Image(mnt),
        })
    }

    /// The tree changed in a way the bench did not intend: build it afresh next time.
    pub(super) fn invalidate(&self) {
        if let Some(stamp) = &self.stamp {
            let _ = std::fs::remove_file(stamp);
        }
    }
}

/// Held while a run uses the images of [`CACHE_DIR`]: two runs at once (engineers sharing a
/// machine, CI) would mount one image twice and corrupt it. Released when dropped.
pub(super) struct CacheLock(#[allow(dead_code)] std::fs::File);

impl CacheLock {
    /// Waits (cancellably) for the other run to finish.
    pub(super) fn take(cancel: &AtomicBool) -> Result<CacheLock> {
        use rustix::fs::{flock, FlockOperation};
        std::fs::create_dir_all(CACHE_DIR).with_context(|| format!("cannot create {CACHE_DIR}"))?;
        let path = Path::new(CACHE_DIR).join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut told = false;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(CacheLock(file)),
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    if !told {
                        eprintln!(
                            "bench: scale: another run uses {CACHE_DIR}; waiting for it to end"
                        );
                        told = true;
                    }
                    check_cancel(cancel)?;
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => bail!("cannot lock {}: {e}", path.display()),
            }
        }
    }
}

fn mount_image(image: &Path, mnt: &Path) -> Result<()> {
    run_cmd(
        Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(image)
            .arg(mnt),
    )
}

/// Refuses to start a build the host's disk cannot hold (~5 KiB allocated per entry).
fn check_host_space(dir: &Path, entries: u64) -> Result<()> {
    let need = entries * 5 * 1024 + entries / 4 * 256 + (4 << 30);
    let avail = guardian::fsys::fs_space(dir)?.avail_bytes;
    ensure!(
        avail > need,
        "building {} entries needs ~{:.1} GiB free in {CACHE_DIR}, {:.1} GiB are",
        thousands(entries),
        need as f64 / (1u64 << 30) as f64,
        avail as f64 / (1u64 << 30) as f64
    );
    Ok(())
}

fn stamp_stats(s: &TreeStats) -> String {
    format!(
        "entries={} files={} dirs={} symlinks={} hard_links={} bytes={}",
        s.entries, s.files, s.dirs, s.symlinks, s.hard_links, s.bytes
    )
}

fn stats_from_stamp(text: &str) -> Option<TreeStats> {
    let line = text.lines().find(|l| l.starts_with("entries="))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(TreeStats {
        entries: field("entries")?,
        files: field("files")?,
        dirs: field("dirs")?,
        symlinks: field("symlinks")?,
        hard_links: field("hard_links")?,
        bytes: field("bytes")?,
    })
}

pub(super) fn syncfs(dir: &Path) -> Result<()> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::fs::syncfs(&fd)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_stats_survive_the_stamp() {
        let stats = TreeStats {
            entries: 10_003,
            files: 8_000,
            dirs: 1_900,
            symlinks: 50,
            hard_links: 53,
            bytes: 31_000_000,
        };
        let text = format!(
            "layout=1 entries=10000\n{}\nbuilt now\n",
            stamp_stats(&stats)
        );
        let back = stats_from_stamp(&text).unwrap();
        assert_eq!(stamp_stats(&back), stamp_stats(&stats));
        assert!(stats_from_stamp("layout=1 entries=10000\n").is_none());
    }
}
