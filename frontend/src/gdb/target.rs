//! The machine as gdbstub's target: one gdb thread per vCPU, registers and memory read and
//! written on the stopped vCPU (through [`DebugControl::call`]), breakpoints and watchpoints
//! handed to the backend.
//!
//! Memory addresses are guest virtual (linear) addresses, translated with the vCPU's current
//! CR3 by a side-effect-free walk ([`WalkMode::Probe`]: no accessed or dirty bits set, no fault
//! raised) that ignores the page's permissions, as a debugger's access does; or guest physical
//! addresses when physical mode is on (`monitor phys on`, or QEMU's
//! `maintenance packet Qqemu.PhyMemMode:1`). Only RAM and ROM are read: device memory is
//! never touched, so reading it cannot have side effects. Writes go through
//! [`Memslots::write`], which tells the shadow MMU, so shadow pages and cached decodes of the
//! bytes written stay coherent.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Arc;

use gdbstub::common::{Signal, Tid};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind as GdbWatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps, outputln};
use gdbstub::target::{Target, TargetError, TargetResult};
use umbra_cpu::backend::{BackendError, Vcpu, Vm};
use umbra_cpu::debug::{GuestDebug, WatchKind, Watchpoint};
use umbra_cpu::interp::msr::index::KERNEL_GS_BASE;
use umbra_mmu::addr::{Gpa, Gva};
use umbra_mmu::memslot::Memslots;
use umbra_mmu::paging::{PagingMode, is_canonical};
use umbra_mmu::walker::{Access, AccessKind, Privilege, WalkMode, Walker};

use super::arch::{UmbraRegisters, UmbraX86_64, VcpuState};
use super::control::{ControlError, DebugControl};
use super::monitor;

/// The gdb thread of vCPU 0.
pub const VCPU_THREAD: Tid = NonZeroUsize::MIN;

/// EFAULT: the reply to an access of memory that is not there.
const EFAULT: u8 = 14;

/// What of the machine a debugger may look at besides the vCPU.
#[derive(Clone)]
pub struct MachineView {
    /// Guest physical memory.
    pub memslots: Arc<Memslots>,
    /// The backend's VM.
    pub vm: Arc<dyn Vm>,
    /// The backend's name.
    pub backend: &'static str,
}

/// Why a target operation failed fatally (the session ends).
#[derive(Debug, thiserror::Error)]
pub enum TargetFailure {
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The vCPU could not be reached.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// A gdb session's view of the machine.
pub struct UmbraTarget {
    control: Arc<DebugControl>,
    pub(super) view: MachineView,
    /// Addresses are guest physical rather than virtual.
    pub physical_memory: bool,
    sw_breakpoints: BTreeSet<u64>,
    hw_breakpoints: BTreeSet<u64>,
    watchpoints: Vec<Watchpoint>,
    /// The resume gdb asked for is a single step.
    step: bool,
}

impl UmbraTarget {
    /// A session's target over `view`, reaching the vCPU through `control`.
    pub fn new(control: Arc<DebugControl>, view: MachineView) -> UmbraTarget {
        UmbraTarget {
            control,
            view,
            physical_memory: false,
            sw_breakpoints: BTreeSet::new(),
            hw_breakpoints: BTreeSet::new(),
            watchpoints: Vec::new(),
            step: false,
        }
    }

    /// Whether gdb set a software breakpoint (`Z0`) at `linear`.
    pub fn is_sw_breakpoint(&self, linear: u64) -> bool {
        self.sw_breakpoints.contains(&linear)
    }

