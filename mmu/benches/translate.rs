//! What a translation costs: a TLB hit, a TLB miss answered by the shadow pages, and a guest
//! page walk (4-level), each in ns per translation.
//!
//! `cargo bench -p umbra-mmu --bench translate`. For the cost of a TLB hit in host
//! instructions, run the binary under `valgrind --tool=callgrind` with the argument `hit`,
//! which runs only the TLB-hit loop: the instructions of `VcpuMmu::translate` divided by the
//! iterations printed.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use umbra_mmu::addr::{Gfn, Gpa, Gva};
use umbra_mmu::memslot::{HostMapping, MemslotFlags, Memslots, SlotId};
use umbra_mmu::role::{CR0_PG, CR0_WP, CR4_PAE, CpuRole, EFER_LMA, EFER_NXE};
use umbra_mmu::shadow::ShadowMmu;
use umbra_mmu::vcpu_mmu::VcpuMmu;
use umbra_mmu::walker::{Access, AccessKind, Privilege, WalkMode, Walker};

const ITERATIONS: u64 = 2_000_000;

/// 4-level tables mapping the first 2 MiB with 4 KiB pages.
fn machine() -> (Arc<Memslots>, Walker) {
    let memslots = Arc::new(Memslots::new());
    let ram = HostMapping::anonymous(4 << 20).unwrap();
    memslots
        .create(SlotId(0), Gfn(0), 1024, ram, 0, MemslotFlags::empty())
        .unwrap();
    let link = |frame: u64| (frame << 12) | 0x67;
    memslots.write_u64(Gpa(0x1000), link(2)).unwrap();
    memslots.write_u64(Gpa(0x2000), link(3)).unwrap();
    memslots.write_u64(Gpa(0x3000), link(4)).unwrap();
    for n in 0..512 {
        memslots
            .write_u64(Gpa(0x4000 + 8 * n), link(512 + n))
            .unwrap();
    }
    let mut walker = Walker::new(40, true).unwrap();
    walker.set_role(CpuRole::from_regs(
        CR0_PG | CR0_WP,
        CR4_PAE,
        EFER_LMA | EFER_NXE,
    ));
    walker.set_cr3(0x1000);
    (memslots, walker)
}

fn per_op(start: Instant, n: u64) -> f64 {
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let only_hits = std::env::args().any(|a| a == "hit");
    let (memslots, walker) = machine();
    let read = Access::new(AccessKind::Read, Privilege::Supervisor);
    let mut mmu = VcpuMmu::new(walker.clone(), Arc::new(ShadowMmu::new()), memslots.clone());
    for page in 0..512 {
        mmu.translate(Gva(page << 12), read).unwrap();
    }
    let start = Instant::now();
    for i in 0..ITERATIONS {
        black_box(
            mmu.translate(black_box(Gva((i & 511) << 12)), read)
                .unwrap(),
        );
    }
    let hit = per_op(start, ITERATIONS);
    if only_hits {
        println!("{ITERATIONS} TLB hits");
        return;
    }
    let misses = ITERATIONS / 20;
    let start = Instant::now();
    for i in 0..misses {
        let gva = Gva((i & 511) << 12);
        mmu.invlpg(gva);
        black_box(mmu.translate(black_box(gva), read).unwrap());
    }
    let shadow = per_op(start, misses);
    let start = Instant::now();
    for i in 0..misses {
        let gva = Gva((i & 511) << 12);
        black_box(
            walker
                .walk(&*memslots, black_box(gva), read, WalkMode::Update)
                .unwrap(),
        );
    }
    let walk = per_op(start, misses);
    println!("translation cost, 4-level paging:");
    println!("  TLB hit                          {hit:>8.1} ns");
    println!("  TLB miss, shadow pages hit        {shadow:>8.1} ns");
    println!("  guest page walk                   {walk:>8.1} ns");
    println!("TLB counters: {:?}", mmu.counters());
}
