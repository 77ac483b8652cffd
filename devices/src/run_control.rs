//! How devices and the host side ask the whole machine to stop.
//!
//! A device that ends the run (QEMU's `isa-debug-exit`, a reset through the keyboard
//! controller, a user's quit key) records why here; every vCPU loop checks [`RunControl::stop_reason`]
//! after each exit to its own loop and returns. The first reason recorded wins.

use std::sync::OnceLock;

/// Why the machine stopped at a device's or the user's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote `status` to the debug-exit port.
    DebugExit {
        /// The value written.
        status: u32,
    },
    /// The guest asked for a reset.
    Reset,
    /// The guest powered the machine off.
    PowerOff,
    /// The user asked to quit.
    UserQuit,
}

/// The machine-wide stop request, shared by devices and vCPU loops.
#[derive(Debug, Default)]
pub struct RunControl {
    reason: OnceLock<StopReason>,
}

impl RunControl {
    /// A machine with no stop requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the machine to stop; a later request does not replace the first.
    pub fn request_stop(&self, reason: StopReason) {
        let _first_wins = self.reason.set(reason);
    }

    /// The reason the machine was asked to stop, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_request_wins() {
        let control = RunControl::new();
        assert_eq!(control.stop_reason(), None);
        control.request_stop(StopReason::DebugExit { status: 3 });
        control.request_stop(StopReason::UserQuit);
        assert_eq!(
            control.stop_reason(),
            Some(StopReason::DebugExit { status: 3 })
        );
    }
}
