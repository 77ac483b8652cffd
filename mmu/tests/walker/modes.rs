//! Translations in every paging mode, A/D flags, traces, and walks that leave RAM.

use std::cell::Cell;

use umbra_mmu::addr::{Gfn, Gpa, Gva};
use umbra_mmu::paging::{PageSize, PagingMode};
use umbra_mmu::role::{CR4_PGE, CR4_PKE, CR4_PSE, CpuRole};
use umbra_mmu::walker::{
    LevelEntry, PageFault, PageTableMemory, Privilege, PteAccess, WalkMode, Walker, WalkerError,
};

use crate::support::*;

const SUP: Privilege = Privilege::Supervisor;
const USER: Privilege = Privilege::User;

fn gfn_of(entry_gpa: u64) -> Gfn {
    Gpa(entry_gpa).gfn()
}

#[test]
fn paging_off_is_identity_on_32_bit_linear_addresses() {
    let mem = TestMemory::new(RAM);
    let walker = Walker::new(36, true).unwrap();
    let t = walker
        .walk(&mem, Gva(0x1_2345_6789), write(USER), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0x2345_6789));
    assert_eq!((t.level, t.top_level), (0, 0));
    assert_eq!(t.access, PteAccess::ALL);
    assert_eq!(t.leaf_pte(), 0);
    assert!(t.visited_tables().is_empty());
    assert_eq!(mem.writes.get(), 0);
}

#[test]
fn maxphyaddr_must_be_one_a_processor_reports() {
    assert_eq!(
        Walker::new(31, true).unwrap_err(),
        WalkerError::MaxPhyAddr(31)
    );
    assert_eq!(
        Walker::new(53, false).unwrap_err(),
        WalkerError::MaxPhyAddr(53)
    );
    assert!(Walker::new(52, false).is_ok());
}

#[test]
fn four_level_4k_page() {
    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P | W, P | W);
    let t = walker
        .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0x0abc_dabc));
    assert_eq!(t.page_size, PageSize::Size4K);
    assert_eq!((t.level, t.top_level), (1, 4));
    assert!(t.access.writable() && t.access.executable() && !t.access.user());
    assert!(!t.global);
    assert_eq!(
        t.visited_tables(),
        &[gfn_of(e[1]), gfn_of(e[2]), gfn_of(e[3]), gfn_of(e[4])]
    );
    assert_eq!(t.table_gfns[3], Gfn(walker.cr3() >> 12));
    assert_eq!(t.leaf_pte(), 0x0abc_d000 | P | W | A);
    for (entry, &gpa) in t.entries.iter().zip(&e[1..=4]) {
        assert_eq!(*entry, guest.mem.read_u64_raw(gpa));
    }
}

#[test]
fn accessed_on_every_level_dirty_only_on_the_leaf_of_a_write() {
    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P | W, P | W);
    walker
        .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Update)
        .unwrap();
    for &gpa in &e[1..=4] {
        assert_eq!(
            guest.mem.read_u64_raw(gpa) & (A | D),
            A,
            "entry at {gpa:#x}"
        );
    }
    let t = walker
        .walk(&guest.mem, Gva(GVA), write(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(guest.mem.read_u64_raw(e[1]) & (A | D), A | D);
    for &gpa in &e[2..=4] {
        assert_eq!(
            guest.mem.read_u64_raw(gpa) & (A | D),
            A,
            "entry at {gpa:#x}"
        );
    }
    assert_eq!(t.leaf_pte() & D, D);
    // Everything already set: a walk writes nothing.
    let writes = guest.mem.writes.get();
    walker
        .walk(&guest.mem, Gva(GVA), write(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(guest.mem.writes.get(), writes);
}

#[test]
fn dirty_goes_on_the_large_page_entry() {
    let (guest, walker, e) = long_guest(LONG4, 2, 0x4060_0000 | PS | P | W, P | W);
    walker
        .walk(&guest.mem, Gva(GVA), write(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(guest.mem.read_u64_raw(e[2]) & (A | D), A | D);
    assert_eq!(guest.mem.read_u64_raw(e[3]) & (A | D), A);
}

#[test]
fn no_flag_is_set_when_the_access_faults() {
    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P, P | W | U);
    let before = guest.mem.snapshot();
    let fault = walker
        .walk(&guest.mem, Gva(GVA), write(USER), WalkMode::Update)
        .unwrap_err();
    assert_eq!(
        fault.error_code,
        PageFault::PRESENT | PageFault::WRITE | PageFault::USER
    );
    assert_eq!(guest.mem.snapshot(), before);
    assert_eq!(guest.mem.read_u64_raw(e[4]) & A, 0);
}

#[test]
fn four_level_2m_and_1g_pages() {
    let (guest, walker, _) = long_guest(LONG4, 2, 0x4060_0000 | PS | P | W, P | W);
    let t = walker
        .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0x4060_0000 | (GVA & 0x1f_ffff)));
    assert_eq!((t.page_size, t.level), (PageSize::Size2M, 2));
    assert_eq!(t.visited_tables().len(), 3);

    let (guest, walker, _) = long_guest(LONG4, 3, 0x8_4000_0000 | PS | P | W, P | W);
    let t = walker
        .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0x8_4000_0000 | (GVA & 0x3fff_ffff)));
    assert_eq!((t.page_size, t.level), (PageSize::Size1G, 3));
}

