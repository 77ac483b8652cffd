//! Reserved bits of paging-structure entries, per level and per value of bit 7 (PS), computed
//! once per role (KVM's `rsvd_bits_validate` and `__reset_rsvds_bits_mask`).
//!
//! A present entry with a reserved bit set stops the walk with a #PF whose error code has P and
//! RSVD set (SDM 4.7). Which bits are reserved depends on the paging mode, EFER.NXE, CR4.PSE
//! and two CPUID facts fixed for a machine: MAXPHYADDR and 1 GiB page support. Indexing the
//! mask by bit 7 handles "bit 7 set makes other bits reserved" (the PAT and low address bits
//! of large pages) with the same single AND as the rest.

use crate::paging::PagingMode;
use crate::role::CpuRole;

/// Bits `hi..=lo` set; zero when `lo > hi`.
const fn bits(hi: u32, lo: u32) -> u64 {
    if lo > hi {
        return 0;
    }
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

/// The reserved bits of a PAE PDPTE (SDM 4.4.1, table 4-8): bits 2:1, 8:5 and 63:MAXPHYADDR.
/// They are checked when the PDPTE registers are loaded, never during a walk.
pub const fn pae_pdpte_reserved(maxphyaddr: u8) -> u64 {
    bits(63, maxphyaddr as u32) | bits(8, 5) | bits(2, 1)
}

/// Reserved-bit masks for every level of one paging mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedBits {
    /// `masks[ps][level - 1]`, where `ps` is bit 7 of the entry.
    masks: [[u64; 5]; 2],
}

impl ReservedBits {
    /// The masks for `role` on a processor with `maxphyaddr` physical-address bits that does
    /// (`gbpages`) or does not support 1 GiB pages.
    pub fn new(role: CpuRole, maxphyaddr: u8, gbpages: bool) -> ReservedBits {
        let m = u32::from(maxphyaddr);
        let mut masks = [[0; 5]; 2];
        match role.paging_mode() {
            PagingMode::None => {}
            PagingMode::Bits32 => {
                // SDM 4.3, table 4-4: 4-byte entries reserve nothing, except in a PDE that
                // maps a 4 MiB page (PS = 1 with CR4.PSE = 1; with CR4.PSE = 0 bit 7 is
                // ignored). PSE-36 puts physical bits 39:32 in PDE bits 20:13, so bits
                // 21:(M' - 19) are reserved with M' = min(MAXPHYADDR, 40). KVM reserves 21:17
                // (a fixed 36-bit PSE-36); this follows the SDM.
                if role.pse() {
                    masks[1][1] = bits(21, m.min(40) - 19);
                }
            }
            PagingMode::Pae => {
                // SDM 4.4.2, tables 4-9 to 4-11: bits 62:MAXPHYADDR are reserved in PAE paging
                // (unlike IA-32e paging, where 62:52 are free), and bit 63 unless EFER.NXE = 1.
                // PS in a PDE maps a 2 MiB page whose bits 20:13 are reserved.
                let high = bits(62, m) | if role.nxe() { 0 } else { XD };
                masks[0][0] = high;
                masks[1][0] = high;
                masks[0][1] = high;
                masks[1][1] = high | bits(20, 13);
            }
            PagingMode::Level4 | PagingMode::Level5 => {
                // SDM 4.5, tables 4-15 to 4-20: bits 51:MAXPHYADDR are reserved at every level
                // and bit 63 unless EFER.NXE = 1. PS is reserved in PML5Es and PML4Es, and in
                // PDPTEs without 1 GiB page support; a 1 GiB page reserves bits 29:13 and a
                // 2 MiB page bits 20:13. In PTEs bit 7 is PAT, never reserved.
                let high = bits(51, m) | if role.nxe() { 0 } else { XD };
                let gbpage_ps = if gbpages { 0 } else { PS };
                masks[0][0] = high;
                masks[1][0] = high;
                masks[0][1] = high;
                masks[1][1] = high | bits(20, 13);
                masks[0][2] = high;
                masks[1][2] = high | gbpage_ps | bits(29, 13);
                for level in [3, 4] {
                    masks[0][level] = high | PS;
                    masks[1][level] = high | PS;
                }
            }
        }
        ReservedBits { masks }
    }

    /// The reserved bits that `entry`, read at `level` (1-5), has set.
    pub const fn reserved_in(&self, entry: u64, level: u8) -> u64 {
        entry & self.masks[((entry & PS) >> 7) as usize][level as usize - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_ranges_are_inclusive() {
        assert_eq!(bits(2, 1), 0b110);
        assert_eq!(bits(63, 63), 1 << 63);
        assert_eq!(bits(51, 52), 0);
        assert_eq!(bits(51, 39), 0x000f_ff80_0000_0000);
    }

    #[test]
    fn pdpte_reserves_high_and_low_control_bits() {
        assert_eq!(pae_pdpte_reserved(36), 0xffff_fff0_0000_01e6);
    }
}
