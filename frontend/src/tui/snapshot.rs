//! What the TUI shows, and how it gets it from the vCPU without ever blocking it.
//!
//! The vCPU's state is read on the vCPU's own thread, between two runs, into a [`VcpuState`]
//! that the [`Publisher`] swaps into an `ArcSwap`: the vCPU never waits for the UI, and the UI
//! reads the latest state with one atomic load. The UI asks for a fresh state ten times a
//! second ([`Publisher::request`]): a flag the machine loop reads after each run (one relaxed
//! load) and a kick, so that a guest that never exits on its own (KVM running a compute loop)
//! comes out within a moment to be looked at. Everything the render functions take is in one
//! plain value, [`Snapshot`], so they are pure and testable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use umbra_cpu::backend::{BackendError, Vcpu, VcpuKick};
use umbra_cpu::state::{CpuMode, Registers, SystemRegisters};
use umbra_mmu::addr::{Gpa, Gva, PAGE_SIZE};
use umbra_mmu::memslot::Memslots;
use umbra_mmu::vcpu_mmu::MmuSnapshot;
use umbra_mmu::walker::Walker;

use super::browser::BrowserView;
use super::rates::RateSeries;
use crate::gdb::target::debug_translation;
use crate::inspect::MemslotRow;
use crate::machine::VcpuObserver;

/// The longest x86 instruction.
const MAX_INSTRUCTION: usize = 15;

/// The vCPU at one moment, as read on its thread.
#[derive(Clone, Debug)]
pub struct VcpuState {
    /// When it was read.
    pub taken: Instant,
    /// The general registers.
    pub regs: Registers,
    /// The segment and control registers.
    pub sregs: SystemRegisters,
    /// The bytes at CS:RIP (up to 15; fewer where memory ends or is not mapped).
    pub code: Vec<u8>,
    /// The page walker in the vCPU's paging state, for walks and the page-table browser.
    pub walker: Option<Walker>,
    /// The software MMU's roots, TLB and counters; `None` on KVM.
    pub mmu: Option<MmuSnapshot>,
    /// The backend's MMU counters (and the JIT's, named `jit_*`).
    pub stats: Vec<(&'static str, u64)>,
    /// The kernel's statistics for this vCPU (KVM's binary stats); empty elsewhere.
    pub kernel_stats: Vec<(String, u64)>,
}

impl VcpuState {
    /// Reads `vcpu`, and the instruction bytes at its RIP from `memory`.
    pub fn capture(vcpu: &dyn Vcpu, memory: &Memslots) -> Result<VcpuState, BackendError> {
        let regs = vcpu.registers()?;
        let sregs = vcpu.system_registers()?;
        let walker = vcpu.walker().ok();
        let code = walker.as_ref().map_or_else(Vec::new, |walker| {
            instruction_bytes(walker, memory, code_address(&regs, &sregs))
        });
        Ok(VcpuState {
            taken: Instant::now(),
            regs,
            sregs,
            code,
            walker,
            mmu: vcpu.mmu_snapshot(),
            stats: vcpu.mmu_stats(),
            kernel_stats: vcpu.kernel_stats().unwrap_or_default(),
        })
    }

    /// A counter by name, from the MMU's counters or the kernel's statistics.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.stats
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| *value)
            .or_else(|| {
                self.kernel_stats
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, value)| *value)
            })
    }
}

/// The linear address of the next instruction.
fn code_address(regs: &Registers, sregs: &SystemRegisters) -> u64 {
    match sregs.mode() {
        CpuMode::Long => regs.rip,
        CpuMode::Real => sregs.cs.base.wrapping_add(regs.rip & 0xffff),
        CpuMode::Protected | CpuMode::Compatibility => {
            sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
        }
    }
}

