//! One vCPU's MMU: the guest page walker, the cached roots, and the TLB, in front of the
//! VM-wide shadow pages.
//!
//! [`VcpuMmu::translate`] answers from the TLB when it can; on a miss it walks the shadow tree
//! of the current root, and only when that has no entry allowing the access does it walk the
//! guest's tables (the reference) and mirror the walk into shadow pages. A fault is always the
//! walker's, with its exact error code.
//!
//! Roots are kept per (CR3, page role) in a small most-recently-used cache: a MOV to CR3 or a
//! CR0.WP toggle switches to a cached root without unloading anything, and the TLB, tagged by
//! root, keeps its entries for every cached root. A root evicted from the cache is parked by
//! the shadow MMU, still coherent, and comes back with its translations. Shadow roots are
//! used for 4-level and 5-level paging; in 32-bit and PAE paging (whose PAE root lives in
//! PDPTE registers), and with paging off, the TLB alone caches walks and is flushed where the
//! SDM flushes a TLB.
//!
//! # Global pages
//!
//! With CR4.PGE = 1, the upper half of the address space (where kernels live) is looked up
//! under a tag that every root of a role shares: a global translation filled there under one
//! root hits under the next, as a global TLB entry survives a MOV to CR3 (SDM 4.10.2.4). A
//! translation there that is not global is dropped when the root changes. INVLPG, a change of
//! CR4.PGE, a clear of CR4.PCIDE and INVPCID drop global translations as the SDM has them
//! dropped.
//!
//! # Host pointers
//!
//! A TLB entry may hold a host pointer into a memslot's mapping. The slots behind those
//! pointers are pinned here (an `Arc` each) and released only when the memslots change, which
//! is noticed at an instruction boundary ([`VcpuMmu::begin_instruction`]); so a pointer handed
//! out during an instruction stays valid for the rest of it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::addr::{Gfn, Gpa, Gva, PAGE_OFFSET_MASK, PAGE_SHIFT};
use crate::counters::{VcpuCounters, bump};
use crate::memslot::{Memslot, MemslotFlags, Memslots, SlotCache};
use crate::paging::{PTE_DIRTY, PagingMode};
use crate::role::{CpuRole, PageRole};
use crate::shadow::{RootHandle, ShadowMmu, ShadowStats, Spte};
use crate::tlb::{CodeInvalidations, Mapping, NO_ROOT, Tlb, access_bit, every_access};
use crate::walker::{Access, AccessKind, PageFault, WalkMode, Walker};

/// How many roots a vCPU keeps: the current one and three previous, as KVM.
pub const ROOT_CACHE_SIZE: usize = 4;

/// How many roots' TLB tags a vCPU remembers between flushes, at most.
const MAX_TAGGED_ROOTS: usize = 512;

/// How many translations that are not global a vCPU drops one by one from the shared upper
/// half when its root changes; past them, the role's shared tag is replaced.
const MAX_PRIVATE_UPPER: usize = 64;

/// How many TLB hits a vCPU counts before it publishes them to the counters other threads
/// read: so they lag by at most this many.
const PUBLISH_HITS_EVERY: u64 = 4096;

/// CR3's page-table address bits.
const CR3_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

pub use crate::counters::MmuCounters;

struct Root {
    cr3: u64,
    role: PageRole,
    tree: RootHandle,
    /// The whole CR3 (PCID and no-flush bit included) last switched to this root.
    loaded_cr3: u64,
    /// Switches that found this root cached.
    hits: u64,
    /// Its TLB entries' tag ([`Tlb::take_tag`]).
    tlb_tag: u32,
}

/// A cached root, for a debugger's or the TUI's view of the MMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootInfo {
    /// The CR3 last loaded for this root, PCID included.
    pub cr3: u64,
    /// The root's page role.
    pub role: PageRole,
    /// The root's shadow-page id, which is also its TLB tag.
    pub id: u32,
    /// Switches that found this root cached.
    pub hits: u64,
}

