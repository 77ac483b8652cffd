//! A 16550A-compatible UART, as the PC's COM1 at port 0x3f8 with IRQ 4.
//!
//! Transmit goes straight to a host writer (stdout or a file), so the transmitter is always
//! ready: LSR reports THRE and TEMT at all times, and a guest that polls LSR before each byte
//! (as firmware and early kernel consoles do) never waits. The divisor latch, line and modem
//! control registers and the scratch register hold what the guest writes, so drivers that probe
//! the chip (write the scratch register, read it back) find one.
//!
//! Receive takes bytes from the host through [`Uart::push_input`] into a queue the receiver
//! reads from as from its FIFO: LSR.DR is set while a byte is there, RBR returns the oldest.
//! The queue holds up to [`INPUT_LIMIT`] bytes; the host keeps what does not fit and offers it
//! again, so nothing is overrun and no byte is lost.
//!
//! Interrupts follow the 16550A, in its priority order as IIR reports them (receiver line
//! status and modem status never arise here, since the line never errs and the modem lines
//! never change):
//!
//! - received data available (IER bit 0): with the FIFOs off, while a byte is there; with
//!   them on, once the bytes reach the trigger level FCR selects (1, 4, 8 or 14), and below it
//!   as a character timeout (IIR 0xc), which here comes at once instead of four character
//!   times later; reading RBR clears it when the bytes run out;
//! - transmitter holding register empty (IER bit 1): raised when a write of IER finds THR
//!   empty and each time a byte written to THR has gone out, cleared by a read of IIR that
//!   reports it or by the next write to THR.
//!
//! The interrupt reaches its line through the OUT2 bit of MCR, as on every PC, where OUT2
//! gates the UART's interrupt onto the ISA bus; in loopback mode (MCR bit 4) the OUT pins are
//! held inactive and the line is low. Loopback sends transmitted bytes to the receiver and
//! shows MCR's outputs on MSR's inputs, as Linux's probe expects.

use std::collections::VecDeque;
use std::io::Write;

use crate::bus::BusDevice;
use crate::irq::IrqLine;

/// The I/O port of COM1.
pub const COM1_PORT: u64 = 0x3f8;
/// The number of ports a 16550 occupies.
pub const UART_PORT_LEN: u64 = 8;
/// The interrupt line of COM1.
pub const COM1_IRQ: u32 = 4;
/// The most received bytes the UART holds for the guest.
pub const INPUT_LIMIT: usize = 4096;

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
/// IER: received data available.
const IER_RDI: u8 = 0x01;
/// IER: transmitter holding register empty.
const IER_THRI: u8 = 0x02;
/// LSR: data ready.
const LSR_DR: u8 = 0x01;
/// LSR: transmit holding register empty.
const LSR_THRE: u8 = 0x20;
/// LSR: transmitter empty.
const LSR_TEMT: u8 = 0x40;
/// IIR: no interrupt pending.
const IIR_NONE: u8 = 0x01;
/// IIR: transmitter holding register empty.
const IIR_THRI: u8 = 0x02;
/// IIR: received data available.
const IIR_RDI: u8 = 0x04;
/// IIR: character timeout.
const IIR_TIMEOUT: u8 = 0x0c;
/// IIR bits 7:6 when the FIFOs are enabled.
const IIR_FIFO_ENABLED: u8 = 0xc0;
/// FCR bit 0: enable the FIFOs.
const FCR_ENABLE: u8 = 0x01;
/// FCR bit 1: clear the receive FIFO.
const FCR_CLEAR_RX: u8 = 0x02;
/// FCR bits that stay set: enable, DMA mode, receive trigger level.
const FCR_STICKY: u8 = 0xc9;
/// MCR bit 3: OUT2, which gates the interrupt onto the bus.
const MCR_OUT2: u8 = 0x08;
/// MCR bit 4: loopback.
const MCR_LOOP: u8 = 0x10;
/// MSR with carrier detect, data set ready and clear to send: a host that is always there.
const MSR_CONNECTED: u8 = 0xb0;
/// The 16550A's receive FIFO depth.
const FIFO_DEPTH: usize = 16;

/// The UART's registers, where its output goes and where its input waits.
pub struct Uart {
    out: Box<dyn Write + Send>,
    irq: Option<IrqLine>,
    divisor: u16,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scratch: u8,
    fcr: u8,
    /// Received bytes not yet read; the first [`FIFO_DEPTH`] (one with the FIFOs off) are in
    /// the receiver, the rest wait on the line.
    input: VecDeque<u8>,
    /// The last byte read from RBR, which it keeps showing once the input runs out.
    rbr: u8,
    /// The THRE interrupt is pending.
    thr_empty_interrupt: bool,
}

