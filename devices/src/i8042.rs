//! The i8042 keyboard controller, with nothing plugged into its keyboard and mouse ports.
//!
//! Port 0x64 reads the status register and takes controller commands; port 0x60 reads the
//! output buffer and takes a command's argument, or a byte for the keyboard. Enough is there
//! for Linux to find the controller, test it and reset the machine through it:
//!
//! - 0x20 / 0x60 read and write the command byte (interrupt enables, the system flag, port
//!   disables, translation); 0xa7 / 0xa8 disable and enable the mouse port, 0xad / 0xae the
//!   keyboard port;
//! - 0xaa (self-test) answers 0x55 and sets the system flag; 0xa9 and 0xab (port tests)
//!   answer 0x00;
//! - 0xc0 reads the input port, 0xd0 / 0xd1 read and write the output port, 0xdd / 0xdf
//!   switch A20 (kept in the output port only: the machine has no A20 gate);
//! - 0xd2 / 0xd3 put their argument in the output buffer as if the keyboard or the mouse had
//!   sent it (Linux's mouse-port loopback test uses 0xd3);
//! - 0xfe, any 0xf0-0xff pulse of output-port bit 0, and an output-port write with bit 0
//!   clear pulse the CPU reset line: the machine stops with [`StopReason::Reset`].
//!
//! A byte for the keyboard (port 0x60 with no command waiting) or for the mouse (0xd4) finds no
//! device: the controller answers at once with 0xfe and the timeout bit set, as a controller
//! whose device does not answer does after its timeout, so drivers give up without waiting.
//!
//! The output buffer holds up to 16 bytes (a controller answering a command, or a device, can
//! have several on the way); its front byte decides OBF and AUXB in the status register. IRQ 1
//! is high while a keyboard-side byte waits, the command byte enables keyboard interrupts and
//! the keyboard port is enabled; IRQ 12 likewise for a mouse byte, as QEMU drives them.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::bus::{Bus, BusDevice, BusError};
use crate::irq::IrqLine;
use crate::run_control::{RunControl, StopReason};

/// The data port.
pub const I8042_DATA_PORT: u64 = 0x60;
/// The status (read) and command (write) port.
pub const I8042_COMMAND_PORT: u64 = 0x64;
/// The keyboard's interrupt line.
pub const KEYBOARD_IRQ: u32 = 1;
/// The mouse's interrupt line.
pub const MOUSE_IRQ: u32 = 12;

/// Offsets in the device: ports less [`I8042_DATA_PORT`].
const DATA: u64 = 0;
const COMMAND: u64 = I8042_COMMAND_PORT - I8042_DATA_PORT;

/// Status register bits.
const STATUS_OBF: u8 = 0x01;
const STATUS_SYSTEM: u8 = 0x04;
const STATUS_COMMAND: u8 = 0x08;
const STATUS_UNLOCKED: u8 = 0x10;
const STATUS_AUX_DATA: u8 = 0x20;
const STATUS_TIMEOUT: u8 = 0x40;

/// Command byte bits.
const CTR_KEYBOARD_INT: u8 = 0x01;
const CTR_MOUSE_INT: u8 = 0x02;
const CTR_KEYBOARD_DISABLED: u8 = 0x10;
const CTR_MOUSE_DISABLED: u8 = 0x20;

/// Output port bits.
const OUTPUT_RESET: u8 = 0x01;
const OUTPUT_A20: u8 = 0x02;
/// Output port bits 2-3 and 6-7, high as QEMU leaves them.
const OUTPUT_ONES: u8 = 0xcc;
const OUTPUT_KEYBOARD_FULL: u8 = 0x10;
const OUTPUT_MOUSE_FULL: u8 = 0x20;

/// What a device that does not answer leaves in the output buffer.
const NO_DEVICE: u8 = 0xfe;
/// Bytes the output buffer holds.
const OUTPUT_DEPTH: usize = 16;

/// Controller commands.
mod command {
    pub const READ_CTR: u8 = 0x20;
    pub const WRITE_CTR: u8 = 0x60;
    pub const DISABLE_MOUSE: u8 = 0xa7;
    pub const ENABLE_MOUSE: u8 = 0xa8;
    pub const TEST_MOUSE: u8 = 0xa9;
    pub const SELF_TEST: u8 = 0xaa;
    pub const TEST_KEYBOARD: u8 = 0xab;
    pub const DISABLE_KEYBOARD: u8 = 0xad;
    pub const ENABLE_KEYBOARD: u8 = 0xae;
    pub const READ_INPUT_PORT: u8 = 0xc0;
    pub const READ_OUTPUT_PORT: u8 = 0xd0;
    pub const WRITE_OUTPUT_PORT: u8 = 0xd1;
    pub const WRITE_KEYBOARD_OUTPUT: u8 = 0xd2;
    pub const WRITE_MOUSE_OUTPUT: u8 = 0xd3;
    pub const WRITE_MOUSE: u8 = 0xd4;
    pub const DISABLE_A20: u8 = 0xdd;
    pub const ENABLE_A20: u8 = 0xdf;
    pub const PULSE_OUTPUT: u8 = 0xf0;
}