/// What a vCPU's MMU holds now: for `monitor mmu` and `monitor tlb`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmuSnapshot {
    /// The CPU role.
    pub role: CpuRole,
    /// CR3.
    pub cr3: u64,
    /// Whether shadow roots are in use (4-level and 5-level paging).
    pub shadowing: bool,
    /// The cached roots, most recently used (the current one) first.
    pub roots: Vec<RootInfo>,
    /// TLB entries in use, of [`crate::tlb::TLB_ENTRIES`].
    pub tlb_used: usize,
    /// This vCPU's counters.
    pub counters: MmuCounters,
    /// The VM-wide shadow MMU's counters and page counts.
    pub shadow: ShadowStats,
}

/// One vCPU's MMU.
pub struct VcpuMmu {
    walker: Walker,
    shadow: Arc<ShadowMmu>,
    memslots: Arc<Memslots>,
    slot_cache: SlotCache,
    tlb: Tlb,
    tlb_generation: u64,
    memslot_generation: u64,
    /// Most recently used first; the first is the current root when shadow paging is in use.
    roots: Vec<Root>,
    shadowing: bool,
    /// The current root's TLB tag.
    tag: u32,
    /// The TLB tag of the upper half of the address space: the current role's shared one
    /// (with CR4.PGE = 1 and shadow roots), else `tag`.
    upper_tag: u32,
    /// The shared upper-half tags, by root role.
    shared_tags: HashMap<PageRole, u32>,
    /// Translations that are not global, filled under a shared upper-half tag: (page, tag).
    /// They go when the root changes.
    private_upper: Vec<(Gva, u32)>,
    /// The TLB tag of translations made without a shadow root (paging off, 32-bit and PAE
    /// paging).
    rootless_tag: u32,
    /// The TLB tags of the shadow roots used since the last flush, by root id.
    tlb_tags: HashMap<u32, u32>,
    large_leaves: bool,
    /// False: every translation walks the guest's tables (no TLB, no shadow pages).
    caching: bool,
    pins: Vec<Arc<Memslot>>,
    counters: Arc<VcpuCounters>,
    /// TLB hits not yet added to `counters`.
    unpublished_hits: u64,
}

impl VcpuMmu {
    /// The MMU of a vCPU in `walker`'s state, over `memslots`, sharing `shadow`.
    pub fn new(walker: Walker, shadow: Arc<ShadowMmu>, memslots: Arc<Memslots>) -> VcpuMmu {
        let counters = Arc::new(VcpuCounters::default());
        shadow.register_vcpu(&counters);
        let mut mmu = VcpuMmu {
            walker,
            tlb_generation: shadow.flush_generation(),
            memslot_generation: memslots.generation(),
            shadow,
            memslots,
            slot_cache: SlotCache::new(),
            tlb: Tlb::new(),
            roots: Vec::with_capacity(ROOT_CACHE_SIZE + 1),
            shadowing: false,
            tag: NO_ROOT,
            upper_tag: NO_ROOT,
            shared_tags: HashMap::new(),
            private_upper: Vec::new(),
            rootless_tag: NO_ROOT,
            tlb_tags: HashMap::new(),
            large_leaves: true,
            caching: true,
            pins: Vec::new(),
            counters,
            unpublished_hits: 0,
        };
        mmu.load_root();
        mmu
    }

    /// The guest page walker, with the CPU state it reads.
    pub fn walker(&self) -> &Walker {
        &self.walker
    }

    /// The guest's memory.
    pub fn memslots(&self) -> &Arc<Memslots> {
        &self.memslots
    }

    /// The counters now.
    pub fn counters(&self) -> MmuCounters {
        let mut counters = self.counters.snapshot();
        counters.tlb_hits += self.unpublished_hits;
        counters
    }

    /// Adds the TLB hits counted since the last call to the shared counters.
    fn publish_hits(&mut self) {
        self.counters
            .add_tlb_hits(std::mem::take(&mut self.unpublished_hits));
    }

    /// The live counters, for a thread that watches this vCPU.
    pub fn live_counters(&self) -> &Arc<VcpuCounters> {
        &self.counters
    }

    /// The roles, roots and TLB occupancy now, with the counters.
    pub fn snapshot(&self) -> MmuSnapshot {
        MmuSnapshot {
            role: self.walker.role(),
            cr3: self.walker.cr3(),
            shadowing: self.shadowing,
            roots: self
                .roots
                .iter()
                .map(|root| RootInfo {
                    cr3: root.loaded_cr3,
                    role: root.role,
                    id: root.tree.id(),
                    hits: root.hits,
                })
                .collect(),
            tlb_used: self.tlb.occupancy(),
            counters: self.counters(),
            shadow: self.shadow.stats(),
        }
    }

