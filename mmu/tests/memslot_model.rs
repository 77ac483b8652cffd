//! Memslots against a naive model: a list of slots scanned linearly.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use umbra_mmu::addr::{Gfn, Gpa, Hva, PAGE_SIZE};
use umbra_mmu::memslot::{HostMapping, MemslotError, MemslotFlags, Memslots, SlotId};

const MAPPING_PAGES: u64 = 16;
const GFN_LIMIT: u64 = 1 << 40;

#[derive(Clone, Debug)]
enum Op {
    Create {
        id: u16,
        base: u64,
        npages: u64,
        mapping: usize,
        offset: usize,
        flags: MemslotFlags,
    },
    Delete(u16),
    Move(u16, u64),
    SetFlags(u16, MemslotFlags),
    Write(u64),
    GetDirtyLog(u16),
    FindGfn(u64),
    FindHva {
        mapping: usize,
        byte: u64,
    },
    Get(u16),
}

fn id() -> impl Strategy<Value = u16> {
    0..6u16
}

fn base() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0..48u64, 1 => Just(GFN_LIMIT - 2)]
}

fn flags() -> impl Strategy<Value = MemslotFlags> {
    (0..4u32).prop_map(MemslotFlags::from_bits_truncate)
}

fn op() -> impl Strategy<Value = Op> {
    let offset = (0..=MAPPING_PAGES as usize, prop::bool::weighted(0.05))
        .prop_map(|(page, odd)| page * PAGE_SIZE as usize + usize::from(odd));
    prop_oneof![
        4 => (id(), base(), 0..6u64, 0..2usize, offset, flags()).prop_map(
            |(id, base, npages, mapping, offset, flags)| Op::Create {
                id,
                base,
                npages,
                mapping,
                offset,
                flags,
            }
        ),
        1 => id().prop_map(Op::Delete),
        2 => (id(), base()).prop_map(|(id, base)| Op::Move(id, base)),
        1 => (id(), flags()).prop_map(|(id, flags)| Op::SetFlags(id, flags)),
        2 => (0..56u64).prop_map(Op::Write),
        1 => id().prop_map(Op::GetDirtyLog),
        2 => (0..56u64).prop_map(Op::FindGfn),
        2 => (0..2usize, 0..MAPPING_PAGES * PAGE_SIZE + 8)
            .prop_map(|(mapping, byte)| Op::FindHva { mapping, byte }),
        1 => id().prop_map(Op::Get),
    ]
}

#[derive(Clone, Debug)]
struct ModelSlot {
    id: u16,
    base: u64,
    npages: u64,
    hva: u64,
    flags: MemslotFlags,
    /// Dirty pages, when logging.
    dirty: Option<BTreeSet<u64>>,
}

impl ModelSlot {
    fn end(&self) -> u64 {
        self.base + self.npages
    }
}

/// The slots as a plain list; every question is a linear scan.
#[derive(Default)]
struct Model {
    slots: Vec<ModelSlot>,
    generation: u64,
}

impl Model {
    fn index(&self, id: u16) -> Result<usize, MemslotError> {
        self.slots
            .iter()
            .position(|s| s.id == id)
            .ok_or(MemslotError::UnknownId(SlotId(id)))
    }

    /// The overlapping slot other than `id` with the greatest base, as the tree reports it.
    fn overlap(&self, id: u16, base: u64, npages: u64) -> Result<(), MemslotError> {
        match self
            .slots
            .iter()
            .filter(|s| s.id != id && s.base < base + npages && base < s.end())
            .max_by_key(|s| s.base)
        {
            Some(other) => Err(MemslotError::Overlap {
                id: SlotId(id),
                other: SlotId(other.id),
            }),
            None => Ok(()),
        }
    }

    fn find(&self, gfn: u64) -> Option<&ModelSlot> {
        self.slots.iter().find(|s| s.base <= gfn && gfn < s.end())
    }

