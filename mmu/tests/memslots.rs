//! Memslots through their public API: every operation and every error.

use std::sync::{Arc, Mutex};

use umbra_mmu::addr::{Gfn, Gpa, Hva, PAGE_SIZE};
use umbra_mmu::memslot::{
    HostMapping, MAX_SLOTS, MemslotError, MemslotFlags, MemslotObserver, Memslots, SlotCache,
    SlotChange, SlotId,
};

const PAGE: usize = PAGE_SIZE as usize;
const NONE: MemslotFlags = MemslotFlags::empty();

fn mapping(pages: usize) -> Arc<HostMapping> {
    HostMapping::anonymous(pages * PAGE).unwrap()
}

fn ids(slots: &[Arc<umbra_mmu::memslot::Memslot>]) -> Vec<u16> {
    slots.iter().map(|s| s.id().0).collect()
}

#[test]
fn memslots_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Memslots>();
    check::<umbra_mmu::memslot::Memslot>();
}

#[test]
fn create_then_look_up_by_gfn_id_and_order() {
    let slots = Memslots::new();
    assert!(slots.is_empty());
    assert_eq!(slots.generation(), 0);
    let mem = mapping(16);
    let high = slots
        .create(SlotId(1), Gfn(0x100), 8, mem.clone(), 0, NONE)
        .unwrap();
    let low = slots
        .create(SlotId(7), Gfn(0x10), 8, mem.clone(), 8 * PAGE, NONE)
        .unwrap();
    assert_eq!(slots.len(), 2);
    assert_eq!(slots.generation(), 2);
    assert_eq!(ids(&slots.slots()), [7, 1]);

    assert!(Arc::ptr_eq(&slots.find_by_gfn(Gfn(0x107)).unwrap(), &high));
    assert!(Arc::ptr_eq(&slots.find_by_gfn(Gfn(0x10)).unwrap(), &low));
    assert!(slots.find_by_gfn(Gfn(0x108)).is_none());
    assert!(slots.find_by_gfn(Gfn(0xf)).is_none());
    assert!(slots.find_by_gfn(Gfn(0x18)).is_none());
    assert!(Arc::ptr_eq(&slots.get(SlotId(7)).unwrap(), &low));
    assert!(slots.get(SlotId(2)).is_none());

    assert_eq!(low.userspace_addr(), mem.as_ptr() as u64 + 8 * PAGE_SIZE);
    assert_eq!(
        low.hva(Gfn(0x11)),
        Some(Hva(low.userspace_addr() + PAGE_SIZE))
    );
}

#[test]
fn create_refuses_bad_slots() {
    let slots = Memslots::new();
    let mem = mapping(4);
    slots
        .create(SlotId(0), Gfn(10), 4, mem.clone(), 0, NONE)
        .unwrap();
    let create = |id, gfn, npages, offset| {
        slots.create(SlotId(id), Gfn(gfn), npages, mem.clone(), offset, NONE)
    };

    assert!(matches!(
        create(1, 0, 0, 0),
        Err(MemslotError::ZeroSize(SlotId(1)))
    ));
    assert!(matches!(
        create(1, 0, 1, 1),
        Err(MemslotError::UnalignedOffset { offset: 1, .. })
    ));
    assert!(matches!(
        create(1, 0, 2, 3 * PAGE),
        Err(MemslotError::PastMappingEnd { mapping_len, .. }) if mapping_len == 4 * PAGE
    ));
    assert!(matches!(
        create(1, u64::MAX, 1, 0),
        Err(MemslotError::GfnOverflow(SlotId(1)))
    ));
    assert!(matches!(
        create(1, (1 << 40) - 1, 2, 0),
        Err(MemslotError::GfnOverflow(_))
    ));
    assert!(matches!(
        create(0, 100, 1, 0),
        Err(MemslotError::DuplicateId(SlotId(0)))
    ));
    for (gfn, npages) in [(13, 1), (8, 3), (10, 4), (9, 4), (12, 2)] {
        assert!(
            matches!(
                create(1, gfn, npages, 0),
                Err(MemslotError::Overlap {
                    id: SlotId(1),
                    other: SlotId(0)
                })
            ),
            "{gfn} +{npages}"
        );
    }
    create(1, 6, 4, 0).unwrap();
    create(2, 14, 1, 0).unwrap();
    assert_eq!(slots.generation(), 3);
}

