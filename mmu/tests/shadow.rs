//! The shadow MMU against the walker: random page-table edits, CR3 switches, CR0.WP toggles
//! and INVLPGs, with every translation the TLB and shadow pages give checked against a fresh
//! walk of the guest's tables.

use std::sync::Arc;

use proptest::prelude::*;
use umbra_mmu::addr::{Gfn, Gpa, Gva};
use umbra_mmu::memslot::{HostMapping, MemslotFlags, Memslots, SlotId};
use umbra_mmu::role::{CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CpuRole, EFER_LMA, EFER_NXE};
use umbra_mmu::shadow::ShadowMmu;
use umbra_mmu::vcpu_mmu::VcpuMmu;
use umbra_mmu::walker::{Access, AccessKind, Privilege, WalkMode, Walker};

/// Guest RAM: 8 MiB, so that 2 MiB pages have frames to map.
const RAM: u64 = 8 << 20;
/// The frames holding page tables: three PML4s first.
const TABLES: std::ops::Range<u64> = 1..12;
const PML4S: [u64; 3] = [1, 2, 3];

#[derive(Clone, Debug)]
enum Op {
    /// Store `value` into entry `index` of table frame `frame`.
    Edit { frame: u64, index: u64, value: u64 },
    /// MOV to CR3 with the PML4 at `PML4S[n]`.
    SwitchCr3(usize),
    /// Toggle CR0.WP.
    ToggleWp,
    /// INVLPG.
    Invlpg(u64),
    /// Translate.
    Access { gva: u64, kind: u8, user: bool },
}

/// A small linear address: indices 0-3 at every level, so that edits hit entries in use.
fn gva() -> impl Strategy<Value = u64> {
    (0..4u64, 0..4u64, 0..4u64, 0..4u64, 0..4096u64)
        .prop_map(|(a, b, c, d, off)| (a << 39) | (b << 30) | (c << 21) | (d << 12) | off)
}

/// An entry: a link to a table frame, a data frame, or a large page, with random flags.
fn entry() -> impl Strategy<Value = u64> {
    let target = prop_oneof![
        TABLES.prop_map(|f| f << 12),
        (12..2048u64).prop_map(|f| f << 12),
        (0..4u64).prop_map(|n| (n << 21) | (1 << 7)),
        Just(1u64 << 7),
    ];
    // P, R/W, U/S, A, D and XD, and now and then a reserved bit.
    let flags = (any::<u8>(), 0..16u8).prop_map(|(bits, reserved)| {
        let mut f = u64::from(bits & 0x67);
        if bits & 0x80 != 0 {
            f |= 1 << 63;
        }
        if reserved == 0 {
            f |= 1 << 51;
        }
        f
    });
    (target, flags).prop_map(|(t, f)| t | f)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (TABLES, prop_oneof![0..4u64, Just(511u64)], entry())
            .prop_map(|(frame, index, value)| Op::Edit { frame, index, value }),
        1 => (0..3usize).prop_map(Op::SwitchCr3),
        1 => Just(Op::ToggleWp),
        1 => gva().prop_map(Op::Invlpg),
        8 => (gva(), 0..3u8, any::<bool>()).prop_map(|(gva, kind, user)| Op::Access { gva, kind, user }),
    ]
}

/// Guest RAM with three PML4s whose entry 0 leads through a PDPT, PD and PT to data frames.
fn machine() -> (Arc<Memslots>, VcpuMmu) {
    let memslots = Arc::new(Memslots::new());
    let ram = HostMapping::anonymous(RAM as usize).unwrap();
    memslots
        .create(SlotId(0), Gfn(0), RAM >> 12, ram, 0, MemslotFlags::empty())
        .unwrap();
    let link = |frame: u64| (frame << 12) | 0x67;
    for pml4 in PML4S {
        memslots.write_u64(Gfn(pml4).gpa(), link(4)).unwrap();
    }
    memslots.write_u64(Gfn(4).gpa(), link(6)).unwrap();
    memslots.write_u64(Gfn(6).gpa(), link(8)).unwrap();
    for index in 0..4 {
        memslots
            .write_u64(Gpa((8 << 12) + 8 * index), link(100 + index))
            .unwrap();
    }
    let mut walker = Walker::new(40, true).unwrap();
    walker.set_role(role(true));
    walker.set_cr3(PML4S[0] << 12);
    let shadow = Arc::new(ShadowMmu::new());
    memslots.set_write_tracker(shadow.clone());
    let mmu = VcpuMmu::new(walker, shadow, memslots.clone());
    (memslots, mmu)
}

