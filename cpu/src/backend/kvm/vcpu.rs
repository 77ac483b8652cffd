//! A KVM vCPU and its run loop step.
//!
//! # Debugging
//!
//! [`Vcpu::set_guest_debug`] maps onto KVM_SET_GUEST_DEBUG: breakpoints and watchpoints go into
//! the four debug registers the API lends the debugger (KVM_GUESTDBG_USE_HW_BP), and a
//! KVM_EXIT_DEBUG says from DR6 which one fired; a debug register watches writes, or reads and
//! writes together, so watching reads alone is refused, as QEMU does. That is exact on hardware
//! KVM, but PVM runs
//! guest kernel code in KVM's instruction emulator, which never looks at the debug registers
//! (nor handles INT3 for KVM_GUESTDBG_USE_SW_BP: emulation fails); only single-stepping works
//! there. So on PVM breakpoints are kept by single-stepping and comparing each instruction's
//! linear address (exact, and slow), and watchpoints are refused.

use std::sync::Arc;

use kvm_bindings::{
    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_GUESTDBG_BLOCKIRQ,
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
    KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, Msrs,
    kvm_debug_exit_arch, kvm_fpu, kvm_guest_debug, kvm_msr_entry, kvm_run,
};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};
use umbra_mmu::addr::Gpa;
use umbra_mmu::memslot::Memslots;
use umbra_mmu::paging::PagingMode;
use umbra_mmu::role::CpuRole;
use umbra_mmu::walker::Walker;

use super::KvmError;
use super::convert::apply_system_registers;
use crate::backend::kick::IMMEDIATE_EXIT;
use crate::backend::{BackendError, InterruptLines, IoHandler, Vcpu, VcpuExit, VcpuKick};
use crate::debug::{DebugStop, GuestDebug, WatchKind};
use crate::interp::fpu::FxState;
use crate::state::{CpuMode, RFLAGS_IF, RFLAGS_RF, Registers, SystemRegisters};

/// INT3's opcode.
const INT3: u8 = 0xcc;
/// FWAIT's opcode.
const FWAIT: u8 = 0x9b;
/// The x87 exception flags of FSW, and their masks in FCW.
const X87_EXCEPTIONS: u16 = 0x3f;
/// The breakpoint exception's vector.
const BREAKPOINT_VECTOR: u8 = 3;

/// DR6.BS: the debug exit was a single step.
const DR6_BS: u64 = 1 << 14;
/// DR7's GE bit and bit 10, which reads as 1: the base QEMU gives the debug registers too.
const DR7_BASE: u64 = 0x600;

/// What the VM tells each vCPU about the machine it runs on.
#[derive(Clone, Copy, Debug)]
pub(super) struct VcpuTraits {
    /// CPUID's MAXPHYADDR, for the walker.
    pub maxphyaddr: u8,
    /// CPUID's 1 GiB page support, for the walker.
    pub gbpages: bool,
    /// KVM ignores the debug registers in the guest code it runs (PVM): breakpoints are kept
    /// by single-stepping.
    pub breakpoints_by_stepping: bool,
    /// KVM_GUESTDBG_BLOCKIRQ is supported (KVM_CAP_SET_GUEST_DEBUG2).
    pub block_irq: bool,
}

/// A KVM vCPU.
pub struct KvmVcpu {
    fd: VcpuFd,
    io: Arc<dyn IoHandler>,
    /// The guest memory KVM runs this vCPU over, held so that it outlives the vCPU; the
    /// walker reads PAE PDPTEs from it.
    memslots: Arc<Memslots>,
    traits: VcpuTraits,
    debug: GuestDebug,
    /// The breakpoint the vCPU stopped at: the next run steps over it.
    resume_over: Option<u64>,
    kick: Arc<VcpuKick>,
    /// The machine's interrupt controller, when external interrupts come from userspace.
    lines: Option<Arc<dyn InterruptLines>>,
}

vmm_sys_util::ioctl_iow_nr!(
    KVM_INTERRUPT,
    kvm_bindings::KVMIO,
    0x86,
    kvm_bindings::kvm_interrupt
);

