//! The packed entry lists (`entries.rs`) with plain data: lookups, tombstones, moves,
//! compaction and widening.

use super::*;

fn file(hash: u32, ino: u64, size: u32) -> Entry {
    Entry { ino, size, hash }
}

#[test]
fn an_entry_is_twelve_bytes_or_sixteen_and_a_segment_sixteen() {
    assert_eq!(std::mem::size_of::<Entry>(), 16);
    assert_eq!(std::mem::size_of::<Narrow>(), 12);
    assert_eq!(std::mem::size_of::<Seg>(), 16);
}

#[test]
fn lookups_see_the_sorted_head_and_the_tail_and_skip_removed_entries() {
    let mut pool = Pool::default();
    let mut seg = pool.alloc(0).unwrap();
    seg.tag = 7;
    // Another segment after it: growing moves this one to the end of the pool.
    let mut other = pool.alloc(3).unwrap();
    let mut e = EntriesMut::of(&mut seg, &mut pool);
    for i in 0..1000u64 {
        assert!(e.push(file((i % 97) as u32, i, 1)));
    }
    for h in 0..97u32 {
        let slots = e.read().with_hash(h);
        assert!(slots.iter().all(|s| e.read().get(*s).unwrap().hash == h));
        assert_eq!(
            slots.len(),
            (0..1000u64).filter(|i| i % 97 == h as u64).count()
        );
    }
    // Remove most of them: sweeps keep the rest findable.
    for i in 0..900u64 {
        let h = (i % 97) as u32;
        let slot = e
            .read()
            .with_hash(h)
            .into_iter()
            .find(|s| e.read().get(*s).unwrap().ino == i)
            .unwrap();
        assert_eq!(e.remove(slot).unwrap().ino, i);
    }
    assert_eq!(e.read().iter().count(), 100);
    for i in 900..1000u64 {
        let h = (i % 97) as u32;
        assert!(e
            .read()
            .with_hash(h)
            .iter()
            .any(|s| e.read().get(*s).unwrap().ino == i));
    }
    e.sort();
    assert!(e.read().shared_file_hashes().len() < 97);
    e.shrink();
    assert_eq!(e.read().len(), 100);
    // The other segment was untouched; compacting packs both, in order.
    let mut o = EntriesMut::of(&mut other, &mut pool);
    o.push(file(5, 1, DIR));
    o.push(file(5, 2, 3));
    assert!(
        o.read().shared_file_hashes().is_empty(),
        "a dir and a file may share"
    );
    o.push(file(5, 3, 3));
    // Past its room: it moves to the end of the pool, leaving a hole.
    o.push(file(6, 4, 1));
    o.sort();
    assert_eq!(o.read().shared_file_hashes(), vec![5]);
    assert_eq!(
        o.read()
            .find_dir(5, 1)
            .and_then(|s| o.read().get(s))
            .map(|e| e.ino),
        Some(1)
    );
    assert!(pool.slots() > 107, "a hole left by the move");
    pool.compact([&mut seg, &mut other].into_iter());
    assert_eq!(pool.slots(), 104, "packed: {}", pool.slots());
    assert_eq!(
        seg.tag, 7,
        "the owner's tag is kept through moves and compaction"
    );
    assert_eq!(Entries::of(&seg, &pool).len(), 100);
    assert_eq!(Entries::of(&other, &pool).len(), 4);
    for i in 900..1000u64 {
        let h = (i % 97) as u32;
        let read = Entries::of(&seg, &pool);
        assert!(read
            .with_hash(h)
            .iter()
            .any(|s| read.get(*s).unwrap().ino == i));
    }
    assert_eq!(
        Entries::of(&other, &pool).shared_file_hashes(),
        vec![5],
        "the order survives compaction"
    );
    pool.free(&mut other);
    assert_eq!(pool.slots(), 100, "the last segment's room is given back");
    pool.free(&mut seg);
    assert_eq!(pool.slots(), 0);
}

/// ext4 inode numbers fit in 32 bits and are kept in 12 bytes; the first that does not
/// (XFS `inode64`, btrfs, overlayfs `xino`) widens the whole pool, and every list keeps
/// its entries, order and tombstones.
#[test]
fn an_inode_number_past_32_bits_widens_the_pool_and_keeps_every_entry() {
    let mut pool = Pool::default();
    let mut a = pool.alloc(0).unwrap();
    let mut b = pool.alloc(0).unwrap();
    for i in 0..100u64 {
        assert!(EntriesMut::of(&mut a, &mut pool).push(file((i % 7) as u32, i, 1)));
        assert!(EntriesMut::of(&mut b, &mut pool).push(file((i % 5) as u32, 1000 + i, 2)));
    }
    let gone = EntriesMut::of(&mut a, &mut pool).read().with_hash(3)[0];
    let gone = EntriesMut::of(&mut a, &mut pool).remove(gone).unwrap().ino;
    assert!(pool.is_narrow());
    let big = 1u64 << 40;
    assert!(EntriesMut::of(&mut b, &mut pool).push(file(9, big, DIR)));
    assert!(!pool.is_narrow());
    let (ra, rb) = (Entries::of(&a, &pool), Entries::of(&b, &pool));
    assert_eq!(ra.len(), 99);
    assert_eq!(rb.len(), 101);
    for i in 0..100u64 {
        let found = ra
            .with_hash((i % 7) as u32)
            .iter()
            .any(|s| ra.get(*s).unwrap().ino == i);
        assert_eq!(found, i != gone, "{i}");
        assert!(rb
            .with_hash((i % 5) as u32)
            .iter()
            .any(|s| rb.get(*s).unwrap().ino == 1000 + i));
    }
    assert_eq!(
        rb.find_dir(9, big).and_then(|s| rb.get(s)).map(|e| e.ino),
        Some(big)
    );
    pool.compact([&mut a, &mut b].into_iter());
    assert_eq!(pool.slots(), 200);
    let rb = Entries::of(&b, &pool);
    assert_eq!(
        rb.find_dir(9, big).and_then(|s| rb.get(s)).map(|e| e.ino),
        Some(big)
    );
}
