//! The shape of x86 paging structures: entry bits, paging modes, page sizes and the linear
//! address layout (Intel SDM Vol. 3A, 4.3-4.5).
//!
//! Levels are numbered as the SDM's tables and KVM number them: level 1 holds PTEs (4 KiB
//! pages), level 2 PDEs (2 MiB or 4 MiB pages), level 3 PDPTEs (1 GiB pages), level 4 PML4Es
//! and level 5 PML5Es.

use crate::addr::{Gpa, Gva, PAGE_SHIFT};

/// Bit 0, P: the entry maps a page or references a table.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Bit 1, R/W: writes allowed through this entry (subject to CR0.WP for supervisor writes).
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Bit 2, U/S: user-mode (CPL 3) accesses allowed through this entry.
pub const PTE_USER: u64 = 1 << 2;
/// Bit 3, PWT: page-level write-through.
pub const PTE_PWT: u64 = 1 << 3;
/// Bit 4, PCD: page-level cache disable.
pub const PTE_PCD: u64 = 1 << 4;
/// Bit 5, A: set by the processor when the entry is used for a translation.
pub const PTE_ACCESSED: u64 = 1 << 5;
/// Bit 6, D: set by the processor in the entry that maps the page when the page is written.
pub const PTE_DIRTY: u64 = 1 << 6;
/// Bit 7, PS: in a PDE or PDPTE, the entry maps a large page; in a PTE it is PAT instead.
pub const PTE_PAGE_SIZE: u64 = 1 << 7;
/// Bit 8, G: the translation is global (kept across CR3 writes) when CR4.PGE = 1.
pub const PTE_GLOBAL: u64 = 1 << 8;
/// Bit 12 of a PDE or PDPTE that maps a large page: PAT (bit 7 is PS there).
pub const PTE_LARGE_PAT: u64 = 1 << 12;
/// Bit 63, XD: instruction fetches are not allowed through this entry (when EFER.NXE = 1).
pub const PTE_NX: u64 = 1 << 63;
/// Shift of the 4-bit protection key in a leaf entry of 4-level and 5-level paging.
pub const PTE_PKEY_SHIFT: u32 = 59;
/// Bits 51:12 of a 64-bit entry: the address of the next table or of the 4 KiB page. Bits above
/// MAXPHYADDR inside this range are reserved and checked separately.
pub const PTE_ADDR_MASK_64: u64 = 0x000f_ffff_ffff_f000;
/// Bits 31:12 of a 32-bit paging entry: the address of the next table or of the 4 KiB page.
pub const PTE_ADDR_MASK_32: u64 = 0xffff_f000;

/// How linear addresses are translated, fixed by CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57
/// (SDM 4.1.1, table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagingMode {
    /// CR0.PG = 0: linear addresses are physical addresses.
    None,
    /// 32-bit paging: CR0.PG = 1, CR4.PAE = 0. Two levels of 4-byte entries.
    Bits32,
    /// PAE paging: CR0.PG = 1, CR4.PAE = 1, EFER.LMA = 0. Four PDPTE registers, then two levels
    /// of 8-byte entries.
    Pae,
    /// 4-level paging: EFER.LMA = 1, CR4.LA57 = 0. 48-bit linear addresses.
    Level4,
    /// 5-level paging: EFER.LMA = 1, CR4.LA57 = 1. 57-bit linear addresses.
    Level5,
}

impl PagingMode {
    /// The level of the first entry a walk uses: the PDPTE registers count as level 3 in PAE
    /// paging. Zero when paging is off.
    pub const fn root_level(self) -> u8 {
        match self {
            PagingMode::None => 0,
            PagingMode::Bits32 => 2,
            PagingMode::Pae => 3,
            PagingMode::Level4 => 4,
            PagingMode::Level5 => 5,
        }
    }

    /// Size in bytes of one paging-structure entry.
    pub const fn entry_size(self) -> u64 {
        match self {
            PagingMode::Bits32 => 4,
            _ => 8,
        }
    }

    /// Number of linear-address bits the mode translates: 32 outside IA-32e paging, where no
    /// higher linear address can be formed.
    pub const fn linear_bits(self) -> u32 {
        match self {
            PagingMode::None | PagingMode::Bits32 | PagingMode::Pae => 32,
            PagingMode::Level4 => 48,
            PagingMode::Level5 => 57,
        }
    }

