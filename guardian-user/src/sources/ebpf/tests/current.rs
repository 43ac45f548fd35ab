//! Real-kernel tests of how the probe reads `current` and the saved syscall registers from
//! per-CPU variables: the places it learns are checked, wrong ones refused, and every task's
//! bytes land in its own files.

use super::*;

/// Loads the probe with `adjust` applied to its offsets, writes 16 MiB into a project and checks
/// every byte was counted; then how the CPUs that wrote read `current`.
fn exact_counts_with(adjust: impl FnOnce(&mut KernelOffsets)) -> CurrentReads {
    let probe = FittedProbe::fitted(FileAccess::Typed, adjust).unwrap();
    let mut source = EbpfSource::load_fitted(probe).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    std::fs::create_dir(&a).unwrap();
    source.watch(&[project(1, &a)]).unwrap();
    source.drain().unwrap();
    write_mix(&a, 16 << 20);
    let sample = source.drain().unwrap();
    assert_eq!(sample.growth.get(&1).copied(), Some(16 << 20));
    source.cpus_reading_current().unwrap()
}

/// A probe told a wrong place for `current` finds out on each CPU's first write and calls the
/// helper there instead: nothing is counted to another task's files.
#[test]
fn a_wrong_place_for_current_is_refused_and_the_helper_used() {
    if !crate::testkit::require_root("ebpf current-task check") {
        return;
    }
    // One pointer further along the per-CPU section: a valid address holding something else.
    let reads = exact_counts_with(|offsets| {
        assert_ne!(offsets.rq_to_current, 0);
        offsets.rq_to_current = offsets.rq_to_current.wrapping_add(8);
    });
    assert_eq!(
        reads.learned, 0,
        "no CPU may use the wrong place: {reads:?}"
    );
    assert!(reads.unusable >= 1, "the CPUs that wrote found it wrong");
    assert_eq!(reads.regs_below_top, 0, "{reads:?}");
}

/// A probe told a wrong place for the top of the stack (the variable after it, which holds
/// `current`: a pointer into the task slab, not to a stack) finds no plausible distance to the
/// saved registers on any CPU and goes through `task->stack`: every byte is still counted.
#[test]
fn a_wrong_place_for_the_stack_top_is_refused_and_task_stack_used() {
    if !crate::testkit::require_root("ebpf stack-top check") {
        return;
    }
    let reads = exact_counts_with(|offsets| {
        assert_ne!(offsets.current_to_top_of_stack, 0);
        offsets.current_to_top_of_stack = offsets.current_to_top_of_stack.wrapping_add(8);
    });
    assert!(
        reads.learned >= 1,
        "current itself is read as before: {reads:?}"
    );
    assert_eq!(
        reads.regs_below_top, 0,
        "no CPU may use the wrong place: {reads:?}"
    );
}

/// Tasks taking turns on one CPU each have their own stack: the saved registers (and so the fd)
/// the probe reads after a switch are the new task's. Two threads share one fd table, so a
/// register read from the other thread's stack would name the other thread's fd and count its
/// bytes to the other project.
#[test]
fn tasks_taking_turns_on_one_cpu_count_into_their_own_files() {
    if !crate::testkit::require_root("ebpf tasks on one cpu") {
        return;
    }
    let mut source = EbpfSource::load().expect("the probe must load on this kernel");
    let tmp = tempfile::tempdir().unwrap();
    let dirs = [tmp.path().join("a"), tmp.path().join("b")];
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    source
        .watch(&[project(1, &dirs[0]), project(2, &dirs[1])])
        .unwrap();
    source.drain().unwrap();
    // Different sizes, so bytes counted to the wrong project show in both totals.
    let blocks = [3000i64, 1000];
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for (dir, &count) in dirs.iter().zip(&blocks) {
            let start = &start;
            scope.spawn(move || {
                pin_to_one_cpu();
                // Extra fds, so the two threads' fds differ by more than one.
                let _spare: Vec<_> = (0..3)
                    .map(|i| std::fs::File::create(dir.join(format!("spare{i}"))).unwrap())
                    .collect();
                let mut f = std::fs::File::create(dir.join("f")).unwrap();
                let block = [0x3cu8; 4096];
                start.wait();
                for _ in 0..count {
                    f.write_all(&block).unwrap();
                    // Hand the CPU to the other thread between writes.
                    std::thread::yield_now();
                }
            });
        }
    });
    let sample = source.drain().unwrap();
    assert_eq!(sample.growth.get(&1).copied(), Some(blocks[0] * 4096));
    assert_eq!(sample.growth.get(&2).copied(), Some(blocks[1] * 4096));
}
