//! The eBPF source: loads Guardian's probe (built by `cargo xtask build-ebpf`, embedded at build
//! time), hands it the running kernel's struct offsets read from BTF, registers each project dir
//! as (dev, ino) → id, and reads the per-CPU counters on each drain. Tries fexit on the VFS
//! write functions first and falls back to the syscalls' exit tracepoints where the kernel
//! refuses BPF trampolines.
//!
//! What it does not see: stores through `mmap`, io_uring writes, writes by kernel threads (NFS
//! server, loop devices), and data that never reaches the page cache as a syscall. `statvfs`
//! remains the ground truth for free space; this source says *who* is writing *where*.

use super::{CgroupBytes, ProjectDir, Sample, Source, SourceError};
use aya::maps::{HashMap as BpfHashMap, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::{FExit, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use guardian_common::{
    kernel_dev, CgroupKey, CgroupSlot, FileKey, FileSlot, InodeKey, KernelOffsets, ProjectStats,
    FILE_CACHE_SLOTS, MAX_PROJECTS,
};
use std::collections::HashMap;
use std::path::Path;

/// The probe object, empty when this binary was built without it.
static PROBE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guardian-probe.o"));

/// Set to force the probe to fail to load (tests of the fallback).
pub const FORCE_FAILURE_ENV: &str = "GUARDIAN_FORCE_EBPF_FAILURE";

/// Every write-family and allocating syscall; the probe's program `exit_<name>` attaches to
/// `syscalls/sys_exit_<name>`.
const SYSCALLS: &[&str] = &[
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "pwritev2",
    "fallocate",
    "copy_file_range",
    "sendfile64",
];

/// Syscalls the fexit hooks cover when the kernel allows trampolines.
const FEXIT_COVERS: &[&str] = &["write", "pwrite64", "writev", "pwritev", "pwritev2"];

/// (program, kernel function) for the fexit path.
const FEXIT_HOOKS: &[(&str, &str)] = &[
    ("fexit_vfs_write", "vfs_write"),
    ("fexit_vfs_writev", "vfs_writev"),
];

pub struct EbpfSource {
    ebpf: Ebpf,
    /// `fexit+tracepoint` or `tracepoint`.
    mode: &'static str,
    /// Why fexit was not used, when it was not.
    fexit_refused: Option<String>,
    /// Registered (key, project id) pairs.
    registered: Vec<(InodeKey, u32)>,
    last_stats: HashMap<u32, u64>,
    last_cgroup: HashMap<(u64, u32), u64>,
}

fn unavailable(reason: impl Into<String>) -> SourceError {
    SourceError::Unavailable {
        source_name: "ebpf",
        reason: reason.into(),
    }
}

fn failed(reason: impl Into<String>) -> SourceError {
    SourceError::Failed {
        source_name: "ebpf",
        reason: reason.into(),
    }
}

impl EbpfSource {
    /// Loads and attaches the probe.
    pub fn load() -> Result<EbpfSource, SourceError> {
        if std::env::var_os(FORCE_FAILURE_ENV).is_some() {
            return Err(unavailable(format!(
                "forced to fail by {FORCE_FAILURE_ENV}"
            )));
        }
        if PROBE.is_empty() {
            return Err(unavailable(
                "this binary was built without the probe object (run `cargo xtask build-ebpf`, then rebuild)",
            ));
        }
        let offsets = kernel_offsets()?;
        ensure_tracefs()?;
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .load(PROBE)
            .map_err(|e| unavailable(format!("loading the probe: {e}")))?;
        let (mode, fexit_refused) = match attach_fexit(&mut ebpf) {
            Ok(()) => ("fexit+tracepoint", None),
            Err(reason) => ("tracepoint", Some(reason)),
        };
        let covered: &[&str] = if fexit_refused.is_none() {
            FEXIT_COVERS
        } else {
            &[]
        };
        for syscall in SYSCALLS.iter().filter(|s| !covered.contains(s)) {
            attach_tracepoint(
                &mut ebpf,
                &format!("exit_{syscall}"),
                &format!("sys_exit_{syscall}"),
            )?;
        }
        if let Some(reason) = &fexit_refused {
            tracing::info!(%reason, "ebpf: fexit refused by this kernel, using syscall tracepoints");
        }
        Ok(EbpfSource {
            ebpf,
            mode,
            fexit_refused,
            registered: Vec::new(),
            last_stats: HashMap::new(),
            last_cgroup: HashMap::new(),
        })
    }

    /// `fexit+tracepoint` or `tracepoint`.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Why the fexit path was not used.
    pub fn fexit_refused(&self) -> Option<&str> {
        self.fexit_refused.as_deref()
    }

    /// Total counters per project id since load (all CPUs summed).
    pub fn totals(&self) -> Result<HashMap<u32, ProjectStats>, SourceError> {
        let stats: PerCpuArray<_, ProjectStats> = PerCpuArray::try_from(
            self.ebpf
                .map("STATS")
                .ok_or_else(|| failed("map STATS missing"))?,
        )
        .map_err(|e| failed(format!("map STATS: {e}")))?;
        let mut out = HashMap::new();
        for &(_, id) in &self.registered {
            let per_cpu = stats
                .get(&id, 0)
                .map_err(|e| failed(format!("reading STATS: {e}")))?;
            let mut sum = ProjectStats::default();
            for s in per_cpu.iter() {
                sum.written += s.written;
                sum.copied += s.copied;
                sum.allocated += s.allocated;
                sum.calls += s.calls;
            }
            out.insert(id, sum);
        }
        Ok(out)
    }

    /// Bytes per (cgroup, project) since load: the flushed hash, then each CPU's open slot (read
    /// in that order, a racing flush can only delay bytes to the next read, never count twice).
    fn cgroup_totals(&self) -> Result<HashMap<(u64, u32), u64>, SourceError> {
        let map: PerCpuHashMap<_, CgroupKey, u64> = PerCpuHashMap::try_from(
            self.ebpf
                .map("CGROUP_BYTES")
                .ok_or_else(|| failed("map CGROUP_BYTES missing"))?,
        )
        .map_err(|e| failed(format!("map CGROUP_BYTES: {e}")))?;
        let mut out = HashMap::new();
        for entry in map.iter() {
            let (key, values) = entry.map_err(|e| failed(format!("reading CGROUP_BYTES: {e}")))?;
            *out.entry((key.cgroup, key.project)).or_insert(0) += values.iter().sum::<u64>();
        }
        let slots: PerCpuArray<_, CgroupSlot> = PerCpuArray::try_from(
            self.ebpf
                .map("CGROUP_SLOT")
                .ok_or_else(|| failed("map CGROUP_SLOT missing"))?,
        )
        .map_err(|e| failed(format!("map CGROUP_SLOT: {e}")))?;
        let per_cpu = slots
            .get(&0, 0)
            .map_err(|e| failed(format!("reading CGROUP_SLOT: {e}")))?;
        for slot in per_cpu.iter().filter(|s| s.bytes > 0) {
            *out.entry((slot.cgroup, slot.project)).or_insert(0) += slot.bytes;
        }
        Ok(out)
    }

    /// Forgets every cached file → project resolution (the project set changed).
    fn clear_resolution_caches(&mut self) -> Result<(), SourceError> {
        let mut cache: BpfHashMap<_, FileKey, u32> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("INODE_PROJECT")
                .ok_or_else(|| failed("map INODE_PROJECT missing"))?,
        )
        .map_err(|e| failed(format!("map INODE_PROJECT: {e}")))?;
        let keys: Vec<FileKey> = cache.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = cache.remove(&key);
        }
        let mut files: PerCpuArray<_, FileSlot> = PerCpuArray::try_from(
            self.ebpf
                .map_mut("FILE_CACHE")
                .ok_or_else(|| failed("map FILE_CACHE missing"))?,
        )
        .map_err(|e| failed(format!("map FILE_CACHE: {e}")))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| failed(format!("counting CPUs: {e}")))?;
        for index in 0..FILE_CACHE_SLOTS {
            let empty = PerCpuValues::try_from(vec![FileSlot::default(); cpus])
                .map_err(|e| failed(format!("FILE_CACHE values: {e}")))?;
            files
                .set(index, empty, 0)
                .map_err(|e| failed(format!("clearing FILE_CACHE: {e}")))?;
        }
        Ok(())
    }
}

