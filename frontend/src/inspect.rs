//! The MMU as text a person reads: one page walk level by level, the cached roots, the TLB,
//! the memslots. gdb's monitor commands ([`crate::gdb::monitor`]) and the TUI
//! ([`crate::tui`]) both show them through these functions, so the two always agree.

use std::fmt::Write as _;

use umbra_mmu::addr::Gva;
use umbra_mmu::memslot::{MemslotFlags, Memslots};
use umbra_mmu::paging::{
    PTE_ACCESSED, PTE_DIRTY, PTE_GLOBAL, PTE_NX, PTE_PAGE_SIZE, PTE_PCD, PTE_PRESENT, PTE_PWT,
    PTE_USER, PTE_WRITABLE, PageSize, PagingMode,
};
use umbra_mmu::role::PageRole;
use umbra_mmu::tlb::TLB_ENTRIES;
use umbra_mmu::vcpu_mmu::MmuSnapshot;
use umbra_mmu::walker::{Access, AccessKind, LevelEntry, PageFault, Privilege, WalkMode, Walker};

/// A number as gdb users type it: `0x` hex or decimal.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// What a walk looks up: an address, and the access that would touch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkRequest {
    /// The guest virtual address.
    pub address: u64,
    /// Read, write or instruction fetch.
    pub kind: AccessKind,
    /// User or supervisor.
    pub privilege: Privilege,
}

impl WalkRequest {
    /// How a walk is asked for, after the command's name.
    pub const USAGE: &'static str = "ADDR [r|w|x] [user|kernel]";

    /// Parses `ADDR [r|w|x] [user|kernel]`, already split into words; `None` if they are not
    /// that.
    pub fn parse(words: &[&str]) -> Option<WalkRequest> {
        let (address, options) = words.split_first()?;
        let mut request = WalkRequest {
            address: parse_number(address)?,
            kind: AccessKind::Read,
            privilege: Privilege::Supervisor,
        };
        for option in options {
            match *option {
                "r" => request.kind = AccessKind::Read,
                "w" => request.kind = AccessKind::Write,
                "x" => request.kind = AccessKind::Fetch,
                "user" => request.privilege = Privilege::User,
                "kernel" => request.privilege = Privilege::Supervisor,
                _ => return None,
            }
        }
        Some(request)
    }
}

/// The walk of `request` through the guest's tables in `memory` as `walker` (the vCPU's
/// paging state) would do it, without side effects: a heading, each level's entry, and where
/// it ends (a physical address, or the #PF with its error code).
pub fn walk_report(walker: &Walker, memory: &Memslots, request: WalkRequest) -> String {
    let mode = walker.role().paging_mode();
    let trace = walker.walk_trace(
        memory,
        Gva(request.address),
        Access::new(request.kind, request.privilege),
        WalkMode::Probe,
    );
    let kind_name = match request.kind {
        AccessKind::Read => "read",
        AccessKind::Write => "write",
        AccessKind::Fetch => "fetch",
    };
    let who = if request.privilege == Privilege::User {
        "user"
    } else {
        "kernel"
    };
    let mut out = format!(
        "{kind_name} by {who} at {:#x}, cr3 {:#x}, {}\n",
        request.address,
        walker.cr3(),
        walker.role()
    );
    for entry in &trace.entries {
        out.push_str(&entry_line(mode, entry));
        out.push('\n');
    }
    match trace.result {
        Ok(translation) if translation.level == 0 => {
            let _ = write!(out, "  paging off: physical {:#x}", translation.gpa.0);
        }
        Ok(translation) => {
            let _ = write!(
                out,
                "  -> physical {:#x} ({} page{})",
                translation.gpa.0,
                page_size_name(translation.page_size),
                if translation.global { ", global" } else { "" }
            );
        }
        Err(fault) => {
            let _ = write!(
                out,
                "  -> #PF, error code {:#x} ({})",
                fault.error_code,
                error_code_names(fault.error_code)
            );
        }
    }
    out
}

