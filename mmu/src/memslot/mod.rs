//! Guest physical memory as a set of slots, after Linux KVM's scalable memslots.
//!
//! A [`Memslot`] maps `npages` guest frames, starting at its base gfn, onto a page-aligned range
//! of a [`HostMapping`]. Slots never overlap in guest physical space, but they may overlap in host
//! space: several slots can alias the same host pages, as KVM allows. [`Memslots`] is the VM-wide
//! collection; every vCPU thread shares it through an `Arc`.
//!
//! ```
//! use umbra_mmu::addr::{Gfn, Gpa, Hva};
//! use umbra_mmu::memslot::{HostMapping, MemslotFlags, Memslots, SlotCache, SlotId};
//!
//! # fn main() -> Result<(), umbra_mmu::memslot::MemslotError> {
//! let memslots = Memslots::new();
//! let ram = HostMapping::anonymous(640 << 10)?;
//! // 640 KiB of RAM at guest physical 0, and its first 64 KiB seen again, read-only, at 0xf0000.
//! memslots.create(SlotId(0), Gfn(0), 160, ram.clone(), 0, MemslotFlags::LOG_DIRTY)?;
//! memslots.create(SlotId(1), Gfn(0xf0), 16, ram.clone(), 0, MemslotFlags::READONLY)?;
//!
//! memslots.write(Gpa(0x1ffe), b"spans two pages")?;
//! let mut bytes = [0; 15];
//! memslots.read(Gpa(0x1ffe), &mut bytes)?;
//! assert_eq!(&bytes, b"spans two pages");
//! assert_eq!(memslots.read_u64(Gpa(0xf1ffe))?, memslots.read_u64(Gpa(0x1ffe))?);
//! assert!(memslots.write(Gpa(0xf0000), &[1]).is_err());
//!
//! // Pages 1 and 2 of slot 0 were written.
//! assert_eq!(memslots.get_dirty_log(SlotId(0))?[0], 0b110);
//!
//! // Both slots map the same host byte.
//! assert_eq!(memslots.find_by_hva(Hva(ram.as_ptr() as u64)).len(), 2);
//!
//! let mut cache = SlotCache::new();
//! let slot = memslots.find_by_gfn_cached(&mut cache, Gfn(0x10)).unwrap();
//! assert_eq!(slot.id(), SlotId(0));
//! # Ok(())
//! # }
//! ```
//!
//! # Lookups
//!
//! Each slot set indexes its slots three ways, each lookup O(log n):
//!
//! - by gfn, in an ordered tree keyed by base gfn. Slots never overlap in guest physical space,
//!   so the slot with the greatest base at or below a gfn is the only one that can contain it;
//! - by host address, in an interval tree: host ranges may overlap (aliases), so a stabbing query
//!   returns every slot over an address in O(log n + k);
//! - by id, in a hash map.
//!
//! A per-vCPU [`SlotCache`] keeps the last slot found by gfn, checked against the generation that
//! every change bumps, so a vCPU that keeps touching the same slot skips the tree.
//!
//! # Two sets, one copy of each slot
//!
//! There are two slot sets. The *active* one is published through an atomic pointer
//! (`arc_swap::ArcSwap`): readers load it without taking any lock, look up, and let go. The
//! *inactive* one belongs to the writer, and writers are serialized by a mutex. The sets do not
//! own slots: both hold `Arc<Memslot>`s to the same immutable slots. A change never edits a slot
//! in place; it builds a new one (for a move or a flag change, a copy of the slot it replaces), so
//! a change copies exactly one slot, never the whole collection.
//!
//! A change goes through these steps, under the writer mutex:
//!
//! 1. It is validated against the inactive set, which at this point holds exactly the slots of
//!    the active one.
//! 2. The [`MemslotObserver`], if any, is shown the change; if it refuses, nothing has been
//!    touched and the change is dropped.
//! 3. The change is applied to the inactive set (old slot out of, new slot into, each index) and
//!    that set's generation is bumped.
//! 4. The inactive set is published with one atomic pointer swap; the set it replaces is retired.
//! 5. The writer waits until no reader still holds the retired set: its reference count falls to
//!    one (the writer's own), as KVM waits out SRCU readers with `synchronize_srcu`.
//! 6. The same change is applied to the retired set, which again equals the active one and becomes
//!    the next inactive set.
//!
//! Readers never see a half-made change because no reader can reach a set while it is being
//! edited. In step 3 the set being edited is the inactive one, which only the writer holds. In
//! step 6 it is the retired set: step 4 swapped it out, so no new reader can load it, and step 5
//! waited out every reader that loaded it before. The swap itself publishes with release ordering
//! and readers load with acquire ordering, so a reader that sees the new set also sees every edit
//! step 3 made to it.
//!
//! Readers hold a set only for one lookup or one guest memory copy ([`Memslots::read`],
//! [`Memslots::write`]), so step 5 is short. Lookups hand out `Arc<Memslot>`s: a slot, and the host
//! memory it maps, stay alive as long as someone holds it, even after it left both sets.

