//! Access rights as tables precomputed per CPU role (KVM's `permissions[]` and `pkru_mask`,
//! built by `update_permission_bitmask` and `update_pkru_bitmask`). How the tables are indexed
//! is told in the [walker module docs](crate::walker#the-permission-table).

use crate::role::CpuRole;
use crate::walker::PageFault;

/// Who makes an access, as the SDM's 4.6 divides accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Privilege {
    /// A user-mode access: any access made at CPL 3 that is not an implicit supervisor access.
    User,
    /// An explicit supervisor-mode access: made at CPL 0-2.
    Supervisor,
    /// An implicit supervisor-mode access, at any CPL: reading the GDT, LDT, IDT or TSS, and the
    /// other system-structure accesses of SDM 4.6. EFLAGS.AC never lifts SMAP for these.
    ImplicitSupervisor,
}

/// What an access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// A data read.
    Read,
    /// A data write (including the write half of a read-modify-write).
    Write,
    /// An instruction fetch.
    Fetch,
}

/// One memory access, as far as page-level protection cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// User, explicit supervisor or implicit supervisor.
    pub privilege: Privilege,
    /// EFLAGS.AC at the time of the access: with CR4.SMAP = 1 it lets explicit supervisor data
    /// accesses reach user pages (SDM 4.6.1).
    pub eflags_ac: bool,
}

impl Access {
    /// An access of `kind` by `privilege` with EFLAGS.AC clear.
    pub const fn new(kind: AccessKind, privilege: Privilege) -> Access {
        Access {
            kind,
            privilege,
            eflags_ac: false,
        }
    }

    /// The same access with EFLAGS.AC = `ac`.
    pub const fn with_eflags_ac(self, ac: bool) -> Access {
        Access {
            eflags_ac: ac,
            ..self
        }
    }

    /// The permission-table row for this access (see the walker module docs).
    const fn row(self) -> usize {
        let mut row = 0;
        match self.kind {
            AccessKind::Read => {}
            AccessKind::Write => row |= ROW_WRITE,
            AccessKind::Fetch => row |= ROW_FETCH,
        }
        match self.privilege {
            Privilege::User => row |= ROW_USER,
            Privilege::Supervisor if self.eflags_ac => row |= ROW_SMAP_EXEMPT,
            Privilege::Supervisor | Privilege::ImplicitSupervisor => {}
        }
        row
    }
}

const ROW_WRITE: usize = 1 << 0;
const ROW_USER: usize = 1 << 1;
const ROW_FETCH: usize = 1 << 2;
/// In the fault table: SMAP does not apply. In the key table: the page is a user page.
const ROW_SMAP_EXEMPT: usize = 1 << 3;
const ROW_PAGE_USER: usize = 1 << 3;

/// The rights a translation grants, each the AND of that right over every level of the walk
/// (SDM 4.6.1: an access is allowed only if every paging-structure entry allows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PteAccess(u8);

impl PteAccess {
    /// Instruction fetches allowed: XD = 0 at every level (or no XD bit in the mode).
    pub const EXECUTABLE: u8 = 1 << 0;
    /// Writes allowed: R/W = 1 at every level.
    pub const WRITABLE: u8 = 1 << 1;
    /// A user-mode page: U/S = 1 at every level.
    pub const USER: u8 = 1 << 2;
    /// Everything allowed, as with paging off.
    pub const ALL: PteAccess = PteAccess(Self::EXECUTABLE | Self::WRITABLE | Self::USER);

    /// Rights from `EXECUTABLE | WRITABLE | USER` bits; other bits are dropped.
    pub const fn from_bits(bits: u8) -> PteAccess {
        PteAccess(bits & Self::ALL.0)
    }

    /// Rights from entry bits ANDed together after each entry's XD bit was inverted, so that
    /// one AND per level combines all three rights (as KVM's walker does). R/W and U/S sit at
    /// bits 1 and 2 of an entry, where `WRITABLE` and `USER` are; the inverted XD (bit 63)
    /// becomes `EXECUTABLE`.
    pub(crate) const fn from_combined_entries(and_of_entries_with_xd_inverted: u64) -> PteAccess {
        let e = and_of_entries_with_xd_inverted;
        PteAccess((e >> 63) as u8 | (e as u8 & (Self::WRITABLE | Self::USER)))
    }

    /// The packed bits: the column index in the permission table.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Instruction fetches allowed.
    pub const fn executable(self) -> bool {
        self.0 & Self::EXECUTABLE != 0
    }

    /// Writes allowed (for supervisor writes only with CR0.WP = 1 does a clear bit fault).
    pub const fn writable(self) -> bool {
        self.0 & Self::WRITABLE != 0
    }

    /// A user-mode page.
    pub const fn user(self) -> bool {
        self.0 & Self::USER != 0
    }
}

