//! QEMU's `isa-debug-exit`: a write of `v` to its port ends the run with status `v`.
//!
//! Test guests written for QEMU (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`) use it to
//! report pass or fail; Umbra puts it at the same port so they run unchanged. The status is the
//! value written, zero-extended from the access size (1, 2 or 4 bytes).

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::run_control::{RunControl, StopReason};

/// QEMU's customary I/O port for the device.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;
/// The width of its port range, as QEMU's `iosize=0x04`.
pub const DEBUG_EXIT_PORT_LEN: u64 = 4;

/// The debug-exit device.
pub struct DebugExit {
    control: Arc<RunControl>,
}

impl DebugExit {
    /// A device that stops the machine through `control`.
    pub fn new(control: Arc<RunControl>) -> Self {
        Self { control }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 4];
        let len = data.len().min(4);
        bytes[..len].copy_from_slice(&data[..len]);
        let status = u32::from_le_bytes(bytes);
        self.control.request_stop(StopReason::DebugExit { status });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_of_any_width_stops_with_its_value() {
        for (data, status) in [
            (&[7u8][..], 7),
            (&[0x34, 0x12][..], 0x1234),
            (&[1, 0, 0, 0x80][..], 0x8000_0001),
        ] {
            let control = Arc::new(RunControl::new());
            DebugExit::new(control.clone()).write(0, data);
            assert_eq!(
                control.stop_reason(),
                Some(StopReason::DebugExit { status })
            );
        }
    }
}