/// Which side of the controller a byte in the output buffer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The keyboard, or the controller answering a command.
    Keyboard,
    Mouse,
}

/// A byte waiting in the output buffer.
#[derive(Clone, Copy, Debug)]
struct Output {
    byte: u8,
    source: Source,
    /// The byte reports a device that did not answer.
    timeout: bool,
}

/// The keyboard controller.
pub struct I8042 {
    control: Arc<RunControl>,
    keyboard_irq: IrqLine,
    mouse_irq: IrqLine,
    /// Status bits the controller keeps (system flag, last write was a command, unlocked).
    status: u8,
    ctr: u8,
    output_port: u8,
    /// A command waiting for its argument on the data port.
    pending: Option<u8>,
    output: VecDeque<Output>,
    /// The last byte read from the data port, which it keeps showing when nothing waits.
    last_read: u8,
}

impl I8042 {
    /// A controller as QEMU's starts (keyboard and mouse interrupts enabled, A20 on), whose
    /// reset line stops the machine through `control` and whose ports interrupt on
    /// `keyboard_irq` and `mouse_irq`.
    pub fn new(control: Arc<RunControl>, keyboard_irq: IrqLine, mouse_irq: IrqLine) -> Self {
        Self {
            control,
            keyboard_irq,
            mouse_irq,
            status: STATUS_COMMAND | STATUS_UNLOCKED,
            ctr: CTR_KEYBOARD_INT | CTR_MOUSE_INT,
            output_port: OUTPUT_RESET | OUTPUT_A20 | OUTPUT_ONES,
            pending: None,
            output: VecDeque::new(),
            last_read: 0,
        }
    }

    /// Puts the controller's ports (0x60 and 0x64) on `pio`.
    pub fn attach(i8042: &Arc<Mutex<I8042>>, pio: &Bus) -> Result<(), BusError> {
        pio.insert_window(I8042_DATA_PORT, 1, i8042.clone(), DATA)?;
        pio.insert_window(I8042_COMMAND_PORT, 1, i8042.clone(), COMMAND)
    }

    fn status(&self) -> u8 {
        let front = match self.output.front() {
            None => 0,
            Some(output) => {
                let aux = if output.source == Source::Mouse {
                    STATUS_AUX_DATA
                } else {
                    0
                };
                let timeout = if output.timeout { STATUS_TIMEOUT } else { 0 };
                STATUS_OBF | aux | timeout
            }
        };
        self.status | front
    }

    fn queue(&mut self, byte: u8, source: Source, timeout: bool) {
        if self.output.len() < OUTPUT_DEPTH {
            self.output.push_back(Output {
                byte,
                source,
                timeout,
            });
        }
        self.update_irqs();
    }

    fn update_irqs(&self) {
        let source = self.output.front().map(|output| output.source);
        let keyboard = source == Some(Source::Keyboard)
            && self.ctr & CTR_KEYBOARD_INT != 0
            && self.ctr & CTR_KEYBOARD_DISABLED == 0;
        let mouse = source == Some(Source::Mouse) && self.ctr & CTR_MOUSE_INT != 0;
        self.keyboard_irq.set_level(keyboard);
        self.mouse_irq.set_level(mouse);
    }

    fn reset_machine(&self) {
        self.control.request_stop(StopReason::Reset);
    }

    fn write_output_port(&mut self, value: u8) {
        self.output_port = value;
        if value & OUTPUT_RESET == 0 {
            self.reset_machine();
        }
    }

