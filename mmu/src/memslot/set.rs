//! One slot set: the slots of the VM at one generation, indexed by gfn, host address and id.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::Arc;

use super::MemslotError;
use super::hva_index::HvaIndex;
use super::memslots::SlotChange;
use super::slot::{MAX_SLOTS, Memslot, SlotId};
use crate::addr::Gfn;

/// The slots of the VM at one generation. [`super::Memslots`] keeps two, which hold the same
/// `Arc<Memslot>`s whenever no change is under way.
#[derive(Default)]
pub(crate) struct SlotSet {
    generation: u64,
    /// Keyed by base gfn. Slots never overlap in guest physical space, so the slot with the
    /// greatest base at or below a gfn is the only one that can contain it.
    by_gfn: BTreeMap<Gfn, Arc<Memslot>>,
    by_hva: HvaIndex,
    by_id: HashMap<SlotId, Arc<Memslot>>,
}

impl SlotSet {
    /// Bumped by every change.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn get(&self, id: SlotId) -> Option<&Arc<Memslot>> {
        self.by_id.get(&id)
    }

    /// The slot holding `gfn`.
    pub(crate) fn find_by_gfn(&self, gfn: Gfn) -> Option<&Arc<Memslot>> {
        let (_, slot) = self.by_gfn.range(..=gfn).next_back()?;
        slot.contains(gfn).then_some(slot)
    }

    /// Every slot, in order of base gfn.
    pub(crate) fn slots(&self) -> impl Iterator<Item = &Arc<Memslot>> {
        self.by_gfn.values()
    }

    /// The slots covering any byte of the inclusive host range `bytes`.
    pub(crate) fn find_by_hva(
        &self,
        bytes: RangeInclusive<u64>,
    ) -> impl Iterator<Item = &Arc<Memslot>> {
        self.by_hva.overlapping(bytes)
    }

    /// Checks that `slot` may join the set as a new slot.
    pub(crate) fn check_create(&self, slot: &Memslot) -> Result<(), MemslotError> {
        if self.by_id.contains_key(&slot.id()) {
            return Err(MemslotError::DuplicateId(slot.id()));
        }
        if self.len() >= MAX_SLOTS {
            return Err(MemslotError::TooManySlots);
        }
        self.check_overlap(slot)
    }

    /// Checks that `slot` overlaps no slot but the one with its own id, which it replaces.
    ///
    /// Any overlapping slot must start below the new slot's end; of those, only the one that
    /// starts last can reach past the new slot's base, since the slots before it end at or below
    /// its base. So at most two slots are looked at: that one, and its predecessor when it is the
    /// slot being replaced.
    pub(crate) fn check_overlap(&self, slot: &Memslot) -> Result<(), MemslotError> {
        let overlapping = self
            .by_gfn
            .range(..slot.end_gfn())
            .rev()
            .map(|(_, other)| other)
            .find(|other| other.id() != slot.id())
            .filter(|other| other.end_gfn() > slot.base_gfn());
        match overlapping {
            Some(other) => Err(MemslotError::Overlap {
                id: slot.id(),
                other: other.id(),
            }),
            None => Ok(()),
        }
    }

    /// Applies a validated change and sets the generation. O(log n): one slot leaves and one
    /// joins each index.
    pub(crate) fn apply(&mut self, change: &SlotChange<'_>, generation: u64) {
        if let Some(old) = change.old_slot() {
            self.remove(old);
        }
        if let Some(new) = change.new_slot() {
            self.insert(new);
        }
        self.generation = generation;
    }

    fn insert(&mut self, slot: &Arc<Memslot>) {
        let by_gfn = self.by_gfn.insert(slot.base_gfn(), Arc::clone(slot));
        let by_id = self.by_id.insert(slot.id(), Arc::clone(slot));
        debug_assert!(
            by_gfn.is_none() && by_id.is_none(),
            "slot {} clashes",
            slot.id()
        );
        self.by_hva.insert(slot);
    }

    fn remove(&mut self, slot: &Arc<Memslot>) {
        let by_gfn = self.by_gfn.remove(&slot.base_gfn());
        let by_id = self.by_id.remove(&slot.id());
        debug_assert!(
            by_gfn.is_some_and(|s| Arc::ptr_eq(&s, slot))
                && by_id.is_some_and(|s| Arc::ptr_eq(&s, slot)),
            "slot {} missing from its set",
            slot.id()
        );
        self.by_hva.remove(slot);
    }
}
