//! Changes Guardian made itself. Deleting an entry changes its directory's mtime and ctime, and
//! activity is read from those times: without this record, a project Guardian cleaned in phase 1
//! would look freshly active to phase 2 and to the age sweeps. The executor records the ctime a
//! directory has right after its own deletion in it; a walk that finds the directory with
//! exactly that ctime (nanoseconds included) leaves its times out. Any later change by anyone
//! else moves the ctime and counts again. Bounded: the oldest records are forgotten first.

use crate::fsys::{EntryKind, EntryStat};
use rustix::fd::BorrowedFd;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Most directories remembered.
const MAX_RECORDS: usize = 65_536;

#[derive(Default)]
struct Records {
    ctime: HashMap<(u64, u64), (i64, u32)>,
    order: VecDeque<(u64, u64)>,
}

static RECORDS: Mutex<Option<Records>> = Mutex::new(None);

/// Records the directory `dir` as last changed by Guardian (call right after deleting in it).
pub fn record(dir: BorrowedFd<'_>) {
    let Ok(st) = crate::fsys::stat_fd(dir) else {
        return;
    };
    let mut guard = RECORDS.lock().unwrap_or_else(|p| p.into_inner());
    let r = guard.get_or_insert_with(Records::default);
    let key = (st.dev, st.ino);
    if r.ctime.insert(key, (st.ctime, st.ctime_nsec)).is_none() {
        r.order.push_back(key);
        while r.order.len() > MAX_RECORDS {
            if let Some(old) = r.order.pop_front() {
                r.ctime.remove(&old);
            }
        }
    }
}

/// True when `st` is a directory whose last change was Guardian's own deletion inside it.
pub fn is_own(st: &EntryStat) -> bool {
    if st.kind != EntryKind::Dir {
        return false;
    }
    let guard = RECORDS.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .as_ref()
        .and_then(|r| r.ctime.get(&(st.dev, st.ino)))
        .is_some_and(|&t| t == (st.ctime, st.ctime_nsec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    #[test]
    fn a_dir_changed_by_guardian_is_own_until_someone_else_changes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("x"), b"1").unwrap();
        let fd = crate::fsys::open_dir_path(&dir).unwrap();
        std::fs::remove_file(dir.join("x")).unwrap();
        record(fd.as_fd());
        assert!(is_own(&crate::fsys::stat_fd(fd.as_fd()).unwrap()));
        std::fs::write(dir.join("y"), b"2").unwrap();
        assert!(!is_own(&crate::fsys::stat_fd(fd.as_fd()).unwrap()));
    }
}
