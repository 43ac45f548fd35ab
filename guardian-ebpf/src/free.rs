//! The free path: bytes of a written file's folios leaving the page cache for good (its last
//! link gone, or truncated below them), counted as freed in the file's project.

use super::*;

/// `filemap/mm_filemap_delete_from_page_cache(struct folio *)`: counts a folio leaving a
/// written file as freed in the file's project when the file is going (no link left) or was
/// truncated below the folio (see the crate doc).
#[btf_tracepoint(function = "mm_filemap_delete_from_page_cache")]
pub fn folio_deleted(ctx: BtfTracePointContext) -> i32 {
    count_freed(ctx.arg(0));
    0
}

/// Largest folio order counted (a 4 GiB folio with 4 KiB pages): bounds the shift.
const MAX_FOLIO_ORDER: u64 = 20;

/// The free path's body; `folio` is a BTF pointer, so every load is typed.
#[inline(always)]
fn count_freed(folio: u64) {
    let shift = off!(page_shift);
    if folio == 0 || off!(ready) == 0 || shift == 0 || shift > 16 {
        return;
    }
    let mapping: u64 = load(folio, off!(folio_mapping));
    if mapping == 0 {
        return;
    }
    let inode: u64 = load(mapping, off!(address_space_host));
    if inode == 0 {
        return;
    }
    let nlink: u32 = load(inode, off!(inode_i_nlink));
    if nlink != 0 {
        let index: u64 = load(folio, off!(folio_index));
        let size: i64 = load(inode, off!(inode_i_size));
        // Reclaim takes pages within the file; a truncation, those past its new end.
        if size < 0 || index << shift < size as u64 {
            return;
        }
    }
    // SAFETY: our own read-only global, volatile as `off!`.
    let own = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(OWN_TGID)) };
    if own != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == own {
        return;
    }
    let ino: u64 = load(inode, off!(inode_i_ino));
    let generation: u32 = load(inode, off!(inode_i_generation));
    let sb: u64 = load(inode, off!(inode_i_sb));
    if sb == 0 {
        return;
    }
    let dev: u32 = load(sb, off!(super_block_s_dev));
    let key = FileKey {
        ino,
        dev,
        generation,
    };
    // SAFETY: map values are plain integers; a concurrent update is a benign race.
    let Some(known) = (unsafe { INODE_PROJECT.get(&key) }).copied() else {
        return;
    };
    let project = known.project;
    if project == 0 || project >= MAX_PROJECTS || gen_of(project) != known.gen {
        return;
    }
    let flags: u64 = load(folio, off!(folio_flags));
    let mut order = 0;
    if flags & (1 << (off!(pg_head) & 63)) != 0 {
        order = load::<u64>(folio, off!(folio_flags_1)) & 0xff;
        if order > MAX_FOLIO_ORDER {
            order = MAX_FOLIO_ORDER;
        }
    }
    let bytes = 1u64 << (shift + order);
    log_moved(project);
    if let Some(stats) = STATS.get_ptr_mut(project) {
        // SAFETY: this CPU's counters.
        unsafe { (*stats).freed += bytes };
    }
}
