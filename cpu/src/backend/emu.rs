//! The emulator backend: guest code runs on Umbra's interpreter, on any x86-64 host.

use std::sync::Arc;

use umbra_mmu::memslot::{MemslotFlags, MemslotObserver, Memslots, SlotChange, SlotId};
use umbra_mmu::shadow::{ShadowMmu, SplitPolicy};

use umbra_mmu::vcpu_mmu::MmuSnapshot;
use umbra_mmu::walker::Walker;

use super::{BackendError, Hypervisor, InterruptLines, IoHandler, Vcpu, VcpuExit, VcpuKick, Vm};
use crate::debug::{DebugStop, GuestDebug};
use crate::interp::fpu::FxState;
use crate::interp::{Interpreter, StepEvent};
use crate::state::{RFLAGS_IF, Registers, SystemRegisters};

/// How many instructions a vCPU runs before returning to the machine's loop unasked, so that
/// the machine looks at its devices' stop requests and runs its timers (PIT, RTC, local APIC)
/// every few milliseconds at most. Requests from other threads (a debugger's interrupt) need
/// not wait for it: they kick the vCPU ([`VcpuKick`]).
const STEPS_PER_RUN: u32 = 1 << 16;

/// How many instructions run between two looks at the kick: a kick waits for at most this
/// many, and the look costs a load per this many.
const KICK_INTERVAL: u32 = 64;

/// How many instructions a block engine runs between two looks at the kick and the interrupt
/// lines (it returns earlier when interrupts become enabled). Within a run only other
/// threads change those (the machine's timers run between runs), so a slice may be long: each
/// costs a return to the dispatcher and a way back into generated code.
const ENGINE_SLICE: u32 = 8192;

/// Something that runs guest code faster than stepping the interpreter: a translator to host
/// code (Umbra's JIT, in the `umbra-jit` crate, which this crate cannot name). It works on the
/// interpreter's state through [`crate::interp::translator`] and leaves every instruction it
/// does not handle to [`Interpreter::step`].
pub trait BlockEngine: Send {
    /// Runs the vCPU for about `budget` instructions (fewer when it stops early); returns
    /// the event of an instruction the interpreter ran for it that the vCPU loop must hear
    /// about (I/O, HLT, a shutdown), and returns at once, with [`StepEvent::None`], after an
    /// instruction that enabled interrupts, so that the loop can deliver one.
    ///
    /// It runs only while [`Interpreter::block_context`] allows; otherwise it steps the
    /// interpreter. It stops, with [`StepEvent::None`], before running an instruction at
    /// one of the linear addresses `breakpoints` (a debugger's), which the caller handles.
    fn run(&mut self, cpu: &mut Interpreter, budget: u32, breakpoints: &[u64]) -> StepEvent;

    /// The engine's counters, by name (each starting with `jit_`).
    fn counters(&self) -> Vec<(&'static str, u64)>;
}

/// Makes each vCPU's [`BlockEngine`].
pub trait BlockEngineFactory: Send + Sync + std::fmt::Debug {
    /// A new engine for one vCPU, or why there cannot be one.
    fn create(&self) -> Result<Box<dyn BlockEngine>, String>;
}

/// Umbra's own emulator, as a hypervisor.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmuHypervisor;

impl Hypervisor for EmuHypervisor {
    fn name(&self) -> &'static str {
        "emu"
    }

    fn create_vm(&self, memslots: Arc<Memslots>) -> Result<Arc<dyn Vm>, BackendError> {
        EmuOptions::default().create_vm(memslots)
    }
}

/// The emulator with its options chosen: [`EmuHypervisor`] is the default ones.
#[derive(Clone, Debug)]
pub struct EmuOptions {
    /// What enabling dirty logging on a slot does to the large shadow mappings in it.
    pub split_policy: SplitPolicy,
    /// Whether vCPUs translate through the TLB and shadow pages (`true`) or walk the guest's
    /// tables on every access (`false`: the reference, for comparisons).
    pub mmu_caching: bool,
    /// What runs guest code besides the interpreter: `None`, the interpreter alone.
    pub engine: Option<Arc<dyn BlockEngineFactory>>,
}

impl Default for EmuOptions {
    /// Eager splitting, as KVM's default (`eager_page_split`), and the MMU's caches on.
    fn default() -> Self {
        EmuOptions {
            split_policy: SplitPolicy::Eager,
            mmu_caching: true,
            engine: None,
        }
    }
}

