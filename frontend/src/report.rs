//! How a finished run is told to the user: one summary line and the process's exit status.

use crate::cli::ExitCodeStyle;
use crate::machine::{RunEnd, RunOutcome};

/// The exit status when the guest or the backend failed without a status of its own.
pub const EXIT_GUEST_FAILURE: u8 = 1;
/// The exit status for bad input on Umbra's own command line or files.
pub const EXIT_BAD_INPUT: u8 = 2;

/// The one line printed on stderr at the end of a run.
pub fn summary_line(backend: &str, outcome: &RunOutcome) -> String {
    format!(
        "umbra: {backend}: {}; {:.3} s wall, {} exits",
        outcome.end,
        outcome.wall.as_secs_f64(),
        outcome.exits
    )
}

/// The process exit status for a run that ended with `end`.
///
/// A debug-exit status `v` gives `v` (clamped to 255 so that a failure never wraps around to
/// success), or QEMU's `(v << 1) | 1` in its low eight bits. A guest that halts has finished
/// cleanly; one that triple-faults, that the backend cannot run, or that a debugger killed has
/// failed.
pub fn exit_status(end: &RunEnd, style: ExitCodeStyle) -> u8 {
    match (end, style) {
        (RunEnd::DebugExit { status }, ExitCodeStyle::Umbra) => (*status).min(255) as u8,
        (RunEnd::DebugExit { status }, ExitCodeStyle::Qemu) => ((status << 1) | 1) as u8,
        (RunEnd::Halted { .. }, _) => 0,
        (RunEnd::PlatformEvent(_), _) => 0,
        (RunEnd::Shutdown { .. } | RunEnd::BackendFailure(_) | RunEnd::Killed, _) => {
            EXIT_GUEST_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use umbra_cpu::state::CpuMode;

    use super::*;

    #[test]
    fn debug_exit_statuses_map_as_documented() {
        let exit = |status| RunEnd::DebugExit { status };
        assert_eq!(exit_status(&exit(0), ExitCodeStyle::Umbra), 0);
        assert_eq!(exit_status(&exit(3), ExitCodeStyle::Umbra), 3);
        assert_eq!(exit_status(&exit(256), ExitCodeStyle::Umbra), 255);
        assert_eq!(exit_status(&exit(0), ExitCodeStyle::Qemu), 1);
        assert_eq!(exit_status(&exit(1), ExitCodeStyle::Qemu), 3);
        let shutdown = RunEnd::Shutdown {
            rip: 0,
            mode: CpuMode::Real,
        };
        assert_eq!(
            exit_status(&shutdown, ExitCodeStyle::Qemu),
            EXIT_GUEST_FAILURE
        );
    }

    #[test]
    fn the_summary_is_one_line() {
        let outcome = RunOutcome {
            end: RunEnd::DebugExit { status: 0 },
            exits: 42,
            wall: Duration::from_millis(1500),
        };
        assert_eq!(
            summary_line("kvm", &outcome),
            "umbra: kvm: isa-debug-exit, status 0; 1.500 s wall, 42 exits"
        );
    }
}