#[test]
fn at_most_max_slots() {
    let slots = Memslots::new();
    let mem = mapping(1);
    for id in 0..MAX_SLOTS as u16 {
        slots
            .create(SlotId(id), Gfn(id.into()), 1, mem.clone(), 0, NONE)
            .unwrap();
    }
    assert_eq!(slots.len(), MAX_SLOTS);
    assert!(matches!(
        slots.create(SlotId(u16::MAX), Gfn(1 << 20), 1, mem.clone(), 0, NONE),
        Err(MemslotError::TooManySlots)
    ));
    slots.delete(SlotId(5)).unwrap();
    slots
        .create(SlotId(u16::MAX), Gfn(1 << 20), 1, mem, 0, NONE)
        .unwrap();
}

#[test]
fn delete_removes_from_every_index() {
    let slots = Memslots::new();
    let mem = mapping(2);
    let slot = slots
        .create(SlotId(3), Gfn(0), 2, mem.clone(), 0, NONE)
        .unwrap();
    assert!(matches!(
        slots.delete(SlotId(4)),
        Err(MemslotError::UnknownId(SlotId(4)))
    ));
    assert!(Arc::ptr_eq(&slots.delete(SlotId(3)).unwrap(), &slot));
    assert!(slots.is_empty());
    assert!(slots.find_by_gfn(Gfn(0)).is_none());
    assert!(slots.get(SlotId(3)).is_none());
    assert!(slots.find_by_hva(Hva(mem.as_ptr() as u64)).is_empty());
    assert_eq!(slots.generation(), 2);
    // The id and the place are free again.
    slots.create(SlotId(3), Gfn(0), 2, mem, 0, NONE).unwrap();
}

#[test]
fn move_keeps_host_memory_and_checks_the_new_place() {
    let slots = Memslots::new();
    let mem = mapping(8);
    let a = slots
        .create(SlotId(1), Gfn(0x10), 4, mem.clone(), 0, NONE)
        .unwrap();
    slots
        .create(SlotId(2), Gfn(0x20), 4, mem.clone(), 4 * PAGE, NONE)
        .unwrap();
    slots.write(Gpa(0x10_008), b"moved").unwrap();

    // Overlapping its own old place is fine.
    let moved = slots.move_slot(SlotId(1), Gfn(0x12)).unwrap();
    assert_eq!(moved.base_gfn(), Gfn(0x12));
    assert_eq!(moved.userspace_addr(), a.userspace_addr());
    assert!(slots.find_by_gfn(Gfn(0x11)).is_none());
    assert_eq!(slots.find_by_gfn(Gfn(0x15)).unwrap().id(), SlotId(1));
    let mut buf = [0; 5];
    slots.read(Gpa(0x12_008), &mut buf).unwrap();
    assert_eq!(&buf, b"moved");
    assert_eq!(ids(&slots.find_by_hva(Hva(a.userspace_addr()))), [1]);

    let generation = slots.generation();
    assert!(Arc::ptr_eq(
        &slots.move_slot(SlotId(1), Gfn(0x12)).unwrap(),
        &moved
    ));
    assert_eq!(slots.generation(), generation);

    assert!(matches!(
        slots.move_slot(SlotId(1), Gfn(0x1d)),
        Err(MemslotError::Overlap {
            id: SlotId(1),
            other: SlotId(2)
        })
    ));
    assert!(matches!(
        slots.move_slot(SlotId(1), Gfn((1 << 40) - 3)),
        Err(MemslotError::GfnOverflow(SlotId(1)))
    ));
    assert!(matches!(
        slots.move_slot(SlotId(9), Gfn(0)),
        Err(MemslotError::UnknownId(_))
    ));
    assert_eq!(slots.generation(), generation);
    assert_eq!(slots.get(SlotId(1)).unwrap().base_gfn(), Gfn(0x12));
}

