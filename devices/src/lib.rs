//! Umbra's device bus and device models.
//!
//! One [`bus::Bus`] type serves port I/O and MMIO alike; a device sees only reads and writes at
//! offsets inside its own range and knows nothing about the backend (interpreter, JIT or KVM)
//! that produced them. What a device wants of the machine as a whole (stop it, reset it) goes
//! through [`run_control::RunControl`].
//!
//! The PC platform is here as userspace models:
//!
//! | module | device | where |
//! |---|---|---|
//! | [`pic`] | 8259A master/slave and ELCR | ports 0x20-0x21, 0xa0-0xa1, 0x4d0-0x4d1 |
//! | [`ioapic`] | I/O APIC, 24 pins | MMIO 0xfec00000 |
//! | [`lapic`] | local APIC of each vCPU, with its timer | MMIO 0xfee00000 |
//! | [`irqchip`] | the three above wired as on a PC | |
//! | [`pit`] | 8254 timer and port 0x61 | ports 0x40-0x43, 0x61; IRQ 0 |
//! | [`rtc`] | MC146818 clock and CMOS memory | ports 0x70-0x71; IRQ 8 |
//! | [`uart`] | 16550A serial port | port 0x3f8; IRQ 4 |
//! | [`i8042`] | keyboard controller (reset line) | ports 0x60, 0x64; IRQs 1, 12 |
//! | [`debug_exit`] | QEMU's isa-debug-exit | port 0xf4 |
//! | [`fw_cfg`] | QEMU's firmware configuration, I/O interface | ports 0x510-0x511 |
//!
//! Devices raise interrupts through an [`irq::IrqLine`] on an [`irq::InterruptController`],
//! and read time from a [`clock::Clock`]; both are handed to them, so the same models run
//! under either backend and, with a [`clock::ManualClock`], deterministically.
//!
//! # A vCPU loop and the platform
//!
//! - Before entering the guest and after each I/O exit: [`clock::Timers::run_due`] (a
//!   register write can change a deadline), then [`irq::InterruptController::take_signal`] for
//!   INIT, start-up and NMI, then, if RFLAGS.IF is set and no interrupt shadow is active,
//!   [`irq::InterruptController::acknowledge`], whose vector the vCPU delivers.
//! - While the guest runs: stop by the time [`clock::Timers::next_deadline`] says.
//! - On HLT: unless [`irq::InterruptController::pending_interrupt`] (with IF set) or a signal
//!   ends it at once, [`irqchip::PcIrqChip::wait_for_event`] until the next deadline.
//! - WRMSR/RDMSR of IA32_TSC_DEADLINE and IA32_APIC_BASE, and MOV to and from CR8, go to the
//!   [`irqchip::PcIrqChip`] methods of those names.
//!
//! ```
//! use std::sync::Arc;
//!
//! use parking_lot::Mutex;
//! use umbra_devices::bus::Bus;
//! use umbra_devices::clock::{ManualClock, Timers};
//! use umbra_devices::i8042::{I8042, KEYBOARD_IRQ, MOUSE_IRQ};
//! use umbra_devices::irq::{InterruptController, IrqLine};
//! use umbra_devices::irqchip::PcIrqChip;
//! use umbra_devices::lapic::{LAPIC_BASE, LAPIC_MMIO_LEN};
//! use umbra_devices::pit::{PIT_IRQ, Pit};
//! use umbra_devices::rtc::{RTC_IRQ, RTC_PORT, RTC_PORT_LEN, Rtc};
//! use umbra_devices::run_control::RunControl;
//! use umbra_devices::uart::{COM1_IRQ, COM1_PORT, UART_PORT_LEN, Uart};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A real machine takes a HostClock and the host's time for the RTC.
//! let clock = Arc::new(ManualClock::new(0));
//! let chip = Arc::new(PcIrqChip::new(clock.clone(), 1, 2_000_000_000)?);
//! let (pio, mmio) = (Bus::new(), Bus::new());
//! chip.attach(&pio, &mmio)?;
//! let lapic = Arc::new(Mutex::new(chip.lapic_mmio(0)));
//! mmio.insert(LAPIC_BASE, LAPIC_MMIO_LEN, lapic)?;
//! let line = |n| IrqLine::new(chip.clone(), n);
//!
//! let pit = Arc::new(Mutex::new(Pit::new(clock.clone(), line(PIT_IRQ))));
//! Pit::attach(&pit, &pio)?;
//! let rtc = Rtc::new(clock.clone(), line(RTC_IRQ), 1_700_000_000);
//! let rtc = Arc::new(Mutex::new(rtc));
//! pio.insert(RTC_PORT, RTC_PORT_LEN, rtc.clone())?;
//! let uart = Uart::new(Box::new(std::io::sink())).with_irq(line(COM1_IRQ));
//! pio.insert(COM1_PORT, UART_PORT_LEN, Arc::new(Mutex::new(uart)))?;
//! let control = Arc::new(RunControl::new());
//! let i8042 = I8042::new(control.clone(), line(KEYBOARD_IRQ), line(MOUSE_IRQ));
//! I8042::attach(&Arc::new(Mutex::new(i8042)), &pio)?;
//!
//! let mut timers = Timers::new();
//! timers.add(pit);
//! timers.add(rtc);
//! timers.add(Arc::new(Mutex::new(chip.lapic_timer(0))));
//!
//! // The guest sets the PICs up at vectors 0x30 and 0x38, unmasks IRQ 0, and starts the PIT
//! // at 1000 Hz.
//! let setup = [
//!     (0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01),
//!     (0xa0, 0x11), (0xa1, 0x38), (0xa1, 0x02), (0xa1, 0x01),
//!     (0x21, 0xfe), (0xa1, 0xff),
//!     (0x43, 0x34), (0x40, 0xa9), (0x40, 0x04),
//! ];
//! for (port, value) in setup {
//!     pio.write(port, &[value]);
//! }
//!
//! // It halts; the vCPU loop sleeps to the next deadline (here the clock is moved there).
//! let deadline = timers.next_deadline().expect("the PIT is counting");
//! assert_eq!(deadline, 999_848);
//! clock.advance_to(deadline);
//! timers.run_due();
//! assert_eq!(chip.take_signal(0), None);
//! assert_eq!(chip.acknowledge(0), Some(0x30));
//! pio.write(0x20, &[0x20]);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod bus;
pub mod clock;
pub mod debug_exit;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod irq;
pub mod irqchip;
pub mod lapic;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod run_control;
pub mod uart;
