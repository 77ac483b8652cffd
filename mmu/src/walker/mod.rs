//! The guest page-table walker: the reference translation of a linear address to a guest
//! physical address, exact to Intel SDM Vol. 3A chapter 4, for every paging mode (KVM's
//! `paging_tmpl.h`, one walk routine serving 32-bit, PAE, 4-level and 5-level paging).
//!
//! The interpreter, the JIT's slow path, the gdbstub and the TUI all translate through
//! [`Walker::walk`], and the shadow MMU's cached translations are tested against it.
//!
//! # State and the per-role tables
//!
//! A [`Walker`] holds what a walk reads from the CPU: the [`CpuRole`], CR3, the four PAE PDPTE
//! registers and PKRU, plus two CPUID facts fixed at construction (MAXPHYADDR and 1 GiB page
//! support). From the role and those facts it precomputes a [`PermissionTable`] and
//! [`ReservedBits`] (the reserved-bit mask of each level, indexed by level and bit 7).
//! The role changes only on writes to CR0, CR4 or EFER, which are rare next to memory accesses,
//! so [`Walker::set_role`] rebuilds the tables only when the role actually differs (a compare
//! otherwise), and a walk pays one table lookup per check instead of a chain of conditions on
//! CR0.WP, SMEP, SMAP, NXE and PKE.
//!
//! # The permission table
//!
//! Whether an access faults depends on the access (write, fetch, user or supervisor, SMAP
//! exemption), on the rights the entries grant (U, W and X, each ANDed over all levels) and on
//! the role. With the role folded in, the table is 16 rows of one byte:
//!
//! - the row is the access: bit 0 write, bit 1 user (CPL 3, not an implicit supervisor access),
//!   bit 2 instruction fetch, bit 3 "SMAP does not apply" (an explicit supervisor access with
//!   EFLAGS.AC = 1);
//! - bit `n` of the row is set when pages whose combined rights are `n` fault, where `n` is a
//!   [`PteAccess`] value: bit 0 executable, bit 1 writable, bit 2 user.
//!
//! So the check is `faults[row] >> rights & 1`. Protection keys have a second table with the
//! same rows except that bit 3 says whether the page is a user page; each byte holds the PKRU
//! bits of the page's key that apply to the access: bit 0 (AD) for any data access, bit 1 (WD)
//! for writes. A PKRU bit that is set and applies is a fault with PK in the error code.
//! Without CR4.PKE that table is all zeroes.
//!
//! # What a walk does
//!
//! Starting at CR3 (or at the PDPTE register selected by bits 31:30 in PAE paging) it reads one
//! entry per level; a non-present entry or one with a reserved bit set stops it with a #PF.
//! It ANDs the rights of every entry, stops at a leaf, then checks the combined rights against
//! the permission table. Only an access that does not fault sets accessed and dirty flags (A in
//! every entry used, D in the leaf for writes), each with a compare-exchange; if an entry
//! changed since it was read the whole walk restarts, as KVM's does. [`WalkMode::Probe`] skips
//! the flag updates, for debuggers that must not disturb the guest.
//!
//! # What the walker leaves to its caller
//!
//! - Canonicality: a non-canonical address raises #GP or #SS before paging is consulted, so the
//!   caller checks it ([`crate::paging::is_canonical`]) and walks only canonical addresses.
//! - Segmentation: the walker takes linear addresses. Outside IA-32e mode only bits 31:0 are
//!   translated, since no larger linear address can be formed there.
//! - Validity of CR3: MOV to CR3 checks reserved bits; the walker masks CR3 to its address bits.
//!
//! # Tables outside RAM
//!
//! An entry whose address is not guest RAM reads as not present: the walk stops with a #PF
//! whose P bit is clear. Real hardware would read whatever the bus returns; this follows KVM,
//! whose walker takes its `error` path (a not-present fault) when a table's gfn has no memslot.
//! An A/D update that cannot be written (ROM or MMIO, [`PageTableMemory::cmpxchg_u64`] returning
//! `None`) is skipped and the access proceeds, as KVM does for read-only memslots.

