//! Reading and writing guest physical memory, across page and slot boundaries.
//!
//! Guest memory is shared: the guest, and every other vCPU thread, may read and write it at any
//! time. So no Rust reference to it is ever made, and it is copied through raw pointers with
//! relaxed atomic loads and stores, a naturally aligned 8-byte word at a time where possible.
//! Copies racing with each other are then not undefined behaviour, and an aligned 8-byte access
//! is single-copy atomic, as it is on x86 hardware; a larger copy racing with a write may see
//! part of it, as a DMA transfer would. On x86-64 a relaxed atomic load or store is a plain `mov`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU8, AtomicU64};

use super::MemslotError;
use super::memslots::Memslots;
use super::set::SlotSet;
use super::slot::Memslot;
use crate::addr::{Gfn, Gpa};

impl Memslots {
    /// Reads `buf.len()` bytes of guest physical memory from `gpa` on, across page and slot
    /// boundaries. Fails with [`MemslotError::Unmapped`] at the first byte no slot holds; `buf`
    /// is then partly written.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemslotError> {
        let set = self.active();
        for span in Spans::new(&set, gpa, buf.len()) {
            let span = span?;
            // SAFETY: `span.host` points at `span.len` bytes inside the slot's host mapping
            // (spans stop at their slot's end), which stays mapped while `set` holds the slot.
            unsafe { copy_from_guest(span.host, &mut buf[span.start..][..span.len]) };
        }
        Ok(())
    }

    /// Writes `data` to guest physical memory from `gpa` on, across page and slot boundaries,
    /// and marks the pages written dirty in slots that log dirty pages.
    ///
    /// The write lands whole or not at all: it fails with [`MemslotError::Unmapped`] or
    /// [`MemslotError::ReadOnly`] before writing anything if any byte is unmapped or read-only.
    pub fn write(&self, gpa: Gpa, data: &[u8]) -> Result<(), MemslotError> {
        let set = self.active();
        for span in Spans::new(&set, gpa, data.len()) {
            let span = span?;
            if span.slot.is_readonly() {
                return Err(MemslotError::ReadOnly(span.gpa));
            }
        }
        for span in Spans::new(&set, gpa, data.len()) {
            let span = span?;
            // SAFETY: as in `read`: `span.host` points at `span.len` bytes of the slot's host
            // mapping, kept mapped by `set`.
            unsafe { copy_to_guest(&data[span.start..][..span.len], span.host) };
            // Marked after the data is stored: see the ordering note on the dirty bitmap.
            let last = Gpa(span.gpa.0 + span.len as u64 - 1).gfn();
            for gfn in span.gpa.gfn().0..=last.0 {
                span.slot.mark_dirty(Gfn(gfn));
            }
        }
        self.tell_tracker(gpa, data.len());
        Ok(())
    }

    /// Reads the little-endian `u64` at `gpa`; atomically when `gpa` is 8-byte aligned.
    pub fn read_u64(&self, gpa: Gpa) -> Result<u64, MemslotError> {
        let mut bytes = [0; 8];
        self.read(gpa, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Writes `value` little-endian at `gpa`; atomically when `gpa` is 8-byte aligned.
    pub fn write_u64(&self, gpa: Gpa, value: u64) -> Result<(), MemslotError> {
        self.write(gpa, &value.to_le_bytes())
    }
}

/// A run of guest physical memory inside one slot.
struct Span<'s> {
    slot: &'s Memslot,
    gpa: Gpa,
    /// Host address of `gpa`.
    host: *mut u8,
    /// Offset of the span in the caller's buffer.
    start: usize,
    len: usize,
}

/// Cuts `len` bytes of guest physical memory from `gpa` on into one span per slot, in order.
/// Yields an error, and then stops, at the first byte no slot holds.
struct Spans<'s> {
    set: &'s SlotSet,
    gpa: Gpa,
    done: usize,
    len: usize,
}

