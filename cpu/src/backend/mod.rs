//! The seam between a machine and what runs its guest code.
//!
//! Three traits in the shape of a hypervisor API: a [`Hypervisor`] makes a [`Vm`] over the
//! machine's memslots, a `Vm` makes [`Vcpu`]s, and [`Vcpu::run`] runs guest code until
//! something needs the machine's attention, returning a small owned [`VcpuExit`]. Port and MMIO
//! accesses reach the devices through the [`IoHandler`] handed to each vCPU when it is created,
//! during `run`, so no borrow of a backend's internals (such as KVM's shared run page) ever
//! escapes it.

pub mod emu;
mod kick;
pub mod kvm;

use std::sync::Arc;

use umbra_mmu::addr::Gpa;
use umbra_mmu::memslot::{Memslots, SlotId};
use umbra_mmu::vcpu_mmu::MmuSnapshot;
use umbra_mmu::walker::Walker;

pub use kick::VcpuKick;

use crate::debug::{DebugStop, GuestDebug};
use crate::interp::fpu::FxState;
use crate::state::{Registers, SystemRegisters};

/// Where a vCPU's port and MMIO accesses go: the machine's device buses.
pub trait IoHandler: Send + Sync {
    /// An `IN` of `data.len()` bytes from `port`; the handler fills `data`.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// An `OUT` of `data` to `port`.
    fn pio_write(&self, port: u16, data: &[u8]);
    /// A load of `data.len()` bytes from an address that is not RAM.
    fn mmio_read(&self, gpa: Gpa, data: &mut [u8]);
    /// A store to an address that is not RAM (or is read-only memory).
    fn mmio_write(&self, gpa: Gpa, data: &[u8]);
}

/// Where a vCPU takes external interrupts from: the machine's interrupt controller, as the
/// INTR pin and the interrupt-acknowledge cycle see it.
pub trait InterruptLines: Send + Sync {
    /// Whether an interrupt waits for this vCPU (no side effects).
    fn pending(&self) -> bool;

    /// The interrupt-acknowledge cycle: the vector to take now, if one is still pending.
    fn acknowledge(&self) -> Option<u8>;
}

/// A machine with no devices: port and MMIO reads float high (all ones), writes vanish. For
/// tests and benchmarks that run guest code on a bare vCPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDevices;

impl IoHandler for NoDevices {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn pio_write(&self, _port: u16, _data: &[u8]) {}

    fn mmio_read(&self, _gpa: Gpa, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn mmio_write(&self, _gpa: Gpa, _data: &[u8]) {}
}

/// Why [`Vcpu::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuExit {
    /// The guest did port or MMIO I/O, already handed to the [`IoHandler`]; the machine may want
    /// to look at what the devices did (a stop request) before running on.
    Io,
    /// The guest executed HLT.
    Halted {
        /// RFLAGS.IF at the time: with interrupts off, nothing can wake the vCPU.
        interrupts_enabled: bool,
    },
    /// The guest shut the machine down: a triple fault, or an explicit shutdown cycle.
    Shutdown,
    /// The run was cut short by a signal or a request to return, with nothing for the machine
    /// to do.
    Interrupted,
    /// The backend could not go on with this guest code (KVM_EXIT_INTERNAL_ERROR: for example
    /// an instruction its emulator cannot run).
    InternalError {
        /// What the backend says went wrong, as one line with its raw data.
        description: String,
    },
    /// The backend refused to enter the guest with this state (KVM_EXIT_FAIL_ENTRY).
    FailEntry {
        /// The hardware's reason code.
        reason: u64,
        /// The host CPU that tried.
        cpu: u32,
    },
    /// The guest asked the platform to shut down or reset (KVM_EXIT_SYSTEM_EVENT).
    SystemEvent {
        /// The event type, as KVM numbers it.
        kind: u32,
    },
    /// One instruction ran (or one event was delivered) with single-stepping on: see
    /// [`Vcpu::set_single_step`].
    Debug,
    /// A breakpoint or watchpoint set with [`Vcpu::set_guest_debug`] stopped the vCPU.
    DebugStop(DebugStop),
    /// An exit this backend does not handle.
    Unsupported {
        /// The backend's exit reason code.
        code: u32,
    },
}

