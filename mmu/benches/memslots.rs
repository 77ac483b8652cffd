//! Memslots at 10, 100, 509 and 32764 slots, next to the array KVM used before scalable
//! memslots (the "Before" column of KVM's own table): a gfn-sorted array copied whole, with its
//! id-to-index table, on every change, binary-searched by gfn and scanned linearly by host
//! address.
//!
//! Every slot is one page; slot `i` sits at gfn `2 * i` and maps page `i` of one large mapping.
//! Run with `cargo bench -p umbra-mmu --bench memslots`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use umbra_mmu::addr::{Gfn, Hva, PAGE_SIZE};
use umbra_mmu::memslot::{HostMapping, MAX_SLOTS, MemslotFlags, Memslots, SlotCache, SlotId};

const COUNTS: [usize; 4] = [10, 100, 509, MAX_SLOTS];
/// How long each lookup figure is measured for.
const LOOKUP_TIME: Duration = Duration::from_millis(150);
/// How many deletes and moves are timed, at most, and for how long.
const CHANGES: usize = 500;
const CHANGE_TIME: Duration = Duration::from_millis(300);
/// Where moved slots go: above every slot.
const MOVE_GFN: u64 = 1 << 20;

/// What the benchmark does to a memslot implementation.
trait SlotStore {
    type Cache: Default;
    /// What a host address lookup returns.
    type HvaHits;
    fn new() -> Self;
    fn create(&self, id: u16, gfn: u64, mapping: &Arc<HostMapping>, page: usize);
    fn delete(&self, id: u16);
    fn move_slot(&self, id: u16, gfn: u64);
    /// The id of the slot holding `gfn`.
    fn find_by_gfn(&self, gfn: u64) -> Option<u16>;
    fn find_by_gfn_cached(&self, cache: &mut Self::Cache, gfn: u64) -> Option<u16>;
    /// The slots that hold `hva`.
    fn find_by_hva(&self, hva: u64) -> Self::HvaHits;
}

impl SlotStore for Memslots {
    type Cache = SlotCache;
    type HvaHits = Vec<Arc<umbra_mmu::memslot::Memslot>>;

    fn new() -> Self {
        Memslots::new()
    }

    fn create(&self, id: u16, gfn: u64, mapping: &Arc<HostMapping>, page: usize) {
        let offset = page * PAGE_SIZE as usize;
        let flags = MemslotFlags::empty();
        Memslots::create(
            self,
            SlotId(id),
            Gfn(gfn),
            1,
            mapping.clone(),
            offset,
            flags,
        )
        .unwrap();
    }

    fn delete(&self, id: u16) {
        Memslots::delete(self, SlotId(id)).unwrap();
    }

    fn move_slot(&self, id: u16, gfn: u64) {
        Memslots::move_slot(self, SlotId(id), Gfn(gfn)).unwrap();
    }

    fn find_by_gfn(&self, gfn: u64) -> Option<u16> {
        Memslots::with_slot(self, Gfn(gfn), |slot| slot.id().0)
    }

    fn find_by_gfn_cached(&self, cache: &mut SlotCache, gfn: u64) -> Option<u16> {
        Memslots::find_by_gfn_cached(self, cache, Gfn(gfn)).map(|slot| slot.id().0)
    }

    fn find_by_hva(&self, hva: u64) -> Self::HvaHits {
        Memslots::find_by_hva(self, Hva(hva))
    }
}

/// KVM's memslot before scalable memslots: plain data, copied with the array.
#[derive(Clone, Copy)]
struct ArraySlot {
    id: u16,
    base_gfn: u64,
    npages: u64,
    userspace_addr: u64,
    /// What else KVM's slot held (flags, dirty bitmap pointer, arch data): never read here,
    /// but every copy of the array moves it, as KVM's did.
    _rest: [u64; 5],
}

/// KVM's `struct kvm_memslots` before scalable memslots.
#[derive(Clone)]
struct ArraySet {
    generation: u64,
    /// Index in `slots` of each id; `u16::MAX` for none. Fixed size, as in KVM.
    id_to_index: Vec<u16>,
    /// Sorted by base gfn.
    slots: Vec<ArraySlot>,
}

