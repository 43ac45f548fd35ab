//! Attacks on the cleanup executor: symlinks, swaps, bind mounts, hard links, path escapes.

mod support;
