//! gdb's `monitor` commands: the MMU on top of what gdb shows.
//!
//! Each command reads the stopped vCPU and the machine and returns text; on KVM the software
//! MMU's structures do not exist, and the commands show what KVM exposes instead (its binary
//! statistics), saying so.

use std::fmt::Write as _;

use umbra_mmu::addr::{Gfn, PAGE_SIZE};
use umbra_mmu::memslot::{MemslotFlags, SlotId};

use crate::inspect::{self, WalkRequest, parse_number};

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
    Ok(inspect::roots_report(
        &walker,
        snapshot.as_ref(),
        target.view.backend,
    ))
}

fn walk(target: &mut UmbraTarget, args: &[&str]) -> Result<String, MonitorError> {
    const USAGE: &str = "walk ADDR [r|w|x] [user|kernel]";
    let request = WalkRequest::parse(args).ok_or(MonitorError::Usage(USAGE))?;
    let walker = target.walker()?;
    Ok(inspect::walk_report(
        &walker,
        &target.view.memslots,
        request,
    ))
}

fn tlb(target: &mut UmbraTarget) -> Result<String, MonitorError> {
    let snapshot = target.on_vcpu(|vcpu| Ok(vcpu.mmu_snapshot()))?;
    match snapshot {
        Some(snapshot) => Ok(inspect::tlb_report(&snapshot)),
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
    inspect::memslot_table(&inspect::memslot_rows(&target.view.memslots))
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
}
