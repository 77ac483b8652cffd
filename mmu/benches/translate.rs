//! What a translation costs: a TLB hit, a TLB miss answered by the shadow pages, and a guest
//! page walk (4-level), each in ns per translation.
//!
//! `cargo bench -p umbra-mmu --bench translate`. For the cost of a TLB hit in host
//! instructions, run the binary under `valgrind --tool=callgrind` with the arguments `hit N`
//! for two values of N, which runs only the TLB-hit loop N times: the difference of the
//! totals over the difference of the Ns is the instructions per hit, loop included.

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
    // `hit N`: only the TLB-hit loop, N times (for counting its instructions under callgrind).
    let args: Vec<String> = std::env::args().collect();
    let only_hits = args.iter().any(|a| a == "hit");
    let hits = args
        .iter()
        .skip_while(|a| *a != "hit")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(ITERATIONS);
    let (memslots, walker) = machine();
    let read = Access::new(AccessKind::Read, Privilege::Supervisor);
    let mut mmu = VcpuMmu::new(walker.clone(), Arc::new(ShadowMmu::new()), memslots.clone());
    for page in 0..512 {
        mmu.translate(Gva(page << 12), read).unwrap();
    }
    let start = Instant::now();
    for i in 0..hits {
        black_box(
            mmu.translate(black_box(Gva((i & 511) << 12)), read)
                .unwrap(),
        );
    }
    let hit = per_op(start, hits);
    if only_hits {
        println!("{hits} TLB hits");
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
    huge_pages();
}

/// 1 GiB in 2 MiB guest pages, with the guest's own page table placed inside the first of
/// them: every 4 KiB page touched once, with large leaves split on demand or 4 KiB leaves made
/// up front.
fn huge_pages() {
    const GIB: u64 = 1 << 30;
    println!("touching 1 GiB of 2 MiB guest pages once, a page table inside the first:");
    for (policy, large) in [
        ("large leaves, split on demand", true),
        ("4 KiB leaves, split up front", false),
    ] {
        let memslots = Arc::new(Memslots::new());
        let ram = HostMapping::anonymous((GIB + (4 << 20)) as usize).unwrap();
        let pages = (GIB >> 12) + 1024;
        memslots
            .create(SlotId(0), Gfn(0), pages, ram, 0, MemslotFlags::empty())
            .unwrap();
        let link = |frame: u64| (frame << 12) | 0x67;
        // PML4 at 4 KiB, PDPT at 8 KiB; the PD that maps the GiB lives at 12 KiB, inside the
        // first 2 MiB page it maps.
        memslots.write_u64(Gpa(0x1000), link(2)).unwrap();
        memslots.write_u64(Gpa(0x2000), link(3)).unwrap();
        for n in 0..512 {
            memslots
                .write_u64(Gpa(0x3000 + 8 * n), (n << 21) | 0xe7)
                .unwrap();
        }
        let mut walker = Walker::new(40, true).unwrap();
        walker.set_role(CpuRole::from_regs(
            CR0_PG | CR0_WP,
            CR4_PAE,
            EFER_LMA | EFER_NXE,
        ));
        walker.set_cr3(0x1000);
        let shadow = Arc::new(ShadowMmu::new());
        memslots.set_write_tracker(shadow.clone());
        let mut mmu = VcpuMmu::new(walker, shadow.clone(), memslots.clone());
        mmu.set_large_leaves(large);
        let read = Access::new(AccessKind::Read, Privilege::Supervisor);
        let start = Instant::now();
        for page in 0..GIB >> 12 {
            black_box(mmu.translate(Gva(page << 12), read).unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        let stats = shadow.stats();
        println!(
            "  {policy:<32}{:>8.1} ms  {:>7} walks  {:>5} shadow pages  {:>7} entries",
            elapsed * 1e3,
            mmu.counters().walks,
            stats.pages_alive,
            stats.sptes_installed
        );
    }
}
