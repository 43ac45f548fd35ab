//! The scratch filesystem the benchmark works on: a fresh ext4 image loop-mounted under a
//! temporary directory, or, when that is not possible (not root, no loop devices), a plain
//! directory on the root filesystem. Dropping it unmounts and removes everything.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Scratch {
    /// The temporary directory holding the image, the mount point and the audit log.
    pub base: PathBuf,
    /// Where trees are generated.
    pub root: PathBuf,
    image: Option<PathBuf>,
    mounted: bool,
    /// A line describing the filesystem, for the report.
    pub filesystem: String,
    /// Why the loop mount was not used, when it was not.
    pub fallback_reason: Option<String>,
}

impl Scratch {
    /// Creates an ext4 image of `size_bytes` (sparse) with at least `inodes` inodes and mounts
    /// it; falls back to a directory on the root filesystem.
    pub fn create(size_bytes: u64, inodes: u64) -> Result<Scratch> {
        // /var/tmp rather than /tmp: it is on the root filesystem even where /tmp is a tmpfs.
        let parent = Path::new("/var/tmp");
        let base = parent.join(format!("guardian-bench-{}", std::process::id()));
        std::fs::create_dir(&base).with_context(|| format!("cannot create {}", base.display()))?;
        let mnt = base.join("mnt");
        std::fs::create_dir(&mnt)?;
        let mut scratch = Scratch {
            base: base.clone(),
            root: mnt.clone(),
            image: None,
            mounted: false,
            filesystem: String::new(),
            fallback_reason: None,
        };
        let host = describe_fs(parent);
        match scratch.mount_image(size_bytes, inodes) {
            Ok(()) => {
                scratch.filesystem = format!(
                    "ext4, fresh loop-mounted image ({} GiB sparse, {} inodes), image on {host}",
                    size_bytes >> 30,
                    super::thousands(inodes)
                );
            }
            Err(e) => {
                scratch.root = base.join("tree");
                std::fs::create_dir(&scratch.root)?;
                scratch.filesystem = format!("{host}, plain directory (NO loop mount)");
                scratch.fallback_reason = Some(format!("{e:#}"));
            }
        }
        Ok(scratch)
    }

    fn mount_image(&mut self, size_bytes: u64, inodes: u64) -> Result<()> {
        if !rustix::process::geteuid().is_root() {
            bail!("not running as root");
        }
        let image = self.base.join("fs.img");
        let file = std::fs::File::create(&image)?;
        file.set_len(size_bytes)?;
        drop(file);
        self.image = Some(image.clone());
        // Inode tables and journal initialised now, so no ext4lazyinit thread writes in the
        // background while we measure.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-N", &inodes.to_string()])
            .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&image)
            .arg(&self.root))?;
        self.mounted = true;
        Ok(())
    }
}

impl Scratch {
    /// Writes everything generated so far to disk: the scratch filesystem, then the image file
    /// holding it, so no writeback of a previous step runs while the next one is measured.
    pub fn settle(&self) -> Result<()> {
        let dir = rustix::fs::open(
            &self.root,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        rustix::fs::syncfs(&dir)?;
        if let Some(image) = &self.image {
            std::fs::File::open(image)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            unmount_retrying(&self.root);
        }
        // The loop device was set up by mount(8) with autoclear: it goes with the unmount.
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            eprintln!("bench: cannot remove {}: {e}", self.base.display());
        }
    }
}

/// Unmounts `path`, retrying for 2 s while it is busy, then detaching it lazily.
pub(super) fn unmount_retrying(path: &Path) {
    for _ in 0..20 {
        match rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => return,
            Err(rustix::io::Errno::BUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(e) => {
                eprintln!("bench: cannot unmount {}: {e}", path.display());
                return;
            }
        }
    }
    eprintln!("bench: {} busy; detaching it lazily", path.display());
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
}

/// A temporary directory on the root filesystem (`/var/tmp/guardian-bench-PID-NAME`) for
/// configs, state, audit logs and mount points; removed with everything in it on drop.
pub struct TempBase {
    pub path: PathBuf,
}

impl TempBase {
    pub fn create(name: &str) -> Result<TempBase> {
        let path =
            Path::new("/var/tmp").join(format!("guardian-bench-{}-{name}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempBase { path })
    }
}

impl Drop for TempBase {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("bench: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// A fresh tmpfs of a given size mounted on an (empty, existing) directory; unmounted on drop.
/// Needs root.
pub struct Tmpfs {
    pub root: PathBuf,
    pub size: u64,
}

impl Tmpfs {
    pub fn mount(root: &Path, size: u64) -> Result<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            bail!("mounting a tmpfs needs root");
        }
        std::fs::create_dir_all(root)?;
        let data = std::ffi::CString::new(format!("size={size},mode=0755"))?;
        rustix::mount::mount(
            "tmpfs",
            root,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .with_context(|| format!("cannot mount a tmpfs on {}", root.display()))?;
        Ok(Tmpfs {
            root: root.to_path_buf(),
            size,
        })
    }

    /// "tmpfs, fresh, size=… " for the report.
    pub fn describe(&self) -> String {
        format!("tmpfs (fresh mount, size={} MiB)", self.size >> 20)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount_retrying(&self.root);
    }
}

pub(super) fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// "ext4 on /dev/vda" for the filesystem holding `path`, from /proc/self/mountinfo.
pub fn describe_fs(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return "unknown filesystem".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 2))
        else {
            continue;
        };
        let mount = mount.replace("\\040", " ");
        if path.starts_with(&mount) && best.as_ref().is_none_or(|(len, _)| mount.len() >= *len) {
            best = Some((mount.len(), format!("{fstype} on {source}")));
        }
    }
    best.map(|(_, d)| d)
        .unwrap_or_else(|| "unknown filesystem".into())
}