impl EmuOptions {
    /// A VM over `memslots` with these options.
    pub fn create_emu_vm(&self, memslots: Arc<Memslots>) -> Result<Arc<EmuVm>, BackendError> {
        let shadow = Arc::new(ShadowMmu::new());
        memslots.set_write_tracker(shadow.clone());
        memslots.set_observer(Box::new(ShadowFollowsMemslots {
            shadow: shadow.clone(),
            split_policy: self.split_policy,
        }))?;
        Ok(Arc::new(EmuVm {
            memslots,
            shadow,
            mmu_caching: self.mmu_caching,
            engine: self.engine.clone(),
        }))
    }
}

impl Hypervisor for EmuOptions {
    fn name(&self) -> &'static str {
        "emu"
    }

    fn create_vm(&self, memslots: Arc<Memslots>) -> Result<Arc<dyn Vm>, BackendError> {
        Ok(self.create_emu_vm(memslots)?)
    }
}

/// The memslots' commit hook that keeps the shadow MMU in step with them.
struct ShadowFollowsMemslots {
    shadow: Arc<ShadowMmu>,
    split_policy: SplitPolicy,
}

impl MemslotObserver for ShadowFollowsMemslots {
    fn commit(&self, change: &SlotChange) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match change {
            // Dirty pages are logged 4 KiB at a time: large leaves in the slot are split.
            SlotChange::FlagsChanged { old, new }
                if !old.flags().contains(MemslotFlags::LOG_DIRTY)
                    && new.flags().contains(MemslotFlags::LOG_DIRTY) =>
            {
                self.shadow
                    .split_large(new.base_gfn()..new.end_gfn(), self.split_policy);
            }
            // Guest memory went away or moved: no shadow entry may survive it (KVM zaps all
            // on memslot removal as well).
            SlotChange::Delete(_) | SlotChange::Move { .. } => self.shadow.zap_all(),
            _ => {}
        }
        Ok(())
    }
}

/// An emulated VM: its memory is the memslots themselves; its vCPUs share one shadow MMU.
pub struct EmuVm {
    memslots: Arc<Memslots>,
    shadow: Arc<ShadowMmu>,
    mmu_caching: bool,
    engine: Option<Arc<dyn BlockEngineFactory>>,
}

impl Vm for EmuVm {
    fn create_vcpu(
        &self,
        _index: u32,
        io: Arc<dyn IoHandler>,
    ) -> Result<Box<dyn Vcpu>, BackendError> {
        let mut cpu = Interpreter::new(self.memslots.clone(), self.shadow.clone(), io);
        cpu.set_mmu_caching(self.mmu_caching);
        Ok(Box::new(EmuVcpu {
            cpu,
            shadow: self.shadow.clone(),
            control: RunControl {
                engine: match &self.engine {
                    Some(factory) => Some(factory.create().map_err(BackendError::Engine)?),
                    None => None,
                },
                lines: None,
                single_step: SingleStep::Off,
                breakpoints: Vec::new(),
                resume_over: None,
                kick: Arc::new(VcpuKick::new()),
            },
        }))
    }

    fn get_dirty_log(&self, slot: SlotId) -> Result<Vec<u64>, BackendError> {
        // Every guest store to a clean page goes through the memslots, which log it; the pages
        // cleared here are re-armed by dropping every TLB, whose entries let stores to pages
        // already dirty go straight to memory.
        let log = self.memslots.get_dirty_log(slot)?;
        self.shadow.request_flush();
        Ok(log)
    }
}

/// Single-stepping, as [`Vcpu::set_single_step`] turns it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SingleStep {
    /// Run freely.
    Off,
    /// Run one step per [`Vcpu::run`].
    On,
    /// The last step ended in an I/O exit: the next `run` reports the completed step without
    /// running another, as KVM does when it re-enters after the I/O.
    DebugPending,
}

/// An interpreted vCPU.
pub struct EmuVcpu {
    cpu: Interpreter,
    /// The VM's shadow MMU, which the interpreter shares, for its counters.
    shadow: Arc<ShadowMmu>,
    control: RunControl,
}

/// What, besides the guest, ends a run: single-stepping, breakpoints and watchpoints, kicks;
/// and where external interrupts come from.
struct RunControl {
    /// The engine that runs guest code between the interpreter's steps, if any.
    engine: Option<Box<dyn BlockEngine>>,
    /// The interrupt controller's side of the vCPU's INTR pin, once the machine connects one.
    lines: Option<Arc<dyn InterruptLines>>,
    single_step: SingleStep,
    /// Linear addresses to stop at before executing.
    breakpoints: Vec<u64>,
    /// The breakpoint the vCPU stopped at: the first instruction after it runs without
    /// stopping again there (what RFLAGS.RF does for the debug registers).
    resume_over: Option<u64>,
    kick: Arc<VcpuKick>,
}

