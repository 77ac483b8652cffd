//! A machine: guest memory, devices, a backend's VM and its vCPU, and the loop that runs it.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use umbra_cpu::backend::{BackendError, Hypervisor, Vcpu, VcpuExit, Vm};
use umbra_cpu::state::CpuMode;
use umbra_devices::run_control::{RunControl, StopReason};
use umbra_devices::uart::Uart;
use umbra_mmu::memslot::{MemslotError, Memslots};

use crate::gdb::control::{DebugControl, Stop};
use crate::loader::{self, KernelBoot, LoaderError};
use crate::memory_map;
use crate::memory_size::MemorySize;
use crate::platform::{Platform, TimerKicks};

/// What a machine is built from.
pub struct MachineConfig<'a> {
    /// Guest RAM.
    pub memory: MemorySize,
    /// The firmware ROM image; empty for a machine that boots a kernel
    /// ([`Machine::load_kernel`]).
    pub rom: &'a [u8],
    /// Where the first serial port's output goes.
    pub serial: Box<dyn Write + Send>,
}

/// Why a machine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// Guest memory could not be laid out (for example, the host would not map that much).
    #[error("cannot set up guest memory: {0}")]
    Memory(#[from] MemslotError),
    /// The backend refused.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The devices could not be put together (a bug in the layout).
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    /// The kernel could not be loaded.
    #[error(transparent)]
    Load(#[from] LoaderError),
    /// The thread that kicks the vCPU at timer deadlines could not start.
    #[error("cannot start the timer thread")]
    TimerThread(#[source] std::io::Error),
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The guest wrote `status` to the isa-debug-exit port.
    DebugExit {
        /// The value written.
        status: u32,
    },
    /// The guest executed HLT and nothing can wake it.
    Halted {
        /// Whether interrupts were enabled (the machine has no interrupt sources to wake it).
        interrupts_enabled: bool,
    },
    /// The guest shut the machine down: a triple fault.
    Shutdown {
        /// RIP when it happened, as the backend reports it.
        rip: u64,
        /// The CPU mode then.
        mode: CpuMode,
    },
    /// The guest asked for a reset or power-off.
    PlatformEvent(StopReason),
    /// The backend could not go on.
    BackendFailure(String),
    /// The debugger ended the run (gdb's `kill`).
    Killed,
}

impl RunEnd {
    /// How a debugger hears of this end.
    fn debugger_stop(&self) -> Stop {
        match self {
            RunEnd::DebugExit { status } => Stop::Exited((*status).min(255) as u8),
            // A final halt is how a kernel without a way to power off ends (Linux's
            // poweroff without ACPI): a clean end, as its exit status says.
            RunEnd::PlatformEvent(_) | RunEnd::Halted { .. } => Stop::Exited(0),
            RunEnd::Shutdown { .. } | RunEnd::BackendFailure(_) | RunEnd::Killed => {
                Stop::Terminated
            }
        }
    }
}

impl std::fmt::Display for RunEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunEnd::DebugExit { status } => write!(f, "isa-debug-exit, status {status}"),
            RunEnd::Halted {
                interrupts_enabled: false,
            } => f.write_str("halted with interrupts disabled"),
            RunEnd::Halted {
                interrupts_enabled: true,
            } => f.write_str("halted with no interrupt source to wake it"),
            RunEnd::Shutdown { rip, mode } => {
                write!(f, "triple fault (shutdown) at rip {rip:#x} in {mode}")
            }
            RunEnd::PlatformEvent(StopReason::UserQuit) => {
                f.write_str("quit from the console (Ctrl-A x)")
            }
            RunEnd::PlatformEvent(reason) => write!(f, "{reason:?}"),
            RunEnd::BackendFailure(what) => f.write_str(what),
            RunEnd::Killed => f.write_str("killed by the debugger"),
        }
    }
}