mod memslot_tables;
mod permission;
mod rsvd;

use std::fmt;

pub use permission::{Access, AccessKind, PermissionTable, Privilege, PteAccess};
pub use rsvd::{ReservedBits, pae_pdpte_reserved};

use crate::addr::{Gfn, Gpa, Gva};
use crate::paging::{
    PTE_ACCESSED, PTE_ADDR_MASK_32, PTE_ADDR_MASK_64, PTE_DIRTY, PTE_GLOBAL, PTE_NX, PTE_PAGE_SIZE,
    PTE_PKEY_SHIFT, PTE_PRESENT, PageSize, PagingMode, pse36_page_base,
};
use crate::role::CpuRole;

/// Errors from setting up a walker or loading PAE PDPTE registers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalkerError {
    /// MAXPHYADDR outside what x86 processors report.
    #[error("MAXPHYADDR {0} is outside 32..=52")]
    MaxPhyAddr(u8),
    /// The PAE page-directory-pointer table is not in guest RAM; MOV to CR3 raises #GP.
    #[error("PDPT at {0} is not in guest RAM")]
    PdptNotInRam(Gpa),
    /// A present PDPTE has a reserved bit set; the MOV to CR0, CR3 or CR4 raises #GP.
    #[error("PDPTE {index} = {value:#x} has reserved bits set")]
    PdpteReserved {
        /// Which of the four PDPTEs.
        index: usize,
        /// Its value.
        value: u64,
    },
}

/// Guest physical memory as the walker sees it; implemented by the caller.
///
/// Reads and compare-exchanges of an entry must each be single-copy atomic, since other vCPUs
/// may write the same page tables. `None` means the address is not RAM the walker may use.
pub trait PageTableMemory {
    /// Reads the 4-byte entry at `gpa` (4-byte aligned).
    fn read_u32(&self, gpa: Gpa) -> Option<u32>;
    /// Reads the 8-byte entry at `gpa` (8-byte aligned).
    fn read_u64(&self, gpa: Gpa) -> Option<u64>;
    /// Replaces the 4-byte entry at `gpa` with `new` if it still equals `old`: `Some(true)` if
    /// it was replaced, `Some(false)` if it had changed, `None` if it cannot be written (not
    /// RAM, or read-only memory).
    fn cmpxchg_u32(&self, gpa: Gpa, old: u32, new: u32) -> Option<bool>;
    /// The 8-byte twin of [`PageTableMemory::cmpxchg_u32`].
    fn cmpxchg_u64(&self, gpa: Gpa, old: u64, new: u64) -> Option<bool>;
}

/// Whether a walk behaves as the processor does or only looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalkMode {
    /// As the processor: set accessed flags on every entry used and the dirty flag on the leaf
    /// of a write, when the access does not fault.
    Update,
    /// Side-effect free: guest memory is only read (gdb, the TUI).
    Probe,
}

/// A page-fault exception (#PF, vector 14) with its error code and faulting address (CR2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageFault {
    /// The error code pushed on the stack (SDM 4.7): a combination of the constants below.
    pub error_code: u32,
    /// The linear address that faulted, for CR2.
    pub address: Gva,
}

impl PageFault {
    /// P: 0 for a non-present entry, 1 for a protection or reserved-bit violation.
    pub const PRESENT: u32 = 1 << 0;
    /// W/R: the access was a write.
    pub const WRITE: u32 = 1 << 1;
    /// U/S: the access was a user-mode access (never for implicit supervisor accesses).
    pub const USER: u32 = 1 << 2;
    /// RSVD: a reserved bit was set in some paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// I/D: an instruction fetch, reported only with CR4.SMEP = 1 or with EFER.NXE = 1 in PAE,
    /// 4-level or 5-level paging.
    pub const FETCH: u32 = 1 << 4;
    /// PK: a protection-key violation.
    pub const PK: u32 = 1 << 5;
}

