//! System instructions a Linux kernel uses early, run through [`Interpreter::step`] on the
//! machine of the SSE tests (64-bit mode, CPL 0).
//!
//! [`Interpreter::step`]: crate::interp::Interpreter::step

use iced_x86::Register::{EAX, ECX};

use crate::interp::exec::sse::tests::{Machine, ins};
use crate::interp::msr::{MICROCODE_REVISION, index};
use crate::state::RFLAGS_AC;

/// RAX, RCX and RDX in the register file.
const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;

#[test]
fn stac_and_clac_set_and_clear_rflags_ac() {
    let mut m = Machine::new(&[ins!(Stac)]);
    assert_eq!(m.run(), None);
    assert_ne!(m.cpu.regs.rflags & RFLAGS_AC, 0);
    let mut m = Machine::new(&[ins!(Stac), ins!(Clac)]);
    assert_eq!(m.run(), None);
    assert_eq!(m.cpu.regs.rflags & RFLAGS_AC, 0);
}

#[test]
fn the_microcode_revision_reads_after_the_write_of_0() {
    // Linux's intel_get_microcode_revision: WRMSR 0 to IA32_BIOS_SIGN_ID, CPUID, RDMSR.
    let program = [
        ins!(Wrmsr),
        ins!(Mov_r32_imm32, EAX, 1),
        ins!(Cpuid),
        ins!(Mov_r32_imm32, ECX, index::BIOS_SIGN_ID),
        ins!(Rdmsr),
    ];
    let mut m = Machine::new(&program);
    m.cpu.regs.gpr[RCX] = index::BIOS_SIGN_ID.into();
    assert_eq!(m.run(), None);
    let value = m.cpu.regs.gpr[RDX] << 32 | m.cpu.regs.gpr[RAX];
    assert_eq!(value, MICROCODE_REVISION);
}