#[test]
fn set_flags_switches_dirty_logging_but_not_readonly() {
    let slots = Memslots::new();
    let mem = mapping(2);
    slots
        .create(SlotId(1), Gfn(0), 1, mem.clone(), 0, MemslotFlags::READONLY)
        .unwrap();
    slots.create(SlotId(2), Gfn(1), 1, mem, PAGE, NONE).unwrap();
    assert!(matches!(
        slots.set_flags(SlotId(1), NONE),
        Err(MemslotError::ReadOnlyToggle(SlotId(1)))
    ));
    assert!(matches!(
        slots.set_flags(SlotId(2), MemslotFlags::READONLY),
        Err(MemslotError::ReadOnlyToggle(SlotId(2)))
    ));
    assert!(matches!(
        slots.set_flags(SlotId(3), NONE),
        Err(MemslotError::UnknownId(_))
    ));

    let logging = slots.set_flags(SlotId(2), MemslotFlags::LOG_DIRTY).unwrap();
    assert_eq!(logging.flags(), MemslotFlags::LOG_DIRTY);
    assert_eq!(
        slots.get(SlotId(2)).unwrap().flags(),
        MemslotFlags::LOG_DIRTY
    );
    let generation = slots.generation();
    slots.set_flags(SlotId(2), MemslotFlags::LOG_DIRTY).unwrap();
    assert_eq!(slots.generation(), generation);
    assert!(
        slots
            .set_flags(SlotId(1), MemslotFlags::READONLY | MemslotFlags::LOG_DIRTY)
            .is_ok()
    );
}

#[test]
fn aliasing_slots_are_all_found_by_hva() {
    let slots = Memslots::new();
    let mem = mapping(4);
    let base = mem.as_ptr() as u64;
    // Slots 0 and 1 map the same four pages; slot 2 only the last one; slot 3 its own memory.
    slots
        .create(SlotId(0), Gfn(0), 4, mem.clone(), 0, NONE)
        .unwrap();
    slots
        .create(SlotId(1), Gfn(0x100), 4, mem.clone(), 0, NONE)
        .unwrap();
    slots
        .create(SlotId(2), Gfn(0x200), 1, mem.clone(), 3 * PAGE, NONE)
        .unwrap();
    let other = mapping(1);
    slots
        .create(SlotId(3), Gfn(0x300), 1, other.clone(), 0, NONE)
        .unwrap();

    let sorted = |mut v: Vec<u16>| {
        v.sort();
        v
    };
    assert_eq!(sorted(ids(&slots.find_by_hva(Hva(base)))), [0, 1]);
    assert_eq!(
        sorted(ids(&slots.find_by_hva(Hva(base + 3 * PAGE_SIZE + 5)))),
        [0, 1, 2]
    );
    assert_eq!(ids(&slots.find_by_hva(Hva(other.as_ptr() as u64 + 7))), [3]);
    assert!(slots.find_by_hva(Hva(base + 4 * PAGE_SIZE)).is_empty());
    assert_eq!(
        sorted(ids(&slots.find_by_hva_range(
            Hva(base + 2 * PAGE_SIZE)..Hva(base + 3 * PAGE_SIZE)
        ))),
        [0, 1]
    );
    assert!(slots.find_by_hva_range(Hva(base)..Hva(base)).is_empty());

    // A write through one alias is read through the other.
    slots.write_u64(Gpa(0x3008), 0x1122_3344_5566_7788).unwrap();
    assert_eq!(
        slots.read_u64(Gpa(0x103_008)).unwrap(),
        0x1122_3344_5566_7788
    );
    assert_eq!(
        slots.read_u64(Gpa(0x200_008)).unwrap(),
        0x1122_3344_5566_7788
    );

    slots.delete(SlotId(1)).unwrap();
    assert_eq!(
        sorted(ids(&slots.find_by_hva(Hva(base + 3 * PAGE_SIZE)))),
        [0, 2]
    );
}

