//! REP-prefixed string instructions run through [`Interpreter::step`] on the machine of the
//! SSE tests, stopped between iterations by a fault or a single-step trap.
//!
//! [`Interpreter::step`]: crate::interp::Interpreter::step

use iced_x86::{Instruction, Register, RepPrefixKind};

use crate::interp::alu::ZF;
use crate::interp::exception::vector;
use crate::interp::exec::sse::tests::{DATA, Machine};
use crate::state::RFLAGS_TF;

/// RAX, RCX and RDI in the register file.
const RAX: usize = 0;
const RCX: usize = 1;
const RDI: usize = 7;
/// RSP.
const RSP: usize = 4;
/// The end of what the machine's page tables map (one 2 MiB page): the next byte faults.
const MAPPED_END: u64 = 0x20_0000;

#[test]
fn a_fault_in_repe_scas_puts_rflags_back() {
    // The first doubleword equals EAX, so the scan sets ZF and goes on; the second is past
    // the mapping and faults. RFLAGS goes back to what it was before the instruction: ZF
    // clear.
    let scas = Instruction::with_scasd(64, RepPrefixKind::Repe).unwrap();
    let mut m = Machine::new(&[scas]);
    m.write(MAPPED_END - 4, &0x1234_5678u32.to_le_bytes());
    m.cpu.regs.gpr[RAX] = 0x1234_5678;
    m.cpu.regs.gpr[RCX] = 5;
    m.cpu.regs.gpr[RDI] = MAPPED_END - 4;
    assert_eq!(m.run(), Some(vector::PF));
    assert_eq!(m.cpu.regs.rflags & ZF, 0);
    // The completed iteration stays done.
    assert_eq!(m.cpu.regs.gpr[RCX], 4);
    assert_eq!(m.cpu.regs.gpr[RDI], MAPPED_END);
}

#[test]
fn single_step_traps_after_each_iteration() {
    let stos = Instruction::with_stosb(64, RepPrefixKind::Repe).unwrap();
    let mut m = Machine::new(&[stos]);
    let start = m.cpu.regs.rip;
    m.cpu.regs.gpr[RCX] = 3;
    m.cpu.regs.gpr[RDI] = DATA;
    m.cpu.regs.rflags |= RFLAGS_TF;
    assert_eq!(m.run(), Some(vector::DB));
    assert_eq!(m.cpu.regs.gpr[RCX], 2);
    assert_eq!(m.cpu.regs.gpr[RDI], DATA + 1);
    // The trap's frame returns to the instruction, which has two iterations left.
    let frame_rip = u64::from_le_bytes(m.read(m.cpu.regs.gpr[RSP]));
    assert_eq!(frame_rip, start);
}

/// RSI in the register file.
const RSI: usize = 6;

#[test]
fn rep_movs_into_an_overlapping_destination_repeats_the_source_as_elements_do() {
    // MOVSB forward with the destination one byte ahead: every byte becomes the first.
    let movs = Instruction::with_movsb(64, Register::None, RepPrefixKind::Repe).unwrap();
    let mut m = Machine::new(&[movs]);
    m.write(DATA, &[7, 1, 2, 3, 4, 5, 6, 0]);
    m.cpu.regs.gpr[RSI] = DATA;
    m.cpu.regs.gpr[RDI] = DATA + 1;
    m.cpu.regs.gpr[RCX] = 6;
    m.run();
    assert_eq!(m.read::<8>(DATA), [7, 7, 7, 7, 7, 7, 7, 0]);
    assert_eq!(m.cpu.regs.gpr[RCX], 0);
    assert_eq!(m.cpu.regs.gpr[RSI], DATA + 6);
    assert_eq!(m.cpu.regs.gpr[RDI], DATA + 7);
}

#[test]
fn rep_movs_across_pages_and_into_a_fault_keeps_the_completed_elements() {
    // 0x400 quadwords whose destination runs off the mapping after 0x300 of them:
    // what fits is copied page run by page run, then the first element past it faults.
    let movs = Instruction::with_movsq(64, Register::None, RepPrefixKind::Repe).unwrap();
    let mut m = Machine::new(&[movs]);
    let pattern: Vec<u8> = (0..0x2000u32).map(|n| (n * 7) as u8).collect();
    m.write(DATA, &pattern);
    let destination = MAPPED_END - 0x1800;
    m.cpu.regs.gpr[RSI] = DATA;
    m.cpu.regs.gpr[RDI] = destination;
    m.cpu.regs.gpr[RCX] = 0x400;
    assert_eq!(m.run(), Some(vector::PF));
    assert_eq!(m.cpu.regs.gpr[RCX], 0x400 - 0x300);
    assert_eq!(m.cpu.regs.gpr[RSI], DATA + 0x1800);
    assert_eq!(m.cpu.regs.gpr[RDI], MAPPED_END);
    let mut copied = vec![0u8; 0x1800];
    for (n, chunk) in copied.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&m.read::<8>(destination + 8 * n as u64));
    }
    assert_eq!(copied, pattern[..0x1800]);
}