/// What the backend does to, or cannot do for, a Linux kernel [`Machine::load_kernel`]
/// loaded (nothing for a multiboot kernel).
#[derive(Clone, Debug, Default)]
pub struct LinuxOnBackend {
    /// The parameters appended to its command line ([`Vm::linux_parameters`]).
    pub appended: Vec<&'static str>,
    /// What it cannot do there ([`Vm::linux_limitation`]).
    pub limitation: Option<&'static str>,
}

/// The outcome of [`Machine::run`].
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// How the run ended.
    pub end: RunEnd,
    /// The number of times the vCPU left guest code.
    pub exits: u64,
    /// Wall-clock time from the first instruction to the end.
    pub wall: Duration,
}

/// Something that looks at the vCPU between runs, on the vCPU's own thread: the TUI's
/// snapshot publisher. The machine loop asks it after every run whether it wants a look, so
/// [`VcpuObserver::wants_look`] must be cheap (one relaxed load).
pub trait VcpuObserver: Send + Sync {
    /// Whether it wants to look at the vCPU now.
    fn wants_look(&self) -> bool;

    /// Looks at the vCPU: between two runs, and once more when the run has ended.
    fn look(&self, vcpu: &dyn Vcpu);
}

/// A PC with one vCPU, RAM, a firmware ROM, a UART and the debug-exit port.
pub struct Machine {
    memory: MemorySize,
    memslots: Arc<Memslots>,
    vm: Arc<dyn Vm>,
    vcpu: Box<dyn Vcpu>,
    control: Arc<RunControl>,
    /// The devices.
    platform: Platform,
    /// The backend takes the platform's interrupts, so HLT with interrupts on waits for one.
    takes_interrupts: bool,
    /// Kicks the vCPU at timer deadlines, while the machine lives (when it takes interrupts).
    _timer_kicks: Option<TimerKicks>,
    /// A debugger's hold on the vCPU, once one may attach.
    debugger: Option<Arc<DebugControl>>,
    /// What looks at the vCPU between runs.
    observer: Option<Arc<dyn VcpuObserver>>,
}

impl Machine {
    /// Builds the machine on `hypervisor`.
    pub fn new(hypervisor: &dyn Hypervisor, config: MachineConfig) -> Result<Self, MachineError> {
        let memslots = Arc::new(Memslots::new());
        memory_map::build(&memslots, config.memory, config.rom)?;
        let control = Arc::new(RunControl::new());
        let platform = Platform::new(config.serial, &control, config.memory.bytes())?;
        let vm = hypervisor.create_vm(memslots.clone())?;
        let mut vcpu = vm.create_vcpu(0, platform.buses())?;
        let takes_interrupts = vcpu.set_interrupt_lines(platform.interrupt_lines());
        let timer_kicks = takes_interrupts
            .then(|| platform.kick_at_deadlines(vcpu.kick_handle()))
            .transpose()
            .map_err(MachineError::TimerThread)?;
        Ok(Self {
            memory: config.memory,
            memslots,
            vm,
            vcpu,
            control,
            platform,
            takes_interrupts,
            _timer_kicks: timer_kicks,
            debugger: None,
            observer: None,
        })
    }

    /// Loads the kernel `boot` names (with its initrd or modules and command line) into a
    /// machine built without a ROM, and puts the vCPU at its entry. A Linux kernel's command
    /// line gets the parameters the backend needs ([`Vm::linux_parameters`]); returns what
    /// the backend changed or cannot do for it.
    pub fn load_kernel(&mut self, boot: &KernelBoot) -> Result<LinuxOnBackend, MachineError> {
        let parameters = self.vm.linux_parameters();
        let loaded = loader::load(&self.memslots, self.memory, boot, parameters)?;
        loaded.entry.apply(&mut *self.vcpu)?;
        Ok(if loaded.linux {
            LinuxOnBackend {
                appended: parameters.to_vec(),
                limitation: self.vm.linux_limitation(),
            }
        } else {
            LinuxOnBackend::default()
        })
    }