    /// Runs `f` on the stopped vCPU.
    pub(super) fn on_vcpu<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Vcpu) -> Result<R, BackendError> + Send + 'static,
    ) -> Result<R, TargetFailure> {
        Ok(self.control.call(f)??)
    }

    /// The vCPU's walker, for translating addresses.
    pub(super) fn walker(&self) -> Result<Walker, TargetFailure> {
        self.on_vcpu(|vcpu| vcpu.walker())
    }

    fn state(vcpu: &dyn Vcpu) -> Result<VcpuState, BackendError> {
        Ok(VcpuState {
            regs: vcpu.registers()?,
            sregs: vcpu.system_registers()?,
            fx: vcpu.fx_state()?,
            k_gs_base: vcpu.msr(KERNEL_GS_BASE).unwrap_or(0),
        })
    }

    /// The guest physical address of `address` for a debugger's access: itself in physical
    /// mode, else its translation, whatever the page's permissions.
    fn guest_physical(&self, walker: Option<&Walker>, address: u64) -> Option<Gpa> {
        let Some(walker) = walker else {
            return Some(Gpa(address));
        };
        let mode = walker.role().paging_mode();
        let long = matches!(mode, PagingMode::Level4 | PagingMode::Level5);
        if long && !is_canonical(Gva(address), walker.role().la57()) {
            return None;
        }
        debug_translation(walker, &self.view.memslots, Gva(address))
    }

    /// Copies between guest memory at `start` and `len` bytes through `copy(gpa, offset, n)`,
    /// page by page, stopping at the first page that is not there; returns the bytes done.
    fn each_page(
        &self,
        start: u64,
        len: usize,
        mut copy: impl FnMut(Gpa, usize, usize) -> bool,
    ) -> Result<usize, TargetFailure> {
        let walker = if self.physical_memory {
            None
        } else {
            Some(self.walker()?)
        };
        let mut done = 0;
        while done < len {
            let address = start.wrapping_add(done as u64);
            let n = (0x1000 - (address & 0xfff) as usize).min(len - done);
            match self.guest_physical(walker.as_ref(), address) {
                Some(gpa) if copy(gpa, done, n) => done += n,
                _ => break,
            }
        }
        Ok(done)
    }

    /// Hands the breakpoints and watchpoints to the vCPU; `false` if the backend refused.
    fn apply_debug(&mut self) -> Result<bool, TargetFailure> {
        let debug = GuestDebug {
            single_step: false,
            breakpoints: self
                .sw_breakpoints
                .union(&self.hw_breakpoints)
                .copied()
                .collect(),
            watchpoints: self.watchpoints.clone(),
        };
        match self.control.set_debug(debug)? {
            Ok(()) => Ok(true),
            Err(refused) => {
                eprintln!("umbra: gdb: {refused}");
                Ok(false)
            }
        }
    }

    /// Adds or removes `address` in `set` and hands the result to the vCPU, undoing the change
    /// if the backend refuses it.
    fn change_breakpoint(
        &mut self,
        hardware: bool,
        address: u64,
        add: bool,
    ) -> TargetResult<bool, Self> {
        let set = if hardware {
            &mut self.hw_breakpoints
        } else {
            &mut self.sw_breakpoints
        };
        let changed = if add {
            set.insert(address)
        } else {
            set.remove(&address)
        };
        if !changed {
            return Ok(!add);
        }
        let applied = self.apply_debug().map_err(fatal)?;
        if !applied {
            let set = if hardware {
                &mut self.hw_breakpoints
            } else {
                &mut self.sw_breakpoints
            };
            if add {
                set.remove(&address);
            } else {
                set.insert(address);
            }
        }
        Ok(applied)
    }
}

/// Where a debugger's access to `gva` goes, whatever the page's permissions: a supervisor
/// read exempt from SMAP, with protection keys off, faults only where nothing is mapped.
pub fn debug_translation(walker: &Walker, memslots: &Memslots, gva: Gva) -> Option<Gpa> {
    let mut walker = walker.clone();
    walker.set_pkru(0);
    let access = Access::new(AccessKind::Read, Privilege::Supervisor).with_eflags_ac(true);
    walker
        .walk(memslots, gva, access, WalkMode::Probe)
        .ok()
        .map(|translation| translation.gpa)
}

/// A failure that ends the session.
fn fatal(failure: TargetFailure) -> TargetError<TargetFailure> {
    match failure {
        // A client that asks while the guest runs gets an error, not a closed connection.
        TargetFailure::Control(ControlError::Running) => TargetError::NonFatal,
        other => TargetError::Fatal(other),
    }
}