#[test]
fn large_page_pat_bit_is_not_address() {
    // Bit 12 of a large-page entry is PAT; the address starts at bit 21 (or 30).
    let (guest, walker, _) = long_guest(LONG4, 2, 0x4060_0000 | 1 << 12 | PS | P, P);
    let t = walker
        .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0x4060_0000 | (GVA & 0x1f_ffff)));
}

#[test]
fn five_level_uses_bits_56_to_48() {
    let gva = 0x00ab_cdef_1234_5678;
    let guest = Guest::new();
    let cr3 = guest.alloc_table();
    let walker = walker(LONG5, cr3);
    assert_eq!(walker.role().paging_mode(), PagingMode::Level5);
    let e = guest.map(PagingMode::Level5, cr3, gva, 1, 0x0123_4000 | P, P | W);
    assert_eq!(e[5], cr3 + 8 * 0xab);
    let t = walker
        .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0x0123_4678));
    assert_eq!((t.level, t.top_level), (1, 5));
    assert_eq!(guest.mem.read_u64_raw(e[5]) & A, A);

    guest.map(
        PagingMode::Level5,
        cr3,
        0xff00_4000_0000_0000,
        3,
        0x4000_0000 | PS | P,
        P,
    );
    let t = walker.walk(
        &guest.mem,
        Gva(0xff00_4000_0123_4567),
        read(SUP),
        WalkMode::Update,
    );
    assert_eq!(t.unwrap().gpa, Gpa(0x4123_4567));
}

#[test]
fn pae_4k_and_2m_pages() {
    let gva = 0xc123_4567;
    let (guest, walker, e) = pae_guest(PAE, gva, 1, 0x0abc_d000 | P | W | U, P | W | U);
    let t = walker
        .walk(&guest.mem, Gva(gva), write(USER), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0x0abc_d567));
    assert_eq!((t.level, t.top_level), (1, 2));
    assert_eq!(t.visited_tables(), &[gfn_of(e[1]), gfn_of(e[2])]);
    assert_eq!(e[3], walker.cr3() + 8 * 3);
    // PDPTEs are registers: no A flag there, nothing written to the PDPT.
    assert_eq!(guest.mem.read_u64_raw(e[3]) & A, 0);
    assert_eq!(guest.mem.read_u64_raw(e[2]) & (A | D), A);
    assert_eq!(guest.mem.read_u64_raw(e[1]) & (A | D), A | D);

    let (guest, walker, _) = pae_guest(PAE, gva, 2, 0x1_0020_0000 | PS | P, P);
    let t = walker
        .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0x1_0020_0000 | (gva & 0x1f_ffff)));
    assert_eq!(t.page_size, PageSize::Size2M);
}

