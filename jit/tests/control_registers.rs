//! Kernel code reads CR0, CR2, CR3 and CR4 in generated code (Linux reads CR2 in every page
//! fault), and sees what the interpreter last wrote to them.

mod common;

use std::sync::Arc;

use umbra_cpu::backend::emu::EmuOptions;
use umbra_jit::JitFactory;
use umbra_mmu::addr::Gpa;

const CODE: u64 = 0x1000;

#[test]
fn kernel_code_reads_control_registers_without_the_interpreter() {
    let memslots = common::memory(0x30, 0x2000);
    #[rustfmt::skip]
    let code = [
        0x0f, 0x20, 0xc0, // mov rax, cr0
        0x0f, 0x20, 0xd3, // mov rbx, cr2
        0x0f, 0x20, 0xd9, // mov rcx, cr3
        0x0f, 0x20, 0xe2, // mov rdx, cr4
        0x0f, 0x22, 0xd6, // mov cr2, rsi (the interpreter's)
        0x0f, 0x20, 0xd7, // mov rdi, cr2
        0xf4,             // hlt
    ];
    memslots.write(Gpa(CODE), &code).unwrap();
    let emu = EmuOptions {
        engine: Some(Arc::new(JitFactory { threshold: 0 })),
        ..EmuOptions::default()
    };
    let mut gpr = [0; 16];
    gpr[6] = 0xdead_b000;
    let mut vcpu = common::vcpu(&emu, &memslots, CODE, gpr);
    common::run_to_halt(&mut *vcpu, 100);

    let regs = vcpu.registers().unwrap();
    let system = vcpu.system_registers().unwrap();
    assert_eq!(regs.gpr[0], system.cr0);
    assert_eq!(regs.gpr[3], 0, "CR2 as it was");
    assert_eq!(regs.gpr[1], system.cr3);
    assert_eq!(regs.gpr[2], system.cr4);
    assert_eq!(regs.gpr[7], 0xdead_b000, "CR2 as the interpreter wrote it");
    let stats = vcpu.mmu_stats();
    let count = |name: &str| {
        stats
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |&(_, n)| n)
    };
    assert!(count("jit_blocks_translated") >= 2);
    assert_eq!(
        count("jit_fallback_mov"),
        1,
        "only the write to CR2 was interpreted"
    );
}