    fn command(&mut self, value: u8) {
        match value {
            command::READ_CTR => self.queue(self.ctr, Source::Keyboard, false),
            command::WRITE_CTR
            | command::WRITE_OUTPUT_PORT
            | command::WRITE_KEYBOARD_OUTPUT
            | command::WRITE_MOUSE_OUTPUT
            | command::WRITE_MOUSE => self.pending = Some(value),
            command::DISABLE_MOUSE => self.ctr |= CTR_MOUSE_DISABLED,
            command::ENABLE_MOUSE => self.ctr &= !CTR_MOUSE_DISABLED,
            command::TEST_MOUSE | command::TEST_KEYBOARD => {
                self.queue(0x00, Source::Keyboard, false)
            }
            command::SELF_TEST => {
                self.status |= STATUS_SYSTEM;
                self.queue(0x55, Source::Keyboard, false);
            }
            command::DISABLE_KEYBOARD => self.ctr |= CTR_KEYBOARD_DISABLED,
            command::ENABLE_KEYBOARD => self.ctr &= !CTR_KEYBOARD_DISABLED,
            // Bit 7: keyboard not inhibited.
            command::READ_INPUT_PORT => self.queue(0x80, Source::Keyboard, false),
            command::READ_OUTPUT_PORT => {
                let full = match self.output.front().map(|output| output.source) {
                    Some(Source::Keyboard) => OUTPUT_KEYBOARD_FULL,
                    Some(Source::Mouse) => OUTPUT_MOUSE_FULL,
                    None => 0,
                };
                self.queue(self.output_port | full, Source::Keyboard, false);
            }
            command::DISABLE_A20 => self.output_port &= !OUTPUT_A20,
            command::ENABLE_A20 => self.output_port |= OUTPUT_A20,
            // Pulse the output-port bits whose command bits are clear; bit 0 is reset, and
            // the others have nothing to pulse.
            pulse
                if pulse & command::PULSE_OUTPUT == command::PULSE_OUTPUT
                    && pulse & OUTPUT_RESET == 0 =>
            {
                self.reset_machine()
            }
            _ => {}
        }
        self.update_irqs();
    }

