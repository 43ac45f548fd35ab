//! Git repositories inside workspaces: whether a `.git` holds work that exists nowhere else
//! (`unpushed`), and the maintenance that frees space in a repo without deleting it
//! (`maintenance`). Reads repos with `gix`; runs `git` only for maintenance, as the repo's
//! owner. Deletes nothing itself: what goes, goes through `cleanup::Executor`.

pub mod maintenance;
pub mod unpushed;

use crate::fsys::EntryKind;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// What one survey may spend on git checks in all: with hundreds of repos, each within its own
/// limit, a survey must still end. Repos not reached within it are kept for this round.
pub const SURVEY_BUDGET: Duration = Duration::from_secs(60);

/// The time left for the git checks of one survey ([`SURVEY_BUDGET`] from its creation).
pub struct Budget {
    deadline: Instant,
}

impl Budget {
    pub fn new(total: Duration) -> Budget {
        Budget {
            deadline: Instant::now() + total,
        }
    }

    /// [`keep_reason`] within what is left of the budget (and each check's own limit); with
    /// nothing left, the `.git` is kept without being read.
    pub fn keep_reason(&self, path: &Path, kind: EntryKind, phase: u8) -> Option<String> {
        if !is_guarded_git_dir(path, kind, phase) {
            return None;
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(format!(
                "kept: not checked for unpushed work within this survey's {}s for git checks",
                SURVEY_BUDGET.as_secs()
            ));
        }
        unpushed::work_at_risk(path, left.min(unpushed::CHECK_LIMIT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_survey_past_its_git_budget_keeps_the_repos_it_did_not_reach() {
        let spent = Budget::new(Duration::ZERO);
        let git = Path::new("/nonexistent-ws/p/.git");
        let why = spent.keep_reason(git, EntryKind::Dir, 1).unwrap();
        assert!(why.starts_with("kept: not checked"), "{why}");
        // Only a phase-1 `.git` dir is judged: other names, a `.git` file, phase 2 are not.
        let other = Path::new("/nonexistent-ws/p/node_modules");
        assert_eq!(spent.keep_reason(other, EntryKind::Dir, 1), None);
        assert_eq!(spent.keep_reason(git, EntryKind::File, 1), None);
        assert_eq!(spent.keep_reason(git, EntryKind::Dir, 2), None);
        assert_eq!(keep_reason(git, EntryKind::Dir, 2), None);
    }
}
