//! The VM-wide memslots: an active slot set for readers, an inactive one for the writer.

use std::error::Error;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;

use super::MemslotError;
use super::dirty::DirtyBitmap;
use super::host_mapping::HostMapping;
use super::set::SlotSet;
use super::slot::{Memslot, MemslotFlags, SlotId};
use crate::addr::{Gfn, Gpa, Hva};

/// A change to the slots, as shown to a [`MemslotObserver`] before it is published.
#[derive(Clone, Copy, Debug)]
pub enum SlotChange<'a> {
    /// A new slot.
    Create(&'a Arc<Memslot>),
    /// A slot goes away.
    Delete(&'a Arc<Memslot>),
    /// A slot moves to another base gfn; `new` keeps the host range, flags and dirty bitmap.
    Move {
        /// The slot as it was.
        old: &'a Arc<Memslot>,
        /// The slot at its new place.
        new: &'a Arc<Memslot>,
    },
    /// A slot's flags change; `new` keeps the place and the host range.
    FlagsChanged {
        /// The slot as it was.
        old: &'a Arc<Memslot>,
        /// The slot with its new flags.
        new: &'a Arc<Memslot>,
    },
}

impl<'a> SlotChange<'a> {
    /// The slot that leaves the set, if any.
    pub fn old_slot(&self) -> Option<&'a Arc<Memslot>> {
        match *self {
            Self::Create(_) => None,
            Self::Delete(old) | Self::Move { old, .. } | Self::FlagsChanged { old, .. } => {
                Some(old)
            }
        }
    }

    /// The slot that joins the set, if any.
    pub fn new_slot(&self) -> Option<&'a Arc<Memslot>> {
        match *self {
            Self::Delete(_) => None,
            Self::Create(new) | Self::Move { new, .. } | Self::FlagsChanged { new, .. } => {
                Some(new)
            }
        }
    }
}

/// Mirrors slot changes somewhere else, such as a hardware backend's memory regions.
pub trait MemslotObserver: Send {
    /// Called under the writer lock with a change that has been validated and is about to be
    /// published. An error drops the change: [`Memslots`] stays as it was and returns
    /// [`MemslotError::Observer`]. It may look slots up, but must not change them (that would
    /// wait for the writer lock it is called under).
    fn commit(&self, change: &SlotChange<'_>) -> Result<(), Box<dyn Error + Send + Sync>>;
}

/// Told of every store made through [`Memslots::write`]: by loaders, devices, a debugger,
/// and the slow path of an interpreted vCPU. A software MMU uses it to keep what it caches of
/// guest memory (shadow pages, decoded instructions) coherent, as KVM's page-track notifier.
pub trait WriteTracker: Send + Sync {
    /// `len` bytes were stored at `gpa` (possibly across pages).
    fn wrote(&self, gpa: Gpa, len: usize);
}

/// A vCPU's last-used slot, in front of [`Memslots::find_by_gfn_cached`].
///
/// Remembers the slot and the generation it was found at; any change to the slots bumps the
/// generation and so empties the cache. Use one per vCPU and per [`Memslots`].
#[derive(Default, Debug)]
pub struct SlotCache {
    generation: u64,
    slot: Option<Arc<Memslot>>,
}

impl SlotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Guest physical memory of one VM: its slots, shared by every vCPU thread.
///
/// Lookups never block and never see a half-made change; changes are serialized and cost
/// O(log n) each. The module documentation explains the two slot sets that make both true.
pub struct Memslots {
    /// The set readers use.
    active: ArcSwap<SlotSet>,
    /// The generation of the active set, published after the set itself, for [`SlotCache`].
    published_generation: AtomicU64,
    writer: Mutex<Writer>,
    write_tracker: std::sync::OnceLock<Arc<dyn WriteTracker>>,
}

/// What only the writer touches.
struct Writer {
    /// Holds the same slots as the active set whenever the writer lock is free.
    inactive: SlotSet,
    observer: Option<Box<dyn MemslotObserver>>,
}

impl Default for Memslots {
    fn default() -> Self {
        Self::new()
    }
}

impl Memslots {
    /// No slots yet.
    pub fn new() -> Self {
        Self {
            active: ArcSwap::from_pointee(SlotSet::default()),
            published_generation: AtomicU64::new(0),
            writer: Mutex::new(Writer {
                inactive: SlotSet::default(),
                observer: None,
            }),
            write_tracker: std::sync::OnceLock::new(),
        }
    }

    /// Registers the tracker told of every store through [`Memslots::write`]. There is one per
    /// VM; `false` if one was registered already.
    pub fn set_write_tracker(&self, tracker: Arc<dyn WriteTracker>) -> bool {
        self.write_tracker.set(tracker).is_ok()
    }

    /// Tells the write tracker, if any, of a store.
    pub(super) fn tell_tracker(&self, gpa: Gpa, len: usize) {
        if let Some(tracker) = self.write_tracker.get() {
            tracker.wrote(gpa, len);
        }
    }