impl fmt::Display for PageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#PF({:#x}) at {}", self.error_code, self.address)
    }
}

/// A successful translation, with what the shadow MMU needs to mirror it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest physical address of the accessed byte.
    pub gpa: Gpa,
    /// The size of the page that maps it.
    pub page_size: PageSize,
    /// The level of the leaf entry (1 for a PTE, 2 for a large-page PDE, 3 for a 1 GiB PDPTE),
    /// or 0 when paging is off.
    pub level: u8,
    /// The highest level read from memory: 2 in 32-bit and PAE paging (PDPTEs are registers,
    /// not memory reads), 4 or 5 in IA-32e paging, 0 when paging is off.
    pub top_level: u8,
    /// The rights combined over all levels.
    pub access: PteAccess,
    /// The leaf has G = 1 and CR4.PGE = 1: the translation survives CR3 writes.
    pub global: bool,
    /// The leaf's protection key (bits 62:59), 0 unless protection keys are on.
    pub pkey: u8,
    /// The entry read at each level, indexed by `level - 1`, with the A/D flags this walk set;
    /// meaningful for levels `level..=top_level`.
    pub entries: [u64; 5],
    /// The frame of the table read at each level, indexed by `level - 1`; meaningful for levels
    /// `level..=top_level`. These are the frames a shadow page must write-track.
    pub table_gfns: [Gfn; 5],
}

impl Translation {
    /// The translation of `gva` with paging off: physical = linear, everything allowed.
    const fn identity(gva: Gva) -> Translation {
        Translation {
            gpa: Gpa(gva.0),
            page_size: PageSize::Size4K,
            level: 0,
            top_level: 0,
            access: PteAccess::ALL,
            global: false,
            pkey: 0,
            entries: [0; 5],
            table_gfns: [Gfn(0); 5],
        }
    }

    /// The leaf entry, 0 when paging is off.
    pub const fn leaf_pte(&self) -> u64 {
        if self.level == 0 {
            0
        } else {
            self.entries[self.level as usize - 1]
        }
    }

    /// The frames of the tables read, leaf level first.
    pub fn visited_tables(&self) -> &[Gfn] {
        if self.level == 0 {
            return &[];
        }
        &self.table_gfns[usize::from(self.level) - 1..usize::from(self.top_level)]
    }
}

/// One paging-structure entry a walk read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelEntry {
    /// Its level (5 = PML5E ... 1 = PTE).
    pub level: u8,
    /// Where it lives. For the PAE PDPTE this is where the register was loaded from: the value
    /// is the register's, which memory may no longer hold.
    pub gpa: Gpa,
    /// The value read, before any A/D update.
    pub value: u64,
}

/// A walk with every entry it read, for the gdbstub's `monitor walk` and the TUI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkTrace {
    /// The entries read, top level first. A walk that restarted lists only its last pass.
    pub entries: Vec<LevelEntry>,
    /// How the walk ended.
    pub result: Result<Translation, PageFault>,
}

/// Receives each entry a walk reads. `()` drops them, so untraced walks pay nothing.
trait Recorder {
    /// The walk is starting (again): forget earlier entries.
    fn restart(&mut self);
    /// An entry was read.
    fn record(&mut self, entry: LevelEntry);
}

impl Recorder for () {
    fn restart(&mut self) {}
    fn record(&mut self, _entry: LevelEntry) {}
}

impl Recorder for Vec<LevelEntry> {
    fn restart(&mut self) {
        self.clear();
    }
    fn record(&mut self, entry: LevelEntry) {
        self.push(entry);
    }
}

/// Bits 31:5 of CR3 in PAE paging: the 32-byte-aligned PDPT.
const PAE_PDPT_MASK: u64 = 0xffff_ffe0;

/// One vCPU's page-table walker: CPU state that walks read plus tables precomputed per role.
#[derive(Clone, Debug)]
pub struct Walker {
    role: CpuRole,
    maxphyaddr: u8,
    gbpages: bool,
    permissions: PermissionTable,
    reserved: ReservedBits,
    /// Bit n set: PS = 1 at level n makes the entry a leaf.
    large_page_levels: u8,
    cr3: u64,
    pdptrs: [u64; 4],
    pkru: u32,
}

