//! Rewrites the probe object's placeholder calls into kfunc calls before aya loads it. aya 0.14
//! does not relocate kfunc calls, so the probe calls helper number `RDONLY_CAST_PLACEHOLDER` and
//! this module turns each such instruction into a call of the kernel's `bpf_rdonly_cast` (by its
//! BTF id in vmlinux), or into `r0 = r1` where the kernel has no such kfunc. Only instructions in
//! executable sections that match the placeholder call exactly are touched.

use guardian_common::RDONLY_CAST_PLACEHOLDER;
use object::{Object, ObjectSection, SectionFlags};

/// `BPF_JMP | BPF_CALL`.
const OP_CALL: u8 = 0x85;
/// `BPF_ALU64 | BPF_MOV | BPF_X`.
const OP_MOV64_REG: u8 = 0xbf;
/// `src_reg` of a call into a kernel function (kfunc) named by its BTF id.
const PSEUDO_KFUNC_CALL: u8 = 2;
/// Size of one BPF instruction.
const INSN: usize = 8;

/// What each placeholder call becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CastCall {
    /// A call of `bpf_rdonly_cast`, whose id in the kernel's BTF this is.
    Kfunc(u32),
    /// `r0 = r1`: the probe then takes its `bpf_probe_read_kernel` path and never uses the result
    /// as a typed pointer.
    Move,
}

/// An ELF object in 8-byte aligned memory, as ELF parsing (and so aya) requires.
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn copy_of(bytes: &[u8]) -> AlignedObject {
        let mut words = vec![0u64; bytes.len().div_ceil(INSN)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(INSN)) {
            let mut le = [0u8; INSN];
            le[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_le_bytes(le);
        }
        AlignedObject {
            words,
            len: bytes.len(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` owns at least `len` initialised bytes; u8 has no alignment needs. On a
        // little-endian host (the only one a BPF object for this host is built for) the bytes are
        // the original ones.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, with unique access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// A copy of `object` with every placeholder call rewritten as `with` says, and how many there
/// were. An object that is not ELF, or has no placeholder at all, is an error: the probe always
/// has some, so either means the wrong object.
pub fn rewrite_cast_calls(object: &[u8], with: CastCall) -> Result<(AlignedObject, usize), String> {
    let mut aligned = AlignedObject::copy_of(object);
    let ranges = code_ranges(aligned.bytes())?;
    let bytes = aligned.bytes_mut();
    let mut rewritten = 0;
    for (start, end) in ranges {
        for insn in bytes[start..end].chunks_exact_mut(INSN) {
            if is_placeholder(insn) {
                rewrite(insn, with);
                rewritten += 1;
            }
        }
    }
    if rewritten == 0 {
        return Err("the probe object has no bpf_rdonly_cast placeholder call".into());
    }
    Ok((aligned, rewritten))
}

/// File ranges of the object's executable sections (its programs and shared functions).
pub(super) fn code_ranges(object: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let file = object::File::parse(object).map_err(|e| format!("probe object: {e}"))?;
    let mut ranges = Vec::new();
    for section in file.sections() {
        if let Some(range) = code_range(&section, object.len())? {
            ranges.push((range.start, range.end));
        }
    }
    Ok(ranges)
}

/// The file range of `section` when it is executable (a program or shared functions), checked
/// to lie within the object of `object_len` bytes; `None` for any other section.
pub(super) fn code_range(
    section: &object::Section<'_, '_>,
    object_len: usize,
) -> Result<Option<std::ops::Range<usize>>, String> {
    let SectionFlags::Elf { sh_flags } = section.flags() else {
        return Ok(None);
    };
    if sh_flags & u64::from(object::elf::SHF_EXECINSTR) == 0 {
        return Ok(None);
    }
    let Some((offset, size)) = section.file_range() else {
        return Ok(None);
    };
    let start = usize::try_from(offset).map_err(|_| "section offset overflows")?;
    let end = start
        .checked_add(usize::try_from(size).map_err(|_| "section size overflows")?)
        .filter(|end| *end <= object_len)
        .ok_or_else(|| format!("section {:?} runs past the object", section.name()))?;
    Ok(Some(start..end))
}

/// `call RDONLY_CAST_PLACEHOLDER` with no registers and no offset.
fn is_placeholder(insn: &[u8]) -> bool {
    insn[0] == OP_CALL
        && insn[1] == 0
        && insn[2..4] == [0, 0]
        && insn[4..8] == RDONLY_CAST_PLACEHOLDER.to_le_bytes()
}

fn rewrite(insn: &mut [u8], with: CastCall) {
    match with {
        CastCall::Kfunc(btf_id) => {
            insn[1] = PSEUDO_KFUNC_CALL << 4;
            insn[4..8].copy_from_slice(&btf_id.to_le_bytes());
        }
        CastCall::Move => {
            insn[0] = OP_MOV64_REG;
            insn[1] = 1 << 4;
            insn[4..8].fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholder() -> [u8; 8] {
        let mut insn = [OP_CALL, 0, 0, 0, 0, 0, 0, 0];
        insn[4..].copy_from_slice(&RDONLY_CAST_PLACEHOLDER.to_le_bytes());
        insn
    }

    #[test]
    fn rewrites_the_placeholder_into_a_kfunc_call_or_a_move() {
        let mut insn = placeholder();
        rewrite(&mut insn, CastCall::Kfunc(0x1234));
        assert_eq!(insn, [OP_CALL, 0x20, 0, 0, 0x34, 0x12, 0, 0]);
        let mut insn = placeholder();
        rewrite(&mut insn, CastCall::Move);
        assert_eq!(insn, [OP_MOV64_REG, 0x10, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn only_the_exact_placeholder_matches() {
        assert!(is_placeholder(&placeholder()));
        // A real helper call (bpf_probe_read_kernel, 113) and a placeholder with registers set.
        assert!(!is_placeholder(&[OP_CALL, 0, 0, 0, 113, 0, 0, 0]));
        let mut with_src = placeholder();
        with_src[1] = 0x10;
        assert!(!is_placeholder(&with_src));
    }

    #[test]
    fn refuses_what_is_not_an_elf_object() {
        let err = rewrite_cast_calls(&placeholder(), CastCall::Move)
            .err()
            .expect("not ELF");
        assert!(err.contains("probe object"), "{err}");
    }
}
