//! Reserved bits at every level of every paging mode (P | RSVD faults), and the PAE PDPTE
//! registers' reserved bits (#GP on load).

use umbra_mmu::addr::{Gpa, Gva};
use umbra_mmu::role::{CR4_PSE, EFER_NXE};
use umbra_mmu::walker::{PageFault, Privilege, WalkMode, Walker, WalkerError, pae_pdpte_reserved};

use crate::support::*;

const SUP: Privilege = Privilege::Supervisor;
const USER: Privilege = Privilege::User;
const RSVD: u32 = PageFault::PRESENT | PageFault::RSVD;

/// Sets `bit` in the entry at `level` of a fresh 4-level (or 5-level) guest whose leaf is at
/// `leaf_level`, then walks with a supervisor read: the error code, or 0 if it translates.
fn long_with_bit(regs: Regs, leaf_level: u8, leaf: u64, level: usize, bit: u32) -> u32 {
    let (guest, walker, e) = long_guest(regs, leaf_level, leaf, P | W);
    guest
        .mem
        .write_u64(e[level], guest.mem.read_u64_raw(e[level]) | 1 << bit);
    let before = guest.mem.snapshot();
    match walker.walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Update) {
        Ok(_) => 0,
        Err(fault) => {
            assert_eq!(guest.mem.snapshot(), before, "a faulting walk sets no flag");
            fault.error_code
        }
    }
}

#[test]
fn four_and_five_level_address_bits_above_maxphyaddr() {
    for regs in [LONG4, LONG5] {
        let top = usize::from(regs.role().paging_mode().root_level());
        for level in 1..=top {
            for bit in [36, 45, 51] {
                let code = long_with_bit(regs, 1, 0x0abc_d000 | P, level, bit);
                assert_eq!(code, RSVD, "level {level} bit {bit}");
            }
            // Bits 62:52 are ignored (available to software, or the protection key).
            for bit in [52, 58, 62] {
                assert_eq!(long_with_bit(regs, 1, 0x0abc_d000 | P, level, bit), 0);
            }
            // Bit 63 is XD with EFER.NXE = 1 and reserved without.
            assert_eq!(long_with_bit(regs, 1, 0x0abc_d000 | P, level, 63), 0);
            let no_nx = regs.without(0, 0, EFER_NXE);
            assert_eq!(long_with_bit(no_nx, 1, 0x0abc_d000 | P, level, 63), RSVD);
        }
    }
}

#[test]
fn maxphyaddr_moves_the_reserved_boundary() {
    let (guest, _, e) = long_guest(LONG4, 1, 0x0abc_d000 | 1 << 40 | P, P);
    for (maxphyaddr, translates) in [(36, false), (40, false), (41, true), (52, true)] {
        let walker = walker_with(maxphyaddr, true, LONG4, e[4] & !0xfff);
        let result = walker.walk(&guest.mem, Gva(GVA), read(SUP), WalkMode::Probe);
        assert_eq!(result.is_ok(), translates, "MAXPHYADDR {maxphyaddr}");
        if let Ok(t) = result {
            assert_eq!(t.gpa, Gpa(1 << 40 | 0x0abc_dabc));
        }
    }
}

#[test]
fn page_size_bit_where_no_large_page_can_be() {
    // PS is reserved in PML4Es and PML5Es.
    assert_eq!(long_with_bit(LONG4, 1, 0x0abc_d000 | P, 4, 7), RSVD);
    assert_eq!(long_with_bit(LONG5, 1, 0x0abc_d000 | P, 5, 7), RSVD);
    assert_eq!(long_with_bit(LONG5, 1, 0x0abc_d000 | P, 4, 7), RSVD);
    // In a PTE bit 7 is PAT.
    assert_eq!(long_with_bit(LONG4, 1, 0x0abc_d000 | P, 1, 7), 0);
    // A 1 GiB page without CPUID support for it.
    let (guest, _, e) = long_guest(LONG4, 3, 0x4000_0000 | PS | P, P);
    let walker = walker_with(36, false, LONG4, e[4] & !0xfff);
    let fault = walker
        .walk(&guest.mem, Gva(GVA), write(USER), WalkMode::Update)
        .unwrap_err();
    assert_eq!(fault.error_code, RSVD | PageFault::WRITE | PageFault::USER);
}

#[test]
fn large_page_low_address_bits() {
    // A 2 MiB page reserves bits 20:13, a 1 GiB page bits 29:13; bit 12 is PAT in both.
    let two_meg = 0x4060_0000 | PS | P;
    for bit in [13, 17, 20] {
        assert_eq!(
            long_with_bit(LONG4, 2, two_meg, 2, bit),
            RSVD,
            "2M bit {bit}"
        );
    }
    assert_eq!(long_with_bit(LONG4, 2, two_meg, 2, 12), 0);
    let one_gig = 0x4000_0000 | PS | P;
    for bit in [13, 21, 29] {
        assert_eq!(
            long_with_bit(LONG4, 3, one_gig, 3, bit),
            RSVD,
            "1G bit {bit}"
        );
    }
    assert_eq!(long_with_bit(LONG4, 3, one_gig, 3, 12), 0);
}

#[test]
fn reserved_bits_beat_rights_and_carry_the_access_bits() {
    // The walk stops at the reserved bit before it ever checks U/S; the error code still
    // reports the access: write, user, instruction fetch.
    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P, P);
    guest
        .mem
        .write_u64(e[2], guest.mem.read_u64_raw(e[2]) | 1 << 40);
    let walk = |access| walker.walk(&guest.mem, Gva(GVA), access, WalkMode::Update);
    assert_eq!(
        walk(write(USER)).unwrap_err().error_code,
        RSVD | PageFault::WRITE | PageFault::USER
    );
    assert_eq!(
        walk(fetch(USER)).unwrap_err().error_code,
        RSVD | PageFault::USER | PageFault::FETCH
    );
    assert_eq!(
        walk(read(Privilege::ImplicitSupervisor))
            .unwrap_err()
            .error_code,
        RSVD
    );
}

