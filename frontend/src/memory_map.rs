//! The PC's guest physical memory map, as Umbra lays it out in memslots.
//!
//! ```text
//!   0 .. rom_alias         RAM                              slot 0
//!   rom_alias .. 1 MiB     the ROM's last 128 KiB (or all of a smaller ROM), read-only
//!                                                           slot 4
//!   1 MiB .. low_end       RAM                              slot 1
//!   4 GiB - rom .. 4 GiB   the ROM, read-only, ending at the reset vector
//!                                                           slot 3
//!   4 GiB .. 4 GiB + rest  RAM above the 1 GiB PCI hole     slot 2
//! ```
//!
//! This is QEMU's `pc` layout, so firmware written for `qemu-system-x86_64 -bios` finds its ROM
//! at the same addresses. All RAM comes from one host mapping, and both ROM slots from one
//! other, each slot aliasing its range of it: the RAM under the ROM alias is simply not mapped
//! into the guest, as on a PC. A machine that boots a kernel directly has no ROM (an empty
//! one): slots 3 and 4 are absent and RAM runs on from 0 to `low_end`, split at 1 MiB.

use std::ops::Range;
use std::sync::Arc;

use umbra_mmu::addr::{Gpa, PAGE_SHIFT};
use umbra_mmu::memslot::{HostMapping, MemslotError, MemslotFlags, Memslots, SlotId};

use crate::memory_size::MemorySize;

/// Where RAM below 4 GiB ends at the most: the rest goes above 4 GiB.
pub const LOW_RAM_END: u64 = 0xc000_0000;
/// 4 GiB, where the ROM ends and high RAM begins.
pub const FOUR_GIB: u64 = 1 << 32;
/// The end of the real-mode address space, where the ROM alias ends.
pub const ONE_MIB: u64 = 1 << 20;
/// The largest part of the ROM aliased below 1 MiB.
pub const MAX_ROM_ALIAS: u64 = 128 << 10;

/// The slot of RAM below the ROM alias.
pub const SLOT_LOW_RAM: SlotId = SlotId(0);
/// The slot of RAM from 1 MiB up to [`LOW_RAM_END`].
pub const SLOT_RAM: SlotId = SlotId(1);
/// The slot of RAM above 4 GiB.
pub const SLOT_HIGH_RAM: SlotId = SlotId(2);
/// The slot of the ROM below 4 GiB.
pub const SLOT_ROM: SlotId = SlotId(3);
/// The slot of the ROM's alias below 1 MiB.
pub const SLOT_ROM_ALIAS: SlotId = SlotId(4);

/// The RAM slots for `memory` bytes of RAM around a ROM of `rom_size` bytes (0 for none),
/// lowest first, each with its guest physical range; empty ones are left out.
fn ram_slots(memory: MemorySize, rom_size: u64) -> Vec<(SlotId, Range<u64>)> {
    let ram_size = memory.bytes();
    let alias_start = ONE_MIB - rom_size.min(MAX_ROM_ALIAS);
    let low_end = ram_size.min(LOW_RAM_END);
    [
        (SLOT_LOW_RAM, 0..alias_start.min(low_end)),
        (SLOT_RAM, ONE_MIB..low_end),
        (SLOT_HIGH_RAM, FOUR_GIB..FOUR_GIB + ram_size - low_end),
    ]
    .into_iter()
    .filter(|(_, range)| !range.is_empty())
    .collect()
}

/// Where RAM is in guest physical memory for `memory` bytes of RAM around a ROM of
/// `rom_size` bytes (0 for none), lowest first: what the memslots hold, and what a loader's
/// memory map (e820, multiboot) starts from.
pub fn ram_ranges(memory: MemorySize, rom_size: u64) -> Vec<Range<u64>> {
    ram_slots(memory, rom_size)
        .into_iter()
        .map(|(_, range)| range)
        .collect()
}