#[test]
fn read_and_write_cross_pages_and_slots() {
    let slots = Memslots::new();
    // Two slots back to back in guest physical memory, on unrelated host memory.
    slots
        .create(SlotId(0), Gfn(0), 2, mapping(2), 0, NONE)
        .unwrap();
    slots
        .create(SlotId(1), Gfn(2), 2, mapping(2), 0, NONE)
        .unwrap();
    let data: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i * 7 % 251) as u8).collect();
    slots.write(Gpa(50), &data).unwrap();
    let mut back = vec![0; data.len()];
    slots.read(Gpa(50), &mut back).unwrap();
    assert_eq!(back, data);
    let mut one = [0; 1];
    slots.read(Gpa(2 * PAGE_SIZE), &mut one).unwrap();
    assert_eq!(one[0], data[2 * PAGE - 50]);

    // A u64 straddling the two slots, and aligned ones.
    slots
        .write_u64(Gpa(2 * PAGE_SIZE - 3), u64::MAX - 1)
        .unwrap();
    assert_eq!(
        slots.read_u64(Gpa(2 * PAGE_SIZE - 3)).unwrap(),
        u64::MAX - 1
    );
    slots.write_u64(Gpa(0x1ff8), 42).unwrap();
    assert_eq!(slots.read_u64(Gpa(0x1ff8)).unwrap(), 42);

    // Running off the end of guest memory.
    let mut long = vec![0; 2 * PAGE];
    assert!(matches!(
        slots.read(Gpa(3 * PAGE_SIZE), &mut long),
        Err(MemslotError::Unmapped(Gpa(0x4000)))
    ));
    let before = slots.read_u64(Gpa(3 * PAGE_SIZE)).unwrap();
    assert_ne!(before, 0);
    assert!(matches!(
        slots.write(Gpa(3 * PAGE_SIZE), &long),
        Err(MemslotError::Unmapped(_))
    ));
    assert_eq!(
        slots.read_u64(Gpa(3 * PAGE_SIZE)).unwrap(),
        before,
        "nothing written"
    );
    assert!(matches!(
        slots.read_u64(Gpa(u64::MAX - 3)),
        Err(MemslotError::Unmapped(_))
    ));
    slots.read(Gpa(0x9999_0000), &mut []).unwrap();
}

#[test]
fn readonly_slots_refuse_writes_whole() {
    let slots = Memslots::new();
    slots
        .create(SlotId(0), Gfn(0), 1, mapping(1), 0, NONE)
        .unwrap();
    slots
        .create(SlotId(1), Gfn(1), 1, mapping(1), 0, MemslotFlags::READONLY)
        .unwrap();
    assert!(matches!(
        slots.write(Gpa(PAGE_SIZE - 4), &[1; 8]),
        Err(MemslotError::ReadOnly(Gpa(0x1000)))
    ));
    assert_eq!(
        slots.read_u64(Gpa(PAGE_SIZE - 8)).unwrap(),
        0,
        "nothing written"
    );
    assert!(matches!(
        slots.write_u64(Gpa(PAGE_SIZE), 1),
        Err(MemslotError::ReadOnly(_))
    ));
    assert_eq!(slots.read_u64(Gpa(PAGE_SIZE)).unwrap(), 0);
}

