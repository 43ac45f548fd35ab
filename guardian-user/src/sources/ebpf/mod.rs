//! The eBPF source: loads Guardian's probe (built by `cargo xtask build-ebpf`, embedded at build
//! time), hands it the running kernel's struct offsets read from BTF, registers each project dir
//! as (dev, ino) → probe index (`index.rs`: recycled, with generations so a vanished project's
//! bytes never count for the next owner of its index), and reads the per-CPU counters on each
//! drain (`counts.rs`: only the counters the probe logged as changed, the per-cgroup map pruned).
//! Tries fexit on the VFS write functions first and falls back to the syscalls' exit
//! tracepoints where the kernel refuses BPF trampolines.
//!
//! What it does not see: stores through `mmap`, io_uring writes, writes by kernel threads (NFS
//! server, loop devices), and data that never reaches the page cache as a syscall. `statvfs`
//! remains the ground truth for free space; this source says *who* is writing *where*.

mod counts;
mod index;

use super::btf::KernelBtf;
use super::kfunc::{self, AlignedObject, CastCall};
use super::{ProjectDir, Sample, Source, SourceError};
use aya::maps::Array;
use aya::programs::{FExit, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use counts::Counts;
use guardian_common::{kernel_dev, KernelOffsets, ProbeSettings, MAX_PROJECTS};
use index::IndexTable;
use std::path::Path;

/// The probe object, empty when this binary was built without it.
static PROBE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guardian-probe.o"));

/// Set to force the probe to fail to load (tests of the fallback).
pub const FORCE_FAILURE_ENV: &str = "GUARDIAN_FORCE_EBPF_FAILURE";

/// Every write-family and allocating syscall; the probe's program `exit_<name>` (typed loads) or
/// `exit_<name>_pr` (probe reads) attaches to `syscalls/sys_exit_<name>`.
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

/// How the probe reads the fd table, the `struct file` and the inode of each write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAccess {
    /// Typed loads through `bpf_rdonly_cast` (Linux ≥ 6.2): one load each, checked by the
    /// verifier against the kernel's BTF.
    Typed,
    /// `bpf_probe_read_kernel`: a helper call each, on every kernel.
    ProbeRead,
}

impl FileAccess {
    /// The probe's exit-tracepoint program for `syscall` that reads files this way.
    fn program(self, syscall: &str) -> String {
        match self {
            FileAccess::Typed => format!("exit_{syscall}"),
            FileAccess::ProbeRead => format!("exit_{syscall}_pr"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileAccess::Typed => "bpf_rdonly_cast",
            FileAccess::ProbeRead => "bpf_probe_read_kernel",
        }
    }
}

pub struct EbpfSource {
    ebpf: Ebpf,
    /// `fexit+tracepoint` or `tracepoint`.
    mode: &'static str,
    file_access: FileAccess,
    /// Why fexit was not used, when it was not.
    fexit_refused: Option<String>,
    /// Which project counts into which probe index.
    index: IndexTable,
    /// What was read from the probe's maps and reported.
    counts: Counts,
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
    /// Loads and attaches the probe, with typed loads where the kernel allows them.
    pub fn load() -> Result<EbpfSource, SourceError> {
        Self::load_with(FileAccess::Typed)
    }

