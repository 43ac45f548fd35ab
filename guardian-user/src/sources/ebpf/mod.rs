//! The eBPF source: loads Guardian's probe (built by `cargo xtask build-ebpf`, embedded at build
//! time), hands it the running kernel's struct offsets read from BTF, registers each project dir
//! as (dev, ino) → probe index (`index.rs`: recycled, with generations so a vanished project's
//! bytes never count for the next owner of its index), and reads the per-CPU counters on each
//! drain (`counts.rs`: only the counters the probe logged as changed, the per-cgroup map pruned).
//! Tries fexit on the VFS write functions first and falls back to the syscalls' exit
//! tracepoints where the kernel refuses BPF trampolines.
//!
//! The write countdown (`wake.rs`): the daemon arms a budget per guarded filesystem after each
//! `statvfs`; the probe spends it per CPU on every write there and wakes the daemon through a
//! ring buffer when a share runs out, so a crossing does not wait for the next sample.
//!
//! Frees (`Sample::freed`): a BTF tracepoint on `mm_filemap_delete_from_page_cache` counts the
//! page-cache pages of a written file that go because its last link went or it was truncated,
//! into the file's project, leaving out this process's own deletions (Guardian's cleanups are
//! level resets of their own). Where the kernel refuses that program the source runs without
//! it and says so (`frees_refused`).
//!
//! What it does not see: stores through `mmap`, io_uring writes, writes by kernel threads (NFS
//! server, loop devices), and data that never reaches the page cache as a syscall. `statvfs`
//! remains the ground truth for free space; this source says *who* is writing *where*.

mod counts;
mod index;
mod wake;

