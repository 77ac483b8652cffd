//! The per-vCPU software TLB: a direct-mapped array in front of the shadow tables.
//!
//! Each entry is keyed by the guest page and the tag it was filled under: a root's, so
//! switching between cached roots needs no flush, or one the roots of a role share for the
//! upper half of the address space, where global pages (the kernel's) are the same in every
//! address space. The tag also picks the set, so that address spaces using the same addresses
//! (every process's text at the same place) do not evict each other. It holds, for the three
//! access contexts (user, supervisor, supervisor with EFLAGS.AC = 1 under SMAP) and the three
//! kinds of access (read, write, fetch), whether the access is allowed at all without a walk
//! and whether it may go straight to host memory; a hit is one index, one compare and a bit
//! test, with no lock, atomic or allocation.

use rustc_hash::FxHashSet;

use crate::addr::{Gfn, Gpa, Gva, PAGE_OFFSET_MASK, PAGE_SHIFT};
use crate::walker::{Access, AccessKind, Privilege};

/// Entries in the TLB (a power of two).
pub const TLB_ENTRIES: usize = 1024;

/// log2 of [`TLB_ENTRIES`].
pub const TLB_INDEX_BITS: u32 = TLB_ENTRIES.trailing_zeros();

/// A tag no entry is filled under. Tags fit in a page offset's 12 bits, where an entry's key
/// holds them; those [`Tlb::take_tag`] hands out are multiples of 4, and this one is not.
pub const NO_ROOT: u32 = PAGE_OFFSET_MASK as u32;

/// How many tags [`Tlb::take_tag`] hands out between flushes: the multiples of 4 below 4096.
const TAGS: u32 = 1024;

/// How many frames [`Tlb`] lets its record of frames copied out grow to before it trims it
/// to those of its entries (an invalidation: copies must go).
const MAX_COPIED_FRAMES: usize = 4 * TLB_ENTRIES;

/// The key of an empty entry. It is the key of page 0xffff_ffff_ffff_f000 under [`NO_ROOT`],
/// under which nothing is looked up, and the entry allows nothing anyway.
const EMPTY_KEY: u64 = u64::MAX;

/// What [`Tlb::frames`] holds for an empty entry (a frame flush then finds its key empty).
const EMPTY_FRAME: u32 = u32::MAX;

/// How many frames a frame flush compares each packed run of entries' frames against, before
/// it tests each entry's against a bitmap of the frames instead.
const FEW_FRAMES: usize = 16;

/// How many bits [`access_bit`] hands out: reads, writes and fetches, each by user code, by
/// supervisor code, and by supervisor code with EFLAGS.AC set.
pub const ACCESS_BITS: usize = 9;

/// The bit for `access` in an entry's permission masks.
pub(crate) fn access_bit(access: Access) -> u16 {
    let context = match access.privilege {
        Privilege::User => 0,
        Privilege::Supervisor if access.eflags_ac => 2,
        Privilege::Supervisor | Privilege::ImplicitSupervisor => 1,
    };
    let kind = match access.kind {
        AccessKind::Read => 0,
        AccessKind::Write => 1,
        AccessKind::Fetch => 2,
    };
    1 << (context * 3 + kind)
}

/// Every access [`access_bit`] distinguishes, one per bit.
pub(crate) fn every_access() -> impl Iterator<Item = Access> {
    let privileges = [
        (Privilege::User, false),
        (Privilege::Supervisor, false),
        (Privilege::Supervisor, true),
    ];
    privileges.into_iter().flat_map(|(privilege, ac)| {
        [AccessKind::Read, AccessKind::Write, AccessKind::Fetch]
            .into_iter()
            .map(move |kind| Access::new(kind, privilege).with_eflags_ac(ac))
    })
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Entry {
    /// The page's linear address with the root's tag in its low 12 bits ([`Tlb::key`]);
    /// [`EMPTY_KEY`] for an empty entry.
    key: u64,
    /// What turns a linear address in the page into the host address of its byte, by a
    /// wrapping addition: the host address of the page's first byte less the page's linear
    /// address (meaningless when the page is not RAM: then no access is direct).
    addend: u64,
    /// Accesses allowed without a walk.
    allowed: u16,
    /// Accesses that may use the host address directly.
    direct: u16,
    gfn: u64,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            key: EMPTY_KEY,
            addend: 0,
            allowed: 0,
            direct: 0,
            gfn: 0,
        }
    }
}

