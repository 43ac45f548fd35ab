//! `guardian demo`: mounts a tmpfs sandbox, fills it with realistic project dirs and a running
//! task, starts the real daemon on it while a writer fills the disk, and prints what Guardian
//! sees and does. Everything it creates lives inside the sandbox, which it unmounts at the end.

use super::EXIT_USAGE;
use anyhow::{bail, Context};
use guardian::cleanup::audit::read_records;
use guardian::config::{human_bytes, ByteSize};
use guardian::fsys;
use guardian::textpath::shown;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

const MIB: usize = 1 << 20;

pub fn run(size: &str, write_percent: u64) -> anyhow::Result<ExitCode> {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "guardian demo: needs root to mount a tmpfs sandbox (it never touches your real disks); \
             run it with sudo"
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let bytes = ByteSize::parse(size).map_err(|e| super::UsageError(format!("--size: {e}")))?;
    if bytes.0 < 64 * MIB as u64 {
        return Err(super::UsageError("--size: the sandbox needs at least 64MiB".into()).into());
    }
    let sandbox = Sandbox::mount(bytes.0)?;
    let result = demo_in(&sandbox, write_percent);
    drop(sandbox);
    result
}

/// A tmpfs mounted on a fresh directory; unmounted and removed on drop.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn mount(bytes: u64) -> anyhow::Result<Sandbox> {
        // A fresh, unpredictable mount point, created exclusively: nothing another user made
        // in the temp dir beforehand (a symlink, say) can become the place root mounts on.
        let tmp = std::env::temp_dir();
        let dir = fsys::files::make_private_dir(&tmp, "guardian-demo-")
            .with_context(|| format!("creating a sandbox dir in {}", shown(&tmp)))?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0755"))
            .arg("guardian-demo")
            .arg(&dir)
            .status()
            .context("running mount")?;
        if !status.success() {
            let _ = std::fs::remove_dir(&dir);
            bail!("mount -t tmpfs failed ({status}) on {}", shown(&dir));
        }
        Ok(Sandbox { dir })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A child process killed on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo_in(sandbox: &Sandbox, write_percent: u64) -> anyhow::Result<ExitCode> {
    let root = &sandbox.dir;
    let dispatch = root.join("dispatch");
    let total = fsys::fs_space(root)?.total_bytes as usize;
    println!(
        "sandbox: tmpfs of {} at {}",
        human_bytes(total as u64),
        shown(root)
    );

    // Three finished projects with regenerable artifacts, one running task, protected dirs.
    let unit = total / 100;
    // (name, node_modules, .git, sources in % of the disk, last activity in days ago)
    let projects = [
        ("api-server", 12, 5, 3, 3),
        ("web-ui", 14, 4, 3, 2),
        ("ml-pipeline", 8, 6, 4, 1),
        ("live-task", 4, 1, 2, 0),
    ];
    for (name, node_modules, git, src, days) in projects {
        let dir = dispatch.join(name);
        make_project(
            &dir,
            node_modules * unit,
            git * unit,
            src * unit,
            days * 86400,
        )?;
    }
    std::fs::create_dir_all(dispatch.join("dispatch-worker"))?;
    std::fs::create_dir_all(dispatch.join("output"))?;
    write_file(&dispatch.join("output/results.json"), unit)?;
    let _task = Reaped(
        Command::new("sleep")
            .arg("3600")
            .current_dir(dispatch.join("live-task"))
            .spawn()
            .context("starting the pretend running task")?,
    );

    let config_path = root.join("guardian.toml");
    let audit = root.join("guardian/audit.jsonl");
    std::fs::write(&config_path, demo_config(&dispatch, root))?;
    print_df("before", root)?;
    println!("running: guardian run --config {}", shown(&config_path));
    let _daemon = Reaped(
        Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("GUARDIAN_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("starting the daemon")?,
    );

    // The running task writes its output at a steady pace, filling the disk.
    let filler = dispatch.join("live-task/checkpoint.bin");
    let mut file = std::fs::File::create(&filler)?;
    let chunk = vec![0x5au8; MIB];
    let started = Instant::now();
    let mut seen = 0;
    let mut written = 0usize;
    let mut enospc = false;
    let budget = total * write_percent as usize / 100;
    let step = (2 * unit / MIB).max(1);
    while written < budget {
        for _ in 0..step {
            match file.write_all(&chunk) {
                Ok(()) => written += MIB,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => enospc = true,
                Err(e) => return Err(e.into()),
            }
        }
        std::thread::sleep(Duration::from_millis(250));
        let space = fsys::fs_space(root)?;
        println!(
            "[{:>5.1}s] task wrote {:>9}, free {:>5.1}%",
            started.elapsed().as_secs_f64(),
            human_bytes(written as u64),
            space.avail_percent()
        );
        seen = print_new_audit_lines(&audit, seen);
    }
    std::thread::sleep(Duration::from_secs(2));
    let _ = seen;
    print_new_audit_lines(&audit, seen);
    print_df("after", root)?;
    println!("what is left in {}:", shown(&dispatch));
    for entry in std::fs::read_dir(&dispatch)?.flatten() {
        let usage = guardian::scan::scan_path(&entry.path())?.tally.usage();
        println!(
            "  {:<18} {:>10}",
            entry.file_name().to_string_lossy(),
            human_bytes(usage.allocated)
        );
    }
    println!(
        "the running task {} ENOSPC; its dir and the protected dirs were never touched",
        if enospc { "DID hit" } else { "never hit" }
    );
    Ok(ExitCode::SUCCESS)
}

fn demo_config(dispatch: &Path, root: &Path) -> String {
    format!(
        r#"[daemon]
poll_interval = "250ms"
audit_log = "{root}/guardian/audit.jsonl"
state_dir = "{root}/guardian/state"
# The sandbox's projects were made seconds ago (activity comes from ctime, which cannot be
# back-dated): a short window lets phase 2 show. The default is 15m.
active_within = "2s"

[thresholds]
cleanup_free = "20%"
critical_free = "10%"
target_free = "30%"

[[workspaces]]
path = "{dispatch}"
protect = ["dispatch-worker", "output", "task-wrapper.sh"]

[[rules]]
name = "regenerable"
names = ["node_modules", ".git", "__pycache__"]

[[rules]]
name = "old-logs"
globs = ["*.log"]
older_than = "1h"
"#,
        root = shown(root),
        dispatch = shown(dispatch)
    )
}

/// A project with `node_modules`, `.git`, sources and a log, last touched `age_secs` ago.
fn make_project(
    dir: &Path,
    node_modules: usize,
    git: usize,
    src: usize,
    age_secs: u64,
) -> anyhow::Result<()> {
    for (sub, bytes, files) in [
        ("node_modules", node_modules, 40),
        (".git/objects", git, 10),
        ("src", src, 8),
    ] {
        for i in 0..files {
            let pkg = dir.join(sub).join(format!("pkg{}", i % 7));
            std::fs::create_dir_all(&pkg)?;
            write_file(&pkg.join(format!("f{i}.bin")), bytes / files)?;
        }
    }
    write_file(&dir.join("build.log"), 256 * 1024)?;
    let when = SystemTime::now() - Duration::from_secs(age_secs);
    set_tree_mtime(dir, when)?;
    Ok(())
}

fn write_file(path: &Path, bytes: usize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, vec![0xa5u8; bytes]).with_context(|| format!("writing {}", shown(path)))
}