impl KvmVcpu {
    /// Wraps a vCPU that KVM created in the architectural reset state.
    pub(super) fn new(
        fd: VcpuFd,
        io: Arc<dyn IoHandler>,
        memslots: Arc<Memslots>,
        traits: VcpuTraits,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            fd,
            io,
            memslots,
            traits,
            debug: GuestDebug::default(),
            resume_over: None,
            kick: Arc::new(VcpuKick::new()),
            lines: None,
        })
    }

    /// Whether breakpoints are kept by stepping now.
    fn stepping_for_breakpoints(&self) -> bool {
        self.traits.breakpoints_by_stepping && !self.debug.breakpoints.is_empty()
    }

    /// The linear address of the next instruction.
    fn next_instruction_linear(&self) -> Result<u64, BackendError> {
        let rip = self.registers()?.rip;
        let sregs = self.system_registers()?;
        Ok(match sregs.mode() {
            CpuMode::Long => rip,
            _ => sregs.cs.base.wrapping_add(rip) & 0xffff_ffff,
        })
    }

    /// Programs KVM_SET_GUEST_DEBUG from `self.debug`.
    fn apply_guest_debug(&self) -> Result<(), BackendError> {
        let mut debug = kvm_guest_debug::default();
        let single_step = self.debug.single_step || self.stepping_for_breakpoints();
        if !self.traits.breakpoints_by_stepping {
            let mut dr7 = DR7_BASE;
            let slots = self
                .debug
                .breakpoints
                .iter()
                .map(|&linear| (linear, 0, 1))
                .chain(self.debug.watchpoints.iter().map(|w| {
                    let rw = if w.kind == WatchKind::Write {
                        0b01
                    } else {
                        0b11
                    };
                    (w.linear, rw, w.len)
                }));
            for (slot, (linear, rw, len)) in slots.enumerate() {
                let len_bits = match len {
                    8 => 0b10,
                    4 => 0b11,
                    2 => 0b01,
                    _ => 0b00,
                };
                debug.arch.debugreg[slot] = linear;
                // Gn: enabled for every task, as QEMU sets them.
                dr7 |= (2 << (2 * slot)) | (rw << (16 + 4 * slot)) | (len_bits << (18 + 4 * slot));
            }
            if dr7 != DR7_BASE {
                debug.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
                debug.arch.debugreg[7] = dr7;
            }
        }
        if single_step {
            debug.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
            // Interrupts stay masked while stepping, as QEMU does.
            if self.traits.block_irq {
                debug.control |= KVM_GUESTDBG_BLOCKIRQ;
            }
        }
        self.fd
            .set_guest_debug(&debug)
            .map_err(KvmError::ioctl("KVM_SET_GUEST_DEBUG"))
    }

    /// What a KVM_EXIT_DEBUG means: a step the caller asked for, a breakpoint or watchpoint
    /// from DR6, or (`None`) a step taken only to watch for breakpoints.
    fn debug_exit(&mut self, arch: &kvm_debug_exit_arch) -> Option<VcpuExit> {
        for slot in 0..4 {
            if arch.dr6 & (1 << slot) == 0 {
                continue;
            }
            let breakpoints = self.debug.breakpoints.len();
            if let Some(&linear) = self.debug.breakpoints.get(slot) {
                self.resume_over = Some(linear);
                return Some(VcpuExit::DebugStop(DebugStop::Breakpoint { linear }));
            }
            if let Some(watchpoint) = self.debug.watchpoints.get(slot - breakpoints) {
                return Some(VcpuExit::DebugStop(DebugStop::Watchpoint(*watchpoint)));
            }
        }
        if self.debug.single_step || arch.dr6 & DR6_BS == 0 {
            return Some(VcpuExit::Debug);
        }
        None
    }

    /// Before entering the guest: a breakpoint kept by stepping that the next instruction is
    /// at, or, at a debug-register breakpoint just reported, RFLAGS.RF so that the instruction
    /// runs instead of faulting again (the debugger's resume, as on hardware).
    fn before_entry(&mut self) -> Result<Option<VcpuExit>, BackendError> {
        let resume_over = self.resume_over.take();
        if resume_over.is_none() && !self.stepping_for_breakpoints() {
            return Ok(None);
        }
        let linear = self.next_instruction_linear()?;
        if resume_over == Some(linear) {
            if !self.traits.breakpoints_by_stepping {
                let mut regs = self.registers()?;
                regs.rflags |= RFLAGS_RF;
                self.set_registers(&regs)?;
            }
            return Ok(None);
        }
        if self.stepping_for_breakpoints() && self.debug.breakpoints.contains(&linear) {
            self.resume_over = Some(linear);
            return Ok(Some(VcpuExit::DebugStop(DebugStop::Breakpoint { linear })));
        }
        Ok(None)
    }

    /// Hands a pending external interrupt to KVM (KVM_INTERRUPT) when the guest can take it,
    /// or asks KVM to exit as soon as it can (`request_interrupt_window`), as a VMM with a
    /// userspace interrupt controller does (KVM's api.txt, KVM_INTERRUPT).
    fn offer_interrupt(&mut self) -> Result<(), BackendError> {
        let Some(lines) = self.lines.clone() else {
            return Ok(());
        };
        let run = self.fd.get_kvm_run();
        let pending = lines.pending();
        let ready = run.ready_for_interrupt_injection != 0 && run.if_flag != 0;
        run.request_interrupt_window = u8::from(pending && !ready);
        if pending
            && ready
            && let Some(vector) = lines.acknowledge()
        {
            let irq = kvm_bindings::kvm_interrupt { irq: vector.into() };
            // SAFETY: KVM_INTERRUPT reads one kvm_interrupt, the type its number encodes, from
            // a live reference; the fd is this vCPU's own, used from its own thread.
            let ret =
                unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
            if ret != 0 {
                return Err(KvmError::ioctl("KVM_INTERRUPT")(kvm_ioctls::Error::last()));
            }
        }
        Ok(())
    }

    /// One KVM_RUN, interruptible by a kick: the signal handler sets `immediate_exit` while
    /// this thread is registered, and a kick that came before registering is seen in the flag.
    fn enter(&mut self) -> Result<Pending, BackendError> {
        self.offer_interrupt()?;
        let kick = self.kick.clone();
        let guard = kick.enter_blocking();
        let run: *mut kvm_run = self.fd.get_kvm_run();
        // SAFETY: `run` points at this vCPU's mapped kvm_run, alive as long as `self.fd`.
        let immediate_exit = unsafe { &raw mut (*run).immediate_exit };
        IMMEDIATE_EXIT.with(|flag| flag.set(immediate_exit));
        if self.kick.take() {
            // SAFETY: as above; only this thread and its signal handler write the flag.
            unsafe { immediate_exit.write_volatile(1) };
        }
        let exit = self.exit_of_run();
        IMMEDIATE_EXIT.with(|flag| flag.set(std::ptr::null_mut()));
        drop(guard);
        // SAFETY: as above; the handler can no longer reach the flag.
        unsafe { immediate_exit.write_volatile(0) };
        exit
    }

    /// KVM_RUN, and the exit seen while kvm-ioctls still borrows the run page.
    fn exit_of_run(&mut self) -> Result<Pending, BackendError> {
        Ok(match self.fd.run() {
            Ok(KvmExit::IoIn(..) | KvmExit::IoOut(..)) => Pending::PortIo,
            Ok(KvmExit::MmioRead(addr, data)) => {
                self.io.mmio_read(Gpa(addr), data);
                Pending::Done(VcpuExit::Io)
            }
            Ok(KvmExit::MmioWrite(addr, data)) => {
                self.io.mmio_write(Gpa(addr), data);
                Pending::Done(VcpuExit::Io)
            }
            Ok(KvmExit::Hlt) => Pending::Halted,
            Ok(KvmExit::Shutdown) => Pending::Done(VcpuExit::Shutdown),
            Ok(KvmExit::FailEntry(reason, cpu)) => {
                Pending::Done(VcpuExit::FailEntry { reason, cpu })
            }
            Ok(KvmExit::InternalError) => Pending::InternalError,
            Ok(KvmExit::SystemEvent(kind, _)) => Pending::Done(VcpuExit::SystemEvent { kind }),
            Ok(KvmExit::Intr) => Pending::Interrupted,
            // The guest can take the interrupt asked for: the next entry hands it over.
            Ok(KvmExit::IrqWindowOpen) => Pending::Interrupted,
            Ok(KvmExit::Debug(arch)) => Pending::Debug(arch),
            Ok(_) => Pending::Unsupported,
            Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => Pending::Interrupted,
            Err(e) => return Err(KvmError::ioctl("KVM_RUN")(e)),
        })
    }

    /// Hands the port I/O that KVM just exited for to the devices, one access per element of
    /// a string instruction (`REP OUTSB` and friends arrive as one exit with a count).
    fn handle_pio(&mut self) {
        let run: *mut kvm_run = self.fd.get_kvm_run();
        // SAFETY: `run` points at this vCPU's mapped kvm_run, and KVM_RUN just returned with
        // exit_reason KVM_EXIT_IO, which makes `io` the union member KVM filled in.
        let io = unsafe { (*run).__bindgen_anon_1.io };
        let size = usize::from(io.size);
        let len = size * io.count as usize;
        // SAFETY: KVM places the I/O data at `data_offset` inside the vCPU's run mapping (on the
        // page after kvm_run), `size * count` bytes long; nothing else touches it until the next
        // KVM_RUN, which needs `&mut self.fd` and so cannot overlap this borrow.
        let data = unsafe {
            std::slice::from_raw_parts_mut(run.cast::<u8>().add(io.data_offset as usize), len)
        };
        for element in data.chunks_exact_mut(size.max(1)) {
            if u32::from(io.direction) == KVM_EXIT_IO_IN {
                self.io.pio_read(io.port, element);
            } else {
                self.io.pio_write(io.port, element);
            }
        }
    }

    /// The instruction KVM's emulator failed on, when the internal error is an emulation
    /// failure that carries its bytes (KVM_INTERNAL_ERROR_EMULATION with
    /// KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES: the flags word, then the length
    /// byte and 15 instruction bytes).
    fn unemulated_instruction(&mut self) -> Option<Vec<u8>> {
        let run = self.fd.get_kvm_run();
        // SAFETY: KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, so `internal` is the union member
        // KVM filled in.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let with_bytes = internal.suberror == KVM_INTERNAL_ERROR_EMULATION
            && internal.ndata >= 3
            && internal.data[0] & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)
                != 0;
        if !with_bytes {
            return None;
        }
        let bytes: Vec<u8> = internal.data[1..3]
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect();
        let len = usize::from(bytes[0]).min(15);
        Some(bytes[1..=len].to_vec())
    }

    /// Completes an instruction KVM's instruction emulator could not run, where Umbra can
    /// (PVM runs all guest kernel code in that emulator, and Linux executes both at boot):
    /// - INT3 (the emulator runs INT n only in real mode): RIP past it, then #BP injected
    ///   through KVM_SET_VCPU_EVENTS, so the frame holds the address after it, as INT3's does;
    /// - FWAIT with no unmasked x87 exception pending: nothing to do but step past it.
    ///
    /// `false`, with nothing changed, for any other failure (it ends the run).
    fn complete_unemulated(&mut self) -> Result<bool, BackendError> {
        let Some(&opcode) = self
            .unemulated_instruction()
            .as_deref()
            .and_then(|b| b.first())
        else {
            return Ok(false);
        };
        match opcode {
            INT3 => {
                self.step_past(1)?;
                let mut events = self
                    .fd
                    .get_vcpu_events()
                    .map_err(KvmError::ioctl("KVM_GET_VCPU_EVENTS"))?;
                events.exception.injected = 1;
                events.exception.nr = BREAKPOINT_VECTOR;
                events.exception.has_error_code = 0;
                self.fd
                    .set_vcpu_events(&events)
                    .map_err(KvmError::ioctl("KVM_SET_VCPU_EVENTS"))?;
                Ok(true)
            }
            FWAIT => {
                let fpu = self.fd.get_fpu().map_err(KvmError::ioctl("KVM_GET_FPU"))?;
                // An exception flagged in FSW and unmasked in FCW would raise #MF here.
                if fpu.fsw & !fpu.fcw & X87_EXCEPTIONS != 0 {
                    return Ok(false);
                }
                self.step_past(1)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Moves RIP past the `len` bytes of the current instruction.
    fn step_past(&mut self, len: u64) -> Result<(), BackendError> {
        let mut regs = self.registers()?;
        regs.rip = regs.rip.wrapping_add(len);
        self.set_registers(&regs)
    }

    /// KVM's account of an internal error: the suberror and the data words it gives.
    fn internal_error(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, so `internal` is the union member
        // KVM filled in.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let suberror = match internal.suberror {
            1 => "instruction emulation failed",
            2 => "simultaneous exceptions",
            3 => "delivery event failed",
            4 => "unexpected exit reason",
            _ => "unknown suberror",
        };
        let ndata = (internal.ndata as usize).min(internal.data.len());
        let data: Vec<String> = internal.data[..ndata]
            .iter()
            .map(|word| format!("{word:#x}"))
            .collect();
        format!(
            "KVM internal error {} ({suberror}), data [{}]",
            internal.suberror,
            data.join(" ")
        )
    }
}

impl Vcpu for KvmVcpu {
    fn run(&mut self) -> Result<VcpuExit, BackendError> {
        loop {
            if let Some(stop) = self.before_entry()? {
                return Ok(stop);
            }
            let exit = match self.enter()? {
                Pending::PortIo => {
                    debug_assert_eq!(self.fd.get_kvm_run().exit_reason, KVM_EXIT_IO);
                    self.handle_pio();
                    VcpuExit::Io
                }
                Pending::Halted => VcpuExit::Halted {
                    interrupts_enabled: self.registers()?.rflags & RFLAGS_IF != 0,
                },
                Pending::InternalError => {
                    debug_assert_eq!(self.fd.get_kvm_run().exit_reason, KVM_EXIT_INTERNAL_ERROR);
                    if self.complete_unemulated()? {
                        continue;
                    }
                    VcpuExit::InternalError {
                        description: self.internal_error(),
                    }
                }
                Pending::Unsupported => VcpuExit::Unsupported {
                    code: self.fd.get_kvm_run().exit_reason,
                },
                Pending::Interrupted => {
                    self.kick.take();
                    VcpuExit::Interrupted
                }
                Pending::Debug(arch) => match self.debug_exit(&arch) {
                    Some(exit) => exit,
                    None => continue,
                },
                Pending::Done(exit) => exit,
            };
            return Ok(exit);
        }
    }

    fn registers(&self) -> Result<Registers, BackendError> {
        let regs = self
            .fd
            .get_regs()
            .map_err(KvmError::ioctl("KVM_GET_REGS"))?;
        Ok((&regs).into())
    }

    fn set_registers(&mut self, regs: &Registers) -> Result<(), BackendError> {
        self.fd
            .set_regs(&regs.into())
            .map_err(KvmError::ioctl("KVM_SET_REGS"))
    }

    fn system_registers(&self) -> Result<SystemRegisters, BackendError> {
        let sregs = self
            .fd
            .get_sregs()
            .map_err(KvmError::ioctl("KVM_GET_SREGS"))?;
        Ok((&sregs).into())
    }

    fn set_system_registers(&mut self, sregs: &SystemRegisters) -> Result<(), BackendError> {
        let mut kvm = self
            .fd
            .get_sregs()
            .map_err(KvmError::ioctl("KVM_GET_SREGS"))?;
        apply_system_registers(sregs, &mut kvm);
        self.fd
            .set_sregs(&kvm)
            .map_err(KvmError::ioctl("KVM_SET_SREGS"))
    }

    /// Breakpoints and watchpoints share the four debug registers; on PVM breakpoints are
    /// kept by stepping instead and watchpoints are refused (see the module's docs).
    fn set_guest_debug(&mut self, debug: &GuestDebug) -> Result<(), BackendError> {
        if self.traits.breakpoints_by_stepping && !debug.watchpoints.is_empty() {
            return Err(BackendError::DebugUnsupported(
                "PVM runs guest kernel code in KVM's instruction emulator, which ignores the \
                 debug registers: no watchpoints (gdb: set can-use-hw-watchpoints 0)"
                    .to_owned(),
            ));
        }
        if debug.watchpoints.iter().any(|w| w.kind == WatchKind::Read) {
            return Err(BackendError::DebugUnsupported(
                "the debug registers cannot watch reads alone (use awatch)".to_owned(),
            ));
        }
        let slots = if self.traits.breakpoints_by_stepping {
            0
        } else {
            debug.breakpoints.len()
        } + debug.watchpoints.len();
        if slots > 4 {
            return Err(BackendError::DebugUnsupported(format!(
                "KVM lends a debugger 4 debug registers; {slots} breakpoints and watchpoints \
                 asked for"
            )));
        }
        if let Some(w) = debug
            .watchpoints
            .iter()
            .find(|w| !matches!(w.len, 1 | 2 | 4 | 8) || w.linear % w.len != 0)
        {
            return Err(BackendError::DebugUnsupported(format!(
                "a debug register watches 1, 2, 4 or 8 aligned bytes, not {} at {:#x}",
                w.len, w.linear
            )));
        }
        let previous = std::mem::replace(&mut self.debug, debug.clone());
        self.apply_guest_debug()
            .inspect_err(|_| self.debug = previous)
    }

    fn set_interrupt_lines(&mut self, lines: Arc<dyn InterruptLines>) -> bool {
        self.lines = Some(lines);
        true
    }

    fn kick_handle(&self) -> Arc<VcpuKick> {
        self.kick.clone()
    }

    fn fx_state(&self) -> Result<FxState, BackendError> {
        let fpu = self.fd.get_fpu().map_err(KvmError::ioctl("KVM_GET_FPU"))?;
        let mut state = FxState::default();
        state.fcw = fpu.fcw;
        state.fsw = fpu.fsw;
        state.ftw = fpu.ftwx;
        state.fop = fpu.last_opcode;
        state.fip = fpu.last_ip;
        state.fdp = fpu.last_dp;
        state.mxcsr = fpu.mxcsr;
        for (st, bytes) in state.st.iter_mut().zip(fpu.fpr.iter()) {
            *st = u128::from_le_bytes(*bytes);
        }
        for (xmm, bytes) in state.xmm.iter_mut().zip(fpu.xmm.iter()) {
            *xmm = u128::from_le_bytes(*bytes);
        }
        Ok(state)
    }

    fn set_fx_state(&mut self, state: &FxState) -> Result<(), BackendError> {
        let fpu = kvm_fpu {
            fpr: state.st.map(u128::to_le_bytes),
            fcw: state.fcw,
            fsw: state.fsw,
            ftwx: state.ftw,
            last_opcode: state.fop,
            last_ip: state.fip,
            last_dp: state.fdp,
            xmm: state.xmm.map(u128::to_le_bytes),
            mxcsr: state.mxcsr,
            ..Default::default()
        };
        self.fd
            .set_fpu(&fpu)
            .map_err(KvmError::ioctl("KVM_SET_FPU"))
    }

    fn msr(&self, index: u32) -> Result<u64, BackendError> {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .map_err(|_| BackendError::UnknownMsr(index))?;
        let read = self
            .fd
            .get_msrs(&mut msrs)
            .map_err(KvmError::ioctl("KVM_GET_MSRS"))?;
        match msrs.as_slice() {
            [entry] if read == 1 => Ok(entry.data),
            _ => Err(BackendError::UnknownMsr(index)),
        }
    }

    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), BackendError> {
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            data: value,
            ..Default::default()
        }])
        .map_err(|_| BackendError::UnknownMsr(index))?;
        match self.fd.set_msrs(&msrs) {
            Ok(1) => Ok(()),
            Ok(_) => Err(BackendError::InvalidState(format!(
                "KVM refuses MSR {index:#x} <- {value:#x}"
            ))),
            Err(e) => Err(KvmError::ioctl("KVM_SET_MSRS")(e)),
        }
    }

    /// The walker of the vCPU's paging state as KVM_GET_SREGS gives it; PAE PDPTEs are read
    /// from the table CR3 names (as QEMU's debugger does), and protection keys are not looked
    /// at.
    fn walker(&self) -> Result<Walker, BackendError> {
        let sregs = self.system_registers()?;
        let mut walker = Walker::new(self.traits.maxphyaddr, self.traits.gbpages)
            .map_err(|e| BackendError::InvalidState(e.to_string()))?;
        walker.set_role(CpuRole::from_regs(sregs.cr0, sregs.cr4, sregs.efer));
        walker.set_cr3(sregs.cr3);
        if walker.role().paging_mode() == PagingMode::Pae
            && let Ok(pdptrs) = walker.load_pdptrs(sregs.cr3, &*self.memslots)
        {
            walker.set_pdptrs(pdptrs);
        }
        Ok(walker)
    }

    fn kernel_stats(&self) -> Result<Vec<(String, u64)>, BackendError> {
        super::stats::read(&self.fd)
    }
}

/// An exit seen while kvm-ioctls still borrows the run page.
enum Pending {
    /// Port I/O, to be handed to the devices from the run page.
    PortIo,
    /// HLT: RFLAGS.IF still to be read.
    Halted,
    /// KVM_EXIT_INTERNAL_ERROR: its data still to be read.
    InternalError,
    /// An exit reason this backend does not handle: its code still to be read.
    Unsupported,
    /// KVM_RUN was interrupted (a kick).
    Interrupted,
    /// KVM_EXIT_DEBUG, with what KVM says about it.
    Debug(kvm_debug_exit_arch),
    /// Nothing more to look at.
    Done(VcpuExit),
}
