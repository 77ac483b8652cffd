//! A KVM vCPU and its run loop step.

use std::sync::Arc;

use kvm_bindings::{
    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_GUESTDBG_ENABLE,
    KVM_GUESTDBG_SINGLESTEP, kvm_guest_debug, kvm_run,
};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};
use umbra_mmu::addr::Gpa;
use umbra_mmu::memslot::Memslots;

use super::KvmError;
use super::convert::apply_system_registers;
use crate::backend::{BackendError, IoHandler, Vcpu, VcpuExit};
use crate::state::{RFLAGS_IF, Registers, SystemRegisters};

/// A KVM vCPU.
pub struct KvmVcpu {
    fd: VcpuFd,
    io: Arc<dyn IoHandler>,
    /// Held so that the guest memory KVM runs this vCPU over outlives it.
    _memslots: Arc<Memslots>,
}

impl KvmVcpu {
    /// Wraps a vCPU that KVM created in the architectural reset state.
    pub(super) fn new(
        fd: VcpuFd,
        io: Arc<dyn IoHandler>,
        memslots: Arc<Memslots>,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            fd,
            io,
            _memslots: memslots,
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
        // The exit kvm-ioctls returns borrows the run page; exits that need a second look at
        // the page (or another ioctl) are finished after that borrow ends.
        let exit = match self.fd.run() {
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
            Ok(KvmExit::Intr) => Pending::Done(VcpuExit::Interrupted),
            Ok(KvmExit::Debug(_)) => Pending::Done(VcpuExit::Debug),
            Ok(_) => Pending::Unsupported,
            Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => {
                Pending::Done(VcpuExit::Interrupted)
            }
            Err(e) => return Err(KvmError::ioctl("KVM_RUN")(e)),
        };
        Ok(match exit {
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
                VcpuExit::InternalError {
                    description: self.internal_error(),
                }
            }
            Pending::Unsupported => VcpuExit::Unsupported {
                code: self.fd.get_kvm_run().exit_reason,
            },
            Pending::Done(exit) => exit,
        })
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

    fn set_single_step(&mut self, on: bool) -> Result<(), BackendError> {
        let control = if on {
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP
        } else {
            0
        };
        let debug = kvm_guest_debug {
            control,
            ..Default::default()
        };
        self.fd
            .set_guest_debug(&debug)
            .map_err(KvmError::ioctl("KVM_SET_GUEST_DEBUG"))
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
    /// Nothing more to look at.
    Done(VcpuExit),
}