use super::btf::KernelBtf;
use super::countdown::{Budget, Waker};
use super::fold;
use super::kfunc::{self, AlignedObject, CastCall};
use super::{ProjectDir, Sample, Source, SourceError};
use aya::maps::{Array, RingBuf};
use aya::programs::{BtfTracePoint, FExit, TracePoint};
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
    /// Why frees are not counted, when they are not.
    frees_refused: Option<String>,
    /// Why the probe calls the helper for the current task, when it does.
    current_refused: Option<String>,
    /// Which project counts into which probe index.
    index: IndexTable,
    /// What was read from the probe's maps and reported.
    counts: Counts,
    /// The write countdown's budgets and its ring-buffer thread.
    countdown: wake::Countdown,
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
        Self::load_fitted(FittedProbe::for_running_kernel(access)?)
    }

    /// Loads and attaches `probe` as it was fitted.
    fn load_fitted(probe: FittedProbe) -> Result<EbpfSource, SourceError> {
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
        let frees_refused = match &probe.frees {
            Ok(()) => attach_frees(&mut ebpf).err(),
            Err(why) => Some(why.clone()),
        };
        if let Some(reason) = &frees_refused {
            tracing::info!(%reason, "ebpf: bytes freed are not counted (growth is bytes written)");
        }
        let ring = ebpf
            .take_map("WAKE")
            .ok_or_else(|| unavailable("map WAKE missing from the object"))?;
        let ring = RingBuf::try_from(ring).map_err(|e| unavailable(format!("map WAKE: {e}")))?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| unavailable(format!("cannot count CPUs ({what}): {e}")))?;
        let countdown = wake::Countdown::start(ring, u64::try_from(cpus).unwrap_or(u64::MAX))
            .map_err(|e| unavailable(format!("cannot start the countdown's thread: {e}")))?;
        Ok(EbpfSource {
            countdown,
            ebpf,
            mode,
            file_access: probe.access,
            fexit_refused,
            frees_refused,
            current_refused: probe.current,
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

    /// Why bytes freed are not counted, when they are not (then `Sample::freed` stays empty
    /// and a project's net growth is what it writes).
    pub fn frees_refused(&self) -> Option<&str> {
        self.frees_refused.as_deref()
    }

    /// Why the probe calls `bpf_get_current_task_btf` for every write instead of reading the
    /// per-CPU variable that holds `current`, when it does.
    pub fn current_refused(&self) -> Option<&str> {
        self.current_refused.as_deref()
    }

    /// How the CPUs that ran a counted write read `current` and the saved registers.
    pub fn cpus_reading_current(&self) -> Result<CurrentReads, SourceError> {
        let mut reads = CurrentReads::default();
        for cache in self.write_caches()? {
            match cache.current_at {
                0 => {}
                1 => reads.unusable += 1,
                _ => reads.learned += 1,
            }
            if cache.regs_below_top != 0 {
                reads.regs_below_top += 1;
            }
        }
        Ok(reads)
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map, SourceError> {
        self.ebpf
            .map(name)
            .ok_or_else(|| failed(format!("map {name} missing")))
    }

    /// Starts a new project epoch: the probe resolves every written file again (cached
    /// resolutions may name projects that moved, or miss files that now sit in a project).
    fn new_epoch(&mut self) -> Result<(), SourceError> {
        update_settings(&mut self.ebpf, |s| {
            s.epoch = s.epoch.wrapping_add(1);
            true
        })
    }

    /// Records the probe sent through the countdown's ring buffer since it was loaded.
    pub fn wake_records(&self) -> u64 {
        self.countdown.records()
    }
}

/// Reads the probe's `SETTINGS` and writes them back when `change` says it changed them.
fn update_settings(
    ebpf: &mut Ebpf,
    change: impl FnOnce(&mut ProbeSettings) -> bool,
) -> Result<(), SourceError> {
    let mut settings: Array<_, ProbeSettings> = Array::try_from(map_mut(ebpf, ".bss")?)
        .map_err(|e| failed(format!("map .bss (SETTINGS): {e}")))?;
    let mut current = settings
        .get(&0, 0)
        .map_err(|e| failed(format!("reading SETTINGS: {e}")))?;
    if !change(&mut current) {
        return Ok(());
    }
    settings
        .set(0, current, 0)
        .map_err(|e| failed(format!("writing SETTINGS: {e}")))
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
        let mut problems = self.counts_problems();
        if self.countdown.unarmed > 0 {
            problems.push(format!(
                "ebpf: {} guarded filesystem(s) beyond the probe's {} countdown entries: their \
                 crossings wait for the next sample",
                self.countdown.unarmed,
                guardian_common::MAX_FS - 1
            ));
        }
        problems
    }

    fn set_waker(&mut self, waker: Waker) {
        self.countdown.set_waker(waker);
    }

    /// Arms the probe's per-CPU shares; a map that cannot be written leaves the countdown as it
    /// was (crossings then wait for the next sample) and says so once a minute.
    fn arm(&mut self, budgets: &[Budget]) {
        if self.countdown.unchanged(budgets) {
            return;
        }
        let countdown = &mut self.countdown;
        if let Err(e) = update_settings(&mut self.ebpf, |s| countdown.arm(s, budgets)) {
            crate::warn_quiet!("ebpf.arm", error = %e, "ebpf: cannot arm the write countdown");
        }
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

/// The tracepoint the free path attaches to, and its program.
const FREE_TRACEPOINT: (&str, &str) = ("folio_deleted", "mm_filemap_delete_from_page_cache");

/// Attaches the free path (a BTF tracepoint: no trampoline, so also where fexit is refused).
fn attach_frees(ebpf: &mut Ebpf) -> Result<(), String> {
    let (program, tracepoint) = FREE_TRACEPOINT;
    let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the object"))?
        .try_into()
        .map_err(|e| format!("{program}: {e}"))?;
    prog.load(tracepoint, &btf)
        .map_err(|e| format!("tp_btf {tracepoint}: {e}"))?;
    prog.attach()
        .map_err(|e| format!("tp_btf {tracepoint}: {e}"))?;
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

/// CPUs by how the probe reads `current` there; a CPU that ran no counted write yet is in none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CurrentReads {
    /// CPUs that learned where `current` is kept and read it from there.
    pub learned: usize,
    /// CPUs that found that place wrong and call the helper.
    pub unusable: usize,
    /// CPUs that read the saved registers below the top of the stack the per-CPU variable
    /// beside `current` holds (else through `task->stack`).
    pub regs_below_top: usize,
}

/// The probe object and its globals fitted to the running kernel: struct offsets from its BTF,
/// and the `bpf_rdonly_cast` placeholder calls rewritten for it.
struct FittedProbe {
    object: AlignedObject,
    offsets: KernelOffsets,
    access: FileAccess,
    /// Whether the kernel's BTF has what the free path reads (else why not).
    frees: Result<(), String>,
    /// Why the probe cannot read `current` from its per-CPU variable, when it cannot.
    current: Option<String>,
}

impl FittedProbe {
    fn for_running_kernel(wanted: FileAccess) -> Result<FittedProbe, SourceError> {
        Self::fitted(wanted, |_| {})
    }

    /// As `for_running_kernel`, with `adjust` applied to the offsets before they are folded into
    /// the code (tests give the probe wrong places this way).
    fn fitted(
        wanted: FileAccess,
        adjust: impl FnOnce(&mut KernelOffsets),
    ) -> Result<FittedProbe, SourceError> {
        let btf = KernelBtf::open().map_err(|e| unavailable(format!("kernel BTF: {e}")))?;
        let mut offsets = kernel_offsets(&btf)?;
        let frees = free_offsets(&btf, &mut offsets);
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
        let (mut object, _) = kfunc::rewrite_cast_calls(PROBE, cast).map_err(unavailable)?;
        let current = match access {
            FileAccess::Typed => match current_from_runqueue(&btf) {
                Ok(way) => {
                    offsets.task_se_cfs_rq = way.task_se_cfs_rq;
                    offsets.cfs_rq_rq = way.cfs_rq_rq;
                    offsets.rq_to_current = way.rq_to_current;
                    offsets.current_to_top_of_stack = way.current_to_top_of_stack;
                    offsets.task_ref_btf_id = way.task_ref;
                    None
                }
                Err(why) => Some(why),
            },
            FileAccess::ProbeRead => Some("the probe reads files with probe reads".into()),
        };
        if let Some(why) = &current {
            tracing::info!(%why, "ebpf: the current task is read through the helper");
        }
        adjust(&mut offsets);
        // Last: the offsets are final here, and the map keeps them for the loads left.
        let (folded, tidied) =
            fold::fold_global_loads(&mut object, "OFFSETS", fold::bytes_of(&offsets))
                .map_err(unavailable)?;
        tracing::debug!(
            loads = folded.loads,
            wide = folded.wide,
            removed = tidied.removed,
            fused = tidied.fused,
            "ebpf: offsets folded"
        );
        Ok(FittedProbe {
            object,
            offsets,
            access,
            frees,
            current,
        })
    }

    fn open(&self) -> Result<Ebpf, SourceError> {
        EbpfLoader::new()
            .override_global("OFFSETS", &self.offsets, true)
            .override_global("OWN_TGID", &std::process::id(), true)
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

/// How the probe finds, once per CPU, the per-CPU variable that holds `current`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CurrentWay {
    /// `struct rcuwait`, whose first member is a `struct task_struct *`.
    task_ref: u32,
    task_se_cfs_rq: u64,
    cfs_rq_rq: u64,
    rq_to_current: u64,
    /// From `current`'s variable to the one holding the top of the current stack (0: none).
    current_to_top_of_stack: u64,
}

/// Where x86-64 keeps `current` — the per-CPU `current_task` (Linux < 6.2 and ≥ 6.15) or
/// `pcpu_hot.current_task` (6.2–6.14) — as a distance from the per-CPU `runqueues`, which the
/// probe reaches from the running task (`se.cfs_rq->rq`). Other architectures keep `current` in
/// a register and have no such variable; a kernel without `CONFIG_FAIR_GROUP_SCHED` has no
/// `se.cfs_rq`. The probe then calls the helper.
fn current_from_runqueue(btf: &KernelBtf) -> Result<CurrentWay, String> {
    let hot = |member: &str| -> Result<u64, String> {
        let (at, _) = btf
            .percpu_var("pcpu_hot")
            .ok_or_else(|| format!("the kernel's BTF has no per-CPU {member} or pcpu_hot"))?;
        Ok(u64::from(at) + btf.offset_of("pcpu_hot", member)?)
    };
    let current = match btf.percpu_var("current_task") {
        Some((at, ty)) => {
            if !btf.points_to_struct(ty, "task_struct") {
                return Err("the per-CPU current_task is not a struct task_struct *".into());
            }
            u64::from(at)
        }
        None => hot("current_task")?,
    };
    // Optional: without it the probe finds the saved registers through `task->stack`.
    let top_of_stack = match btf.percpu_var("cpu_current_top_of_stack") {
        Some((at, _)) => Some(u64::from(at)),
        None => hot("top_of_stack").ok(),
    };
    let (runqueues, _) = btf
        .percpu_var("runqueues")
        .ok_or("the kernel's BTF has no per-CPU runqueues")?;
    // 0 tells the probe there is no way; two variables never share an offset.
    let rq_to_current = current.wrapping_sub(u64::from(runqueues));
    if rq_to_current == 0 {
        return Err("the per-CPU runqueues and current share an offset".into());
    }
    Ok(CurrentWay {
        task_ref: btf.struct_starting_with_pointer("rcuwait", "task", "task_struct")?,
        task_se_cfs_rq: btf.offset_of("task_struct", "se.cfs_rq")?,
        cfs_rq_rq: btf.offset_of("cfs_rq", "rq")?,
        rq_to_current,
        current_to_top_of_stack: top_of_stack.map_or(0, |top| top.wrapping_sub(current)),
    })
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
        ..KernelOffsets::default()
    })
}

/// Fills what the free path reads (see `KernelOffsets::page_shift`); leaves it off (and says
/// why) where the kernel's BTF lacks a piece, e.g. a kernel from before folios.
pub fn free_offsets(btf: &KernelBtf, offsets: &mut KernelOffsets) -> Result<(), String> {
    let get = |ty: &str, path: &str| {
        btf.offset_of(ty, path)
            .map_err(|e| format!("kernel BTF has no {ty}.{path}: {e}"))
    };
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page_size = u64::try_from(page_size).map_err(|_| format!("page size: {page_size}"))?;
    if !page_size.is_power_of_two() {
        return Err(format!("page size {page_size} is not a power of two"));
    }
    *offsets = KernelOffsets {
        folio_flags: get("folio", "flags")?,
        folio_mapping: get("folio", "mapping")?,
        folio_index: get("folio", "index")?,
        folio_flags_1: get("folio", "_flags_1")?,
        address_space_host: get("address_space", "host")?,
        inode_i_nlink: get("inode", "i_nlink")?,
        inode_i_size: get("inode", "i_size")?,
        pg_head: u64::from(btf.enum_value("pageflags", "PG_head")?),
        page_shift: u64::from(page_size.trailing_zeros()),
        ..*offsets
    };
    Ok(())
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
mod tests;
