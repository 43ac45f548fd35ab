use super::*;

fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = op;
    b[1] = (src << 4) | dst;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

/// `ld_imm64 rdst = &section + imm` (the second slot is all zeros).
fn ld_imm64(dst: u8, imm: i32) -> [[u8; 8]; 2] {
    [insn(LD_IMM64, dst, 0, 0, imm), [0; 8]]
}
fn ldx_w(dst: u8, src: u8, off: i16) -> [u8; 8] {
    insn(0x61, dst, src, off, 0)
}
fn ldx_dw(dst: u8, src: u8, off: i16) -> [u8; 8] {
    insn(0x79, dst, src, off, 0)
}
fn mov(dst: u8, src: u8) -> [u8; 8] {
    insn(ALU64_MOV_X, dst, src, 0, 0)
}
fn add(dst: u8, imm: i32) -> [u8; 8] {
    insn(ALU64_ADD_K, dst, 0, 0, imm)
}
fn exit() -> [u8; 8] {
    insn(0x95, 0, 0, 0, 0)
}

/// A section whose `ld_imm64`s at `pointers` name the global's section at offset 0; the global
/// is its first 32 bytes: u32 0x20 at 4, u32 0x30 at 8, u64 0x1_0000_5498 at 16 and
/// u64 0xffff_ffff_fffe_5498 (−109,416, a wrapping distance) at 24.
fn run(program: &[[u8; 8]], pointers: &[usize]) -> (Vec<[u8; 8]>, Result<Folded, String>) {
    let mut code: Vec<u8> = program.iter().flatten().copied().collect();
    let pointers: HashMap<usize, i64> = pointers.iter().map(|&s| (s, 0)).collect();
    let mut value = vec![0u8; 32];
    value[4..8].copy_from_slice(&0x20u32.to_le_bytes());
    value[8..12].copy_from_slice(&0x30u32.to_le_bytes());
    value[16..24].copy_from_slice(&0x1_0000_5498u64.to_le_bytes());
    value[24..32].copy_from_slice(&0xffff_ffff_fffe_5498u64.to_le_bytes());
    let folded = fold_code(&mut code, &pointers, &[0], &(0..32), &value);
    let out = code
        .chunks_exact(8)
        .map(|c| c.try_into().unwrap())
        .collect();
    (out, folded)
}

fn mov32(dst: u8, imm: i32) -> [u8; 8] {
    insn(ALU_MOV_K, dst, 0, 0, imm)
}

#[test]
fn a_load_through_the_global_becomes_its_value() {
    let [a, b] = ld_imm64(1, 0);
    let (out, folded) = run(&[a, b, ldx_w(2, 1, 4), exit()], &[0]);
    assert_eq!(folded, Ok(Folded { loads: 1, wide: 0 }));
    assert_eq!(out[2], mov32(2, 0x20));
    assert_eq!(out[0], a, "the ld_imm64 itself is left");
}

#[test]
fn copies_and_constant_adds_are_followed() {
    let [a, b] = ld_imm64(1, 0);
    let program = [a, b, mov(4, 1), add(4, 8), ldx_w(2, 4, 0), exit()];
    let (out, folded) = run(&program, &[0]);
    assert_eq!(folded, Ok(Folded { loads: 1, wide: 0 }));
    assert_eq!(out[4], mov32(2, 0x30));
}

#[test]
fn a_register_redefined_on_one_path_is_not_folded() {
    let [a, b] = ld_imm64(1, 0);
    // if r3 == 0 skip the move; else r1 = r6: the load sees either.
    let program = [
        a,
        b,
        insn(0x15, 3, 0, 1, 0),
        mov(1, 6),
        ldx_w(2, 1, 4),
        exit(),
    ];
    let (out, folded) = run(&program, &[0]);
    assert_eq!(folded, Ok(Folded::default()));
    assert_eq!(out[4], ldx_w(2, 1, 4));
}

#[test]
fn the_same_pointer_on_both_paths_is_folded() {
    let [a, b] = ld_imm64(1, 0);
    let program = [
        a,
        b,
        insn(0x15, 3, 0, 1, 0),
        mov(7, 1),
        ldx_w(2, 1, 8),
        exit(),
    ];
    let (out, folded) = run(&program, &[0]);
    assert_eq!(folded, Ok(Folded { loads: 1, wide: 0 }));
    assert_eq!(out[4], mov32(2, 0x30));
}

#[test]
fn a_call_forgets_r0_to_r5_but_not_r6_to_r9() {
    let [a, b] = ld_imm64(1, 0);
    let [c, d] = ld_imm64(6, 0);
    let program = [
        a,
        b,
        c,
        d,
        insn(0x85, 0, 0, 0, 14),
        ldx_w(2, 1, 4),
        ldx_w(3, 6, 4),
        exit(),
    ];
    let (out, folded) = run(&program, &[0, 2]);
    assert_eq!(folded, Ok(Folded { loads: 1, wide: 0 }));
    assert_eq!(out[5], ldx_w(2, 1, 4));
    assert_eq!(out[6], mov32(3, 0x20));
}

#[test]
fn a_pointer_moved_around_a_loop_is_not_folded() {
    let [a, b] = ld_imm64(1, 0);
    // loop: r2 = *(u32 *)(r1 + 0); r1 += 4; if r2 != 0 goto loop
    let program = [
        a,
        b,
        ldx_w(2, 1, 0),
        add(1, 4),
        insn(0x55, 2, 0, -3, 0),
        exit(),
    ];
    let (out, folded) = run(&program, &[0]);
    assert_eq!(folded, Ok(Folded::default()));
    assert_eq!(out[2], ldx_w(2, 1, 0));
}

#[test]
fn a_value_wider_than_32_bits_is_left_and_counted() {
    let [a, b] = ld_imm64(1, 0);
    let (out, folded) = run(&[a, b, ldx_dw(2, 1, 16), exit()], &[0]);
    assert_eq!(folded, Ok(Folded { loads: 0, wide: 1 }));
    assert_eq!(out[2], ldx_dw(2, 1, 16));
}

#[test]
fn a_negative_64_bit_value_becomes_a_sign_extended_immediate() {
    let [a, b] = ld_imm64(1, 0);
    let (out, folded) = run(&[a, b, ldx_dw(2, 1, 24), exit()], &[0]);
    assert_eq!(folded, Ok(Folded { loads: 1, wide: 0 }));
    assert_eq!(out[2], insn(ALU64_MOV_K, 2, 0, 0, -109_416));
}

#[test]
fn loads_outside_the_global_and_through_other_pointers_are_left() {
    let [a, b] = ld_imm64(1, 0);
    let [c, d] = ld_imm64(3, 0);
    // r1: past the global (offset 32); r3: an ld_imm64 with no relocation to the section.
    let program = [a, b, c, d, ldx_w(2, 1, 32), ldx_w(4, 3, 4), exit()];
    let (out, folded) = run(&program, &[0]);
    assert_eq!(folded, Ok(Folded::default()));
    assert_eq!(out[4], ldx_w(2, 1, 32));
    assert_eq!(out[5], ldx_w(4, 3, 4));
}

#[test]
fn a_jump_out_of_the_section_is_an_error() {
    let (_, folded) = run(&[insn(0x05, 0, 0, 5, 0), exit()], &[]);
    assert!(folded.unwrap_err().contains("jumps out"));
}
