//! Shadow pages: the VM-wide cache of guest translations (KVM's shadow MMU, `mmu.c`).
//!
//! A shadow page mirrors one guest page table, keyed by the table's frame and a [`PageRole`];
//! its 512 entries ([`Spte`]) either link to the shadow page of the next level or, at the
//! leaf, hold the guest frame an address maps to with the rights combined over every level of
//! the guest walk.
//!
//! # Huge pages (seeds 000 and 004)
//!
//! A guest 2 MiB or 1 GiB page is mirrored by one large leaf while nothing inside it is
//! write-tracked and it lies in one memslot; when a frame inside it becomes tracked (a guest
//! page table placed in the large page), the large leaf is zapped and the next fault cuts the
//! region into *direct* pages of 4 KiB entries: the split happens on demand, only where a
//! frame must be tracked. Large leaves are found through a reverse map by region, so that
//! enabling dirty logging can split every one in a slot up front ([`SplitPolicy::Eager`]) or
//! zap them to refault in 4 KiB pieces ([`SplitPolicy::Lazy`]). Walking the shadow tree of a root (see [`crate::vcpu_mmu`]) gives the same answer
//! as walking the guest's tables, without reading guest memory or checking reserved bits.
//!
//! # Why the shadow tree stays coherent
//!
//! Every guest frame that holds a shadowed guest table is *write-tracked*: no vCPU's TLB ever
//! lets a store to it through directly, so each store takes the slow path, which calls
//! [`ShadowMmu::guest_wrote`]. That zaps the shadow entries mirroring the guest entries written
//! (and the subtrees only they reached) before the vCPU runs on, and bumps the flush
//! generation so that every vCPU drops its TLB at its next instruction boundary. So a shadow
//! entry never outlives the guest entry it mirrors, and a root may be reused after any CR3
//! switch: nothing the architecture lets a guest rely on is stale.
//!
//! # Locking
//!
//! One reader-writer lock guards the pages: TLB misses walk the tree under the read lock;
//! faults, zaps and root changes take it for writing.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::addr::{Gfn, Gpa, Gva};
use crate::paging::level_shift;
use crate::role::PageRole;
use crate::walker::{PteAccess, Translation};

/// Index of a shadow page in the VM's page arena.
pub type PageId = u32;

/// Entries per shadow page.
pub const ENTRIES: usize = 512;

/// A shadow page-table entry.
///
/// ```text
///  63             12 11   8   5    4      3      2:0
/// [ gfn or child id ][pkey][D][LEAF][PRESENT][U W X]
/// ```
///
/// A leaf holds the guest frame and the guest's combined rights (the [`PteAccess`] bits); D
/// says the guest's leaf entry is dirty, so a write through it needs no walk to set D. A link
/// holds the [`PageId`] of the child page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spte(u64);

impl Spte {
    const PRESENT: u64 = 1 << 3;
    const LEAF: u64 = 1 << 4;
    const DIRTY: u64 = 1 << 5;
    const PKEY_SHIFT: u32 = 8;

    /// A leaf mapping `gfn` with `access` rights.
    pub fn leaf(gfn: Gfn, access: PteAccess, dirty: bool, pkey: u8) -> Spte {
        let dirty = if dirty { Self::DIRTY } else { 0 };
        Spte(
            (gfn.0 << 12)
                | (u64::from(pkey & 0xf) << Self::PKEY_SHIFT)
                | dirty
                | Self::LEAF
                | Self::PRESENT
                | u64::from(access.bits()),
        )
    }

    /// A link to child page `id`.
    fn link(id: PageId) -> Spte {
        Spte((u64::from(id) << 12) | Self::PRESENT)
    }

