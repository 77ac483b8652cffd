//! Random page-table trees and random accesses: the walker never panics, probes never write,
//! and a probe and a real walk agree.

use proptest::prelude::*;
use umbra_mmu::addr::Gva;
use umbra_mmu::paging::PagingMode;
use umbra_mmu::role::{
    CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CR4_PGE, CR4_PKE, CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_LMA,
    EFER_NXE,
};
use umbra_mmu::walker::{
    Access, AccessKind, PageFault, Privilege, WalkMode, Walker, pae_pdpte_reserved,
};

use crate::support::*;

const PAGES: u64 = 32;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `PAGES` pages of `entry_size`-byte entries that mostly are present and point back into the
/// same RAM, with random flags, now and then PS (with the large-page reserved bits clear), and
/// rarely random high bits.
fn random_tables(seed: u64, entry_size: u64) -> TestMemory {
    let mem = TestMemory::new((PAGES * 0x1000) as usize);
    let mut state = seed;
    for slot in 0..PAGES * 0x1000 / entry_size {
        let r = splitmix64(&mut state);
        let mut entry = (r % PAGES) << 12 | (r >> 8) & 0x17f;
        if r >> 60 != 0 {
            entry |= P;
        }
        if (r >> 20) & 7 == 0 {
            entry = entry & !0x3fff_e000 | PS;
        }
        if (r >> 52) & 15 == 0 {
            entry |= splitmix64(&mut state) & !0xfff;
        }
        mem.write(slot * entry_size, entry_size as usize, entry);
    }
    mem
}

fn regs_strategy() -> impl Strategy<Value = (u64, u64, u64)> {
    let cr4_bits = [
        CR4_PSE, CR4_PAE, CR4_PGE, CR4_LA57, CR4_SMEP, CR4_SMAP, CR4_PKE,
    ];
    (
        prop::bool::weighted(0.9),
        any::<bool>(),
        any::<u8>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(pg, wp, cr4_mask, lma, nxe)| {
            let cr0 = if pg { CR0_PG } else { 0 } | if wp { CR0_WP } else { 0 };
            let cr4 = cr4_bits
                .iter()
                .enumerate()
                .filter(|(i, _)| cr4_mask >> i & 1 != 0)
                .fold(0, |acc, (_, b)| acc | b);
            // IA-32e mode needs paging and PAE, as the processor enforces.
            let lma = lma && pg && cr4 & CR4_PAE != 0;
            let efer = if lma { EFER_LMA } else { 0 } | if nxe { EFER_NXE } else { 0 };
            (cr0, cr4, efer)
        })
}

fn access_strategy() -> impl Strategy<Value = Access> {
    let kind = prop_oneof![
        Just(AccessKind::Read),
        Just(AccessKind::Write),
        Just(AccessKind::Fetch)
    ];
    let privilege = prop_oneof![
        Just(Privilege::User),
        Just(Privilege::Supervisor),
        Just(Privilege::ImplicitSupervisor)
    ];
    (kind, privilege, any::<bool>())
        .prop_map(|(kind, privilege, ac)| Access::new(kind, privilege).with_eflags_ac(ac))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_walks_are_well_behaved(
        seed in any::<u64>(),
        (cr0, cr4, efer) in regs_strategy(),
        maxphyaddr in 32u8..=52,
        gbpages in any::<bool>(),
        cr3 in 0..PAGES * 0x1000,
        gva in any::<u64>(),
        access in access_strategy(),
        pkru in any::<u32>(),
        clean_pdpt in prop::bool::weighted(0.8),
    ) {
        let mut walker = Walker::new(maxphyaddr, gbpages).unwrap();
        walker.set_role(umbra_mmu::role::CpuRole::from_regs(cr0, cr4, efer));
        let mem = random_tables(seed, walker.role().paging_mode().entry_size());
        walker.set_cr3(cr3);
        walker.set_pkru(pkru);
        let mode = walker.role().paging_mode();
        if mode == PagingMode::Pae {
            if clean_pdpt {
                for index in 0..4 {
                    let gpa = (cr3 & 0xffff_ffe0) + 8 * index;
                    mem.write_u64(gpa, mem.read_u64_raw(gpa) & !pae_pdpte_reserved(maxphyaddr));
                }
            }
            match walker.load_pdptrs(cr3, &mem) {
                Ok(pdptrs) => walker.set_pdptrs(pdptrs),
                Err(_) => return Ok(()),
            }
        }

        let before = mem.snapshot();
        let probed = walker.walk(&mem, Gva(gva), access, WalkMode::Probe);
        let trace = walker.walk_trace(&mem, Gva(gva), access, WalkMode::Probe);
        prop_assert!(mem.snapshot() == before, "a probe wrote guest memory");
        prop_assert_eq!(trace.result, probed);
        prop_assert!(trace.entries.len() <= usize::from(mode.root_level()));

        let updated = walker.walk(&mem, Gva(gva), access, WalkMode::Update);
        match (probed, updated) {
            (Ok(p), Ok(u)) => {
                prop_assert_eq!((p.gpa, p.page_size, p.level, p.access, p.pkey), (u.gpa, u.page_size, u.level, u.access, u.pkey));
                prop_assert!(u.gpa.0 >> maxphyaddr == 0 || mode == PagingMode::None);
                for entry in trace.entries.iter().filter(|e| e.level <= u.top_level) {
                    let width = mode.entry_size() as usize;
                    let now = mem.read(entry.gpa.0, width).unwrap();
                    prop_assert_eq!(now & A, A, "level {} lost its accessed flag", entry.level);
                    // An entry the walk met again lower down (a table that maps itself) may
                    // have had its dirty flag set there, after the walk read it.
                    let again = trace
                        .entries
                        .iter()
                        .any(|other| other.gpa == entry.gpa && other.level < entry.level);
                    let seen = u.entries[usize::from(entry.level) - 1];
                    if again {
                        prop_assert_eq!(now & !D, seen & !D);
                    } else {
                        prop_assert_eq!(now, seen);
                    }
                }
                let writes = mem.writes.get();
                let again = walker.walk(&mem, Gva(gva), access, WalkMode::Update);
                let aliased = trace.entries.iter().enumerate().any(|(n, entry)| {
                    trace.entries[..n].iter().any(|other| other.gpa == entry.gpa)
                });
                if aliased {
                    // The entries read may show the flags the first walk set lower down.
                    let again = again.map(|t| (t.gpa, t.page_size, t.level, t.access, t.pkey));
                    prop_assert_eq!(again, Ok((u.gpa, u.page_size, u.level, u.access, u.pkey)));
                } else {
                    prop_assert_eq!(again, Ok(u));
                }
                prop_assert_eq!(mem.writes.get(), writes, "a second walk found flags to set");
            }
            (Err(p), Err(u)) => {
                prop_assert_eq!(p, u);
                prop_assert!(mem.snapshot() == before, "a faulting walk wrote guest memory");
                let code = u.error_code;
                prop_assert_eq!(code & !0x3f, 0);
                if code & PageFault::PRESENT == 0 {
                    prop_assert_eq!(code & (PageFault::RSVD | PageFault::PK), 0);
                }
                prop_assert!(code & PageFault::RSVD == 0 || code & PageFault::PK == 0);
                prop_assert_eq!(code & PageFault::USER != 0, access.privilege == Privilege::User);
                prop_assert_eq!(code & PageFault::WRITE != 0, access.kind == AccessKind::Write);
            }
            (p, u) => prop_assert!(false, "probe {:?} but walk {:?}", p, u),
        }
    }
}