#[test]
fn dirty_log_marks_gets_and_clears() {
    let slots = Memslots::new();
    let log = MemslotFlags::LOG_DIRTY;
    slots
        .create(SlotId(0), Gfn(0x100), 130, mapping(130), 0, log)
        .unwrap();
    slots
        .create(SlotId(1), Gfn(0), 1, mapping(1), 0, NONE)
        .unwrap();

    assert_eq!(slots.dirty_bitmap(SlotId(0)).unwrap(), [0, 0, 0]);
    slots.write(Gpa(0x100_ff0), &[1; 0x20]).unwrap(); // pages 0 and 1
    slots.write_u64(Gpa(0x140_000), 1).unwrap(); // page 64
    slots.get(SlotId(0)).unwrap().mark_dirty(Gfn(0x181)); // page 129
    slots.get(SlotId(0)).unwrap().mark_dirty(Gfn(0x182)); // not in the slot
    assert_eq!(slots.dirty_bitmap(SlotId(0)).unwrap(), [0b11, 1, 0b10]);

    // Clear exactly the given bits.
    slots.clear_dirty_log(SlotId(0), 0, &[0b10, 0b1]).unwrap();
    assert_eq!(slots.dirty_bitmap(SlotId(0)).unwrap(), [0b01, 0, 0b10]);
    slots.clear_dirty_log(SlotId(0), 128, &[0b110]).unwrap();
    assert_eq!(slots.dirty_bitmap(SlotId(0)).unwrap(), [0b01, 0, 0]);

    // Get and clear; the move keeps the bitmap.
    slots.write(Gpa(0x101_000), &[2]).unwrap();
    slots.move_slot(SlotId(0), Gfn(0x1000)).unwrap();
    slots.write(Gpa(0x0100_2000), &[2]).unwrap();
    assert_eq!(slots.get_dirty_log(SlotId(0)).unwrap(), [0b111, 0, 0]);
    assert_eq!(slots.get_dirty_log(SlotId(0)).unwrap(), [0, 0, 0]);

    // Logging off drops the bitmap; on again starts clean.
    slots.set_flags(SlotId(0), NONE).unwrap();
    assert!(matches!(
        slots.get_dirty_log(SlotId(0)),
        Err(MemslotError::DirtyLogDisabled(SlotId(0)))
    ));
    slots.write(Gpa(0x0100_0000), &[3]).unwrap();
    slots.set_flags(SlotId(0), log).unwrap();
    assert_eq!(slots.dirty_bitmap(SlotId(0)).unwrap(), [0, 0, 0]);

    // Errors.
    assert!(matches!(
        slots.dirty_bitmap(SlotId(1)),
        Err(MemslotError::DirtyLogDisabled(_))
    ));
    assert!(matches!(
        slots.dirty_bitmap(SlotId(5)),
        Err(MemslotError::UnknownId(_))
    ));
    for (first_page, words) in [(1, 1), (64, 3), (192, 1), (u64::MAX - 63, 2)] {
        assert!(
            matches!(
                slots.clear_dirty_log(SlotId(0), first_page, &vec![1; words]),
                Err(MemslotError::DirtyLogRange { id: SlotId(0), .. })
            ),
            "{first_page} {words}"
        );
    }
    slots.clear_dirty_log(SlotId(0), 192, &[]).unwrap();
}

/// Records changes, and refuses the ones to a given slot.
#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    refuse: Option<SlotId>,
}

impl MemslotObserver for Recorder {
    fn commit(
        &self,
        change: &SlotChange<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let slot = change.new_slot().or(change.old_slot()).unwrap();
        if Some(slot.id()) == self.refuse {
            return Err("refused".into());
        }
        let line = match change {
            SlotChange::Create(new) => format!("create {} at {:?}", new.id(), new.base_gfn()),
            SlotChange::Delete(old) => format!("delete {}", old.id()),
            SlotChange::Move { old, new } => format!(
                "move {} {:?}->{:?}",
                old.id(),
                old.base_gfn(),
                new.base_gfn()
            ),
            SlotChange::FlagsChanged { old, new } => {
                format!("flags {} {:?}->{:?}", old.id(), old.flags(), new.flags())
            }
        };
        self.log.lock().unwrap().push(line);
        Ok(())
    }
}

