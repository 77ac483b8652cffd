//! The CPU role: every control-register bit that changes how guest page tables are read, packed
//! into one small `Copy` value (KVM's `kvm_cpu_role`).
//!
//! A walker precomputes its permission table and reserved-bit masks from the role, and later a
//! root cache and shadow pages are keyed by it, so two register states that translate every
//! address identically must give equal roles. [`CpuRole::from_regs`] therefore keeps a bit only
//! in the paging modes where the SDM gives it a meaning and clears it elsewhere, as KVM's
//! `kvm_calc_cpu_role` does: with CR0.PG = 0 the role is all zeroes; CR4.PSE counts only in
//! 32-bit paging; EFER.NXE only with CR4.PAE = 1; CR4.LA57 and CR4.PKE only with EFER.LMA = 1.
//! CR4.PCIDE is not part of the role: it tags TLB entries but never changes a walk.

use crate::paging::PagingMode;

/// CR0 bit 31, PG: paging enabled.
pub const CR0_PG: u64 = 1 << 31;
/// CR0 bit 16, WP: supervisor writes honour R/W = 0.
pub const CR0_WP: u64 = 1 << 16;
/// CR4 bit 4, PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4 bit 5, PAE: 8-byte entries (PAE, 4-level or 5-level paging).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4 bit 7, PGE: the G bit in leaf entries makes translations global.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4 bit 12, LA57: 5-level paging when in IA-32e mode.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4 bit 20, SMEP: supervisor fetches from user pages fault.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4 bit 21, SMAP: supervisor data accesses to user pages fault unless EFLAGS.AC allows.
pub const CR4_SMAP: u64 = 1 << 21;
/// CR4 bit 22, PKE: protection keys for user pages (PKRU).
pub const CR4_PKE: u64 = 1 << 22;
/// EFER bit 10, LMA: IA-32e mode active (set by the processor from LME and CR0.PG).
pub const EFER_LMA: u64 = 1 << 10;
/// EFER bit 11, NXE: the XD bit (63) of 8-byte entries is honoured instead of reserved.
pub const EFER_NXE: u64 = 1 << 11;

/// Everything in CR0, CR4 and EFER that changes how guest page tables are read.
///
/// A `u32` of role bits; `Copy`, `Eq` and `Hash`, so it can key caches of roots and shadow pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuRole(u32);

impl CpuRole {
    /// CR0.PG: paging is on. Every other bit is zero without it.
    const PG: u32 = 1 << 0;
    /// CR0.WP: read-only pages are read-only for supervisor writes too.
    const WP: u32 = 1 << 1;
    /// CR4.PAE: entries are 8 bytes (PAE, 4-level, 5-level paging).
    const PAE: u32 = 1 << 2;
    /// CR4.PSE, in 32-bit paging only: PS = 1 in a PDE maps a 4 MiB page.
    const PSE: u32 = 1 << 3;
    /// CR4.PGE: the G bit of a leaf entry makes the translation global.
    const PGE: u32 = 1 << 4;
    /// CR4.LA57, in IA-32e mode only: 5-level paging.
    const LA57: u32 = 1 << 5;
    /// EFER.LMA: IA-32e (4-level or 5-level) paging.
    const LMA: u32 = 1 << 6;
    /// EFER.NXE, with CR4.PAE = 1 only: bit 63 is XD rather than reserved, and instruction
    /// fetches report I/D in the #PF error code.
    const NXE: u32 = 1 << 7;
    /// CR4.SMEP: supervisor instruction fetches from user pages fault.
    const SMEP: u32 = 1 << 8;
    /// CR4.SMAP: supervisor data accesses to user pages fault (explicit ones unless EFLAGS.AC).
    const SMAP: u32 = 1 << 9;
    /// CR4.PKE, in IA-32e mode only: PKRU restricts data accesses to user pages.
    const PKE: u32 = 1 << 10;

