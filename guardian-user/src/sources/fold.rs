//! Folds the probe's loads of a read-only global (its kernel offsets) into immediates before aya
//! loads it. The verifier knows a frozen `.rodata` value as a constant but the JIT still emits the
//! load, so every step of the probe's pointer chase first loaded its offset from one of the five
//! cache lines `KernelOffsets` spans. A forward data-flow pass over each code section tracks which
//! registers hold `&global + c` (from the `ld_imm64` the global's relocation names, copies and
//! constant adds); a load through such a register on every path into it becomes `w_dst = value`
//! (or `r_dst = value` sign-extended, for a negative 64-bit distance).
//! Anything the pass does not understand leaves a register untracked, so the worst it can do is
//! fold less: a load it leaves is still correct, the global keeps its values in the map.

use super::kfunc::{self, AlignedObject};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SymbolKind};
use std::collections::HashMap;
use std::ops::Range;

/// Size of one BPF instruction slot.
const INSN: usize = 8;
/// Registers r0..r10.
const REGS: usize = 11;

mod dead;

/// What the pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// Loads from the global turned into immediates.
    pub loads: usize,
    /// Loads from the global left as they are: their value fits no 32-bit immediate (zero- or
    /// sign-extended).
    pub wide: usize,
}

/// What the clean-up after the folding did (`dead`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tidied {
    /// `ld_imm64`s of the global's section left dead, removed with their relocations.
    pub removed: usize,
    /// Address computations folded into the offset of their load.
    pub fused: usize,
}

/// The bytes of a plain-data value, as the loader would write them into the global.
pub fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: `Pod` types are plain data; the probe's globals are checked to have no padding
    // (guardian-common's `shared_types_have_no_implicit_padding`).
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Folds every load of global `symbol` in `object`'s code into the immediate `value` holds at
/// its offset, then removes what that left dead. `value` must be the global's size.
pub fn fold_global_loads(
    object: &mut AlignedObject,
    symbol: &str,
    value: &[u8],
) -> Result<(Folded, Tidied), String> {
    let sections = code_sections(object.bytes(), symbol, value.len())?;
    let bytes = object.bytes_mut();
    let mut total = (Folded::default(), Tidied::default());
    for section in sections {
        let code = &mut bytes[section.range.clone()];
        let in_section = |e: String| format!("probe section {}: {e}", section.name);
        let folded = fold_code(
            code,
            &section.pointers,
            &section.entries,
            &section.global,
            value,
        )
        .map_err(in_section)?;
        let tidied = dead::tidy(code, &section.pointers, &section.entries).map_err(in_section)?;
        let offsets: Vec<u64> = tidied.removed.iter().map(|&s| (s * INSN) as u64).collect();
        let dropped = drop_relocations(bytes, section.index, &offsets).map_err(in_section)?;
        if dropped != offsets.len() {
            return Err(in_section(format!(
                "{} dead ld_imm64s but {dropped} relocations dropped",
                offsets.len()
            )));
        }
        total.0.loads += folded.loads;
        total.0.wide += folded.wide;
        total.1.removed += dropped;
        total.1.fused += tidied.fused;
    }
    Ok(total)
}

/// `SHT_REL`: a relocation section without addends (what BPF objects use).
const SHT_REL: u32 = 9;
/// Size of an `Elf64_Rel` (offset, info).
const REL_SIZE: usize = 16;

