//! One backend's side of a comparison: a VM with the tiny machine's RAM and one vCPU, loaded
//! with a sequence and run to its end.
//!
//! A machine is made once per backend and mode and reused for every sequence: loading a
//! sequence rewrites all of RAM and every register. That is safe on KVM, whose shadow page
//! tables cache what the guest's page tables say, because the page tables of a mode are the
//! same bytes in every sequence (see [`super::layout`]).

use std::sync::Arc;

use parking_lot::Mutex;
use umbra_cpu::backend::{BackendError, Hypervisor, IoHandler, Vcpu, VcpuExit, Vm};
use umbra_cpu::state::{Registers, SystemRegisters};
use umbra_mmu::addr::{Gfn, Gpa};
use umbra_mmu::memslot::{HostMapping, MemslotError, MemslotFlags, Memslots, SlotId};

use super::generator::Sequence;
use super::layout::{self, END_VECTOR, Mode, RAM_SIZE, VECTOR_PORT_BASE, VECTORS};

/// The most exits a run may take before it is called stuck. A sequence takes one (its end),
/// or one per port write of its exception handler.
const MAX_EXITS: u32 = 64;

/// Errors from setting up or running a test machine.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memslot(#[from] MemslotError),
}

/// The port writes of a run, in order. Port reads return all ones; MMIO, which no sequence
/// reaches (all of RAM is one slot and everything else is unmapped), is recorded as a write
/// to port 0xffff so that it shows up as an unexpected end.
#[derive(Default)]
pub struct PortLog {
    writes: Mutex<Vec<u16>>,
}

impl PortLog {
    /// The last port written, if any.
    pub fn last(&self) -> Option<u16> {
        self.writes.lock().last().copied()
    }

    fn clear(&self) {
        self.writes.lock().clear();
    }
}

impl IoHandler for PortLog {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn pio_write(&self, port: u16, _data: &[u8]) {
        self.writes.lock().push(port);
    }

    fn mmio_read(&self, _gpa: Gpa, data: &mut [u8]) {
        data.fill(0xff);
        self.writes.lock().push(u16::MAX);
    }

    fn mmio_write(&self, _gpa: Gpa, _data: &[u8]) {
        self.writes.lock().push(u16::MAX);
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The sequence reached its final INT3.
    Finished,
    /// The handler of this exception vector ran.
    Exception(u8),
    /// Something else: a halt, a shutdown, a backend's internal error, a stray port.
    Stopped(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Finished => f.write_str("finished"),
            End::Exception(vector) => write!(f, "exception {vector}"),
            End::Stopped(why) => write!(f, "stopped: {why}"),
        }
    }
}

/// The state a run left.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// How it ended.
    pub end: End,
    /// The general registers, RIP and RFLAGS.
    pub registers: Registers,
    /// The system registers.
    pub system: SystemRegisters,
    /// All of RAM.
    pub memory: Vec<u8>,
}

/// What one step of a single-stepped run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// One instruction completed, or one exception was delivered.
    Stepped,
    /// The run ended.
    Ended(End),
}

/// A VM of one backend, in one mode.
pub struct TestMachine {
    mode: Mode,
    memslots: Arc<Memslots>,
    /// Held so the VM lives as long as its vCPU.
    _vm: Arc<dyn Vm>,
    vcpu: Box<dyn Vcpu>,
    ports: Arc<PortLog>,
    /// The vCPU's system registers when it was made, for the fields the layout leaves alone.
    reset_system: SystemRegisters,
    single_step: bool,
}

impl TestMachine {
    /// A machine on `hypervisor` for sequences of `mode`.
    pub fn new(hypervisor: &dyn Hypervisor, mode: Mode) -> Result<TestMachine, MachineError> {
        let memslots = Arc::new(Memslots::new());
        memslots.create(
            SlotId(0),
            Gfn(0),
            (RAM_SIZE >> 12) as u64,
            HostMapping::anonymous(RAM_SIZE)?,
            0,
            MemslotFlags::empty(),
        )?;
        let vm = hypervisor.create_vm(memslots.clone())?;
        let ports = Arc::new(PortLog::default());
        let vcpu = vm.create_vcpu(0, ports.clone())?;
        let reset_system = vcpu.system_registers()?;
        Ok(TestMachine {
            mode,
            memslots,
            _vm: vm,
            vcpu,
            ports,
            reset_system,
            single_step: false,
        })
    }

    /// Loads `sequence`: its memory image and initial registers.
    pub fn load(&mut self, sequence: &Sequence) -> Result<(), MachineError> {
        debug_assert_eq!(sequence.mode, self.mode);
        self.memslots.write(Gpa(0), &sequence.memory)?;
        let system = layout::system_registers(self.mode, &self.reset_system);
        self.vcpu.set_system_registers(&system)?;
        let registers = layout::registers(self.mode, sequence.gpr, sequence.rflags);
        self.vcpu.set_registers(&registers)?;
        self.ports.clear();
        // Also forgets a step report still due from the last run's final I/O exit.
        self.vcpu.set_single_step(self.single_step)?;
        Ok(())
    }

    /// Turns single-stepping on or off.
    pub fn set_single_step(&mut self, on: bool) -> Result<(), MachineError> {
        self.vcpu.set_single_step(on)?;
        self.single_step = on;
        Ok(())
    }

    /// Runs until the sequence ends.
    pub fn run(&mut self) -> Result<End, MachineError> {
        for _ in 0..MAX_EXITS {
            if let Step::Ended(end) = self.step()? {
                return Ok(end);
            }
        }
        Ok(End::Stopped(format!("no end after {MAX_EXITS} exits")))
    }

    /// Runs until the next exit: one instruction when single-stepping. The only port I/O a
    /// sequence does ends it, so the step report KVM gives after an I/O exit never comes up.
    pub fn step(&mut self) -> Result<Step, MachineError> {
        Ok(match self.vcpu.run()? {
            VcpuExit::Io => match self.ports.last() {
                Some(port)
                    if (VECTOR_PORT_BASE..VECTOR_PORT_BASE + u16::from(VECTORS))
                        .contains(&port) =>
                {
                    match (port - VECTOR_PORT_BASE) as u8 {
                        END_VECTOR => Step::Ended(End::Finished),
                        vector => Step::Ended(End::Exception(vector)),
                    }
                }
                port => Step::Ended(End::Stopped(format!("stray I/O (port {port:x?})"))),
            },
            VcpuExit::Debug | VcpuExit::Interrupted => Step::Stepped,
            other => Step::Ended(End::Stopped(format!("{other:?}"))),
        })
    }

    /// The vCPU's registers.
    pub fn registers(&self) -> Result<Registers, MachineError> {
        Ok(self.vcpu.registers()?)
    }

    /// The state now.
    pub fn snapshot(&self, end: End) -> Result<Snapshot, MachineError> {
        let mut memory = vec![0u8; RAM_SIZE];
        self.memslots.read(Gpa(0), &mut memory)?;
        Ok(Snapshot {
            end,
            registers: self.vcpu.registers()?,
            system: self.vcpu.system_registers()?,
            memory,
        })
    }
}