/// Lays out RAM and `rom` in `memslots`; an empty `rom` gives a machine without one.
pub fn build(memslots: &Memslots, memory: MemorySize, rom: &[u8]) -> Result<(), MemslotError> {
    let ram_size = memory.bytes();
    let ram = HostMapping::anonymous(ram_size as usize)?;
    let rom_size = rom.len() as u64;
    let low_end = ram_size.min(LOW_RAM_END);
    for (id, range) in ram_slots(memory, rom_size) {
        // Below 4 GiB a RAM address is its offset in the mapping; above, it continues where
        // low RAM ended.
        let offset = if range.start >= FOUR_GIB {
            low_end
        } else {
            range.start
        };
        let len = range.end - range.start;
        add(
            memslots,
            id,
            range.start,
            len,
            &ram,
            offset,
            MemslotFlags::empty(),
        )?;
    }
    if rom.is_empty() {
        return Ok(());
    }
    let rom_mapping = HostMapping::anonymous(rom.len())?;
    // SAFETY: the ROM mapping was just made, `rom.len()` bytes long, and no slot or vCPU can
    // see it yet, so nothing else reads or writes it during the copy.
    unsafe { std::ptr::copy_nonoverlapping(rom.as_ptr(), rom_mapping.as_ptr(), rom.len()) };
    let alias_size = rom_size.min(MAX_ROM_ALIAS);
    let alias_start = ONE_MIB - alias_size;
    let readonly = MemslotFlags::READONLY;
    add(
        memslots,
        SLOT_ROM,
        FOUR_GIB - rom_size,
        rom_size,
        &rom_mapping,
        0,
        readonly,
    )?;
    let alias_offset = rom_size - alias_size;
    add(
        memslots,
        SLOT_ROM_ALIAS,
        alias_start,
        alias_size,
        &rom_mapping,
        alias_offset,
        readonly,
    )
}

fn add(
    memslots: &Memslots,
    id: SlotId,
    start: u64,
    len: u64,
    mapping: &Arc<HostMapping>,
    offset: u64,
    flags: MemslotFlags,
) -> Result<(), MemslotError> {
    let pages = len >> PAGE_SHIFT;
    memslots.create(
        id,
        Gpa(start).gfn(),
        pages,
        mapping.clone(),
        offset as usize,
        flags,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use umbra_mmu::addr::Gfn;

    use super::*;

    fn layout(memory: &str, rom_size: usize) -> Vec<(u16, u64, u64, bool)> {
        let memslots = Memslots::new();
        build(&memslots, memory.parse().unwrap(), &vec![0x90; rom_size]).unwrap();
        memslots
            .slots()
            .iter()
            .map(|s| {
                (
                    s.id().0,
                    s.base_gfn().gpa().0,
                    s.npages() << PAGE_SHIFT,
                    s.is_readonly(),
                )
            })
            .collect()
    }

    #[test]
    fn a_small_guest_gets_ram_around_the_rom_alias() {
        assert_eq!(
            layout("128M", 64 << 10),
            [
                (0, 0, 0xf0000, false),
                (4, 0xf0000, 0x10000, true),
                (1, 0x10_0000, (128 << 20) - 0x10_0000, false),
                (3, 0xffff_0000, 0x10000, true),
            ]
        );
    }

    #[test]
    fn a_large_guest_continues_above_4_gib() {
        let slots = layout("4G", 256 << 10);
        assert_eq!(slots[0], (0, 0, 0xe0000, false));
        assert_eq!(slots[1], (4, 0xe0000, 0x20000, true));
        assert_eq!(slots[2], (1, 0x10_0000, LOW_RAM_END - 0x10_0000, false));
        assert_eq!(slots[3], (3, FOUR_GIB - (256 << 10), 256 << 10, true));
        assert_eq!(slots[4], (2, FOUR_GIB, (4 << 30) - LOW_RAM_END, false));
    }

    #[test]
    fn without_a_rom_ram_runs_from_0() {
        assert_eq!(
            layout("64M", 0),
            [
                (0, 0, ONE_MIB, false),
                (1, ONE_MIB, (64 << 20) - ONE_MIB, false)
            ]
        );
        assert_eq!(
            ram_ranges("64M".parse().unwrap(), 0),
            [0..ONE_MIB, ONE_MIB..64 << 20]
        );
    }

    #[test]
    fn the_rom_alias_shows_the_rom_end() {
        let memslots = Memslots::new();
        let mut rom = vec![0u8; 64 << 10];
        rom[0xfff0] = 0xea;
        build(&memslots, MemorySize::default(), &rom).unwrap();
        let mut byte = [0];
        memslots.read(Gpa(0xffff_fff0), &mut byte).unwrap();
        assert_eq!(byte, [0xea]);
        memslots.read(Gpa(0xffff0), &mut byte).unwrap();
        assert_eq!(byte, [0xea]);
        assert!(
            memslots
                .find_by_gfn(Gfn(0x100))
                .is_some_and(|s| !s.is_readonly())
        );
    }
}
