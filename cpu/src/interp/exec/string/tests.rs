//! REP-prefixed string instructions run through [`Interpreter::step`] on the machine of the
//! SSE tests, stopped between iterations by a fault or a single-step trap.
//!
//! [`Interpreter::step`]: crate::interp::Interpreter::step

use iced_x86::{Instruction, RepPrefixKind};

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
