//! One memslot: a run of guest frames mapped onto host memory.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use super::MemslotError;
use super::dirty::DirtyBitmap;
use super::host_mapping::HostMapping;
use crate::addr::{Gfn, Gpa, Hva, PAGE_SHIFT, PAGE_SIZE};

/// The most slots a VM may have at once: KVM's `KVM_USER_MEM_SLOTS` on x86.
pub const MAX_SLOTS: usize = 32764;

/// Width of the guest physical address space slots may cover: x86-64's widest MAXPHYADDR.
pub const MAX_GPA_BITS: u32 = 52;

/// One past the last guest frame a slot may cover.
const GFN_LIMIT: u64 = 1 << (MAX_GPA_BITS - PAGE_SHIFT);

/// A slot's identifier, chosen by whoever creates the slot (KVM's `slot` field).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SlotId(pub u16);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

bitflags::bitflags! {
    /// A slot's flags. The bits are KVM's, so a KVM backend passes them through unchanged.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct MemslotFlags: u32 {
        /// Writes mark pages in the slot's dirty bitmap (`KVM_MEM_LOG_DIRTY_PAGES`).
        const LOG_DIRTY = 1 << 0;
        /// Guest writes are refused (`KVM_MEM_READONLY`); reads work as usual.
        const READONLY = 1 << 1;
    }
}

/// A run of `npages` guest frames from `base_gfn`, mapped onto a page-aligned range of a
/// [`HostMapping`].
///
/// Immutable once made: a move or a flag change makes a new `Memslot`, and both slot sets share
/// each one through an `Arc`. Holding that `Arc` keeps the host memory mapped, so pointers from
/// [`Memslot::host_ptr`] stay valid as long as the slot is held, even after it was deleted.
pub struct Memslot {
    id: SlotId,
    base_gfn: Gfn,
    npages: u64,
    flags: MemslotFlags,
    mapping: Arc<HostMapping>,
    mapping_offset: usize,
    /// Present exactly when `flags` has LOG_DIRTY.
    dirty: Option<Arc<DirtyBitmap>>,
}