    fn data(&mut self, value: u8) {
        match self.pending.take() {
            Some(command::WRITE_CTR) => self.ctr = value,
            Some(command::WRITE_OUTPUT_PORT) => self.write_output_port(value),
            Some(command::WRITE_KEYBOARD_OUTPUT) => self.queue(value, Source::Keyboard, false),
            Some(command::WRITE_MOUSE_OUTPUT) => self.queue(value, Source::Mouse, false),
            Some(command::WRITE_MOUSE) => self.queue(NO_DEVICE, Source::Mouse, true),
            _ => self.queue(NO_DEVICE, Source::Keyboard, true),
        }
        self.update_irqs();
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA => {
                if let Some(output) = self.output.pop_front() {
                    self.last_read = output.byte;
                    self.update_irqs();
                }
                self.last_read
            }
            COMMAND => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let value = data[0];
        match offset {
            DATA => {
                self.status &= !STATUS_COMMAND;
                self.data(value);
            }
            COMMAND => {
                self.status |= STATUS_COMMAND;
                self.command(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::testing::RecordingController;

    struct Bench {
        control: Arc<RunControl>,
        irqs: Arc<RecordingController>,
        i8042: I8042,
    }

    impl Bench {
        fn new() -> Self {
            let control = Arc::new(RunControl::new());
            let irqs = Arc::new(RecordingController::default());
            let i8042 = I8042::new(
                control.clone(),
                IrqLine::new(irqs.clone(), KEYBOARD_IRQ),
                IrqLine::new(irqs.clone(), MOUSE_IRQ),
            );
            Self {
                control,
                irqs,
                i8042,
            }
        }

        fn outb(&mut self, port: u64, value: u8) {
            self.i8042.write(port - I8042_DATA_PORT, &[value]);
        }

        fn inb(&mut self, port: u64) -> u8 {
            let mut byte = [0];
            self.i8042.read(port - I8042_DATA_PORT, &mut byte);
            byte[0]
        }

        /// Linux's `i8042_command`: the command, its argument, then its answer once OBF says.
        fn command(&mut self, command: u8, argument: Option<u8>) -> Option<u8> {
            self.outb(I8042_COMMAND_PORT, command);
            if let Some(argument) = argument {
                self.outb(I8042_DATA_PORT, argument);
            }
            (self.inb(I8042_COMMAND_PORT) & STATUS_OBF != 0).then(|| self.inb(I8042_DATA_PORT))
        }
    }

    #[test]
    fn linux_finds_and_tests_the_controller() {
        let mut bench = Bench::new();
        // i8042_flush finds nothing waiting.
        assert_eq!(bench.inb(I8042_COMMAND_PORT) & STATUS_OBF, 0);
        assert_eq!(bench.command(command::SELF_TEST, None), Some(0x55));
        assert_ne!(bench.inb(I8042_COMMAND_PORT) & STATUS_SYSTEM, 0);
        assert_eq!(bench.command(command::TEST_KEYBOARD, None), Some(0x00));
        // The command byte: read it, write it back with interrupts off, read it again.
        let ctr = bench.command(command::READ_CTR, None).unwrap();
        assert_eq!(ctr, CTR_KEYBOARD_INT | CTR_MOUSE_INT);
        bench.command(command::WRITE_CTR, Some(0x44));
        assert_eq!(bench.command(command::READ_CTR, None), Some(0x44));
        // Port disables show in the command byte.
        bench.command(command::DISABLE_KEYBOARD, None);
        bench.command(command::DISABLE_MOUSE, None);
        assert_eq!(bench.command(command::READ_CTR, None), Some(0x74));
        bench.command(command::ENABLE_KEYBOARD, None);
        bench.command(command::ENABLE_MOUSE, None);
        assert_eq!(bench.command(command::READ_CTR, None), Some(0x44));
        assert_eq!(
            bench.inb(I8042_COMMAND_PORT) & STATUS_COMMAND,
            STATUS_COMMAND
        );
        assert_eq!(bench.control.stop_reason(), None);
    }

    #[test]
    fn the_mouse_port_loopback_answers_as_the_mouse() {
        let mut bench = Bench::new();
        bench.command(command::WRITE_CTR, Some(CTR_MOUSE_INT));
        bench.outb(I8042_COMMAND_PORT, command::WRITE_MOUSE_OUTPUT);
        bench.outb(I8042_DATA_PORT, 0x5a);
        assert_eq!(
            bench.inb(I8042_COMMAND_PORT) & 0x21,
            0x21,
            "OBF from the mouse"
        );
        assert!(bench.irqs.level(MOUSE_IRQ));
        assert!(!bench.irqs.level(KEYBOARD_IRQ));
        assert_eq!(bench.inb(I8042_DATA_PORT), 0x5a);
        assert!(!bench.irqs.level(MOUSE_IRQ));
        assert_eq!(
            bench.inb(I8042_DATA_PORT),
            0x5a,
            "the data port keeps its last byte"
        );
    }

    #[test]
    fn bytes_for_absent_devices_time_out_at_once() {
        let mut bench = Bench::new();
        bench.outb(I8042_DATA_PORT, 0xf2);
        assert_eq!(
            bench.inb(I8042_COMMAND_PORT) & (STATUS_OBF | STATUS_TIMEOUT),
            STATUS_OBF | STATUS_TIMEOUT
        );
        assert_eq!(bench.inb(I8042_COMMAND_PORT) & STATUS_COMMAND, 0);
        assert!(bench.irqs.level(KEYBOARD_IRQ));
        assert_eq!(bench.inb(I8042_DATA_PORT), NO_DEVICE);
        assert_eq!(bench.inb(I8042_COMMAND_PORT) & STATUS_TIMEOUT, 0);
        assert!(!bench.irqs.level(KEYBOARD_IRQ));
        bench.outb(I8042_COMMAND_PORT, command::WRITE_MOUSE);
        bench.outb(I8042_DATA_PORT, 0xff);
        assert_eq!(bench.inb(I8042_COMMAND_PORT) & 0x61, 0x61);
        // With keyboard interrupts off nothing is raised, but the byte is there.
        bench.inb(I8042_DATA_PORT);
        bench.command(command::WRITE_CTR, Some(0));
        bench.outb(I8042_DATA_PORT, 0xf4);
        assert!(!bench.irqs.level(KEYBOARD_IRQ));
        assert_eq!(bench.inb(I8042_DATA_PORT), NO_DEVICE);
    }

    #[test]
    fn the_output_port_and_a20() {
        let mut bench = Bench::new();
        assert_eq!(bench.command(command::READ_OUTPUT_PORT, None), Some(0xcf));
        bench.command(command::DISABLE_A20, None);
        assert_eq!(bench.command(command::READ_OUTPUT_PORT, None), Some(0xcd));
        bench.command(command::ENABLE_A20, None);
        bench.command(command::WRITE_OUTPUT_PORT, Some(0xdf));
        assert_eq!(bench.command(command::READ_INPUT_PORT, None), Some(0x80));
        assert_eq!(bench.control.stop_reason(), None);
        bench.command(command::WRITE_OUTPUT_PORT, Some(0xde));
        assert_eq!(bench.control.stop_reason(), Some(StopReason::Reset));
    }

    #[test]
    fn command_0xfe_resets_the_machine() {
        let mut bench = Bench::new();
        // Linux's kb_wait: the input buffer is never full.
        assert_eq!(bench.inb(I8042_COMMAND_PORT) & 0x02, 0);
        bench.outb(I8042_COMMAND_PORT, 0xff);
        assert_eq!(bench.control.stop_reason(), None, "0xff pulses nothing");
        bench.outb(I8042_COMMAND_PORT, 0xfe);
        assert_eq!(bench.control.stop_reason(), Some(StopReason::Reset));
    }

    #[test]
    fn ports_attach_at_0x60_and_0x64_only() {
        let pio = Bus::new();
        let bench = Bench::new();
        let i8042 = Arc::new(Mutex::new(bench.i8042));
        I8042::attach(&i8042, &pio).unwrap();
        pio.write(I8042_COMMAND_PORT, &[command::SELF_TEST]);
        let mut byte = [0];
        pio.read(I8042_DATA_PORT, &mut byte);
        assert_eq!(byte, [0x55]);
        assert_eq!(pio.read(0x61, &mut byte), crate::bus::Access::Unclaimed);
    }
}