#[test]
fn pae_walks_use_the_pdpte_registers_not_memory() {
    let gva = 0x4000_1000;
    let (guest, mut walker, e) = pae_guest(PAE, gva, 1, 0x0abc_d000 | P, P);
    guest.mem.write_u64(e[3], 0);
    assert!(
        walker
            .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe)
            .is_ok()
    );
    walker.set_pdptrs(walker.load_pdptrs(walker.cr3(), &guest.mem).unwrap());
    let fault = walker
        .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe)
        .unwrap_err();
    assert_eq!(
        fault,
        PageFault {
            error_code: 0,
            address: Gva(gva)
        }
    );
}

#[test]
fn pdpt_is_32_byte_aligned_not_page_aligned() {
    let guest = Guest::new();
    let page = guest.alloc_table();
    let cr3 = page + 0x40;
    let walker = walker(PAE, cr3);
    let pd = guest.alloc_table();
    guest.mem.write_u64(cr3 + 8, pd | P);
    let pdptrs = walker.load_pdptrs(cr3 | 0x18, &guest.mem).unwrap();
    assert_eq!(pdptrs, [0, pd | P, 0, 0]);
}

#[test]
fn bits32_4k_page_with_4_byte_entries() {
    let gva = 0xc040_3abc;
    let (guest, walker, e) = bits32_guest(BITS32, gva, 1, 0xfedc_b000 | P | W, P | W);
    assert_eq!(e[2], walker.cr3() + 4 * 0x301);
    let t = walker
        .walk(&guest.mem, Gva(gva), write(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0xfedc_babc));
    assert_eq!(
        (t.level, t.top_level, t.page_size),
        (1, 2, PageSize::Size4K)
    );
    // 32-bit paging has no XD bit: everything is executable.
    assert!(t.access.executable());
    assert_eq!(
        guest.mem.read(e[1], 4).unwrap(),
        0xfedc_b000 | P | W | A | D
    );
    assert_eq!(guest.mem.read(e[2], 4).unwrap() & (A | D), A);
    // The neighbouring entries are untouched by the 4-byte compare-exchange.
    assert_eq!(guest.mem.read(e[1] + 4, 4).unwrap(), 0);
    assert_eq!(guest.mem.read(e[2] + 4, 4).unwrap(), 0);
}

#[test]
fn bits32_ignores_linear_bits_above_31() {
    let (guest, walker, _) = bits32_guest(BITS32, 0x0040_3000, 1, 0x0012_3000 | P, P);
    let t = walker.walk(
        &guest.mem,
        Gva(0xffff_ffff_0040_3001),
        read(SUP),
        WalkMode::Probe,
    );
    assert_eq!(t.unwrap().gpa, Gpa(0x0012_3001));
}

#[test]
fn bits32_ps_is_ignored_without_cr4_pse() {
    let gva = 0x0080_5123;
    let guest = Guest::new();
    let cr3 = guest.alloc_table();
    let pt = guest.alloc_table();
    guest.mem.write(cr3 + 4 * 2, 4, pt | PS | P);
    guest.mem.write(pt + 4 * 5, 4, 0x0055_5000 | P);
    let mut walker = walker(BITS32, cr3);
    let t = walker
        .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe)
        .unwrap();
    assert_eq!((t.gpa, t.level), (Gpa(0x0055_5123), 1));

    walker.set_role(BITS32.with(0, CR4_PSE, 0).role());
    guest.mem.write(cr3 + 4 * 2, 4, 0x0040_0000 | PS | P);
    let t = walker
        .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe)
        .unwrap();
    assert_eq!(
        (t.gpa, t.level, t.page_size),
        (Gpa(0x0040_0000 | (gva & 0x3f_ffff)), 2, PageSize::Size4M)
    );
}