impl Memslot {
    /// A new slot, after the checks that need no other slot: size, alignment, fit in the mapping
    /// and in the guest physical address space.
    pub(crate) fn new(
        id: SlotId,
        base_gfn: Gfn,
        npages: u64,
        mapping: Arc<HostMapping>,
        mapping_offset: usize,
        flags: MemslotFlags,
    ) -> Result<Self, MemslotError> {
        if npages == 0 {
            return Err(MemslotError::ZeroSize(id));
        }
        if !(mapping_offset as u64).is_multiple_of(PAGE_SIZE) {
            return Err(MemslotError::UnalignedOffset {
                id,
                offset: mapping_offset,
            });
        }
        let fits = npages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| len.checked_add(mapping_offset as u64))
            .is_some_and(|end| end <= mapping.len() as u64);
        if !fits {
            return Err(MemslotError::PastMappingEnd {
                id,
                mapping_len: mapping.len(),
            });
        }
        check_gfn_range(id, base_gfn, npages)?;
        Ok(Self {
            id,
            base_gfn,
            npages,
            flags,
            mapping,
            mapping_offset,
            dirty: flags
                .contains(MemslotFlags::LOG_DIRTY)
                .then(|| Arc::new(DirtyBitmap::new(npages))),
        })
    }

    /// A copy of this slot at another base gfn. It keeps the host range and the dirty bitmap:
    /// pages dirtied before the move are still reported after it, as KVM does.
    pub(crate) fn moved_to(&self, base_gfn: Gfn) -> Result<Self, MemslotError> {
        check_gfn_range(self.id, base_gfn, self.npages)?;
        Ok(Self {
            base_gfn,
            ..self.copy()
        })
    }

    /// A copy of this slot with other flags. Switching LOG_DIRTY on starts a clean bitmap,
    /// keeping it on keeps the bitmap, switching it off drops it. READONLY cannot change.
    pub(crate) fn with_flags(&self, flags: MemslotFlags) -> Result<Self, MemslotError> {
        if (flags ^ self.flags).contains(MemslotFlags::READONLY) {
            return Err(MemslotError::ReadOnlyToggle(self.id));
        }
        let dirty = match (&self.dirty, flags.contains(MemslotFlags::LOG_DIRTY)) {
            (_, false) => None,
            (Some(bitmap), true) => Some(Arc::clone(bitmap)),
            (None, true) => Some(Arc::new(DirtyBitmap::new(self.npages))),
        };
        Ok(Self {
            flags,
            dirty,
            ..self.copy()
        })
    }

    fn copy(&self) -> Self {
        Self {
            id: self.id,
            base_gfn: self.base_gfn,
            npages: self.npages,
            flags: self.flags,
            mapping: Arc::clone(&self.mapping),
            mapping_offset: self.mapping_offset,
            dirty: self.dirty.clone(),
        }
    }

    /// The slot's id.
    pub fn id(&self) -> SlotId {
        self.id
    }

    /// The first guest frame.
    pub fn base_gfn(&self) -> Gfn {
        self.base_gfn
    }

    /// One past the last guest frame.
    pub fn end_gfn(&self) -> Gfn {
        Gfn(self.base_gfn.0 + self.npages)
    }

    /// Number of pages.
    pub fn npages(&self) -> u64 {
        self.npages
    }

    /// The slot's flags.
    pub fn flags(&self) -> MemslotFlags {
        self.flags
    }

    /// Whether guest writes are refused.
    pub fn is_readonly(&self) -> bool {
        self.flags.contains(MemslotFlags::READONLY)
    }

    /// Whether `gfn` lies in this slot.
    pub fn contains(&self, gfn: Gfn) -> bool {
        // One comparison: a gfn below the base wraps around to a huge offset.
        gfn.0.wrapping_sub(self.base_gfn.0) < self.npages
    }

    /// The host mapping the slot's pages live in.
    pub fn mapping(&self) -> &Arc<HostMapping> {
        &self.mapping
    }

    /// Where the slot's first page lies in [`Memslot::mapping`], in bytes.
    pub fn mapping_offset(&self) -> usize {
        self.mapping_offset
    }

    /// The host address of the slot's first byte (`userspace_addr` for
    /// `KVM_SET_USER_MEMORY_REGION`).
    pub fn userspace_addr(&self) -> u64 {
        self.mapping.as_ptr() as u64 + self.mapping_offset as u64
    }

    /// The host address range the slot covers.
    pub(crate) fn hva_range(&self) -> Range<u64> {
        let start = self.userspace_addr();
        start..start + self.npages * PAGE_SIZE
    }

    /// The host address of the first byte of guest frame `gfn`, if the slot holds it.
    pub fn hva(&self, gfn: Gfn) -> Option<Hva> {
        self.contains(gfn)
            .then(|| Hva(self.userspace_addr() + ((gfn.0 - self.base_gfn.0) << PAGE_SHIFT)))
    }

    /// A host pointer to guest physical address `gpa`, if the slot holds it.
    ///
    /// The pointer is valid for the rest of the slot (up to [`Memslot::end_gfn`]) for as long as
    /// this slot is held. The guest and other threads may read and write that memory at any
    /// time: reach it only through raw pointer reads, writes and atomics, never through a Rust
    /// reference.
    pub fn host_ptr(&self, gpa: Gpa) -> Option<*mut u8> {
        let byte = (gpa.0).wrapping_sub(self.base_gfn.gpa().0);
        self.contains(gpa.gfn()).then(|| {
            self.mapping
                .as_ptr()
                .wrapping_add(self.mapping_offset + byte as usize)
        })
    }

    /// Marks guest frame `gfn` dirty, if the slot holds it and logs dirty pages.
    pub fn mark_dirty(&self, gfn: Gfn) {
        if let Some(bitmap) = &self.dirty
            && self.contains(gfn)
        {
            bitmap.mark(gfn.0 - self.base_gfn.0);
        }
    }

    /// Whether the slot logs dirty pages and guest frame `gfn` (in the slot) is marked dirty.
    pub fn is_dirty(&self, gfn: Gfn) -> bool {
        self.dirty
            .as_deref()
            .is_some_and(|bitmap| self.contains(gfn) && bitmap.is_marked(gfn.0 - self.base_gfn.0))
    }

    /// The dirty bitmap, when the slot logs dirty pages.
    pub(crate) fn dirty_bitmap(&self) -> Option<&DirtyBitmap> {
        self.dirty.as_deref()
    }
}

impl fmt::Debug for Memslot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memslot")
            .field("id", &self.id)
            .field("base_gfn", &self.base_gfn)
            .field("npages", &self.npages)
            .field("flags", &self.flags)
            .field(
                "userspace_addr",
                &format_args!("{:#x}", self.userspace_addr()),
            )
            .finish()
    }
}