impl Walker {
    /// A walker for a processor with `maxphyaddr` physical-address bits (CPUID 0x8000_0008
    /// EAX bits 7:0) that does or does not support 1 GiB pages (`gbpages`, CPUID 0x8000_0001
    /// EDX bit 26). It starts with paging off, CR3 = 0, PDPTEs and PKRU zero.
    pub fn new(maxphyaddr: u8, gbpages: bool) -> Result<Walker, WalkerError> {
        if !(32..=52).contains(&maxphyaddr) {
            return Err(WalkerError::MaxPhyAddr(maxphyaddr));
        }
        let role = CpuRole::default();
        Ok(Walker {
            role,
            maxphyaddr,
            gbpages,
            permissions: PermissionTable::new(role),
            reserved: ReservedBits::new(role, maxphyaddr, gbpages),
            large_page_levels: Self::large_page_levels(role, gbpages),
            cr3: 0,
            pdptrs: [0; 4],
            pkru: 0,
        })
    }

    fn large_page_levels(role: CpuRole, gbpages: bool) -> u8 {
        match role.paging_mode() {
            PagingMode::None => 0,
            PagingMode::Bits32 if role.pse() => 1 << 2,
            PagingMode::Bits32 => 0,
            PagingMode::Pae => 1 << 2,
            PagingMode::Level4 | PagingMode::Level5 => 1 << 2 | u8::from(gbpages) << 3,
        }
    }

    /// Switches to `role`, rebuilding the permission and reserved-bit tables only if it
    /// differs from the current one (a compare when it does not).
    pub fn set_role(&mut self, role: CpuRole) {
        if role == self.role {
            return;
        }
        self.role = role;
        self.permissions = PermissionTable::new(role);
        self.reserved = ReservedBits::new(role, self.maxphyaddr, self.gbpages);
        self.large_page_levels = Self::large_page_levels(role, self.gbpages);
    }

    /// The current role.
    pub const fn role(&self) -> CpuRole {
        self.role
    }

    /// Sets CR3. The walker uses bits 31:12 in 32-bit paging, bits 51:12 in IA-32e paging, and
    /// in PAE paging only the PDPTE registers (CR3 then names where they came from).
    pub fn set_cr3(&mut self, cr3: u64) {
        self.cr3 = cr3;
    }

    /// The current CR3.
    pub const fn cr3(&self) -> u64 {
        self.cr3
    }

    /// Sets the four PAE PDPTE registers, normally to what [`Walker::load_pdptrs`] returned.
    pub fn set_pdptrs(&mut self, pdptrs: [u64; 4]) {
        self.pdptrs = pdptrs;
    }

    /// The PAE PDPTE registers.
    pub const fn pdptrs(&self) -> [u64; 4] {
        self.pdptrs
    }

    /// Sets PKRU, the protection-key rights register (2 bits per key: AD = bit 2k, WD = 2k + 1).
    pub fn set_pkru(&mut self, pkru: u32) {
        self.pkru = pkru;
    }

    /// The current PKRU.
    pub const fn pkru(&self) -> u32 {
        self.pkru
    }

    /// MAXPHYADDR, as given at construction.
    pub const fn maxphyaddr(&self) -> u8 {
        self.maxphyaddr
    }

    /// Whether 1 GiB pages are supported, as given at construction.
    pub const fn gbpages(&self) -> bool {
        self.gbpages
    }

    /// The permission table of the current role.
    pub const fn permissions(&self) -> &PermissionTable {
        &self.permissions
    }

    /// The reserved-bit masks of the current role.
    pub const fn reserved_bits(&self) -> &ReservedBits {
        &self.reserved
    }