#[test]
fn pse36_takes_physical_bits_39_to_32_from_pde_bits_20_to_13() {
    let gva = 0xffc1_2345;
    let pde = 0xffc0_0000 | 0x0f << 13 | PS | P | W;
    let (guest, walker, e) = bits32_guest(BITS32.with(0, CR4_PSE, 0), gva, 2, pde, 0);
    let t = walker
        .walk(&guest.mem, Gva(gva), write(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0xf_ffc1_2345));
    assert_eq!(guest.mem.read(e[2], 4).unwrap(), pde | A | D);

    // MAXPHYADDR 40: all of bits 20:13 are address.
    let mut wide = walker_with(40, true, BITS32.with(0, CR4_PSE, 0), walker.cr3());
    guest.mem.write(e[2], 4, 0xffc0_0000 | 0xff << 13 | PS | P);
    let t = wide
        .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0xff_ffc1_2345));
    // Paging-mode changes keep the CPUID facts.
    wide.set_role(LONG4.role());
    assert_eq!((wide.maxphyaddr(), wide.gbpages()), (40, true));
}

#[test]
fn global_needs_g_in_the_leaf_and_cr4_pge() {
    let (guest, mut walker, _) = long_guest(LONG4, 1, 0x0abc_d000 | G | P, P);
    assert!(
        !walker
            .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe)
            .unwrap()
            .global
    );
    walker.set_role(LONG4.with(0, CR4_PGE, 0).role());
    assert!(
        walker
            .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe)
            .unwrap()
            .global
    );
    let (guest, walker, _) = long_guest(LONG4.with(0, CR4_PGE, 0), 1, 0x0abc_d000 | P, G | P);
    assert!(
        !walker
            .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe)
            .unwrap()
            .global
    );
}

#[test]
fn the_protection_key_comes_from_leaf_bits_62_to_59() {
    let leaf = 0x0abc_d000 | 0xb << 59 | P;
    let (guest, walker, _) = long_guest(LONG4.with(0, CR4_PKE, 0), 1, leaf, P);
    assert_eq!(
        walker
            .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe)
            .unwrap()
            .pkey,
        0xb
    );
    let (guest, walker, _) = long_guest(LONG4, 1, leaf, P);
    assert_eq!(
        walker
            .walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe)
            .unwrap()
            .pkey,
        0
    );
}

#[test]
fn not_present_at_each_level() {
    for mode in [LONG4, LONG5] {
        let top = mode.role().paging_mode().root_level();
        for level in 1..=top {
            let (guest, walker, e) = long_guest(mode, 1, 0x0abc_d000 | P | W | U, P | W | U);
            let entry = guest.mem.read_u64_raw(e[usize::from(level)]);
            guest.mem.write_u64(e[usize::from(level)], entry & !P);
            let cases = [
                (read(SUP), 0),
                (write(USER), PageFault::WRITE | PageFault::USER),
                (fetch(USER), PageFault::USER | PageFault::FETCH),
                (read(Privilege::ImplicitSupervisor).with_eflags_ac(true), 0),
            ];
            for (access, code) in cases {
                let fault = walker.walk(&guest.mem, Gva(GVA), access, WalkMode::Update);
                assert_eq!(
                    fault,
                    Err(PageFault {
                        error_code: code,
                        address: Gva(GVA)
                    })
                );
            }
            assert_eq!(guest.mem.writes.get(), 0);
        }
    }
    for level in 1..=3 {
        let gva = 0x8123_4567;
        let (guest, walker, e) = pae_guest(PAE, gva, 1, 0x0abc_d000 | P, P);
        let mut pdptrs = walker.pdptrs();
        if level == 3 {
            pdptrs[2] &= !P;
        } else {
            guest
                .mem
                .write_u64(e[level], guest.mem.read_u64_raw(e[level]) & !P);
        }
        let mut walker = walker;
        walker.set_pdptrs(pdptrs);
        let fault = walker
            .walk(&guest.mem, Gva(gva), write(SUP), WalkMode::Update)
            .unwrap_err();
        assert_eq!(fault.error_code, PageFault::WRITE, "PAE level {level}");
    }
    for level in 1..=2 {
        let gva = 0x8123_4567;
        let (guest, walker, e) = bits32_guest(BITS32, gva, 1, 0x0abc_d000 | P, P);
        guest
            .mem
            .write(e[level], 4, guest.mem.read(e[level], 4).unwrap() & !P);
        let fault = walker
            .walk(&guest.mem, Gva(gva), read(USER), WalkMode::Update)
            .unwrap_err();
        assert_eq!(fault.error_code, PageFault::USER, "32-bit level {level}");
    }
}