    /// The shadow MMU this vCPU shares.
    pub fn shadow(&self) -> &Arc<ShadowMmu> {
        &self.shadow
    }

    /// Catches up with changes made elsewhere since the last instruction: flushes the TLB if a
    /// shadow entry was zapped, and releases pinned slots if the memslots changed.
    #[inline]
    pub fn begin_instruction(&mut self) {
        if self.unpublished_hits >= PUBLISH_HITS_EVERY {
            self.publish_hits();
        }
        let generation = self.shadow.flush_generation();
        if generation != self.tlb_generation {
            self.follow_flushes(generation);
        }
        let memslots = self.memslots.generation();
        if memslots != self.memslot_generation {
            self.memslot_generation = memslots;
            self.pins.clear();
            self.flush_tlb();
        }
    }

    /// Chooses how guest large pages are shadowed: by one large leaf, split on demand where a
    /// frame inside must be tracked (the default), or always in 4 KiB pieces, split up front
    /// (seed 004 compares the two for the host's direct map).
    pub fn set_large_leaves(&mut self, on: bool) {
        self.large_leaves = on;
    }

    /// Turns the TLB and the shadow pages off (`false`: every translation walks the guest's
    /// tables, the reference they must agree with) or back on.
    pub fn set_caching(&mut self, on: bool) {
        self.caching = on;
        self.flush_tlb();
    }

    /// How many times TLB entries were dropped ([`Tlb::invalidations`]).
    pub fn tlb_invalidations(&self) -> u64 {
        self.tlb.invalidations()
    }

    /// How many of those may have changed the translation of a page with code cached
    /// somewhere ([`Tlb::code_invalidations`]).
    pub fn tlb_code_invalidations(&self) -> CodeInvalidations {
        self.tlb.code_invalidations()
    }

    /// Catches up with the flushes the shadow MMU asked for up to `generation`: drops the
    /// entries of the frames they name, or all of them.
    fn follow_flushes(&mut self, generation: u64) {
        match self
            .shadow
            .flushed_frames_between(self.tlb_generation, generation)
        {
            Some(runs) => {
                let code = runs.iter().any(|&(first, count)| {
                    (first.0..first.0 + count).any(|gfn| self.shadow.holds_code(Gfn(gfn)))
                });
                self.tlb.flush_frames(&runs, code);
                bump!(self.counters, tlb_frame_flushes);
            }
            None => self.flush_tlb(),
        }
        self.tlb_generation = generation;
    }

    /// Drops every TLB entry, in O(1): every root, and translation without a root, takes a
    /// fresh tag (the TLB is cleared for real only when the tags run out).
    pub fn flush_tlb(&mut self) {
        // Fresh tags are enough while they last: one per root, the rootless one and a shared
        // one.
        if self.tlb.tags_left() as usize <= self.roots.len() + 2 {
            self.tlb.flush();
        }
        self.tlb_tags.clear();
        self.forget_shared_tags();
        for at in 0..self.roots.len() {
            let id = self.roots[at].tree.id();
            self.roots[at].tlb_tag = self.tag_for(id);
        }
        self.rootless_tag = self
            .tlb
            .take_tag()
            .expect("tags were left for every holder");
        self.update_tag();
        bump!(self.counters, tlb_flushes);
    }

    /// The TLB tag of the shadow root `id`: the one it had since the last flush, so that a
    /// root evicted from the cache and back finds its entries, or a fresh one.
    fn tag_for(&mut self, id: u32) -> u32 {
        if let Some(&tag) = self.tlb_tags.get(&id) {
            return tag;
        }
        if self.tlb_tags.len() >= MAX_TAGGED_ROOTS {
            // Roots long gone may hold tags here: start over.
            self.flush_tlb();
        }
        let tag = match self.tlb.take_tag() {
            Some(tag) => tag,
            None => {
                self.flush_tlb();
                self.tlb.take_tag().expect("a flush frees every tag")
            }
        };
        self.tlb_tags.insert(id, tag);
        tag
    }