/// Up to [`MAX_INSTRUCTION`] bytes from `linear` on, page by page, as a debugger reads them.
fn instruction_bytes(walker: &Walker, memory: &Memslots, linear: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MAX_INSTRUCTION);
    while bytes.len() < MAX_INSTRUCTION {
        let at = linear.wrapping_add(bytes.len() as u64);
        let Some(Gpa(gpa)) = debug_translation(walker, memory, Gva(at)) else {
            break;
        };
        let in_page = (PAGE_SIZE - at % PAGE_SIZE) as usize;
        let mut chunk = vec![0; in_page.min(MAX_INSTRUCTION - bytes.len())];
        if memory.read(Gpa(gpa), &mut chunk).is_err() {
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

/// Where the vCPU's states are published for the UI; see the module's documentation.
pub struct Publisher {
    memory: Arc<Memslots>,
    kick: Arc<VcpuKick>,
    wanted: AtomicBool,
    latest: ArcSwapOption<VcpuState>,
}

impl Publisher {
    /// A publisher reading instruction bytes from `memory`, kicking the vCPU through `kick`.
    pub fn new(memory: Arc<Memslots>, kick: Arc<VcpuKick>) -> Publisher {
        Publisher {
            memory,
            kick,
            wanted: AtomicBool::new(false),
            latest: ArcSwapOption::empty(),
        }
    }

    /// Asks the running vCPU for a fresh state at its next exit, and makes it exit soon.
    pub fn request(&self) {
        self.wanted.store(true, Ordering::Relaxed);
        self.kick.kick();
    }

    /// The latest state published, if any.
    pub fn latest(&self) -> Option<Arc<VcpuState>> {
        self.latest.load_full()
    }

    /// Reads `vcpu` and publishes what it holds (on the vCPU's thread).
    pub fn publish(&self, vcpu: &dyn Vcpu) {
        // A vCPU the backend cannot read keeps the last state shown.
        if let Ok(state) = VcpuState::capture(vcpu, &self.memory) {
            self.latest.store(Some(Arc::new(state)));
        }
    }
}

impl VcpuObserver for Publisher {
    fn wants_look(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    fn look(&self, vcpu: &dyn Vcpu) {
        self.wanted.store(false, Ordering::Relaxed);
        self.publish(vcpu);
    }
}

/// Whether the guest runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// The guest runs.
    Running,
    /// Stopped by the user (pause or a single step).
    Paused,
    /// The run is over, for this reason.
    Ended(String),
}

/// The panes, in the order focus moves through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    /// The serial console.
    Console,
    /// Registers and the current instruction.
    Vcpu,
    /// Roles, roots, shadow pages, TLB.
    Mmu,
    /// Rates over time.
    Rates,
    /// The memslots.
    Memslots,
    /// KVM's statistics.
    Kvm,
    /// The page-table browser.
    Browser,
}

impl Pane {
    /// The pane's title.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Console => "console",
            Pane::Vcpu => "vCPU",
            Pane::Mmu => "MMU",
            Pane::Rates => "rates",
            Pane::Memslots => "memslots",
            Pane::Kvm => "KVM statistics",
            Pane::Browser => "page tables",
        }
    }
}

/// A line being typed at the bottom of the screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// What is asked ("walk", "go to").
    pub label: String,
    /// What has been typed.
    pub text: String,
}

/// A text shown over the panes until dismissed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlay {
    /// Its title.
    pub title: String,
    /// Its text.
    pub text: String,
}

/// Everything the screen shows at one moment: the render functions' only input.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The backend's name ("emu", "kvm").
    pub backend: String,
    /// Whether the guest runs.
    pub run: RunState,
    /// The vCPU's latest state.
    pub vcpu: Option<Arc<VcpuState>>,
    /// The rates over time.
    pub rates: Vec<RateSeries>,
    /// The memslots.
    pub memslots: Vec<MemslotRow>,
    /// The kernel's statistics for the VM (KVM's binary stats), or why there are none.
    pub vm_stats: Result<Vec<(String, u64)>, String>,
    /// The console's lines to show, oldest first, ending with the line being written.
    pub console: Vec<String>,
    /// How many lines the console is scrolled back (0: following the output).
    pub console_scroll: usize,
    /// The pane with the keyboard.
    pub focus: Pane,
    /// The pane shown beside the console when the screen has room for only one.
    pub detail: Pane,
    /// The page-table browser, when open.
    pub browser: Option<BrowserView>,
    /// The line being typed, if any.
    pub prompt: Option<Prompt>,
    /// A text over the panes (a walk's result), if any.
    pub overlay: Option<Overlay>,
    /// The help is open.
    pub help: bool,
    /// A one-line message for the status line (an error, a hint).
    pub message: Option<String>,
    /// Colours are on (not with NO_COLOR).
    pub color: bool,
}
