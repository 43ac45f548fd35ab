//! What the events for one changed name said happened (deleted, moved away, moved in), merged
//! over a batch: the size table uses it to tell a directory moved into place from a new one that
//! took a deleted one's inode number.

/// What the events for one (directory, name) said happened, merged: the kernel merges events
/// and the sources apply each name once per batch, so only the union survives, not the order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// False for a listing (no events known): then a known directory found elsewhere is taken
    /// as moved there, and one found at the same name as unchanged.
    pub(crate) known: bool,
    /// Something under the name was deleted.
    pub(crate) deleted: bool,
    /// Something was moved away from the name.
    pub(crate) moved_away: bool,
    /// Something was moved to the name.
    pub(crate) moved_in: bool,
}

impl Change {
    /// No events: the name is re-read because a directory is listed.
    pub(crate) const LISTED: Change = Change {
        known: false,
        deleted: false,
        moved_away: false,
        moved_in: false,
    };

    /// From events: `deleted`, `moved_away`, `moved_in` seen for the name.
    pub(crate) fn seen(deleted: bool, moved_away: bool, moved_in: bool) -> Change {
        Change {
            known: true,
            deleted,
            moved_away,
            moved_in,
        }
    }

    /// Adds what another event for the same name said.
    pub(crate) fn merge(&mut self, other: Change) {
        self.known |= other.known;
        self.deleted |= other.deleted;
        self.moved_away |= other.moved_away;
        self.moved_in |= other.moved_in;
    }

    /// Whatever stood under the name may have left it: a directory found there now is not
    /// known to be the one that was there.
    pub(super) fn replaced(self) -> bool {
        self.known && (self.deleted || self.moved_away)
    }

    /// A known directory found under the name may be the same one, moved there.
    pub(super) fn may_adopt(self) -> bool {
        !self.known || (self.moved_in && !self.deleted)
    }
}
