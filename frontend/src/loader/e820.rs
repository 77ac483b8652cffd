//! The physical memory map a PC's firmware reports (INT 15h, AX=E820h), for a machine booted
//! without firmware: the RAM of [`crate::memory_map`], less what a PC keeps below 1 MiB for
//! its BIOS (the extended BIOS data area and the BIOS ROM area, reported reserved, as QEMU's
//! SeaBIOS and Firecracker report them).

use crate::memory_map::{self, ONE_MIB};
use crate::memory_size::MemorySize;

/// Where the extended BIOS data area begins: conventional RAM is usable below it.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where conventional memory ends and the video and ROM area begins.
const CONVENTIONAL_END: u64 = 0xa_0000;
/// Where the system BIOS area below 1 MiB begins.
const BIOS_AREA_START: u64 = 0xf_0000;

/// What a range of the memory map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Kind {
    /// RAM the kernel may use (type 1).
    Ram = 1,
    /// Reserved (type 2).
    Reserved = 2,
}

/// One range of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// Its first byte.
    pub addr: u64,
    /// Its length in bytes.
    pub size: u64,
    /// What it is.
    pub kind: E820Kind,
}

impl E820Entry {
    fn new(start: u64, end: u64, kind: E820Kind) -> E820Entry {
        E820Entry {
            addr: start,
            size: end - start,
            kind,
        }
    }

    /// The end of the range (exclusive).
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The memory map of a machine with `memory` of RAM and no firmware ROM, lowest first.
pub fn memory_map(memory: MemorySize) -> Vec<E820Entry> {
    let mut map = Vec::new();
    for range in memory_map::ram_ranges(memory, 0) {
        if range.start == 0 {
            map.push(E820Entry::new(0, range.end.min(EBDA_START), E820Kind::Ram));
            if range.end >= ONE_MIB {
                map.push(E820Entry::new(
                    EBDA_START,
                    CONVENTIONAL_END,
                    E820Kind::Reserved,
                ));
                map.push(E820Entry::new(BIOS_AREA_START, ONE_MIB, E820Kind::Reserved));
            }
        } else {
            map.push(E820Entry::new(range.start, range.end, E820Kind::Ram));
        }
    }
    map
}

/// Where RAM below 4 GiB ends, for `memory` of RAM: the top of the range loaders put
/// kernels, initrds and modules in.
pub fn low_ram_end(memory: MemorySize) -> u64 {
    memory.bytes().min(memory_map::LOW_RAM_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(memory: &str) -> Vec<(u64, u64, E820Kind)> {
        memory_map(memory.parse().unwrap())
            .iter()
            .map(|e| (e.addr, e.end(), e.kind))
            .collect()
    }

    #[test]
    fn a_small_machine_has_conventional_and_extended_ram() {
        use E820Kind::*;
        assert_eq!(
            map("512M"),
            [
                (0, 0x9_fc00, Ram),
                (0x9_fc00, 0xa_0000, Reserved),
                (0xf_0000, 0x10_0000, Reserved),
                (0x10_0000, 512 << 20, Ram),
            ]
        );
    }

    #[test]
    fn a_large_machine_continues_above_4_gib() {
        let map = map("4G");
        assert_eq!(map.len(), 5);
        assert_eq!(map[3], (0x10_0000, 0xc000_0000, E820Kind::Ram));
        assert_eq!(map[4], (1 << 32, (1 << 32) + (1 << 30), E820Kind::Ram));
        assert_eq!(low_ram_end("4G".parse().unwrap()), 0xc000_0000);
    }
}
