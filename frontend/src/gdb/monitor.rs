//! gdb's `monitor` commands: the MMU on top of what gdb shows.
//!
//! Each command reads the stopped vCPU and the machine and returns text; on KVM the software
//! MMU's structures do not exist, and the commands show what KVM exposes instead (its binary
//! statistics), saying so.

use std::fmt::Write as _;

use umbra_mmu::addr::{Gfn, Gva, PAGE_SIZE};
use umbra_mmu::memslot::{MemslotFlags, SlotId};
use umbra_mmu::paging::{
    PTE_ACCESSED, PTE_DIRTY, PTE_GLOBAL, PTE_NX, PTE_PAGE_SIZE, PTE_PCD, PTE_PRESENT, PTE_PWT,
    PTE_USER, PTE_WRITABLE, PageSize, PagingMode,
};
use umbra_mmu::role::PageRole;
use umbra_mmu::tlb::TLB_ENTRIES;
use umbra_mmu::walker::{Access, AccessKind, LevelEntry, PageFault, Privilege, WalkMode};

use super::target::{TargetFailure, UmbraTarget};

/// The help text: one line per command.
pub const HELP: &str = "\
Umbra monitor commands:
  help                           this list
  phys [on|off]                  gdb's addresses are guest physical (on) or virtual (off)
  mmu                            CPU role, page role, CR3, the cached shadow roots
  walk ADDR [r|w|x] [user|kernel]  each paging level's entry for ADDR, and where it ends
  tlb                            TLB occupancy, hits and misses
  stats                          the MMU's counters (or KVM's statistics)
  memslots                       guest physical memory slots
  dirty SLOT [on|off]            pages written in SLOT since the last look; on/off logs them";

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The vCPU or backend could not be reached; the session ends.
    #[error(transparent)]
    Target(#[from] TargetFailure),
    /// The command is not one of [`HELP`]'s.
    #[error("unknown command '{0}' (monitor help lists them)")]
    Unknown(String),
    /// The command's arguments are wrong.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// The machine refused.
    #[error("{0}")]
    Refused(String),
}

/// Runs `command` and returns what it prints.
pub fn run(target: &mut UmbraTarget, command: &str) -> Result<String, MonitorError> {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        [] | ["help"] => Ok(HELP.to_owned()),
        ["phys", rest @ ..] => phys(target, rest),
        ["mmu"] => mmu(target),
        ["walk", rest @ ..] => walk(target, rest),
        ["tlb"] => tlb(target),
        ["stats"] => stats(target),
        ["memslots"] => Ok(memslots(target)),
        ["dirty", rest @ ..] => dirty(target, rest),
        [other, ..] => Err(MonitorError::Unknown((*other).to_owned())),
    }
}

/// A number as gdb users type it: `0x` hex or decimal.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn phys(target: &mut UmbraTarget, args: &[&str]) -> Result<String, MonitorError> {
    match args {
        [] => {}
        ["on"] => target.physical_memory = true,
        ["off"] => target.physical_memory = false,
        _ => return Err(MonitorError::Usage("phys [on|off]")),
    }
    Ok(format!(
        "memory addresses are guest {}",
        if target.physical_memory {
            "physical"
        } else {
            "virtual (translated with the current CR3)"
        }
    ))
}

fn mmu(target: &mut UmbraTarget) -> Result<String, MonitorError> {
    let (walker, snapshot) = target.on_vcpu(|vcpu| Ok((vcpu.walker()?, vcpu.mmu_snapshot())))?;
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
                "{}: the MMU is the kernel's; its roots and TLB are not visible \
                 (monitor stats shows KVM's counters)",
                target.view.backend
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
    Ok(out.trim_end().to_owned())
}