impl Target for UmbraTarget {
    type Arch = UmbraX86_64;
    type Error = TargetFailure;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadBase for UmbraTarget {
    fn read_registers(&mut self, regs: &mut UmbraRegisters, _tid: Tid) -> TargetResult<(), Self> {
        let state = self.on_vcpu(|vcpu| Self::state(vcpu)).map_err(fatal)?;
        *regs = state.to_gdb();
        Ok(())
    }

    fn write_registers(&mut self, regs: &UmbraRegisters, _tid: Tid) -> TargetResult<(), Self> {
        let regs = regs.clone();
        let written = self.on_vcpu(move |vcpu| {
            let now = Self::state(vcpu)?;
            let next = now.with_gdb(&regs);
            if next.regs != now.regs {
                vcpu.set_registers(&next.regs)?;
            }
            if next.sregs != now.sregs {
                vcpu.set_system_registers(&next.sregs)?;
            }
            if next.fx != now.fx {
                vcpu.set_fx_state(&next.fx)?;
            }
            if next.k_gs_base != now.k_gs_base {
                vcpu.set_msr(KERNEL_GS_BASE, next.k_gs_base)?;
            }
            Ok(())
        });
        match written {
            Ok(()) => Ok(()),
            Err(TargetFailure::Backend(refused)) => {
                eprintln!("umbra: gdb: register write refused: {refused}");
                Err(TargetError::NonFatal)
            }
            Err(other) => Err(fatal(other)),
        }
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], _tid: Tid) -> TargetResult<usize, Self> {
        let memslots = self.view.memslots.clone();
        let len = data.len();
        let done = self
            .each_page(start, len, |gpa, at, n| {
                memslots.read(gpa, &mut data[at..at + n]).is_ok()
            })
            .map_err(fatal)?;
        if done == 0 && len > 0 {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        let memslots = self.view.memslots.clone();
        let done = self
            .each_page(start, data.len(), |gpa, at, n| {
                memslots.write(gpa, &data[at..at + n]).is_ok()
            })
            .map_err(fatal)?;
        if done < data.len() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(())
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        thread_is_active(VCPU_THREAD);
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for UmbraTarget {
    fn resume(&mut self) -> Result<(), Self::Error> {
        self.control.resume(self.step);
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.step = false;
        Ok(())
    }

    /// A signal to deliver is ignored: the guest has no signals, and exceptions are not
    /// injected from the debugger.
    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

/// With one vCPU, resuming only the thread gdb names is resuming them all.
impl MultiThreadSchedulerLocking for UmbraTarget {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl MultiThreadSingleStep for UmbraTarget {
    fn set_resume_action_step(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        self.step = true;
        Ok(())
    }
}

impl Breakpoints for UmbraTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

/// Software breakpoints are kept by the backend like hardware ones (the emulator checks every
/// instruction; KVM uses its debug registers, or steps on PVM), rather than as INT3 bytes in
/// guest memory: firmware code runs from ROM, and PVM's instruction emulator cannot run INT3.
impl SwBreakpoint for UmbraTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.change_breakpoint(false, addr, true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.change_breakpoint(false, addr, false)
    }
}

impl HwBreakpoint for UmbraTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.change_breakpoint(true, addr, true)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.change_breakpoint(true, addr, false)
    }
}

impl HwWatchpoint for UmbraTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let watchpoint = Watchpoint {
            linear: addr,
            len: len.max(1),
            kind: match kind {
                GdbWatchKind::Write => WatchKind::Write,
                GdbWatchKind::Read => WatchKind::Read,
                GdbWatchKind::ReadWrite => WatchKind::Access,
            },
        };
        self.watchpoints.push(watchpoint);
        let applied = self.apply_debug().map_err(fatal)?;
        if !applied {
            self.watchpoints.pop();
        }
        Ok(applied)
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let Some(at) = self.watchpoints.iter().position(|w| {
            w.linear == addr
                && w.len == len.max(1)
                && matches!(
                    (w.kind, kind),
                    (WatchKind::Write, GdbWatchKind::Write)
                        | (WatchKind::Read, GdbWatchKind::Read)
                        | (WatchKind::Access, GdbWatchKind::ReadWrite)
                )
        }) else {
            return Ok(false);
        };
        let removed = self.watchpoints.remove(at);
        let applied = self.apply_debug().map_err(fatal)?;
        if !applied {
            self.watchpoints.insert(at, removed);
        }
        Ok(applied)
    }
}

impl MonitorCmd for UmbraTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(cmd);
        let text = match monitor::run(self, &command) {
            Ok(text) => text,
            Err(monitor::MonitorError::Target(failure)) => return Err(failure),
            Err(error) => format!("error: {error}"),
        };
        for line in text.lines() {
            outputln!(out, "{line}");
        }
        Ok(())
    }
}