fn check_gfn_range(id: SlotId, base_gfn: Gfn, npages: u64) -> Result<(), MemslotError> {
    match base_gfn.0.checked_add(npages) {
        Some(end) if end <= GFN_LIMIT => Ok(()),
        _ => Err(MemslotError::GfnOverflow(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(flags: MemslotFlags) -> Memslot {
        let mapping = HostMapping::anonymous(8 * PAGE_SIZE as usize).unwrap();
        Memslot::new(
            SlotId(3),
            Gfn(0x100),
            4,
            mapping,
            2 * PAGE_SIZE as usize,
            flags,
        )
        .unwrap()
    }

    #[test]
    fn translates_gfns_and_gpas_to_host_addresses() {
        let slot = slot(MemslotFlags::empty());
        let base = slot.mapping().as_ptr() as u64 + 2 * PAGE_SIZE;
        assert_eq!(slot.userspace_addr(), base);
        assert_eq!(slot.end_gfn(), Gfn(0x104));
        assert!(!slot.contains(Gfn(0xff)) && slot.contains(Gfn(0x100)));
        assert!(slot.contains(Gfn(0x103)) && !slot.contains(Gfn(0x104)));
        assert_eq!(slot.hva(Gfn(0x102)), Some(Hva(base + 2 * PAGE_SIZE)));
        assert_eq!(slot.hva(Gfn(0x104)), None);
        let ptr = slot.host_ptr(Gpa(0x103_abc)).unwrap();
        assert_eq!(ptr as u64, base + 3 * PAGE_SIZE + 0xabc);
        assert_eq!(slot.host_ptr(Gpa(0xfff_fff)), None);
        assert_eq!(slot.hva_range(), base..base + 4 * PAGE_SIZE);
    }

    #[test]
    fn dirty_bitmap_follows_log_dirty_as_kvm_does() {
        let plain = slot(MemslotFlags::empty());
        assert!(plain.dirty_bitmap().is_none());
        plain.mark_dirty(Gfn(0x100));

        let logging = plain.with_flags(MemslotFlags::LOG_DIRTY).unwrap();
        logging.mark_dirty(Gfn(0x101));
        logging.mark_dirty(Gfn(0x999));
        let moved = logging.moved_to(Gfn(0x200)).unwrap();
        moved.mark_dirty(Gfn(0x203));
        // The move shares the bitmap: both copies see both marks.
        assert_eq!(logging.dirty_bitmap().unwrap().snapshot(), [0b1010]);
        assert_eq!(moved.dirty_bitmap().unwrap().snapshot(), [0b1010]);

        assert!(
            moved
                .with_flags(MemslotFlags::empty())
                .unwrap()
                .dirty_bitmap()
                .is_none()
        );
        let again = moved
            .with_flags(MemslotFlags::empty())
            .unwrap()
            .with_flags(MemslotFlags::LOG_DIRTY)
            .unwrap();
        assert_eq!(again.dirty_bitmap().unwrap().snapshot(), [0]);
    }

    #[test]
    fn readonly_cannot_change() {
        let slot = slot(MemslotFlags::READONLY);
        assert!(matches!(
            slot.with_flags(MemslotFlags::empty()),
            Err(MemslotError::ReadOnlyToggle(SlotId(3)))
        ));
        let logging = slot
            .with_flags(MemslotFlags::READONLY | MemslotFlags::LOG_DIRTY)
            .unwrap();
        assert!(logging.is_readonly());
    }

    #[test]
    fn refuses_bad_shapes() {
        let mapping = HostMapping::anonymous(4 * PAGE_SIZE as usize).unwrap();
        let new = |base, npages, offset| {
            Memslot::new(
                SlotId(1),
                Gfn(base),
                npages,
                Arc::clone(&mapping),
                offset,
                MemslotFlags::empty(),
            )
        };
        assert!(matches!(new(0, 0, 0), Err(MemslotError::ZeroSize(_))));
        assert!(matches!(
            new(0, 1, 100),
            Err(MemslotError::UnalignedOffset { offset: 100, .. })
        ));
        assert!(matches!(
            new(0, 4, 4096),
            Err(MemslotError::PastMappingEnd { .. })
        ));
        assert!(matches!(
            new(0, u64::MAX, 0),
            Err(MemslotError::PastMappingEnd { .. })
        ));
        assert!(matches!(
            new(GFN_LIMIT - 1, 2, 0),
            Err(MemslotError::GfnOverflow(_))
        ));
        assert!(matches!(
            new(u64::MAX, 2, 0),
            Err(MemslotError::GfnOverflow(_))
        ));
        let top = new(GFN_LIMIT - 4, 4, 0).unwrap();
        assert!(matches!(
            top.moved_to(Gfn(GFN_LIMIT - 3)),
            Err(MemslotError::GfnOverflow(_))
        ));
    }
}
