//! Where the machine's vCPU loop and a debugger meet.
//!
//! The vCPU belongs to the thread that runs the machine; a debugger on another thread never
//! touches it directly. Instead it asks the vCPU to stop (a kick makes the current run return
//! soon), and while the vCPU is *parked* in [`DebugControl::before_run`] the debugger hands it
//! closures to run on the vCPU ([`DebugControl::call`]): read registers, set breakpoints. A
//! resume lets the loop go on, single-stepping or not. So every access to the vCPU happens on
//! its own thread, between two runs, and the machine loop stays the only owner.
//!
//! The vCPU parks when the debugger asked it to (an interrupt, attaching, `-S`), or when a
//! step, breakpoint or watchpoint stopped it; on parking it tells the attached session why.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use umbra_cpu::backend::{BackendError, Vcpu, VcpuExit, VcpuKick};
use umbra_cpu::debug::{DebugStop, GuestDebug, Watchpoint};

/// How long the end of a run waits for the session to tell the client.
const END_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the vCPU stopped or the run ended, as the debugger hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The debugger interrupted the run.
    Interrupted,
    /// A single step completed.
    Stepped,
    /// The next instruction is at this breakpoint.
    Breakpoint(u64),
    /// The last instruction hit this watchpoint.
    Watchpoint(Watchpoint),
    /// The guest ended with this isa-debug-exit status (or 0 for a clean reset, power-off or
    /// final halt).
    Exited(u8),
    /// The run ended otherwise (a triple fault, a backend failure, the debugger's kill).
    Terminated,
}

/// What a session's thread waits for: bytes from its client, or news from the vCPU.
#[derive(Debug)]
pub enum SessionEvent {
    /// Bytes the client sent.
    Data(Vec<u8>),
    /// The client closed the connection.
    Closed,
    /// The vCPU stopped, or the run ended.
    Stopped(Stop),
}

/// The machine's run is over: the vCPU is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The run is over.
    #[error("the machine has stopped running")]
    Ended,
    /// The vCPU is running: stop it first.
    #[error("the vCPU is running")]
    Running,
}

/// What the debugger wants the vCPU to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Stopped,
    Running,
    Stepping,
}

type Call = Box<dyn FnOnce(&mut dyn Vcpu) + Send>;

struct State {
    mode: Mode,
    /// The vCPU waits in `before_run`.
    parked: bool,
    /// Why the vCPU is stopping, for the session once it has parked.
    report: Option<Stop>,
    calls: VecDeque<Call>,
    /// The breakpoints and watchpoints; single-stepping follows `mode`.
    debug: GuestDebug,
    /// `debug` changed since the vCPU last got it.
    debug_changed: bool,
    /// Whether the vCPU last got single-stepping on.
    stepping_applied: bool,
    listener: Option<Sender<SessionEvent>>,
    kill: bool,
    ended: bool,
    end_reported: bool,
}

impl State {
    fn tell(&self, event: SessionEvent) {
        if let Some(listener) = &self.listener {
            // A session that went away is noticed by its own thread.
            let _ = listener.send(event);
        }
    }
}

/// The meeting point of the vCPU loop and a debugger; see the module's documentation.
pub struct DebugControl {
    state: Mutex<State>,
    changed: Condvar,
    kick: Arc<VcpuKick>,
}

impl DebugControl {
    /// A control for the vCPU `kick` interrupts, holding it from the start if `start_stopped`
    /// (QEMU's `-S`).
    pub fn new(kick: Arc<VcpuKick>, start_stopped: bool) -> DebugControl {
        DebugControl {
            state: Mutex::new(State {
                mode: if start_stopped {
                    Mode::Stopped
                } else {
                    Mode::Running
                },
                parked: false,
                report: None,
                calls: VecDeque::new(),
                debug: GuestDebug::default(),
                debug_changed: false,
                stepping_applied: false,
                listener: None,
                kill: false,
                ended: false,
                end_reported: false,
            }),
            changed: Condvar::new(),
            kick,
        }
    }

    // ---- The vCPU's side.