impl Source for EbpfSource {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        let mut map: BpfHashMap<_, InodeKey, u32> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("PROJECTS")
                .ok_or_else(|| failed("map PROJECTS missing"))?,
        )
        .map_err(|e| failed(format!("map PROJECTS: {e}")))?;
        for (key, _) in self.registered.drain(..) {
            let _ = map.remove(&key);
        }
        for p in projects {
            if p.id == 0 || p.id >= MAX_PROJECTS {
                return Err(failed(format!(
                    "project id {} out of range (max {MAX_PROJECTS})",
                    p.id
                )));
            }
            let key = InodeKey::new(user_dev_to_kernel(p.dev), p.ino);
            map.insert(key, p.id, 0)
                .map_err(|e| failed(format!("registering {}: {e}", p.path.display())))?;
            self.registered.push((key, p.id));
        }
        // Cached resolutions may name projects that moved or files that now sit in a project.
        self.clear_resolution_caches()
    }

    fn drain(&mut self) -> Result<Sample, SourceError> {
        let mut sample = Sample::default();
        for (id, stats) in self.totals()? {
            let total = stats.written + stats.copied + stats.allocated;
            let last = self.last_stats.insert(id, total).unwrap_or(0);
            if total > last {
                sample.growth.insert(id, (total - last) as i64);
            }
        }
        for ((cgroup, project), total) in self.cgroup_totals()? {
            let last = self
                .last_cgroup
                .insert((cgroup, project), total)
                .unwrap_or(0);
            if total > last {
                sample.by_cgroup.push(CgroupBytes {
                    project,
                    cgroup,
                    bytes: total - last,
                });
            }
        }
        Ok(sample)
    }
}