    /// The role of a CPU whose control registers hold these values.
    ///
    /// `efer` is the architectural EFER with LMA as the processor maintains it (LME and CR0.PG
    /// both set). LMA = 1 always comes with CR4.PAE = 1 on a real processor (clearing PAE in
    /// IA-32e mode raises #GP), so LMA alone selects 4-level or 5-level paging here.
    pub fn from_regs(cr0: u64, cr4: u64, efer: u64) -> CpuRole {
        if cr0 & CR0_PG == 0 {
            return CpuRole(0);
        }
        let lma = efer & EFER_LMA != 0;
        let pae = lma || cr4 & CR4_PAE != 0;
        let mut bits = Self::PG;
        let mut set = |bit: u32, on: bool| {
            if on {
                bits |= bit;
            }
        };
        set(Self::WP, cr0 & CR0_WP != 0);
        set(Self::PAE, pae);
        // SDM 4.1.1: CR4.PSE matters only for 32-bit paging; PAE and IA-32e paging ignore it.
        set(Self::PSE, !pae && cr4 & CR4_PSE != 0);
        set(Self::PGE, cr4 & CR4_PGE != 0);
        set(Self::LMA, lma);
        set(Self::LA57, lma && cr4 & CR4_LA57 != 0);
        // 32-bit paging has no XD bit, and SDM 4.7 sets I/D for NXE only when CR4.PAE = 1.
        set(Self::NXE, pae && efer & EFER_NXE != 0);
        set(Self::SMEP, cr4 & CR4_SMEP != 0);
        set(Self::SMAP, cr4 & CR4_SMAP != 0);
        // SDM 4.6.2: protection keys exist only in 4-level and 5-level paging.
        set(Self::PKE, lma && cr4 & CR4_PKE != 0);
        CpuRole(bits)
    }

    /// The paging mode this role translates with.
    pub const fn paging_mode(self) -> PagingMode {
        if !self.has(Self::PG) {
            PagingMode::None
        } else if self.has(Self::LMA) {
            if self.has(Self::LA57) {
                PagingMode::Level5
            } else {
                PagingMode::Level4
            }
        } else if self.has(Self::PAE) {
            PagingMode::Pae
        } else {
            PagingMode::Bits32
        }
    }

    /// The packed role bits, for hashing or display.
    pub const fn bits(self) -> u32 {
        self.0
    }

    const fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// CR0.PG: paging is enabled.
    pub const fn paging(self) -> bool {
        self.has(Self::PG)
    }

    /// CR0.WP: supervisor writes to read-only pages fault.
    pub const fn wp(self) -> bool {
        self.has(Self::WP)
    }

    /// CR4.PSE in 32-bit paging: 4 MiB pages.
    pub const fn pse(self) -> bool {
        self.has(Self::PSE)
    }

    /// CR4.PGE: global translations.
    pub const fn pge(self) -> bool {
        self.has(Self::PGE)
    }

    /// EFER.NXE with 8-byte entries: the XD bit is honoured.
    pub const fn nxe(self) -> bool {
        self.has(Self::NXE)
    }

    /// CR4.SMEP: supervisor-mode execution prevention.
    pub const fn smep(self) -> bool {
        self.has(Self::SMEP)
    }

    /// CR4.SMAP: supervisor-mode access prevention.
    pub const fn smap(self) -> bool {
        self.has(Self::SMAP)
    }

    /// CR4.PKE in IA-32e mode: protection keys for user pages.
    pub const fn pke(self) -> bool {
        self.has(Self::PKE)
    }

    /// CR4.LA57 in IA-32e mode: 57-bit linear addresses.
    pub const fn la57(self) -> bool {
        self.has(Self::LA57)
    }
}

/// What a shadow page's contents depend on, besides the guest table it shadows (KVM's
/// `kvm_mmu_page_role`): shadow pages are looked up by (guest table frame, page role), and two
/// lookups with equal keys may share one page.
///
/// - `level` (bits 0-2): the paging-structure level the page shadows, 1 (PT) to 5 (PML5).
/// - `direct` (bit 3): the page does not shadow a guest table but maps a guest large page in
///   4 KiB pieces; its frame is the first frame of the region and `access` holds the rights
///   the large page grants (for a guest table those come from each entry instead).
/// - `access` (bits 4-6): U/W/X rights of a direct page ([`crate::walker::PteAccess`] bits).
/// - `la57` (bit 7): the tree has five levels (CR4.LA57), so that a 4-level and a 5-level view
///   of the same frame never share pages.
/// - `wp` (bit 8): CR0.WP; `nxe` (bit 9): EFER.NXE; `smep_andnot_wp` (bit 10): CR4.SMEP with
///   CR0.WP = 0; `smap_andnot_wp` (bit 11): CR4.SMAP with CR0.WP = 0. These are the control bits
///   that change which accesses the permissions a shadow entry holds allow, so a CR0.WP toggle
///   selects a different root instead of rewriting entries (seed 002). SMEP and SMAP count only
///   without WP, as in KVM: with WP = 1 their effect does not depend on anything else the role
///   holds.
/// - `guest_mode` (bit 12): the page belongs to a nested guest's second walk dimension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PageRole(u32);