impl RunControl {
    /// Steps the interpreter until something needs the machine's attention, or just once when
    /// single-stepping.
    ///
    /// Without breakpoints or watchpoints a step costs one extra test of a flag computed
    /// here, and every [`KICK_INTERVAL`] steps one relaxed load for the kick.
    fn run(&mut self, cpu: &mut Interpreter) -> VcpuExit {
        let debugging = !self.breakpoints.is_empty() || cpu.watching();
        match self.single_step {
            SingleStep::DebugPending => {
                self.single_step = SingleStep::On;
                return VcpuExit::Debug;
            }
            SingleStep::On => {
                let exit = self.step(cpu, debugging).unwrap_or(VcpuExit::Debug);
                if exit == VcpuExit::Io {
                    self.single_step = SingleStep::DebugPending;
                }
                return exit;
            }
            SingleStep::Off => {}
        }
        let kick = self.kick.clone();
        if !cpu.watching()
            && let Some(mut engine) = self.engine.take()
        {
            let exit = self.run_engine(cpu, &mut *engine);
            self.engine = Some(engine);
            return exit;
        }
        for _ in 0..STEPS_PER_RUN / KICK_INTERVAL {
            if kick.pending() && kick.take() {
                return VcpuExit::Interrupted;
            }
            // External interrupts are taken at instruction boundaries: looked for every
            // KICK_INTERVAL instructions (and before the first, so a halted vCPU wakes), and
            // at every boundary where interrupts have just become enabled (after STI and the
            // instruction in its shadow, POPF, IRET), so that a short window is not missed.
            if let Some(exit) = self.take_interrupt(cpu) {
                return exit;
            }
            for _ in 0..KICK_INTERVAL {
                let was_enabled = cpu.interrupts_enabled();
                if let Some(exit) = self.step(cpu, debugging) {
                    return exit;
                }
                if !was_enabled
                    && cpu.interrupts_enabled()
                    && let Some(exit) = self.take_interrupt(cpu)
                {
                    return exit;
                }
            }
        }
        VcpuExit::Interrupted
    }

    /// [`RunControl::run`] with a block engine: slices of [`ENGINE_SLICE`] instructions, with
    /// the kick and the interrupt lines looked at between them. Where the engine stops at a
    /// breakpoint, the instruction there is stepped as [`RunControl::step`] does (which stops
    /// the vCPU, or, right after a stop there, runs it).
    fn run_engine(&mut self, cpu: &mut Interpreter, engine: &mut dyn BlockEngine) -> VcpuExit {
        for _ in 0..STEPS_PER_RUN / ENGINE_SLICE {
            if self.kick.pending() && self.kick.take() {
                return VcpuExit::Interrupted;
            }
            if let Some(exit) = self.take_interrupt(cpu) {
                return exit;
            }
            if !self.breakpoints.is_empty()
                && self.breakpoints.contains(&cpu.fetch_linear(cpu.regs.rip))
            {
                if let Some(exit) = self.step(cpu, true) {
                    return exit;
                }
                continue;
            }
            let event = engine.run(cpu, ENGINE_SLICE, &self.breakpoints);
            if let Some(exit) = Self::exit_for(event, cpu) {
                return exit;
            }
        }
        VcpuExit::Interrupted
    }

    /// Delivers a pending external interrupt if the vCPU can take one now.
    fn take_interrupt(&self, cpu: &mut Interpreter) -> Option<VcpuExit> {
        let lines = self.lines.as_ref()?;
        if cpu.interrupts_enabled()
            && lines.pending()
            && let Some(vector) = lines.acknowledge()
            && cpu.deliver_interrupt(vector) == StepEvent::Shutdown
        {
            return Some(VcpuExit::Shutdown);
        }
        None
    }

    /// Runs one step, checking breakpoints before it and watchpoints after it when
    /// `debugging`; returns the exit its event calls for, if any.
    fn step(&mut self, cpu: &mut Interpreter, debugging: bool) -> Option<VcpuExit> {
        if !debugging {
            return Self::step_once(cpu);
        }
        let linear = cpu.fetch_linear(cpu.regs.rip);
        if self.resume_over.take() != Some(linear) && self.breakpoints.contains(&linear) {
            self.resume_over = Some(linear);
            return Some(VcpuExit::DebugStop(DebugStop::Breakpoint { linear }));
        }
        let exit = Self::step_once(cpu);
        match cpu.take_watch_hit() {
            Some(watchpoint) => Some(VcpuExit::DebugStop(DebugStop::Watchpoint(watchpoint))),
            None => exit,
        }
    }

