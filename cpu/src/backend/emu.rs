//! The emulator backend: guest code runs on Umbra's interpreter, on any x86-64 host.

use std::sync::Arc;

use umbra_mmu::memslot::{Memslots, SlotId};

use super::{BackendError, Hypervisor, IoHandler, Vcpu, VcpuExit, Vm};
use crate::interp::{Interpreter, StepEvent};
use crate::state::{RFLAGS_IF, Registers, SystemRegisters};

/// How many instructions a vCPU runs before returning to the machine's loop unasked, so that
/// requests from outside (a user's quit) are seen promptly.
const STEPS_PER_RUN: u32 = 1 << 20;

/// Umbra's own emulator, as a hypervisor.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmuHypervisor;

impl Hypervisor for EmuHypervisor {
    fn name(&self) -> &'static str {
        "emu"
    }

    fn create_vm(&self, memslots: Arc<Memslots>) -> Result<Arc<dyn Vm>, BackendError> {
        Ok(Arc::new(EmuVm { memslots }))
    }
}

/// An emulated VM: its memory is the memslots themselves.
pub struct EmuVm {
    memslots: Arc<Memslots>,
}

impl Vm for EmuVm {
    fn create_vcpu(
        &self,
        _index: u32,
        io: Arc<dyn IoHandler>,
    ) -> Result<Box<dyn Vcpu>, BackendError> {
        Ok(Box::new(EmuVcpu {
            cpu: Interpreter::new(self.memslots.clone(), io),
        }))
    }

    fn get_dirty_log(&self, slot: SlotId) -> Result<Vec<u64>, BackendError> {
        // Every guest store goes through the memslots, which log it.
        Ok(self.memslots.get_dirty_log(slot)?)
    }
}

/// An interpreted vCPU.
pub struct EmuVcpu {
    cpu: Interpreter,
}

impl EmuVcpu {
    /// Steps the interpreter until something needs the machine's attention.
    fn run_steps(cpu: &mut Interpreter) -> VcpuExit {
        for _ in 0..STEPS_PER_RUN {
            match cpu.step() {
                StepEvent::None => {}
                StepEvent::Io => return VcpuExit::Io,
                StepEvent::Halt => {
                    let interrupts_enabled = cpu.registers().rflags & RFLAGS_IF != 0;
                    return VcpuExit::Halted { interrupts_enabled };
                }
                StepEvent::Shutdown => return VcpuExit::Shutdown,
            }
        }
        VcpuExit::Interrupted
    }
}

impl Vcpu for EmuVcpu {
    fn run(&mut self) -> Result<VcpuExit, BackendError> {
        // Nothing a guest does may take the host process down: should the interpreter itself
        // fail on some instruction, the run ends with an internal error naming where.
        let cpu = &mut self.cpu;
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::run_steps(cpu)));
        Ok(outcome.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            VcpuExit::InternalError {
                description: format!(
                    "interpreter failure at rip {:#x}: {what}",
                    self.cpu.registers().rip
                ),
            }
        }))
    }

    fn registers(&self) -> Result<Registers, BackendError> {
        Ok(self.cpu.registers())
    }

    fn set_registers(&mut self, regs: &Registers) -> Result<(), BackendError> {
        self.cpu.set_registers(regs);
        Ok(())
    }

    fn system_registers(&self) -> Result<SystemRegisters, BackendError> {
        Ok(self.cpu.system_registers())
    }

    fn set_system_registers(&mut self, sregs: &SystemRegisters) -> Result<(), BackendError> {
        self.cpu.set_system_registers(sregs);
        Ok(())
    }
}
