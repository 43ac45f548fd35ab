//! What the folding leaves behind, removed before load. A folded load no longer reads the
//! global, so the `ld_imm64` that materialised the global's address is often dead; and a load's
//! address is often `w_x = K; r_x += r_base; load [r_x + 0]`, which one load `[r_base + K]`
//! does. The verifier removes neither, and the JIT turns each into machine instructions on the
//! probe's hot path. A backward liveness pass over the section finds them: a dead `ld_imm64`
//! becomes two `ja +0` (which the verifier deletes; its relocation is dropped by the caller) and
//! a fusable address computation becomes two `ja +0` and the load with the offset folded in.
//! Anything not understood counts as using every register, so the pass can only keep more.

use super::{
    decode, successors, Insn, ALU64_MOV_K, ALU_MOV_K, CLASS_ALU, CLASS_ALU64, CLASS_JMP,
    CLASS_JMP32, CLASS_LD, CLASS_LDX, CLASS_STX, INSN, JMP_CALL, JMP_EXIT, JMP_JA, LD_IMM64,
    MODE_ATOMIC, MODE_MEM,
};
use std::collections::HashMap;

/// Registers r0..r10 as bits.
type Live = u16;
const ALL: Live = (1 << 11) - 1;
/// r1..r5: a call's arguments.
const ARGS: Live = 0b11_1110;
/// r0..r5: what a call leaves undefined.
const CALLER_SAVED: Live = 0b11_1111;
/// r10, the frame pointer: always live.
const FP: Live = 1 << 10;

/// `BPF_JMP | BPF_JA` with every field 0: a no-op the verifier deletes (`opt_remove_nops`).
pub(super) const NOP: [u8; INSN] = [0x05, 0, 0, 0, 0, 0, 0, 0];
/// `BPF_ALU64 | BPF_ADD | BPF_X`: `r_dst += r_src`.
const ALU64_ADD_X: u8 = 0x0f;

/// What the pass did to one section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Cleanup {
    /// Slots of the `ld_imm64`s turned into no-ops: their relocations must go too.
    pub removed: Vec<usize>,
    /// Address computations folded into their loads.
    pub fused: usize,
}

fn bit(reg: usize) -> Live {
    1 << reg
}

/// The registers an instruction reads and the ones it (re)defines.
fn uses_defs(insn: &Insn) -> (Live, Live) {
    let (dst, src) = (bit(insn.dst), bit(insn.src));
    let from_reg = insn.op & 0x08 != 0;
    match insn.op & 0x07 {
        CLASS_LD if insn.op == LD_IMM64 => (0, dst),
        // Legacy packet loads: read the context, define r0 and clobber r1..r5.
        CLASS_LD => (ALL, CALLER_SAVED),
        CLASS_LDX => (src, dst),
        // Atomics may read and write r0 and the source; nothing counts as defined.
        CLASS_STX if insn.op & 0xe0 == MODE_ATOMIC => (dst | src | bit(0), 0),
        CLASS_STX => (dst | src, 0),
        // BPF_ST: a store of an immediate through dst.
        0x02 => (dst, 0),
        CLASS_ALU | CLASS_ALU64 => match insn.op & 0xf0 {
            0xb0 if from_reg => (src, dst),
            0xb0 => (0, dst),
            // Negation and byte swaps read and write dst only.
            0x80 | 0xd0 => (dst, dst),
            _ if from_reg => (dst | src, dst),
            _ => (dst, dst),
        },
        CLASS_JMP | CLASS_JMP32 => match insn.op & 0xf0 {
            JMP_JA => (0, 0),
            JMP_CALL => (ARGS, CALLER_SAVED),
            JMP_EXIT => (bit(0), 0),
            _ if from_reg => (dst | src, 0),
            _ => (dst, 0),
        },
        _ => (ALL, 0),
    }
}

/// The control-flow graph of a section: instructions reachable from `entries`, their
/// successors, and how many ways lead into each (an entry counts as one).
struct Flow {
    next: Vec<[Option<usize>; 2]>,
    reachable: Vec<bool>,
    ways_in: Vec<usize>,
}

fn flow(code: &[u8], entries: &[usize]) -> Result<Flow, String> {
    let slots = code.len() / INSN;
    let mut flow = Flow {
        next: vec![[None, None]; slots],
        reachable: vec![false; slots],
        ways_in: vec![0; slots],
    };
    let mut work: Vec<usize> = Vec::new();
    for &entry in entries.iter().filter(|&&e| e < slots) {
        flow.ways_in[entry] += 1;
        if !flow.reachable[entry] {
            flow.reachable[entry] = true;
            work.push(entry);
        }
    }
    while let Some(slot) = work.pop() {
        let next = successors(&decode(code, slot), slot, slots)?;
        flow.next[slot] = next;
        for to in next.into_iter().flatten() {
            flow.ways_in[to] += 1;
            if !flow.reachable[to] {
                flow.reachable[to] = true;
                work.push(to);
            }
        }
    }
    Ok(flow)
}