fn role(wp: bool) -> CpuRole {
    let cr0 = CR0_PG | if wp { CR0_WP } else { 0 };
    CpuRole::from_regs(cr0, CR4_PAE, EFER_LMA | EFER_NXE)
}

fn access(kind: u8, user: bool) -> Access {
    let kind = [AccessKind::Read, AccessKind::Write, AccessKind::Fetch][kind as usize];
    let privilege = if user {
        Privilege::User
    } else {
        Privilege::Supervisor
    };
    Access::new(kind, privilege)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_translation_equals_a_fresh_walk(ops in prop::collection::vec(op(), 1..300)) {
        let (memslots, mut mmu) = machine();
        let mut wp = true;
        for op in ops {
            mmu.begin_instruction();
            match op {
                Op::Edit { frame, index, value } => {
                    let gpa = Gpa((frame << 12) + index * 8);
                    // A store by a device or another vCPU: the memslots tell the shadow MMU.
                    memslots.write_u64(gpa, value).unwrap();
                }
                Op::SwitchCr3(n) => mmu.set_cr3(PML4S[n] << 12),
                Op::ToggleWp => {
                    wp = !wp;
                    mmu.set_role(role(wp));
                }
                Op::Invlpg(gva) => mmu.invlpg(Gva(gva)),
                Op::Access { gva, kind, user } => {
                    let access = access(kind, user);
                    let model = mmu.walker().clone();
                    let expected = model.walk(&*memslots, Gva(gva), access, WalkMode::Probe);
                    let got = mmu.translate(Gva(gva), access);
                    match (expected, got) {
                        (Ok(walk), Ok(mapping)) => prop_assert_eq!(walk.gpa, mapping.gpa),
                        (Err(fault), Err(got)) => prop_assert_eq!(fault, got),
                        (expected, got) => prop_assert!(
                            false,
                            "{:#x} {:?}: walk {:?}, mmu {:?}", gva, access, expected, got
                        ),
                    }
                }
            }
        }
    }
}

#[test]
fn cr3_switches_and_wp_toggles_keep_translations_once_warm() {
    let (_memslots, mut mmu) = machine();
    let read = access(0, false);
    let addresses: Vec<Gva> = (0..4).map(|page| Gva(page << 12)).collect();
    // Two address spaces times two CR0.WP settings: four roots, as many as the cache holds.
    let run = |mmu: &mut VcpuMmu| {
        for cr3 in &PML4S[..2] {
            for wp in [true, false] {
                mmu.begin_instruction();
                mmu.set_cr3(cr3 << 12);
                mmu.set_role(role(wp));
                for &gva in &addresses {
                    mmu.translate(gva, read).unwrap();
                }
            }
        }
    };
    run(&mut mmu);
    let warm = mmu.counters();
    for _ in 0..10 {
        run(&mut mmu);
    }
    let after = mmu.counters();
    assert_eq!(after.walks, warm.walks, "no walks once warm: {after:?}");
    assert_eq!(after.root_misses, warm.root_misses, "{after:?}");
    // The TLB is direct-mapped: a conflict between roots may send a lookup to the shadow
    // pages, but never to a walk.
    let hits = after.tlb_hits - warm.tlb_hits;
    assert!(
        hits >= 10 * 4 * 4 * 9 / 10,
        "nearly every translation hits the TLB: {after:?}"
    );
}

/// A machine whose PML4 maps 0-1 GiB through one PD whose entry 2 is a 2 MiB page at 4 MiB.
fn machine_with_large_page() -> (Arc<Memslots>, VcpuMmu) {
    let (memslots, mmu) = machine();
    memslots
        .write_u64(Gpa((6 << 12) + 16), (2 << 21) | 0xe7)
        .unwrap();
    (memslots, mmu)
}

/// Translates every 4 KiB page of the 2 MiB page at 4 MiB, checking each against a walk.
fn touch_large_page(memslots: &Memslots, mmu: &mut VcpuMmu) {
    let read = access(0, false);
    for page in 0..512u64 {
        let gva = Gva((2 << 21) + (page << 12));
        mmu.begin_instruction();
        let walk = mmu
            .walker()
            .clone()
            .walk(memslots, gva, read, WalkMode::Probe);
        assert_eq!(mmu.translate(gva, read).map(|m| m.gpa), walk.map(|t| t.gpa));
    }
}