#[test]
fn a_table_outside_ram_reads_as_not_present() {
    // KVM's walker takes its not-present error path when a table gfn has no memslot.
    let guest = Guest::new();
    let walker = walker(LONG4, 0x4000_0000);
    let fault = walker
        .walk(&guest.mem, Gva(GVA), write(SUP), WalkMode::Update)
        .unwrap_err();
    assert_eq!(fault.error_code, PageFault::WRITE);

    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P, P);
    guest.mem.write_u64(e[2], 0x7000_0000 | P);
    let trace = walker.walk_trace(&guest.mem, Gva(GVA), read(SUP), WalkMode::Update);
    assert_eq!(trace.result.unwrap_err().error_code, 0);
    assert_eq!(trace.entries.len(), 3);
}

#[test]
fn flags_in_read_only_tables_are_left_alone() {
    let guest = Guest::with_memory(TestMemory::with_rom(RAM, 0x10_0000..0x10_2000));
    let cr3 = guest.alloc_table();
    let e = guest.map(PagingMode::Level4, cr3, GVA, 1, 0x0abc_d000 | P | W, P | W);
    let walker = walker(LONG4, cr3);
    let t = walker
        .walk(&guest.mem, Gva(GVA), write(SUP), WalkMode::Update)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0x0abc_dabc));
    // The PML4 (0x10_0000) and PDPT (0x10_1000) are ROM; the PD and PT are RAM.
    assert_eq!(guest.mem.read_u64_raw(e[4]) & A, 0);
    assert_eq!(guest.mem.read_u64_raw(e[3]) & A, 0);
    assert_eq!(guest.mem.read_u64_raw(e[2]) & A, A);
    assert_eq!(guest.mem.read_u64_raw(e[1]) & (A | D), A | D);
    assert_eq!(t.entries[3] & A, 0);
}

/// Memory where another vCPU rewrites one entry just before the walker's first
/// compare-exchange on it.
struct Racing<'a> {
    mem: &'a TestMemory,
    victim: u64,
    replacement: u64,
    raced: Cell<bool>,
}

impl PageTableMemory for Racing<'_> {
    fn read_u32(&self, gpa: Gpa) -> Option<u32> {
        self.mem.read_u32(gpa)
    }
    fn read_u64(&self, gpa: Gpa) -> Option<u64> {
        self.mem.read_u64(gpa)
    }
    fn cmpxchg_u32(&self, gpa: Gpa, old: u32, new: u32) -> Option<bool> {
        self.mem.cmpxchg_u32(gpa, old, new)
    }
    fn cmpxchg_u64(&self, gpa: Gpa, old: u64, new: u64) -> Option<bool> {
        if gpa.0 == self.victim && !self.raced.replace(true) {
            self.mem.write_u64(gpa.0, self.replacement);
        }
        self.mem.cmpxchg_u64(gpa, old, new)
    }
}

#[test]
fn a_changed_entry_restarts_the_walk() {
    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P | W, P | W);
    let other = guest.alloc_table();
    guest
        .mem
        .write_u64(other + 8 * ((GVA >> 12) & 0x1ff), 0x0def_0000 | P | W);
    let racing = Racing {
        mem: &guest.mem,
        victim: e[2],
        replacement: other | P | W,
        raced: Cell::new(false),
    };
    let trace = walker.walk_trace(&racing, Gva(GVA), write(SUP), WalkMode::Update);
    let t = trace.result.unwrap();
    assert_eq!(t.gpa, Gpa(0x0def_0abc));
    assert_eq!(guest.mem.read_u64_raw(e[2]), other | P | W | A);
    assert_eq!(
        guest.mem.read_u64_raw(e[1]) & A,
        0,
        "the old PTE was not used"
    );
    // The trace shows the pass that completed.
    assert_eq!(trace.entries.len(), 4);
    assert_eq!(trace.entries[2].value, other | P | W);

    // A racing write that unmaps the page turns the access into a fault.
    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P | W, P | W);
    let racing = Racing {
        mem: &guest.mem,
        victim: e[1],
        replacement: 0,
        raced: Cell::new(false),
    };
    let fault = walker
        .walk(&racing, Gva(GVA), write(SUP), WalkMode::Update)
        .unwrap_err();
    assert_eq!(fault.error_code, PageFault::WRITE);
}