mod access;
mod dirty;
mod host_mapping;
mod hva_index;
mod memslots;
mod set;
mod slot;

pub(crate) use access::{copy_from_guest, copy_to_guest};

pub use host_mapping::HostMapping;
pub use memslots::{MemslotObserver, Memslots, SlotCache, SlotChange, WriteTracker};
pub use slot::{MAX_GPA_BITS, MAX_SLOTS, Memslot, MemslotFlags, SlotId};

use crate::addr::Gpa;

/// What can go wrong with memslots and guest physical memory.
#[derive(Debug, thiserror::Error)]
pub enum MemslotError {
    /// The new or moved slot overlaps another slot in guest physical space.
    #[error("slot {id} overlaps slot {other} in guest physical memory")]
    Overlap {
        /// The slot being created or moved.
        id: SlotId,
        /// The slot it overlaps.
        other: SlotId,
    },
    /// The slot has no pages.
    #[error("slot {0} has no pages")]
    ZeroSize(SlotId),
    /// The offset into the host mapping is not a multiple of the page size.
    #[error("slot {id}: mapping offset {offset:#x} is not page-aligned")]
    UnalignedOffset {
        /// The slot being created.
        id: SlotId,
        /// The offending offset, in bytes.
        offset: usize,
    },
    /// The slot's pages run past the end of its host mapping.
    #[error("slot {id} ends past its host mapping ({mapping_len:#x} bytes)")]
    PastMappingEnd {
        /// The slot being created.
        id: SlotId,
        /// The length of the host mapping, in bytes.
        mapping_len: usize,
    },
    /// The slot's frames run past the guest physical address space.
    #[error("slot {0} runs past the {MAX_GPA_BITS}-bit guest physical address space")]
    GfnOverflow(SlotId),
    /// No slot has this id.
    #[error("no slot {0}")]
    UnknownId(SlotId),
    /// A slot with this id already exists.
    #[error("slot {0} already exists")]
    DuplicateId(SlotId),
    /// The VM already has [`MAX_SLOTS`] slots.
    #[error("too many slots (at most {MAX_SLOTS})")]
    TooManySlots,
    /// READONLY cannot be switched on an existing slot (KVM refuses it too): delete and recreate.
    #[error("slot {0}: READONLY cannot change on an existing slot")]
    ReadOnlyToggle(SlotId),
    /// A write hit a read-only slot.
    #[error("guest physical address {0} is read-only")]
    ReadOnly(Gpa),
    /// An access hit a guest physical address that no slot maps.
    #[error("guest physical address {0} is not in any slot")]
    Unmapped(Gpa),
    /// The slot does not log dirty pages.
    #[error("slot {0} does not log dirty pages")]
    DirtyLogDisabled(SlotId),
    /// A dirty-log clear starts off a 64-page boundary or runs past the slot.
    #[error("slot {id}: dirty log range at page {first_page} is unaligned or past the slot")]
    DirtyLogRange {
        /// The slot whose log was being cleared.
        id: SlotId,
        /// The first page of the range, relative to the slot.
        first_page: u64,
    },
    /// The host refused to map guest memory.
    #[error("cannot map {len:#x} bytes of guest memory")]
    MappingFailed {
        /// The requested length, in bytes.
        len: usize,
        /// Why the host refused.
        #[source]
        source: std::io::Error,
    },
    /// The memslot observer refused the change.
    #[error("memslot observer refused the change")]
    Observer(#[source] Box<dyn std::error::Error + Send + Sync>),
}