#[test]
fn a_large_page_is_one_leaf_until_a_table_lands_inside_it() {
    let (memslots, mut mmu) = machine_with_large_page();
    touch_large_page(&memslots, &mut mmu);
    let stats = mmu.shadow().stats();
    assert_eq!(
        stats.sptes_installed, 1,
        "one large leaf maps all 512 pages: {stats:?}"
    );
    // The 4-level tree down to the large leaf: one PML4, one PDPT and one PD shadow page.
    assert_eq!(stats.pages_by_level, [0, 1, 1, 1, 0], "{stats:?}");
    assert_eq!(stats.pages_by_level.iter().sum::<u64>(), stats.pages_alive);
    assert_eq!(mmu.counters().walks, 1);

    // PD entry 3 now links a page table that lives inside the large page (frame 0x410).
    memslots
        .write_u64(Gpa(0x410 << 12), (200 << 12) | 0x67)
        .unwrap();
    let link = Gpa((6 << 12) + 24);
    memslots.write_u64(link, (0x410 << 12) | 0x67).unwrap();
    mmu.begin_instruction();
    mmu.translate(Gva(3 << 21), access(0, false)).unwrap();
    assert!(mmu.shadow().is_tracked(Gfn(0x410)));

    // The large leaf went with the tracking. The TLB dropped only the tracked frame's
    // translation (the others did not change); past it, the region faults in 4 KiB pieces.
    let walks = mmu.counters().walks;
    touch_large_page(&memslots, &mut mmu);
    assert_eq!(mmu.counters().walks - walks, 1, "the tracked frame's page");
    mmu.flush_tlb();
    let walks = mmu.counters().walks;
    touch_large_page(&memslots, &mut mmu);
    assert_eq!(mmu.counters().walks - walks, 511, "split on demand");
    // A store to the table inside the large page takes the slow path.
    let store = Gva((2 << 21) + (0x10 << 12));
    assert_eq!(mmu.translate(store, access(1, false)).unwrap().host, None);
}

#[test]
fn dirty_logging_splits_large_leaves_eagerly_lazily_or_not_at_all() {
    use umbra_mmu::shadow::SplitPolicy;
    for policy in [SplitPolicy::Eager, SplitPolicy::Lazy, SplitPolicy::Keep] {
        let (memslots, mut mmu) = machine_with_large_page();
        touch_large_page(&memslots, &mut mmu);
        // Dirty logging goes on for the slot, then its large leaves are split.
        memslots
            .set_flags(SlotId(0), MemslotFlags::LOG_DIRTY)
            .unwrap();
        let region = Gfn(0x400)..Gfn(0x600);
        mmu.shadow().split_large(region, policy);
        let walks = mmu.counters().walks;
        touch_large_page(&memslots, &mut mmu);
        let refaults = mmu.counters().walks - walks;
        match policy {
            SplitPolicy::Eager => assert_eq!(refaults, 0, "every 4 KiB entry was made up front"),
            SplitPolicy::Lazy => assert_eq!(refaults, 512, "each page faults back in"),
            SplitPolicy::Keep => assert_eq!(refaults, 0, "the large leaf still maps it all"),
        }
    }
}

#[test]
fn a_store_zapping_a_leaf_flushes_only_its_frames_translations() {
    let (memslots, mut mmu) = machine();
    let read = access(0, false);
    mmu.translate(Gva(0), read).unwrap();
    mmu.translate(Gva(0x1000), read).unwrap();
    let before = mmu.counters();
    // Page 0 now maps frame 200: its leaf is zapped, and only frame 100's entries go.
    memslots
        .write_u64(Gpa(8 << 12), (200 << 12) | 0x67)
        .unwrap();
    mmu.begin_instruction();
    let after = mmu.counters();
    assert_eq!(after.tlb_flushes, before.tlb_flushes);
    assert_eq!(after.tlb_frame_flushes, before.tlb_frame_flushes + 1);
    assert_eq!(
        mmu.translate(Gva(0x1000), read).unwrap().gpa,
        Gpa(101 << 12)
    );
    assert_eq!(mmu.counters().tlb_misses, after.tlb_misses, "page 1 stayed");
    assert_eq!(mmu.translate(Gva(0), read).unwrap().gpa, Gpa(200 << 12));
}