    fn create(&mut self, op: &Op, hva_base: [u64; 2]) -> Result<(), MemslotError> {
        let &Op::Create {
            id,
            base,
            npages,
            mapping,
            offset,
            flags,
        } = op
        else {
            unreachable!()
        };
        let slot_id = SlotId(id);
        if npages == 0 {
            return Err(MemslotError::ZeroSize(slot_id));
        }
        if !offset.is_multiple_of(PAGE_SIZE as usize) {
            return Err(MemslotError::UnalignedOffset {
                id: slot_id,
                offset,
            });
        }
        if offset as u64 + npages * PAGE_SIZE > MAPPING_PAGES * PAGE_SIZE {
            return Err(MemslotError::PastMappingEnd {
                id: slot_id,
                mapping_len: (MAPPING_PAGES * PAGE_SIZE) as usize,
            });
        }
        if base + npages > GFN_LIMIT {
            return Err(MemslotError::GfnOverflow(slot_id));
        }
        if self.index(id).is_ok() {
            return Err(MemslotError::DuplicateId(slot_id));
        }
        self.overlap(id, base, npages)?;
        self.slots.push(ModelSlot {
            id,
            base,
            npages,
            hva: hva_base[mapping] + offset as u64,
            flags,
            dirty: flags.contains(MemslotFlags::LOG_DIRTY).then(BTreeSet::new),
        });
        self.generation += 1;
        Ok(())
    }

    fn delete(&mut self, id: u16) -> Result<(), MemslotError> {
        let index = self.index(id)?;
        self.slots.remove(index);
        self.generation += 1;
        Ok(())
    }

    fn move_slot(&mut self, id: u16, base: u64) -> Result<(), MemslotError> {
        let index = self.index(id)?;
        let npages = self.slots[index].npages;
        if self.slots[index].base == base {
            return Ok(());
        }
        if base + npages > GFN_LIMIT {
            return Err(MemslotError::GfnOverflow(SlotId(id)));
        }
        self.overlap(id, base, npages)?;
        self.slots[index].base = base;
        self.generation += 1;
        Ok(())
    }

    fn set_flags(&mut self, id: u16, flags: MemslotFlags) -> Result<(), MemslotError> {
        let index = self.index(id)?;
        let slot = &mut self.slots[index];
        if slot.flags == flags {
            return Ok(());
        }
        if (slot.flags ^ flags).contains(MemslotFlags::READONLY) {
            return Err(MemslotError::ReadOnlyToggle(SlotId(id)));
        }
        slot.flags = flags;
        if !flags.contains(MemslotFlags::LOG_DIRTY) {
            slot.dirty = None;
        } else if slot.dirty.is_none() {
            slot.dirty = Some(BTreeSet::new());
        }
        self.generation += 1;
        Ok(())
    }

    fn write(&mut self, gfn: u64) -> Result<(), MemslotError> {
        let gpa = Gfn(gfn).gpa();
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.base <= gfn && gfn < s.end())
            .ok_or(MemslotError::Unmapped(gpa))?;
        if slot.flags.contains(MemslotFlags::READONLY) {
            return Err(MemslotError::ReadOnly(gpa));
        }
        if let Some(dirty) = &mut slot.dirty {
            dirty.insert(gfn - slot.base);
        }
        Ok(())
    }

    fn get_dirty_log(&mut self, id: u16) -> Result<Vec<u64>, MemslotError> {
        let index = self.index(id)?;
        let slot = &mut self.slots[index];
        let dirty = slot
            .dirty
            .as_mut()
            .ok_or(MemslotError::DirtyLogDisabled(SlotId(id)))?;
        let mut words = vec![0u64; slot.npages.div_ceil(64) as usize];
        for page in std::mem::take(dirty) {
            words[(page / 64) as usize] |= 1 << (page % 64);
        }
        Ok(words)
    }
}

