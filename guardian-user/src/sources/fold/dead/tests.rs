use super::*;

fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; INSN] {
    let mut b = [0u8; INSN];
    b[0] = op;
    b[1] = (src << 4) | dst;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}
fn ld_imm64(dst: u8) -> [[u8; INSN]; 2] {
    [insn(LD_IMM64, dst, 0, 0, 0), [0; INSN]]
}
fn mov32(dst: u8, imm: i32) -> [u8; INSN] {
    insn(ALU_MOV_K, dst, 0, 0, imm)
}
fn mov64(dst: u8, imm: i32) -> [u8; INSN] {
    insn(ALU64_MOV_K, dst, 0, 0, imm)
}
fn add_reg(dst: u8, src: u8) -> [u8; INSN] {
    insn(ALU64_ADD_X, dst, src, 0, 0)
}
fn ldx_dw(dst: u8, src: u8, off: i16) -> [u8; INSN] {
    insn(0x79, dst, src, off, 0)
}
fn jeq_imm(dst: u8, imm: i32, off: i16) -> [u8; INSN] {
    insn(0x15, dst, 0, off, imm)
}
fn call() -> [u8; INSN] {
    insn(0x85, 0, 0, 0, 1)
}
fn exit() -> [u8; INSN] {
    insn(0x95, 0, 0, 0, 0)
}

/// Runs the pass on `program` (one function from slot 0) with `pointers` as the global's
/// `ld_imm64` slots.
fn run(program: &[[u8; INSN]], pointers: &[usize]) -> (Vec<[u8; INSN]>, Cleanup) {
    let mut code: Vec<u8> = program.iter().flatten().copied().collect();
    let pointers: HashMap<usize, i64> = pointers.iter().map(|&s| (s, 0)).collect();
    let cleanup = tidy(&mut code, &pointers, &[0]).unwrap();
    let out = code
        .chunks_exact(INSN)
        .map(|c| c.try_into().unwrap())
        .collect();
    (out, cleanup)
}

/// Runs the pass and checks it changed nothing.
fn left_alone(program: &[[u8; INSN]], pointers: &[usize]) {
    let (out, cleanup) = run(program, pointers);
    assert_eq!(cleanup, Cleanup::default());
    assert_eq!(out, program);
}

#[test]
fn an_address_computation_is_fused_into_its_load() {
    let program = [mov32(1, 0x720), add_reg(1, 7), ldx_dw(6, 1, 0), exit()];
    let (out, cleanup) = run(&program, &[]);
    assert_eq!(cleanup.fused, 1);
    assert_eq!(out, [NOP, NOP, ldx_dw(6, 7, 0x720), exit()]);
}

#[test]
fn a_negative_distance_and_the_loads_own_offset_add_up() {
    let program = [mov64(1, -8), add_reg(1, 7), ldx_dw(1, 1, 16), exit()];
    let (out, cleanup) = run(&program, &[]);
    assert_eq!(cleanup.fused, 1);
    assert_eq!(
        out[2],
        ldx_dw(1, 7, 8),
        "the destination may be the address register"
    );
}

#[test]
fn an_address_register_still_read_after_the_load_is_not_fused() {
    // r1 = r7 + 0x20 is read again by the second load.
    let program = [
        mov32(1, 0x20),
        add_reg(1, 7),
        ldx_dw(6, 1, 0),
        ldx_dw(0, 1, 8),
        exit(),
    ];
    left_alone(&program, &[]);
}

#[test]
fn an_address_register_read_on_one_branch_only_is_not_fused() {
    let program = [
        mov32(1, 0x20),
        add_reg(1, 7),
        ldx_dw(6, 1, 0),
        jeq_imm(6, 0, 1),
        ldx_dw(0, 1, 0),
        exit(),
    ];
    left_alone(&program, &[]);
}

#[test]
fn a_jump_into_the_middle_of_the_pattern_stops_the_fusion() {
    // Slot 0 jumps straight to the add: there r1 is whatever it was, not 0x20.
    let program = [
        jeq_imm(2, 0, 1),
        mov32(1, 0x20),
        add_reg(1, 7),
        ldx_dw(0, 1, 0),
        exit(),
    ];
    left_alone(&program, &[]);
}

#[test]
fn an_offset_beyond_a_loads_reach_is_not_fused() {
    let program = [mov32(1, 0x8000), add_reg(1, 7), ldx_dw(0, 1, 0), exit()];
    left_alone(&program, &[]);
}

#[test]
fn a_dead_pointer_to_the_global_is_removed_and_a_used_one_kept() {
    let [a, b] = ld_imm64(1);
    let [c, d] = ld_imm64(2);
    // r1 is overwritten before any read; r2 is read by the load.
    let program = [a, b, mov32(1, 5), c, d, ldx_dw(0, 2, 0), exit()];
    let (out, cleanup) = run(&program, &[0, 3]);
    assert_eq!(cleanup.removed, vec![0]);
    assert_eq!(out[..2], [NOP, NOP]);
    assert_eq!(out[3..5], [c, d]);
}

#[test]
fn a_pointer_read_by_a_call_is_kept() {
    // r1 and r3 are arguments a call may read (it reads r1..r5), whatever is written after it.
    let [a, b] = ld_imm64(1);
    let [c, d] = ld_imm64(3);
    left_alone(&[a, b, c, d, call(), exit()], &[0, 2]);
    left_alone(&[c, d, call(), mov32(3, 1), mov32(0, 0), exit()], &[0]);
}

#[test]
fn a_pointer_live_around_a_loop_is_kept() {
    // r1 is read at the top of a loop that a later instruction jumps back to.
    let [a, b] = ld_imm64(1);
    let program = [
        a,
        b,
        ldx_dw(2, 1, 0),
        jeq_imm(2, 0, -2),
        mov32(0, 0),
        exit(),
    ];
    left_alone(&program, &[0]);
}

#[test]
fn ld_imm64s_that_are_not_the_globals_are_left_even_when_dead() {
    let [a, b] = ld_imm64(1);
    let program = [a, b, mov32(1, 5), mov32(0, 0), exit()];
    left_alone(&program, &[]);
}
