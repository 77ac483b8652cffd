//! A 64-bit machine for the JIT's tests: RAM, identity-mapped page tables, a GDT and an IDT,
//! and a vCPU at CPL 0 in long mode with SSE on.

use std::sync::Arc;

use umbra_cpu::backend::emu::EmuOptions;
use umbra_cpu::backend::{Hypervisor, NoDevices, Vcpu, VcpuExit};
use umbra_cpu::state::{DescriptorTable, Registers, Segment, SystemRegisters};
use umbra_mmu::addr::{Gfn, Gpa};
use umbra_mmu::memslot::{HostMapping, MemslotFlags, Memslots, SlotId};

/// RAM size.
pub const RAM: usize = 4 << 20;
const PML4: u64 = 0x10000;
const GDT: u64 = 0x20000;
const IDT: u64 = 0x21000;
/// The initial stack pointer.
pub const STACK_TOP: u64 = 0x8000;
const CODE64: u16 = 0x08;

/// RAM with the tables, and `handler` as the IDT's gate for `vector`.
pub fn memory(vector: u8, handler: u64) -> Arc<Memslots> {
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
    build_tables(&memslots, vector, handler);
    memslots
}

/// Identity-maps the first 1 GiB with 2 MiB pages, and builds a GDT with a 64-bit code
/// segment and an IDT whose gate `vector` leads to `handler`.
fn build_tables(memslots: &Memslots, vector: u8, handler: u64) {
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
    gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    gate[2..4].copy_from_slice(&CODE64.to_le_bytes());
    gate[5] = 0x8e; // present, DPL 0, 64-bit interrupt gate
    gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    gate[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    memslots
        .write(Gpa(IDT + 16 * u64::from(vector)), &gate)
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
        // PAE, OSFXSR, OSXMMEXCPT.
        cr4: 0x620,
        efer: 0x500,
        ..*base
    }
}

/// A vCPU of `options` over `memslots`, at `rip` in long mode, with `gpr` (RSP set to
/// [`STACK_TOP`]).
pub fn vcpu(
    options: &EmuOptions,
    memslots: &Arc<Memslots>,
    rip: u64,
    gpr: [u64; 16],
) -> Box<dyn Vcpu> {
    let vm = options.create_vm(memslots.clone()).unwrap();
    let mut vcpu = vm.create_vcpu(0, Arc::new(NoDevices)).unwrap();
    let system = long_mode(&vcpu.system_registers().unwrap());
    vcpu.set_system_registers(&system).unwrap();
    let mut gpr = gpr;
    gpr[4] = STACK_TOP;
    vcpu.set_registers(&Registers {
        rip,
        rflags: 0x2,
        gpr,
    })
    .unwrap();
    vcpu
}

/// Runs `vcpu` through its kicks and budget ends until it halts with interrupts disabled, in
/// at most `most_runs` runs.
pub fn run_to_halt(vcpu: &mut dyn Vcpu, most_runs: u32) {
    let mut runs = 0;
    let exit = loop {
        runs += 1;
        assert!(runs <= most_runs, "no halt after {most_runs} runs");
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
}