/// Where a translated access goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The linear address translated.
    pub gva: Gva,
    /// The guest physical address.
    pub gpa: Gpa,
    /// The host address of the byte, when the access may go straight to host memory.
    pub host: Option<usize>,
}

/// The TLB as generated code reads it (a JIT's inlined hit path): a linear address `la`, with
/// page number `p = la >> 12`, is looked up under the tag `tags[la >> 63]` (the lower or the
/// upper half's), and its entry is
/// `entries + ((p ^ (p >> TLB_INDEX_BITS)) + key / 4) % TLB_ENTRIES * entry_layout::SIZE`
/// with `key = la & !0xfff | tag`; an access of `n` bytes hits when the entry's key is
/// `(la + n - 1) & !0xfff | tag` (a key that also fails an access running into the next
/// page) and its `direct` mask has the access's bit ([`InlineTlb::direct_bit`]); the host
/// address is then `la + addend`. Entries are 32 bytes, so `key / 4` entries is `key * 8`
/// bytes; tags are multiples of 4, so it carries nothing from the key's low bits.
///
/// The view stays valid while the vCPU's root is unchanged; the entries may change under it
/// (fills and flushes), which generated code sees on its next lookup.
#[derive(Clone, Copy, Debug)]
pub struct InlineTlb {
    /// The first entry.
    pub entries: *const u8,
    /// The tags of the lower and the upper half of the address space (below [`NO_ROOT`];
    /// the same when the upper half is not shared between roots).
    pub tags: [u32; 2],
}

impl InlineTlb {
    /// The bit of an entry's `direct` mask for `access`.
    pub fn direct_bit(access: Access) -> u16 {
        access_bit(access)
    }
}

/// Where an entry's fields lie, for generated code.
pub mod entry_layout {
    use super::Entry;

    /// The size of an entry, in bytes.
    pub const SIZE: usize = size_of::<Entry>();
    /// The key: the page's linear address, the root's tag in its low 12 bits (u64).
    pub const KEY: usize = std::mem::offset_of!(Entry, key);
    /// The accesses that may go straight to host memory (u16).
    pub const DIRECT: usize = std::mem::offset_of!(Entry, direct);
    /// What a linear address in the page is added to for its host address (u64).
    pub const ADDEND: usize = std::mem::offset_of!(Entry, addend);
}

/// How many times translations of pages holding code cached somewhere (blocks of generated
/// code, and where jumps found them) may have changed: while a count stays the same (and so
/// does the root), a block's address found before is still right.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeInvalidations {
    /// Any of them: a flush, a page's entries dropped, or a flush of frames one of which
    /// holds code (whatever the TLB held of them).
    pub any: u64,
    /// Those of the upper half of the address space (bit 63 set) that a processor must drop
    /// from its TLB (SDM 4.10.4): a flush, or an upper-half page's entries dropped (INVLPG,
    /// or a CR3 write for a translation that is not global). A frame flush, after a store to
    /// a paging structure, does not count: until one of these invalidations, a processor may
    /// go on using what it cached of the translation (SDM 4.10.4.3).
    pub upper: u64,
}

