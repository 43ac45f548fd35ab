//! The `[git]` table: git maintenance in phase 1 (`git gc` as the repo's owner, stale temp
//! packs). Whether a `.git` holds unpushed work is always checked and has no knob.

use super::ranges::{self, DurationRange};
use super::HumanDuration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// Run git maintenance on the `.git` dirs a phase-1 plan meets, before deleting any.
    #[serde(default = "default_maintenance")]
    pub maintenance: bool,
    /// A `git gc` still running after this is killed.
    #[serde(default = "default_timeout")]
    pub maintenance_timeout: HumanDuration,
    /// `git gc` runs only in a repo with at least this many loose objects.
    #[serde(default = "default_min_loose")]
    pub min_loose_objects: u64,
    /// Temp packs (`objects/pack/tmp_pack_*`, `tmp_idx_*`) and a `gc.log` unchanged for this
    /// long, in a repo no process holds, are deleted.
    #[serde(default = "default_stale_after")]
    pub stale_after: HumanDuration,
}

fn default_maintenance() -> bool {
    true
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}
fn default_min_loose() -> u64 {
    1000
}
fn default_stale_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

impl Default for GitConfig {
    fn default() -> Self {
        GitConfig {
            maintenance: default_maintenance(),
            maintenance_timeout: default_timeout(),
            min_loose_objects: default_min_loose(),
            stale_after: default_stale_after(),
        }
    }
}

/// The most loose objects `min_loose_objects` may ask for (git itself packs at 6700).
pub const MAX_MIN_LOOSE: u64 = 1_000_000_000;

impl GitConfig {
    /// Checks what the types cannot; returns the key path of the offending value.
    pub(super) fn validate(&self) -> Result<(), (Vec<String>, String)> {
        let key = |k: &str| vec!["git".to_string(), k.to_string()];
        for (name, value, range) in [
            (
                "maintenance_timeout",
                self.maintenance_timeout,
                ranges::GIT_MAINTENANCE_TIMEOUT,
            ),
            ("stale_after", self.stale_after, ranges::GIT_STALE_AFTER),
        ] {
            let range: DurationRange = range;
            range.check(value.0).map_err(|m| (key(name), m))?;
        }
        if !(1..=MAX_MIN_LOOSE).contains(&self.min_loose_objects) {
            return Err((
                key("min_loose_objects"),
                format!(
                    "{} is outside the allowed range 1 to {MAX_MIN_LOOSE}",
                    self.min_loose_objects
                ),
            ));
        }
        Ok(())
    }
}
