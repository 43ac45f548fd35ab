//! What a deletion costs to undo: the rebuild-time estimate of a candidate (a fixed part plus a
//! part per GiB, from its rule or artifact type) and the phase-1 order it gives — the most
//! bytes freed per second of rebuild first, then the least recently active. Pure: plain data
//! in, numbers out (docs/artifacts.md documents the model).

use serde::Serialize;

const GIB: u128 = 1 << 30;

/// The estimate model of one rule or artifact type: `base_secs + per_gib_secs × GiB`.
/// All zero (the default) means nothing has to be rebuilt (old logs, a whole project).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RebuildCost {
    pub base_secs: u64,
    pub per_gib_secs: u64,
}

impl RebuildCost {
    /// True when the model says nothing has to be rebuilt.
    pub fn is_free(&self) -> bool {
        self.base_secs == 0 && self.per_gib_secs == 0
    }

    /// Estimated seconds to rebuild `bytes` of this kind: the fixed part plus the part per GiB,
    /// rounded up to whole seconds, saturating (never wraps).
    pub fn estimate_secs(&self, bytes: u64) -> u64 {
        let per = u128::from(self.per_gib_secs) * u128::from(bytes);
        let per = per.div_ceil(GIB);
        u64::try_from(per)
            .unwrap_or(u64::MAX)
            .saturating_add(self.base_secs)
    }

    /// The estimate for a candidate of `bytes`, as a plan shows it; `None` when nothing has to
    /// be rebuilt.
    pub fn estimate(&self, bytes: u64) -> Option<RebuildEstimate> {
        if self.is_free() {
            return None;
        }
        let secs = self.estimate_secs(bytes);
        Some(RebuildEstimate {
            secs,
            bytes_per_sec: bytes / secs.max(1),
        })
    }

    /// The candidate's place in the phase-1 order, higher first: free deletions on top, then
    /// by bytes freed per second of rebuild in factor-of-two bands (so within a band, idleness
    /// decides).
    pub fn rank(&self, bytes: u64) -> u32 {
        match self.estimate(bytes) {
            None => u32::MAX,
            Some(e) => e.bytes_per_sec.checked_ilog2().map_or(0, |l| l + 1),
        }
    }
}

/// A candidate's rebuild estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RebuildEstimate {
    /// Seconds to rebuild (or restore) what the action deletes.
    pub secs: u64,
    /// Bytes it frees per second of that rebuild.
    pub bytes_per_sec: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_estimate_is_the_fixed_part_plus_the_part_per_gib() {
        let target = RebuildCost {
            base_secs: 120,
            per_gib_secs: 300,
        };
        assert_eq!(target.estimate_secs(0), 120);
        assert_eq!(target.estimate_secs(1 << 30), 420);
        // 370 MiB: 108.4 s of the per-GiB part, rounded up.
        assert_eq!(target.estimate_secs(370 * MIB), 120 + 109);
        assert_eq!(target.estimate_secs(u64::MAX), 120 + 300 * (1 << 34));
        let huge = RebuildCost {
            base_secs: u64::MAX,
            per_gib_secs: u64::MAX,
        };
        assert_eq!(huge.estimate_secs(u64::MAX), u64::MAX);
    }

    #[test]
    fn node_modules_outranks_a_target_of_the_same_size() {
        let node_modules = RebuildCost {
            base_secs: 15,
            per_gib_secs: 30,
        };
        let target = RebuildCost {
            base_secs: 120,
            per_gib_secs: 300,
        };
        let bytes = 370 * MIB;
        assert!(node_modules.rank(bytes) > target.rank(bytes));
        // A much bigger target beats a tiny node_modules.
        assert!(target.rank(4 << 30) > node_modules.rank(MIB));
        // Free deletions come first, and show no estimate.
        assert_eq!(RebuildCost::default().rank(1), u32::MAX);
        assert_eq!(RebuildCost::default().estimate(MIB), None);
        let e = node_modules.estimate(bytes).unwrap();
        assert_eq!(e.secs, 15 + 11);
        assert_eq!(e.bytes_per_sec, bytes / 26);
    }

    #[test]
    fn ranks_are_factor_of_two_bands() {
        let one_sec = RebuildCost {
            base_secs: 1,
            per_gib_secs: 0,
        };
        assert_eq!(one_sec.rank(0), 0);
        assert_eq!(one_sec.rank(1), 1);
        assert_eq!(one_sec.rank(1000), one_sec.rank(600));
        assert!(one_sec.rank(1100) > one_sec.rank(1000));
    }
}