/// A vCPU's TLB.
///
/// Entries are filled under a root tag, and hit only under the same one. A tag is handed out
/// once ([`Tlb::take_tag`]), so a vCPU drops every entry of an address space in O(1) by taking
/// a fresh tag for it; only when the tags run out are the entries cleared for real
/// ([`Tlb::flush`]).
pub struct Tlb {
    entries: Box<[Entry; TLB_ENTRIES]>,
    invalidations: u64,
    code_invalidations: CodeInvalidations,
    next_tag: u32,
    /// At least the frames that entries map and those that entries replaced since the last
    /// invalidation mapped: whatever was copied out of an entry since (generated code's
    /// access slots) can only map one of these. A frame flush takes out the frames it
    /// names, or, when the record holds more frames than there are entries, leaves only the
    /// entries' frames, as a fill past [`MAX_COPIED_FRAMES`] does.
    copied_frames: FxHashSet<u64>,
    /// The low 32 bits of each entry's frame, [`EMPTY_FRAME`] for an empty entry: what a
    /// frame flush compares first, packed so that it compares several at once.
    frames: Box<[u32; TLB_ENTRIES]>,
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: Box::new([Entry::default(); TLB_ENTRIES]),
            frames: Box::new([EMPTY_FRAME; TLB_ENTRIES]),
            invalidations: 0,
            code_invalidations: CodeInvalidations::default(),
            next_tag: 0,
            copied_frames: FxHashSet::default(),
        }
    }
}

impl Tlb {
    /// An empty TLB.
    pub fn new() -> Tlb {
        Tlb::default()
    }

    /// The entry for `gva` under `tag`: the page number, shifted by the key over 4, whose
    /// tag spreads tags over the array ([`Tlb::take_tag`] hands them out scattered).
    fn slot(gva: Gva, tag: u32) -> usize {
        let page = (gva.0 >> PAGE_SHIFT) as usize;
        // Folding the page number's next bits in keeps two buffers a multiple of the TLB's
        // reach apart (a 4 MiB copy's source and destination) from sharing entries.
        let spread = (Self::key(gva, tag) / 4) as usize;
        (page ^ (page >> TLB_INDEX_BITS)).wrapping_add(spread) & (TLB_ENTRIES - 1)
    }

    /// What generated code needs to look up this TLB itself, under `tags` (the lower and
    /// the upper half's).
    pub fn inline_view(&self, tags: [u32; 2]) -> InlineTlb {
        InlineTlb {
            entries: self.entries.as_ptr().cast(),
            tags,
        }
    }

    /// The key of `gva`'s page under `root`.
    fn key(gva: Gva, root: u32) -> u64 {
        (gva.0 & !PAGE_OFFSET_MASK) | u64::from(root)
    }

    /// The mapping of `gva` for `access` under `root`, if the TLB holds one allowing it.
    #[inline]
    pub fn lookup(&self, gva: Gva, root: u32, access: Access) -> Option<Mapping> {
        let entry = &self.entries[Self::slot(gva, root)];
        let bit = access_bit(access);
        if entry.key != Self::key(gva, root) || entry.allowed & bit == 0 {
            return None;
        }
        let offset = gva.0 & PAGE_OFFSET_MASK;
        Some(Mapping {
            gva,
            gpa: Gpa((entry.gfn << PAGE_SHIFT) | offset),
            host: (entry.direct & bit != 0).then(|| gva.0.wrapping_add(entry.addend) as usize),
        })
    }

    /// Fills the entry for `gva` under `root` (a tag below [`NO_ROOT`]), whose page is at
    /// `host` in the host when it is RAM.
    pub fn fill(&mut self, gva: Gva, root: u32, gfn: Gfn, allowed: u16, direct: u16, host: usize) {
        debug_assert!(root < NO_ROOT);
        let page = gva.0 & !PAGE_OFFSET_MASK;
        let slot = Self::slot(gva, root);
        self.frames[slot] = gfn.0 as u32;
        self.entries[slot] = Entry {
            key: Self::key(gva, root),
            addend: (host as u64).wrapping_sub(page),
            allowed,
            direct,
            gfn: gfn.0,
        };
        self.copied_frames.insert(gfn.0);
        if self.copied_frames.len() > MAX_COPIED_FRAMES {
            // Copies of the entries replaced so far must go.
            self.invalidations += 1;
            self.trim_copied_frames();
        }
    }

