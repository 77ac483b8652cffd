//! Dirty logging on the emulator (seed 000's metric): a guest dirties 1 GiB mapped with 2 MiB
//! pages after logging is enabled on its slot; the time to dirty all of it, with the slot's
//! large shadow mappings split eagerly, lazily, or kept.
//!
//! `cargo bench -p umbra-cpu --bench dirty_log`

use std::sync::Arc;
use std::time::Instant;

use umbra_cpu::backend::emu::EmuOptions;
use umbra_cpu::backend::{NoDevices, Vcpu, VcpuExit};
use umbra_cpu::state::{Registers, Segment, SystemRegisters};
use umbra_mmu::addr::{Gfn, Gpa};
use umbra_mmu::memslot::{HostMapping, MemslotFlags, Memslots, SlotId};
use umbra_mmu::shadow::SplitPolicy;

/// The region the guest dirties: 1 GiB at 1 GiB, its own slot.
const DATA: u64 = 1 << 30;
const DATA_SLOT: SlotId = SlotId(1);
/// Page tables at 4 KiB and up, code at 64 KiB, in a 4 MiB slot at 0.
const CODE: u64 = 0x1_0000;

/// Memory: the low slot with page tables mapping 0-2 GiB with 2 MiB pages and the code; the
/// data slot at 1 GiB.
fn memory() -> Arc<Memslots> {
    let memslots = Arc::new(Memslots::new());
    let low = HostMapping::anonymous(4 << 20).unwrap();
    memslots
        .create(SlotId(0), Gfn(0), 1024, low, 0, MemslotFlags::empty())
        .unwrap();
    let data = HostMapping::anonymous(DATA as usize).unwrap();
    memslots
        .create(
            DATA_SLOT,
            Gpa(DATA).gfn(),
            DATA >> 12,
            data,
            0,
            MemslotFlags::empty(),
        )
        .unwrap();
    let write = |gpa: u64, value: u64| memslots.write_u64(Gpa(gpa), value).unwrap();
    write(0x1000, 0x2000 | 0x3);
    write(0x2000, 0x3000 | 0x3);
    write(0x2008, 0x4000 | 0x3);
    for n in 0..512 {
        write(0x3000 + 8 * n, (n << 21) | 0x83);
        write(0x4000 + 8 * n, (DATA + (n << 21)) | 0x83);
    }
    // mov rax, 1 GiB; mov rbx, 2 GiB; 1: mov [rax], rax; add rax, 4096; cmp rax, rbx; jb 1b; hlt
    let mut code = vec![0x48, 0xb8];
    code.extend_from_slice(&DATA.to_le_bytes());
    code.extend_from_slice(&[0x48, 0xbb]);
    code.extend_from_slice(&(2 * DATA).to_le_bytes());
    code.extend_from_slice(&[0x48, 0x89, 0x00, 0x48, 0x05, 0x00, 0x10, 0x00, 0x00]);
    code.extend_from_slice(&[0x48, 0x39, 0xd8, 0x72, 0xf2, 0xf4]);
    memslots.write(Gpa(CODE), &code).unwrap();
    memslots
}

/// 64-bit mode at CPL 0 with paging through the tables at 4 KiB.
fn long_mode(vcpu: &mut dyn Vcpu) {
    let flat = Segment {
        base: 0,
        limit: 0xffff_ffff,
        present: true,
        s: true,
        g: true,
        ..Segment::default()
    };
    let sregs = SystemRegisters {
        cs: Segment {
            selector: 8,
            type_: 0xb,
            l: true,
            ..flat
        },
        ds: Segment {
            selector: 16,
            type_: 0x3,
            db: true,
            ..flat
        },
        es: Segment {
            selector: 16,
            type_: 0x3,
            db: true,
            ..flat
        },
        ss: Segment {
            selector: 16,
            type_: 0x3,
            db: true,
            ..flat
        },
        fs: Segment {
            selector: 16,
            type_: 0x3,
            db: true,
            ..flat
        },
        gs: Segment {
            selector: 16,
            type_: 0x3,
            db: true,
            ..flat
        },
        tr: Segment {
            type_: 0xb,
            present: true,
            limit: 0x67,
            ..Segment::default()
        },
        ldtr: Segment {
            unusable: true,
            ..Segment::default()
        },
        cr0: 0x8001_0033,
        cr3: 0x1000,
        cr4: 0x20,
        efer: 0xd00,
        ..SystemRegisters::default()
    };
    vcpu.set_system_registers(&sregs).unwrap();
}

/// Runs the dirtying loop from the start to its HLT; returns the seconds it took.
fn dirty_all(vcpu: &mut dyn Vcpu) -> f64 {
    vcpu.set_registers(&Registers {
        rip: CODE,
        rflags: 2,
        ..Registers::default()
    })
    .unwrap();
    let start = Instant::now();
    loop {
        match vcpu.run().unwrap() {
            VcpuExit::Halted { .. } => return start.elapsed().as_secs_f64(),
            VcpuExit::Interrupted => {}
            other => panic!("unexpected exit {other:?}"),
        }
    }
}

fn main() {
    println!(
        "Dirty logging: a guest dirties 1 GiB mapped with 2 MiB pages after logging is enabled"
    );
    println!(
        "{:<8}{:>14}{:>14}{:>16}{:>16}",
        "split", "first pass", "split", "dirty 1 GiB", "pages logged"
    );
    for (name, policy) in [
        ("eager", SplitPolicy::Eager),
        ("lazy", SplitPolicy::Lazy),
        ("keep", SplitPolicy::Keep),
    ] {
        let memslots = memory();
        let options = EmuOptions {
            split_policy: policy,
            ..EmuOptions::default()
        };
        let vm = options.create_emu_vm(memslots.clone()).unwrap();
        let mut vcpu = umbra_cpu::backend::Vm::create_vcpu(&*vm, 0, Arc::new(NoDevices)).unwrap();
        long_mode(&mut *vcpu);
        // The first pass maps the region with 512 large leaves.
        let first = dirty_all(&mut *vcpu);
        let start = Instant::now();
        memslots
            .set_flags(DATA_SLOT, MemslotFlags::LOG_DIRTY)
            .unwrap();
        let split = start.elapsed().as_secs_f64();
        let dirty = dirty_all(&mut *vcpu);
        let log = umbra_cpu::backend::Vm::get_dirty_log(&*vm, DATA_SLOT).unwrap();
        let logged: u32 = log.iter().map(|w| w.count_ones()).sum();
        println!(
            "{name:<8}{:>12.1}ms{:>12.2}ms{:>14.1}ms{:>16}",
            first * 1e3,
            split * 1e3,
            dirty * 1e3,
            logged
        );
        assert_eq!(
            u64::from(logged),
            DATA >> 12,
            "every page written is logged"
        );
    }
}
