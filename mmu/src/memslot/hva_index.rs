//! Host address -> slots, through an interval tree.

use std::ops::RangeInclusive;
use std::sync::Arc;

use iset::IntervalMap;

use super::slot::Memslot;

/// Every slot of a set, keyed by the host address range it covers.
///
/// Host ranges may overlap, and may even be identical, because several slots can alias the same
/// host memory; so this is an interval tree (a red-black tree whose nodes also keep the largest
/// end below them) that holds equal intervals side by side. A stabbing query costs O(log n + k)
/// for k answers, insertion and removal O(log n + e) for e slots over the very same range.
#[derive(Default)]
pub(crate) struct HvaIndex {
    tree: IntervalMap<u64, Arc<Memslot>>,
}

impl HvaIndex {
    pub(crate) fn insert(&mut self, slot: &Arc<Memslot>) {
        self.tree.force_insert(slot.hva_range(), Arc::clone(slot));
    }

    /// Removes this very slot, not another one over the same range.
    pub(crate) fn remove(&mut self, slot: &Arc<Memslot>) {
        let removed = self
            .tree
            .remove_where(slot.hva_range(), |held| Arc::ptr_eq(held, slot));
        debug_assert!(
            removed.is_some(),
            "slot {} missing from the hva index",
            slot.id()
        );
    }

    /// The slots that cover any byte of `bytes`, in order of host address. The range is
    /// inclusive, as KVM's hva ranges are, so it is never empty.
    pub(crate) fn overlapping(
        &self,
        bytes: RangeInclusive<u64>,
    ) -> impl Iterator<Item = &Arc<Memslot>> {
        self.tree.values(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Gfn, PAGE_SIZE};
    use crate::memslot::{HostMapping, MemslotFlags, SlotId};

    #[test]
    fn finds_aliases_and_removes_only_the_given_slot() {
        let mapping = HostMapping::anonymous(4 * PAGE_SIZE as usize).unwrap();
        let slot = |id, gfn, npages, page: usize| {
            Arc::new(
                Memslot::new(
                    SlotId(id),
                    Gfn(gfn),
                    npages,
                    Arc::clone(&mapping),
                    page * PAGE_SIZE as usize,
                    MemslotFlags::empty(),
                )
                .unwrap(),
            )
        };
        let whole = slot(0, 0, 4, 0);
        let alias = slot(1, 0x10, 4, 0);
        let tail = slot(2, 0x20, 1, 3);
        let mut index = HvaIndex::default();
        for s in [&whole, &alias, &tail] {
            index.insert(s);
        }
        let base = mapping.as_ptr() as u64;
        let ids = |index: &HvaIndex, range: RangeInclusive<u64>| {
            let mut ids: Vec<u16> = index.overlapping(range).map(|s| s.id().0).collect();
            ids.sort();
            ids
        };
        let page = |n| base + n * PAGE_SIZE;
        assert_eq!(ids(&index, base..=base), [0, 1]);
        assert_eq!(ids(&index, page(3)..=page(3)), [0, 1, 2]);
        assert_eq!(ids(&index, page(3) - 1..=page(3) - 1), [0, 1]);
        assert_eq!(ids(&index, page(4)..=page(5)), [0u16; 0]);

        index.remove(&alias);
        assert_eq!(ids(&index, base..=page(4) - 1), [0, 2]);
        index.remove(&whole);
        assert_eq!(ids(&index, base..=page(4)), [2]);
    }
}