/// The registers live after each reachable instruction (backward, to a fixed point).
fn live_after(code: &[u8], flow: &Flow) -> Vec<Live> {
    let slots = code.len() / INSN;
    let effects: Vec<(Live, Live)> = (0..slots)
        .map(|slot| {
            if flow.reachable[slot] {
                uses_defs(&decode(code, slot))
            } else {
                (ALL, 0)
            }
        })
        .collect();
    let mut live_in = vec![FP; slots];
    let mut live_out = vec![FP; slots];
    let mut changed = true;
    while changed {
        changed = false;
        for slot in (0..slots).rev().filter(|&s| flow.reachable[s]) {
            let out = flow.next[slot]
                .into_iter()
                .flatten()
                .fold(FP, |live, to| live | live_in[to]);
            let (uses, defs) = effects[slot];
            let inn = uses | (out & !defs) | FP;
            if out != live_out[slot] || inn != live_in[slot] {
                live_out[slot] = out;
                live_in[slot] = inn;
                changed = true;
            }
        }
    }
    live_out
}

/// Fuses address computations into their loads, then turns the dead `ld_imm64`s among
/// `pointers` (the slots relocated to the folded global's section) into no-ops.
pub(super) fn tidy(
    code: &mut [u8],
    pointers: &HashMap<usize, i64>,
    entries: &[usize],
) -> Result<Cleanup, String> {
    let mut tidied = Cleanup::default();
    let flow = flow(code, entries)?;
    let live = live_after(code, &flow);
    let slots = code.len() / INSN;
    for slot in 0..slots.saturating_sub(2) {
        if !flow.reachable[slot] {
            continue;
        }
        let Some(fused) = fusion(code, slot, &flow, &live) else {
            continue;
        };
        code[slot * INSN..(slot + 2) * INSN].copy_from_slice(&[NOP, NOP].concat());
        code[(slot + 2) * INSN..(slot + 3) * INSN].copy_from_slice(&fused);
        tidied.fused += 1;
    }
    // Liveness again: the fusions moved uses.
    let live = live_after(code, &flow);
    let mut dead: Vec<usize> = pointers
        .keys()
        .copied()
        .filter(|&slot| slot + 1 < slots && flow.reachable[slot])
        .filter(|&slot| {
            let insn = decode(code, slot);
            insn.op == LD_IMM64 && live[slot] & bit(insn.dst) == 0
        })
        .collect();
    dead.sort_unstable();
    for &slot in &dead {
        code[slot * INSN..(slot + 2) * INSN].copy_from_slice(&[NOP, NOP].concat());
    }
    tidied.removed = dead;
    Ok(tidied)
}

/// The load that replaces `w_x = K; r_x += r_b; load [r_x + off]` starting at `slot`, when
/// nothing else can see the difference: the second and third instructions are reached only
/// from the one before, `r_x` is dead after the load (or the load's destination) and `K + off`
/// fits a load's offset.
fn fusion(code: &[u8], slot: usize, flow: &Flow, live: &[Live]) -> Option<[u8; INSN]> {
    let (mov, add, load) = (
        decode(code, slot),
        decode(code, slot + 1),
        decode(code, slot + 2),
    );
    let value = match mov.op {
        ALU_MOV_K => i64::from(mov.imm as u32),
        ALU64_MOV_K => i64::from(mov.imm),
        _ => return None,
    };
    let x = mov.dst;
    let fusable = add.op == ALU64_ADD_X
        && add.dst == x
        && add.src != x
        && load.op & 0x07 == CLASS_LDX
        && load.op & 0xe0 == MODE_MEM
        && load.src == x
        && flow.ways_in[slot + 1] == 1
        && flow.ways_in[slot + 2] == 1
        && flow.next[slot] == [Some(slot + 1), None]
        && flow.next[slot + 1] == [Some(slot + 2), None]
        && (load.dst == x || live[slot + 2] & bit(x) == 0);
    if !fusable {
        return None;
    }
    let off = i16::try_from(value + i64::from(load.off)).ok()?;
    let mut fused = [0u8; INSN];
    fused.copy_from_slice(&code[(slot + 2) * INSN..(slot + 3) * INSN]);
    fused[1] = ((add.src as u8) << 4) | load.dst as u8;
    fused[2..4].copy_from_slice(&off.to_le_bytes());
    Some(fused)
}

#[cfg(test)]
mod tests;
