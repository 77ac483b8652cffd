//! x87 instructions run through [`Interpreter::step`] on the machine of the SSE tests.

use iced_x86::Register::{AX, RAX, ST0, ST1};

use crate::interp::exception::vector;
use crate::interp::exec::sse::tests::{DATA, Machine, ins, mem};

/// A machine running `program` with RAX pointing at `DATA`, where `data` is.
fn machine(program: &[iced_x86::Instruction], data: &[u8]) -> Machine {
    let mut m = Machine::new(program);
    m.cpu.regs.gpr[0] = DATA;
    m.write(DATA, data);
    m
}

/// `values` as consecutive little-endian doubles.
fn doubles(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn loads_arithmetic_and_stores() {
    let mut m = machine(
        &[
            ins!(Fld_m64fp, mem(RAX, 0)),
            ins!(Fld_m64fp, mem(RAX, 8)),
            ins!(Faddp_sti_st0, ST1, ST0),
            ins!(Fsqrt),
            ins!(Fstp_m64fp, mem(RAX, 16)),
            ins!(Fnstsw_AX, AX),
        ],
        &doubles(&[1.75, 2.25]),
    );
    assert_eq!(m.run(), None);
    assert_eq!(f64::from_le_bytes(m.read(DATA + 16)), 2.0);
    // Empty again: TOP 0, no flag.
    assert_eq!(m.cpu.regs.gpr[0] & 0xffff, 0);
    assert_eq!(m.cpu.fx_state().ftw, 0);
}

#[test]
fn integer_stores_round_by_the_control_word() {
    let mut m = machine(
        &[
            ins!(Fld_m64fp, mem(RAX, 0)),
            ins!(Fist_m32int, mem(RAX, 16)),
            ins!(Fldcw_m2byte, mem(RAX, 8)),
            ins!(Fist_m32int, mem(RAX, 20)),
            ins!(Fisttp_m32int, mem(RAX, 24)),
        ],
        // 2.5, then a control word rounding up.
        &[doubles(&[2.5]), 0x0b7fu16.to_le_bytes().to_vec()].concat(),
    );
    assert_eq!(m.run(), None);
    assert_eq!(i32::from_le_bytes(m.read(DATA + 16)), 2, "to nearest even");
    assert_eq!(i32::from_le_bytes(m.read(DATA + 20)), 3, "up");
    assert_eq!(i32::from_le_bytes(m.read(DATA + 24)), 2, "FISTTP truncates");
}

#[test]
fn the_control_word_keeps_its_reserved_bits() {
    let mut m = machine(
        &[
            ins!(Fldcw_m2byte, mem(RAX, 0)),
            ins!(Fnstcw_m2byte, mem(RAX, 2)),
        ],
        &[0xff, 0xff],
    );
    assert_eq!(m.run(), None);
    assert_eq!(u16::from_le_bytes(m.read(DATA + 2)), 0x1f7f);
}

#[test]
fn an_unmasked_exception_waits_for_the_next_waiting_instruction() {
    let mut m = machine(
        &[
            ins!(Fldcw_m2byte, mem(RAX, 0)),
            ins!(Fldz),
            ins!(Fdiv_st0_sti, ST0, ST0),
            ins!(Fnstsw_AX, AX),
            ins!(Wait),
        ],
        &0x037eu16.to_le_bytes(),
    );
    assert_eq!(m.run(), Some(vector::MF));
    assert_eq!(m.cpu.regs.gpr[0] & 0xffff, 0xb881, "IE, ES, B and TOP 7");
    // The operands were kept: 0 in ST0.
    assert_eq!(m.cpu.fx_state().st[0], 0);
    // FNCLEX clears it; with CR0.NE clear the error is left pending.
    let mut m = machine(
        &[
            ins!(Fldcw_m2byte, mem(RAX, 0)),
            ins!(Fldz),
            ins!(Fdiv_st0_sti, ST0, ST0),
            ins!(Fnclex),
            ins!(Wait),
        ],
        &0x037eu16.to_le_bytes(),
    );
    assert_eq!(m.run(), None);
    assert_eq!(m.cpu.fx_state().fsw, 0x3800);
    let mut m = machine(
        &[
            ins!(Fldcw_m2byte, mem(RAX, 0)),
            ins!(Fldz),
            ins!(Fdiv_st0_sti, ST0, ST0),
            ins!(Fld1),
        ],
        &0x037eu16.to_le_bytes(),
    );
    m.cpu.sregs.cr0 &= !0x20;
    assert_eq!(m.run(), None);
    assert_eq!(m.cpu.fx_state().top(), 6);
}

#[test]
fn a_store_with_an_unmasked_overflow_writes_nothing() {
    let mut data = 0x0377u16.to_le_bytes().to_vec();
    data.resize(8, 0);
    data.extend(doubles(&[1e300]));
    data.extend([0xaa; 8]);
    let mut m = machine(
        &[
            ins!(Fldcw_m2byte, mem(RAX, 0)),
            ins!(Fld_m64fp, mem(RAX, 8)),
            ins!(Fstp_m32fp, mem(RAX, 16)),
            ins!(Fnclex),
            ins!(Fld_m64fp, mem(RAX, 8)),
            ins!(Fldcw_m2byte, mem(RAX, 32)),
            ins!(Fst_m32fp, mem(RAX, 20)),
        ],
        &data,
    );
    m.write(DATA + 32, &0x037fu16.to_le_bytes());
    assert_eq!(m.run(), None);
    assert_eq!(m.read::<4>(DATA + 16), [0xaa; 4], "unmasked: no store");
    assert_eq!(
        m.read::<4>(DATA + 20),
        f32::INFINITY.to_le_bytes(),
        "masked: infinity"
    );
    // The unmasked FSTP did not pop: two values on the stack.
    assert_eq!(m.cpu.fx_state().top(), 6);
}

#[test]
fn fcomi_and_fcmov_use_rflags() {
    let mut m = machine(
        &[
            ins!(Fld1),
            ins!(Fldz),
            ins!(Fcomi_st0_sti, ST0, ST1),
            ins!(Fcmovb_st0_sti, ST0, ST1),
            ins!(Fucomip_st0_sti, ST0, ST1),
        ],
        &[],
    );
    m.cpu.regs.rflags = 2 | 0x8d5;
    assert_eq!(m.run(), None);
    // 0 < 1: CF; then ST0 = 1 moved in; 1 == 1: ZF.
    assert_eq!(m.cpu.regs.rflags & 0x8d5, 0x40);
    assert_eq!(m.cpu.fx_state().top(), 7);
}

#[test]
fn environments_and_saved_states() {
    let mut m = machine(
        &[
            ins!(Fld_m64fp, mem(RAX, 0)),
            ins!(Fnstenv_m28byte, mem(RAX, 64)),
            ins!(Fnsave_m108byte, mem(RAX, 128)),
            ins!(Fld1),
            ins!(Frstor_m108byte, mem(RAX, 128)),
        ],
        &doubles(&[0.5]),
    );
    assert_eq!(m.run(), None);
    let env = m.read::<28>(DATA + 64);
    assert_eq!(&env[0..4], &[0x7f, 0x03, 0xff, 0xff]);
    assert_eq!(&env[8..12], &[0xff, 0x3f, 0xff, 0xff], "R7 valid");
    assert_eq!(
        u32::from_le_bytes(env[12..16].try_into().unwrap()),
        0x1_0000
    );
    // FLD QWORD [RAX+0] is DD 40 00: its ModR/M's mod and r/m bits are in FOP.
    assert_eq!(&env[16..20], &[8, 0, 0x40, 0x05], "CS 8, FOP 540H");
    assert_eq!(
        u32::from_le_bytes(env[20..24].try_into().unwrap()),
        DATA as u32
    );
    let s = m.cpu.fx_state();
    assert_eq!(s.top(), 7);
    assert_eq!(s.ftw, 0x80);
    assert_eq!(s.st[0], 0x3ffe_8000_0000_0000_0000);
    assert_eq!(s.fip, 0x1_0000, "FRSTOR brought back the pointers");
}

#[test]
fn control_registers_gate_the_unit() {
    for (cr0_set, cr0_clear, program, expected) in [
        (0x8, 0, ins!(Fld1), Some(vector::NM)),
        (0x4, 0, ins!(Fld1), Some(vector::NM)),
        (0x8, 0, ins!(Wait), Some(vector::NM)),
        (0x8, 0x2, ins!(Wait), None),
    ] {
        let mut m = machine(&[program], &[]);
        m.cpu.sregs.cr0 = (m.cpu.sregs.cr0 | cr0_set) & !cr0_clear;
        assert_eq!(m.run(), expected);
    }
}