    /// Runs one step; returns the exit its event calls for, if any.
    fn step_once(cpu: &mut Interpreter) -> Option<VcpuExit> {
        let event = cpu.step();
        Self::exit_for(event, cpu)
    }

    /// The exit a step's `event` calls for, if any.
    fn exit_for(event: StepEvent, cpu: &Interpreter) -> Option<VcpuExit> {
        match event {
            StepEvent::None => None,
            StepEvent::Io => Some(VcpuExit::Io),
            StepEvent::Halt => Some(VcpuExit::Halted {
                interrupts_enabled: cpu.registers().rflags & RFLAGS_IF != 0,
            }),
            StepEvent::Shutdown => Some(VcpuExit::Shutdown),
        }
    }
}

impl Vcpu for EmuVcpu {
    fn run(&mut self) -> Result<VcpuExit, BackendError> {
        // Nothing a guest does may take the host process down: should the interpreter itself
        // fail on some instruction, the run ends with an internal error naming where.
        let cpu = &mut self.cpu;
        let control = &mut self.control;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| control.run(cpu)));
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

    /// Exact: breakpoints are checked before every instruction and watchpoints on every data
    /// access, with no limit on how many.
    fn set_guest_debug(&mut self, debug: &GuestDebug) -> Result<(), BackendError> {
        self.control.single_step = if debug.single_step {
            SingleStep::On
        } else {
            SingleStep::Off
        };
        self.control.breakpoints = debug.breakpoints.clone();
        self.cpu.set_watchpoints(&debug.watchpoints);
        Ok(())
    }

    fn set_interrupt_lines(&mut self, lines: Arc<dyn InterruptLines>) -> bool {
        self.control.lines = Some(lines);
        true
    }

    fn kick_handle(&self) -> Arc<VcpuKick> {
        self.control.kick.clone()
    }

    fn fx_state(&self) -> Result<FxState, BackendError> {
        Ok(self.cpu.fx_state())
    }

    fn set_fx_state(&mut self, state: &FxState) -> Result<(), BackendError> {
        self.cpu
            .set_fx_state(state)
            .map_err(|e| BackendError::InvalidState(e.to_string()))
    }

    fn msr(&self, index: u32) -> Result<u64, BackendError> {
        self.cpu
            .read_msr(index)
            .map_err(|_| BackendError::UnknownMsr(index))
    }

    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), BackendError> {
        self.cpu.write_msr(index, value).map_err(|_| {
            BackendError::InvalidState(format!("WRMSR {index:#x} <- {value:#x} raises #GP"))
        })
    }

    fn walker(&self) -> Result<Walker, BackendError> {
        Ok(self.cpu.mmu.walker().clone())
    }

    fn mmu_snapshot(&self) -> Option<MmuSnapshot> {
        Some(self.cpu.mmu.snapshot())
    }

    /// This vCPU's MMU counters, then the VM-wide shadow MMU's (shared by all its vCPUs).
    fn mmu_stats(&self) -> Vec<(&'static str, u64)> {
        let vcpu = self.cpu.mmu_counters();
        let shadow = self.shadow.stats();
        let engine = self.control.engine.as_ref().map(|e| e.counters());
        let mut stats = vec![
            ("guest_walks", vcpu.walks),
            ("page_faults", vcpu.page_faults()),
            ("faults_not_present", vcpu.faults_not_present),
            ("faults_protection", vcpu.faults_protection),
            ("faults_reserved", vcpu.faults_reserved),
            ("tlb_hits", vcpu.tlb_hits),
            ("tlb_misses", vcpu.tlb_misses),
            ("tlb_fills", vcpu.tlb_fills),
            ("tlb_flushes", vcpu.tlb_flushes),
            ("tlb_frame_flushes", vcpu.tlb_frame_flushes),
            ("shadow_hits", vcpu.shadow_hits),
            ("root_hits", vcpu.root_hits),
            ("root_misses", vcpu.root_misses),
            ("shadow_pages_created", shadow.pages_created),
            ("shadow_pages_zapped", shadow.pages_zapped),
            ("shadow_pages_alive", shadow.pages_alive),
            ("sptes_installed", shadow.sptes_installed),
            ("tracked_writes", shadow.tracked_writes),
            ("tracked_frames", shadow.tracked_frames),
            ("flooded_pages_zapped", shadow.flooded),
            ("large_leaves_split", shadow.splits),
        ];
        stats.extend(engine.into_iter().flatten());
        stats
    }
}