    /// Right after an invalidation: the frames copies may map are those of the entries now.
    fn trim_copied_frames(&mut self) {
        self.copied_frames.clear();
        let present = self.entries.iter().filter(|entry| entry.key != EMPTY_KEY);
        self.copied_frames.extend(present.map(|entry| entry.gfn));
    }

    /// How many entries are in use (a scan of the array: for statistics, not hot paths).
    pub fn occupancy(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| entry.key != EMPTY_KEY)
            .count()
    }

    /// How many times translations under tags still handed out may have changed: a flush
    /// (which frees every tag), a page's entries dropped with [`Tlb::flush_page`], or frames'
    /// with [`Tlb::flush_frames`] where an entry or a copy of one may map them. A
    /// translation copied out of an entry (by generated code) may be stale when this changed,
    /// and is still right when it did not (a fill only replaces an entry, and entries under
    /// tags no longer used never hit again). It also changes now and then when nothing was
    /// dropped, to bound what is remembered of the frames copied out.
    pub fn invalidations(&self) -> u64 {
        self.invalidations
    }

    /// How many times a translation of a page holding code cached somewhere may have
    /// changed ([`CodeInvalidations`]).
    pub fn code_invalidations(&self) -> CodeInvalidations {
        self.code_invalidations
    }

    /// A tag no entry was filled under since the last [`Tlb::flush`], or `None` when they
    /// have all been handed out. Consecutive tags lie far apart (a multiplication by an odd
    /// number, near 1024 / φ, permutes them), so that they spread their entries.
    pub fn take_tag(&mut self) -> Option<u32> {
        (self.next_tag < TAGS).then(|| {
            self.next_tag += 1;
            ((self.next_tag - 1).wrapping_mul(633) % TAGS) * 4
        })
    }

    /// How many tags [`Tlb::take_tag`] has left.
    pub fn tags_left(&self) -> u32 {
        TAGS - self.next_tag
    }

    /// Drops every entry, and makes every tag free again (their holders must take new ones).
    pub fn flush(&mut self) {
        self.entries.fill(Entry::default());
        self.frames.fill(EMPTY_FRAME);
        self.invalidations += 1;
        self.copied_frames.clear();
        self.code_invalidations.any += 1;
        self.code_invalidations.upper += 1;
        self.next_tag = 0;
    }

    /// Drops the entries for `gva` under each of `roots`: its translation changed.
    pub fn flush_page(&mut self, gva: Gva, roots: impl IntoIterator<Item = u32>) {
        self.invalidations += 1;
        self.code_invalidations.any += 1;
        self.code_invalidations.upper += gva.0 >> 63;
        self.drop_page(gva, roots);
    }

    /// Drops the entries, under every tag, for the guest frames in `runs` (first frame,
    /// count): their translations changed. `code` says whether one of the frames holds code
    /// cached somewhere. Nothing is dropped, and no invalidation counted, when neither an
    /// entry nor a copy of one may map one of the frames (none is in `copied_frames`).
    pub fn flush_frames(&mut self, runs: &[(Gfn, u64)], code: bool) {
        if code {
            self.code_invalidations.any += 1;
        }
        let mapped = self.mapped_frames(runs);
        if mapped.is_empty() {
            return;
        }
        self.drop_frames(&mapped);
        // No entry maps them now, and copies made of those that did must go: the record may
        // then forget the frames of the entries replaced so far too, and does once it holds
        // more frames than there are entries (a scan of them, paid for by many flushes).
        self.invalidations += 1;
        if self.copied_frames.len() > TLB_ENTRIES {
            self.trim_copied_frames();
        } else {
            for gfn in &mapped {
                self.copied_frames.remove(gfn);
            }
        }
    }

    /// The frames in `runs` that an entry or a copy of one may map (those of
    /// `copied_frames`), in order: the frames one by one, or those copied out, whichever
    /// are fewer.
    fn mapped_frames(&self, runs: &[(Gfn, u64)]) -> Vec<u64> {
        let frames: u64 = runs.iter().map(|&(_, count)| count).sum();
        let mut mapped: Vec<u64> = if frames <= self.copied_frames.len() as u64 {
            runs.iter()
                .flat_map(|&(first, count)| first.0..first.0.saturating_add(count))
                .filter(|gfn| self.copied_frames.contains(gfn))
                .collect()
        } else {
            let runs = FrameRuns::new(runs);
            self.copied_frames
                .iter()
                .copied()
                .filter(|&gfn| runs.contains(gfn))
                .collect()
        };
        mapped.sort_unstable();
        mapped.dedup();
        mapped
    }

    /// Drops the entries for `gva` under each of `roots` whose translation stands, for a
    /// refill to recompute what they allow: not an invalidation.
    pub fn drop_page(&mut self, gva: Gva, roots: impl IntoIterator<Item = u32>) {
        for root in roots {
            let slot = Self::slot(gva, root);
            if self.entries[slot].key == Self::key(gva, root) {
                self.drop_entry(slot);
            }
        }
    }

    /// Drops the entries of the frames in `mapped`, sorted. The packed low bits of the
    /// entries' frames are tested first: against each of a few frames, a run of entries at a
    /// time, or against a bitmap of more frames' low 12 bits, one entry at a time; only an
    /// entry that passes is looked for in `mapped`.
    fn drop_frames(&mut self, mapped: &[u64]) {
        const RUN: usize = 16;
        if mapped.len() > FEW_FRAMES {
            let mut bitmap = [0u64; 64];
            for &gfn in mapped {
                bitmap[(gfn as usize >> 6) & 63] |= 1 << (gfn & 63);
            }
            for slot in 0..TLB_ENTRIES {
                let frame = self.frames[slot] as usize;
                if bitmap[(frame >> 6) & 63] >> (frame & 63) & 1 != 0 {
                    self.drop_if_mapped(slot, mapped);
                }
            }
            return;
        }
        for first in (0..TLB_ENTRIES).step_by(RUN) {
            let run: &[u32; RUN] = self.frames[first..first + RUN]
                .try_into()
                .expect("the entries are a multiple of the run");
            let matches: u32 = mapped
                .iter()
                .map(|&gfn| {
                    run.iter()
                        .map(|&frame| u32::from(frame == gfn as u32))
                        .sum::<u32>()
                })
                .sum();
            if matches != 0 {
                for slot in first..first + RUN {
                    self.drop_if_mapped(slot, mapped);
                }
            }
        }
    }

    /// Empties the entry at `slot` if it maps one of the frames in `mapped`, sorted.
    fn drop_if_mapped(&mut self, slot: usize, mapped: &[u64]) {
        let entry = &self.entries[slot];
        if entry.key != EMPTY_KEY && mapped.binary_search(&entry.gfn).is_ok() {
            self.drop_entry(slot);
        }
    }

    /// Empties the entry at `slot`.
    fn drop_entry(&mut self, slot: usize) {
        self.entries[slot] = Entry::default();
        self.frames[slot] = EMPTY_FRAME;
    }
}