    /// CR0, CR4 or EFER changed: switches to the root for the new role. A change of CR4.PGE
    /// drops every global translation.
    pub fn set_role(&mut self, role: CpuRole) {
        if role == self.walker.role() {
            return;
        }
        if role.pge() != self.walker.role().pge() {
            self.forget_shared_tags();
        }
        self.walker.set_role(role);
        self.load_root();
    }

    /// Drops every global translation (and every other one of the upper half): the shared
    /// tags are replaced. For a MOV to CR4 that clears CR4.PCIDE (a change of CR4.PGE, a
    /// change of role, does it by itself).
    pub fn drop_global(&mut self) {
        self.forget_shared_tags();
        self.update_tag();
    }

    /// Forgets the shared upper-half tags, and what was filled under them: new ones are
    /// taken as needed.
    fn forget_shared_tags(&mut self) {
        self.shared_tags.clear();
        self.private_upper.clear();
    }

    /// MOV to CR3. The translations of the upper half that are not global go even when the
    /// root stays, as a processor drops them: what generated code found through them
    /// counts on it ([`CodeInvalidations::upper`]).
    pub fn set_cr3(&mut self, cr3: u64) {
        self.walker.set_cr3(cr3);
        self.drop_private_upper();
        self.load_root();
    }

    /// Loads the PAE PDPTE registers (they take effect with the TLB flushed).
    pub fn set_pdptrs(&mut self, pdptrs: [u64; 4]) {
        self.walker.set_pdptrs(pdptrs);
        self.flush_tlb();
    }

    /// WRPKRU: the TLB's permissions were computed with the old value.
    pub fn set_pkru(&mut self, pkru: u32) {
        if pkru != self.walker.pkru() {
            self.walker.set_pkru(pkru);
            self.flush_tlb();
        }
    }

    /// INVLPG. With shadow roots the shadow tree is already coherent and only the TLB entry
    /// goes; without them the whole TLB does, since the page may lie in a large page whose
    /// other 4 KiB entries the TLB also holds.
    pub fn invlpg(&mut self, gva: Gva) {
        if self.shadowing {
            let roots = self.roots.iter().map(|root| root.tlb_tag);
            self.tlb
                .flush_page(gva, roots.chain(self.shared_tags.values().copied()));
        } else {
            self.flush_tlb();
        }
    }

    /// Makes the root for the current CR3 and role current, from the cache if it is there.
    /// The translations of the upper half that are not global go if the root changed.
    fn load_root(&mut self) {
        let before = self.shadowing.then(|| self.roots[0].tree.id());
        self.switch_root();
        let after = self.shadowing.then(|| self.roots[0].tree.id());
        if before != after {
            self.drop_private_upper();
        }
        self.update_tag();
    }

    /// Drops the translations that are not global filled under shared upper-half tags: one
    /// by one while they are few, else with the shared tags they were filled under.
    fn drop_private_upper(&mut self) {
        if self.private_upper.len() > MAX_PRIVATE_UPPER {
            let stale: Vec<u32> = self.private_upper.iter().map(|&(_, tag)| tag).collect();
            self.shared_tags.retain(|_, tag| !stale.contains(tag));
            self.private_upper.clear();
            return;
        }
        for (gva, tag) in std::mem::take(&mut self.private_upper) {
            self.tlb.flush_page(gva, [tag]);
        }
    }

    /// [`VcpuMmu::load_root`] without the tag update.
    fn switch_root(&mut self) {
        let mode = self.walker.role().paging_mode();
        self.shadowing = matches!(mode, PagingMode::Level4 | PagingMode::Level5);
        if !self.shadowing {
            self.flush_tlb();
            return;
        }
        let cr3 = self.walker.cr3() & CR3_ADDRESS;
        let role = PageRole::root(self.walker.role());
        if let Some(at) = self
            .roots
            .iter()
            .position(|r| r.cr3 == cr3 && r.role == role)
        {
            let mut root = self.roots.remove(at);
            root.hits += 1;
            root.loaded_cr3 = self.walker.cr3();
            self.roots.insert(0, root);
            bump!(self.counters, root_hits);
            return;
        }
        bump!(self.counters, root_misses);
        let tree = self.shadow.get_root(Gpa(cr3).gfn(), role);
        let tlb_tag = self.tag_for(tree.id());
        self.roots.insert(
            0,
            Root {
                cr3,
                role,
                tree,
                loaded_cr3: self.walker.cr3(),
                hits: 0,
                tlb_tag,
            },
        );
        if self.roots.len() > ROOT_CACHE_SIZE {
            // Tags are never handed out twice, so the evicted root's TLB entries can never hit
            // again: they need no flush.
            let evicted = self.roots.pop().expect("more roots than the cache holds");
            self.shadow.put_root(evicted.tree);
        }
    }