impl Uart {
    /// A UART whose transmitted bytes go to `out`, with no interrupt line: the guest polls it.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            irq: None,
            // 115200 baud, as firmware leaves it.
            divisor: 1,
            ier: 0,
            lcr: 0x03,
            mcr: MCR_OUT2,
            scratch: 0,
            fcr: 0,
            input: VecDeque::new(),
            rbr: 0,
            thr_empty_interrupt: false,
        }
    }

    /// The same UART with its interrupt wired to `irq`.
    pub fn with_irq(mut self, irq: IrqLine) -> Self {
        self.irq = Some(irq);
        self.update_irq();
        self
    }

    /// Takes bytes from the host's side of the line; returns how many it took (all of them
    /// unless the input queue is full).
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let taken = bytes.len().min(INPUT_LIMIT - self.input.len());
        self.input.extend(&bytes[..taken]);
        self.update_irq();
        taken
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & FCR_ENABLE != 0
    }

    /// Received bytes in the receiver (its FIFO, or its one holding register).
    fn received(&self) -> usize {
        let depth = if self.fifo_enabled() { FIFO_DEPTH } else { 1 };
        self.input.len().min(depth)
    }

    fn trigger_level(&self) -> usize {
        [1, 4, 8, 14][usize::from(self.fcr >> 6)]
    }

    /// The interrupt IIR reports, highest priority first.
    fn interrupt_id(&self) -> u8 {
        let received = self.received();
        if self.ier & IER_RDI != 0 && received > 0 {
            if !self.fifo_enabled() || received >= self.trigger_level() {
                IIR_RDI
            } else {
                IIR_TIMEOUT
            }
        } else if self.ier & IER_THRI != 0 && self.thr_empty_interrupt {
            IIR_THRI
        } else {
            IIR_NONE
        }
    }

    fn update_irq(&self) {
        if let Some(irq) = &self.irq {
            let gated_on = self.mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2;
            irq.set_level(gated_on && self.interrupt_id() != IIR_NONE);
        }
    }

    fn transmit(&mut self, byte: u8) {
        // THR takes the byte, which the shift register sends at once: the THRE interrupt
        // drops and rises again, an edge for an edge-triggered controller.
        self.thr_empty_interrupt = false;
        self.update_irq();
        if self.mcr & MCR_LOOP != 0 {
            if self.input.len() < INPUT_LIMIT {
                self.input.push_back(byte);
            }
        } else {
            // Serial output is a debugging aid: a host writer that fails (a closed pipe) must
            // not stop the guest, so the error is dropped here, as a disconnected cable would.
            let _ = self.out.write_all(&[byte]).and_then(|()| self.out.flush());
        }
        self.thr_empty_interrupt = true;
    }

    fn read_rbr(&mut self) -> u8 {
        if self.received() > 0
            && let Some(byte) = self.input.pop_front()
        {
            self.rbr = byte;
        }
        self.rbr
    }

    fn read_iir(&mut self) -> u8 {
        let id = self.interrupt_id();
        if id == IIR_THRI {
            self.thr_empty_interrupt = false;
        }
        let fifo = if self.fifo_enabled() {
            IIR_FIFO_ENABLED
        } else {
            0
        };
        id | fifo
    }

    fn write_fcr(&mut self, value: u8) {
        let mut value = value;
        if (value ^ self.fcr) & FCR_ENABLE != 0 {
            // Turning the FIFOs on or off clears them.
            value |= FCR_CLEAR_RX;
        }
        if value & FCR_CLEAR_RX != 0 {
            let received = self.received();
            self.input.drain(..received);
        }
        self.fcr = value & FCR_STICKY;
    }

    fn read_msr(&self) -> u8 {
        if self.mcr & MCR_LOOP != 0 {
            // DTR -> DSR, RTS -> CTS, OUT1 -> RI, OUT2 -> DCD.
            ((self.mcr & 0x01) << 5)
                | ((self.mcr & 0x02) << 3)
                | ((self.mcr & 0x04) << 4)
                | ((self.mcr & 0x08) << 4)
        } else {
            MSR_CONNECTED
        }
    }
}