/// Removes from the relocation section(s) of section `target` the entries at the byte offsets
/// `at`, by moving the kept ones to the front and shortening the section; returns how many it
/// removed. A little-endian ELF64 (a BPF object) is assumed and checked.
fn drop_relocations(elf: &mut [u8], target: usize, at: &[u64]) -> Result<usize, String> {
    if at.is_empty() {
        return Ok(0);
    }
    let field = |elf: &[u8], at: usize, len: usize| -> Result<u64, String> {
        let bytes = elf
            .get(at..at + len)
            .ok_or("the probe's ELF headers run past its end")?;
        let mut le = [0u8; 8];
        le[..len].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(le))
    };
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("the probe is not a little-endian ELF64 object".into());
    }
    let shoff = field(elf, 0x28, 8)? as usize;
    let shentsize = field(elf, 0x3a, 2)? as usize;
    let shnum = field(elf, 0x3c, 2)? as usize;
    let mut dropped = 0;
    for index in 0..shnum {
        let header = shoff + index * shentsize;
        if field(elf, header + 4, 4)? != u64::from(SHT_REL)
            || field(elf, header + 0x2c, 4)? != target as u64
        {
            continue;
        }
        let offset = field(elf, header + 0x18, 8)? as usize;
        let size = field(elf, header + 0x20, 8)? as usize;
        let table = elf
            .get_mut(offset..offset + size)
            .ok_or("a relocation section runs past the probe's end")?;
        let mut kept = 0;
        for entry in 0..size / REL_SIZE {
            let from = entry * REL_SIZE;
            let r_offset = u64::from_le_bytes(table[from..from + 8].try_into().unwrap());
            if at.contains(&r_offset) {
                dropped += 1;
                continue;
            }
            table.copy_within(from..from + REL_SIZE, kept * REL_SIZE);
            kept += 1;
        }
        table[kept * REL_SIZE..].fill(0);
        elf[header + 0x20..header + 0x28]
            .copy_from_slice(&((kept * REL_SIZE) as u64).to_le_bytes());
    }
    Ok(dropped)
}

/// One executable section, ready for `fold_code`.
struct CodeSection {
    name: String,
    /// Its index in the ELF section header table.
    index: usize,
    range: Range<usize>,
    /// Instruction slot of each `ld_imm64` naming the global's section → the section offset
    /// it points at (before the instruction's own immediate is added).
    pointers: HashMap<usize, i64>,
    /// Instruction slots where a function starts (its registers unknown).
    entries: Vec<usize>,
    /// Where the global lies in its section.
    global: Range<i64>,
}

fn code_sections(object: &[u8], symbol: &str, size: usize) -> Result<Vec<CodeSection>, String> {
    let file = object::File::parse(object).map_err(|e| format!("probe object: {e}"))?;
    let global = file
        .symbols()
        .find(|s| s.name() == Ok(symbol))
        .ok_or_else(|| format!("the probe object has no global {symbol}"))?;
    if global.size() != size as u64 {
        return Err(format!(
            "the probe's {symbol} is {} bytes, its value {size}",
            global.size()
        ));
    }
    let home = global
        .section_index()
        .ok_or_else(|| format!("the probe's {symbol} is in no section"))?;
    let start = i64::try_from(global.address()).map_err(|_| "global address overflows")?;
    // Where functions start, by section: their registers are unknown there.
    let mut functions: HashMap<object::SectionIndex, Vec<usize>> = HashMap::new();
    for function in file.symbols().filter(|s| s.kind() == SymbolKind::Text) {
        if let Some(section) = function.section_index() {
            functions
                .entry(section)
                .or_default()
                .push(function.address() as usize / INSN);
        }
    }
    let mut sections = Vec::new();
    for section in file.sections() {
        let Some(range) = kfunc::code_range(&section, object.len())? else {
            continue;
        };
        let mut pointers = HashMap::new();
        for (at, relocation) in section.relocations() {
            let RelocationTarget::Symbol(index) = relocation.target() else {
                continue;
            };
            let Ok(target) = file.symbol_by_index(index) else {
                continue;
            };
            if target.section_index() == Some(home) {
                let base = i64::try_from(target.address()).map_err(|_| "symbol overflows")?;
                pointers.insert(at as usize / INSN, base);
            }
        }
        let mut entries = vec![0];
        entries.extend(functions.get(&section.index()).into_iter().flatten());
        sections.push(CodeSection {
            name: section.name().unwrap_or("?").to_string(),
            index: section.index().0,
            range,
            pointers,
            entries,
            global: start..start + size as i64,
        });
    }
    Ok(sections)
}