/// Runs of guest frames (first frame, count) to test frames against: a few as given, more
/// sorted and merged for a binary search.
enum FrameRuns<'a> {
    Few(&'a [(Gfn, u64)]),
    /// Disjoint (first frame, end) pairs, in order.
    Sorted(Vec<(u64, u64)>),
}

impl<'a> FrameRuns<'a> {
    /// Up to this many runs are tested one by one.
    const FEW: usize = 8;

    fn new(runs: &'a [(Gfn, u64)]) -> FrameRuns<'a> {
        if runs.len() <= Self::FEW {
            return FrameRuns::Few(runs);
        }
        let mut spans: Vec<(u64, u64)> = runs
            .iter()
            .map(|&(first, count)| (first.0, first.0.saturating_add(count)))
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        FrameRuns::Sorted(merged)
    }

    /// Whether frame `gfn` lies in a run.
    fn contains(&self, gfn: u64) -> bool {
        match self {
            FrameRuns::Few(runs) => runs
                .iter()
                .any(|&(first, count)| gfn.wrapping_sub(first.0) < count),
            FrameRuns::Sorted(spans) => {
                let after = spans.partition_point(|&(start, _)| start <= gfn);
                after > 0 && gfn < spans[after - 1].1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_handed_out_once_until_a_flush_frees_them() {
        let mut tlb = Tlb::new();
        let read = Access::new(AccessKind::Read, Privilege::User);
        let first = tlb.take_tag().unwrap();
        tlb.fill(Gva(0x1000), first, Gfn(1), access_bit(read), 0, 0x1000);
        let second = tlb.take_tag().unwrap();
        assert_ne!(first, second);
        assert!(tlb.lookup(Gva(0x1000), second, read).is_none());
        tlb.next_tag = TAGS - 1;
        assert_eq!(tlb.tags_left(), 1);
        assert!(tlb.take_tag().is_some());
        assert_eq!(tlb.take_tag(), None);
        let before = tlb.invalidations();
        tlb.flush();
        assert_eq!(tlb.invalidations(), before + 1);
        assert_eq!(tlb.take_tag(), Some(0));
        assert!(
            tlb.lookup(Gva(0x1000), first, read).is_none(),
            "the flush cleared it"
        );
    }

    #[test]
    fn tags_are_distinct_multiples_of_four_far_apart() {
        let mut tlb = Tlb::new();
        let tags: Vec<u32> = std::iter::from_fn(|| tlb.take_tag()).collect();
        assert_eq!(tags.len(), TAGS as usize);
        assert!(tags.iter().all(|&tag| tag % 4 == 0 && tag < NO_ROOT));
        let distinct: std::collections::HashSet<u32> = tags.iter().copied().collect();
        assert_eq!(distinct.len(), tags.len());
        for pair in tags.windows(2) {
            let apart = (pair[0] / 4).abs_diff(pair[1] / 4);
            assert!(apart.min(TAGS - apart) > 64, "{pair:?}: sets too close");
        }
    }

    #[test]
    fn a_hit_needs_the_same_page_root_and_an_allowed_access() {
        let mut tlb = Tlb::new();
        let read = Access::new(AccessKind::Read, Privilege::User);
        let write = Access::new(AccessKind::Write, Privilege::User);
        let gva = Gva(0x7fff_1234_5678);
        tlb.fill(
            gva,
            7,
            Gfn(0x42),
            access_bit(read) | access_bit(write),
            access_bit(read),
            0x1000_0000,
        );
        let hit = tlb.lookup(gva, 7, read).unwrap();
        assert_eq!(hit.gpa, Gpa(0x42678));
        assert_eq!(hit.host, Some(0x1000_0678));
        assert_eq!(
            tlb.lookup(gva, 7, write).unwrap().host,
            None,
            "allowed, not direct"
        );
        assert!(tlb.lookup(gva, 8, read).is_none(), "another root");
        assert!(
            tlb.lookup(Gva(gva.0 + 0x1000), 7, read).is_none(),
            "another page"
        );
        let fetch = Access::new(AccessKind::Fetch, Privilege::User);
        assert!(tlb.lookup(gva, 7, fetch).is_none(), "not allowed");
        tlb.fill(
            gva,
            8,
            Gfn(0x43),
            access_bit(read),
            access_bit(read),
            0x2000_0000,
        );
        assert_eq!(
            tlb.lookup(gva, 8, read).unwrap().gpa,
            Gpa(0x43678),
            "roots use their own sets"
        );
        assert!(tlb.lookup(gva, 7, read).is_some());
        tlb.flush_page(gva, [7, 8]);
        assert!(tlb.lookup(gva, 7, read).is_none());
        assert!(tlb.lookup(gva, 8, read).is_none());
    }

    #[test]
    fn the_inline_view_finds_the_entry_lookup_uses() {
        let mut tlb = Tlb::new();
        let write = Access::new(AccessKind::Write, Privilege::Supervisor);
        let gva = Gva(0xffff_8000_0012_3456);
        let bit = access_bit(write);
        tlb.fill(gva, 44, Gfn(0x99), bit, bit, 0x7000_0000);
        let view = tlb.inline_view([8, 44]);
        let tag = view.tags[(gva.0 >> 63) as usize];
        let page = gva.0 >> 12;
        let key = gva.0 & !0xfff | u64::from(tag);
        let index =
            ((page ^ (page >> TLB_INDEX_BITS)).wrapping_add(key / 4)) as usize % TLB_ENTRIES;
        // SAFETY: the index is within the array.
        let entry = unsafe { view.entries.add(index * entry_layout::SIZE) };
        // SAFETY: the offsets are those of the entry's fields, read at their types.
        let (key, direct, addend) = unsafe {
            (
                entry.add(entry_layout::KEY).cast::<u64>().read(),
                entry.add(entry_layout::DIRECT).cast::<u16>().read(),
                entry.add(entry_layout::ADDEND).cast::<u64>().read(),
            )
        };
        assert_eq!(key, (gva.0 + 3) & !0xfff | 44, "a 4-byte access's key");
        assert_ne!(
            key,
            (((gva.0 | 0xffd) + 3) & !0xfff) | 44,
            "one into the next page"
        );
        assert_eq!(direct & InlineTlb::direct_bit(write), bit);
        assert_eq!(
            gva.0.wrapping_add(addend) as usize,
            tlb.lookup(gva, 44, write).unwrap().host.unwrap()
        );
        assert_eq!(tlb.lookup(gva, 44, write).unwrap().host, Some(0x7000_0456));
    }

    #[test]
    fn a_frame_flush_drops_the_frames_entries_under_every_tag_and_no_other() {
        let mut tlb = Tlb::new();
        let read = Access::new(AccessKind::Read, Privilege::User);
        let bit = access_bit(read);
        tlb.fill(Gva(0x1000), 1, Gfn(0x40), bit, bit, 0x1000);
        tlb.fill(Gva(0x5000), 2, Gfn(0x41), bit, bit, 0x2000);
        tlb.fill(Gva(0x9000), 1, Gfn(0x80), bit, bit, 0x3000);
        let (before, code) = (tlb.invalidations(), tlb.code_invalidations());
        tlb.flush_frames(&[(Gfn(0x40), 2)], false);
        assert!(tlb.lookup(Gva(0x1000), 1, read).is_none());
        assert!(tlb.lookup(Gva(0x5000), 2, read).is_none());
        assert!(tlb.lookup(Gva(0x9000), 1, read).is_some());
        assert_eq!(tlb.invalidations(), before + 1);
        assert_eq!(tlb.code_invalidations(), code, "no code frame");
        tlb.flush_frames(&[(Gfn(0x80), 1)], true);
        assert!(tlb.lookup(Gva(0x9000), 1, read).is_none());
        let after = CodeInvalidations {
            any: code.any + 1,
            ..code
        };
        assert_eq!(tlb.code_invalidations(), after, "not the upper half's");
        assert_eq!(tlb.invalidations(), before + 2);
    }

    #[test]
    fn a_page_flush_invalidates_code_translations_of_its_half() {
        let mut tlb = Tlb::new();
        let start = tlb.code_invalidations();
        tlb.flush_page(Gva(0x7000), [1]);
        let lower = tlb.code_invalidations();
        assert_eq!((lower.any, lower.upper), (start.any + 1, start.upper));
        tlb.flush_page(Gva(0xffff_ffff_8100_0000), [1]);
        let upper = tlb.code_invalidations();
        assert_eq!((upper.any, upper.upper), (start.any + 2, start.upper + 1));
        tlb.flush();
        let all = tlb.code_invalidations();
        assert_eq!((all.any, all.upper), (start.any + 3, start.upper + 2));
    }

    #[test]
    fn a_frame_flush_drops_the_entries_of_the_frames_it_names_and_no_others() {
        let mut tlb = Tlb::new();
        let read = Access::new(AccessKind::Read, Privilege::User);
        let bit = access_bit(read);
        let page = |n: u64| Gva(0x40_0000 + n * 0x1000);
        // Frames 0x100-0x13f, and 0x1100 and 0x1130, whose low bits are 0x100's and 0x130's.
        for n in 0..0x40 {
            tlb.fill(page(n), 4, Gfn(0x100 + n), bit, bit, 0x1000);
        }
        tlb.fill(page(0x40), 4, Gfn(0x1100), bit, bit, 0x1000);
        tlb.fill(page(0x41), 4, Gfn(0x1130), bit, bit, 0x1000);
        let mapped = |tlb: &Tlb, n: u64| tlb.lookup(page(n), 4, read).is_some();
        // More frames than are compared at once.
        tlb.flush_frames(&[(Gfn(0x100), 0x20)], false);
        assert!((0..0x20).all(|n| !mapped(&tlb, n)));
        assert!((0x20..0x42).all(|n| mapped(&tlb, n)));
        // A few.
        tlb.flush_frames(&[(Gfn(0x130), 1), (Gfn(0x1100), 1)], false);
        assert!(!mapped(&tlb, 0x30) && !mapped(&tlb, 0x40));
        assert!((0x20..0x30).chain(0x31..0x40).all(|n| mapped(&tlb, n)));
        assert!(mapped(&tlb, 0x41));
    }

    #[test]
    fn a_frame_flush_counts_an_invalidation_only_where_a_copy_may_map_a_frame() {
        let mut tlb = Tlb::new();
        let read = Access::new(AccessKind::Read, Privilege::User);
        let bit = access_bit(read);
        tlb.fill(Gva(0x1000), 4, Gfn(0x40), bit, bit, 0x1000);
        let before = tlb.invalidations();
        tlb.flush_frames(&[(Gfn(0x41), 100)], false);
        assert_eq!(tlb.invalidations(), before, "no entry mapped them");
        // An entry replaced by another in its set: a copy of it may still be around.
        let page = 0x1000 + (TLB_ENTRIES as u64) * 0x1000 * 2;
        tlb.fill(Gva(page), 4, Gfn(0x50), bit, bit, 0x2000);
        tlb.fill(Gva(page + 0x400_0000), 4, Gfn(0x60), bit, bit, 0x3000);
        tlb.flush_frames(&[(Gfn(0x50), 1)], false);
        assert_eq!(
            tlb.invalidations(),
            before + 1,
            "a copy of frame 0x50's entry"
        );
        // Frame 0x70's entry, filled since and replaced: a copy may be around. The
        // invalidation forgot frame 0x50, whose entry was gone by then.
        tlb.fill(Gva(page), 4, Gfn(0x70), bit, bit, 0x2000);
        tlb.fill(Gva(page + 0x400_0000), 4, Gfn(0x60), bit, bit, 0x3000);
        tlb.flush_frames(&[(Gfn(0x50), 1)], false);
        assert_eq!(tlb.invalidations(), before + 1);
        tlb.flush_frames(&[(Gfn(0x70), 1)], false);
        assert_eq!(tlb.invalidations(), before + 2);
        assert!(tlb.lookup(Gva(0x1000), 4, read).is_some());
    }

    #[test]
    fn many_frame_runs_are_matched_like_few() {
        let runs: Vec<(Gfn, u64)> = [(40, 4), (10, 1), (41, 10), (100, 512), (7, 2), (3, 1)]
            .into_iter()
            .cycle()
            .take(12)
            .map(|(first, count)| (Gfn(first), count))
            .collect();
        let few = FrameRuns::Few(&runs);
        let sorted = FrameRuns::new(&runs);
        assert!(matches!(sorted, FrameRuns::Sorted(_)));
        for gfn in 0..700 {
            assert_eq!(few.contains(gfn), sorted.contains(gfn), "frame {gfn}");
        }
    }

    #[test]
    fn every_access_has_its_own_bit() {
        let bits: Vec<u16> = every_access().map(access_bit).collect();
        assert_eq!(bits.len(), 9);
        assert_eq!(bits.iter().fold(0, |all, bit| all | bit), 0x1ff);
    }
}
