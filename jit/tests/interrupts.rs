//! An external interrupt reaches a vCPU spinning in a loop the JIT has chained to itself:
//! the block budget brings the loop back to the vCPU loop, which delivers the interrupt at an
//! instruction boundary inside the loop.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use umbra_cpu::backend::InterruptLines;
use umbra_cpu::backend::emu::EmuOptions;
use umbra_jit::JitFactory;
use umbra_mmu::addr::Gpa;

use common::STACK_TOP;

const LOOP: u64 = 0x1000;
const HANDLER: u64 = 0x2000;
const VECTOR: u8 = 0x30;

/// An interrupt line that asserts only after the vCPU loop has looked at it `quiet` times,
/// so that the interrupt arrives while the loop spins.
struct LateInterrupt {
    looks: AtomicU32,
    quiet: u32,
}

impl InterruptLines for LateInterrupt {
    fn pending(&self) -> bool {
        self.looks.fetch_add(1, Ordering::Relaxed) >= self.quiet
    }

    fn acknowledge(&self) -> Option<u8> {
        Some(VECTOR)
    }
}

#[test]
fn an_interrupt_reaches_a_chained_loop() {
    let memslots = common::memory(VECTOR, HANDLER);
    // sti; 1: inc rax; jmp 1b
    memslots
        .write(Gpa(LOOP), &[0xfb, 0x48, 0xff, 0xc0, 0xeb, 0xfb])
        .unwrap();
    // hlt (with IF clear: the run ends)
    memslots.write(Gpa(HANDLER), &[0xf4]).unwrap();

    let emu = EmuOptions {
        engine: Some(Arc::new(JitFactory { threshold: 0 })),
        ..EmuOptions::default()
    };
    let mut vcpu = common::vcpu(&emu, &memslots, LOOP, [0; 16]);
    assert!(vcpu.set_interrupt_lines(Arc::new(LateInterrupt {
        looks: AtomicU32::new(0),
        quiet: 50,
    })));

    // The handler's HLT ends the run; without the interrupt the loop would spin on.
    common::run_to_halt(&mut *vcpu, 10_000);
    let regs = vcpu.registers().unwrap();
    assert_eq!(regs.rip, HANDLER + 1, "the handler ran");
    assert!(regs.gpr[0] > 1000, "the loop ran {} times", regs.gpr[0]);
    // The frame holds a RIP inside the loop and RFLAGS with IF set.
    let mut frame = [0u8; 24];
    memslots.read(Gpa(STACK_TOP - 40), &mut frame).unwrap();
    let rip = u64::from_le_bytes(frame[0..8].try_into().unwrap());
    let rflags = u64::from_le_bytes(frame[16..24].try_into().unwrap());
    assert!(
        rip == LOOP + 1 || rip == LOOP + 4,
        "interrupted at {rip:#x}"
    );
    assert_ne!(rflags & 0x200, 0);
    let stats = vcpu.mmu_stats();
    let translated = stats
        .iter()
        .find(|(name, _)| *name == "jit_blocks_translated")
        .map(|&(_, n)| n);
    assert!(translated.unwrap_or(0) > 0, "the loop was translated");
}
