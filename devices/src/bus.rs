//! The device bus: an address space of non-overlapping ranges, each served by one device.
//!
//! The same type is used twice per machine: once for the 64 KiB I/O port space and once for
//! MMIO. Lookups take a read lock on the range map (uncontended: ranges change only while the
//! machine is being built) and then lock only the device hit, so two vCPUs touching different
//! devices never wait for each other.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

/// A device model on the bus. Offsets are relative to the start of the device's range.
pub trait BusDevice: Send {
    /// A read of `data.len()` bytes (1, 2, 4 or 8) at `offset`; the device fills `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and whoever built it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors in building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other_base:#x}+{other_len:#x}")]
    Overlap {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
        /// Start of the range already there.
        other_base: u64,
        /// Length of the range already there.
        other_len: u64,
    },
    /// A range of length zero, or one that wraps around the address space.
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

struct Entry {
    len: u64,
    /// The device offset that the range's first address maps to.
    device_offset: u64,
    device: SharedDevice,
}

/// An address space of device ranges.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

/// What a bus access found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A device served the access.
    Handled,
    /// No device is at that address: reads returned all ones, writes were dropped, as on an
    /// x86 bus with nothing to answer.
    Unclaimed,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `[base, base + len)`; it sees offsets from 0.
    pub fn insert(&self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        self.insert_window(base, len, device, 0)
    }

    /// Puts one window of `device` at `[base, base + len)`, seen by the device at offsets from
    /// `device_offset`. A device that answers at ports apart from each other (the i8042 at 0x60
    /// and 0x64, the PIT at 0x40-0x43 and 0x61) takes one window per range, and the ports in
    /// between stay free for other devices.
    pub fn insert_window(
        &self,
        base: u64,
        len: u64,
        device: SharedDevice,
        device_offset: u64,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        let mut ranges = self.ranges.write();
        let before = ranges.range(..end).next_back();
        if let Some((&other_base, other)) = before
            && other_base + other.len > base
        {
            return Err(BusError::Overlap {
                base,
                len,
                other_base,
                other_len: other.len,
            });
        }
        ranges.insert(
            base,
            Entry {
                len,
                device_offset,
                device,
            },
        );
        Ok(())
    }

    /// The device covering `addr`, with `addr`'s offset inside it.
    fn find(&self, addr: u64) -> Option<(SharedDevice, u64)> {
        let ranges = self.ranges.read();
        let (&base, entry) = ranges.range(..=addr).next_back()?;
        (addr - base < entry.len)
            .then(|| (entry.device.clone(), entry.device_offset + (addr - base)))
    }

    /// Reads `data.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Access {
        match self.find(addr) {
            Some((device, offset)) => {
                device.lock().read(offset, data);
                Access::Handled
            }
            None => {
                data.fill(0xff);
                Access::Unclaimed
            }
        }
    }

    /// Writes `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Access {
        match self.find(addr) {
            Some((device, offset)) => {
                device.lock().write(offset, data);
                Access::Handled
            }
            None => Access::Unclaimed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with its offset.
    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut byte = [0];
        assert_eq!(bus.read(0x3fd, &mut byte), Access::Handled);
        assert_eq!(byte, [5]);
        assert_eq!(bus.write(0x3f8, b"A"), Access::Handled);
        assert_eq!(dev.lock().last_write, Some((0, vec![b'A'])));
    }

    #[test]
    fn unclaimed_reads_float_high_and_writes_vanish() {
        let bus = Bus::new();
        let mut word = [0; 2];
        assert_eq!(bus.read(0x80, &mut word), Access::Unclaimed);
        assert_eq!(word, [0xff, 0xff]);
        assert_eq!(bus.write(0x80, &[1]), Access::Unclaimed);
    }

    #[test]
    fn windows_of_one_device_see_their_own_offsets() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert_window(0x60, 1, dev.clone(), 0).unwrap();
        bus.insert_window(0x64, 1, dev.clone(), 4).unwrap();
        let mut byte = [0];
        assert_eq!(bus.read(0x64, &mut byte), Access::Handled);
        assert_eq!(byte, [4]);
        assert_eq!(bus.read(0x61, &mut byte), Access::Unclaimed);
        bus.write(0x60, &[0xaa]);
        assert_eq!(dev.lock().last_write, Some((0, vec![0xaa])));
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x10, 0x10, dev.clone()).unwrap();
        assert!(matches!(
            bus.insert(0x1f, 1, dev.clone()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0x8, 0x9, dev.clone()),
            Err(BusError::Overlap { .. })
        ));
        assert!(bus.insert(0x20, 1, dev.clone()).is_ok());
        assert!(bus.insert(0x8, 8, dev.clone()).is_ok());
        assert_eq!(
            bus.insert(0x40, 0, dev.clone()),
            Err(BusError::BadRange { base: 0x40, len: 0 })
        );
        assert!(matches!(
            bus.insert(u64::MAX, 2, dev),
            Err(BusError::BadRange { .. })
        ));
    }
}
