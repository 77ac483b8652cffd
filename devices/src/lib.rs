//! Umbra's device bus and device models.
//!
//! One [`bus::Bus`] type serves port I/O and MMIO alike; a device sees only reads and writes at
//! offsets inside its own range and knows nothing about the backend (interpreter, JIT or KVM)
//! that produced them. What a device wants of the machine as a whole (stop it, reset it) goes
//! through [`run_control::RunControl`].
#![deny(missing_docs)]

pub mod bus;
pub mod clock;
pub mod debug_exit;
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
