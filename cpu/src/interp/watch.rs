//! Watchpoints: a debugger's data breakpoints, checked on every data access the interpreter
//! makes (explicit operands, implicit stack and system-structure accesses, event delivery).
//!
//! With no watchpoint set an access pays one test of an empty list. A hit is recorded and the
//! instruction runs to its end; the vCPU loop reports it then, as the processor reports a
//! data breakpoint: a trap after the instruction.

use super::Interpreter;
use crate::debug::Watchpoint;

/// The watchpoints and the first hit of the current step.
#[derive(Clone, Debug, Default)]
pub(crate) struct Watch {
    points: Vec<Watchpoint>,
    hit: Option<Watchpoint>,
}

impl Interpreter {
    /// Replaces the watchpoints.
    pub fn set_watchpoints(&mut self, points: &[Watchpoint]) {
        self.watch.points = points.to_vec();
        self.watch.hit = None;
    }

    /// Whether any watchpoint is set.
    pub fn watching(&self) -> bool {
        !self.watch.points.is_empty()
    }

    /// The watchpoint an access since the last call hit, if any.
    pub fn take_watch_hit(&mut self) -> Option<Watchpoint> {
        self.watch.hit.take()
    }

    /// Notes a data access of `len` bytes at `linear`.
    #[inline]
    pub(crate) fn watch_access(&mut self, linear: u64, len: usize, write: bool) {
        if !self.watch.points.is_empty() {
            self.check_watchpoints(linear, len, write);
        }
    }

    #[cold]
    fn check_watchpoints(&mut self, linear: u64, len: usize, write: bool) {
        if self.watch.hit.is_some() {
            return;
        }
        self.watch.hit = self
            .watch
            .points
            .iter()
            .find(|point| point.hit_by(linear, len as u64, write))
            .copied();
    }
}