/// What the pass knows of a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Unknown,
    /// The address of the global's section plus this offset.
    Ptr(i64),
}

type Regs = [Reg; REGS];

/// One decoded instruction.
#[derive(Clone, Copy, Debug)]
struct Insn {
    op: u8,
    dst: usize,
    src: usize,
    off: i16,
    imm: i32,
}

fn decode(code: &[u8], slot: usize) -> Insn {
    let b = &code[slot * INSN..slot * INSN + INSN];
    Insn {
        op: b[0],
        dst: usize::from(b[1] & 0x0f),
        src: usize::from(b[1] >> 4),
        off: i16::from_le_bytes([b[2], b[3]]),
        imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    }
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
/// `BPF_LD | BPF_IMM | BPF_DW`: the two-slot 64-bit immediate load.
const LD_IMM64: u8 = 0x18;
const MODE_MEM: u8 = 0x60;
const MODE_ATOMIC: u8 = 0xc0;
const ALU64_ADD_K: u8 = 0x07;
const ALU64_SUB_K: u8 = 0x17;
const ALU64_MOV_X: u8 = 0xbf;
/// `BPF_ALU | BPF_MOV | BPF_K`: `w_dst = imm`, zeroing the upper half.
const ALU_MOV_K: u8 = 0xb4;
/// `BPF_ALU64 | BPF_MOV | BPF_K`: `r_dst = imm`, sign-extended.
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JA: u8 = 0x00;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;

/// The data-flow pass and the rewrite over one code section (plain data: the pure core).
fn fold_code(
    code: &mut [u8],
    pointers: &HashMap<usize, i64>,
    entries: &[usize],
    global: &Range<i64>,
    value: &[u8],
) -> Result<Folded, String> {
    if code.len() % INSN != 0 {
        return Err("code is not whole instructions".into());
    }
    let slots = code.len() / INSN;
    let mut state: Vec<Option<Regs>> = vec![None; slots];
    let mut work = Vec::new();
    for &entry in entries {
        if entry < slots && state[entry].is_none() {
            state[entry] = Some([Reg::Unknown; REGS]);
            work.push(entry);
        }
    }
    while let Some(slot) = work.pop() {
        let Some(mut regs) = state[slot] else {
            continue;
        };
        let insn = decode(code, slot);
        let next = step(&insn, slot, pointers, &mut regs, slots)?;
        for to in next.into_iter().flatten() {
            let merged = match state[to] {
                None => regs,
                Some(old) => meet(&old, &regs),
            };
            if state[to] != Some(merged) {
                state[to] = Some(merged);
                work.push(to);
            }
        }
    }
    let mut folded = Folded::default();
    for (slot, regs) in state.iter().enumerate() {
        let Some(regs) = regs else { continue };
        let insn = decode(code, slot);
        if insn.op & 0x07 != CLASS_LDX || insn.op & 0xe0 != MODE_MEM {
            continue;
        }
        let Reg::Ptr(base) = regs[insn.src] else {
            continue;
        };
        let size = match insn.op & 0x18 {
            0x00 => 4,
            0x08 => 2,
            0x10 => 1,
            _ => 8,
        };
        let at = base + i64::from(insn.off);
        if at < global.start || at + size > global.end {
            continue;
        }
        let from = (at - global.start) as usize;
        let mut le = [0u8; 8];
        le[..size as usize].copy_from_slice(&value[from..from + size as usize]);
        let loaded = u64::from_le_bytes(le);
        // `w = imm` zero-extends; `r = imm` sign-extends (a negative distance).
        let (op, imm) = match (u32::try_from(loaded), i32::try_from(loaded as i64)) {
            (Ok(imm), _) => (ALU_MOV_K, imm),
            (Err(_), Ok(imm)) => (ALU64_MOV_K, imm as u32),
            _ => {
                folded.wide += 1;
                continue;
            }
        };
        let b = &mut code[slot * INSN..slot * INSN + INSN];
        b[0] = op;
        b[1] = insn.dst as u8;
        b[2..4].fill(0);
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        folded.loads += 1;
    }
    Ok(folded)
}

/// The slots control may go to after the instruction at `slot` (of `slots` in its section).
fn successors(insn: &Insn, slot: usize, slots: usize) -> Result<[Option<usize>; 2], String> {
    let target = |delta: i64| -> Result<usize, String> {
        let to = slot as i64 + 1 + delta;
        if to < 0 || to as usize >= slots {
            return Err(format!("instruction {slot} jumps out of its section"));
        }
        Ok(to as usize)
    };
    if insn.dst >= REGS || insn.src >= REGS {
        return Err(format!("instruction {slot} names no register"));
    }
    let class = insn.op & 0x07;
    Ok(match class {
        CLASS_LD if insn.op == LD_IMM64 => [Some(target(1)?), None],
        CLASS_JMP | CLASS_JMP32 => match insn.op & 0xf0 {
            JMP_JA => {
                let delta = if class == CLASS_JMP {
                    i64::from(insn.off)
                } else {
                    i64::from(insn.imm)
                };
                [Some(target(delta)?), None]
            }
            JMP_CALL => [Some(target(0)?), None],
            JMP_EXIT => [None, None],
            _ => [Some(target(0)?), Some(target(i64::from(insn.off))?)],
        },
        _ => [Some(target(0)?), None],
    })
}

/// Applies one instruction to `regs`; returns the slots control may go to next.
fn step(
    insn: &Insn,
    slot: usize,
    pointers: &HashMap<usize, i64>,
    regs: &mut Regs,
    slots: usize,
) -> Result<[Option<usize>; 2], String> {
    let next = successors(insn, slot, slots)?;
    match insn.op & 0x07 {
        CLASS_LD if insn.op == LD_IMM64 => {
            regs[insn.dst] = match pointers.get(&slot) {
                Some(base) if insn.src == 0 => Reg::Ptr(base + i64::from(insn.imm)),
                _ => Reg::Unknown,
            };
        }
        CLASS_LD => clobber_caller_saved(regs),
        CLASS_LDX => regs[insn.dst] = Reg::Unknown,
        CLASS_STX if insn.op & 0xe0 == MODE_ATOMIC => {
            regs[0] = Reg::Unknown;
            regs[insn.src] = Reg::Unknown;
        }
        CLASS_ALU64 => {
            regs[insn.dst] = match (insn.op, regs[insn.dst]) {
                (ALU64_MOV_X, _) if insn.off == 0 => regs[insn.src],
                (ALU64_ADD_K, Reg::Ptr(c)) => Reg::Ptr(c + i64::from(insn.imm)),
                (ALU64_SUB_K, Reg::Ptr(c)) => Reg::Ptr(c - i64::from(insn.imm)),
                _ => Reg::Unknown,
            }
        }
        CLASS_ALU => regs[insn.dst] = Reg::Unknown,
        CLASS_JMP | CLASS_JMP32 if insn.op & 0xf0 == JMP_CALL => clobber_caller_saved(regs),
        _ => {}
    }
    Ok(next)
}

/// A call (helper, kfunc or function) leaves r0..r5 unknown; r6..r9 are kept across it.
fn clobber_caller_saved(regs: &mut Regs) {
    regs[..6].fill(Reg::Unknown);
}

fn meet(a: &Regs, b: &Regs) -> Regs {
    let mut out = *a;
    for (o, r) in out.iter_mut().zip(b) {
        if *o != *r {
            *o = Reg::Unknown;
        }
    }
    out
}

#[cfg(test)]
mod tests;