    /// Called by the machine loop before each run: parks while the debugger holds the vCPU,
    /// running its calls, then gives the vCPU what it must stop for. Returns `true` when the
    /// debugger asked to end the run.
    pub fn before_run(&self, vcpu: &mut dyn Vcpu) -> Result<bool, BackendError> {
        let mut state = self.state.lock();
        if state.mode == Mode::Stopped && !state.kill {
            state.parked = true;
            if let Some(stop) = state.report.take() {
                state.tell(SessionEvent::Stopped(stop));
            }
            self.changed.notify_all();
            while state.mode == Mode::Stopped && !state.kill {
                match state.calls.pop_front() {
                    Some(call) => MutexGuard::unlocked(&mut state, || call(vcpu)),
                    None => self.changed.wait(&mut state),
                }
            }
            state.parked = false;
        }
        if state.kill {
            return Ok(true);
        }
        let stepping = state.mode == Mode::Stepping;
        if state.debug_changed || stepping != state.stepping_applied {
            let debug = GuestDebug {
                single_step: stepping,
                ..state.debug.clone()
            };
            state.debug_changed = false;
            state.stepping_applied = stepping;
            drop(state);
            vcpu.set_guest_debug(&debug)?;
        }
        Ok(false)
    }

    /// Called by the machine loop after each run: a completed step, a breakpoint or a
    /// watchpoint stops the vCPU for the debugger.
    pub fn after_run(&self, exit: &VcpuExit) {
        let mut state = self.state.lock();
        // A breakpoint of a client that just went away stops nothing: its session's
        // breakpoints are dropped before the next run.
        if state.listener.is_none() {
            return;
        }
        let stop = match exit {
            VcpuExit::Debug if state.mode == Mode::Stepping => Stop::Stepped,
            VcpuExit::DebugStop(DebugStop::Breakpoint { linear }) => Stop::Breakpoint(*linear),
            VcpuExit::DebugStop(DebugStop::Watchpoint(watchpoint)) => Stop::Watchpoint(*watchpoint),
            _ => return,
        };
        state.mode = Mode::Stopped;
        state.report = Some(stop);
    }

    /// The run is over: runs the calls still queued against the vCPU's last state, tells the
    /// session, and waits a little for it to tell its client.
    pub fn finish(&self, vcpu: &mut dyn Vcpu, stop: Stop) {
        let mut state = self.state.lock();
        state.ended = true;
        while let Some(call) = state.calls.pop_front() {
            MutexGuard::unlocked(&mut state, || call(vcpu));
        }
        self.changed.notify_all();
        if state.listener.is_none() {
            return;
        }
        state.tell(SessionEvent::Stopped(stop));
        let deadline = std::time::Instant::now() + END_REPORT_TIMEOUT;
        while !state.end_reported && !self.changed.wait_until(&mut state, deadline).timed_out() {}
    }

    // ---- The debugger's side.