#[test]
fn a_store_zapping_a_table_link_flushes_only_the_frames_below_it() {
    let (memslots, mut mmu) = machine();
    let link = |frame: u64| (frame << 12) | 0x67;
    // 2 MiB up: a second page table, mapping frame 120; and a spare one mapping frame 130.
    memslots.write_u64(Gpa((6 << 12) + 8), link(10)).unwrap();
    memslots.write_u64(Gfn(10).gpa(), link(120)).unwrap();
    memslots.write_u64(Gfn(9).gpa(), link(130)).unwrap();
    let read = access(0, false);
    mmu.translate(Gva(0), read).unwrap();
    mmu.translate(Gva(0x1000), read).unwrap();
    mmu.translate(Gva(2 << 20), read).unwrap();
    let before = mmu.counters();
    // The first 2 MiB now go through the spare table: the link to the first one is zapped,
    // and only the translations to the frames it reached go.
    memslots.write_u64(Gfn(6).gpa(), link(9)).unwrap();
    mmu.begin_instruction();
    let after = mmu.counters();
    assert_eq!(after.tlb_flushes, before.tlb_flushes);
    assert_eq!(after.tlb_frame_flushes, before.tlb_frame_flushes + 1);
    assert_eq!(
        mmu.translate(Gva(2 << 20), read).unwrap().gpa,
        Gpa(120 << 12)
    );
    assert_eq!(
        mmu.counters().tlb_misses,
        after.tlb_misses,
        "the other table's page stayed"
    );
    assert_eq!(mmu.translate(Gva(0), read).unwrap().gpa, Gpa(130 << 12));
    assert!(
        mmu.translate(Gva(0x1000), read).is_err(),
        "not present in the spare table"
    );
}

/// The machine, with CR4.PGE = 1 and the first two PML4s' last entry leading to the same
/// tables as their first: page 0 of the upper half, global, maps frame 100, and page 1, not
/// global, frame 101. The address of the upper half's page 0.
fn machine_with_global_pages() -> (Arc<Memslots>, VcpuMmu, Gva) {
    let (memslots, mut mmu) = machine();
    for pml4 in &PML4S[..2] {
        memslots
            .write_u64(Gpa((pml4 << 12) + 511 * 8), (4 << 12) | 0x67)
            .unwrap();
    }
    const GLOBAL: u64 = 1 << 8;
    memslots
        .write_u64(Gfn(8).gpa(), (100 << 12) | 0x67 | GLOBAL)
        .unwrap();
    mmu.set_role(CpuRole::from_regs(
        CR0_PG | CR0_WP,
        CR4_PAE | CR4_PGE,
        EFER_LMA | EFER_NXE,
    ));
    (memslots, mmu, Gva(0xffff_ff80_0000_0000))
}

#[test]
fn a_global_translation_of_the_upper_half_outlives_a_cr3_switch() {
    let (_memslots, mut mmu, global) = machine_with_global_pages();
    let private = Gva(global.0 + 0x1000);
    let read = access(0, false);
    for gva in [global, private, Gva(0)] {
        mmu.translate(gva, read).unwrap();
    }
    mmu.set_cr3(PML4S[1] << 12);
    let misses = mmu.counters().tlb_misses;
    assert_eq!(mmu.translate(global, read).unwrap().gpa, Gpa(100 << 12));
    assert_eq!(mmu.counters().tlb_misses, misses, "the global page hit");
    for (gva, frame) in [(private, 101), (Gva(0), 100)] {
        assert_eq!(mmu.translate(gva, read).unwrap().gpa, Gfn(frame).gpa());
    }
    assert_eq!(
        mmu.counters().tlb_misses,
        misses + 2,
        "the page that is not global, and the lower half, are the root's"
    );
    // Back to the first root: its lower half is still cached, its upper page that is not
    // global went when the root changed.
    mmu.set_cr3(PML4S[0] << 12);
    let misses = mmu.counters().tlb_misses;
    mmu.translate(Gva(0), read).unwrap();
    mmu.translate(global, read).unwrap();
    assert_eq!(mmu.counters().tlb_misses, misses);
    mmu.translate(private, read).unwrap();
    assert_eq!(mmu.counters().tlb_misses, misses + 1);
}

#[test]
fn a_cr3_write_drops_the_upper_half_translations_that_are_not_global_even_to_the_same_root() {
    let (_memslots, mut mmu, global) = machine_with_global_pages();
    let private = Gva(global.0 + 0x1000);
    let read = access(0, false);
    mmu.translate(global, read).unwrap();
    mmu.translate(private, read).unwrap();
    let code = mmu.tlb_code_invalidations();
    mmu.set_cr3(mmu.walker().cr3());
    let misses = mmu.counters().tlb_misses;
    mmu.translate(global, read).unwrap();
    assert_eq!(mmu.counters().tlb_misses, misses, "the global page stays");
    mmu.translate(private, read).unwrap();
    assert_eq!(mmu.counters().tlb_misses, misses + 1, "the other one went");
    assert!(
        mmu.tlb_code_invalidations().upper > code.upper,
        "code found through it must be looked up again"
    );
}

