//! Page-level protection (SDM 4.6) and the #PF error code (SDM 4.7): U/S, R/W with CR0.WP,
//! XD with EFER.NXE, SMEP, SMAP with EFLAGS.AC and implicit accesses, protection keys.

use umbra_mmu::addr::Gva;
use umbra_mmu::role::{CR0_WP, CR4_PKE, CR4_SMAP, CR4_SMEP, EFER_NXE};
use umbra_mmu::walker::{Access, AccessKind, PageFault, Privilege, WalkMode, Walker};

use crate::support::*;

const SUP: Privilege = Privilege::Supervisor;
const USER: Privilege = Privilege::User;
const IMPLICIT: Privilege = Privilege::ImplicitSupervisor;

const PF_P: u32 = PageFault::PRESENT;
const PF_W: u32 = PageFault::WRITE;
const PF_U: u32 = PageFault::USER;
const PF_RSVD: u32 = PageFault::RSVD;
const PF_I: u32 = PageFault::FETCH;
const PF_PK: u32 = PageFault::PK;

/// The error code of `access` to `GVA` mapped by a 4-level walk whose leaf PTE has
/// `leaf_flags` and whose upper entries have `upper`; 0 when the access is allowed.
fn long_outcome(regs: Regs, leaf_flags: u64, upper: u64, access: Access) -> u32 {
    let (guest, walker, _) = long_guest(regs, 1, 0x0abc_d000 | leaf_flags, upper);
    outcome(&walker, &guest, GVA, access)
}

fn outcome(walker: &Walker, guest: &Guest, gva: u64, access: Access) -> u32 {
    let probe = walker.walk(&guest.mem, Gva(gva), access, WalkMode::Probe);
    let update = walker.walk(&guest.mem, Gva(gva), access, WalkMode::Update);
    assert_eq!(probe.map(|t| t.gpa), update.map(|t| t.gpa));
    match update {
        Ok(_) => 0,
        Err(fault) => {
            assert_eq!(fault.address, Gva(gva));
            assert_ne!(
                fault.error_code, 0,
                "not-present faults are not expected here"
            );
            fault.error_code
        }
    }
}