    /// The entry maps or links something.
    pub fn is_present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }

    /// The entry is a leaf.
    pub fn is_leaf(self) -> bool {
        self.0 & Self::LEAF != 0
    }

    /// A leaf's guest frame.
    pub fn gfn(self) -> Gfn {
        Gfn(self.0 >> 12)
    }

    /// A leaf's rights.
    pub fn access(self) -> PteAccess {
        PteAccess::from_bits(self.0 as u8 & 7)
    }

    /// A leaf whose guest entry is dirty.
    pub fn dirty(self) -> bool {
        self.0 & Self::DIRTY != 0
    }

    /// A leaf's protection key.
    pub fn pkey(self) -> u8 {
        ((self.0 >> Self::PKEY_SHIFT) & 0xf) as u8
    }

    /// A link's child page.
    fn child(self) -> PageId {
        (self.0 >> 12) as PageId
    }

    /// The 4 KiB leaf inside this leaf at `level` that maps `gva`.
    fn frame_of(self, gva: Gva, level: u8) -> Spte {
        let within = (gva.0 >> 12) & (frames_at(level) - 1);
        Spte(self.0 + (within << 12))
    }

    /// The same rights and flags, for frame `gfn`.
    fn with_gfn(self, gfn: Gfn) -> Spte {
        Spte((self.0 & 0xfff) | (gfn.0 << 12))
    }
}

/// One shadow page.
struct ShadowPage {
    gfn: Gfn,
    role: PageRole,
    sptes: Box<[Spte; ENTRIES]>,
    /// The entries that link to this page.
    parents: Vec<(PageId, u16)>,
    /// vCPU root caches holding this page as a root.
    root_count: u32,
    /// Stores to the guest table since a translation last went through this page (KVM's
    /// `write_flooding_count`); reset by every shadow walk through the page.
    writes_unused: AtomicU32,
}

/// Stores to a guest table with no translation through it in between, after which its shadow
/// page is zapped instead of updated: the guest is likely reusing the frame as data (KVM's
/// threshold too).
const WRITE_FLOOD: u32 = 3;

/// The shadow MMU's counters, readable while guests run.
#[derive(Debug, Default)]
pub struct ShadowCounters {
    /// Shadow pages made.
    pub pages_created: AtomicU64,
    /// Shadow pages zapped.
    pub pages_zapped: AtomicU64,
    /// Guest stores to write-tracked frames.
    pub tracked_writes: AtomicU64,
    /// Shadow entries installed by faults.
    pub sptes_installed: AtomicU64,
    /// Shadow pages zapped because their guest table was flooded by stores.
    pub flooded: AtomicU64,
    /// Large leaves split (eagerly or lazily) for dirty logging or tracking.
    pub splits: AtomicU64,
}

/// A snapshot of [`ShadowCounters`] and the page counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Shadow pages made.
    pub pages_created: u64,
    /// Shadow pages zapped.
    pub pages_zapped: u64,
    /// Guest stores to write-tracked frames.
    pub tracked_writes: u64,
    /// Shadow entries installed by faults.
    pub sptes_installed: u64,
    /// Shadow pages zapped because their guest table was flooded by stores.
    pub flooded: u64,
    /// Large leaves split.
    pub splits: u64,
    /// Shadow pages alive now.
    pub pages_alive: u64,
    /// Guest frames write-tracked now.
    pub tracked_frames: u64,
}

#[derive(Default)]
struct State {
    pages: Vec<Option<ShadowPage>>,
    free: Vec<PageId>,
    hash: HashMap<(Gfn, PageRole), PageId>,
    /// Guest frames holding shadowed guest tables, with the pages shadowing each; ordered, so
    /// that a large page can ask whether any frame inside it is tracked.
    tracked: BTreeMap<Gfn, Vec<PageId>>,
    /// Large leaves by the first frame of the region they map: the page and entry.
    large: BTreeMap<Gfn, Vec<(PageId, u16)>>,
    /// Guest frames whose instructions a vCPU has decoded and cached.
    code: std::collections::HashSet<Gfn>,
}

/// What enabling dirty logging does to the large leaves mapping a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitPolicy {
    /// Replace each by direct pages holding all its 4 KiB entries at once.
    Eager,
    /// Zap each; the next access to each 4 KiB page faults it in.
    Lazy,
    /// Leave them. Umbra's TLB decides per 4 KiB page whether a store may go straight to
    /// memory, so dirty pages are logged exactly through a large leaf too; KVM must split
    /// because hardware write-protects at the granularity of the shadow entry.
    Keep,
}