#[test]
fn invlpg_and_a_change_of_cr4_pge_drop_global_translations() {
    let (_memslots, mut mmu, global) = machine_with_global_pages();
    let read = access(0, false);
    mmu.translate(global, read).unwrap();
    mmu.set_cr3(PML4S[1] << 12);
    mmu.invlpg(global);
    let misses = mmu.counters().tlb_misses;
    mmu.translate(global, read).unwrap();
    assert_eq!(mmu.counters().tlb_misses, misses + 1, "INVLPG dropped it");
    let role = mmu.walker().role();
    mmu.set_role(CpuRole::from_regs(
        CR0_PG | CR0_WP,
        CR4_PAE,
        EFER_LMA | EFER_NXE,
    ));
    mmu.set_role(role);
    mmu.translate(global, read).unwrap();
    assert_eq!(
        mmu.counters().tlb_misses,
        misses + 2,
        "the CR4.PGE toggle did"
    );
    mmu.drop_global();
    mmu.translate(global, read).unwrap();
    assert_eq!(
        mmu.counters().tlb_misses,
        misses + 3,
        "as clearing CR4.PCIDE does"
    );
    mmu.translate(global, read).unwrap();
    assert_eq!(mmu.counters().tlb_misses, misses + 3);
}

#[test]
fn a_page_table_flooded_by_stores_is_zapped_and_untracked() {
    let (memslots, mut mmu) = machine();
    let read = access(0, false);
    mmu.translate(Gva(0), read).unwrap();
    // The PT at frame 8 is tracked. The guest now reuses it as data: stores with no
    // translation through it in between.
    assert!(mmu.shadow().is_tracked(Gfn(8)));
    for n in 0..8u64 {
        let gpa = Gpa((8 << 12) + 0x800 + 8 * n);
        memslots.write_u64(gpa, n).unwrap();
    }
    assert!(
        !mmu.shadow().is_tracked(Gfn(8)),
        "flooded, zapped, untracked"
    );
    assert_eq!(mmu.shadow().stats().flooded, 1);
    // Translations through it are still right: they fault the page back in.
    mmu.begin_instruction();
    let walk = mmu
        .walker()
        .clone()
        .walk(&*memslots, Gva(0x1000), read, WalkMode::Probe);
    assert_eq!(
        mmu.translate(Gva(0x1000), read).map(|m| m.gpa),
        walk.map(|t| t.gpa)
    );
    assert!(mmu.shadow().is_tracked(Gfn(8)));
}

#[test]
fn counters_are_per_vcpu_and_summed_on_read() {
    let (memslots, mut first) = machine();
    let mut second = VcpuMmu::new(first.walker().clone(), first.shadow().clone(), memslots);
    let read = access(0, false);
    first.translate(Gva(0), read).unwrap();
    first.translate(Gva(0), read).unwrap();
    second.translate(Gva(0x1000), read).unwrap();
    assert_eq!(first.counters().tlb_hits, 1);
    assert_eq!(second.counters().tlb_hits, 0);
    let total = first.shadow().vcpu_totals();
    assert_eq!(total.walks, 2);
    assert_eq!(total.tlb_misses, 2);
    assert_eq!(total.tlb_fills, 2);
    // A fault is counted by its kind: entry 4 of the PT is not present.
    assert!(second.translate(Gva(0x4000), read).is_err());
    assert_eq!(first.shadow().vcpu_totals().faults_not_present, 1);
}

#[test]
fn zap_all_makes_every_root_obsolete_at_once() {
    let (_memslots, mut mmu) = machine();
    let read = access(0, false);
    for page in 0..4 {
        mmu.translate(Gva(page << 12), read).unwrap();
    }
    let walks = mmu.counters().walks;
    mmu.shadow().zap_all();
    mmu.begin_instruction();
    for page in 0..4 {
        mmu.translate(Gva(page << 12), read).unwrap();
    }
    assert_eq!(
        mmu.counters().walks - walks,
        4,
        "every translation walks again"
    );
    // The root was emptied once, at its first fault, and is current again.
    mmu.begin_instruction();
    mmu.translate(Gva(0), read).unwrap();
    assert_eq!(mmu.counters().walks - walks, 4);
}

#[test]
fn with_caching_off_every_translation_is_a_walk() {
    let (memslots, mut mmu) = machine();
    mmu.set_caching(false);
    let read = access(0, false);
    for _ in 0..3 {
        for page in 0..6u64 {
            let gva = Gva(page << 12);
            let walk = mmu
                .walker()
                .clone()
                .walk(&*memslots, gva, read, WalkMode::Probe);
            assert_eq!(mmu.translate(gva, read).map(|m| m.gpa), walk.map(|t| t.gpa));
        }
    }
    let counters = mmu.counters();
    assert_eq!(counters.walks, 18);
    assert_eq!(counters.tlb_hits + counters.shadow_hits, 0);
}