#[test]
fn probe_reports_the_same_outcome_and_writes_nothing() {
    let (guest, walker, _) = long_guest(LONG4, 1, 0x0abc_d000 | P | W | U, P | W | U);
    let before = guest.mem.snapshot();
    for access in [
        read(SUP),
        write(USER),
        fetch(USER),
        write(Privilege::ImplicitSupervisor),
    ] {
        let probed = walker.walk(&guest.mem, Gva(GVA), access, WalkMode::Probe);
        assert_eq!(guest.mem.snapshot(), before);
        assert_eq!(probed.unwrap().entries[0] & A, 0);
    }
    let probed = walker
        .walk(&guest.mem, Gva(GVA), write(USER), WalkMode::Probe)
        .unwrap();
    let updated = walker
        .walk(&guest.mem, Gva(GVA), write(USER), WalkMode::Update)
        .unwrap();
    assert_eq!(
        (probed.gpa, probed.access, probed.level),
        (updated.gpa, updated.access, updated.level)
    );
    assert_ne!(guest.mem.snapshot(), before);
}

#[test]
fn trace_lists_each_level_top_down() {
    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P, P | W);
    let trace = walker.walk_trace(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe);
    let expected: Vec<LevelEntry> = (1..=4u8)
        .rev()
        .map(|level| LevelEntry {
            level,
            gpa: Gpa(e[usize::from(level)]),
            value: guest.mem.read_u64_raw(e[usize::from(level)]),
        })
        .collect();
    assert_eq!(trace.entries, expected);
    assert_eq!(
        trace.result,
        walker.walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe)
    );

    // A fault stops the trace where the walk stopped.
    guest.mem.write_u64(e[2], 0);
    let trace = walker.walk_trace(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe);
    assert_eq!(
        trace
            .entries
            .iter()
            .map(|entry| entry.level)
            .collect::<Vec<_>>(),
        [4, 3, 2]
    );
    assert!(trace.result.is_err());

    // In PAE paging the first entry is the PDPTE register, at the address it was loaded from.
    let gva = 0x4000_0000;
    let (guest, walker, e) = pae_guest(PAE, gva, 2, 0x0020_0000 | PS | P, P);
    let trace = walker.walk_trace(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe);
    assert_eq!(
        trace.entries[0],
        LevelEntry {
            level: 3,
            gpa: Gpa(e[3]),
            value: walker.pdptrs()[1]
        }
    );
    assert_eq!(trace.entries.len(), 2);
}

#[test]
fn set_role_rebuilds_tables_only_on_change() {
    let (guest, mut walker, _) = long_guest(LONG4, 1, 0x0abc_d000 | P, P);
    let tables = (*walker.permissions(), *walker.reserved_bits());
    walker.set_role(LONG4.role());
    assert_eq!((*walker.permissions(), *walker.reserved_bits()), tables);
    assert!(
        walker
            .walk(&guest.mem, Gva(GVA), write(SUP), WalkMode::Probe)
            .is_err()
    );
    walker.set_role(LONG4.without(umbra_mmu::role::CR0_WP, 0, 0).role());
    assert_ne!(*walker.permissions(), tables.0);
    assert!(
        walker
            .walk(&guest.mem, Gva(GVA), write(SUP), WalkMode::Probe)
            .is_ok()
    );
    walker.set_role(CpuRole::default());
    let t = walker
        .walk(&guest.mem, Gva(GVA), write(SUP), WalkMode::Probe)
        .unwrap();
    assert_eq!(t.gpa, Gpa(GVA & 0xffff_ffff));
}

#[test]
fn page_fault_displays_code_and_address() {
    let fault = PageFault {
        error_code: 0x7,
        address: Gva(0xdead_b000),
    };
    assert_eq!(fault.to_string(), "#PF(0x7) at 0xdeadb000");
}