impl ArraySet {
    fn find(&self, gfn: u64) -> Option<usize> {
        let index = self
            .slots
            .partition_point(|s| s.base_gfn <= gfn)
            .checked_sub(1)?;
        (gfn - self.slots[index].base_gfn < self.slots[index].npages).then_some(index)
    }

    fn reindex(&mut self) {
        self.id_to_index.fill(u16::MAX);
        for (index, slot) in self.slots.iter().enumerate() {
            self.id_to_index[usize::from(slot.id)] = index as u16;
        }
    }
}

/// The old scheme: every change copies the whole set, edits the copy, and publishes it.
struct ArrayMemslots {
    active: ArcSwap<ArraySet>,
    writer: Mutex<()>,
}

impl ArrayMemslots {
    fn change(&self, edit: impl FnOnce(&mut ArraySet)) {
        let _writer = self.writer.lock();
        let mut copy = ArraySet::clone(&self.active.load());
        edit(&mut copy);
        copy.generation += 1;
        copy.reindex();
        drop(self.active.swap(Arc::new(copy)));
    }
}

/// The last slot found and the generation it was found at.
#[derive(Default)]
struct ArrayCache {
    generation: u64,
    index: Option<usize>,
}

impl SlotStore for ArrayMemslots {
    type Cache = ArrayCache;
    type HvaHits = Vec<ArraySlot>;

    fn new() -> Self {
        Self {
            active: ArcSwap::from_pointee(ArraySet {
                generation: 0,
                id_to_index: vec![u16::MAX; 1 << 15],
                slots: Vec::new(),
            }),
            writer: Mutex::new(()),
        }
    }

    fn create(&self, id: u16, gfn: u64, mapping: &Arc<HostMapping>, page: usize) {
        let slot = ArraySlot {
            id,
            base_gfn: gfn,
            npages: 1,
            userspace_addr: mapping.as_ptr() as u64 + (page as u64) * PAGE_SIZE,
            _rest: [0; 5],
        };
        self.change(|set| {
            let at = set.slots.partition_point(|s| s.base_gfn < gfn);
            set.slots.insert(at, slot);
        });
    }

    fn delete(&self, id: u16) {
        self.change(|set| {
            let index = set.id_to_index[usize::from(id)];
            set.slots.remove(usize::from(index));
        });
    }

    fn move_slot(&self, id: u16, gfn: u64) {
        self.change(|set| {
            let mut slot = set
                .slots
                .remove(usize::from(set.id_to_index[usize::from(id)]));
            slot.base_gfn = gfn;
            let at = set.slots.partition_point(|s| s.base_gfn < gfn);
            set.slots.insert(at, slot);
        });
    }

    fn find_by_gfn(&self, gfn: u64) -> Option<u16> {
        let set = self.active.load();
        set.find(gfn).map(|index| set.slots[index].id)
    }

    fn find_by_gfn_cached(&self, cache: &mut ArrayCache, gfn: u64) -> Option<u16> {
        let set = self.active.load();
        if cache.generation == set.generation
            && let Some(index) = cache.index
            && gfn.wrapping_sub(set.slots[index].base_gfn) < set.slots[index].npages
        {
            return Some(set.slots[index].id);
        }
        let index = set.find(gfn)?;
        *cache = ArrayCache {
            generation: set.generation,
            index: Some(index),
        };
        Some(set.slots[index].id)
    }

    fn find_by_hva(&self, hva: u64) -> Self::HvaHits {
        let set = self.active.load();
        set.slots
            .iter()
            .filter(|s| s.userspace_addr <= hva && hva - s.userspace_addr < s.npages * PAGE_SIZE)
            .copied()
            .collect()
    }
}

/// xorshift64*: reproducible and cheap.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % n
    }
}