    /// The TLB tag `gva` is looked up under: the upper half's or the current root's, kept in
    /// fields so that a TLB hit reads no further.
    #[inline]
    fn tag_of(&self, gva: Gva) -> u32 {
        if gva.0 >> 63 != 0 {
            self.upper_tag
        } else {
            self.tag
        }
    }

    /// Recomputes the TLB tags after the current root, or the shared tags, changed.
    fn update_tag(&mut self) {
        self.tag = if self.shadowing {
            self.roots[0].tlb_tag
        } else {
            self.rootless_tag
        };
        self.upper_tag = self.shared_tag().unwrap_or(self.tag);
    }

    /// The current role's shared upper-half tag, taken if it has none yet; `None` without
    /// shadow roots or CR4.PGE, or when no tag is left (until the next flush, the upper half
    /// is then the root's).
    fn shared_tag(&mut self) -> Option<u32> {
        if !self.shadowing || !self.walker.role().pge() {
            return None;
        }
        let role = self.roots[0].role;
        if let Some(&tag) = self.shared_tags.get(&role) {
            return Some(tag);
        }
        let tag = self.tlb.take_tag()?;
        self.shared_tags.insert(role, tag);
        Some(tag)
    }

    /// The TLB as generated code may read it, under the current root; `None` while caching is
    /// off (every translation must then walk).
    pub fn inline_tlb(&self) -> Option<crate::tlb::InlineTlb> {
        self.caching
            .then(|| self.tlb.inline_view([self.tag, self.upper_tag]))
    }

    /// Counts `hits` TLB hits that generated code made on its own.
    pub fn count_tlb_hits(&mut self, hits: u64) {
        self.unpublished_hits += hits;
    }

    /// Translates `gva` for `access`: where it goes, or the page fault it raises.
    #[inline]
    pub fn translate(&mut self, gva: Gva, access: Access) -> Result<Mapping, PageFault> {
        if !self.caching {
            return self.translate_uncached(gva, access);
        }
        let tag = self.tag_of(gva);
        if let Some(mapping) = self.tlb.lookup(gva, tag, access) {
            // The hottest counter is kept in a plain field and published now and then.
            self.unpublished_hits += 1;
            return Ok(mapping);
        }
        bump!(self.counters, tlb_misses);
        self.translate_slow(gva, access, tag)
    }

    /// A TLB miss: the shadow tree, else a guest walk.
    fn translate_slow(&mut self, gva: Gva, access: Access, tag: u32) -> Result<Mapping, PageFault> {
        let spte = if self.shadowing {
            let root = self.roots[0].tree.clone();
            match self.shadow.lookup(&root, gva) {
                Some(spte) if self.allows(spte, access) => {
                    bump!(self.counters, shadow_hits);
                    spte
                }
                _ => {
                    let translation = self.walk(gva, access)?;
                    let max_level = self.max_mapping_level(&translation);
                    self.shadow.install(&root, gva, &translation, max_level)
                }
            }
        } else {
            let translation = self.walk(gva, access)?;
            let dirty = translation.level == 0 || translation.leaf_pte() & PTE_DIRTY != 0;
            Spte::leaf(
                translation.gpa.gfn(),
                translation.access,
                dirty,
                translation.pkey,
            )
        };
        Ok(self.fill(gva, tag, spte, access))
    }