#[test]
fn pae_reserves_bits_62_to_maxphyaddr() {
    let gva = 0x8060_1234;
    for level in 1..=2 {
        for (bit, reserved) in [(36, true), (52, true), (62, true), (63, false)] {
            let (guest, walker, e) = pae_guest(PAE, gva, 1, 0x0abc_d000 | P, P | W);
            guest
                .mem
                .write_u64(e[level], guest.mem.read_u64_raw(e[level]) | 1 << bit);
            let result = walker.walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe);
            let expected = if reserved { Err(RSVD) } else { Ok(()) };
            assert_eq!(
                result.map(|_| ()).map_err(|f| f.error_code),
                expected,
                "level {level} bit {bit}"
            );
        }
    }
    let (guest, walker, e) = pae_guest(PAE.without(0, 0, EFER_NXE), gva, 1, 0x0abc_d000 | P, P);
    guest.mem.write_u64(e[1], guest.mem.read_u64_raw(e[1]) | NX);
    let fault = walker
        .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe)
        .unwrap_err();
    assert_eq!(fault.error_code, RSVD);
    // A 2 MiB PAE page reserves bits 20:13.
    let (guest, walker, e) = pae_guest(PAE, gva, 2, 0x0060_0000 | 1 << 13 | PS | P, P);
    let fault = walker
        .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe)
        .unwrap_err();
    assert_eq!(fault.error_code, RSVD);
    guest.mem.write_u64(e[2], 0x0060_0000 | 1 << 12 | PS | P);
    assert!(
        walker
            .walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe)
            .is_ok()
    );
}

#[test]
fn bits32_entries_reserve_nothing_but_4m_page_bits() {
    let gva = 0x0080_5123;
    // Every bit of a 4 KiB PTE or of a PDE that references a table is defined or ignored:
    // here all are set but PS in the PDE.
    let guest = Guest::new();
    let cr3 = guest.alloc_table();
    let pt = guest.alloc_table();
    guest.mem.write(cr3 + 4 * 2, 4, pt | 0xf7f);
    guest.mem.write(pt + 4 * 5, 4, 0xffff_ffff);
    let walker = walker(BITS32, cr3);
    let t = walker
        .walk(&guest.mem, Gva(gva), write(USER), WalkMode::Probe)
        .unwrap();
    assert_eq!(t.gpa, Gpa(0xffff_f123));
    // PS is ignored (not reserved) without CR4.PSE; with it bit 21 of a 4 MiB PDE is reserved,
    // and bits 20:13 above MAXPHYADDR.
    let pse = BITS32.with(0, CR4_PSE, 0);
    for (maxphyaddr, bit, reserved) in [
        (36, 21, true),
        (36, 17, true),
        (36, 16, false),
        (40, 20, false),
        (52, 21, true),
        (32, 13, true),
    ] {
        let (guest, _, e) = bits32_guest(pse, gva, 2, 0x0040_0000 | 1 << bit | PS | P, 0);
        let walker = walker_with(maxphyaddr, true, pse, e[2] & !0xfff);
        let result = walker.walk(&guest.mem, Gva(gva), read(SUP), WalkMode::Probe);
        assert_eq!(
            result.is_err(),
            reserved,
            "MAXPHYADDR {maxphyaddr} bit {bit}"
        );
        if reserved {
            assert_eq!(result.unwrap_err().error_code, RSVD);
        }
    }
}

#[test]
fn pdpte_registers_refuse_reserved_bits() {
    let guest = Guest::new();
    let cr3 = guest.alloc_table();
    let walker = walker(PAE, cr3);
    let pd = guest.alloc_table();
    for bit in [1, 2, 5, 6, 7, 8, 36, 51, 52, 62, 63] {
        for index in 0..4 {
            for slot in 0..4 {
                guest.mem.write_u64(cr3 + 8 * slot, pd | P);
            }
            let value = pd | P | 1 << bit;
            guest.mem.write_u64(cr3 + 8 * index as u64, value);
            assert_eq!(
                walker.load_pdptrs(cr3, &guest.mem),
                Err(WalkerError::PdpteReserved { index, value }),
                "bit {bit}"
            );
        }
    }
    // Not-present PDPTEs may hold anything; the defined bits are fine.
    guest.mem.write_u64(cr3, 0xffff_ffff_ffff_fffe);
    guest
        .mem
        .write_u64(cr3 + 8, pd | P | 1 << 3 | 1 << 4 | 0xe00);
    guest.mem.write_u64(cr3 + 16, 0);
    guest.mem.write_u64(cr3 + 24, 0x0000_000f_ffff_f000 | P);
    assert!(walker.load_pdptrs(cr3, &guest.mem).is_ok());
    // NX is reserved in PDPTEs even with EFER.NXE = 1: it is not part of the role at all.
    assert_eq!(pae_pdpte_reserved(36) & NX, NX);
    // A PDPT outside RAM makes MOV to CR3 fail.
    assert_eq!(
        walker.load_pdptrs(0x8000_0000, &guest.mem),
        Err(WalkerError::PdptNotInRam(Gpa(0x8000_0000)))
    );
    let walker40 = Walker::new(40, false).unwrap();
    guest.mem.write_u64(cr3, pd | 1 << 39 | P);
    assert!(walker40.load_pdptrs(cr3, &guest.mem).is_ok());
    assert!(walker.load_pdptrs(cr3, &guest.mem).is_err());
}
