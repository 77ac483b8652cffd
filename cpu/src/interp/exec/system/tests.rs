//! System instructions a Linux kernel uses early, run through [`Interpreter::step`] on the
//! machine of the SSE tests (64-bit mode, CPL 0).
//!
//! [`Interpreter::step`]: crate::interp::Interpreter::step

use iced_x86::Register::{AX, EAX, ECX, RAX as RAX_REGISTER};

use crate::interp::alu::ZF;
use crate::interp::exec::sse::tests::{DATA, Machine, ins, mem};
use crate::interp::msr::{ARCH_CAPABILITIES, MICROCODE_REVISION, index};
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

#[test]
fn arch_capabilities_says_not_vulnerable() {
    // Linux reads it when CPUID.7.0:EDX[29] is set, and takes RDCL_NO as "no Meltdown".
    assert_ne!(crate::interp::cpuid::cpuid(7, 0)[3] & (1 << 29), 0);
    let mut m = Machine::new(&[ins!(Rdmsr)]);
    m.cpu.regs.gpr[RCX] = index::ARCH_CAPABILITIES.into();
    assert_eq!(m.run(), None);
    let value = m.cpu.regs.gpr[RDX] << 32 | (m.cpu.regs.gpr[RAX] & 0xffff_ffff);
    assert_eq!(value, ARCH_CAPABILITIES);
    assert_eq!(value & 1, 1, "RDCL_NO");
}

/// Runs VERR or VERW (`code`) of `selector`, from a register and from memory; the ZF each
/// leaves.
fn verify(code: iced_x86::Code, selector: u16) -> [bool; 2] {
    let from_register = iced_x86::Instruction::with1(code, AX).unwrap();
    let from_memory = iced_x86::Instruction::with1(code, mem(RAX_REGISTER, 0)).unwrap();
    [from_register, from_memory].map(|instruction| {
        let mut m = Machine::new(&[instruction]);
        m.write(DATA, &selector.to_le_bytes());
        m.cpu.regs.gpr[RAX] = if instruction.op0_kind() == iced_x86::OpKind::Memory {
            DATA
        } else {
            selector.into()
        };
        assert_eq!(m.run(), None);
        m.cpu.regs.rflags & ZF != 0
    })
}

#[test]
fn verr_and_verw_test_the_segment_without_faulting() {
    use iced_x86::Code::{Verr_rm16, Verw_rm16};
    // The machine's GDT: 0x08 a 64-bit readable code segment, 0x10 a writable data
    // segment, both DPL 0; its limit ends the table there.
    assert_eq!(verify(Verw_rm16, 0x10), [true; 2]);
    assert_eq!(verify(Verr_rm16, 0x10), [true; 2]);
    assert_eq!(verify(Verr_rm16, 0x08), [true; 2]);
    assert_eq!(verify(Verw_rm16, 0x08), [false; 2]);
    // Null, past the GDT's limit, in a missing LDT.
    for selector in [0, 3, 0x18, 0x40, 0x0c] {
        assert_eq!(verify(Verr_rm16, selector), [false; 2], "{selector:#x}");
        assert_eq!(verify(Verw_rm16, selector), [false; 2], "{selector:#x}");
    }
    // An RPL above the DPL.
    assert_eq!(verify(Verw_rm16, 0x13), [false; 2]);
}
