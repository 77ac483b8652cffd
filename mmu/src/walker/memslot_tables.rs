//! Guest page tables read from Umbra's memslots.
//!
//! Entries are read and updated through host pointers with atomics, so a walk on one vCPU
//! thread and a page-table write on another never make a torn entry: an aligned 4- or 8-byte
//! entry is single-copy atomic, as on hardware. A/D updates to a read-only slot are refused
//! (`None`), and a successful one marks the page dirty where the slot logs dirty pages, as a
//! processor's write of a paging-structure entry is a write like any other.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::PageTableMemory;
use crate::addr::Gpa;
use crate::memslot::Memslots;

/// Runs `f` on the host pointer of the `size`-byte entry at `gpa`, if it is RAM and aligned.
/// The slot is held (through the memslots' active set) for as long as `f` runs.
fn with_entry<T>(
    memslots: &Memslots,
    gpa: Gpa,
    size: u64,
    writable: bool,
    f: impl FnOnce(*mut u8) -> T,
) -> Option<T> {
    if !gpa.0.is_multiple_of(size) {
        return None;
    }
    memslots
        .with_slot(gpa.gfn(), |slot| {
            if writable && slot.is_readonly() {
                return None;
            }
            let result = f(slot.host_ptr(gpa)?);
            if writable {
                slot.mark_dirty(gpa.gfn());
            }
            Some(result)
        })
        .flatten()
}

impl PageTableMemory for Memslots {
    fn read_u32(&self, gpa: Gpa) -> Option<u32> {
        with_entry(self, gpa, 4, false, |ptr| {
            // SAFETY: `ptr` is 4-byte aligned (checked) and points into the slot's host mapping,
            // which `with_entry` keeps alive by holding the slot; guest memory is only ever
            // accessed through raw pointers and atomics, so an atomic view of it is sound.
            unsafe { AtomicU32::from_ptr(ptr.cast()) }.load(SeqCst)
        })
    }

    fn read_u64(&self, gpa: Gpa) -> Option<u64> {
        with_entry(self, gpa, 8, false, |ptr| {
            // SAFETY: as in `read_u32`, for an 8-byte aligned entry.
            unsafe { AtomicU64::from_ptr(ptr.cast()) }.load(SeqCst)
        })
    }

    fn cmpxchg_u32(&self, gpa: Gpa, old: u32, new: u32) -> Option<bool> {
        with_entry(self, gpa, 4, true, |ptr| {
            // SAFETY: as in `read_u32`.
            let entry = unsafe { AtomicU32::from_ptr(ptr.cast()) };
            entry.compare_exchange(old, new, SeqCst, SeqCst).is_ok()
        })
    }

    fn cmpxchg_u64(&self, gpa: Gpa, old: u64, new: u64) -> Option<bool> {
        with_entry(self, gpa, 8, true, |ptr| {
            // SAFETY: as in `read_u64`.
            let entry = unsafe { AtomicU64::from_ptr(ptr.cast()) };
            entry.compare_exchange(old, new, SeqCst, SeqCst).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::addr::Gfn;
    use crate::memslot::{HostMapping, MemslotFlags, SlotId};

    fn memslots() -> Arc<Memslots> {
        let memslots = Arc::new(Memslots::new());
        let ram = HostMapping::anonymous(0x2000).unwrap();
        let ram_flags = MemslotFlags::LOG_DIRTY;
        memslots
            .create(SlotId(0), Gfn(0), 1, ram.clone(), 0, ram_flags)
            .unwrap();
        let rom_flags = MemslotFlags::READONLY;
        memslots
            .create(SlotId(1), Gfn(1), 1, ram, 0x1000, rom_flags)
            .unwrap();
        memslots
    }

    #[test]
    fn entries_are_read_and_exchanged_in_ram() {
        let memslots = memslots();
        memslots.write_u64(Gpa(0x10), 0x1234_5007).unwrap();
        assert_eq!(memslots.read_u64(Gpa(0x10)).unwrap(), 0x1234_5007);
        assert_eq!(
            PageTableMemory::read_u64(&*memslots, Gpa(0x10)),
            Some(0x1234_5007)
        );
        assert_eq!(PageTableMemory::read_u32(&*memslots, Gpa(0x14)), Some(0));
        memslots.get_dirty_log(SlotId(0)).unwrap();
        assert_eq!(
            memslots.cmpxchg_u64(Gpa(0x10), 0x1234_5007, 0x1234_5027),
            Some(true)
        );
        assert_eq!(memslots.cmpxchg_u64(Gpa(0x10), 0x1234_5007, 0), Some(false));
        assert_eq!(memslots.read_u64(Gpa(0x10)).unwrap(), 0x1234_5027);
        assert_eq!(
            memslots.get_dirty_log(SlotId(0)).unwrap()[0],
            1,
            "A/D writes are logged"
        );
    }

    #[test]
    fn rom_unmapped_and_unaligned_entries_are_refused() {
        let memslots = memslots();
        assert_eq!(PageTableMemory::read_u64(&*memslots, Gpa(0x1000)), Some(0));
        assert_eq!(memslots.cmpxchg_u64(Gpa(0x1000), 0, 1), None);
        assert_eq!(PageTableMemory::read_u64(&*memslots, Gpa(0x9000)), None);
        assert_eq!(PageTableMemory::read_u64(&*memslots, Gpa(0x4)), None);
        assert_eq!(memslots.cmpxchg_u32(Gpa(0x2), 0, 1), None);
    }
}