    /// Registers the observer that sees every later change, replacing any earlier one.
    ///
    /// The slots that exist already are shown to it first, each as a [`SlotChange::Create`], so
    /// its mirror starts complete; if it refuses one, it is not registered.
    pub fn set_observer(&self, observer: Box<dyn MemslotObserver>) -> Result<(), MemslotError> {
        let mut writer = self.writer.lock();
        for slot in writer.inactive.slots() {
            observer
                .commit(&SlotChange::Create(slot))
                .map_err(MemslotError::Observer)?;
        }
        writer.observer = Some(observer);
        Ok(())
    }

    /// Creates slot `id`: `npages` guest frames from `base_gfn`, mapped onto `mapping` from byte
    /// `mapping_offset` on. Other slots may map the same host bytes.
    pub fn create(
        &self,
        id: SlotId,
        base_gfn: Gfn,
        npages: u64,
        mapping: Arc<HostMapping>,
        mapping_offset: usize,
        flags: MemslotFlags,
    ) -> Result<Arc<Memslot>, MemslotError> {
        let slot = Arc::new(Memslot::new(
            id,
            base_gfn,
            npages,
            mapping,
            mapping_offset,
            flags,
        )?);
        let mut writer = self.writer.lock();
        writer.inactive.check_create(&slot)?;
        self.commit(&mut writer, &SlotChange::Create(&slot))?;
        Ok(slot)
    }

    /// Deletes slot `id` and returns it.
    pub fn delete(&self, id: SlotId) -> Result<Arc<Memslot>, MemslotError> {
        let mut writer = self.writer.lock();
        let old = Arc::clone(writer.inactive.get(id).ok_or(MemslotError::UnknownId(id))?);
        self.commit(&mut writer, &SlotChange::Delete(&old))?;
        Ok(old)
    }

    /// Moves slot `id` to `base_gfn`, keeping its host memory, flags and dirty bitmap. The new
    /// place may overlap the old one. Moving a slot where it already is changes nothing.
    pub fn move_slot(&self, id: SlotId, base_gfn: Gfn) -> Result<Arc<Memslot>, MemslotError> {
        let mut writer = self.writer.lock();
        let old = Arc::clone(writer.inactive.get(id).ok_or(MemslotError::UnknownId(id))?);
        if old.base_gfn() == base_gfn {
            return Ok(old);
        }
        let new = Arc::new(old.moved_to(base_gfn)?);
        writer.inactive.check_overlap(&new)?;
        self.commit(
            &mut writer,
            &SlotChange::Move {
                old: &old,
                new: &new,
            },
        )?;
        Ok(new)
    }

    /// Changes the flags of slot `id`. Only LOG_DIRTY may change (as in KVM); switching it on
    /// starts a clean dirty bitmap. Setting the flags a slot has already changes nothing.
    pub fn set_flags(&self, id: SlotId, flags: MemslotFlags) -> Result<Arc<Memslot>, MemslotError> {
        let mut writer = self.writer.lock();
        let old = Arc::clone(writer.inactive.get(id).ok_or(MemslotError::UnknownId(id))?);
        if old.flags() == flags {
            return Ok(old);
        }
        let new = Arc::new(old.with_flags(flags)?);
        self.commit(
            &mut writer,
            &SlotChange::FlagsChanged {
                old: &old,
                new: &new,
            },
        )?;
        Ok(new)
    }

    /// Shows a validated change to the observer, then publishes it by the two-set scheme of the
    /// module documentation.
    fn commit(&self, writer: &mut Writer, change: &SlotChange<'_>) -> Result<(), MemslotError> {
        if let Some(observer) = &writer.observer {
            observer.commit(change).map_err(MemslotError::Observer)?;
        }
        let generation = writer.inactive.generation() + 1;
        let mut next = std::mem::take(&mut writer.inactive);
        next.apply(change, generation);
        let retired = self.active.swap(Arc::new(next));
        self.published_generation
            .store(generation, Ordering::Release);
        let mut retired = wait_for_readers(retired);
        retired.apply(change, generation);
        writer.inactive = retired;
        Ok(())
    }

    /// The active set, for one lookup or one guest memory copy: holding it delays the next change.
    pub(super) fn active(&self) -> Guard<Arc<SlotSet>> {
        self.active.load()
    }

    /// The slot holding guest frame `gfn`.
    pub fn find_by_gfn(&self, gfn: Gfn) -> Option<Arc<Memslot>> {
        self.active().find_by_gfn(gfn).cloned()
    }

    /// Runs `f` on the slot holding guest frame `gfn`, without taking a reference to it: no
    /// shared reference count is touched, so lookups on many threads do not contend.
    pub fn with_slot<R>(&self, gfn: Gfn, f: impl FnOnce(&Memslot) -> R) -> Option<R> {
        self.active().find_by_gfn(gfn).map(|slot| f(slot))
    }