impl PageRole {
    const LEVEL_MASK: u32 = 0x7;
    const DIRECT: u32 = 1 << 3;
    const ACCESS_SHIFT: u32 = 4;
    const LA57: u32 = 1 << 7;
    const WP: u32 = 1 << 8;
    const NXE: u32 = 1 << 9;
    const SMEP_ANDNOT_WP: u32 = 1 << 10;
    const SMAP_ANDNOT_WP: u32 = 1 << 11;
    const GUEST_MODE: u32 = 1 << 12;

    /// The role of the root page for a CPU in `role` (4-level or 5-level paging).
    pub fn root(role: CpuRole) -> PageRole {
        let mut bits = u32::from(role.paging_mode().root_level());
        let mut set = |bit: u32, on: bool| {
            if on {
                bits |= bit;
            }
        };
        set(Self::LA57, role.la57());
        set(Self::WP, role.wp());
        set(Self::NXE, role.nxe());
        set(Self::SMEP_ANDNOT_WP, role.smep() && !role.wp());
        set(Self::SMAP_ANDNOT_WP, role.smap() && !role.wp());
        PageRole(bits)
    }

    /// The role of a child page one level down that shadows a guest table.
    pub fn child(self) -> PageRole {
        PageRole((self.0 & !Self::LEVEL_MASK) | (self.level() as u32 - 1))
    }

    /// The role of a direct page at `level` mapping a guest large page with rights `access`.
    pub fn direct(self, level: u8, access: u8) -> PageRole {
        let kept = self.0 & !(Self::LEVEL_MASK | (0x7 << Self::ACCESS_SHIFT));
        PageRole(
            kept | u32::from(level) | Self::DIRECT | (u32::from(access & 7) << Self::ACCESS_SHIFT),
        )
    }

    /// The level this page shadows.
    pub const fn level(self) -> u8 {
        (self.0 & Self::LEVEL_MASK) as u8
    }

    /// A direct page (a guest large page in 4 KiB pieces).
    pub const fn is_direct(self) -> bool {
        self.0 & Self::DIRECT != 0
    }

    /// The rights a direct page grants.
    pub const fn access(self) -> u8 {
        ((self.0 >> Self::ACCESS_SHIFT) & 7) as u8
    }

    /// A nested guest's page.
    pub const fn guest_mode(self) -> bool {
        self.0 & Self::GUEST_MODE != 0
    }