fn set_tree_mtime(dir: &Path, when: SystemTime) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let ft = entry.file_type()?;
        if ft.is_dir() {
            set_tree_mtime(&entry.path(), when)?;
        } else if ft.is_file() {
            std::fs::File::options()
                .write(true)
                .open(entry.path())?
                .set_modified(when)?;
        }
    }
    std::fs::File::open(dir)?.set_modified(when)?;
    Ok(())
}

fn print_df(when: &str, root: &Path) -> anyhow::Result<()> {
    let s = fsys::fs_space(root)?;
    println!(
        "{when}: {} used of {}, {} free ({:.1}%)",
        human_bytes(s.total_bytes - s.avail_bytes),
        human_bytes(s.total_bytes),
        human_bytes(s.avail_bytes),
        s.avail_percent()
    );
    Ok(())
}

fn print_new_audit_lines(audit: &Path, seen: usize) -> usize {
    let records = read_records(audit).unwrap_or_default();
    // Intent lines (written before each deletion) are followed by their outcome: show those.
    for r in records
        .iter()
        .skip(seen)
        .filter(|r| r.outcome != guardian::cleanup::audit::INTENT)
    {
        println!(
            "   guardian: {} {} (rule {}, phase {}, est {}, freed {}){}",
            r.outcome,
            shown(&r.path),
            r.rule,
            r.phase,
            human_bytes(r.bytes_estimated),
            human_bytes(r.bytes_freed),
            r.error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
    }
    records.len().max(seen)
}