    /// The highest level a shadow leaf for `translation` may have: a guest large page gets a
    /// large leaf only if its whole region is RAM of one slot that does not log dirty pages
    /// (dirty pages are logged in 4 KiB pieces).
    fn max_mapping_level(&self, translation: &crate::walker::Translation) -> u8 {
        if translation.level <= 1 || !self.large_leaves {
            return 1;
        }
        let frames = translation.page_size.bytes() >> PAGE_SHIFT;
        let base = Gfn(translation.gpa.gfn().0 & !(frames - 1));
        let whole = self.memslots.with_slot(base, |slot| {
            slot.contains(Gfn(base.0 + frames - 1))
                && !slot.flags().contains(MemslotFlags::LOG_DIRTY)
        });
        if whole == Some(true) {
            translation.level
        } else {
            1
        }
    }

    /// A translation by a guest walk alone, with nothing cached: stores go straight to host
    /// memory only where nothing must see them (not for tracked frames, cached code, clean
    /// pages of a dirty-logged slot, ROM).
    fn translate_uncached(&mut self, gva: Gva, access: Access) -> Result<Mapping, PageFault> {
        let translation = self.walk(gva, access)?;
        let gfn = translation.gpa.gfn();
        let (host, writable) = self.host_page(gfn);
        let direct = host != 0 && (access.kind != AccessKind::Write || writable);
        let offset = gva.0 & 0xfff;
        Ok(Mapping {
            gva,
            gpa: translation.gpa,
            host: direct.then(|| host + offset as usize),
        })
    }

    /// A guest walk that sets A/D bits, counted.
    fn walk(&mut self, gva: Gva, access: Access) -> Result<crate::walker::Translation, PageFault> {
        bump!(self.counters, walks);
        self.walker
            .walk(&*self.memslots, gva, access, WalkMode::Update)
            .inspect_err(|fault| {
                let cells = &self.counters;
                if fault.error_code & PageFault::RSVD != 0 {
                    bump!(cells, faults_reserved);
                } else if fault.error_code & PageFault::PRESENT != 0 {
                    bump!(cells, faults_protection);
                } else {
                    bump!(cells, faults_not_present);
                }
            })
    }

    /// Whether `spte` lets `access` through without a walk: the rights allow it, and a write
    /// finds the guest's entry already dirty.
    fn allows(&self, spte: Spte, access: Access) -> bool {
        let permissions = self.walker.permissions();
        let allowed = permissions
            .permission_fault(access, spte.access(), spte.pkey(), self.walker.pkru())
            .is_none();
        allowed && (access.kind != AccessKind::Write || spte.dirty())
    }

    /// Fills the TLB entry for `gva` from `spte` and answers `access` from it.
    fn fill(&mut self, gva: Gva, tag: u32, spte: Spte, access: Access) -> Mapping {
        let gfn = spte.gfn();
        let mut allowed = 0;
        for each in every_access() {
            if self.allows(spte, each) {
                allowed |= access_bit(each);
            }
        }
        let (host, writable) = self.host_page(gfn);
        let writes = every_access()
            .filter(|a| a.kind == AccessKind::Write)
            .fold(0, |bits, a| bits | access_bit(a));
        let direct = match host {
            0 => 0,
            _ if writable => allowed,
            _ => allowed & !writes,
        };
        self.tlb.fill(gva, tag, gfn, allowed, direct, host);
        bump!(self.counters, tlb_fills);
        if tag != self.tag && !spte.global() {
            self.private_upper
                .push((Gva(gva.0 & !PAGE_OFFSET_MASK), tag));
        }
        let offset = gva.0 & 0xfff;
        let bit = access_bit(access);
        Mapping {
            gva,
            gpa: Gpa((gfn.0 << PAGE_SHIFT) | offset),
            host: (direct & bit != 0).then(|| host + offset as usize),
        }
    }

    /// The host address of guest frame `gfn` (0 if it is not RAM), and whether stores may go
    /// there directly: not for read-only slots, clean pages of slots logging dirty pages (the
    /// first store must be logged: this is dirty logging's write protection), or frames
    /// holding shadowed guest tables (a store must zap shadow entries) or cached code.
    fn host_page(&mut self, gfn: Gfn) -> (usize, bool) {
        let (host, writable) = self.slot_page(gfn);
        (host, writable && !self.shadow.is_write_protected(gfn))
    }