/// Compares results by their messages, which carry every field.
fn same<T: PartialEq + std::fmt::Debug>(
    got: Result<T, MemslotError>,
    want: Result<T, MemslotError>,
    op: &Op,
) -> Result<(), TestCaseError> {
    match (got, want) {
        (Ok(got), Ok(want)) => prop_assert_eq!(got, want, "{:?}", op),
        (Err(got), Err(want)) => prop_assert_eq!(got.to_string(), want.to_string(), "{:?}", op),
        (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", op, got, want),
    }
    Ok(())
}

fn ids<'a>(slots: impl IntoIterator<Item = &'a Arc<umbra_mmu::memslot::Memslot>>) -> Vec<u16> {
    let mut ids: Vec<u16> = slots.into_iter().map(|s| s.id().0).collect();
    ids.sort();
    ids
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn memslots_behave_like_the_naive_model(ops in prop::collection::vec(op(), 1..60)) {
        let mappings = [0, 1].map(|_| HostMapping::anonymous((MAPPING_PAGES * PAGE_SIZE) as usize).unwrap());
        let hva_base = [0, 1].map(|i| mappings[i].as_ptr() as u64);
        let slots = Memslots::new();
        let mut model = Model::default();
        for op in &ops {
            match *op {
                Op::Create { id, base, npages, mapping, offset, flags } => {
                    let got = slots
                        .create(SlotId(id), Gfn(base), npages, mappings[mapping].clone(), offset, flags)
                        .map(|_| ());
                    same(got, model.create(op, hva_base), op)?;
                }
                Op::Delete(id) => same(slots.delete(SlotId(id)).map(|_| ()), model.delete(id), op)?,
                Op::Move(id, base) => same(
                    slots.move_slot(SlotId(id), Gfn(base)).map(|s| s.base_gfn().0),
                    model.move_slot(id, base).map(|()| base),
                    op,
                )?,
                Op::SetFlags(id, flags) => same(
                    slots.set_flags(SlotId(id), flags).map(|s| s.flags()),
                    model.set_flags(id, flags).map(|()| flags),
                    op,
                )?,
                Op::Write(gfn) => same(slots.write_u64(Gfn(gfn).gpa(), gfn), model.write(gfn), op)?,
                Op::GetDirtyLog(id) => same(slots.get_dirty_log(SlotId(id)), model.get_dirty_log(id), op)?,
                Op::FindGfn(gfn) => {
                    let got = slots.find_by_gfn(Gfn(gfn)).map(|s| s.id().0);
                    prop_assert_eq!(got, model.find(gfn).map(|s| s.id), "{:?}", op);
                }
                Op::FindHva { mapping, byte } => {
                    let hva = hva_base[mapping] + byte;
                    let want: Vec<u16> = {
                        let mut ids: Vec<u16> = model
                            .slots
                            .iter()
                            .filter(|s| s.hva <= hva && hva < s.hva + s.npages * PAGE_SIZE)
                            .map(|s| s.id)
                            .collect();
                        ids.sort();
                        ids
                    };
                    prop_assert_eq!(ids(&slots.find_by_hva(Hva(hva))), want, "{:?}", op);
                }
                Op::Get(id) => {
                    let got = slots.get(SlotId(id)).map(|s| (s.base_gfn().0, s.npages(), s.flags(), s.userspace_addr()));
                    let want = model.index(id).ok().map(|i| {
                        let s = &model.slots[i];
                        (s.base, s.npages, s.flags, s.hva)
                    });
                    prop_assert_eq!(got, want, "{:?}", op);
                }
            }
            // After every step: same slots in the same gfn order, same count and generation,
            // and the data a write left is readable where the model says it is.
            let mut by_gfn: Vec<&ModelSlot> = model.slots.iter().collect();
            by_gfn.sort_by_key(|s| s.base);
            let order: Vec<u16> = slots.slots().iter().map(|s| s.id().0).collect();
            prop_assert_eq!(order, by_gfn.iter().map(|s| s.id).collect::<Vec<_>>());
            prop_assert_eq!(slots.len(), model.slots.len());
            prop_assert_eq!(slots.generation(), model.generation);
            if let Op::Write(gfn) = *op && model.find(gfn).is_some_and(|s| !s.flags.contains(MemslotFlags::READONLY)) {
                prop_assert_eq!(slots.read_u64(Gpa(gfn * PAGE_SIZE)).unwrap(), gfn);
            }
        }
    }
}