/// Errors from a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// KVM is not there or cannot be used.
    #[error(transparent)]
    Kvm(#[from] kvm::KvmError),
    /// A memslot operation failed.
    #[error(transparent)]
    Memslot(#[from] umbra_mmu::memslot::MemslotError),
    /// The backend cannot do what a debugger asked of it.
    #[error("{0}")]
    DebugUnsupported(String),
    /// The vCPU has no such model-specific register.
    #[error("no MSR {0:#x}")]
    UnknownMsr(u32),
    /// The vCPU refuses a state a debugger or loader gave it.
    #[error("invalid vCPU state: {0}")]
    InvalidState(String),
    /// The emulator's block engine (the JIT) could not start.
    #[error("cannot start the JIT: {0}")]
    Engine(String),
}

/// Something that can make virtual machines: KVM, or Umbra's own emulator.
pub trait Hypervisor {
    /// A short name for messages ("kvm", "emu").
    fn name(&self) -> &'static str;

    /// A VM whose guest physical memory is `memslots`. The backend follows every later change
    /// to them.
    fn create_vm(&self, memslots: Arc<Memslots>) -> Result<Arc<dyn Vm>, BackendError>;
}

/// A virtual machine: guest memory and the vCPUs that run in it.
pub trait Vm: Send + Sync {
    /// vCPU number `index`, in the architectural reset state, doing its I/O through `io`.
    fn create_vcpu(
        &self,
        index: u32,
        io: Arc<dyn IoHandler>,
    ) -> Result<Box<dyn Vcpu>, BackendError>;

    /// Gets and clears the dirty bitmap of a slot with dirty logging on (one bit per page,
    /// bit `i` of word `i / 64` for the slot's page `i`), as KVM_GET_DIRTY_LOG: the pages
    /// written since the last call.
    fn get_dirty_log(&self, slot: SlotId) -> Result<Vec<u64>, BackendError>;

    /// Statistics the kernel keeps for this VM (KVM's binary stats: shadow pages zapped,
    /// pages mapped by size), by name; empty for a backend without them.
    fn kernel_stats(&self) -> Result<Vec<(String, u64)>, BackendError> {
        Ok(Vec::new())
    }

    /// Parameters a Linux guest's command line needs on this backend, to keep the kernel off
    /// what the backend cannot run and cannot hide from it through CPUID; empty for most.
    fn linux_parameters(&self) -> &'static [&'static str] {
        &[]
    }

    /// What a Linux guest cannot do on this backend whatever its command line, for the user
    /// to hear before it boots; `None` for most.
    fn linux_limitation(&self) -> Option<&'static str> {
        None
    }
}

/// One virtual CPU.
pub trait Vcpu: Send {
    /// Runs guest code until it needs the machine's attention.
    fn run(&mut self) -> Result<VcpuExit, BackendError>;

    /// The general registers.
    fn registers(&self) -> Result<Registers, BackendError>;

    /// Replaces the general registers.
    fn set_registers(&mut self, regs: &Registers) -> Result<(), BackendError>;

    /// The segment, control and descriptor-table registers.
    fn system_registers(&self) -> Result<SystemRegisters, BackendError>;

    /// Replaces the segment, control and descriptor-table registers.
    fn set_system_registers(&mut self, sregs: &SystemRegisters) -> Result<(), BackendError>;

    /// Turns single-stepping on or off, as a debugger does (KVM_GUESTDBG_SINGLESTEP): while
    /// it is on, [`Vcpu::run`] returns [`VcpuExit::Debug`] after each instruction the guest
    /// completes, and after each exception or interrupt delivered (with RIP at the handler),
    /// unless another exit (such as the port I/O of the instruction) comes first. The guest's
    /// own RFLAGS.TF is not touched, and the guest sees no #DB.
    ///
    /// This replaces whatever [`Vcpu::set_guest_debug`] set.
    fn set_single_step(&mut self, on: bool) -> Result<(), BackendError> {
        self.set_guest_debug(&GuestDebug {
            single_step: on,
            ..GuestDebug::default()
        })
    }

    /// Sets what stops the vCPU for a debugger (KVM_SET_GUEST_DEBUG): single-stepping as
    /// [`Vcpu::set_single_step`] describes, breakpoints and watchpoints reported as
    /// [`VcpuExit::DebugStop`]. Replaces the previous setting. A backend that cannot honour
    /// part of it says so with [`BackendError::DebugUnsupported`] and sets nothing.
    fn set_guest_debug(&mut self, debug: &GuestDebug) -> Result<(), BackendError>;

    /// The handle another thread uses to make [`Vcpu::run`] return soon.
    fn kick_handle(&self) -> Arc<VcpuKick>;

    /// Connects the vCPU's INTR pin to a userspace interrupt controller. Returns whether the
    /// backend takes interrupts that way; one that does not (KVM without an irqchip, for now)
    /// ignores `lines`, and its HLT with interrupts enabled ends the run as before.
    fn set_interrupt_lines(&mut self, lines: Arc<dyn InterruptLines>) -> bool {
        let _ = lines;
        false
    }

    /// The x87, MMX and SSE registers, in FXSAVE's layout.
    fn fx_state(&self) -> Result<FxState, BackendError>;

    /// Replaces the x87, MMX and SSE registers.
    fn set_fx_state(&mut self, state: &FxState) -> Result<(), BackendError>;

    /// Reads a model-specific register, as a debugger does (no #GP: an MSR the vCPU lacks is
    /// an error).
    fn msr(&self, index: u32) -> Result<u64, BackendError>;

    /// Writes a model-specific register, as a debugger does.
    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), BackendError>;

    /// A copy of the guest page walker in the vCPU's current paging state (role, CR3, PAE
    /// PDPTE registers, PKRU), to translate guest virtual addresses without touching the
    /// vCPU: a debugger's memory accesses, `walk` in the monitor.
    fn walker(&self) -> Result<Walker, BackendError>;

    /// The software MMU's roles, cached roots, TLB occupancy and counters; `None` for a
    /// backend whose MMU is the kernel's (KVM).
    fn mmu_snapshot(&self) -> Option<MmuSnapshot> {
        None
    }

    /// Statistics the kernel keeps for this vCPU (KVM's binary stats: page faults, TLB flushes,
    /// exits), by name; empty for a backend without them.
    fn kernel_stats(&self) -> Result<Vec<(String, u64)>, BackendError> {
        Ok(Vec::new())
    }

    /// The backend's MMU counters as `(name, value)` pairs, cumulative since the vCPU was
    /// made, for `umbra run --stats` and the benchmarks. Backends that keep none (KVM, whose
    /// MMU is the kernel's) return an empty list.
    fn mmu_stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