impl BusDevice for Uart {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            reg::DATA if self.dlab() => self.divisor as u8,
            reg::DATA => self.read_rbr(),
            reg::IER if self.dlab() => (self.divisor >> 8) as u8,
            reg::IER => self.ier,
            reg::IIR_FCR => self.read_iir(),
            reg::LCR => self.lcr,
            reg::MCR => self.mcr,
            reg::LSR => {
                let ready = if self.received() > 0 { LSR_DR } else { 0 };
                ready | LSR_THRE | LSR_TEMT
            }
            reg::MSR => self.read_msr(),
            reg::SCR => self.scratch,
            _ => 0xff,
        };
        // Only reading RBR or IIR changes what interrupts are pending.
        if matches!(offset, reg::DATA | reg::IIR_FCR) {
            self.update_irq();
        }
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
            reg::IER => {
                self.ier = value & 0x0f;
                // THR is always empty, so enabling (or re-enabling) its interrupt raises it.
                self.thr_empty_interrupt = true;
            }
            reg::IIR_FCR => self.write_fcr(value),
            reg::LCR => self.lcr = value,
            reg::MCR => self.mcr = value & 0x1f,
            reg::SCR => self.scratch = value,
            _ => {}
        }
        self.update_irq();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::irq::testing::RecordingController;

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

    fn irq_uart() -> (Uart, Arc<RecordingController>) {
        let (irqs, irq) = RecordingController::with_line(COM1_IRQ);
        let uart = Uart::new(Box::new(Captured::default())).with_irq(irq);
        (uart, irqs)
    }

    #[test]
    fn input_is_read_through_rbr_while_lsr_says_ready() {
        let mut uart = Uart::new(Box::new(Captured::default()));
        assert_eq!(read(&mut uart, reg::LSR) & LSR_DR, 0);
        assert_eq!(uart.push_input(b"ab"), 2);
        assert_eq!(read(&mut uart, reg::LSR) & LSR_DR, LSR_DR);
        assert_eq!(read(&mut uart, reg::DATA), b'a');
        assert_eq!(read(&mut uart, reg::DATA), b'b');
        assert_eq!(read(&mut uart, reg::LSR) & LSR_DR, 0);
        assert_eq!(read(&mut uart, reg::DATA), b'b', "RBR keeps its last byte");
        // The queue takes what fits and says so.
        assert_eq!(uart.push_input(&vec![0; INPUT_LIMIT + 3]), INPUT_LIMIT);
        assert_eq!(uart.push_input(b"x"), 0);
    }

    #[test]
    fn received_data_raises_irq_4_until_read() {
        let (mut uart, irqs) = irq_uart();
        uart.write(reg::IER, &[IER_RDI]);
        uart.push_input(b"k");
        assert!(irqs.level(COM1_IRQ));
        assert_eq!(read(&mut uart, reg::IIR_FCR), IIR_RDI);
        assert_eq!(read(&mut uart, reg::DATA), b'k');
        assert!(!irqs.level(COM1_IRQ));
        assert_eq!(read(&mut uart, reg::IIR_FCR), IIR_NONE);
    }

    #[test]
    fn the_fifo_trigger_level_and_the_character_timeout() {
        let (mut uart, irqs) = irq_uart();
        // Linux's 16550A setup: FIFOs on, cleared, trigger at 8 bytes.
        uart.write(reg::IIR_FCR, &[0x87]);
        uart.write(reg::IER, &[IER_RDI]);
        uart.push_input(b"abc");
        assert_eq!(
            read(&mut uart, reg::IIR_FCR),
            IIR_FIFO_ENABLED | IIR_TIMEOUT
        );
        uart.push_input(b"defgh");
        assert_eq!(read(&mut uart, reg::IIR_FCR), IIR_FIFO_ENABLED | IIR_RDI);
        assert!(irqs.level(COM1_IRQ));
        // Clearing the receive FIFO drops what it holds.
        uart.push_input(&[b'z'; 20]);
        uart.write(reg::IIR_FCR, &[0x83]);
        assert_eq!(uart.input.len(), 12);
        assert_eq!(read(&mut uart, reg::DATA), b'z');
    }

    #[test]
    fn thre_interrupt_as_linux_tests_it() {
        let (mut uart, irqs) = irq_uart();
        // serial8250_do_startup's THRE test: the interrupt is raised on enabling, cleared by
        // the IIR read that reports it, and raised again by enabling it again.
        uart.write(reg::IER, &[IER_THRI]);
        assert!(irqs.level(COM1_IRQ));
        assert_eq!(read(&mut uart, reg::IIR_FCR), IIR_THRI);
        assert!(!irqs.level(COM1_IRQ));
        assert_eq!(read(&mut uart, reg::IIR_FCR), IIR_NONE);
        uart.write(reg::IER, &[0]);
        uart.write(reg::IER, &[IER_THRI]);
        assert_eq!(read(&mut uart, reg::IIR_FCR), IIR_THRI);
        // Each byte sent is a new edge.
        let edges = irqs.rising_edges(COM1_IRQ);
        uart.write(reg::DATA, b"x");
        uart.write(reg::DATA, b"y");
        assert_eq!(irqs.rising_edges(COM1_IRQ), edges + 2);
        // Received data outranks THRE.
        uart.write(reg::IER, &[IER_THRI | IER_RDI]);
        uart.push_input(b"r");
        assert_eq!(read(&mut uart, reg::IIR_FCR), IIR_RDI);
    }

    #[test]
    fn out2_gates_the_interrupt_and_loopback_talks_to_itself() {
        let (mut uart, irqs) = irq_uart();
        uart.write(reg::IER, &[IER_RDI]);
        uart.write(reg::MCR, &[0x03]);
        uart.push_input(b"q");
        assert!(!irqs.level(COM1_IRQ), "OUT2 low: no interrupt on the bus");
        uart.write(reg::MCR, &[MCR_OUT2 | 0x03]);
        assert!(irqs.level(COM1_IRQ));
        read(&mut uart, reg::DATA);
        // Linux's autoconfig loopback check: LOOP | OUT2 | RTS shows DCD and CTS.
        uart.write(reg::MCR, &[MCR_LOOP | 0x0a]);
        assert_eq!(read(&mut uart, reg::MSR) & 0xf0, 0x90);
        uart.write(reg::DATA, b"L");
        assert_eq!(read(&mut uart, reg::DATA), b'L');
        uart.write(reg::MCR, &[MCR_OUT2]);
        assert_eq!(read(&mut uart, reg::MSR), MSR_CONNECTED);
    }
}
