//! A 16550A-compatible UART, as the PC's COM1 at port 0x3f8.
//!
//! Transmit goes straight to a host writer (stdout or a file), so the transmitter is always
//! ready: LSR reports THRE and TEMT at all times, and a guest that polls LSR before each byte
//! (as firmware and early kernel consoles do) never waits. The divisor latch, line and modem
//! control registers and the scratch register hold what the guest writes, so drivers that probe
//! the chip (write the scratch register, read it back) find one.

use std::io::Write;

use crate::bus::BusDevice;

/// The I/O port of COM1.
pub const COM1_PORT: u64 = 0x3f8;
/// The number of ports a 16550 occupies.
pub const UART_PORT_LEN: u64 = 8;

/// Register offsets from the base port.
mod reg {
    /// Receive buffer (read) / transmit holding (write); divisor latch low with DLAB.
    pub const DATA: u64 = 0;
    /// Interrupt enable; divisor latch high with DLAB.
    pub const IER: u64 = 1;
    /// Interrupt identification (read) / FIFO control (write).
    pub const IIR_FCR: u64 = 2;
    /// Line control; bit 7 is DLAB.
    pub const LCR: u64 = 3;
    /// Modem control.
    pub const MCR: u64 = 4;
    /// Line status.
    pub const LSR: u64 = 5;
    /// Modem status.
    pub const MSR: u64 = 6;
    /// Scratch.
    pub const SCR: u64 = 7;
}

/// LCR bit 7: the divisor latch is mapped at offsets 0 and 1.
const LCR_DLAB: u8 = 0x80;
/// LSR: transmit holding register empty.
const LSR_THRE: u8 = 0x20;
/// LSR: transmitter empty.
const LSR_TEMT: u8 = 0x40;
/// IIR: no interrupt pending.
const IIR_NONE: u8 = 0x01;
/// IIR bits 7:6 when the FIFOs are enabled.
const IIR_FIFO_ENABLED: u8 = 0xc0;
/// FCR bit 0: enable the FIFOs.
const FCR_ENABLE: u8 = 0x01;
/// MSR with carrier detect, data set ready and clear to send: a host that is always there.
const MSR_CONNECTED: u8 = 0xb0;

/// The UART's registers and where its output goes.
pub struct Uart {
    out: Box<dyn Write + Send>,
    divisor: u16,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scratch: u8,
    fifo_enabled: bool,
}

impl Uart {
    /// A UART whose transmitted bytes go to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            // 115200 baud, as firmware leaves it.
            divisor: 1,
            ier: 0,
            lcr: 0x03,
            mcr: 0x08,
            scratch: 0,
            fifo_enabled: false,
        }
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn transmit(&mut self, byte: u8) {
        // Serial output is a debugging aid: a host writer that fails (a closed pipe) must not
        // stop the guest, so the error is dropped here, as a disconnected cable would.
        let _ = self.out.write_all(&[byte]).and_then(|()| self.out.flush());
    }
}

impl BusDevice for Uart {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            reg::DATA if self.dlab() => self.divisor as u8,
            reg::DATA => 0,
            reg::IER if self.dlab() => (self.divisor >> 8) as u8,
            reg::IER => self.ier,
            reg::IIR_FCR if self.fifo_enabled => IIR_NONE | IIR_FIFO_ENABLED,
            reg::IIR_FCR => IIR_NONE,
            reg::LCR => self.lcr,
            reg::MCR => self.mcr,
            reg::LSR => LSR_THRE | LSR_TEMT,
            reg::MSR => MSR_CONNECTED,
            reg::SCR => self.scratch,
            _ => 0xff,
        };
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let value = data[0];
        match offset {
            reg::DATA if self.dlab() => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            reg::DATA => self.transmit(value),
            reg::IER if self.dlab() => {
                self.divisor = (self.divisor & 0x00ff) | (u16::from(value) << 8)
            }
            reg::IER => self.ier = value & 0x0f,
            reg::IIR_FCR => self.fifo_enabled = value & FCR_ENABLE != 0,
            reg::LCR => self.lcr = value,
            reg::MCR => self.mcr = value & 0x1f,
            reg::SCR => self.scratch = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn read(uart: &mut Uart, offset: u64) -> u8 {
        let mut byte = [0];
        uart.read(offset, &mut byte);
        byte[0]
    }

    #[test]
    fn transmitted_bytes_reach_the_host_and_lsr_is_always_ready() {
        let captured = Captured::default();
        let mut uart = Uart::new(Box::new(captured.clone()));
        for &b in b"hi\n" {
            assert_eq!(read(&mut uart, reg::LSR) & LSR_THRE, LSR_THRE);
            uart.write(reg::DATA, &[b]);
        }
        assert_eq!(&*captured.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn divisor_latch_and_scratch_hold_their_values() {
        let captured = Captured::default();
        let mut uart = Uart::new(Box::new(captured.clone()));
        uart.write(reg::LCR, &[LCR_DLAB | 0x03]);
        uart.write(reg::DATA, &[0x0c]);
        uart.write(reg::IER, &[0x00]);
        assert_eq!(read(&mut uart, reg::DATA), 0x0c);
        uart.write(reg::LCR, &[0x03]);
        uart.write(reg::SCR, &[0x5a]);
        assert_eq!(read(&mut uart, reg::SCR), 0x5a);
        assert_eq!(read(&mut uart, reg::IIR_FCR), IIR_NONE);
        uart.write(reg::IIR_FCR, &[FCR_ENABLE]);
        assert_eq!(read(&mut uart, reg::IIR_FCR), IIR_NONE | IIR_FIFO_ENABLED);
        assert!(
            captured.0.lock().unwrap().is_empty(),
            "latch writes are not output"
        );
    }
}
