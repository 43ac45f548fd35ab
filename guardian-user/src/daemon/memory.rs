//! Giving back what start-up and bursts of work needed: the heap glibc keeps after it was freed
//! (BTF parsing, baseline walks, a filled survey index's walks, a cleanup cycle) and the pages of
//! Guardian's own binary that were read once (config parsing, probe loading, the first walks).
//!
//! Invariants: only read-only mappings of the executable with no private (copied) page are
//! dropped — their content is the file's, so a later touch maps the same bytes again from the
//! page cache; nothing is done off Linux/glibc.

/// Returns freed heap and the binary's read-only pages to the OS. A few milliseconds at most;
/// called after start-up, after the project set changed, after the survey index filled and
/// after a cleanup cycle — never per sample.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointer.
        unsafe {
            libc::malloc_trim(0);
        }
        drop_binary_pages();
    }
}

/// Drops this process's mappings of its own executable's read-only pages (see
/// [`unshared_ranges`]): they leave its RSS and become plain page cache the kernel may reclaim;
/// the code an idle daemon runs is mapped back in at its next touch.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn drop_binary_pages() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in unshared_ranges(&smaps, exe.as_os_str().as_encoded_bytes()) {
        let (Ok(addr), Ok(len)) = (usize::try_from(start), usize::try_from(end - start)) else {
            continue;
        };
        // SAFETY: [addr, addr+len) is a whole read-only file mapping of our executable holding
        // no private page (checked just above from smaps, and nothing writes a read-only
        // mapping): MADV_DONTNEED only unmaps its pages, and the next access maps the same
        // file bytes again. No Rust reference is invalidated — the memory reads the same.
        unsafe {
            libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED);
        }
    }
}

/// The (start, end) of each mapping in `smaps` (the text of `/proc/self/smaps`) of the file
/// `exe` that is read-only (`r--p`/`r-xp`) and holds no anonymous (copied-on-write) page: the
/// executable's code and constants, not its relocated or writable data.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
pub fn unshared_ranges(smaps: &str, exe: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut current: Option<(u64, u64)> = None;
    for line in smaps.lines() {
        if let Some(range) = mapping_of(line, exe) {
            current = range;
            continue;
        }
        if let Some(value) = line.strip_prefix("Anonymous:") {
            let anonymous = value
                .trim()
                .strip_suffix("kB")
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let (Some(range), Some(0)) = (current.take(), anonymous) {
                out.push(range);
            }
        }
    }
    out
}

/// For a mapping header line (`start-end perms offset dev inode path`): `Some(range)` when it
/// is a read-only private mapping of `exe`, `Some(None)` for any other mapping; `None` when the
/// line is not a header.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn mapping_of(line: &str, exe: &[u8]) -> Option<Option<(u64, u64)>> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
    );
    let perms = fields.next()?;
    if perms.len() != 4 {
        return None;
    }
    let (_offset, _dev, _inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.collect::<Vec<_>>().join(" ");
    let ours = !exe.is_empty() && path.as_bytes() == exe;
    let read_only = matches!(perms, "r--p" | "r-xp");
    Some((ours && read_only && end > start).then_some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55bf71164000-55bf71744000 r--p 00000000 00:2a 123 /usr/bin/guardian
Size:               6016 kB
Rss:                3248 kB
Anonymous:             0 kB
55bf71744000-55bf724e3000 r-xp 005e0000 00:2a 123 /usr/bin/guardian
Size:              13948 kB
Anonymous:             0 kB
55bf724e3000-55bf7258b000 r--p 0137f000 00:2a 123 /usr/bin/guardian
Anonymous:           672 kB
55bf7258b000-55bf7258d000 rw-p 01427000 00:2a 123 /usr/bin/guardian
Anonymous:             8 kB
55bf8268d000-55bf85c3d000 rw-p 00000000 00:00 0 [heap]
Anonymous:         12884 kB
7fe4bb7e1000-7fe4bb937000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7fe4bb9ad000-7fe4bba21000 r-xp 00000000 00:2a 124 /usr/bin/guardian with space
Anonymous:             0 kB
";

    #[test]
    fn only_the_executables_read_only_pages_without_copies_are_dropped() {
        assert_eq!(
            unshared_ranges(SMAPS, b"/usr/bin/guardian"),
            vec![
                (0x55bf71164000, 0x55bf71744000),
                (0x55bf71744000, 0x55bf724e3000)
            ],
            "not the relocated read-only data (it has copied pages), not the writable data, \
             not the heap, not a library"
        );
        assert_eq!(
            unshared_ranges(SMAPS, b"/usr/bin/guardian with space"),
            vec![(0x7fe4bb9ad000, 0x7fe4bba21000)]
        );
        assert!(unshared_ranges(SMAPS, b"").is_empty());
        assert!(unshared_ranges("garbage\nAnonymous: 0 kB\n", b"/usr/bin/guardian").is_empty());
    }
}
