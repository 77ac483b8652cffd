//! QEMU's firmware configuration device (fw_cfg), its traditional I/O interface: a 16-bit
//! selector at port 0x510 picks an item, and each read of the 8-bit data port at 0x511
//! returns the item's next byte (0 past its end). Firmware and boot loaders written for QEMU
//! read the machine's RAM size and CPU count here.
//!
//! The items are QEMU's: the "QEMU" signature, the interface ID (traditional interface only,
//! no DMA), the RAM size (64-bit little-endian), the CPU counts (16-bit little-endian), and
//! an empty file directory (a big-endian count of 0). Writes to the data port are ignored,
//! as QEMU has done since 2.4.

use std::collections::BTreeMap;

use crate::bus::BusDevice;

/// The selector port; the data port follows it.
pub const FW_CFG_PORT: u64 = 0x510;
/// The ports the device answers: selector and data.
pub const FW_CFG_PORT_LEN: u64 = 2;

/// Item keys, as QEMU numbers them.
pub mod key {
    /// The signature, "QEMU".
    pub const SIGNATURE: u16 = 0x0000;
    /// The interface ID: bit 0, the traditional interface; bit 1, DMA.
    pub const ID: u16 = 0x0001;
    /// RAM size in bytes, 64-bit.
    pub const RAM_SIZE: u16 = 0x0003;
    /// The number of CPUs at boot, 16-bit.
    pub const NB_CPUS: u16 = 0x0005;
    /// The most CPUs the machine may have, 16-bit.
    pub const MAX_CPUS: u16 = 0x000f;
    /// The file directory: a big-endian 32-bit count, then the files.
    pub const FILE_DIR: u16 = 0x0019;
}

/// Offsets of the two ports in the device's range.
const SELECTOR: u64 = 0;
const DATA: u64 = 1;

/// The fw_cfg device.
#[derive(Debug)]
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    selected: u16,
    /// The next byte of the selected item a data read returns.
    offset: usize,
}

impl FwCfg {
    /// The device of a machine with `ram_size` bytes of RAM and `cpus` CPUs.
    pub fn new(ram_size: u64, cpus: u16) -> FwCfg {
        let items = BTreeMap::from([
            (key::SIGNATURE, b"QEMU".to_vec()),
            (key::ID, 1u32.to_le_bytes().to_vec()),
            (key::RAM_SIZE, ram_size.to_le_bytes().to_vec()),
            (key::NB_CPUS, cpus.to_le_bytes().to_vec()),
            (key::MAX_CPUS, cpus.to_le_bytes().to_vec()),
            (key::FILE_DIR, 0u32.to_be_bytes().to_vec()),
        ]);
        FwCfg {
            items,
            selected: key::SIGNATURE,
            offset: 0,
        }
    }

    /// The next byte of the selected item, 0 past its end or for an unknown key.
    fn next_byte(&mut self) -> u8 {
        let byte = self
            .items
            .get(&self.selected)
            .and_then(|item| item.get(self.offset))
            .copied()
            .unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        byte
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            DATA => data.iter_mut().for_each(|byte| *byte = self.next_byte()),
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == SELECTOR {
            let mut selector = [0; 2];
            let len = data.len().min(2);
            selector[..len].copy_from_slice(&data[..len]);
            self.selected = u16::from_le_bytes(selector);
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(device: &mut FwCfg, key: u16, len: usize) -> Vec<u8> {
        device.write(SELECTOR, &key.to_le_bytes());
        (0..len)
            .map(|_| {
                let mut byte = [0xff];
                device.read(DATA, &mut byte);
                byte[0]
            })
            .collect()
    }

    #[test]
    fn items_read_byte_by_byte_from_the_selected_key() {
        let mut device = FwCfg::new(512 << 20, 1);
        assert_eq!(read_item(&mut device, key::SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut device, key::ID, 4), [1, 0, 0, 0]);
        assert_eq!(
            read_item(&mut device, key::RAM_SIZE, 8),
            (512u64 << 20).to_le_bytes()
        );
        assert_eq!(read_item(&mut device, key::NB_CPUS, 2), [1, 0]);
        assert_eq!(read_item(&mut device, key::MAX_CPUS, 2), [1, 0]);
        assert_eq!(read_item(&mut device, key::FILE_DIR, 4), [0; 4]);
        assert_eq!(read_item(&mut device, 0x1234, 2), [0, 0]);
    }

    #[test]
    fn selecting_again_starts_over_and_data_writes_are_ignored() {
        let mut device = FwCfg::new(1 << 30, 2);
        assert_eq!(read_item(&mut device, key::SIGNATURE, 2), b"QE");
        device.write(DATA, &[0x55]);
        assert_eq!(read_item(&mut device, key::SIGNATURE, 4), b"QEMU");
    }
}
