//! End to end on real filesystems: phase 1, phase 2, dry run, bad config, scan vs du.

mod support;