/// Loads the probe object but attaches only its empty `noop` program to every tracepoint the
/// probe uses: the floor cost of having BPF on those hooks, for benchmarks. Detaches on drop.
pub fn load_empty_floor() -> Result<Ebpf, SourceError> {
    if PROBE.is_empty() {
        return Err(unavailable(
            "this binary was built without the probe object",
        ));
    }
    ensure_tracefs()?;
    let offsets = kernel_offsets()?;
    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", &offsets, true)
        .load(PROBE)
        .map_err(|e| unavailable(format!("loading the probe: {e}")))?;
    let prog: &mut TracePoint = ebpf
        .program_mut("noop")
        .ok_or_else(|| unavailable("program noop missing from the object"))?
        .try_into()
        .map_err(|e| unavailable(format!("noop: {e}")))?;
    prog.load()
        .map_err(|e| unavailable(format!("loading noop: {e}")))?;
    for syscall in SYSCALLS {
        prog.attach("syscalls", &format!("sys_exit_{syscall}"))
            .map_err(|e| unavailable(format!("attaching noop: {e}")))?;
    }
    Ok(ebpf)
}

/// glibc `st_dev` → the kernel's `s_dev` encoding the probe compares against.
pub fn user_dev_to_kernel(dev: u64) -> u64 {
    kernel_dev(rustix::fs::major(dev), rustix::fs::minor(dev))
}

