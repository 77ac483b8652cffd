//! Readers looking up without pause while a writer creates, moves, re-flags and deletes slots:
//! every answer must come from one whole slot set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use umbra_mmu::addr::{Gfn, Gpa, Hva};
use umbra_mmu::memslot::{HostMapping, MemslotError, MemslotFlags, Memslots, SlotCache, SlotId};

/// The slot that always exists, moving between two places.
const MOVER: SlotId = SlotId(0);
const MOVER_PAGES: u64 = 4;
const PLACES: [u64; 2] = [0x100, 0x200];
const MOVER_TAG: u64 = 0xfeed;

/// Slots that come and go, each always at its own place and with its own tag.
const TRANSIENTS: u16 = 8;

fn transient_gfn(id: u16) -> u64 {
    0x1000 + 0x10 * u64::from(id)
}

fn tagged_mapping(tag: u64, pages: u64) -> Arc<HostMapping> {
    let mapping = HostMapping::anonymous((pages * 4096) as usize).unwrap();
    for page in 0..pages {
        // SAFETY: the mapping is `pages` pages long, page-aligned, and not shared yet.
        unsafe {
            mapping
                .as_ptr()
                .add((page * 4096) as usize)
                .cast::<u64>()
                .write(tag)
        };
    }
    mapping
}

/// Checks one snapshot of every slot: sorted, disjoint, the mover there exactly once and in one
/// of its places, every transient slot at its own place.
fn check_slots(slots: &Memslots) {
    let all = slots.slots();
    let movers: Vec<_> = all.iter().filter(|s| s.id() == MOVER).collect();
    assert_eq!(movers.len(), 1, "the mover is always there exactly once");
    assert!(PLACES.contains(&movers[0].base_gfn().0));
    for pair in all.windows(2) {
        assert!(
            pair[0].end_gfn() <= pair[1].base_gfn(),
            "sorted and disjoint"
        );
    }
    for slot in all.iter().filter(|s| s.id() != MOVER) {
        assert_eq!(slot.base_gfn().0, transient_gfn(slot.id().0));
    }
}

fn reader(slots: &Memslots, stop: &AtomicBool, mover_hva: u64) -> u64 {
    let mut cache = SlotCache::new();
    let mut generation = 0;
    let mut rounds = 0;
    while rounds == 0 || !stop.load(Ordering::Relaxed) {
        let now = slots.generation();
        assert!(now >= generation, "generations only grow");
        generation = now;

        check_slots(slots);

        // The mover is in every set, so its host address always finds it, once.
        let by_hva = slots.find_by_hva(Hva(mover_hva + 4096));
        assert_eq!(by_hva.len(), 1);
        assert_eq!(by_hva[0].id(), MOVER);

        for (i, &place) in PLACES.iter().enumerate() {
            let gfn = Gfn(place + rounds % MOVER_PAGES);
            for found in [
                slots.find_by_gfn(gfn),
                slots.find_by_gfn_cached(&mut cache, gfn).cloned(),
            ]
            .into_iter()
            .flatten()
            {
                assert_eq!(
                    (found.id(), found.base_gfn().0),
                    (MOVER, place),
                    "place {i}"
                );
            }
            match slots.read_u64(gfn.gpa()) {
                Ok(tag) => assert_eq!(tag, MOVER_TAG),
                Err(MemslotError::Unmapped(_)) => {}
                Err(e) => panic!("{e}"),
            }
            // Writes race with the writer switching dirty logging on and off.
            match slots.write_u64(Gpa(gfn.gpa().0 + 8), rounds) {
                Ok(()) | Err(MemslotError::Unmapped(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }

        let id = (rounds % u64::from(TRANSIENTS)) as u16 + 1;
        match slots.read_u64(Gfn(transient_gfn(id)).gpa()) {
            Ok(tag) => assert_eq!(tag, u64::from(id)),
            Err(MemslotError::Unmapped(_)) => {}
            Err(e) => panic!("{e}"),
        }
        rounds += 1;
    }
    rounds
}

#[test]
fn readers_only_ever_see_whole_slot_sets() {
    let slots = Arc::new(Memslots::new());
    let mover = tagged_mapping(MOVER_TAG, MOVER_PAGES);
    let mover_hva = mover.as_ptr() as u64;
    slots
        .create(
            MOVER,
            Gfn(PLACES[0]),
            MOVER_PAGES,
            mover,
            0,
            MemslotFlags::empty(),
        )
        .unwrap();
    let transients: Vec<_> = (1..=TRANSIENTS)
        .map(|id| tagged_mapping(u64::from(id), 1))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let total_rounds = Arc::new(AtomicU64::new(0));
    // The readers and the writer start together, so that a loaded host cannot let the
    // writer finish before any reader has looked.
    let start = Arc::new(std::sync::Barrier::new(4));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (slots, stop, total) = (slots.clone(), stop.clone(), total_rounds.clone());
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let rounds = reader(&slots, &stop, mover_hva);
                total.fetch_add(rounds, Ordering::Relaxed);
            })
        })
        .collect();

    start.wait();
    let changes = 3000;
    for step in 0..changes {
        let id = (step / 4 % u64::from(TRANSIENTS)) as u16 + 1;
        let slot_id = SlotId(id);
        match step % 4 {
            0 => slots
                .move_slot(MOVER, Gfn(PLACES[(step / 4 % 2) as usize]))
                .map(drop),
            1 if slots.get(slot_id).is_some() => slots.delete(slot_id).map(drop),
            1 => slots
                .create(
                    slot_id,
                    Gfn(transient_gfn(id)),
                    1,
                    transients[usize::from(id) - 1].clone(),
                    0,
                    MemslotFlags::empty(),
                )
                .map(drop),
            2 => slots.set_flags(MOVER, MemslotFlags::LOG_DIRTY).map(drop),
            _ => slots.set_flags(MOVER, MemslotFlags::empty()).map(drop),
        }
        .unwrap();
        check_slots(&slots);
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    assert!(total_rounds.load(Ordering::Relaxed) > 0);
    assert!(slots.generation() >= changes);
}