/// The number of 4 KiB frames a leaf at `level` maps.
fn frames_at(level: u8) -> u64 {
    1 << (level_shift(level) - 12)
}

impl State {
    fn page(&self, id: PageId) -> &ShadowPage {
        self.pages[id as usize].as_ref().expect("live shadow page")
    }

    fn page_mut(&mut self, id: PageId) -> &mut ShadowPage {
        self.pages[id as usize].as_mut().expect("live shadow page")
    }
}

/// The VM-wide shadow MMU.
#[derive(Default)]
pub struct ShadowMmu {
    state: RwLock<State>,
    /// Bumped whenever a TLB entry somewhere may have become stale.
    flush_generation: AtomicU64,
    /// Bumped whenever a store reached a frame whose instructions were decoded and cached:
    /// every vCPU's cached decodes older than it are stale.
    code_generation: AtomicU64,
    counters: ShadowCounters,
}

impl crate::memslot::WriteTracker for ShadowMmu {
    /// Every store through the memslots (the interpreter's slow path, devices, a debugger,
    /// a loader): cached decodes of the frames written go stale, and shadow entries mirroring
    /// guest entries written are zapped.
    fn wrote(&self, gpa: Gpa, len: usize) {
        let end = gpa.0 + len.max(1) as u64;
        let mut at = gpa.0;
        while at < end {
            let page_end = (at | 0xfff) + 1;
            let chunk = (end.min(page_end) - at) as usize;
            self.code_written(Gpa(at).gfn());
            self.guest_wrote(Gpa(at), chunk);
            at = page_end;
        }
    }
}

/// The index into a page at `level` of the entry that maps `gva`.
pub fn index(gva: Gva, level: u8) -> usize {
    ((gva.0 >> level_shift(level)) & (ENTRIES as u64 - 1)) as usize
}

impl ShadowMmu {
    /// An empty shadow MMU.
    pub fn new() -> ShadowMmu {
        ShadowMmu::default()
    }

    /// The generation every vCPU compares its TLB against.
    #[inline]
    pub fn flush_generation(&self) -> u64 {
        self.flush_generation.load(Ordering::Acquire)
    }