fn attach_fexit(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    for (program, function) in FEXIT_HOOKS {
        let prog: &mut FExit = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} missing from the object"))?
            .try_into()
            .map_err(|e| format!("{program}: {e}"))?;
        prog.load(function, &btf)
            .map_err(|e| format!("fexit on {function}: {e}"))?;
        prog.attach()
            .map_err(|e| format!("fexit on {function}: {e}"))?;
    }
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, event: &str) -> Result<(), SourceError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| unavailable(format!("program {program} missing from the object")))?
        .try_into()
        .map_err(|e| unavailable(format!("{program}: {e}")))?;
    prog.load()
        .map_err(|e| unavailable(format!("loading {program}: {e}")))?;
    prog.attach("syscalls", event)
        .map_err(|e| unavailable(format!("attaching {program} to syscalls/{event}: {e}")))?;
    Ok(())
}

/// Mounts tracefs where the kernel has it but nothing mounted it (tracepoint ids live there).
fn ensure_tracefs() -> Result<(), SourceError> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    rustix::mount::mount(
        "tracefs",
        tracing,
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| {
        unavailable(format!(
            "tracefs is not mounted and mounting it failed: {e}"
        ))
    })
}

/// Reads the struct member offsets the probe needs from the running kernel's BTF.
pub fn kernel_offsets() -> Result<KernelOffsets, SourceError> {
    let btf = crate::sources::btf::KernelBtf::open()
        .map_err(|e| unavailable(format!("kernel BTF: {e}")))?;
    let get = |ty: &str, path: &str| {
        btf.offset_of(ty, path)
            .map_err(|e| unavailable(format!("kernel BTF has no {ty}.{path}: {e}")))
    };
    Ok(KernelOffsets {
        task_files: get("task_struct", "files")?,
        files_fdt: get("files_struct", "fdt")?,
        fdtable_max_fds: get("fdtable", "max_fds")?,
        fdtable_fd: get("fdtable", "fd")?,
        file_f_inode: get("file", "f_inode")?,
        file_f_path: get("file", "f_path")?,
        path_dentry: get("path", "dentry")?,
        inode_i_ino: get("inode", "i_ino")?,
        inode_i_sb: get("inode", "i_sb")?,
        super_block_s_dev: get("super_block", "s_dev")?,
        dentry_d_parent: get("dentry", "d_parent")?,
        dentry_d_inode: get("dentry", "d_inode")?,
        inode_i_generation: get("inode", "i_generation")?,
        regs_args: syscall_arg_offsets(&get)?,
        ready: 1,
        _pad: 0,
    })
}

