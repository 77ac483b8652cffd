//! What a debugger asks of a vCPU: single-stepping, instruction breakpoints and watchpoints
//! ([`GuestDebug`], KVM's `kvm_guest_debug` in backend-neutral form), and what the vCPU
//! reports when one of them stops it ([`DebugStop`]).
//!
//! Addresses are linear: a breakpoint matches the linear address of the next instruction
//! (CS.base + RIP outside 64-bit mode), as the debug registers and QEMU's breakpoints do, so a
//! symbol's linked address works in every mode where code runs at its linked linear address.

/// The accesses a watchpoint reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// Stores.
    Write,
    /// Loads.
    Read,
    /// Loads and stores.
    Access,
}

impl WatchKind {
    /// Whether an access that stores (`write`) or loads matches.
    pub fn matches(self, write: bool) -> bool {
        match self {
            WatchKind::Write => write,
            WatchKind::Read => !write,
            WatchKind::Access => true,
        }
    }
}

/// A watched range of linear addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Watchpoint {
    /// The first byte watched.
    pub linear: u64,
    /// How many bytes are watched (at least 1).
    pub len: u64,
    /// Which accesses stop the vCPU.
    pub kind: WatchKind,
}

impl Watchpoint {
    /// Whether an access of `len` bytes at `linear`, a store if `write`, touches this
    /// watchpoint's range in a way it reports. Ranges may wrap around the top of the address
    /// space, as an access may.
    pub fn hit_by(&self, linear: u64, len: u64, write: bool) -> bool {
        let overlaps = linear.wrapping_sub(self.linear) < self.len.max(1)
            || self.linear.wrapping_sub(linear) < len.max(1);
        overlaps && self.kind.matches(write)
    }
}

/// What stops a vCPU, besides the guest itself: set with
/// [`Vcpu::set_guest_debug`](crate::backend::Vcpu::set_guest_debug).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    /// Stop after every instruction: [`VcpuExit::Debug`](crate::backend::VcpuExit::Debug).
    pub single_step: bool,
    /// Stop before executing an instruction at one of these linear addresses.
    pub breakpoints: Vec<u64>,
    /// Stop after an instruction whose data access matched one of these.
    pub watchpoints: Vec<Watchpoint>,
}

/// Why a breakpoint or watchpoint stopped a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugStop {
    /// The next instruction is at a breakpoint: it has not run. Running on from here executes
    /// it rather than stopping again, as RFLAGS.RF does for the debug registers.
    Breakpoint {
        /// Its linear address.
        linear: u64,
    },
    /// The instruction that just completed made an access the watchpoint reports.
    Watchpoint(Watchpoint),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchpoints_match_overlapping_accesses_of_their_kind() {
        let w = Watchpoint {
            linear: 0x1000,
            len: 8,
            kind: WatchKind::Write,
        };
        assert!(w.hit_by(0x1000, 1, true));
        assert!(w.hit_by(0x1007, 4, true));
        assert!(w.hit_by(0xffc, 8, true));
        assert!(!w.hit_by(0xff8, 8, true));
        assert!(!w.hit_by(0x1008, 8, true));
        assert!(!w.hit_by(0x1000, 8, false));
        let read = Watchpoint {
            kind: WatchKind::Read,
            ..w
        };
        assert!(read.hit_by(0x1004, 2, false) && !read.hit_by(0x1004, 2, true));
        let top = Watchpoint {
            linear: u64::MAX,
            len: 1,
            kind: WatchKind::Access,
        };
        assert!(top.hit_by(u64::MAX - 3, 8, false));
        assert!(!top.hit_by(0, 8, false));
    }
}
