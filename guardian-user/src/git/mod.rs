//! Git repositories inside workspaces: whether a `.git` holds work that exists nowhere else
//! (`unpushed`), and the maintenance that frees space in a repo without deleting it
//! (`maintenance`). Reads repos with `gix`; runs `git` only for maintenance, as the repo's
//! owner. Deletes nothing itself: what goes, goes through `cleanup::Executor`.

pub mod maintenance;
pub mod unpushed;

use crate::fsys::EntryKind;
use std::path::Path;

/// The name of a repo's git directory.
pub const GIT_DIR: &str = ".git";

/// Whether a planned target is a `.git` directory that phase 1 may only delete when it holds no
/// work found nowhere else. Phase 2 (whole-dir rules) is not held back by it.
pub fn is_guarded_git_dir(path: &Path, kind: EntryKind, phase: u8) -> bool {
    phase == 1 && kind == EntryKind::Dir && path.file_name().is_some_and(|n| n == GIT_DIR)
}

/// The re-check a `.git` target names for itself: why it must be kept (unpushed commits,
/// stashes, a dirty work tree, or "cannot decide"), `None` when deleting it loses nothing. The
/// survey asks it to block a candidate; the executor asks it again right before deleting (a
/// commit made between plan and deletion still saves the repo). Any other target: `None`.
pub fn keep_reason(path: &Path, kind: EntryKind, phase: u8) -> Option<String> {
    if !is_guarded_git_dir(path, kind, phase) {
        return None;
    }
    unpushed::work_at_risk(path, unpushed::CHECK_LIMIT)
}