    /// Reads and checks the four PDPTEs that a MOV to CR3 (or a MOV to CR0/CR4 that enters or
    /// stays in PAE paging) loads into the PDPTE registers (SDM 4.4.1).
    ///
    /// The PDPT is the 32-byte-aligned table at CR3 bits 31:5. A present PDPTE with a reserved
    /// bit set is an error, as is a PDPT outside RAM (KVM's `load_pdptrs` fails then too); the
    /// CPU turns either into #GP(0) and leaves CR3 and the registers unchanged. Nothing is
    /// stored here: the caller commits with [`Walker::set_pdptrs`] and [`Walker::set_cr3`].
    pub fn load_pdptrs<M: PageTableMemory + ?Sized>(
        &self,
        cr3: u64,
        mem: &M,
    ) -> Result<[u64; 4], WalkerError> {
        let reserved = pae_pdpte_reserved(self.maxphyaddr);
        let mut pdptrs = [0; 4];
        for (index, pdpte) in pdptrs.iter_mut().enumerate() {
            let gpa = Gpa((cr3 & PAE_PDPT_MASK) + 8 * index as u64);
            let value = mem.read_u64(gpa).ok_or(WalkerError::PdptNotInRam(gpa))?;
            if value & PTE_PRESENT != 0 && value & reserved != 0 {
                return Err(WalkerError::PdpteReserved { index, value });
            }
            *pdpte = value;
        }
        Ok(pdptrs)
    }

    /// Translates `gva` for `access`, as the processor would.
    ///
    /// Allocates nothing. With [`WalkMode::Update`] it sets A/D flags in guest memory when the
    /// access is allowed; with [`WalkMode::Probe`] it only reads.
    pub fn walk<M: PageTableMemory + ?Sized>(
        &self,
        mem: &M,
        gva: Gva,
        access: Access,
        mode: WalkMode,
    ) -> Result<Translation, PageFault> {
        self.walk_recorded(mem, gva, access, mode, &mut ())
    }

    /// [`Walker::walk`], also returning every entry read: the "walk ADDR" debugging view.
    pub fn walk_trace<M: PageTableMemory + ?Sized>(
        &self,
        mem: &M,
        gva: Gva,
        access: Access,
        mode: WalkMode,
    ) -> WalkTrace {
        let mut entries = Vec::with_capacity(5);
        let result = self.walk_recorded(mem, gva, access, mode, &mut entries);
        WalkTrace { entries, result }
    }

    /// A #PF at `gva` for `access`, with `cause` (0, P, or P | RSVD) in the error code.
    fn fault(&self, gva: Gva, access: Access, cause: u32) -> PageFault {
        PageFault {
            error_code: cause | self.permissions.access_error_bits(access),
            address: gva,
        }
    }

