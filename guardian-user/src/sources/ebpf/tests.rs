use super::*;
use std::io::{IoSlice, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

mod current;

fn project(id: u32, path: &Path) -> ProjectDir {
    let meta = std::fs::metadata(path).unwrap();
    ProjectDir {
        id,
        path: path.into(),
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
    let reads = source.cpus_reading_current().unwrap();
    match access {
        FileAccess::Typed => {
            assert_eq!(
                source.current_refused(),
                None,
                "x86-64 Linux 6.18 has a per-CPU current_task and se.cfs_rq"
            );
            assert!(
                reads.learned >= 1 && reads.unusable == 0,
                "the CPUs that wrote read current from its variable: {reads:?}"
            );
            assert_eq!(
                reads.regs_below_top, reads.learned,
                "x86-64 Linux 6.18 has a per-CPU cpu_current_top_of_stack: {reads:?}"
            );
        }
        FileAccess::ProbeRead => assert_eq!(reads, CurrentReads::default()),
    }
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
    if !crate::testkit::require_root("ten_rounds_of_a_thousand_projects_leave_attribution_alive") {
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

/// A node holds 10,000 project dirs: all of them are registered and the last one's bytes are
/// counted (the probe's table held 8,191: 1,809 projects of such a node went uncounted, with
/// a warning).
#[test]
fn ten_thousand_projects_are_all_counted() {
    if !crate::testkit::require_root("ten_thousand_projects_are_all_counted") {
        return;
    }
    let mut source = EbpfSource::load().expect("the probe must load on this kernel");
    let mut agg = crate::aggregate::Aggregator::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for i in 0..10_000 {
        let path = tmp.path().join(format!("p{i:05}"));
        std::fs::create_dir(&path).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        dirs.push((path, m.dev(), m.ino()));
    }
    let projects = agg.project_dirs(&dirs);
    source.watch(&projects).unwrap();
    source.drain().unwrap();
    assert!(source.problems().is_empty(), "{:?}", source.problems());
    let last = projects.last().unwrap();
    std::fs::write(last.path.join("data"), vec![7u8; 3 << 20]).unwrap();
    let sample = source.drain().unwrap();
    assert_eq!(
        sample.growth.get(&last.id).copied(),
        Some(3 << 20),
        "{:?}",
        sample.growth
    );
}

/// A vanished project's index goes to a new project only with a new generation: bytes the
/// vanished one left in a write slot are dropped, never counted for the new owner.
#[test]
fn a_recycled_index_never_counts_the_vanished_projects_bytes() {
    if !crate::testkit::require_root("a_recycled_index_never_counts_the_vanished_projects_bytes") {
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
    if !crate::testkit::require_root("the_per_cgroup_map_is_pruned_and_a_full_one_is_reported") {
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

#[test]
fn folds_the_probes_offset_loads_into_their_values() {
    if PROBE.is_empty() {
        crate::testkit::skip(
            "folds_the_probes_offset_loads_into_their_values",
            "built without the probe",
        );
        return;
    }
    // Every 8-byte field a distinct value the probe's code cannot hold by itself.
    let mut offsets = KernelOffsets::default();
    let fields = size_of::<KernelOffsets>() / 8;
    // SAFETY: KernelOffsets is plain u64s and u32s without padding.
    let words = unsafe {
        std::slice::from_raw_parts_mut((&mut offsets as *mut KernelOffsets).cast::<u64>(), fields)
    };
    for (i, word) in words.iter_mut().enumerate() {
        *word = 0x7100 + 8 * i as u64;
    }
    // A value only a 64-bit load holds, and a negative distance (a sign-extended immediate).
    offsets.rq_to_current = 0x1_0000_5498;
    offsets.current_to_top_of_stack = (-8i64) as u64;
    let values: std::collections::HashSet<u32> = fold::bytes_of(&offsets)
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (mut object, _) = kfunc::rewrite_cast_calls(PROBE, CastCall::Move).unwrap();
    let before = object.bytes().to_vec();
    let (folded, tidied) =
        fold::fold_global_loads(&mut object, "OFFSETS", fold::bytes_of(&offsets)).unwrap();
    assert!(folded.loads >= 100, "{folded:?}");
    assert!(
        folded.wide >= 1,
        "the runqueue distance is 64 bits: {folded:?}"
    );
    assert!(tidied.removed >= 100 && tidied.fused >= 50, "{tidied:?}");
    let after = object.bytes();
    let (mut immediates, mut negative, mut nops, mut loads_gone, mut fused) = (0, 0, 0, 0, 0);
    for (start, end) in kfunc::code_ranges(&before).unwrap() {
        for (at, (old, new)) in before[start..end]
            .chunks_exact(8)
            .zip(after[start..end].chunks_exact(8))
            .enumerate()
        {
            if old == new {
                continue;
            }
            let was_load = old[0] & 0x07 == 0x01;
            if new == [0x05, 0, 0, 0, 0, 0, 0, 0] {
                // A dead ld_imm64 (either slot), or the move and add of a fused address.
                nops += 1;
                loads_gone += usize::from(was_load);
                continue;
            }
            if new[0] & 0x07 == 0x01 {
                assert_eq!(
                    new[0], old[0],
                    "instruction {at}: a fused load keeps its size"
                );
                assert_eq!(new[1] & 0x0f, old[1] & 0x0f, "same destination");
                fused += 1;
                continue;
            }
            assert!(was_load, "instruction {at} was a load");
            assert_eq!(new[1] & 0x0f, old[1] & 0x0f, "same destination");
            let imm = i32::from_le_bytes(new[4..8].try_into().unwrap());
            match new[0] {
                0xb4 => assert!(
                    values.contains(&(imm as u32)),
                    "{imm:#x} is one of the offsets"
                ),
                0xb7 => {
                    assert_eq!(imm, -8, "instruction {at}: the only negative value");
                    negative += 1;
                }
                op => panic!("instruction {at} is {op:#x}, not w = imm or r = imm"),
            }
            immediates += 1;
        }
    }
    assert_eq!(
        immediates + loads_gone,
        folded.loads,
        "every folded load is an immediate or was fused away"
    );
    assert_eq!(fused, tidied.fused);
    assert_eq!(nops, 2 * tidied.removed + 2 * tidied.fused);
    assert!(
        negative >= 1,
        "the stack-top distance is folded sign-extended"
    );
    // What aya reads back: every relocation left in code names an ld_imm64 or a call.
    use object::{Object, ObjectSection};
    let relocations = |elf: &[u8]| {
        let file = object::File::parse(elf).unwrap();
        let mut count = 0;
        for section in file.sections() {
            let Some(range) = kfunc::code_range(&section, elf.len()).unwrap() else {
                continue;
            };
            for (at, _) in section.relocations() {
                count += 1;
                let op = elf[range.start + at as usize];
                assert!(
                    op == 0x18 || op == 0x85,
                    "a relocation at {at} names op {op:#x}"
                );
            }
        }
        count
    };
    let kept = relocations(after);
    assert_eq!(relocations(&before) - kept, tidied.removed);
}

/// Pins the calling thread to one CPU, so every write spends that CPU's share of a budget.
fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read and write it.
    let rc = unsafe {
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut one);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one)
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

/// Writes `bytes` into `f` in 4 KiB writes.
fn write_4k(f: &mut std::fs::File, bytes: u64) {
    let block = [0x5au8; 4096];
    for _ in 0..bytes / 4096 {
        f.write_all(&block).unwrap();
    }
}

/// Waits (bounded) until the source's ring-buffer thread has read `want` records.
fn wait_for_records(source: &EbpfSource, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while source.wake_records() < want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    source.wake_records()
}

#[test]
fn the_countdown_wakes_once_per_budget_not_per_write_and_again_once_re_armed() {
    use crate::sources::countdown::Budget;
    if !crate::testkit::require_root("ebpf countdown test") {
        return;
    }
    let _knobs = crate::sources::testutil::knobs();
    let mut source = EbpfSource::load().expect("the probe must load on this kernel");
    let armed_fs = crate::sources::testutil::Tmpfs::mount().unwrap();
    let other_fs = crate::sources::testutil::Tmpfs::mount().unwrap();
    let dev = std::fs::metadata(&armed_fs.path).unwrap().dev();
    let (waker, wakeups) = crossbeam_channel::bounded(1);
    source.set_waker(waker);
    pin_to_one_cpu();
    let cpus = u64::try_from(aya::util::nr_cpus().unwrap()).unwrap();
    let budget = 8 << 20;
    let share = budget / cpus;
    // The written file lies in no project: every write on the filesystem counts down.
    let mut f = std::fs::File::create(armed_fs.path.join("storm.bin")).unwrap();
    let mut elsewhere = std::fs::File::create(other_fs.path.join("other.bin")).unwrap();
    source.arm(&[Budget::new(dev, budget)]);
    assert!(
        source.countdown.unchanged(&[Budget::new(dev, budget)]),
        "arming the same budgets again with nothing spent must not touch the probe"
    );

    // Short of the share, and any amount on a filesystem that is not armed: no wake-up.
    write_4k(&mut f, share - 4096);
    write_4k(&mut elsewhere, 4 * budget);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(source.wake_records(), 0, "woken before the share was spent");
    assert!(wakeups.try_recv().is_err());

    // The write that spends the share wakes; a storm of thousands more writes sends nothing more.
    write_4k(&mut f, 4096);
    assert_eq!(
        wait_for_records(&source, 1),
        1,
        "the budget ran out: one record"
    );
    let wake = wakeups
        .try_recv()
        .expect("the daemon's waker got the wake-up");
    assert_eq!((wake.source, wake.dev), ("ebpf", dev));
    assert!(wake.bytes >= share, "{wake:?}");
    write_4k(&mut f, 64 << 20);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        source.wake_records(),
        1,
        "16,384 writes after the budget ran out must not send a record each"
    );

    // Re-armed after the daemon's statvfs (same budget: a share was spent, so it starts over).
    assert!(!source.countdown.unchanged(&[Budget::new(dev, budget)]));
    source.arm(&[Budget::new(dev, budget)]);
    write_4k(&mut f, share - 4096);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(source.wake_records(), 1, "the new budget starts from zero");
    write_4k(&mut f, 64 << 20);
    assert_eq!(
        wait_for_records(&source, 2),
        2,
        "one record for the new budget"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(source.wake_records(), 2);

    // Disarmed (the filesystem is no longer guarded): writes wake nobody.
    source.arm(&[]);
    write_4k(&mut f, 2 * budget);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(source.wake_records(), 2);
}

/// Issue 17: frees by others, per project, on tmpfs and ext4. A project that writes 50 MiB and
/// has it deleted by another process reports 50 MiB written and ~50 MiB freed (net ≈ 0); a
/// truncation to 1 MiB and an `O_TRUNC` of two 8 MiB files report 15 MiB freed. What this
/// process (the loader: Guardian) deletes, and pages dropped from the cache of a file that
/// stays (`POSIX_FADV_DONTNEED`, as reclaim does), count nothing.
#[test]
fn frees_by_others_are_counted_per_project_and_our_own_are_not() {
    use crate::sources::testutil::{self, write_then_delete, Seen, MIB};
    if !crate::testkit::require_root("frees_by_others_are_counted_per_project_and_our_own_are_not")
    {
        return;
    }
    let mut source = EbpfSource::load().expect("the probe must load on this kernel");
    if let Some(why) = source.frees_refused() {
        panic!("this kernel (Linux 6.18 here) allows the free path's tp_btf program: {why}");
    }
    let tmpfs = testutil::Tmpfs::mount().expect("tmpfs");
    let ext4 = testutil::tempdir();
    for (name, base) in [("tmpfs", tmpfs.path.as_path()), ("ext4", ext4.path())] {
        let (a, b) = (base.join("a"), base.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
        }
        source.watch(&[project(1, &a), project(2, &b)]).unwrap();
        source.drain().unwrap();
        let (written, truncated) = write_then_delete(&mut source, &a, 1);
        eprintln!(
            "{name}: written {} freed {} net {}; truncations: written {} freed {}",
            written.get(1),
            written.freed(1),
            written.net(1),
            truncated.get(1),
            truncated.freed(1)
        );
        let mib = MIB as i64;
        assert_eq!(written.get(1), 50 * mib, "{name}: growth is bytes written");
        assert!(
            (written.freed(1) - 50 * mib).abs() <= mib / 2,
            "{name}: ~50 MiB freed: {written:?}"
        );
        assert!(written.net(1).abs() <= mib / 2, "{name}: net ≈ 0");
        assert_eq!(truncated.get(1), 16 * mib, "{name}");
        assert!(
            (truncated.freed(1) - 15 * mib).abs() <= mib / 2,
            "{name}: the truncations freed 15 MiB: {truncated:?}"
        );
        assert!(
            !written.freed.contains_key(&2) && !truncated.freed.contains_key(&2),
            "{name}: nothing freed in the other project"
        );
        // Our own deletion, and a cache drop of a file that stays: nothing freed.
        let own = b.join("own");
        testutil::write_with_write(&own, 4 * MIB, 1 << 20);
        let kept = b.join("kept");
        testutil::write_with_write(&kept, 4 * MIB, 1 << 20);
        let f = std::fs::File::open(&kept).unwrap();
        f.sync_all().unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        std::fs::remove_file(&own).unwrap();
        let mut after = Seen::default();
        testutil::settle(&mut source, &mut after, &[(2, 8 * mib)]);
        assert_eq!(after.get(2), 8 * mib, "{name}");
        assert_eq!(
            after.freed(2),
            0,
            "{name}: our own deletion or a cache drop was counted"
        );
    }
}
