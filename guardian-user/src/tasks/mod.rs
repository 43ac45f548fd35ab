//! Tasks: what the dispatcher's task DB says about this node, and the policies built on it —
//! running-task protection, the completion policy (`guardian task done`), age and inactivity
//! sweeps of task and scratch areas with usage limits, and the ghost reaper.
//!
//! Invariants: the task DB's schema is never changed and no row is ever deleted (read paths
//! open it read-only; an authorizer refuses anything but reading, or one UPDATE for marking);
//! while task state is unknown (DB missing, corrupt, locked past its budget, or no answer in
//! time) every project counts as possibly running, never the reverse; every deletion goes
//! through the cleanup executor; the daemon's loop never waits on the DB, the reaper or a sweep.

pub mod clock;
pub mod completion;
pub mod db;
pub mod ghosts;
pub mod members;
pub mod procs;
pub mod protection;
pub mod registry;
pub mod row;
pub mod service;
pub mod sessions;
mod state_file;
pub mod sweep;
pub mod watch;

pub use protection::{running_protection, RunningProtection, TaskSnapshot};
pub use service::{TaskService, TaskTick};

use crate::cleanup::{AuditLog, AuditRecord};
use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Guardian's task status file in the runtime dir (`DaemonConfig::runtime_dir`).
pub const TASKS_STATE_FILE: &str = "tasks.json";

/// Stop flags a long call watches (the daemon's shutdown flag, a service's own stop flag):
/// set when any of them is.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Vec<Arc<AtomicBool>>);

impl Cancel {
    /// A call nothing cancels (one-shot commands).
    pub fn never() -> Cancel {
        Cancel(Vec::new())
    }

    pub fn on(flag: Arc<AtomicBool>) -> Cancel {
        Cancel(vec![flag])
    }

    /// These flags and `flag`.
    pub fn with(&self, flag: Arc<AtomicBool>) -> Cancel {
        let mut flags = self.0.clone();
        flags.push(flag);
        Cancel(flags)
    }

    pub fn is_set(&self) -> bool {
        self.0.iter().any(|f| f.load(Ordering::Relaxed))
    }
}

/// Writes audit records and remembers them for the daemon's recent-actions list.
pub struct Recorder<'a> {
    log: &'a AuditLog,
    seen: RefCell<Vec<AuditRecord>>,
}

impl<'a> Recorder<'a> {
    pub fn new(log: &'a AuditLog) -> Recorder<'a> {
        Recorder {
            log,
            seen: RefCell::new(Vec::new()),
        }
    }

    pub fn record(&self, record: AuditRecord) -> io::Result<()> {
        self.log.record(&record)?;
        self.seen.borrow_mut().push(record);
        Ok(())
    }

    /// Remembers a record someone else (the executor) already wrote.
    pub fn seen(&self, record: AuditRecord) {
        self.seen.borrow_mut().push(record);
    }

    pub fn into_records(self) -> Vec<AuditRecord> {
        self.seen.into_inner()
    }
}
