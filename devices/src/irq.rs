//! The interrupt-controller seam: how devices drive their interrupt lines and how a vCPU loop
//! takes the interrupts that result.
//!
//! Devices see only [`IrqLine`]: a handle on one input of whatever [`InterruptController`] the
//! machine has. The userspace PC model ([`crate::irqchip::PcIrqChip`]: two 8259As, an I/O APIC
//! and a local APIC per vCPU) is one implementation; a backend with an interrupt controller of
//! its own (KVM's in-kernel irqchip) can be another, and no device notices the difference.
//!
//! # Lines
//!
//! A line carries a level, as the wire on the board does. Lines 0-15 are the ISA IRQs and go to
//! the 8259A pair and to the I/O APIC (ISA IRQ 0 on pin 2, as PC firmware tables describe it);
//! lines 16-23 reach only the I/O APIC. An edge-triggered input latches a request when its
//! line goes from low to high, so a device that wants a second interrupt on an edge-triggered
//! line lowers it and raises it again; a level-triggered input requests for as long as the line
//! is high. Setting a line to the level it already has changes nothing.
//!
//! # The vCPU side
//!
//! Between guest instructions, at the points where the architecture lets an interrupt in, a
//! vCPU loop
//!
//! 1. takes any [`CpuSignal`] first ([`InterruptController::take_signal`]): INIT, start-up and
//!    NMI do not depend on RFLAGS.IF;
//! 2. if RFLAGS.IF is set and no interrupt shadow is active, calls
//!    [`InterruptController::acknowledge`]: the INTA cycle, which moves the chosen interrupt from
//!    requested to in service and returns its vector, for the vCPU to deliver through the IDT.
//!
//! [`InterruptController::pending_interrupt`] answers the same question without acknowledging
//! anything: whether the INTR pin is asserted now, and with which vector. A loop uses it to
//! decide whether HLT ends or whether to ask the backend for an interrupt window.
//! Acknowledging is one step rather than "peek, then confirm the vector peeked" because on the
//! hardware the INTA cycle itself picks the vector: a line that dropped, or a higher-priority
//! request that arrived, since the peek changes the answer, and the controller alone can give
//! the right one.
//!
//! The guest ends an interrupt by writing the EOI register of its controller, which goes
//! through the bus like any other register write. [`InterruptController::end_of_interrupt`] is
//! for a backend whose local APIC lives elsewhere (in the kernel) but reports EOIs of
//! level-triggered vectors, so the I/O APIC here can clear its Remote IRR.

use std::fmt;
use std::sync::Arc;

/// An event for a vCPU that RFLAGS.IF does not mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSignal {
    /// INIT: the vCPU resets and waits for a start-up IPI.
    Init,
    /// Start-up IPI: a vCPU waiting after INIT starts in real mode at `vector << 12`
    /// (CS = `vector << 8`, IP = 0).
    Startup {
        /// The start-up vector.
        vector: u8,
    },
    /// Non-maskable interrupt (vector 2).
    Nmi,
}

/// A machine's interrupt controller as devices and vCPU loops see it.
pub trait InterruptController: Send + Sync {
    /// Drives interrupt line `line` to `level` (high = asserted).
    fn set_irq_line(&self, line: u32, level: bool);
    /// The vector the INTR pin of vCPU `vcpu` would deliver now, if it is asserted.
    fn pending_interrupt(&self, vcpu: usize) -> Option<u8>;
    /// The INTA cycle: takes the highest-priority deliverable interrupt of vCPU `vcpu`, puts it
    /// in service and returns its vector; `None` if nothing is deliverable.
    fn acknowledge(&self, vcpu: usize) -> Option<u8>;
    /// An EOI for `vector` reached the I/O APIC from outside this controller.
    fn end_of_interrupt(&self, vector: u8);
    /// Takes the highest-ranking pending [`CpuSignal`] of vCPU `vcpu` (INIT, then start-up, then
    /// NMI).
    fn take_signal(&self, vcpu: usize) -> Option<CpuSignal>;
}

/// One interrupt line of a machine, as a device holds it.
#[derive(Clone)]
pub struct IrqLine {
    controller: Arc<dyn InterruptController>,
    line: u32,
}

impl IrqLine {
    /// Line `line` of `controller`.
    pub fn new(controller: Arc<dyn InterruptController>, line: u32) -> Self {
        Self { controller, line }
    }

    /// The line's number.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Drives the line to `level`.
    pub fn set_level(&self, level: bool) {
        self.controller.set_irq_line(self.line, level);
    }
}

impl fmt::Debug for IrqLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IrqLine({})", self.line)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A controller that remembers what its lines did, for device tests.

    use parking_lot::Mutex;

    use super::*;

    /// Records every level set on every line.
    #[derive(Default)]
    pub(crate) struct RecordingController {
        changes: Mutex<Vec<(u32, bool)>>,
    }

    impl RecordingController {
        /// A controller and a handle on its line `line`.
        pub(crate) fn with_line(line: u32) -> (Arc<Self>, IrqLine) {
            let controller = Arc::new(Self::default());
            let irq = IrqLine::new(controller.clone(), line);
            (controller, irq)
        }

        /// The level line `line` was last set to (low if never set).
        pub(crate) fn level(&self, line: u32) -> bool {
            self.changes
                .lock()
                .iter()
                .rev()
                .find(|(l, _)| *l == line)
                .is_some_and(|&(_, level)| level)
        }

        /// How many times line `line` went from low to high.
        pub(crate) fn rising_edges(&self, line: u32) -> usize {
            let mut level = false;
            let mut edges = 0;
            for &(l, new) in self.changes.lock().iter() {
                if l == line {
                    edges += usize::from(!level && new);
                    level = new;
                }
            }
            edges
        }
    }

    impl InterruptController for RecordingController {
        fn set_irq_line(&self, line: u32, level: bool) {
            self.changes.lock().push((line, level));
        }
        fn pending_interrupt(&self, _vcpu: usize) -> Option<u8> {
            None
        }
        fn acknowledge(&self, _vcpu: usize) -> Option<u8> {
            None
        }
        fn end_of_interrupt(&self, _vector: u8) {}
        fn take_signal(&self, _vcpu: usize) -> Option<CpuSignal> {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::RecordingController;

    #[test]
    fn a_line_drives_its_own_number_on_its_controller() {
        let (controller, irq) = RecordingController::with_line(4);
        assert_eq!(irq.line(), 4);
        irq.set_level(true);
        assert!(controller.level(4));
        assert!(!controller.level(3));
        irq.set_level(false);
        irq.set_level(true);
        assert_eq!(controller.rising_edges(4), 2);
        assert_eq!(format!("{irq:?}"), "IrqLine(4)");
    }
}