/// "4 KiB", "2 MiB", ...
pub fn page_size_name(size: PageSize) -> &'static str {
    match size {
        PageSize::Size4K => "4 KiB",
        PageSize::Size2M => "2 MiB",
        PageSize::Size4M => "4 MiB",
        PageSize::Size1G => "1 GiB",
    }
}

/// The name of a paging-structure entry at `level`, as the SDM names it.
pub fn entry_name(level: u8) -> &'static str {
    match level {
        5 => "PML5E",
        4 => "PML4E",
        3 => "PDPTE",
        2 => "PDE",
        _ => "PTE",
    }
}

/// The flags set in a paging-structure entry, by their SDM names, separated by spaces.
pub fn entry_flags(value: u64) -> String {
    const FLAGS: [(u64, &str); 10] = [
        (PTE_PRESENT, "P"),
        (PTE_WRITABLE, "W"),
        (PTE_USER, "U"),
        (PTE_PWT, "PWT"),
        (PTE_PCD, "PCD"),
        (PTE_ACCESSED, "A"),
        (PTE_DIRTY, "D"),
        (PTE_PAGE_SIZE, "PS"),
        (PTE_GLOBAL, "G"),
        (PTE_NX, "XD"),
    ];
    let names: Vec<&str> = FLAGS
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    names.join(" ")
}

/// One paging-structure entry: its name and index, where it is, its value and flags.
pub fn entry_line(mode: PagingMode, entry: &LevelEntry) -> String {
    let index = (entry.gpa.0 & 0xfff) / mode.entry_size();
    format!(
        "  {:<10} at {:#x}: {:#018x} {}",
        format!("{}[{index}]", entry_name(entry.level)),
        entry.gpa.0,
        entry.value,
        entry_flags(entry.value)
    )
}

/// The bits of a #PF error code, by name.
pub fn error_code_names(code: u32) -> String {
    let mut names = vec![if code & PageFault::PRESENT != 0 {
        "protection"
    } else {
        "not present"
    }];
    for (bit, name) in [
        (PageFault::WRITE, "write"),
        (PageFault::USER, "user"),
        (PageFault::RSVD, "reserved bit"),
        (PageFault::FETCH, "fetch"),
        (PageFault::PK, "protection key"),
    ] {
        if code & bit != 0 {
            names.push(name);
        }
    }
    names.join(", ")
}

/// The CPU role, the page role of its roots, CR3 and the cached shadow roots (most recent
/// first, the current one starred), as `monitor mmu` shows them; `snapshot` is `None` on a
/// backend whose MMU is the kernel's, named `backend`.
pub fn roots_report(walker: &Walker, snapshot: Option<&MmuSnapshot>, backend: &str) -> String {
    let role = walker.role();
    let mut out = String::new();
    let _ = writeln!(out, "cpu role:  {role} ({:#x})", role.bits());
    if matches!(role.paging_mode(), PagingMode::Level4 | PagingMode::Level5) {
        let page = PageRole::root(role);
        let _ = writeln!(out, "page role: {page} ({:#x})", page.bits());
    }
    let _ = writeln!(out, "cr3:       {:#x}", walker.cr3());
    match snapshot {
        None => {
            let _ = write!(
                out,
                "{backend}: the MMU is the kernel's; its roots and TLB are not visible \
                 (monitor stats shows KVM's counters)"
            );
        }
        Some(snapshot) if !snapshot.shadowing => {
            let _ = write!(
                out,
                "no shadow roots in this paging mode: the TLB alone caches walks"
            );
        }
        Some(snapshot) => {
            let _ = writeln!(out, "cached roots, most recent first:");
            for (i, root) in snapshot.roots.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  {} root {:<4} cr3 {:#x} pcid {:#x}  {} ({:#x})  hits {}",
                    if i == 0 { "*" } else { " " },
                    root.id,
                    root.cr3 & 0x000f_ffff_ffff_f000,
                    root.cr3 & 0xfff,
                    root.role,
                    root.role.bits(),
                    root.hits
                );
            }
        }
    }
    out.trim_end().to_owned()
}

