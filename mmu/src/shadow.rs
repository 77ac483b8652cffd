//! Shadow pages: the VM-wide cache of guest translations (KVM's shadow MMU, `mmu.c`).
//!
//! A shadow page mirrors one guest page table, keyed by the table's frame and a [`PageRole`];
//! its 512 entries ([`Spte`]) either link to the shadow page of the next level or, at the
//! leaf, hold the guest frame an address maps to with the rights combined over every level of
//! the guest walk. Walking the shadow tree of a root (see [`crate::vcpu_mmu`]) gives the same
//! answer as walking the guest's tables, without reading guest memory or checking reserved
//! bits.
//!
//! # Why the shadow tree stays coherent
//!
//! Every guest frame that holds a shadowed guest table is *write-tracked*: no vCPU's TLB ever
//! lets a store to it through directly, so each store takes the slow path through the
//! memslots, whose write tracker this MMU is ([`ShadowMmu::guest_wrote`]). That zaps the
//! shadow entries mirroring the guest entries written (and the subtrees only they reached)
//! before the vCPU runs on, and bumps the flush generation so that every vCPU drops its TLB
//! at its next instruction boundary. So a shadow entry never outlives the guest entry it
//! mirrors, and a root may be reused after any CR3 switch: nothing the architecture lets a
//! guest rely on is stale. A guest table flooded by stores with no translation through it in
//! between is zapped whole and untracked instead (KVM's write-flooding rule).
//!
//! # Huge pages (seeds 000 and 004)
//!
//! A guest 2 MiB or 1 GiB page is mirrored by one large leaf while nothing inside it is
//! write-tracked and it lies in one memslot; when a frame inside it becomes tracked (a guest
//! page table placed in the large page), the root's large leaf is zapped and the next fault
//! cuts the region into *direct* pages of 4 KiB entries: the split happens on demand, only
//! where a frame must be tracked. Large leaves of other roots may stay: the TLB write-protects
//! tracked frames 4 KiB at a time whatever the shadow entry behind it, so they remain exact.
//! Enabling dirty logging can split every large leaf in a slot up front
//! ([`SplitPolicy::Eager`]), zap them to refault in 4 KiB pieces ([`SplitPolicy::Lazy`]), or,
//! for the same reason, keep them ([`SplitPolicy::Keep`]).
//!
//! # Concurrency (seeds 000 and 001)
//!
//! Each root owns its shadow pages ([`RootTree`]); pages are never shared between roots, so a
//! fault needs only the MMU lock for read plus its root's own lock, and faults on different
//! roots proceed in parallel. Changes that reach across roots (a store to a guest table, which
//! may be shadowed under many roots; dirty-logging splits; zap-all) take the MMU lock for
//! write. Shadow entries are atomics: a TLB miss walks its root's tree with no lock at all,
//! inside a crossbeam-epoch critical section, and a page unlinked from a tree is freed through
//! the epoch only once no walker that might have seen it remains.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_epoch::{self as epoch, Guard, Owned, Shared};
use parking_lot::{Mutex, RwLock};

use crate::addr::{Gfn, Gpa, Gva};
use crate::frame_set::FrameSet;
use crate::paging::level_shift;
use crate::role::PageRole;
use crate::walker::{PteAccess, Translation};

/// Entries per shadow page.
pub const ENTRIES: usize = 512;

/// Roots kept for reuse after vCPUs evicted them from their caches (see
/// [`ShadowMmu::put_root`]).
pub const PARKED_ROOTS: usize = 64;

/// Stores to a guest table with no translation through it in between, after which its shadow
/// page is zapped instead of updated: the guest is likely reusing the frame as data (KVM's
/// threshold too).
const WRITE_FLOOD: u32 = 3;

/// A shadow page-table entry.
///
/// ```text
///  63             12 11   8   5    4      3      2:0
/// [ gfn            ][pkey][D][LEAF][PRESENT][U W X]      a leaf
/// [ child page address (64-byte aligned) ][PRESENT]      a link
/// ```
///
/// A leaf holds the guest frame and the guest's combined rights (the [`PteAccess`] bits); D
/// says the guest's leaf entry is dirty, so a write through it needs no walk to set D.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spte(u64);

impl Spte {
    const PRESENT: u64 = 1 << 3;
    const LEAF: u64 = 1 << 4;
    const DIRTY: u64 = 1 << 5;
    const GLOBAL: u64 = 1 << 6;
    const PKEY_SHIFT: u32 = 8;
    /// The low bits of a link that are flags, not address.
    const LINK_FLAGS: u64 = 0x3f;

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

    /// The same leaf, global ([`Spte::global`]) if `global`.
    pub fn with_global(self, global: bool) -> Spte {
        if global {
            Spte(self.0 | Self::GLOBAL)
        } else {
            self
        }
    }