#[test]
fn user_supervisor_and_read_write_with_cr0_wp() {
    // SDM 4.6.1. User accesses need U/S = 1, user writes also R/W = 1. Supervisor reads always
    // succeed (no SMAP here); supervisor writes need R/W = 1 only when CR0.WP = 1.
    for wp in [false, true] {
        let regs = if wp {
            LONG4
        } else {
            LONG4.without(CR0_WP, 0, 0)
        };
        for user_page in [false, true] {
            for writable in [false, true] {
                let flags = P | if user_page { U } else { 0 } | if writable { W } else { 0 };
                let cases = [
                    (read(USER), !user_page, PF_U),
                    (write(USER), !user_page || !writable, PF_W | PF_U),
                    (read(SUP), false, 0),
                    (write(SUP), wp && !writable, PF_W),
                    (write(IMPLICIT), wp && !writable, PF_W),
                ];
                for (access, faults, bits) in cases {
                    let expected = if faults { PF_P | bits } else { 0 };
                    assert_eq!(
                        long_outcome(regs, flags, flags, access),
                        expected,
                        "wp={wp} user_page={user_page} writable={writable} {access:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn rights_are_combined_over_all_levels() {
    // U/S = 0 in the PML4E alone makes the whole page supervisor-only; likewise R/W.
    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P | W | U, P | W | U);
    guest.mem.write_u64(e[4], guest.mem.read_u64_raw(e[4]) & !U);
    assert_eq!(outcome(&walker, &guest, GVA, read(USER)), PF_P | PF_U);
    let (guest, walker, e) = long_guest(LONG4, 1, 0x0abc_d000 | P | W | U, P | W | U);
    guest.mem.write_u64(e[3], guest.mem.read_u64_raw(e[3]) & !W);
    assert_eq!(
        outcome(&walker, &guest, GVA, write(USER)),
        PF_P | PF_W | PF_U
    );
    assert_eq!(outcome(&walker, &guest, GVA, write(SUP)), PF_P | PF_W);
    let t = walker
        .walk(&guest.mem, Gva(GVA), read(USER), WalkMode::Probe)
        .unwrap();
    assert!(t.access.user() && !t.access.writable());
}

#[test]
fn execute_disable_with_nxe() {
    // XD in the leaf or in any upper entry forbids fetches when EFER.NXE = 1.
    assert_eq!(long_outcome(LONG4, P | NX, P, fetch(SUP)), PF_P | PF_I);
    assert_eq!(
        long_outcome(LONG4, P | U | NX, P | U, fetch(USER)),
        PF_P | PF_U | PF_I
    );
    assert_eq!(long_outcome(LONG4, P, P | NX, fetch(SUP)), PF_P | PF_I);
    assert_eq!(long_outcome(LONG4, P | NX, P, read(SUP)), 0);
    assert_eq!(long_outcome(LONG4, P, P, fetch(SUP)), 0);
    // With EFER.NXE = 0 bit 63 is reserved, at the leaf and above, for any access; I/D is not
    // reported without SMEP.
    let no_nx = LONG4.without(0, 0, EFER_NXE);
    assert_eq!(long_outcome(no_nx, P | NX, P, read(SUP)), PF_P | PF_RSVD);
    assert_eq!(long_outcome(no_nx, P | NX, P, fetch(SUP)), PF_P | PF_RSVD);
    assert_eq!(
        long_outcome(no_nx, P, P | NX, fetch(USER)),
        PF_P | PF_RSVD | PF_U
    );
    assert_eq!(
        long_outcome(no_nx.with(0, CR4_SMEP, 0), P, P | NX, fetch(USER)),
        PF_P | PF_RSVD | PF_U | PF_I
    );
    // PAE paging has XD too.
    let gva = 0x0040_1000;
    let (guest, walker, _) = pae_guest(PAE, gva, 1, 0x0abc_d000 | P | NX, P);
    assert_eq!(outcome(&walker, &guest, gva, fetch(SUP)), PF_P | PF_I);
    let (guest, walker, _) =
        pae_guest(PAE.without(0, 0, EFER_NXE), gva, 1, 0x0abc_d000 | P | NX, P);
    assert_eq!(outcome(&walker, &guest, gva, fetch(SUP)), PF_P | PF_RSVD);
}

#[test]
fn smep_stops_supervisor_fetches_from_user_pages() {
    let smep = LONG4.with(0, CR4_SMEP, 0);
    assert_eq!(long_outcome(smep, P | U, P | U, fetch(SUP)), PF_P | PF_I);
    assert_eq!(long_outcome(smep, P | U, P | U, fetch(USER)), 0);
    assert_eq!(long_outcome(smep, P | U, P | U, read(SUP)), 0);
    assert_eq!(
        long_outcome(smep, P, P | U, fetch(SUP)),
        0,
        "a supervisor page"
    );
    assert_eq!(long_outcome(LONG4, P | U, P | U, fetch(SUP)), 0, "SMEP off");
    // SMEP applies in 32-bit paging too, and makes fetch faults report I/D there.
    let gva = 0x0040_1000;
    let (guest, walker, _) = bits32_guest(
        BITS32.with(0, CR4_SMEP, 0),
        gva,
        1,
        0x0abc_d000 | P | U,
        P | U,
    );
    assert_eq!(outcome(&walker, &guest, gva, fetch(SUP)), PF_P | PF_I);
}

#[test]
fn smap_stops_supervisor_data_accesses_to_user_pages() {
    let smap = LONG4.with(0, CR4_SMAP, 0);
    let user_page = P | W | U;
    assert_eq!(long_outcome(smap, user_page, user_page, read(SUP)), PF_P);
    assert_eq!(
        long_outcome(smap, user_page, user_page, write(SUP)),
        PF_P | PF_W
    );
    // Explicit accesses with EFLAGS.AC = 1 are allowed.
    assert_eq!(
        long_outcome(smap, user_page, user_page, read(SUP).with_eflags_ac(true)),
        0
    );
    assert_eq!(
        long_outcome(smap, user_page, user_page, write(SUP).with_eflags_ac(true)),
        0
    );
    // Implicit supervisor accesses (e.g. the GDT at CPL 3) fault whatever EFLAGS.AC says, and
    // report a supervisor access (U/S = 0 in the error code).
    assert_eq!(
        long_outcome(
            smap,
            user_page,
            user_page,
            read(IMPLICIT).with_eflags_ac(true)
        ),
        PF_P
    );
    assert_eq!(
        long_outcome(smap, user_page, user_page, write(IMPLICIT)),
        PF_P | PF_W
    );
    // User accesses, fetches and supervisor pages are not SMAP's business.
    assert_eq!(long_outcome(smap, user_page, user_page, read(USER)), 0);
    assert_eq!(long_outcome(smap, user_page, user_page, fetch(SUP)), 0);
    assert_eq!(long_outcome(smap, P | W, P | W | U, read(SUP)), 0);
    assert_eq!(long_outcome(smap, P | W, P | W, read(IMPLICIT)), 0);
    assert_eq!(
        long_outcome(LONG4, user_page, user_page, read(IMPLICIT)),
        0,
        "SMAP off"
    );
}

#[test]
fn smap_with_wp_clear_still_blocks_writes_unless_ac() {
    // With CR0.WP = 0 a supervisor write ignores R/W but SMAP still applies (SDM 4.6.1).
    let regs = LONG4.without(CR0_WP, 0, 0).with(0, CR4_SMAP, 0);
    assert_eq!(long_outcome(regs, P | U, P | U, write(SUP)), PF_P | PF_W);
    assert_eq!(
        long_outcome(regs, P | U, P | U, write(SUP).with_eflags_ac(true)),
        0
    );
}

/// PKRU with AD (`ad`) and WD (`wd`) set for key `key` only.
fn pkru(key: u32, ad: bool, wd: bool) -> u32 {
    (u32::from(ad) | u32::from(wd) << 1) << (2 * key)
}

fn pkey_outcome(regs: Regs, pkru_value: u32, user_page: bool, access: Access) -> u32 {
    let u = if user_page { U } else { 0 };
    let (guest, mut walker, _) = long_guest(regs, 1, 0x0abc_d000 | 5 << 59 | P | W | u, P | W | U);
    walker.set_pkru(pkru_value);
    outcome(&walker, &guest, GVA, access)
}

#[test]
fn protection_keys_guard_data_accesses_to_user_pages() {
    let pke = LONG4.with(0, CR4_PKE, 0);
    let ad = pkru(5, true, false);
    let wd = pkru(5, false, true);
    assert_eq!(pkey_outcome(pke, ad, true, read(USER)), PF_P | PF_U | PF_PK);
    assert_eq!(
        pkey_outcome(pke, ad, true, write(USER)),
        PF_P | PF_W | PF_U | PF_PK
    );
    assert_eq!(pkey_outcome(pke, wd, true, read(USER)), 0);
    assert_eq!(
        pkey_outcome(pke, wd, true, write(USER)),
        PF_P | PF_W | PF_U | PF_PK
    );
    // Fetches are never checked; other keys do not matter; supervisor pages have no key.
    assert_eq!(pkey_outcome(pke, ad, true, fetch(USER)), 0);
    assert_eq!(
        pkey_outcome(pke, !pkru(5, true, true), true, write(USER)),
        0
    );
    assert_eq!(pkey_outcome(pke, ad, false, read(SUP)), 0);
    // Supervisor accesses to user pages are checked too; WD stops them only with CR0.WP = 1.
    assert_eq!(pkey_outcome(pke, ad, true, read(SUP)), PF_P | PF_PK);
    assert_eq!(pkey_outcome(pke, wd, true, write(SUP)), PF_P | PF_W | PF_PK);
    assert_eq!(
        pkey_outcome(pke.without(CR0_WP, 0, 0), wd, true, write(SUP)),
        0
    );
    assert_eq!(
        pkey_outcome(pke.without(CR0_WP, 0, 0), ad, true, write(SUP)),
        PF_P | PF_W | PF_PK
    );
    // CR4.PKE = 0: PKRU is ignored.
    assert_eq!(pkey_outcome(LONG4, ad, true, read(USER)), 0);
}

#[test]
fn pk_is_reported_alongside_a_rights_violation() {
    // SDM 4.7: PK is set whenever the key forbids the access, even if the rights do too.
    let pke = LONG4.with(0, CR4_PKE, 0);
    let (guest, mut walker, _) = long_guest(pke, 1, 0x0abc_d000 | 5 << 59 | P | U, P | W | U);
    walker.set_pkru(pkru(5, false, true));
    assert_eq!(
        outcome(&walker, &guest, GVA, write(USER)),
        PF_P | PF_W | PF_U | PF_PK
    );
    walker.set_pkru(0);
    assert_eq!(
        outcome(&walker, &guest, GVA, write(USER)),
        PF_P | PF_W | PF_U
    );
}

#[test]
fn instruction_fetch_flag_follows_sdm_4_7() {
    // I/D is set for fetches only with CR4.SMEP = 1, or with EFER.NXE = 1 and CR4.PAE = 1.
    let gva = 0x0040_1000;
    let not_present_fetch = |walker: &Walker, guest: &Guest| {
        let access = Access::new(AccessKind::Fetch, SUP);
        walker
            .walk(&guest.mem, Gva(gva), access, WalkMode::Update)
            .unwrap_err()
            .error_code
    };
    let bits32_nxe = BITS32.with(0, 0, EFER_NXE);
    let (guest, walker, _) = bits32_guest(bits32_nxe, gva, 1, 0, P);
    assert_eq!(
        not_present_fetch(&walker, &guest),
        0,
        "32-bit paging ignores NXE"
    );
    let (guest, walker, _) = bits32_guest(bits32_nxe.with(0, CR4_SMEP, 0), gva, 1, 0, P);
    assert_eq!(not_present_fetch(&walker, &guest), PF_I);
    let (guest, walker, _) = pae_guest(PAE.without(0, 0, EFER_NXE), gva, 1, 0, P);
    assert_eq!(not_present_fetch(&walker, &guest), 0);
    let (guest, walker, _) = pae_guest(PAE, gva, 1, 0, P);
    assert_eq!(not_present_fetch(&walker, &guest), PF_I);
    let (guest, walker, _) = long_guest(LONG4, 1, 0, P);
    let access = fetch(USER);
    let fault = walker
        .walk(&guest.mem, Gva(GVA), access, WalkMode::Update)
        .unwrap_err();
    assert_eq!(fault.error_code, PF_U | PF_I);
    let (guest, walker, _) = long_guest(LONG4.without(0, 0, EFER_NXE), 1, 0, P);
    let fault = walker
        .walk(&guest.mem, Gva(GVA), access, WalkMode::Update)
        .unwrap_err();
    assert_eq!(fault.error_code, PF_U);
}