impl<'s> Spans<'s> {
    fn new(set: &'s SlotSet, gpa: Gpa, len: usize) -> Self {
        Self {
            set,
            gpa,
            done: 0,
            len,
        }
    }
}

impl<'s> Iterator for Spans<'s> {
    type Item = Result<Span<'s>, MemslotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done == self.len {
            return None;
        }
        // Spans never pass the end of a slot, and slots end below 2^52, so this cannot wrap.
        let gpa = Gpa(self.gpa.0 + self.done as u64);
        let found = self
            .set
            .find_by_gfn(gpa.gfn())
            .and_then(|slot| Some((slot, slot.host_ptr(gpa)?)));
        let Some((slot, host)) = found else {
            self.done = self.len;
            return Some(Err(MemslotError::Unmapped(gpa)));
        };
        let left_in_slot = slot.end_gfn().gpa().0 - gpa.0;
        let len = ((self.len - self.done) as u64).min(left_in_slot) as usize;
        let span = Span {
            slot,
            gpa,
            host,
            start: self.done,
            len,
        };
        self.done += len;
        Some(Ok(span))
    }
}

/// One access of a guest memory copy.
enum Access {
    /// A single byte.
    Byte(*mut u8),
    /// A naturally aligned 8-byte word.
    Word(*mut u64),
}

/// Cuts `len` bytes from host address `host` into accesses, in order, each with its offset from
/// `host`: single bytes up to the first 8-byte boundary and after the last one, aligned words
/// between. Makes no pointer it does not hand out, and hands out only pointers in the range.
fn accesses(host: *mut u8, len: usize) -> impl Iterator<Item = (usize, Access)> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let at = offset;
        let ptr = host.wrapping_add(at);
        if at == len {
            None
        } else if len - at >= 8 && ptr.cast::<u64>().is_aligned() {
            offset += 8;
            Some((at, Access::Word(ptr.cast())))
        } else {
            offset += 1;
            Some((at, Access::Byte(ptr)))
        }
    })
}

/// Copies `dst.len()` bytes of guest memory from `src` into `dst`.
///
/// # Safety
///
/// `src` must be valid for reads of `dst.len()` bytes for the whole call, and while it runs
/// those bytes may only be reached through atomics or by code outside Rust (the guest).
pub(crate) unsafe fn copy_from_guest(src: *mut u8, dst: &mut [u8]) {
    for (offset, access) in accesses(src, dst.len()) {
        match access {
            // SAFETY: `accesses` hands out pointers inside the range the caller vouches for,
            // words aligned.
            Access::Byte(ptr) => dst[offset] = unsafe { AtomicU8::from_ptr(ptr) }.load(Relaxed),
            Access::Word(ptr) => {
                // SAFETY: as above.
                let word = unsafe { AtomicU64::from_ptr(ptr) }.load(Relaxed);
                dst[offset..offset + 8].copy_from_slice(&word.to_ne_bytes());
            }
        }
    }
}

/// Copies `src` into guest memory at `dst`.
///
/// # Safety
///
/// `dst` must be valid for writes of `src.len()` bytes for the whole call, and while it runs
/// those bytes may only be reached through atomics or by code outside Rust (the guest).
pub(crate) unsafe fn copy_to_guest(src: &[u8], dst: *mut u8) {
    for (offset, access) in accesses(dst, src.len()) {
        match access {
            // SAFETY: `accesses` hands out pointers inside the range the caller vouches for,
            // words aligned.
            Access::Byte(ptr) => unsafe { AtomicU8::from_ptr(ptr) }.store(src[offset], Relaxed),
            Access::Word(ptr) => {
                let mut word = [0; 8];
                word.copy_from_slice(&src[offset..offset + 8]);
                // SAFETY: as above.
                unsafe { AtomicU64::from_ptr(ptr) }.store(u64::from_ne_bytes(word), Relaxed);
            }
        }
    }
}