    /// Linear-address bits that select the entry at `level` in this mode: bits 31:22 and 21:12
    /// (10 each) for 32-bit paging, 9 bits per level otherwise (PAE's PDPTE index is bits 31:30,
    /// which the mode's 32-bit linear addresses already limit to 2 bits).
    pub const fn index(self, gva: Gva, level: u8) -> u64 {
        match self {
            PagingMode::Bits32 => (gva.0 >> (PAGE_SHIFT + 10 * (level as u32 - 1))) & 0x3ff,
            _ => (gva.0 >> level_shift(level)) & 0x1ff,
        }
    }
}

/// The size of the page a translation maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by a PTE (or no paging at all).
    Size4K,
    /// 2 MiB, mapped by a PDE with PS = 1 in PAE, 4-level or 5-level paging.
    Size2M,
    /// 4 MiB, mapped by a PDE with PS = 1 in 32-bit paging with CR4.PSE = 1.
    Size4M,
    /// 1 GiB, mapped by a PDPTE with PS = 1 in 4-level or 5-level paging.
    Size1G,
}

impl PageSize {
    /// log2 of the size in bytes.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size4M => 22,
            PageSize::Size1G => 30,
        }
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// Mask of the address bits that are an offset inside a page of this size.
    pub const fn offset_mask(self) -> u64 {
        self.bytes() - 1
    }
}

/// The linear-address bit where the index for `level` starts in 8-byte-entry modes: 12, 21, 30,
/// 39 or 48.
pub const fn level_shift(level: u8) -> u32 {
    PAGE_SHIFT + 9 * (level as u32 - 1)
}

/// Whether `gva` is canonical: bits 63:47 (63:56 with `la57`) all equal.
///
/// The walker never checks this. A non-canonical address is not a paging matter: the processor
/// raises #GP (or #SS for stack references) before any translation (SDM 3.3.7.1), so the
/// caller checks canonicality in 64-bit mode and walks only canonical addresses.
pub const fn is_canonical(gva: Gva, la57: bool) -> bool {
    let unused = if la57 { 7 } else { 16 };
    ((gva.0 << unused) as i64 >> unused) as u64 == gva.0
}

/// The physical address a PDE with PS = 1 maps in 32-bit paging (PSE-36, SDM 4.3, table 4-4):
/// bits 31:22 of the address from PDE bits 31:22, bits 39:32 from PDE bits 20:13. Bits beyond
/// MAXPHYADDR and bit 21 are reserved, so the walker rejects entries that set them first.
pub const fn pse36_page_base(pde: u64) -> Gpa {
    Gpa((pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_addresses_sign_extend_the_top_translated_bit() {
        assert!(is_canonical(Gva(0x0000_7fff_ffff_ffff), false));
        assert!(!is_canonical(Gva(0x0000_8000_0000_0000), false));
        assert!(is_canonical(Gva(0xffff_8000_0000_0000), false));
        assert!(is_canonical(Gva(0x0000_8000_0000_0000), true));
        assert!(!is_canonical(Gva(0x0100_0000_0000_0000), true));
        assert!(is_canonical(Gva(0xff00_0000_0000_0000), true));
    }

    #[test]
    fn indexes_follow_the_mode_layout() {
        let gva = Gva(0xffff_ff80_4020_1000 | 0x1ff << 48);
        assert_eq!(PagingMode::Level5.index(gva, 5), 0x1ff);
        assert_eq!(PagingMode::Level4.index(gva, 4), 0x1ff);
        assert_eq!(PagingMode::Level4.index(gva, 3), 0x1);
        assert_eq!(PagingMode::Level4.index(gva, 2), 0x1);
        assert_eq!(PagingMode::Level4.index(gva, 1), 0x1);
        let gva = Gva(0xc040_3000);
        assert_eq!(PagingMode::Bits32.index(gva, 2), 0x301);
        assert_eq!(PagingMode::Bits32.index(gva, 1), 0x3);
    }

    #[test]
    fn pse36_takes_high_address_bits_from_bits_20_to_13() {
        let pde = 0x1234_5678_u64 & !0x3f_ffff | (0xab << 13) | 0x83;
        assert_eq!(pse36_page_base(pde), Gpa(0xab_1200_0000));
    }
}