/// Nanoseconds per call of `op`, run in batches until `LOOKUP_TIME` has passed.
fn ns_per_op(mut op: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed() < LOOKUP_TIME {
        for _ in 0..1024 {
            op(calls);
            calls += 1;
        }
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// The figures of one implementation at one slot count.
struct Figures {
    setup: f64,
    gfn: f64,
    gfn_cached: f64,
    gfn_cache_hit: f64,
    hva: f64,
    delete: f64,
    move_one: f64,
}

fn measure<S: SlotStore>(count: usize, mapping: &Arc<HostMapping>) -> Figures {
    let slots = S::new();
    let start = Instant::now();
    for i in 0..count {
        slots.create(i as u16, 2 * i as u64, mapping, i);
    }
    let setup = start.elapsed().as_secs_f64();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let picks: Vec<usize> = (0..1 << 16).map(|_| rng.below(count)).collect();
    let pick = |i: usize| picks[i % picks.len()];
    let base = mapping.as_ptr() as u64;

    let gfn = ns_per_op(|i| {
        black_box(slots.find_by_gfn(black_box(2 * pick(i) as u64)));
    });
    let mut cache = S::Cache::default();
    let gfn_cached = ns_per_op(|i| {
        black_box(slots.find_by_gfn_cached(&mut cache, black_box(2 * pick(i) as u64)));
    });
    let hit = 2 * pick(0) as u64;
    let gfn_cache_hit = ns_per_op(|_| {
        black_box(slots.find_by_gfn_cached(&mut cache, black_box(hit)));
    });
    let hva = ns_per_op(|i| {
        let hva = base + pick(i) as u64 * PAGE_SIZE + (i as u64 * 8) % PAGE_SIZE;
        black_box(slots.find_by_hva(black_box(hva)));
    });

    // Delete a slot (timed), then put it back (not timed).
    let mut deleted = Duration::ZERO;
    let mut deletes = 0;
    while deletes < CHANGES && deleted < CHANGE_TIME {
        let i = pick(deletes);
        let start = Instant::now();
        slots.delete(i as u16);
        deleted += start.elapsed();
        deletes += 1;
        slots.create(i as u16, 2 * i as u64, mapping, i);
    }

    // Move a slot above all others and back: two timed moves.
    let mut moved = Duration::ZERO;
    let mut moves = 0;
    while moves < CHANGES && moved < CHANGE_TIME {
        let i = pick(moves);
        let start = Instant::now();
        slots.move_slot(i as u16, MOVE_GFN);
        slots.move_slot(i as u16, 2 * i as u64);
        moved += start.elapsed();
        moves += 2;
    }

    Figures {
        setup,
        gfn,
        gfn_cached,
        gfn_cache_hit,
        hva,
        delete: deleted.as_secs_f64() / deletes as f64,
        move_one: moved.as_secs_f64() / moves as f64,
    }
}

/// A line of the table: its name, the figure, and how to print it.
type Row = (&'static str, fn(&Figures) -> f64, fn(f64) -> String);

fn seconds(s: f64) -> String {
    if s >= 0.1 {
        format!("{s:.3}s")
    } else {
        format!("{s:.3e}s")
    }
}

fn nanos(ns: f64) -> String {
    format!("{ns:.1}ns")
}

fn main() {
    let mapping = HostMapping::anonymous(MAX_SLOTS * PAGE_SIZE as usize).unwrap();
    let mut lookup_10 = 0.0;
    let mut lookup_max = 0.0;
    let mut setup_max = 0.0;
    for count in COUNTS {
        let before = measure::<ArrayMemslots>(count, &mapping);
        let after = measure::<Memslots>(count, &mapping);
        println!("{count} slots in use:");
        println!(
            "{:<30}{:>14}{:>14}{:>10}",
            "Test", "Before", "After", "Ratio"
        );
        let rows: [Row; 7] = [
            ("Slot setup (all creates)", |f| f.setup, seconds),
            ("gfn lookup", |f| f.gfn, nanos),
            ("gfn lookup, SlotCache", |f| f.gfn_cached, nanos),
            ("gfn lookup, SlotCache hit", |f| f.gfn_cache_hit, nanos),
            ("hva lookup", |f| f.hva, nanos),
            ("Delete one", |f| f.delete, seconds),
            ("Move one", |f| f.move_one, seconds),
        ];
        for (name, figure, unit) in rows {
            let (b, a) = (figure(&before), figure(&after));
            println!("{name:<30}{:>14}{:>14}{:>9.2}x", unit(b), unit(a), b / a);
        }
        println!();
        if count == COUNTS[0] {
            lookup_10 = after.gfn;
        }
        lookup_max = after.gfn;
        setup_max = after.setup;
    }
    println!(
        "Goals at {MAX_SLOTS} slots: setup {} (goal well under 0.59s), gfn lookup {:.2}x its \
         cost at {} slots (goal at most 2x)",
        seconds(setup_max),
        lookup_max / lookup_10,
        COUNTS[0],
    );
}