#[test]
fn observer_sees_every_change_and_can_refuse_one() {
    let slots = Memslots::new();
    let mem = mapping(4);
    slots
        .create(SlotId(1), Gfn(0), 1, mem.clone(), 0, NONE)
        .unwrap();
    let recorder = Recorder::default();
    slots.set_observer(Box::new(recorder.clone())).unwrap();
    slots
        .create(SlotId(2), Gfn(8), 1, mem.clone(), 0, NONE)
        .unwrap();
    slots.move_slot(SlotId(2), Gfn(9)).unwrap();
    slots.set_flags(SlotId(2), MemslotFlags::LOG_DIRTY).unwrap();
    slots.delete(SlotId(1)).unwrap();
    assert_eq!(
        *recorder.log.lock().unwrap(),
        [
            "create 1 at Gfn(0x0)",
            "create 2 at Gfn(0x8)",
            "move 2 Gfn(0x8)->Gfn(0x9)",
            "flags 2 MemslotFlags(0x0)->MemslotFlags(LOG_DIRTY)",
            "delete 1",
        ]
    );

    // A refused change leaves everything as it was.
    let refusing = Recorder {
        refuse: Some(SlotId(2)),
        ..Recorder::default()
    };
    slots
        .set_observer(Box::new(refusing.clone()))
        .err()
        .unwrap();
    slots
        .set_observer(Box::new(Recorder {
            refuse: Some(SlotId(3)),
            ..refusing.clone()
        }))
        .unwrap();
    let generation = slots.generation();
    assert!(matches!(
        slots.create(SlotId(3), Gfn(0x50), 1, mem.clone(), 0, NONE),
        Err(MemslotError::Observer(_))
    ));
    slots.create(SlotId(4), Gfn(0x50), 1, mem, 0, NONE).unwrap();
    assert!(slots.get(SlotId(3)).is_none());
    assert_eq!(slots.generation(), generation + 1);
    assert_eq!(ids(&slots.slots()), [2, 4]);
}

#[test]
fn slot_cache_answers_until_the_generation_changes() {
    let slots = Memslots::new();
    let mem = mapping(4);
    slots
        .create(SlotId(1), Gfn(0x10), 4, mem.clone(), 0, NONE)
        .unwrap();
    slots.create(SlotId(2), Gfn(0x20), 1, mem, 0, NONE).unwrap();
    let mut cache = SlotCache::new();
    assert!(slots.find_by_gfn_cached(&mut cache, Gfn(0)).is_none());
    assert_eq!(
        slots
            .find_by_gfn_cached(&mut cache, Gfn(0x11))
            .unwrap()
            .id(),
        SlotId(1)
    );
    assert_eq!(
        slots
            .find_by_gfn_cached(&mut cache, Gfn(0x13))
            .unwrap()
            .id(),
        SlotId(1)
    );
    assert_eq!(
        slots
            .find_by_gfn_cached(&mut cache, Gfn(0x20))
            .unwrap()
            .id(),
        SlotId(2)
    );
    assert_eq!(
        slots
            .find_by_gfn_cached(&mut cache, Gfn(0x12))
            .unwrap()
            .id(),
        SlotId(1)
    );
    slots.move_slot(SlotId(1), Gfn(0x40)).unwrap();
    assert!(slots.find_by_gfn_cached(&mut cache, Gfn(0x12)).is_none());
    let moved = slots.find_by_gfn_cached(&mut cache, Gfn(0x42)).unwrap();
    assert_eq!(moved.base_gfn(), Gfn(0x40));
    slots.delete(SlotId(1)).unwrap();
    assert!(slots.find_by_gfn_cached(&mut cache, Gfn(0x42)).is_none());
}