/// The TLB's occupancy and counters, as `monitor tlb` shows them.
pub fn tlb_report(snapshot: &MmuSnapshot) -> String {
    let c = snapshot.counters;
    format!(
        "TLB: {} of {TLB_ENTRIES} entries in use\n\
         hits {}, misses {} (shadow tree answered {}, guest walks {}), fills {}, \
         flushes {} whole, {} of some frames",
        snapshot.tlb_used,
        c.tlb_hits,
        c.tlb_misses,
        c.shadow_hits,
        c.walks,
        c.tlb_fills,
        c.tlb_flushes,
        c.tlb_frame_flushes
    )
}

/// One memslot, as a table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemslotRow {
    /// The slot's id.
    pub id: u16,
    /// Its first guest physical address.
    pub start: u64,
    /// Its last guest physical address.
    pub last: u64,
    /// Its size in pages.
    pub pages: u64,
    /// Its flags by name ("readonly", "log-dirty"), separated by spaces.
    pub flags: String,
    /// Pages written since the log was last read, for a slot that logs them (read without
    /// clearing the log).
    pub dirty: Option<u64>,
}

/// The guest's memslots, in guest physical order.
pub fn memslot_rows(memslots: &Memslots) -> Vec<MemslotRow> {
    memslots
        .slots()
        .iter()
        .map(|slot| {
            let mut flags = Vec::new();
            if slot.flags().contains(MemslotFlags::READONLY) {
                flags.push("readonly");
            }
            let logging = slot.flags().contains(MemslotFlags::LOG_DIRTY);
            if logging {
                flags.push("log-dirty");
            }
            let dirty = logging
                .then(|| memslots.dirty_bitmap(slot.id()).ok())
                .flatten()
                .map(|words| words.iter().map(|w| u64::from(w.count_ones())).sum());
            MemslotRow {
                id: slot.id().0,
                start: slot.base_gfn().gpa().0,
                last: slot.end_gfn().gpa().0.saturating_sub(1),
                pages: slot.npages(),
                flags: flags.join(" "),
                dirty,
            }
        })
        .collect()
}

/// The memslots as `monitor memslots` prints them.
pub fn memslot_table(rows: &[MemslotRow]) -> String {
    let mut out = String::from("slot  guest physical                           pages  flags");
    for row in rows {
        let _ = write!(
            out,
            "\n{:<5} {:#018x}-{:#018x}  {:>6}  {}",
            row.id, row.start, row.last, row.pages, row.flags
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_hex_with_0x_or_decimal() {
        assert_eq!(parse_number("0x400000001000"), Some(0x4000_0000_1000));
        assert_eq!(parse_number("4096"), Some(4096));
        assert_eq!(parse_number("0xzz"), None);
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn walk_requests_take_an_address_and_an_access() {
        assert_eq!(
            WalkRequest::parse(&["0x1000", "w", "user"]),
            Some(WalkRequest {
                address: 0x1000,
                kind: AccessKind::Write,
                privilege: Privilege::User
            })
        );
        assert_eq!(WalkRequest::parse(&[]), None);
        assert_eq!(WalkRequest::parse(&["0x1000", "rw"]), None);
        assert_eq!(WalkRequest::parse(&["zz"]), None);
    }

    #[test]
    fn error_codes_are_named() {
        assert_eq!(error_code_names(0x3), "protection, write");
        assert_eq!(error_code_names(0x14), "not present, user, fetch");
    }

    #[test]
    fn entries_show_their_index_and_flags() {
        let entry = LevelEntry {
            level: 4,
            gpa: umbra_mmu::addr::Gpa(0x6000 + 128 * 8),
            value: 0xb000 | PTE_PRESENT | PTE_WRITABLE | PTE_ACCESSED,
        };
        assert_eq!(
            entry_line(PagingMode::Level4, &entry),
            "  PML4E[128] at 0x6400: 0x000000000000b023 P W A"
        );
    }
}
