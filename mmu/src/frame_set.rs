//! A set of guest frames that vCPUs test without a lock: one bit per frame below
//! [`FrameSet::LIMIT`], kept beside a locked collection that stays the record and that the
//! bits mirror (the shadow MMU's tracked and code frames, tested on every TLB fill).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::addr::Gfn;

/// A lock-free mirror of which guest frames below [`FrameSet::LIMIT`] are in a set.
pub(crate) struct FrameSet {
    words: Box<[AtomicU64]>,
}

impl Default for FrameSet {
    fn default() -> Self {
        FrameSet {
            words: (0..Self::LIMIT / 64).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl FrameSet {
    /// The first frame the set does not cover: 4 GiB (128 KiB of bits).
    pub(crate) const LIMIT: u64 = 1 << 20;

    /// Records whether `gfn` is in the set; frames past the limit are not recorded. Call
    /// under the lock of the collection mirrored, after changing it.
    pub(crate) fn set(&self, gfn: Gfn, member: bool) {
        let Some(word) = self.words.get((gfn.0 / 64) as usize) else {
            return;
        };
        let bit = 1 << (gfn.0 % 64);
        if member {
            word.fetch_or(bit, Ordering::Release);
        } else {
            word.fetch_and(!bit, Ordering::Release);
        }
    }

    /// Whether `gfn` is in the set, or `None` past the limit (the collection must answer).
    #[inline]
    pub(crate) fn contains(&self, gfn: Gfn) -> Option<bool> {
        let word = self.words.get((gfn.0 / 64) as usize)?;
        Some(word.load(Ordering::Acquire) & (1 << (gfn.0 % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_and_go_and_those_past_the_limit_are_not_answered() {
        let set = FrameSet::default();
        assert_eq!(set.contains(Gfn(77)), Some(false));
        set.set(Gfn(77), true);
        set.set(Gfn(78), true);
        assert_eq!(set.contains(Gfn(77)), Some(true));
        set.set(Gfn(77), false);
        assert_eq!(set.contains(Gfn(77)), Some(false));
        assert_eq!(set.contains(Gfn(78)), Some(true));
        set.set(Gfn(FrameSet::LIMIT), true);
        assert_eq!(set.contains(Gfn(FrameSet::LIMIT)), None);
    }
}
