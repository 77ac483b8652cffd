//! Decoded instructions, cached by guest physical address and code size, so that hot code is
//! decoded once.
//!
//! A direct-mapped array: an entry holds the instruction decoded at a guest physical address
//! in a 16-, 32- or 64-bit code segment, and the code generation of the VM when it was made.
//! Before caching decodes from a frame, the interpreter has the MMU write-protect it; any
//! later store to the frame, by any vCPU, bumps the VM's code generation (see
//! `umbra_mmu::shadow::ShadowMmu::protect_code`), which makes every older entry a miss. So a
//! hit costs one index, three compares and a copy, and self-modifying code is always seen.

use iced_x86::Instruction;
use umbra_mmu::addr::Gpa;

/// Entries in the cache (a power of two).
const ENTRIES: usize = 8192;

#[derive(Clone, Copy)]
struct Entry {
    /// Guest physical address of the instruction's first byte; `u64::MAX` when empty.
    gpa: u64,
    bitness: u32,
    generation: u64,
    instruction: Instruction,
}

/// A vCPU's cache of decoded instructions.
pub(crate) struct DecodeCache {
    entries: Box<[Entry]>,
}

impl DecodeCache {
    /// An empty cache.
    pub(crate) fn new() -> DecodeCache {
        let empty = Entry {
            gpa: u64::MAX,
            bitness: 0,
            generation: 0,
            instruction: Instruction::default(),
        };
        DecodeCache {
            entries: vec![empty; ENTRIES].into_boxed_slice(),
        }
    }

    fn slot(gpa: Gpa) -> usize {
        (gpa.0 as usize ^ (gpa.0 >> 13) as usize) & (ENTRIES - 1)
    }

    /// The instruction decoded at `gpa` in a `bitness`-bit code segment, if cached at the
    /// current code `generation`.
    #[inline]
    pub(crate) fn lookup(&self, gpa: Gpa, bitness: u32, generation: u64) -> Option<&Instruction> {
        let entry = &self.entries[Self::slot(gpa)];
        (entry.gpa == gpa.0 && entry.bitness == bitness && entry.generation == generation)
            .then_some(&entry.instruction)
    }

    /// Caches `instruction`, decoded at `gpa` in a `bitness`-bit code segment at code
    /// `generation`.
    pub(crate) fn insert(
        &mut self,
        gpa: Gpa,
        bitness: u32,
        generation: u64,
        instruction: Instruction,
    ) {
        self.entries[Self::slot(gpa)] = Entry {
            gpa: gpa.0,
            bitness,
            generation,
            instruction,
        };
    }
}