fn walk(target: &mut UmbraTarget, args: &[&str]) -> Result<String, MonitorError> {
    const USAGE: &str = "walk ADDR [r|w|x] [user|kernel]";
    let (address, options) = args.split_first().ok_or(MonitorError::Usage(USAGE))?;
    let address = parse_number(address).ok_or(MonitorError::Usage(USAGE))?;
    let (mut kind, mut privilege) = (AccessKind::Read, Privilege::Supervisor);
    for option in options {
        match *option {
            "r" => kind = AccessKind::Read,
            "w" => kind = AccessKind::Write,
            "x" => kind = AccessKind::Fetch,
            "user" => privilege = Privilege::User,
            "kernel" => privilege = Privilege::Supervisor,
            _ => return Err(MonitorError::Usage(USAGE)),
        }
    }
    let walker = target.walker()?;
    let mode = walker.role().paging_mode();
    let trace = walker.walk_trace(
        &*target.view.memslots,
        Gva(address),
        Access::new(kind, privilege),
        WalkMode::Probe,
    );
    let kind_name = match kind {
        AccessKind::Read => "read",
        AccessKind::Write => "write",
        AccessKind::Fetch => "fetch",
    };
    let who = if privilege == Privilege::User {
        "user"
    } else {
        "kernel"
    };
    let mut out = format!(
        "{kind_name} by {who} at {address:#x}, cr3 {:#x}, {}\n",
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
            let size = match translation.page_size {
                PageSize::Size4K => "4 KiB",
                PageSize::Size2M => "2 MiB",
                PageSize::Size4M => "4 MiB",
                PageSize::Size1G => "1 GiB",
            };
            let _ = write!(
                out,
                "  -> physical {:#x} ({size} page{})",
                translation.gpa.0,
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
    Ok(out)
}

/// One paging-structure entry: its name and index, where it is, its value and flags.
fn entry_line(mode: PagingMode, entry: &LevelEntry) -> String {
    let name = match (mode, entry.level) {
        (_, 5) => "PML5E",
        (_, 4) => "PML4E",
        (_, 3) => "PDPTE",
        (_, 2) => "PDE",
        _ => "PTE",
    };
    let index = (entry.gpa.0 & 0xfff) / mode.entry_size();
    let value = entry.value;
    let flags = [
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
    let names: Vec<&str> = flags
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    format!(
        "  {:<10} at {:#x}: {value:#018x} {}",
        format!("{name}[{index}]"),
        entry.gpa.0,
        names.join(" ")
    )
}

/// The bits of a #PF error code, by name.
fn error_code_names(code: u32) -> String {
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

fn tlb(target: &mut UmbraTarget) -> Result<String, MonitorError> {
    let snapshot = target.on_vcpu(|vcpu| Ok(vcpu.mmu_snapshot()))?;
    match snapshot {
        Some(snapshot) => {
            let c = snapshot.counters;
            Ok(format!(
                "TLB: {} of {TLB_ENTRIES} entries in use\n\
                 hits {}, misses {} (shadow tree answered {}, guest walks {}), fills {}, \
                 flushes {}",
                snapshot.tlb_used,
                c.tlb_hits,
                c.tlb_misses,
                c.shadow_hits,
                c.walks,
                c.tlb_fills,
                c.tlb_flushes
            ))
        }
        None => {
            let vcpu = target.on_vcpu(|vcpu| vcpu.kernel_stats())?;
            let tlb: Vec<_> = vcpu
                .iter()
                .filter(|(name, _)| name.contains("tlb") || name.contains("invlpg"))
                .collect();
            let mut out = format!(
                "{}: the TLB is the processor's (or KVM's shadow MMU's); KVM counts:",
                target.view.backend
            );
            if tlb.is_empty() {
                out.push_str(" nothing about it here");
            }
            for (name, value) in tlb {
                let _ = write!(out, "\n  {name} {value}");
            }
            Ok(out)
        }
    }
}

fn stats(target: &mut UmbraTarget) -> Result<String, MonitorError> {
    let (named, vcpu_kernel) =
        target.on_vcpu(|vcpu| Ok((vcpu.mmu_stats(), vcpu.kernel_stats())))?;
    let mut out = String::new();
    if !named.is_empty() {
        let _ = writeln!(out, "MMU counters (this vCPU, then the VM's shadow MMU):");
        for (name, value) in named {
            let _ = writeln!(out, "  {name:<24} {value}");
        }
    }
    let vm_kernel = target.view.vm.kernel_stats();
    for (whose, stats) in [("VM", vm_kernel), ("vCPU 0", vcpu_kernel)] {
        match stats {
            Ok(stats) if stats.is_empty() => {}
            Ok(stats) => {
                let _ = writeln!(out, "KVM statistics of the {whose}:");
                for (name, value) in stats {
                    let _ = writeln!(out, "  {name:<32} {value}");
                }
            }
            Err(error) => {
                let _ = writeln!(
                    out,
                    "KVM statistics of the {whose}: not available on this host ({error})"
                );
            }
        }
    }
    Ok(out.trim_end().to_owned())
}

fn memslots(target: &UmbraTarget) -> String {
    let mut out = String::from("slot  guest physical                           pages  flags");
    for slot in target.view.memslots.slots() {
        let start = slot.base_gfn().gpa().0;
        let end = slot.end_gfn().gpa().0;
        let mut flags = Vec::new();
        if slot.flags().contains(MemslotFlags::READONLY) {
            flags.push("readonly");
        }
        if slot.flags().contains(MemslotFlags::LOG_DIRTY) {
            flags.push("log-dirty");
        }
        let _ = write!(
            out,
            "\n{:<5} {:#018x}-{:#018x}  {:>6}  {}",
            slot.id(),
            start,
            end.saturating_sub(1),
            slot.npages(),
            flags.join(" ")
        );
    }
    out
}

fn dirty(target: &mut UmbraTarget, args: &[&str]) -> Result<String, MonitorError> {
    const USAGE: &str = "dirty SLOT [on|off]";
    let (slot, switch) = match args {
        [slot] => (slot, None),
        [slot, "on"] => (slot, Some(true)),
        [slot, "off"] => (slot, Some(false)),
        _ => return Err(MonitorError::Usage(USAGE)),
    };
    let id = parse_number(slot)
        .and_then(|n| u16::try_from(n).ok())
        .map(SlotId)
        .ok_or(MonitorError::Usage(USAGE))?;
    let memslots = &target.view.memslots;
    let slot = memslots
        .get(id)
        .ok_or_else(|| MonitorError::Refused(format!("no slot {id} (monitor memslots)")))?;
    if let Some(on) = switch {
        let flags = if on {
            slot.flags() | MemslotFlags::LOG_DIRTY
        } else {
            slot.flags() - MemslotFlags::LOG_DIRTY
        };
        memslots
            .set_flags(id, flags)
            .map_err(|e| MonitorError::Refused(e.to_string()))?;
        return Ok(format!(
            "slot {id}: dirty logging {}",
            if on { "on" } else { "off" }
        ));
    }
    if !slot.flags().contains(MemslotFlags::LOG_DIRTY) {
        return Ok(format!(
            "slot {id} does not log dirty pages ('monitor dirty {id} on' starts logging)"
        ));
    }
    let log = target
        .view
        .vm
        .get_dirty_log(id)
        .map_err(|e| MonitorError::Refused(e.to_string()))?;
    Ok(dirty_ranges(slot.base_gfn(), &log))
}

/// The most page ranges `dirty` lists.
const MAX_RANGES: usize = 32;

/// The dirty pages of a log as guest physical ranges.
fn dirty_ranges(base: Gfn, log: &[u64]) -> String {
    let pages = (0..log.len() as u64 * 64)
        .filter(|&page| log[(page / 64) as usize] >> (page % 64) & 1 != 0);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut count = 0;
    for page in pages {
        count += 1;
        match ranges.last_mut() {
            Some((_, end)) if *end == page => *end = page + 1,
            _ => ranges.push((page, page + 1)),
        }
    }
    let mut out = format!("{count} pages written since the last look");
    for (start, end) in ranges.iter().take(MAX_RANGES) {
        let first = (base.0 + start) * PAGE_SIZE;
        let last = (base.0 + end) * PAGE_SIZE - 1;
        let _ = write!(out, "\n  {first:#x}-{last:#x}  ({} pages)", end - start);
    }
    if ranges.len() > MAX_RANGES {
        let _ = write!(out, "\n  ... {} more ranges", ranges.len() - MAX_RANGES);
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
    fn dirty_pages_print_as_ranges() {
        let log = [0b1110_0001, 1 << 63];
        let text = dirty_ranges(Gfn(0x100), &log);
        assert_eq!(
            text,
            "5 pages written since the last look\n  \
             0x100000-0x100fff  (1 pages)\n  \
             0x105000-0x107fff  (3 pages)\n  \
             0x17f000-0x17ffff  (1 pages)"
        );
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