/// Offsets in `struct pt_regs` of the first four syscall arguments as saved at syscall entry.
fn syscall_arg_offsets(
    get: &dyn Fn(&str, &str) -> Result<u64, SourceError>,
) -> Result<[u64; 4], SourceError> {
    if cfg!(target_arch = "x86_64") {
        Ok([
            get("pt_regs", "di")?,
            get("pt_regs", "si")?,
            get("pt_regs", "dx")?,
            get("pt_regs", "r10")?,
        ])
    } else if cfg!(target_arch = "aarch64") {
        // x0 is overwritten with the return value; the entry keeps the first argument in orig_x0.
        let regs = get("pt_regs", "regs")?;
        Ok([get("pt_regs", "orig_x0")?, regs + 8, regs + 16, regs + 24])
    } else {
        Err(unavailable(format!(
            "the probe does not know where {} saves syscall arguments",
            std::env::consts::ARCH
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{IoSlice, Write};
    use std::os::unix::fs::{FileExt, MetadataExt};

    fn project(id: u32, path: &Path) -> ProjectDir {
        let meta = std::fs::metadata(path).unwrap();
        ProjectDir {
            id,
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// Writes `total` bytes into new files in new nested dirs under `dir`, cycling through
    /// write, pwrite and writev.
    fn write_mix(dir: &Path, total: usize) {
        let chunk = vec![0xabu8; 256 * 1024];
        let mut written = 0;
        let mut i = 0;
        while written < total {
            let sub = dir.join(format!("n{}/m{}", i % 3, i % 5));
            std::fs::create_dir_all(&sub).unwrap();
            let mut f = std::fs::File::create(sub.join(format!("f{i}"))).unwrap();
            let n = chunk.len().min(total - written);
            match i % 3 {
                0 => f.write_all(&chunk[..n]).unwrap(),
                1 => f.write_all_at(&chunk[..n], 0).unwrap(),
                _ => {
                    let half = n / 2;
                    let bufs = [IoSlice::new(&chunk[..half]), IoSlice::new(&chunk[half..n])];
                    assert_eq!(f.write_vectored(&bufs).unwrap(), n);
                }
            }
            written += n;
            i += 1;
        }
    }

    #[test]
    fn probe_attributes_exactly_the_syscall_bytes() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("\n*** SKIPPED probe_attributes_exactly_the_syscall_bytes: loading eBPF needs root ***\n");
            return;
        }
        let mut source = match EbpfSource::load() {
            Ok(s) => s,
            Err(e) => panic!("the probe must load on this kernel: {e}"),
        };
        eprintln!(
            "ebpf mode: {} (fexit: {:?})",
            source.mode(),
            source.fexit_refused()
        );
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        let outside = tmp.path().join("outside");
        for d in [&a, &b, &outside] {
            std::fs::create_dir(d).unwrap();
        }
        source.watch(&[project(1, &a), project(2, &b)]).unwrap();
        source.drain().unwrap();
        write_mix(&a, 64 << 20);
        write_mix(&b, 8 << 20);
        write_mix(&outside, 4 << 20);
        let sample = source.drain().unwrap();
        assert_eq!(sample.growth.get(&1).copied(), Some(64 << 20));
        assert_eq!(sample.growth.get(&2).copied(), Some(8 << 20));
        assert_eq!(
            sample.growth.len(),
            2,
            "nothing else is attributed: {:?}",
            sample.growth
        );
        let cg: u64 = sample
            .by_cgroup
            .iter()
            .filter(|c| c.project == 1)
            .map(|c| c.bytes)
            .sum();
        assert_eq!(cg, 64 << 20, "per-cgroup bytes add up");
        // fallocate and copy_file_range count too.
        let f = std::fs::File::create(b.join("prealloc")).unwrap();
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 1 << 20).unwrap();
        let src = std::fs::File::open(a.join("n0/m0/f0")).unwrap();
        let dst = std::fs::File::create(b.join("copy")).unwrap();
        let copied = rustix::fs::copy_file_range(&src, None, &dst, None, 65536).unwrap();
        let sample = source.drain().unwrap();
        assert_eq!(
            sample.growth.get(&2).copied(),
            Some((1 << 20) + copied as i64)
        );
        // Punching a hole frees space: not counted. sendfile into a project file is.
        rustix::fs::fallocate(
            &f,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            0,
            1 << 20,
        )
        .unwrap();
        let out = std::fs::File::create(b.join("sent")).unwrap();
        let sent = rustix::fs::sendfile(&out, &src, None, 100_000).unwrap();
        let sample = source.drain().unwrap();
        assert_eq!(sample.growth.get(&2).copied(), Some(sent as i64));
        // The kernel reuses freed `struct file`s and inodes at once: a file written in a project,
        // closed and deleted, then files written outside must not inherit its project.
        for round in 0..200 {
            let path = a.join(format!("tmp{round}"));
            std::fs::write(&path, b"in a").unwrap();
            std::fs::remove_file(&path).unwrap();
            if round % 2 == 1 {
                // Let an RCU grace period pass, so the freed inode can be reallocated too.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            std::fs::write(outside.join(format!("o{round}")), vec![1u8; 4096]).unwrap();
        }
        let sample = source.drain().unwrap();
        assert_eq!(
            sample.growth.get(&1).copied(),
            Some(200 * 4),
            "only the 4-byte writes inside project a count there"
        );
        assert_eq!(sample.growth.len(), 1, "{:?}", sample.growth);
    }
}