    /// Loads and attaches the probe; `FileAccess::Typed` falls back to probe reads (and logs why)
    /// where the kernel has no `bpf_rdonly_cast`.
    pub fn load_with(access: FileAccess) -> Result<EbpfSource, SourceError> {
        if std::env::var_os(FORCE_FAILURE_ENV).is_some() {
            return Err(unavailable(format!(
                "forced to fail by {FORCE_FAILURE_ENV}"
            )));
        }
        if PROBE.is_empty() {
            return Err(unavailable(format!(
                "this binary was built without the probe object ({}; run `cargo xtask build-ebpf`, then rebuild)",
                super::PROBE_STATUS
            )));
        }
        let probe = FittedProbe::for_running_kernel(access)?;
        ensure_tracefs()?;
        let mut ebpf = probe.open()?;
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
                &probe.access.program(syscall),
                &format!("sys_exit_{syscall}"),
            )?;
        }
        if let Some(reason) = &fexit_refused {
            tracing::info!(%reason, "ebpf: fexit refused by this kernel, using syscall tracepoints");
        }
        Ok(EbpfSource {
            ebpf,
            mode,
            file_access: probe.access,
            fexit_refused,
            index: IndexTable::new(MAX_PROJECTS),
            counts: Counts::new(),
        })
    }

    /// `fexit+tracepoint` or `tracepoint`.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// How the probe reads each write's file.
    pub fn file_access(&self) -> FileAccess {
        self.file_access
    }

    /// Why the fexit path was not used.
    pub fn fexit_refused(&self) -> Option<&str> {
        self.fexit_refused.as_deref()
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map, SourceError> {
        self.ebpf
            .map(name)
            .ok_or_else(|| failed(format!("map {name} missing")))
    }

    /// Starts a new project epoch: the probe resolves every written file again (cached
    /// resolutions may name projects that moved, or miss files that now sit in a project).
    fn new_epoch(&mut self) -> Result<(), SourceError> {
        let mut settings: Array<_, ProbeSettings> =
            Array::try_from(map_mut(&mut self.ebpf, ".bss")?)
                .map_err(|e| failed(format!("map .bss (SETTINGS): {e}")))?;
        let mut current = settings
            .get(&0, 0)
            .map_err(|e| failed(format!("reading SETTINGS: {e}")))?;
        current.epoch = current.epoch.wrapping_add(1);
        settings
            .set(0, current, 0)
            .map_err(|e| failed(format!("writing SETTINGS: {e}")))
    }
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map, SourceError> {
    ebpf.map_mut(name)
        .ok_or_else(|| failed(format!("map {name} missing")))
}

impl Source for EbpfSource {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    /// Registers the projects: vanished ones give up their probe index (recycled after the next
    /// drain), new ones get a free one; projects beyond the probe's table wait for one and are
    /// reported by [`Source::problems`]. Fails only when the probe's maps cannot be used.
    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        let changes = self.index.update(projects);
        self.apply(changes)
    }

    fn drain(&mut self) -> Result<Sample, SourceError> {
        let sample = self.read_counts()?;
        let changes = self.index.drained();
        if !changes.is_empty() {
            self.apply(changes)?;
        }
        Ok(sample)
    }

    fn problems(&self) -> Vec<String> {
        self.counts_problems()
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
    let mut ebpf = FittedProbe::for_running_kernel(FileAccess::Typed)?.open()?;
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

/// The probe object and its globals fitted to the running kernel: struct offsets from its BTF,
/// and the `bpf_rdonly_cast` placeholder calls rewritten for it.
struct FittedProbe {
    object: AlignedObject,
    offsets: KernelOffsets,
    access: FileAccess,
}

impl FittedProbe {
    fn for_running_kernel(wanted: FileAccess) -> Result<FittedProbe, SourceError> {
        let btf = KernelBtf::open().map_err(|e| unavailable(format!("kernel BTF: {e}")))?;
        let mut offsets = kernel_offsets(&btf)?;
        let typed = match wanted {
            FileAccess::Typed => typed_file_access(&btf)
                .inspect_err(|why| tracing::info!(%why, "ebpf: no typed loads, using probe reads"))
                .ok(),
            FileAccess::ProbeRead => None,
        };
        let (cast, access) = match typed {
            Some(ids) => {
                offsets.file_ref_btf_id = ids.file_ref;
                offsets.pt_regs_btf_id = ids.pt_regs;
                (CastCall::Kfunc(ids.rdonly_cast), FileAccess::Typed)
            }
            None => (CastCall::Move, FileAccess::ProbeRead),
        };
        let (object, _) = kfunc::rewrite_cast_calls(PROBE, cast).map_err(unavailable)?;
        Ok(FittedProbe {
            object,
            offsets,
            access,
        })
    }

    fn open(&self) -> Result<Ebpf, SourceError> {
        EbpfLoader::new()
            .override_global("OFFSETS", &self.offsets, true)
            .load(self.object.bytes())
            .map_err(|e| unavailable(format!("loading the probe: {e}")))
    }
}

/// BTF ids the probe's typed loads need.
struct TypedIds {
    /// `bpf_rdonly_cast`.
    rdonly_cast: u32,
    /// `struct kiocb`, whose first member is a `struct file *`.
    file_ref: u32,
    /// `struct pt_regs`.
    pt_regs: u32,
}

/// The BTF ids for typed loads, or why this kernel cannot give the probe typed loads.
fn typed_file_access(btf: &KernelBtf) -> Result<TypedIds, String> {
    let rdonly_cast = btf
        .func_id("bpf_rdonly_cast")
        .ok_or("the kernel has no bpf_rdonly_cast kfunc (Linux < 6.2)")?;
    Ok(TypedIds {
        rdonly_cast,
        file_ref: btf.struct_starting_with_pointer("kiocb", "ki_filp", "file")?,
        pt_regs: btf.struct_id("pt_regs")?,
    })
}

/// Reads the struct member offsets the probe needs from the running kernel's BTF.
pub fn kernel_offsets(btf: &KernelBtf) -> Result<KernelOffsets, SourceError> {
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
        task_stack: get("task_struct", "stack")?,
        files_fdtab: get("files_struct", "fdtab")?,
        files_fd_array: get("files_struct", "fd_array")?,
        files_fd_array_len: btf
            .array_len("files_struct", "fd_array")
            .map_err(|e| unavailable(format!("kernel BTF: {e}")))?,
        task_cgroups: get("task_struct", "cgroups")?,
        css_set_dfl_cgrp: get("css_set", "dfl_cgrp")?,
        cgroup_kn: get("cgroup", "kn")?,
        kernfs_node_id: get("kernfs_node", "id")?,
        ready: 1,
        file_ref_btf_id: 0,
        pt_regs_btf_id: 0,
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
    fn probe_with_typed_loads_attributes_exactly_the_syscall_bytes() {
        attributes_exactly_the_syscall_bytes(FileAccess::Typed);
    }

    #[test]
    fn probe_with_probe_reads_attributes_exactly_the_syscall_bytes() {
        attributes_exactly_the_syscall_bytes(FileAccess::ProbeRead);
    }

    fn attributes_exactly_the_syscall_bytes(access: FileAccess) {
        if !crate::testkit::require_root(&format!("ebpf attribution test ({access:?})")) {
            return;
        }
        let mut source = match EbpfSource::load_with(access) {
            Ok(s) => s,
            Err(e) => panic!("the probe must load on this kernel: {e}"),
        };
        if access == FileAccess::Typed && source.file_access() != FileAccess::Typed {
            panic!("this kernel (Linux 6.18 here) has bpf_rdonly_cast, but the probe fell back to probe reads");
        }
        eprintln!(
            "ebpf mode: {} (fexit: {:?}), file access: {}",
            source.mode(),
            source.fexit_refused(),
            source.file_access().name()
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
        // More fds than the table embedded in `files_struct` holds: writes through a high fd and
        // a low one both go through the external fd table (in a thread with its own table).
        std::thread::scope(|scope| {
            scope.spawn(|| {
                use std::os::fd::{AsRawFd, FromRawFd};
                // SAFETY: gives only this thread a private copy of the fd table.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_FILES) }, 0);
                let mut low = std::fs::File::create(b.join("many-fds")).unwrap();
                // SAFETY: fd 100 is free in this thread's private table; the File owns it.
                let mut high = unsafe {
                    assert_eq!(libc::dup2(low.as_raw_fd(), 100), 100);
                    std::fs::File::from_raw_fd(100)
                };
                high.write_all(&vec![1u8; 1 << 20]).unwrap();
                low.write_all(&vec![2u8; 1 << 20]).unwrap();
            });
        });
        let sample = source.drain().unwrap();
        assert_eq!(sample.growth.get(&2).copied(), Some(2 << 20));
        assert_eq!(sample.growth.len(), 1, "{:?}", sample.growth);
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
        // A new project set starts a new epoch: a file already written (and resolved as in no
        // project) is resolved again, on the same open fd.
        let mut late = std::fs::File::create(outside.join("late")).unwrap();
        late.write_all(&[0u8; 1000]).unwrap();
        assert!(source.drain().unwrap().growth.is_empty());
        source
            .watch(&[project(1, &a), project(2, &b), project(3, &outside)])
            .unwrap();
        late.write_all(&[0u8; 777]).unwrap();
        let sample = source.drain().unwrap();
        assert_eq!(
            sample.growth.get(&3).copied(),
            Some(777),
            "{:?}",
            sample.growth
        );
        assert_eq!(sample.growth.len(), 1, "{:?}", sample.growth);
    }

    /// Where cgroup v2 is mounted, from /proc/self/mountinfo.
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        info.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            right
                .starts_with("cgroup2 ")
                .then(|| std::path::PathBuf::from(mount_point))
        })
    }

    #[test]
    fn probe_names_the_writers_cgroup() {
        if !crate::testkit::require_root("probe_names_the_writers_cgroup") {
            return;
        }
        let Some(cgroup2) = cgroup2_mount() else {
            crate::testkit::skip("probe_names_the_writers_cgroup", "no cgroup v2 mounted");
            return;
        };
        let mut source = EbpfSource::load().expect("the probe must load on this kernel");
        let tmp = tempfile::tempdir().unwrap();
        source.watch(&[project(1, tmp.path())]).unwrap();
        source.drain().unwrap();
        let group = cgroup2.join(format!("guardian-test-{}", std::process::id()));
        std::fs::create_dir(&group).unwrap();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of={}/f bs=4096 count=256 status=none",
                group.display(),
                tmp.path().display()
            ))
            .status()
            .unwrap();
        let group_id = std::fs::metadata(&group).unwrap().ino();
        std::fs::remove_dir(&group).unwrap();
        assert!(status.success());
        let sample = source.drain().unwrap();
        let by_group: Vec<_> = sample
            .by_cgroup
            .iter()
            .map(|c| (c.cgroup, c.project, c.bytes))
            .collect();
        assert_eq!(
            by_group,
            vec![(group_id, 1, 1 << 20)],
            "the cgroup id is the cgroup dir's inode"
        );
    }

    /// Issue 12 item 8: after 8,192 distinct project paths, attribution died silently (ids
    /// were never reused and ids ≥ 8192 were refused). 10 rounds of 1,000 project dirs created,
    /// watched and removed, as the daemon does; then a new project's 10 MiB count exactly.
    #[test]
    fn ten_rounds_of_a_thousand_projects_leave_attribution_alive() {
        if !crate::testkit::require_root(
            "ten_rounds_of_a_thousand_projects_leave_attribution_alive",
        ) {
            return;
        }
        let mut source = EbpfSource::load().expect("the probe must load on this kernel");
        let mut agg = crate::aggregate::Aggregator::new();
        let tmp = tempfile::tempdir().unwrap();
        let dirs_now = |root: &Path| -> Vec<(std::path::PathBuf, u64, u64)> {
            let mut dirs: Vec<_> = std::fs::read_dir(root)
                .unwrap()
                .flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    (e.path(), m.dev(), m.ino())
                })
                .collect();
            dirs.sort();
            dirs
        };
        for round in 0..10 {
            for i in 0..1000 {
                std::fs::create_dir(tmp.path().join(format!("r{round}-{i}"))).unwrap();
            }
            let projects = agg.project_dirs(&dirs_now(tmp.path()));
            source.watch(&projects).unwrap();
            source.drain().unwrap();
            for i in 0..1000 {
                std::fs::remove_dir(tmp.path().join(format!("r{round}-{i}"))).unwrap();
            }
            let projects = agg.project_dirs(&dirs_now(tmp.path()));
            source.watch(&projects).unwrap();
            source.drain().unwrap();
        }
        let new = tmp.path().join("new-project");
        std::fs::create_dir(&new).unwrap();
        let projects = agg.project_dirs(&dirs_now(tmp.path()));
        source.watch(&projects).unwrap();
        source.drain().unwrap();
        std::fs::write(new.join("data"), vec![7u8; 10 << 20]).unwrap();
        let sample = source.drain().unwrap();
        assert_eq!(
            sample.growth.get(&projects[0].id).copied(),
            Some(10 << 20),
            "{:?}",
            sample.growth
        );
        assert!(source.problems().is_empty(), "{:?}", source.problems());
    }

    /// A vanished project's index goes to a new project only with a new generation: bytes the
    /// vanished one left in a write slot are dropped, never counted for the new owner.
    #[test]
    fn a_recycled_index_never_counts_the_vanished_projects_bytes() {
        if !crate::testkit::require_root(
            "a_recycled_index_never_counts_the_vanished_projects_bytes",
        ) {
            return;
        }
        let mut source = EbpfSource::load().expect("the probe must load on this kernel");
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        source.watch(&[project(1, &a)]).unwrap();
        source.drain().unwrap();
        // Written in a, still in the write slot of this fd.
        let mut f = std::fs::File::create(a.join("f")).unwrap();
        f.write_all(&vec![1u8; 1 << 20]).unwrap();
        assert_eq!(
            source.drain().unwrap().growth.get(&1).copied(),
            Some(1 << 20)
        );
        f.write_all(&vec![1u8; 1 << 20]).unwrap();
        // a vanishes before its second MiB was read; b (another id) gets a's index.
        source.watch(&[]).unwrap();
        source.drain().unwrap();
        source.watch(&[project(2, &b)]).unwrap();
        assert_eq!(source.index.owner(1), Some(2), "the index was recycled");
        // The next write through a's fd moves the slot's stale bytes out: dropped.
        f.write_all(&[1u8; 10]).unwrap();
        std::fs::write(b.join("g"), vec![2u8; 512 << 10]).unwrap();
        let sample = source.drain().unwrap();
        assert_eq!(
            sample.growth,
            [(2, 512 << 10)].into_iter().collect(),
            "only b's own bytes"
        );
        assert!(source.probe_counters().stale_bytes_dropped >= 1 << 20);
    }

    /// Idle per-cgroup entries are pruned (and counted again from zero when their cgroup
    /// writes again); a full per-cgroup map is a problem, not a silent loss.
    #[test]
    fn the_per_cgroup_map_is_pruned_and_a_full_one_is_reported() {
        if !crate::testkit::require_root("the_per_cgroup_map_is_pruned_and_a_full_one_is_reported")
        {
            return;
        }
        let Some(cgroup2) = cgroup2_mount() else {
            crate::testkit::skip(
                "the_per_cgroup_map_is_pruned_and_a_full_one_is_reported",
                "no cgroup v2 mounted",
            );
            return;
        };
        let mut source = EbpfSource::load().expect("the probe must load on this kernel");
        let tmp = tempfile::tempdir().unwrap();
        // 6,000 projects × 3 cgroups: more (cgroup, project) pairs than the map's 16,384.
        let mut projects = Vec::new();
        let mut list = String::new();
        for i in 0..6000u32 {
            let dir = tmp.path().join(format!("p{i}"));
            std::fs::create_dir(&dir).unwrap();
            projects.push(project(i + 1, &dir));
            list.push_str(&format!("{}\n", dir.display()));
        }
        std::fs::write(tmp.path().join("list"), list).unwrap();
        source.watch(&projects).unwrap();
        source.drain().unwrap();
        let groups: Vec<_> = (0..3)
            .map(|g| {
                let dir = cgroup2.join(format!("guardian-test-{}-{g}", std::process::id()));
                std::fs::create_dir(&dir).unwrap();
                dir
            })
            .collect();
        for group in &groups {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && while read d; do printf x >> \"$d/f\"; done < {}",
                    group.display(),
                    tmp.path().join("list").display()
                ))
                .status()
                .unwrap();
            assert!(status.success());
        }
        for group in &groups {
            let _ = std::fs::remove_dir(group);
        }
        let sample = source.drain().unwrap();
        let total: i64 = sample.growth.values().sum();
        assert_eq!(total, 3 * 6000, "project totals are exact");
        let problems = source.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("per-cgroup byte map was full")),
            "{problems:?}"
        );
        assert!(source.cgroup_entries() > 0);
        // Idle long enough: every entry goes, and the map has room again.
        source.age_cgroup_entries();
        source.drain().unwrap();
        assert_eq!(source.cgroup_entries(), 0);
        source.watch(&projects[..1]).unwrap();
        source.drain().unwrap();
        std::fs::write(projects[0].path.join("again"), vec![0u8; 4096]).unwrap();
        // Another file so the slot of the first write moves out into the map.
        let sample = source.drain().unwrap();
        let cg: u64 = sample
            .by_cgroup
            .iter()
            .filter(|c| c.project == 1)
            .map(|c| c.bytes)
            .sum();
        assert_eq!(
            cg, 4096,
            "a pruned entry counts from zero again: {sample:?}"
        );
    }

    #[test]
    fn rewrites_every_cast_placeholder_of_the_probe_and_nothing_else() {
        if PROBE.is_empty() {
            crate::testkit::skip(
                "rewrites_every_cast_placeholder_of_the_probe_and_nothing_else",
                "built without the probe",
            );
            return;
        }
        let placeholder = guardian_common::RDONLY_CAST_PLACEHOLDER.to_le_bytes();
        let (typed, n) = kfunc::rewrite_cast_calls(PROBE, CastCall::Kfunc(0x0102_0304)).unwrap();
        let (moved, m) = kfunc::rewrite_cast_calls(PROBE, CastCall::Move).unwrap();
        assert_eq!(n, m);
        assert!(
            n >= 2,
            "the fd-table entry and the registers are cast in every program"
        );
        let changed: Vec<usize> = (0..PROBE.len())
            .filter(|&i| PROBE[i] != typed.bytes()[i])
            .collect();
        assert!(!changed.is_empty());
        for i in changed {
            let insn = i - i % 8;
            assert_eq!(
                PROBE[insn + 4..insn + 8],
                placeholder,
                "byte {i} is outside a placeholder"
            );
            assert_eq!(typed.bytes()[insn + 1], 0x20, "a kfunc call");
        }
        assert_eq!(moved.bytes().len(), PROBE.len());
    }
}