    /// Makes every vCPU drop its TLB at its next instruction boundary.
    pub fn request_flush(&self) {
        self.flush_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The counters and page counts.
    pub fn stats(&self) -> ShadowStats {
        let state = self.state.read();
        let c = &self.counters;
        ShadowStats {
            pages_created: c.pages_created.load(Ordering::Relaxed),
            pages_zapped: c.pages_zapped.load(Ordering::Relaxed),
            tracked_writes: c.tracked_writes.load(Ordering::Relaxed),
            sptes_installed: c.sptes_installed.load(Ordering::Relaxed),
            flooded: c.flooded.load(Ordering::Relaxed),
            splits: c.splits.load(Ordering::Relaxed),
            pages_alive: (state.pages.len() - state.free.len()) as u64,
            tracked_frames: state.tracked.len() as u64,
        }
    }

    /// Takes a reference on the root page shadowing the guest top-level table at `gfn`.
    pub fn get_root(&self, gfn: Gfn, role: PageRole) -> PageId {
        let mut state = self.state.write();
        let id = self.get_or_create(&mut state, gfn, role);
        state.page_mut(id).root_count += 1;
        id
    }

    /// Drops a reference taken by [`ShadowMmu::get_root`]; an unreferenced root is zapped.
    pub fn put_root(&self, id: PageId) {
        let mut state = self.state.write();
        let page = state.page_mut(id);
        page.root_count -= 1;
        if page.root_count == 0 && page.parents.is_empty() {
            self.zap_page(&mut state, id);
            self.request_flush();
        }
    }

    /// The leaf entry mapping the 4 KiB page of `gva` under `root`, if the shadow tree has
    /// one (for a large leaf, the entry for that page inside it).
    pub fn lookup(&self, root: PageId, gva: Gva) -> Option<Spte> {
        let state = self.state.read();
        let mut id = root;
        loop {
            let page = state.page(id);
            page.writes_unused.store(0, Ordering::Relaxed);
            let level = page.role.level();
            let spte = page.sptes[index(gva, level)];
            if !spte.is_present() {
                return None;
            }
            if spte.is_leaf() {
                return Some(spte.frame_of(gva, level));
            }
            id = spte.child();
        }
    }

    /// Whether guest frame `gfn` holds a shadowed guest table.
    pub fn is_tracked(&self, gfn: Gfn) -> bool {
        self.state.read().tracked.contains_key(&gfn)
    }

    /// Whether stores to guest frame `gfn` must take the slow path: it holds a shadowed guest
    /// table, or instructions some vCPU has decoded and cached.
    pub fn is_write_protected(&self, gfn: Gfn) -> bool {
        let state = self.state.read();
        state.tracked.contains_key(&gfn) || state.code.contains(&gfn)
    }

    /// The generation of cached decodes: see [`ShadowMmu::protect_code`].
    #[inline]
    pub fn code_generation(&self) -> u64 {
        self.code_generation.load(Ordering::Acquire)
    }

    /// A vCPU is about to cache instructions decoded from guest frame `gfn`: stores to it
    /// take the slow path from now on (TLBs drop their direct-store entries for it), and the
    /// first one bumps the code generation, making every cached decode stale (v86's
    /// "has code" flag).
    pub fn protect_code(&self, gfn: Gfn) {
        if !self.state.read().code.contains(&gfn) && self.state.write().code.insert(gfn) {
            self.request_flush();
        }
    }

    /// A store reached guest frame `gfn` by the slow path: if it held cached instructions,
    /// they are stale everywhere, and the frame is no longer protected until code from it is
    /// cached again (so a frame mixing code and data does not keep every store slow).
    pub fn code_written(&self, gfn: Gfn) {
        if self.state.read().code.contains(&gfn) && self.state.write().code.remove(&gfn) {
            self.code_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Mirrors the guest walk `translation` of `gva` under `root`, making the shadow pages
    /// missing on the way, and returns the 4 KiB leaf entry for `gva`.
    ///
    /// A guest large page gets one large leaf if its level is at most `max_level` (the caller
    /// knows whether the region lies in one memslot) and no frame inside it is tracked.
    pub fn install(
        &self,
        root: PageId,
        gva: Gva,
        translation: &Translation,
        max_level: u8,
    ) -> Spte {
        let mut state = self.state.write();
        let mut id = root;
        let guest_leaf = translation.level;
        let leaf = Spte::leaf(
            translation.gpa.gfn(),
            translation.access,
            translation.leaf_pte() & crate::paging::PTE_DIRTY != 0,
            translation.pkey,
        );
        loop {
            let role = state.page(id).role;
            let level = role.level();
            let slot = index(gva, level);
            // At the guest's leaf level (or below it, inside a direct page) the entry maps the
            // 4 KiB frame; above, it links to the next page.
            if level == 1 {
                state.page_mut(id).sptes[slot] = leaf;
                self.counters
                    .sptes_installed
                    .fetch_add(1, Ordering::Relaxed);
                return leaf;
            }
            if level == guest_leaf && !role.is_direct() && level <= max_level {
                let frames = frames_at(level);
                let base = Gfn(leaf.gfn().0 & !(frames - 1));
                let inside = base..Gfn(base.0 + frames);
                if state.tracked.range(inside).next().is_none() {
                    if state.page(id).sptes[slot].is_present() {
                        self.zap_entry(&mut state, id, slot);
                    }
                    state.page_mut(id).sptes[slot] = leaf.with_gfn(base);
                    state.large.entry(base).or_default().push((id, slot as u16));
                    self.counters
                        .sptes_installed
                        .fetch_add(1, Ordering::Relaxed);
                    return leaf;
                }
            }
            let existing = state.page(id).sptes[slot];
            if existing.is_present() && !existing.is_leaf() {
                id = existing.child();
                continue;
            }
            let (child_gfn, child_role) = if role.is_direct() || level <= guest_leaf {
                // Inside a guest large page: a direct page for the region this entry covers.
                let frames = 1u64 << (level_shift(level) - 12);
                let region = Gfn(translation.gpa.gfn().0 & !(frames - 1));
                (region, role.direct(level - 1, translation.access.bits()))
            } else {
                (translation.table_gfns[usize::from(level) - 2], role.child())
            };
            let child = self.get_or_create(&mut state, child_gfn, child_role);
            state.page_mut(child).parents.push((id, slot as u16));
            state.page_mut(id).sptes[slot] = Spte::link(child);
            id = child;
        }
    }

    /// The shadow page for (`gfn`, `role`), made (and its frame write-tracked) if missing.
    fn get_or_create(&self, state: &mut State, gfn: Gfn, role: PageRole) -> PageId {
        if let Some(&id) = state.hash.get(&(gfn, role)) {
            return id;
        }
        let page = ShadowPage {
            gfn,
            role,
            sptes: Box::new([Spte::default(); ENTRIES]),
            parents: Vec::new(),
            root_count: 0,
            writes_unused: AtomicU32::new(0),
        };
        let id = match state.free.pop() {
            Some(id) => {
                state.pages[id as usize] = Some(page);
                id
            }
            None => {
                state.pages.push(Some(page));
                (state.pages.len() - 1) as PageId
            }
        };
        state.hash.insert((gfn, role), id);
        if !role.is_direct() {
            let newly_tracked = match state.tracked.entry(gfn) {
                Entry::Occupied(mut e) => {
                    e.get_mut().push(id);
                    false
                }
                Entry::Vacant(e) => {
                    e.insert(vec![id]);
                    true
                }
            };
            // A TLB may still hold a writable entry for the frame that just became tracked, and
            // a large leaf may map it: that leaf is zapped, to be split on the next fault.
            if newly_tracked {
                self.zap_large_covering(state, gfn);
                self.request_flush();
            }
        }
        self.counters.pages_created.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Called after the guest (or anyone) stored `len` bytes at `gpa` in a write-tracked
    /// frame: zaps the shadow entries mirroring the guest entries written.
    pub fn guest_wrote(&self, gpa: Gpa, len: usize) {
        let mut state = self.state.write();
        let Some(pages) = state.tracked.get(&gpa.gfn()).cloned() else {
            return;
        };
        self.counters.tracked_writes.fetch_add(1, Ordering::Relaxed);
        let first = gpa.page_offset() / 8;
        let last = (gpa.page_offset() + len.max(1) as u64 - 1).min(4095) / 8;
        for id in pages {
            let Some(page) = state.pages[id as usize].as_ref() else {
                continue;
            };
            let flooded = page.writes_unused.fetch_add(1, Ordering::Relaxed) + 1 >= WRITE_FLOOD;
            if flooded && page.root_count == 0 {
                self.counters.flooded.fetch_add(1, Ordering::Relaxed);
                self.unlink_and_zap(&mut state, id);
                continue;
            }
            for slot in first..=last {
                self.zap_entry(&mut state, id, slot as usize);
            }
        }
        self.request_flush();
    }

    /// Zaps page `id`, clearing every entry that links to it first.
    fn unlink_and_zap(&self, state: &mut State, id: PageId) {
        let parents = std::mem::take(&mut state.page_mut(id).parents);
        for (parent, slot) in parents {
            state.page_mut(parent).sptes[usize::from(slot)] = Spte::default();
        }
        self.zap_page(state, id);
    }

    /// Zaps the large leaves whose region holds `gfn`.
    fn zap_large_covering(&self, state: &mut State, gfn: Gfn) {
        for level in [2, 3] {
            let base = Gfn(gfn.0 & !(frames_at(level) - 1));
            if let Some(leaves) = state.large.get(&base).cloned() {
                for (id, slot) in leaves {
                    if state.page(id).role.level() == level {
                        self.counters.splits.fetch_add(1, Ordering::Relaxed);
                        self.zap_entry(state, id, usize::from(slot));
                    }
                }
            }
        }
    }

    /// Clears one entry, dropping the subtree it alone linked to.
    fn zap_entry(&self, state: &mut State, id: PageId, slot: usize) {
        let spte = state.page(id).sptes[slot];
        state.page_mut(id).sptes[slot] = Spte::default();
        if spte.is_leaf() && state.page(id).role.level() > 1 {
            Self::forget_large(state, spte.gfn(), id, slot);
        }
        if spte.is_present() && !spte.is_leaf() {
            let child = spte.child();
            let page = state.page_mut(child);
            page.parents
                .retain(|&(parent, at)| (parent, at) != (id, slot as u16));
            if page.parents.is_empty() && page.root_count == 0 {
                self.zap_page(state, child);
            }
        }
    }

    /// Frees a page that nothing links to and no root cache holds, with its orphaned children.
    fn zap_page(&self, state: &mut State, id: PageId) {
        for slot in 0..ENTRIES {
            self.zap_entry(state, id, slot);
        }
        let page = state.pages[id as usize].take().expect("live shadow page");
        state.hash.remove(&(page.gfn, page.role));
        if !page.role.is_direct()
            && let Entry::Occupied(mut e) = state.tracked.entry(page.gfn)
        {
            e.get_mut().retain(|&other| other != id);
            if e.get().is_empty() {
                e.remove();
            }
        }
        state.free.push(id);
        self.counters.pages_zapped.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a large leaf from the reverse map.
    fn forget_large(state: &mut State, base: Gfn, id: PageId, slot: usize) {
        if let Entry::Occupied(mut e) = state.large.entry(base) {
            e.get_mut().retain(|&leaf| leaf != (id, slot as u16));
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// Splits every large leaf mapping a frame in `range`, as enabling dirty logging on a slot
    /// does, by `policy`. Returns the number of large leaves split.
    pub fn split_large(&self, range: std::ops::Range<Gfn>, policy: SplitPolicy) -> usize {
        let mut state = self.state.write();
        let first = Gfn(range.start.0 & !(frames_at(3) - 1));
        let leaves: Vec<(Gfn, PageId, u16)> = state
            .large
            .range(first..range.end)
            .flat_map(|(&base, leaves)| leaves.iter().map(move |&(id, slot)| (base, id, slot)))
            .filter(|&(base, id, _)| {
                base.0 + frames_at(state.page(id).role.level()) > range.start.0
            })
            .collect();
        for &(_, id, slot) in &leaves {
            match policy {
                SplitPolicy::Lazy => {
                    self.counters.splits.fetch_add(1, Ordering::Relaxed);
                    self.zap_entry(&mut state, id, usize::from(slot));
                }
                SplitPolicy::Eager => {
                    self.counters.splits.fetch_add(1, Ordering::Relaxed);
                    self.split_leaf(&mut state, id, usize::from(slot));
                }
                SplitPolicy::Keep => {}
            }
        }
        self.request_flush();
        leaves.len()
    }

    /// Replaces the large leaf at `slot` of page `id` by a direct page holding all its pieces,
    /// themselves split down to 4 KiB.
    fn split_leaf(&self, state: &mut State, id: PageId, slot: usize) {
        let spte = state.page(id).sptes[slot];
        let role = state.page(id).role;
        let level = role.level();
        Self::forget_large(state, spte.gfn(), id, slot);
        let child_role = role.direct(level - 1, spte.access().bits());
        let child = self.get_or_create(state, spte.gfn(), child_role);
        let piece = frames_at(level - 1);
        for n in 0..ENTRIES as u64 {
            let gfn = Gfn(spte.gfn().0 + n * piece);
            state.page_mut(child).sptes[n as usize] = spte.with_gfn(gfn);
            if level - 1 > 1 {
                state.large.entry(gfn).or_default().push((child, n as u16));
                self.split_leaf(state, child, n as usize);
            }
        }
        state.page_mut(child).parents.push((id, slot as u16));
        state.page_mut(id).sptes[slot] = Spte::link(child);
    }

    /// Empties every page's entries (roots stay, empty), as a memslot removal requires.
    pub fn zap_all(&self) {
        let mut state = self.state.write();
        let roots: Vec<PageId> = (0..state.pages.len() as PageId)
            .filter(|&id| {
                state.pages[id as usize]
                    .as_ref()
                    .is_some_and(|p| p.root_count > 0)
            })
            .collect();
        for root in roots {
            for slot in 0..ENTRIES {
                self.zap_entry(&mut state, root, slot);
            }
        }
        self.request_flush();
    }
}