    /// A session starts: stops the vCPU (as QEMU does when gdb connects) and waits until it
    /// has parked. Stops are told to `listener` from now on.
    pub fn attach(&self, listener: Sender<SessionEvent>) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        if state.ended {
            return Err(ControlError::Ended);
        }
        state.listener = Some(listener);
        state.report = None;
        if state.mode != Mode::Stopped {
            state.mode = Mode::Stopped;
            self.kick.kick();
        }
        while !state.parked && !state.ended {
            self.changed.wait(&mut state);
        }
        if state.ended {
            return Err(ControlError::Ended);
        }
        Ok(())
    }

    /// The session is over: its breakpoints and watchpoints go; the vCPU runs on if `resume`
    /// (gdb's `detach`), or stays as it is (a dropped connection).
    pub fn detach(&self, resume: bool) {
        let mut state = self.state.lock();
        state.listener = None;
        state.debug = GuestDebug::default();
        state.debug_changed = true;
        if resume && state.mode != Mode::Running {
            state.mode = Mode::Running;
            state.report = None;
        }
        self.changed.notify_all();
    }

    /// Lets the vCPU run, one instruction if `step`.
    pub fn resume(&self, step: bool) {
        let mut state = self.state.lock();
        state.mode = if step { Mode::Stepping } else { Mode::Running };
        state.report = None;
        self.changed.notify_all();
    }

    /// Stops a running vCPU; it tells the session when it has parked.
    pub fn interrupt(&self) {
        let mut state = self.state.lock();
        if state.mode == Mode::Stopped {
            return;
        }
        state.mode = Mode::Stopped;
        if state.parked {
            // Resumed, but it has not left its parking place yet, and now never will: it
            // is stopped already.
            state.tell(SessionEvent::Stopped(Stop::Interrupted));
        } else {
            state.report = Some(Stop::Interrupted);
            self.kick.kick();
        }
    }

    /// Ends the run (gdb's `kill`).
    pub fn kill(&self) {
        let mut state = self.state.lock();
        state.kill = true;
        self.kick.kick();
        self.changed.notify_all();
    }

    /// The session has told its client that the run ended.
    pub fn end_reported(&self) {
        self.state.lock().end_reported = true;
        self.changed.notify_all();
    }

    /// Runs `f` on the stopped vCPU's thread and returns what it returns. Refused while the
    /// vCPU runs (a client that sends requests while it waits for a stop gets errors, and
    /// blocks nothing).
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Vcpu) -> R + Send + 'static,
    ) -> Result<R, ControlError> {
        let (reply, result) = mpsc::sync_channel(1);
        {
            let mut state = self.state.lock();
            if state.ended {
                return Err(ControlError::Ended);
            }
            if state.mode != Mode::Stopped {
                return Err(ControlError::Running);
            }
            state.calls.push_back(Box::new(move |vcpu| {
                let _ = reply.send(f(vcpu));
            }));
            self.changed.notify_all();
        }
        result.recv().map_err(|_| ControlError::Ended)
    }

    /// Replaces the breakpoints and watchpoints, on the stopped vCPU at once so that one it
    /// cannot keep is refused now, when the client can be told.
    pub fn set_debug(&self, debug: GuestDebug) -> Result<Result<(), BackendError>, ControlError> {
        let stepping = self.state.lock().stepping_applied;
        let given = debug.clone();
        let applied = self.call(move |vcpu| {
            vcpu.set_guest_debug(&GuestDebug {
                single_step: stepping,
                ..given
            })
        })?;
        if applied.is_ok() {
            let mut state = self.state.lock();
            state.debug = debug;
            state.debug_changed = false;
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use umbra_cpu::backend::emu::EmuHypervisor;
    use umbra_cpu::backend::{Hypervisor, NoDevices};
    use umbra_mmu::memslot::Memslots;

    use super::*;

    /// A vCPU held at reset, run by a loop like the machine's on its own thread.
    fn held_vcpu() -> (Arc<DebugControl>, std::thread::JoinHandle<()>) {
        let vm = EmuHypervisor.create_vm(Arc::new(Memslots::new())).unwrap();
        let mut vcpu = vm.create_vcpu(0, Arc::new(NoDevices)).unwrap();
        let control = Arc::new(DebugControl::new(vcpu.kick_handle(), true));
        let looping = control.clone();
        let thread = std::thread::spawn(move || {
            while !looping.before_run(&mut *vcpu).unwrap() {
                let exit = vcpu.run().unwrap();
                looping.after_run(&exit);
            }
        });
        (control, thread)
    }

    #[test]
    fn the_debugger_stops_reads_resumes_and_kills() {
        let (control, thread) = held_vcpu();
        let (listener, events) = mpsc::channel();
        control.attach(listener).unwrap();
        let rip = control.call(|vcpu| vcpu.registers().unwrap().rip);
        assert_eq!(rip, Ok(0xfff0));

        control.resume(false);
        assert_eq!(control.call(|_| ()), Err(ControlError::Running));
        control.interrupt();
        assert!(matches!(
            events.recv_timeout(Duration::from_secs(10)),
            Ok(SessionEvent::Stopped(Stop::Interrupted))
        ));
        assert_eq!(control.call(|_| ()), Ok(()));

        // An interrupt that comes before the vCPU has left its parking place.
        for _ in 0..100 {
            control.resume(false);
            control.interrupt();
            assert!(matches!(
                events.recv_timeout(Duration::from_secs(10)),
                Ok(SessionEvent::Stopped(Stop::Interrupted))
            ));
        }

        control.resume(true);
        assert!(matches!(
            events.recv_timeout(Duration::from_secs(10)),
            Ok(SessionEvent::Stopped(Stop::Stepped))
        ));

        control.detach(true);
        control.kill();
        thread.join().unwrap();
    }
}