/// The page-level protection rules of one CPU role, precomputed: see
/// [the walker module docs](crate::walker#the-permission-table) for its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PermissionTable {
    /// Row: access; bit n: pages with rights n fault.
    faults: [u8; 16],
    /// Row: access with bit 3 = user page; value: the PKRU bits (AD = 1, WD = 2) that apply.
    pkey_checks: [u8; 16],
    /// Fetch faults report I/D: CR4.SMEP = 1, or EFER.NXE = 1 with CR4.PAE = 1 (SDM 4.7).
    fetch_reports_id: bool,
}

/// Bit n of the result is set when rights value n has `right`.
const fn rights_with(right: u8) -> u8 {
    let mut mask = 0;
    let mut n = 0;
    while n < 8 {
        if n & right != 0 {
            mask |= 1 << n;
        }
        n += 1;
    }
    mask
}

impl PermissionTable {
    /// The table for `role`.
    pub fn new(role: CpuRole) -> PermissionTable {
        let executable = rights_with(PteAccess::EXECUTABLE);
        let writable = rights_with(PteAccess::WRITABLE);
        let user_page = rights_with(PteAccess::USER);
        let mut faults = [0; 16];
        let mut pkey_checks = [0; 16];
        for (row, (fault, pkey)) in faults.iter_mut().zip(&mut pkey_checks).enumerate() {
            let write = row & ROW_WRITE != 0;
            let user = row & ROW_USER != 0;
            let fetch = row & ROW_FETCH != 0;

            // SDM 4.6.1. User accesses need U = 1 everywhere and, for writes, R/W = 1.
            // Supervisor writes need R/W = 1 only with CR0.WP = 1.
            let write_fault = if write && (user || role.wp()) {
                !writable
            } else {
                0
            };
            let user_fault = if user { !user_page } else { 0 };
            // With EFER.NXE = 0 nothing is non-executable: XD is a reserved bit then.
            let nx_fault = if fetch && role.nxe() { !executable } else { 0 };
            // Supervisor accesses to user pages: fetches fault with SMEP, data accesses with
            // SMAP unless the access is explicit and EFLAGS.AC = 1.
            let supervisor_on_user = if user { 0 } else { user_page };
            let smep_fault = if fetch && role.smep() {
                supervisor_on_user
            } else {
                0
            };
            let smap_applies = !fetch && row & ROW_SMAP_EXEMPT == 0;
            let smap_fault = if smap_applies && role.smap() {
                supervisor_on_user
            } else {
                0
            };
            *fault = write_fault | user_fault | nx_fault | smep_fault | smap_fault;

            // SDM 4.6.2: PKRU governs data accesses to user pages, at any CPL. WD stops user
            // writes, and supervisor writes only when CR0.WP = 1.
            let page_user = row & ROW_PAGE_USER != 0;
            let check_ad = role.pke() && page_user && !fetch;
            let check_wd = check_ad && write && (user || role.wp());
            *pkey = u8::from(check_ad) | u8::from(check_wd) << 1;
        }
        PermissionTable {
            faults,
            pkey_checks,
            fetch_reports_id: role.smep() || role.nxe(),
        }
    }

    /// The error-code bits every #PF for `access` carries: W for writes, U for user accesses
    /// (never for implicit supervisor ones) and I/D for fetches where SDM 4.7 reports it.
    pub const fn access_error_bits(&self, access: Access) -> u32 {
        let mut code = 0;
        match access.kind {
            AccessKind::Read => {}
            AccessKind::Write => code |= PageFault::WRITE,
            AccessKind::Fetch if self.fetch_reports_id => code |= PageFault::FETCH,
            AccessKind::Fetch => {}
        }
        if matches!(access.privilege, Privilege::User) {
            code |= PageFault::USER;
        }
        code
    }

    /// The #PF error code if `access` to a page with rights `rights` and protection key `pkey`
    /// faults under PKRU value `pkru`, `None` if it is allowed (KVM's `permission_fault`).
    pub const fn permission_fault(
        &self,
        access: Access,
        rights: PteAccess,
        pkey: u8,
        pkru: u32,
    ) -> Option<u32> {
        let row = access.row();
        let denied = (self.faults[row] >> rights.0) & 1 != 0;
        let key_row = (row & !ROW_SMAP_EXEMPT) | if rights.user() { ROW_PAGE_USER } else { 0 };
        let key_bits = (pkru >> (2 * (pkey as u32 & 0xf))) as u8 & 3 & self.pkey_checks[key_row];
        if !denied && key_bits == 0 {
            return None;
        }
        // SDM 4.7: PK is set whenever the key forbids the access, even if the rights do too.
        let pk = if key_bits != 0 { PageFault::PK } else { 0 };
        Some(PageFault::PRESENT | pk | self.access_error_bits(access))
    }
}