    /// The packed bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

/// The paging mode and the bits set, as a debugger shows them: `4-level WP PGE NXE`.
impl std::fmt::Display for CpuRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.paging_mode() {
            PagingMode::None => "paging off",
            PagingMode::Bits32 => "32-bit",
            PagingMode::Pae => "PAE",
            PagingMode::Level4 => "4-level",
            PagingMode::Level5 => "5-level",
        })?;
        let bits = [
            (Self::WP, "WP"),
            (Self::PSE, "PSE"),
            (Self::PGE, "PGE"),
            (Self::NXE, "NXE"),
            (Self::SMEP, "SMEP"),
            (Self::SMAP, "SMAP"),
            (Self::PKE, "PKE"),
        ];
        for (bit, name) in bits {
            if self.has(bit) {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}

/// The level and the bits set, in KVM's names: `level 4 wp nxe`.
impl std::fmt::Display for PageRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "level {}", self.level())?;
        if self.is_direct() {
            write!(f, " direct access {}", self.access())?;
        }
        let bits = [
            (Self::LA57, "la57"),
            (Self::WP, "wp"),
            (Self::NXE, "nxe"),
            (Self::SMEP_ANDNOT_WP, "smep_andnot_wp"),
            (Self::SMAP_ANDNOT_WP, "smap_andnot_wp"),
            (Self::GUEST_MODE, "guest_mode"),
        ];
        for (bit, name) in bits {
            if self.0 & bit != 0 {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_print_their_bits() {
        let role = CpuRole::from_regs(CR0_PG | CR0_WP, CR4_PAE | CR4_PGE, EFER_LMA | EFER_NXE);
        assert_eq!(role.to_string(), "4-level WP PGE NXE");
        assert_eq!(PageRole::root(role).to_string(), "level 4 wp nxe");
        assert_eq!(CpuRole::default().to_string(), "paging off");
    }

    #[test]
    fn page_roles_split_on_the_permission_bits_only() {
        let long = |cr0, cr4| CpuRole::from_regs(CR0_PG | cr0, CR4_PAE | cr4, EFER_LMA | EFER_NXE);
        let wp = PageRole::root(long(CR0_WP, 0));
        let no_wp = PageRole::root(long(0, 0));
        assert_ne!(wp, no_wp);
        assert_eq!(wp.level(), 4);
        // PGE changes nothing a shadow entry grants.
        assert_eq!(PageRole::root(long(CR0_WP, CR4_PGE)), wp);
        // SMEP counts only without WP.
        assert_eq!(PageRole::root(long(CR0_WP, CR4_SMEP)), wp);
        assert_ne!(PageRole::root(long(0, CR4_SMEP)), no_wp);
        let la57 = PageRole::root(long(CR0_WP, CR4_LA57));
        assert_eq!(la57.level(), 5);
        assert_ne!(la57.child(), wp);
        let pt = wp.child().child().child();
        assert_eq!(pt.level(), 1);
        let direct = wp.child().child().direct(1, 0b101);
        assert!(direct.is_direct() && direct.access() == 0b101 && direct.level() == 1);
        assert!(!wp.guest_mode());
    }

    #[test]
    fn paging_off_ignores_every_other_bit() {
        let role = CpuRole::from_regs(CR0_WP, CR4_PAE | CR4_SMEP, EFER_NXE);
        assert_eq!(role, CpuRole::default());
        assert_eq!(role.paging_mode(), PagingMode::None);
    }

    #[test]
    fn modes_follow_pae_lma_and_la57() {
        assert_eq!(
            CpuRole::from_regs(CR0_PG, 0, 0).paging_mode(),
            PagingMode::Bits32
        );
        assert_eq!(
            CpuRole::from_regs(CR0_PG, CR4_PAE, 0).paging_mode(),
            PagingMode::Pae
        );
        let long = CpuRole::from_regs(CR0_PG, CR4_PAE, EFER_LMA);
        assert_eq!(long.paging_mode(), PagingMode::Level4);
        let la57 = CpuRole::from_regs(CR0_PG, CR4_PAE | CR4_LA57, EFER_LMA);
        assert_eq!(la57.paging_mode(), PagingMode::Level5);
        assert_eq!(
            CpuRole::from_regs(CR0_PG, CR4_PAE | CR4_LA57, 0).paging_mode(),
            PagingMode::Pae
        );
    }

    #[test]
    fn bits_without_meaning_in_the_mode_are_dropped() {
        assert!(!CpuRole::from_regs(CR0_PG, CR4_PAE | CR4_PSE, 0).pse());
        assert!(CpuRole::from_regs(CR0_PG, CR4_PSE, 0).pse());
        assert!(!CpuRole::from_regs(CR0_PG, 0, EFER_NXE).nxe());
        assert!(CpuRole::from_regs(CR0_PG, CR4_PAE, EFER_NXE).nxe());
        assert!(!CpuRole::from_regs(CR0_PG, CR4_PAE | CR4_PKE, 0).pke());
        assert!(CpuRole::from_regs(CR0_PG, CR4_PAE | CR4_PKE, EFER_LMA).pke());
        assert_eq!(
            CpuRole::from_regs(CR0_PG, CR4_PAE | CR4_PSE, 0),
            CpuRole::from_regs(CR0_PG, CR4_PAE, 0)
        );
    }

    #[test]
    fn each_register_bit_lands_in_its_accessor() {
        let all = CpuRole::from_regs(
            CR0_PG | CR0_WP,
            CR4_PAE | CR4_PGE | CR4_LA57 | CR4_SMEP | CR4_SMAP | CR4_PKE,
            EFER_LMA | EFER_NXE,
        );
        assert!(all.paging() && all.wp() && all.pge() && all.la57() && all.nxe());
        assert!(all.smep() && all.smap() && all.pke());
        assert!(!all.pse());
    }
}
