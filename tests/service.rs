//! Guardian as a service (issue 15): the real daemon talking `sd_notify` to a real unix datagram
//! socket (READY=1, then WATCHDOG=1 only while its main loop makes progress — stalled on a FUSE
//! mount that never answers, it goes silent; STOPPING=1 on SIGTERM).
//! `guardian install-service` and the unit booted under systemd are in `service/` too; this file
//! holds what they share.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// Generous bound for anything the daemon does within a few polls (the machine is shared).
const SOON: Duration = Duration::from_secs(20);

#[path = "service/boot.rs"]
mod boot;
#[path = "service/install.rs"]
mod install;
#[path = "service/notify.rs"]
mod notify;