    /// A leaf's translation is global: the guest's entry has G set, with CR4.PGE = 1 when it
    /// was installed.
    pub fn global(self) -> bool {
        self.0 & Self::GLOBAL != 0
    }

    /// A link to `child`.
    fn link(child: Shared<'_, ShadowPage>) -> Spte {
        Spte(child.as_raw() as u64 | Self::PRESENT)
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

    /// A link's child page, as the epoch sees pointers.
    fn child<'g>(self) -> Shared<'g, ShadowPage> {
        Shared::from((self.0 & !Self::LINK_FLAGS) as *const ShadowPage)
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

/// The number of 4 KiB frames a leaf at `level` maps.
fn frames_at(level: u8) -> u64 {
    1 << (level_shift(level) - 12)
}

/// The index into a page at `level` of the entry that maps `gva`.
pub fn index(gva: Gva, level: u8) -> usize {
    ((gva.0 >> level_shift(level)) & (ENTRIES as u64 - 1)) as usize
}

/// One shadow page. 64-byte aligned, so that a link keeps its flags in the low bits.
#[repr(align(64))]
struct ShadowPage {
    gfn: Gfn,
    role: PageRole,
    sptes: [AtomicU64; ENTRIES],
    /// Stores to the guest table since a translation last went through this page (KVM's
    /// `write_flooding_count`); reset by every shadow walk through the page.
    writes_unused: AtomicU32,
}

impl ShadowPage {
    fn new(gfn: Gfn, role: PageRole) -> ShadowPage {
        ShadowPage {
            gfn,
            role,
            sptes: std::array::from_fn(|_| AtomicU64::new(0)),
            writes_unused: AtomicU32::new(0),
        }
    }

    fn get(&self, slot: usize) -> Spte {
        Spte(self.sptes[slot].load(Ordering::Acquire))
    }

    fn set(&self, slot: usize, spte: Spte) {
        self.sptes[slot].store(spte.0, Ordering::Release);
    }
}

/// A page's address: how a tree's bookkeeping names it.
type PagePtr = usize;

/// A shadow page shadowing a tracked guest frame: its root's id, the page, and its role.
type Shadowing = (u32, PagePtr, PageRole);

/// What only the root's fault lock (or the MMU write lock) may touch.
#[derive(Default)]
struct TreeState {
    /// The tree's pages by (guest frame, role).
    hash: HashMap<(Gfn, PageRole), PagePtr>,
    /// The entries linking to each page.
    parents: HashMap<PagePtr, Vec<(PagePtr, u16)>>,
    /// Large leaves by the first frame of the region they map.
    large: BTreeMap<Gfn, Vec<(PagePtr, u16)>>,
}

/// One cached root and the shadow pages only it reaches.
pub struct RootTree {
    id: u32,
    top: PagePtr,
    /// The MMU generation the tree's contents belong to: see [`ShadowMmu::zap_all`].
    generation: AtomicU64,
    /// The guest table and role the root shadows.
    key: (Gfn, PageRole),
    /// The root's fault lock.
    state: Mutex<TreeState>,
}

impl RootTree {
    /// A number naming this root for as long as the VM lives (TLB entries are tagged with it).
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// A root a vCPU holds: see [`ShadowMmu::get_root`].
pub type RootHandle = Arc<RootTree>;

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

/// The shadow MMU's counters, readable while guests run.
#[derive(Debug, Default)]
struct Counters {
    pages_created: AtomicU64,
    pages_zapped: AtomicU64,
    tracked_writes: AtomicU64,
    sptes_installed: AtomicU64,
    flooded: AtomicU64,
    splits: AtomicU64,
}

/// A snapshot of the shadow MMU's counters and page counts.
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
    /// Shadow pages alive now by the level they shadow: index 0 holds level 1 (page tables),
    /// index 4 level 5 (PML5 tables).
    pub pages_by_level: [u64; 5],
    /// Guest frames write-tracked now.
    pub tracked_frames: u64,
    /// Roots alive now.
    pub roots: u64,
}

/// How many flushes [`ShadowMmu::flushed_frames_between`] remembers.
const FLUSH_LOG: usize = 64;

/// The most frame runs a flush names: past them, it drops everything.
const FLUSH_RUNS: usize = 1024;

/// What a TLB flush the shadow MMU asks for must drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushScope {
    /// Every translation.
    All,
    /// The translations to the guest frames in these runs (first frame, count): a shadow
    /// leaf for them went, or stores to them must now take the slow path.
    Frames(Vec<(Gfn, u64)>),
}

/// How many stores to code frames [`ShadowMmu::code_written_between`] remembers.
const CODE_WRITE_LOG: usize = 256;

/// The VM-wide shadow MMU.
#[derive(Default)]
pub struct ShadowMmu {
    /// The MMU lock: read for faults, write for changes across roots. It guards the set of
    /// roots.
    roots: RwLock<HashMap<u32, Arc<RootTree>>>,
    /// Guest frames holding shadowed guest tables, with the (root, page) pairs shadowing each;
    /// ordered, so that a large page can ask whether any frame inside it is tracked.
    tracked: Mutex<BTreeMap<Gfn, Vec<Shadowing>>>,
    /// `tracked`'s frames, for tests without its lock.
    tracked_frames: FrameSet,
    /// Guest frames whose instructions a vCPU has decoded and cached.
    code: RwLock<HashSet<Gfn>>,
    /// `code`'s frames, for tests without its lock.
    code_frames: FrameSet,
    next_root_id: AtomicU32,
    /// Bumped whenever a TLB entry somewhere may have become stale.
    flush_generation: AtomicU64,
    /// The most recent [`FLUSH_LOG`] flushes asked for, each with the generation it made and
    /// what it drops.
    flush_log: Mutex<std::collections::VecDeque<(u64, FlushScope)>>,
    /// Bumped whenever a store reached a frame with cached decodes.
    code_generation: AtomicU64,
    /// The frames those stores reached, the most recent [`CODE_WRITE_LOG`], each with the
    /// generation its store made.
    code_writes: Mutex<std::collections::VecDeque<(u64, Gfn)>>,
    pages_alive: AtomicU64,
    /// `pages_alive` by level, level 1 first.
    pages_by_level: [AtomicU64; 5],
    counters: Counters,
    /// The generation every tree's contents must belong to (KVM's `mmu_valid_gen`).
    valid_generation: AtomicU64,
    /// Roots no vCPU caches, kept for reuse, least recently parked first.
    parked: Mutex<Vec<RootHandle>>,
    /// Every vCPU's counters, summed on read.
    vcpus: Mutex<Vec<std::sync::Weak<crate::counters::VcpuCounters>>>,
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
        self.request_scoped_flush(FlushScope::All);
    }

    /// Makes every vCPU drop what `scope` names from its TLB at its next instruction
    /// boundary.
    fn request_scoped_flush(&self, scope: FlushScope) {
        let mut log = self.flush_log.lock();
        // Under the log's lock: a vCPU that sees the generation finds its entry.
        let generation = self.flush_generation.fetch_add(1, Ordering::AcqRel) + 1;
        if log.len() == FLUSH_LOG {
            log.pop_front();
        }
        log.push_back((generation, scope));
    }

    /// Makes every vCPU drop its translations to guest frame `gfn`.
    fn request_frame_flush(&self, gfn: Gfn) {
        self.request_scoped_flush(FlushScope::Frames(vec![(gfn, 1)]));
    }

    /// The frames whose translations the flushes after generation `since`, up to `until`,
    /// drop; `None` when one of them drops every translation, or when the log no longer
    /// reaches that far back.
    pub fn flushed_frames_between(&self, since: u64, until: u64) -> Option<Vec<(Gfn, u64)>> {
        let log = self.flush_log.lock();
        let oldest = log.front().map_or(until, |&(generation, _)| generation - 1);
        if since < oldest {
            return None;
        }
        let mut frames = Vec::new();
        for (_, scope) in log
            .iter()
            .filter(|&&(generation, _)| generation > since && generation <= until)
        {
            match scope {
                FlushScope::All => return None,
                FlushScope::Frames(runs) => frames.extend_from_slice(runs),
            }
        }
        Some(frames)
    }

    /// Registers a vCPU's counters, to be summed by [`ShadowMmu::vcpu_totals`].
    pub fn register_vcpu(&self, counters: &Arc<crate::counters::VcpuCounters>) {
        let mut vcpus = self.vcpus.lock();
        vcpus.retain(|weak| weak.strong_count() > 0);
        vcpus.push(Arc::downgrade(counters));
    }

    /// The counters of every vCPU of the VM, summed.
    pub fn vcpu_totals(&self) -> crate::counters::MmuCounters {
        let mut total = crate::counters::MmuCounters::default();
        for vcpu in self.vcpus.lock().iter().filter_map(|weak| weak.upgrade()) {
            total += vcpu.snapshot();
        }
        total
    }

    /// The counters and page counts.
    pub fn stats(&self) -> ShadowStats {
        let c = &self.counters;
        ShadowStats {
            pages_created: c.pages_created.load(Ordering::Relaxed),
            pages_zapped: c.pages_zapped.load(Ordering::Relaxed),
            tracked_writes: c.tracked_writes.load(Ordering::Relaxed),
            sptes_installed: c.sptes_installed.load(Ordering::Relaxed),
            flooded: c.flooded.load(Ordering::Relaxed),
            splits: c.splits.load(Ordering::Relaxed),
            pages_alive: self.pages_alive.load(Ordering::Relaxed),
            pages_by_level: std::array::from_fn(|i| self.pages_by_level[i].load(Ordering::Relaxed)),
            tracked_frames: self.tracked.lock().len() as u64,
            roots: self.roots.read().len() as u64,
        }
    }

    /// A root shadowing the guest top-level table at `gfn`, for a vCPU's root cache: a parked
    /// one if there is one for (`gfn`, `role`), with all its translations, else a new one.
    pub fn get_root(&self, gfn: Gfn, role: PageRole) -> RootHandle {
        let mut parked = self.parked.lock();
        if let Some(at) = parked.iter().position(|tree| tree.key == (gfn, role)) {
            return parked.remove(at);
        }
        drop(parked);
        let id = self.next_root_id.fetch_add(1, Ordering::Relaxed);
        let guard = epoch::pin();
        let top = self.new_page(gfn, role, &guard);
        let tree = Arc::new(RootTree {
            id,
            top,
            generation: AtomicU64::new(self.valid_generation.load(Ordering::Acquire)),
            key: (gfn, role),
            state: Mutex::new(TreeState::default()),
        });
        tree.state.lock().hash.insert((gfn, role), top);
        self.track(id, gfn, role, top);
        self.roots.write().insert(id, tree.clone());
        tree
    }

    /// Takes back a root a vCPU no longer caches. It is parked: it stays in the set of roots,
    /// so stores to guest tables keep it coherent, and the next [`ShadowMmu::get_root`] for
    /// the same table and role gets it back with its translations (KVM finds the pages of an
    /// unloaded root in its hash the same way). Past [`PARKED_ROOTS`], the least recently
    /// parked root goes, its pages freed once no walker can see them.
    pub fn put_root(&self, root: RootHandle) {
        let mut parked = self.parked.lock();
        parked.push(root);
        if parked.len() > PARKED_ROOTS {
            let oldest = parked.remove(0);
            drop(parked);
            self.roots.write().remove(&oldest.id);
            self.free_tree(&oldest);
        }
    }

    /// Frees every page of a tree no longer in the set of roots.
    fn free_tree(&self, tree: &RootTree) {
        let guard = epoch::pin();
        let mut state = tree.state.lock();
        // Every page of a tree hangs below its top page: freeing the top frees them all.
        if state.hash.values().any(|&page| page == tree.top) {
            self.free_page(tree.id, &mut state, tree.top, &guard);
        }
        debug_assert!(
            state.hash.is_empty(),
            "a shadow page unreachable from its root"
        );
    }

    /// The count of live pages at `role`'s level.
    fn level_count(&self, role: PageRole) -> &AtomicU64 {
        &self.pages_by_level[usize::from(role.level().clamp(1, 5)) - 1]
    }

    /// Allocates a page; the caller links it into a tree.
    fn new_page(&self, gfn: Gfn, role: PageRole, guard: &Guard) -> PagePtr {
        let page = Owned::new(ShadowPage::new(gfn, role)).into_shared(guard);
        self.counters.pages_created.fetch_add(1, Ordering::Relaxed);
        self.pages_alive.fetch_add(1, Ordering::Relaxed);
        self.level_count(role).fetch_add(1, Ordering::Relaxed);
        page.as_raw() as PagePtr
    }

    /// Records that `page` of root `root` shadows the guest table at `gfn` (direct pages
    /// shadow none).
    fn track(&self, root: u32, gfn: Gfn, role: PageRole, page: PagePtr) {
        if role.is_direct() {
            return;
        }
        let newly = match self.tracked.lock().entry(gfn) {
            Entry::Occupied(mut e) => {
                e.get_mut().push((root, page, role));
                false
            }
            Entry::Vacant(e) => {
                e.insert(vec![(root, page, role)]);
                self.tracked_frames.set(gfn, true);
                true
            }
        };
        // A TLB may still hold a writable entry for the frame that just became tracked.
        if newly {
            self.request_frame_flush(gfn);
        }
    }

    /// The leaf entry mapping the 4 KiB page of `gva` under `root`, if the shadow tree has
    /// one (for a large leaf, the entry for that page inside it). Takes no lock.
    pub fn lookup(&self, root: &RootTree, gva: Gva) -> Option<Spte> {
        if root.generation.load(Ordering::Acquire) != self.valid_generation.load(Ordering::Acquire)
        {
            // An obsolete tree answers nothing; the fault that follows empties it.
            return None;
        }
        // Pinned for the whole walk: no page the walk reaches is freed before it unpins.
        let _pinned = epoch::pin();
        let mut page = Shared::<ShadowPage>::from(root.top as *const ShadowPage);
        loop {
            // SAFETY: `page` is the root's top page, which lives as long as the root, or was
            // read from a present link under this guard: a page is freed only through the
            // epoch after being unlinked, so it outlives every guard that could have seen it.
            let current = unsafe { page.deref() };
            current.writes_unused.store(0, Ordering::Relaxed);
            let level = current.role.level();
            let spte = current.get(index(gva, level));
            if !spte.is_present() {
                return None;
            }
            if spte.is_leaf() {
                return Some(spte.frame_of(gva, level));
            }
            page = spte.child();
        }
    }

    /// The page at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must name a page of a live tree, and the caller must hold that tree's lock (or
    /// the MMU write lock) or an epoch guard taken while the page was reachable.
    unsafe fn page<'a>(ptr: PagePtr) -> &'a ShadowPage {
        // SAFETY: the caller vouches that the page is alive for 'a.
        unsafe { &*(ptr as *const ShadowPage) }
    }

    /// Mirrors the guest walk `translation` of `gva` under `root`, making the shadow pages
    /// missing on the way, and returns the 4 KiB leaf entry for `gva`. Takes the MMU lock for
    /// read and the root's lock.
    ///
    /// A guest large page gets one large leaf if its level is at most `max_level` (the caller
    /// knows whether the region lies in one memslot) and no frame inside it is tracked.
    pub fn install(
        &self,
        root: &RootTree,
        gva: Gva,
        translation: &Translation,
        max_level: u8,
    ) -> Spte {
        let _mmu = self.roots.read();
        let mut state = root.state.lock();
        let guard = epoch::pin();
        let valid = self.valid_generation.load(Ordering::Acquire);
        if root.generation.load(Ordering::Acquire) != valid {
            for slot in 0..ENTRIES {
                self.zap_entry(root.id, &mut state, root.top, slot, &guard);
            }
            root.generation.store(valid, Ordering::Release);
        }
        let leaf = Spte::leaf(
            translation.gpa.gfn(),
            translation.access,
            translation.leaf_pte() & crate::paging::PTE_DIRTY != 0,
            translation.pkey,
        )
        .with_global(translation.global);
        let guest_leaf = translation.level;
        let mut current = root.top;
        loop {
            // SAFETY: `current` is a page of this tree, whose lock is held.
            let page = unsafe { Self::page(current) };
            let role = page.role;
            let level = role.level();
            let slot = index(gva, level);
            // At the 4 KiB level the entry maps the frame; above, it links to the next page.
            if level == 1 {
                page.set(slot, leaf);
                self.counters
                    .sptes_installed
                    .fetch_add(1, Ordering::Relaxed);
                return leaf;
            }
            if level == guest_leaf && !role.is_direct() && level <= max_level {
                let frames = frames_at(level);
                let base = Gfn(leaf.gfn().0 & !(frames - 1));
                let tracked_inside = self
                    .tracked
                    .lock()
                    .range(base..Gfn(base.0 + frames))
                    .next()
                    .is_some();
                if !tracked_inside {
                    if page.get(slot).is_present() {
                        self.zap_entry(root.id, &mut state, current, slot, &guard);
                    }
                    page.set(slot, leaf.with_gfn(base));
                    state
                        .large
                        .entry(base)
                        .or_default()
                        .push((current, slot as u16));
                    self.counters
                        .sptes_installed
                        .fetch_add(1, Ordering::Relaxed);
                    return leaf;
                }
            }
            let existing = page.get(slot);
            if existing.is_present() && !existing.is_leaf() {
                current = existing.child().as_raw() as PagePtr;
                continue;
            }
            if existing.is_present() {
                self.zap_entry(root.id, &mut state, current, slot, &guard);
            }
            let (child_gfn, child_role) = if role.is_direct() || level <= guest_leaf {
                // Inside a guest large page: a direct page for the region this entry covers.
                let frames = frames_at(level);
                let region = Gfn(translation.gpa.gfn().0 & !(frames - 1));
                (region, role.direct(level - 1, translation.access.bits()))
            } else {
                (translation.table_gfns[usize::from(level) - 2], role.child())
            };
            let child = self.child_page(root.id, &mut state, child_gfn, child_role, &guard);
            state
                .parents
                .entry(child)
                .or_default()
                .push((current, slot as u16));
            page.set(slot, Spte::link(Shared::from(child as *const ShadowPage)));
            current = child;
        }
    }

    /// The tree's page for (`gfn`, `role`), made if missing. A new page that tracks a frame
    /// splits the tree's large leaves covering it.
    fn child_page(
        &self,
        root: u32,
        state: &mut TreeState,
        gfn: Gfn,
        role: PageRole,
        guard: &Guard,
    ) -> PagePtr {
        if let Some(&page) = state.hash.get(&(gfn, role)) {
            return page;
        }
        let page = self.new_page(gfn, role, guard);
        state.hash.insert((gfn, role), page);
        self.track(root, gfn, role, page);
        if !role.is_direct() {
            self.zap_large_covering(root, state, gfn, guard);
        }
        page
    }

    /// Zaps the tree's large leaves whose region holds `gfn`.
    fn zap_large_covering(&self, root: u32, state: &mut TreeState, gfn: Gfn, guard: &Guard) {
        for level in [2, 3] {
            let base = Gfn(gfn.0 & !(frames_at(level) - 1));
            for (page, slot) in state.large.get(&base).cloned().unwrap_or_default() {
                // SAFETY: a page of this tree, under its lock.
                if unsafe { Self::page(page) }.role.level() == level {
                    self.counters.splits.fetch_add(1, Ordering::Relaxed);
                    self.zap_entry(root, state, page, usize::from(slot), guard);
                }
            }
        }
    }

    /// Whether guest frame `gfn` holds a shadowed guest table.
    pub fn is_tracked(&self, gfn: Gfn) -> bool {
        self.tracked_frames
            .contains(gfn)
            .unwrap_or_else(|| self.tracked.lock().contains_key(&gfn))
    }

    /// Whether guest frame `gfn` holds instructions some vCPU has decoded and cached.
    pub fn holds_code(&self, gfn: Gfn) -> bool {
        self.code_frames
            .contains(gfn)
            .unwrap_or_else(|| self.code.read().contains(&gfn))
    }

    /// Whether stores to guest frame `gfn` must take the slow path: it holds a shadowed guest
    /// table, or instructions some vCPU has decoded and cached.
    pub fn is_write_protected(&self, gfn: Gfn) -> bool {
        self.holds_code(gfn) || self.is_tracked(gfn)
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
        if !self.holds_code(gfn) && self.insert_code(gfn) {
            self.request_frame_flush(gfn);
        }
    }

    /// A store reached guest frame `gfn` by the slow path: if it held cached instructions,
    /// they are stale everywhere, and the frame is no longer protected until code from it is
    /// cached again (so a frame mixing code and data does not keep every store slow).
    pub fn code_written(&self, gfn: Gfn) {
        if self.holds_code(gfn) && self.remove_code(gfn) {
            let mut log = self.code_writes.lock();
            let generation = self.code_generation.fetch_add(1, Ordering::AcqRel) + 1;
            if log.len() == CODE_WRITE_LOG {
                log.pop_front();
            }
            log.push_back((generation, gfn));
        }
    }

    /// Adds `gfn` to the code frames; whether it was not one.
    fn insert_code(&self, gfn: Gfn) -> bool {
        let mut code = self.code.write();
        let inserted = code.insert(gfn);
        // Under the lock, so that the bits follow the set's changes in order.
        self.code_frames.set(gfn, true);
        inserted
    }

    /// Drops `gfn` from the code frames; whether it was one.
    fn remove_code(&self, gfn: Gfn) -> bool {
        let mut code = self.code.write();
        let removed = code.remove(&gfn);
        if removed {
            self.code_frames.set(gfn, false);
        }
        removed
    }

    /// The frames whose cached code went stale after code generation `since`, up to
    /// `until`; `None` if the log no longer reaches that far back (everything must go).
    pub fn code_written_between(&self, since: u64, until: u64) -> Option<Vec<Gfn>> {
        let log = self.code_writes.lock();
        let oldest = log.front().map_or(until, |&(generation, _)| generation - 1);
        if since < oldest {
            return None;
        }
        Some(
            log.iter()
                .filter(|&&(generation, _)| generation > since && generation <= until)
                .map(|&(_, gfn)| gfn)
                .collect(),
        )
    }

    /// Called after `len` bytes were stored at `gpa` in one page: zaps the shadow entries
    /// mirroring the guest entries written, in every root. Takes the MMU lock for write.
    pub fn guest_wrote(&self, gpa: Gpa, len: usize) {
        if !self.is_tracked(gpa.gfn()) {
            return;
        }
        let roots = self.roots.write();
        let Some(pages) = self.tracked.lock().get(&gpa.gfn()).cloned() else {
            return;
        };
        self.counters.tracked_writes.fetch_add(1, Ordering::Relaxed);
        let guard = epoch::pin();
        let first = gpa.page_offset() / 8;
        let last = (gpa.page_offset() + len.max(1) as u64 - 1).min(4095) / 8;
        // Only a present entry zapped, or a flooded page, can have translations in a TLB (a
        // store that fills a guest entry the shadow never mirrored, the common case, needs no
        // flush): those to the frames of the leaves it reached.
        let mut flush = false;
        let mut runs: Vec<(Gfn, u64)> = Vec::new();
        let mut all = false;
        for (root, page, role) in pages {
            let Some(tree) = roots.get(&root) else {
                continue;
            };
            let mut state = tree.state.lock();
            // An earlier zap in this loop may have freed the page already.
            if state.hash.get(&(gpa.gfn(), role)) != Some(&page) {
                continue;
            }
            // SAFETY: a page of a live tree, under its lock.
            let shadow = unsafe { Self::page(page) };
            // A store over several entries (a string instruction's run) counts as one store
            // per entry, as when they are made one at a time.
            let entries = (last - first + 1) as u32;
            let writes = shadow.writes_unused.fetch_add(entries, Ordering::Relaxed) + entries;
            if writes >= WRITE_FLOOD && page != tree.top {
                self.counters.flooded.fetch_add(1, Ordering::Relaxed);
                flush = true;
                all = all || !Self::leaf_frames(shadow, &mut runs);
                self.unlink_and_free(root, &mut state, page, &guard);
                continue;
            }
            for slot in first..=last {
                let spte = shadow.get(slot as usize);
                // Past the runs a flush names, everything goes: no need to gather more.
                if spte.is_present() && !all {
                    all = !Self::entry_frames(shadow, spte, &mut runs);
                }
                flush |= self.zap_entry(root, &mut state, page, slot as usize, &guard);
            }
        }
        if all {
            self.request_flush();
        } else if flush {
            self.request_scoped_flush(FlushScope::Frames(runs));
        }
    }

    /// Adds to `runs` the frames that the leaves of `page` and of the pages below it map;
    /// false, leaving `runs` as it may, when there are more than [`FLUSH_RUNS`] leaves (a
    /// flush of everything is then cheaper than one of so many frames).
    fn leaf_frames(page: &ShadowPage, runs: &mut Vec<(Gfn, u64)>) -> bool {
        (0..ENTRIES)
            .map(|slot| page.get(slot))
            .filter(|spte| spte.is_present())
            .all(|spte| Self::entry_frames(page, spte, runs))
    }

    /// [`ShadowMmu::leaf_frames`] for one present entry `spte` of `page`.
    fn entry_frames(page: &ShadowPage, spte: Spte, runs: &mut Vec<(Gfn, u64)>) -> bool {
        if spte.is_leaf() {
            let frames = frames_at(page.role.level());
            runs.push((Gfn(spte.gfn().0 & !(frames - 1)), frames));
            return runs.len() <= FLUSH_RUNS;
        }
        // SAFETY: a page linked from a page of a live tree, under the tree's lock (the
        // caller's): it is freed only after the unlink the caller makes next.
        let child = unsafe { Self::page(spte.child().as_raw() as PagePtr) };
        Self::leaf_frames(child, runs)
    }

    /// Clears one entry of `page`, freeing the subtree it alone linked to; whether it was
    /// present (a TLB may hold translations through it only then).
    fn zap_entry(
        &self,
        root: u32,
        state: &mut TreeState,
        page: PagePtr,
        slot: usize,
        guard: &Guard,
    ) -> bool {
        // SAFETY: a page of this tree, under its lock.
        let shadow = unsafe { Self::page(page) };
        let spte = shadow.get(slot);
        shadow.set(slot, Spte::default());
        if !spte.is_present() {
            return false;
        }
        if spte.is_leaf() {
            if shadow.role.level() > 1 {
                forget_large(state, spte.gfn(), page, slot);
            }
            return true;
        }
        let child = spte.child().as_raw() as PagePtr;
        // Every linked page has its parents recorded (see `install` and `split_leaf`).
        let parents = state
            .parents
            .get_mut(&child)
            .expect("a linked shadow page has its links recorded");
        parents.retain(|&link| link != (page, slot as u16));
        let orphaned = parents.is_empty();
        if orphaned {
            self.free_page(root, state, child, guard);
        }
        true
    }

    /// Clears every entry linking to `page`, then frees it.
    fn unlink_and_free(&self, root: u32, state: &mut TreeState, page: PagePtr, guard: &Guard) {
        for (parent, slot) in state.parents.remove(&page).unwrap_or_default() {
            // SAFETY: a page of this tree, under its lock.
            unsafe { Self::page(parent) }.set(usize::from(slot), Spte::default());
        }
        self.free_page(root, state, page, guard);
    }

    /// Frees a page nothing links to any more, with the children only it reached. The memory
    /// goes through the epoch: a walker that read a link to it before the unlink may still be
    /// looking at it.
    fn free_page(&self, root: u32, state: &mut TreeState, page: PagePtr, guard: &Guard) {
        for slot in 0..ENTRIES {
            self.zap_entry(root, state, page, slot, guard);
        }
        // SAFETY: a page of this tree, under its lock; its last reference is removed below.
        let shadow = unsafe { Self::page(page) };
        let (gfn, role) = (shadow.gfn, shadow.role);
        state.hash.remove(&(gfn, role));
        state.parents.remove(&page);
        if !role.is_direct() {
            let mut tracked = self.tracked.lock();
            if let Entry::Occupied(mut e) = tracked.entry(gfn) {
                e.get_mut().retain(|&(r, p, _)| (r, p) != (root, page));
                if e.get().is_empty() {
                    e.remove();
                    self.tracked_frames.set(gfn, false);
                }
            }
        }
        self.counters.pages_zapped.fetch_add(1, Ordering::Relaxed);
        self.pages_alive.fetch_sub(1, Ordering::Relaxed);
        self.level_count(role).fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the page is unlinked from its tree and out of every index, so no new walker
        // can reach it; walkers that already did hold epoch guards, which the epoch waits for
        // before dropping it.
        unsafe { guard.defer_destroy(Shared::from(page as *const ShadowPage)) };
    }

    /// Splits every large leaf mapping a frame in `range`, in every root, as enabling dirty
    /// logging on a slot does, by `policy`. Returns the number of large leaves found.
    pub fn split_large(&self, range: std::ops::Range<Gfn>, policy: SplitPolicy) -> usize {
        let roots = self.roots.write();
        let guard = epoch::pin();
        let first = Gfn(range.start.0 & !(frames_at(3) - 1));
        let mut found = 0;
        for tree in roots.values() {
            let mut state = tree.state.lock();
            let leaves: Vec<(PagePtr, u16)> = state
                .large
                .range(first..range.end)
                .flat_map(|(&base, leaves)| leaves.iter().map(move |&leaf| (base, leaf)))
                .filter(|&(base, (page, _))| {
                    // SAFETY: a page of this tree, under its lock.
                    let level = unsafe { Self::page(page) }.role.level();
                    base.0 + frames_at(level) > range.start.0
                })
                .map(|(_, leaf)| leaf)
                .collect();
            found += leaves.len();
            for (page, slot) in leaves {
                let slot = usize::from(slot);
                match policy {
                    SplitPolicy::Keep => {}
                    SplitPolicy::Lazy => {
                        self.counters.splits.fetch_add(1, Ordering::Relaxed);
                        self.zap_entry(tree.id, &mut state, page, slot, &guard);
                    }
                    SplitPolicy::Eager => {
                        self.counters.splits.fetch_add(1, Ordering::Relaxed);
                        self.split_leaf(tree.id, &mut state, page, slot, &guard);
                    }
                }
            }
        }
        self.request_flush();
        found
    }

    /// Replaces the large leaf at `slot` of `page` by a direct page holding all its pieces,
    /// themselves split down to 4 KiB.
    fn split_leaf(
        &self,
        root: u32,
        state: &mut TreeState,
        page: PagePtr,
        slot: usize,
        guard: &Guard,
    ) {
        // SAFETY: a page of this tree, under its lock.
        let shadow = unsafe { Self::page(page) };
        let spte = shadow.get(slot);
        let level = shadow.role.level();
        forget_large(state, spte.gfn(), page, slot);
        let child_role = shadow.role.direct(level - 1, spte.access().bits());
        let child = self.child_page(root, state, spte.gfn(), child_role, guard);
        // SAFETY: just made or found in this tree, under its lock.
        let child_page = unsafe { Self::page(child) };
        let piece = frames_at(level - 1);
        for n in 0..ENTRIES {
            let gfn = Gfn(spte.gfn().0 + n as u64 * piece);
            child_page.set(n, spte.with_gfn(gfn));
            if level - 1 > 1 {
                state.large.entry(gfn).or_default().push((child, n as u16));
                self.split_leaf(root, state, child, n, guard);
            }
        }
        state
            .parents
            .entry(child)
            .or_default()
            .push((page, slot as u16));
        shadow.set(slot, Spte::link(Shared::from(child as *const ShadowPage)));
    }

    /// Makes every root's contents obsolete, as a memslot removal requires (KVM's zap-all by
    /// `mmu_valid_gen`): O(1) here; each root is emptied at its next fault, under its own lock,
    /// and answers no lookup until then.
    pub fn zap_all(&self) {
        self.valid_generation.fetch_add(1, Ordering::AcqRel);
        self.request_flush();
    }
}

impl Drop for ShadowMmu {
    fn drop(&mut self) {
        // The roots still in the set go with the MMU.
        let trees: Vec<Arc<RootTree>> = self.roots.get_mut().drain().map(|(_, t)| t).collect();
        for tree in trees {
            self.free_tree(&tree);
        }
    }
}

/// Removes a large leaf from a tree's reverse map.
fn forget_large(state: &mut TreeState, base: Gfn, page: PagePtr, slot: usize) {
    if let Entry::Occupied(mut e) = state.large.entry(base) {
        e.get_mut().retain(|&leaf| leaf != (page, slot as u16));
        if e.get().is_empty() {
            e.remove();
        }
    }
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
