//! A slot's dirty bitmap: one bit per page, set by writes, harvested by the dirty log.

use std::sync::atomic::{AtomicU64, Ordering};

/// One bit per page of a slot, set when the page is written while the slot logs dirty pages.
///
/// Shared through an `Arc` by every copy of a slot that keeps logging (a moved slot, a slot whose
/// other flags changed), so a writer holding the old copy still marks the live bitmap.
///
/// Ordering: a writer stores guest data first and marks the page after, with release ordering;
/// the harvester takes bits with acquire ordering. A page whose bit it takes therefore shows the
/// data of every write that set the bit; a write that lands after the take sets the bit again and
/// shows up in the next harvest. Marking before the store could lose that write from the log.
pub(crate) struct DirtyBitmap {
    words: Box<[AtomicU64]>,
}

impl DirtyBitmap {
    /// A clean bitmap for `npages` pages.
    pub(crate) fn new(npages: u64) -> Self {
        Self {
            words: (0..npages.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Number of 64-bit words.
    pub(crate) fn word_count(&self) -> usize {
        self.words.len()
    }

    /// Marks page `page` (relative to the slot) dirty.
    pub(crate) fn mark(&self, page: u64) {
        let bit = 1u64 << (page % 64);
        let word = &self.words[(page / 64) as usize];
        // A plain load first: a page written over and over is already dirty, and skipping the
        // atomic read-modify-write keeps its cache line shared between the vCPUs writing it.
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Release);
        }
    }

    /// Whether page `page` (relative to the slot) is marked dirty.
    pub(crate) fn is_marked(&self, page: u64) -> bool {
        self.words[(page / 64) as usize].load(Ordering::Acquire) & (1 << (page % 64)) != 0
    }

    /// The bitmap as it is, without clearing it.
    pub(crate) fn snapshot(&self) -> Vec<u64> {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire))
            .collect()
    }

    /// The bitmap, cleared word by word as it is read.
    pub(crate) fn take(&self) -> Vec<u64> {
        self.words
            .iter()
            .map(|w| w.swap(0, Ordering::AcqRel))
            .collect()
    }

    /// Clears the bits set in `bits`, whose first word is word `first_word` of the bitmap. The
    /// caller has checked that the words exist.
    pub(crate) fn clear(&self, first_word: usize, bits: &[u64]) {
        for (word, &mask) in self.words[first_word..][..bits.len()].iter().zip(bits) {
            if mask != 0 {
                word.fetch_and(!mask, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_takes_and_clears_exact_bits() {
        let bitmap = DirtyBitmap::new(130);
        assert_eq!(bitmap.word_count(), 3);
        for page in [0, 63, 64, 129] {
            bitmap.mark(page);
        }
        bitmap.mark(63);
        assert_eq!(bitmap.snapshot(), [1 | 1 << 63, 1, 1 << 1]);
        bitmap.clear(0, &[1 << 63 | 1 << 5]);
        assert_eq!(bitmap.snapshot(), [1, 1, 1 << 1]);
        bitmap.clear(1, &[0, 1 << 1]);
        assert_eq!(bitmap.take(), [1, 1, 0]);
        assert_eq!(bitmap.snapshot(), [0, 0, 0]);
    }
}