    /// Lets a debugger stop and resume the vCPU from another thread, through the returned
    /// control; with `start_stopped` the vCPU waits, before its first instruction, until the
    /// debugger lets it run (QEMU's `-S`).
    pub fn debug_control(&mut self, start_stopped: bool) -> Arc<DebugControl> {
        let control = Arc::new(DebugControl::new(self.vcpu.kick_handle(), start_stopped));
        self.debugger = Some(control.clone());
        control
    }

    /// Lets `observer` look at the vCPU between runs and at the end of the run.
    pub fn set_observer(&mut self, observer: Arc<dyn VcpuObserver>) {
        self.observer = Some(observer);
    }

    /// The serial port, for a host that types into it.
    pub fn uart(&self) -> Arc<parking_lot::Mutex<Uart>> {
        self.platform.uart()
    }

    /// The machine-wide stop request, for a host-side quit ([`StopReason::UserQuit`]); the
    /// run loop sees it when the vCPU next leaves guest code.
    pub fn run_control(&self) -> Arc<RunControl> {
        self.control.clone()
    }

    /// The guest's memory.
    pub fn memslots(&self) -> &Arc<Memslots> {
        &self.memslots
    }

    /// The backend's VM.
    pub fn vm(&self) -> &Arc<dyn Vm> {
        &self.vm
    }

    /// The vCPU, for reading its state after a run.
    pub fn vcpu(&self) -> &dyn Vcpu {
        &*self.vcpu
    }

    /// Runs the guest until it ends.
    pub fn run(&mut self) -> Result<RunOutcome, BackendError> {
        let start = Instant::now();
        let mut exits = 0;
        let end = loop {
            if let Some(reason) = self.control.stop_reason() {
                break match reason {
                    StopReason::DebugExit { status } => RunEnd::DebugExit { status },
                    other => RunEnd::PlatformEvent(other),
                };
            }
            if let Some(debugger) = &self.debugger
                && debugger.before_run(&mut *self.vcpu)?
            {
                break RunEnd::Killed;
            }
            self.platform.run_timers();
            exits += 1;
            let exit = self.vcpu.run()?;
            if let Some(debugger) = &self.debugger {
                debugger.after_run(&exit);
            }
            if let Some(observer) = &self.observer
                && observer.wants_look()
            {
                observer.look(&*self.vcpu);
            }
            match exit {
                // Steps, breakpoints and kicks are the debugger's business, seen above.
                VcpuExit::Io | VcpuExit::Interrupted | VcpuExit::Debug | VcpuExit::DebugStop(_) => {
                }
                // Halted with interrupts on, on a backend that takes them: sleep until one
                // comes (or a timer is due), then run on.
                VcpuExit::Halted {
                    interrupts_enabled: true,
                } if self.takes_interrupts => {
                    if !self.platform.interrupt_pending() {
                        self.platform.wait_while_halted();
                    }
                }
                VcpuExit::Halted { interrupts_enabled } => {
                    break RunEnd::Halted { interrupts_enabled };
                }
                VcpuExit::Shutdown => {
                    let rip = self.vcpu.registers()?.rip;
                    let mode = self.vcpu.system_registers()?.mode();
                    break RunEnd::Shutdown { rip, mode };
                }
                VcpuExit::InternalError { description } => {
                    break RunEnd::BackendFailure(description);
                }
                VcpuExit::FailEntry { reason, cpu } => {
                    break RunEnd::BackendFailure(format!(
                        "KVM could not enter the guest (hardware reason {reason:#x} on host cpu {cpu})"
                    ));
                }
                VcpuExit::SystemEvent { kind } => {
                    break RunEnd::BackendFailure(format!("guest system event {kind}"));
                }
                VcpuExit::Unsupported { code } => {
                    break RunEnd::BackendFailure(format!("unsupported exit reason {code}"));
                }
            }
        };
        if let Some(observer) = &self.observer {
            observer.look(&*self.vcpu);
        }
        if let Some(debugger) = &self.debugger {
            debugger.finish(&mut *self.vcpu, end.debugger_stop());
        }
        Ok(RunOutcome {
            end,
            exits,
            wall: start.elapsed(),
        })
    }
}