    /// The slot holding guest frame `gfn`, through the vCPU's last-used-slot cache.
    ///
    /// A hit costs one atomic load (the published generation, no read-modify-write) and one
    /// comparison, and touches no shared reference count. The published generation trails the
    /// active set by at most the few instructions between a change's pointer swap and the
    /// store after it, and it only grows. So when it equals the generation the cache was filled
    /// at, either no change happened since, or one is being published right now and has not
    /// returned to its caller; answering from the set before it is then the same as having
    /// looked up just before that change. A set's generation is bumped by every change, so a
    /// slot cached at a generation that is still published is still in the set.
    pub fn find_by_gfn_cached<'c>(
        &self,
        cache: &'c mut SlotCache,
        gfn: Gfn,
    ) -> Option<&'c Arc<Memslot>> {
        if cache.generation == self.published_generation.load(Ordering::Acquire)
            && cache.slot.as_ref().is_some_and(|slot| slot.contains(gfn))
        {
            return cache.slot.as_ref();
        }
        let set = self.active();
        let slot = set.find_by_gfn(gfn)?;
        cache.generation = set.generation();
        cache.slot = Some(Arc::clone(slot));
        cache.slot.as_ref()
    }

    /// Every slot whose host range holds `hva`: several when slots alias the same host memory.
    pub fn find_by_hva(&self, hva: Hva) -> Vec<Arc<Memslot>> {
        self.active().find_by_hva(hva.0..=hva.0).cloned().collect()
    }

    /// Every slot whose host range overlaps `range` (KVM's `kvm_for_each_memslot_in_hva_range`),
    /// in order of host address.
    pub fn find_by_hva_range(&self, range: Range<Hva>) -> Vec<Arc<Memslot>> {
        if range.is_empty() {
            return Vec::new();
        }
        self.active()
            .find_by_hva(range.start.0..=range.end.0 - 1)
            .cloned()
            .collect()
    }

    /// Slot `id`.
    pub fn get(&self, id: SlotId) -> Option<Arc<Memslot>> {
        self.active().get(id).cloned()
    }

    /// Every slot, in order of base gfn.
    pub fn slots(&self) -> Vec<Arc<Memslot>> {
        self.active().slots().cloned().collect()
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.active().len()
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bumped by every change.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.published_generation.load(Ordering::Acquire)
    }

    /// Slot `id`'s dirty bitmap, cleared as it is read (`KVM_GET_DIRTY_LOG`): bit `n` of word
    /// `w` is page `64 * w + n` of the slot.
    pub fn get_dirty_log(&self, id: SlotId) -> Result<Vec<u64>, MemslotError> {
        self.with_dirty_bitmap(id, DirtyBitmap::take)
    }

    /// Slot `id`'s dirty bitmap, left as it is.
    pub fn dirty_bitmap(&self, id: SlotId) -> Result<Vec<u64>, MemslotError> {
        self.with_dirty_bitmap(id, DirtyBitmap::snapshot)
    }

    /// Clears exactly the bits set in `bits` from slot `id`'s dirty bitmap, the first word
    /// covering pages from `first_page` on (`KVM_CLEAR_DIRTY_LOG`). `first_page` must be a
    /// multiple of 64, and the words must lie in the bitmap.
    pub fn clear_dirty_log(
        &self,
        id: SlotId,
        first_page: u64,
        bits: &[u64],
    ) -> Result<(), MemslotError> {
        self.with_dirty_bitmap(id, |bitmap| {
            let first_word = first_page / 64;
            let fits = first_page.is_multiple_of(64)
                && first_word
                    .checked_add(bits.len() as u64)
                    .is_some_and(|end| end <= bitmap.word_count() as u64);
            if !fits {
                return Err(MemslotError::DirtyLogRange { id, first_page });
            }
            bitmap.clear(first_word as usize, bits);
            Ok(())
        })?
    }

    fn with_dirty_bitmap<R>(
        &self,
        id: SlotId,
        f: impl FnOnce(&DirtyBitmap) -> R,
    ) -> Result<R, MemslotError> {
        let set = self.active();
        let slot = set.get(id).ok_or(MemslotError::UnknownId(id))?;
        let bitmap = slot
            .dirty_bitmap()
            .ok_or(MemslotError::DirtyLogDisabled(id))?;
        Ok(f(bitmap))
    }
}

/// Takes back a retired set once no reader holds it (step 5 of the module documentation).
///
/// Readers hold a set for one lookup or one copy, so this spins briefly and then yields. The
/// swap that retired the set accounted every reader that had loaded it in the set's reference
/// count (arc-swap pays its readers' debts before `swap` returns), so a count of one means
/// nobody else has it, and nobody can load it any more.
fn wait_for_readers(mut set: Arc<SlotSet>) -> SlotSet {
    let mut spins = 0u32;
    loop {
        match Arc::try_unwrap(set) {
            Ok(set) => return set,
            Err(shared) => set = shared,
        }
        if spins < 100 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
