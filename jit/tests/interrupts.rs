//! An external interrupt reaches a vCPU spinning in a loop the JIT has chained to itself:
//! the block budget brings the loop back to the vCPU loop, which delivers the interrupt at an
//! instruction boundary inside the loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use umbra_cpu::backend::emu::EmuOptions;
use umbra_cpu::backend::{Hypervisor, InterruptLines, NoDevices, VcpuExit};
use umbra_cpu::state::{DescriptorTable, Registers, Segment, SystemRegisters};
use umbra_jit::JitFactory;
use umbra_mmu::addr::{Gfn, Gpa};
use umbra_mmu::memslot::{HostMapping, MemslotFlags, Memslots, SlotId};

const RAM: usize = 4 << 20;
const PML4: u64 = 0x10000;
const GDT: u64 = 0x20000;
const IDT: u64 = 0x21000;
const LOOP: u64 = 0x1000;
const HANDLER: u64 = 0x2000;
const STACK_TOP: u64 = 0x8000;
const VECTOR: u8 = 0x30;
const CODE64: u16 = 0x08;

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

/// Identity-maps the first 1 GiB with 2 MiB pages, and builds a GDT with a 64-bit code
/// segment and an IDT whose gate `VECTOR` leads to `HANDLER`.
fn build_tables(memslots: &Memslots) {
    let pdpt = PML4 + 0x1000;
    let pd = PML4 + 0x2000;
    memslots
        .write(Gpa(PML4), &(pdpt | 3).to_le_bytes())
        .unwrap();
    memslots.write(Gpa(pdpt), &(pd | 3).to_le_bytes()).unwrap();
    for n in 0..512u64 {
        let entry = (n << 21) | 0x83;
        memslots
            .write(Gpa(pd + 8 * n), &entry.to_le_bytes())
            .unwrap();
    }
    let code64: u64 = 0x0020_9a00_0000_0000;
    memslots
        .write(Gpa(GDT + u64::from(CODE64)), &code64.to_le_bytes())
        .unwrap();
    let mut gate = [0u8; 16];
    gate[0..2].copy_from_slice(&(HANDLER as u16).to_le_bytes());
    gate[2..4].copy_from_slice(&CODE64.to_le_bytes());
    gate[5] = 0x8e; // present, DPL 0, 64-bit interrupt gate
    gate[6..8].copy_from_slice(&((HANDLER >> 16) as u16).to_le_bytes());
    gate[8..12].copy_from_slice(&((HANDLER >> 32) as u32).to_le_bytes());
    memslots
        .write(Gpa(IDT + 16 * u64::from(VECTOR)), &gate)
        .unwrap();
}

/// 64-bit mode at CPL 0, with the tables above.
fn long_mode(base: &SystemRegisters) -> SystemRegisters {
    let code = Segment {
        selector: CODE64,
        base: 0,
        limit: 0xffff_ffff,
        type_: 0xb,
        s: true,
        dpl: 0,
        present: true,
        l: true,
        g: true,
        ..Segment::default()
    };
    let data = Segment {
        selector: 0,
        type_: 0x3,
        s: true,
        present: true,
        limit: 0xffff_ffff,
        db: true,
        g: true,
        ..code
    };
    SystemRegisters {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        gdt: DescriptorTable {
            base: GDT,
            limit: 0xff,
        },
        idt: DescriptorTable {
            base: IDT,
            limit: 0xfff,
        },
        cr0: 0x8000_0011,
        cr3: PML4,
        cr4: 0x20,
        efer: 0x500,
        ..*base
    }
}

#[test]
fn an_interrupt_reaches_a_chained_loop() {
    let memslots = Arc::new(Memslots::new());
    memslots
        .create(
            SlotId(0),
            Gfn(0),
            (RAM >> 12) as u64,
            HostMapping::anonymous(RAM).unwrap(),
            0,
            MemslotFlags::empty(),
        )
        .unwrap();
    build_tables(&memslots);
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
    let vm = emu.create_vm(memslots.clone()).unwrap();
    let mut vcpu = vm.create_vcpu(0, Arc::new(NoDevices)).unwrap();
    let system = long_mode(&vcpu.system_registers().unwrap());
    vcpu.set_system_registers(&system).unwrap();
    vcpu.set_registers(&Registers {
        rip: LOOP,
        rflags: 0x2,
        gpr: {
            let mut gpr = [0; 16];
            gpr[4] = STACK_TOP;
            gpr
        },
    })
    .unwrap();
    assert!(vcpu.set_interrupt_lines(Arc::new(LateInterrupt {
        looks: AtomicU32::new(0),
        quiet: 50,
    })));

    let mut exits = 0;
    let exit = loop {
        exits += 1;
        assert!(exits < 10_000, "the interrupt never came");
        match vcpu.run().unwrap() {
            VcpuExit::Interrupted => continue,
            exit => break exit,
        }
    };
    assert_eq!(
        exit,
        VcpuExit::Halted {
            interrupts_enabled: false
        }
    );
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