    /// The host address of guest frame `gfn` (0 if it is not RAM), and whether its slot lets
    /// stores go there directly (see [`VcpuMmu::host_page`]); pins the slot.
    fn slot_page(&mut self, gfn: Gfn) -> (usize, bool) {
        let Some(slot) = self.memslots.find_by_gfn_cached(&mut self.slot_cache, gfn) else {
            return (0, false);
        };
        let host = slot.host_ptr(gfn.gpa()).map_or(0, |p| p as usize);
        let flags = slot.flags();
        let writable = !flags.contains(MemslotFlags::READONLY)
            && (!flags.contains(MemslotFlags::LOG_DIRTY) || slot.is_dirty(gfn));
        if !self.pins.iter().any(|pinned| Arc::ptr_eq(pinned, slot)) {
            let slot = slot.clone();
            self.pins.push(slot);
        }
        (host, writable)
    }

    /// A store of `len` bytes at `gva` (within a page), to be made by the caller at the host
    /// address returned: what [`VcpuMmu::translate`] gives, or, where that sends the store to
    /// the slow path only because its frame holds shadowed guest tables, the frame's host
    /// address once the shadow entries mirroring the guest entries the store overwrites are
    /// zapped (as the slow path zaps them after its store) and the TLB follows. `None` when the
    /// store must take the slow path (a fault, device memory, a read-only slot, a clean page
    /// of a slot logging dirty pages, cached code).
    ///
    /// The zap comes before the store, not after: nothing may walk the guest's tables between
    /// the two, which holds while the emulator runs one vCPU and the caller stores at once.
    pub fn prepare_store(&mut self, gva: Gva, len: usize, access: Access) -> Option<usize> {
        let mapping = self.translate(gva, access).ok()?;
        if mapping.host.is_some() {
            return mapping.host;
        }
        let gfn = mapping.gpa.gfn();
        if !self.caching || !self.shadow.is_tracked(gfn) || self.shadow.holds_code(gfn) {
            return None;
        }
        let (host, writable) = self.slot_page(gfn);
        if host == 0 || !writable {
            return None;
        }
        self.shadow.guest_wrote(mapping.gpa, len);
        self.after_slow_write(&mapping);
        Some(host + (gva.0 & PAGE_OFFSET_MASK) as usize)
    }

    /// Reads guest memory at a host address that [`VcpuMmu::translate`] gave.
    ///
    /// # Safety
    ///
    /// `host` must come from a [`Mapping`] this MMU returned since the last
    /// [`VcpuMmu::begin_instruction`], and `buf` must not reach past the end of its page.
    pub unsafe fn read_host(&self, host: usize, buf: &mut [u8]) {
        // SAFETY: `host` came from a TLB entry of this vCPU filled from a slot that `pins`
        // holds; pins are only released in `begin_instruction`, so the mapping is alive, and
        // the caller keeps within the page. Guest memory is only touched through atomics.
        unsafe { crate::memslot::copy_from_guest(host as *mut u8, buf) }
    }

    /// Writes guest memory at a host address that [`VcpuMmu::translate`] gave for a write.
    ///
    /// # Safety
    ///
    /// As for [`VcpuMmu::read_host`], with a mapping translated for a write.
    pub unsafe fn write_host(&self, host: usize, data: &[u8]) {
        // SAFETY: as in `read_host`; the TLB gives a host address for a write only where
        // direct stores are allowed (RAM, writable, not logged, not tracked).
        unsafe { crate::memslot::copy_to_guest(data, host as *mut u8) }
    }

    /// A store went the slow way, through the memslots, to the page `mapping` translated:
    /// the memslots told the shadow MMU (their write tracker) already, which zapped what the
    /// store made stale. If that asks for a TLB flush, this vCPU flushes now rather than at the
    /// next instruction boundary, since it goes on in the same instruction; otherwise only the
    /// page's entry goes, so that it refills for direct stores where the page now allows them
    /// (the first store to a clean page of a slot logging dirty pages, or to a frame no longer
    /// holding cached code).
    pub fn after_slow_write(&mut self, mapping: &Mapping) {
        let generation = self.shadow.flush_generation();
        if generation != self.tlb_generation {
            self.follow_flushes(generation);
        } else {
            let tag = self.tag_of(mapping.gva);
            self.tlb.drop_page(mapping.gva, [tag]);
        }
    }
}