    /// The one walk routine; `recorder` is `()` for plain walks.
    fn walk_recorded<M: PageTableMemory + ?Sized, R: Recorder>(
        &self,
        mem: &M,
        gva: Gva,
        access: Access,
        mode: WalkMode,
        recorder: &mut R,
    ) -> Result<Translation, PageFault> {
        let paging = self.role.paging_mode();
        let gva = if paging.linear_bits() == 32 {
            Gva(gva.0 & 0xffff_ffff)
        } else {
            gva
        };
        if paging == PagingMode::None {
            return Ok(Translation::identity(gva));
        }
        let narrow = paging == PagingMode::Bits32;
        let (entry_size, addr_mask) = if narrow {
            (4, PTE_ADDR_MASK_32)
        } else {
            (8, PTE_ADDR_MASK_64)
        };

        // Restarted when an A/D compare-exchange finds an entry changed since it was read:
        // the new value may map elsewhere or forbid the access, so nothing read can be kept.
        'walk: loop {
            recorder.restart();
            let mut level = paging.root_level();
            let mut table = self.cr3 & addr_mask;
            if paging == PagingMode::Pae {
                let index = paging.index(gva, 3);
                let pdpte = self.pdptrs[index as usize];
                let gpa = Gpa((self.cr3 & PAE_PDPT_MASK) + 8 * index);
                recorder.record(LevelEntry {
                    level,
                    gpa,
                    value: pdpte,
                });
                // The registers were checked for reserved bits when loaded; PDPTEs grant no
                // rights and have no A flag, so only P matters here.
                if pdpte & PTE_PRESENT == 0 {
                    return Err(self.fault(gva, access, 0));
                }
                table = pdpte & addr_mask;
                level -= 1;
            }
            let top_level = level;

            let mut entries = [0u64; 5];
            let mut entry_gpas = [Gpa(0); 5];
            let mut table_gfns = [Gfn(0); 5];
            // The AND of every entry with XD inverted: bits 1 and 2 are the combined R/W and
            // U/S, bit 63 is set iff no level forbids execution.
            let mut combined = u64::MAX;
            let leaf = loop {
                let gpa = Gpa(table + paging.index(gva, level) * entry_size);
                let entry = if narrow {
                    mem.read_u32(gpa).map(u64::from)
                } else {
                    mem.read_u64(gpa)
                };
                let Some(entry) = entry else {
                    return Err(self.fault(gva, access, 0));
                };
                recorder.record(LevelEntry {
                    level,
                    gpa,
                    value: entry,
                });
                if entry & PTE_PRESENT == 0 {
                    return Err(self.fault(gva, access, 0));
                }
                if self.reserved.reserved_in(entry, level) != 0 {
                    return Err(self.fault(gva, access, PageFault::PRESENT | PageFault::RSVD));
                }
                combined &= entry ^ PTE_NX;
                let slot = usize::from(level) - 1;
                entries[slot] = entry;
                entry_gpas[slot] = gpa;
                table_gfns[slot] = Gpa(table).gfn();
                if level == 1
                    || (entry & PTE_PAGE_SIZE != 0 && self.large_page_levels & (1 << level) != 0)
                {
                    break entry;
                }
                table = entry & addr_mask;
                level -= 1;
            };

            let rights = PteAccess::from_combined_entries(combined);
            let pkey = if self.role.pke() {
                (leaf >> PTE_PKEY_SHIFT) as u8 & 0xf
            } else {
                0
            };
            if let Some(error_code) = self
                .permissions
                .permission_fault(access, rights, pkey, self.pkru)
            {
                return Err(PageFault {
                    error_code,
                    address: gva,
                });
            }

            // SDM 4.8: A in every entry used, D in the leaf of a write. The SDM lets a processor
            // set A in entries it used even when the access then faults; KVM sets the flags only
            // once the permission check has passed, and so does this walker (every fault above
            // has returned by now), which keeps one outcome per access to test against.
            if mode == WalkMode::Update {
                for l in (level..=top_level).rev() {
                    let slot = usize::from(l) - 1;
                    let old = entries[slot];
                    let dirty = if l == level && access.kind == AccessKind::Write {
                        PTE_DIRTY
                    } else {
                        0
                    };
                    let new = old | PTE_ACCESSED | dirty;
                    if new == old {
                        continue;
                    }
                    let swapped = if narrow {
                        mem.cmpxchg_u32(entry_gpas[slot], old as u32, new as u32)
                    } else {
                        mem.cmpxchg_u64(entry_gpas[slot], old, new)
                    };
                    match swapped {
                        Some(true) => entries[slot] = new,
                        Some(false) => continue 'walk,
                        None => {}
                    }
                }
            }

            let page_size = match (level, narrow) {
                (1, _) => PageSize::Size4K,
                (2, true) => PageSize::Size4M,
                (2, false) => PageSize::Size2M,
                _ => PageSize::Size1G,
            };
            let offset = gva.0 & page_size.offset_mask();
            let base = if page_size == PageSize::Size4M {
                pse36_page_base(leaf).0
            } else {
                leaf & addr_mask & !page_size.offset_mask()
            };
            return Ok(Translation {
                gpa: Gpa(base | offset),
                page_size,
                level,
                top_level,
                access: rights,
                global: self.role.pge() && leaf & PTE_GLOBAL != 0,
                pkey,
                entries,
                table_gfns,
            });
        }
    }
}
