//! The interpreter: Umbra's reference for every x86 instruction.
//!
//! One [`Interpreter`] is one vCPU. [`Interpreter::step`] fetches, decodes (with iced-x86) and
//! executes one instruction, or delivers one pending event, exactly as the SDM describes; the
//! JIT is tested against it, and it against KVM running the same code on the real CPU.
//!
//! Every guest memory access goes through segmentation ([`segmentation`]), then the guest page
//! walker, then the memslots or, for addresses that are not RAM, the device bus. An instruction
//! either completes or raises an [`Exception`] with the architectural state as it was before
//! the instruction (faults are precise), except for the progress a REP string instruction has
//! already made, which the SDM keeps.
//!
//! The modules:
//! - [`alu`]: results and flags of the integer instructions.
//! - [`exception`]: exception vectors and the double-fault rules.
//! - `memory`: linear and physical memory access.
//! - [`segmentation`]: segment registers, descriptors and linear addresses.
//! - `operands`: reading and writing an instruction's operands.
//! - `delivery`: delivering exceptions and interrupts through the IVT or IDT.
//! - `exec`: the instructions, one module per family.
//! - [`fpu`]: the x87, MMX and SSE state, and running floating-point instructions on the host.
//! - [`cpuid`] and [`msr`]: the processor Umbra presents.
//! - `watch`: a debugger's watchpoints, checked on every data access.
//! - [`translator`]: what a translator (the JIT) sees of the vCPU and may ask of it.

pub mod alu;
pub mod cpuid;
mod decode_cache;
mod delivery;
pub mod exception;
mod exec;
pub mod fpu;
mod memory;
pub mod msr;
mod operands;
pub mod segmentation;
pub mod translator;
mod watch;

use std::sync::Arc;

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction, Mnemonic};
use umbra_mmu::memslot::Memslots;
use umbra_mmu::role::CpuRole;
use umbra_mmu::shadow::ShadowMmu;
use umbra_mmu::vcpu_mmu::VcpuMmu;
use umbra_mmu::walker::Walker;

pub use exception::Exception;

use crate::backend::IoHandler;
use crate::state::{
    CpuMode, RFLAGS_FIXED, RFLAGS_RF, RFLAGS_TF, Registers, Segment, SystemRegisters,
};
use msr::MsrState;

/// The physical-address width Umbra's CPU reports (CPUID leaf 0x8000_0008, EAX bits 7:0).
pub const MAXPHYADDR: u8 = 40;

/// DR6.BS: the #DB was a single-step trap.
const DR6_BS: u64 = 1 << 14;

/// The longest legal x86 instruction, in bytes.
const MAX_INSTRUCTION_LEN: usize = 15;

/// What a step did that the vCPU loop must hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepEvent {
    /// Nothing: run on.
    None,
    /// The instruction did port or MMIO I/O: devices may have asked the machine to stop.
    Io,
    /// The vCPU executed HLT and waits for an interrupt.
    Halt,
    /// A triple fault: the processor shut down.
    Shutdown,
}

/// One interpreted vCPU.
pub struct Interpreter {
    /// General registers, RIP and RFLAGS.
    pub(crate) regs: Registers,
    /// Segment, descriptor-table and control registers, EFER.
    pub(crate) sregs: SystemRegisters,
    /// Debug registers DR0-DR7 (DR4/DR5 alias DR6/DR7 and are never stored).
    pub(crate) dr: [u64; 8],
    /// The model-specific registers Umbra implements.
    pub(crate) msr: MsrState,
    /// XCR0.
    pub(crate) xcr0: u64,
    /// The x87, MMX and SSE state.
    pub(crate) fpu: fpu::Fpu,
    /// The current privilege level.
    pub(crate) cpl: u8,
    /// Interrupts are inhibited until after the next instruction (STI, MOV SS, POP SS).
    pub(crate) interrupt_shadow: bool,
    /// The vCPU executed HLT and waits for an interrupt.
    pub(crate) halted: bool,
    /// The MMU: the page walker (holding CR3, the CPU role and the PAE PDPTE registers), the
    /// TLB and the cached shadow roots.
    pub(crate) mmu: VcpuMmu,
    pub(crate) memslots: Arc<Memslots>,
    pub(crate) io: Arc<dyn IoHandler>,
    /// Where RIP goes when the current instruction completes.
    pub(crate) next_rip: u64,
    /// What the current instruction did that the loop must hear about.
    pub(crate) event: StepEvent,
    /// Instructions retired, for the time-stamp counter and statistics.
    pub(crate) retired: u64,
    /// Decoded instructions by guest physical address.
    decode_cache: decode_cache::DecodeCache,
    /// A debugger's watchpoints.
    watch: watch::Watch,
}

impl Interpreter {
    /// A vCPU in the architectural reset state (SDM Vol. 3A, Table 10-1) over `memslots`,
    /// sharing the VM's shadow pages `shadow`, doing its I/O through `io`.
    pub fn new(
        memslots: Arc<Memslots>,
        shadow: Arc<ShadowMmu>,
        io: Arc<dyn IoHandler>,
    ) -> Interpreter {
        let walker = Walker::new(MAXPHYADDR, true).expect("MAXPHYADDR is within 32..=52");
        let mmu = VcpuMmu::new(walker, shadow, memslots.clone());
        let mut cpu = Interpreter {
            regs: Registers::default(),
            sregs: SystemRegisters::default(),
            dr: [0; 8],
            msr: MsrState::default(),
            xcr0: 1,
            fpu: fpu::Fpu::default(),
            cpl: 0,
            interrupt_shadow: false,
            halted: false,
            mmu,
            memslots,
            io,
            next_rip: 0,
            event: StepEvent::None,
            retired: 0,
            decode_cache: decode_cache::DecodeCache::new(),
            watch: watch::Watch::default(),
        };
        cpu.reset();
        cpu
    }

    /// Puts the vCPU in the state the SDM gives after RESET.
    pub fn reset(&mut self) {
        let data = Segment {
            selector: 0,
            base: 0,
            limit: 0xffff,
            type_: 0x3,
            s: true,
            present: true,
            ..Segment::default()
        };
        let system = |type_| Segment {
            type_,
            present: true,
            limit: 0xffff,
            ..Segment::default()
        };
        self.regs = Registers {
            rip: 0xfff0,
            rflags: RFLAGS_FIXED,
            ..Registers::default()
        };
        // EDX holds the processor signature after reset.
        self.regs.gpr[2] = cpuid::SIGNATURE.into();
        self.sregs = SystemRegisters {
            cs: Segment {
                selector: 0xf000,
                base: 0xffff_0000,
                type_: 0xb,
                ..data
            },
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            ldtr: system(0x2),
            tr: system(0xb),
            gdt: crate::state::DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            idt: crate::state::DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            cr0: 0x6000_0010,
            apic_base: msr::APIC_BASE_RESET,
            ..SystemRegisters::default()
        };
        self.dr = [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400];
        self.msr = MsrState::default();
        self.xcr0 = 1;
        self.fpu = fpu::Fpu::default();
        self.cpl = 0;
        self.halted = false;
        self.interrupt_shadow = false;
        self.update_paging_role();
        self.mmu.set_cr3(0);
    }

    /// The general registers.
    pub fn registers(&self) -> Registers {
        self.regs
    }

    /// Replaces the general registers.
    pub fn set_registers(&mut self, regs: &Registers) {
        self.regs = *regs;
        self.regs.rflags |= RFLAGS_FIXED;
    }

    /// The system registers.
    pub fn system_registers(&self) -> SystemRegisters {
        SystemRegisters {
            cr3: self.mmu.walker().cr3(),
            ..self.sregs
        }
    }

    /// Replaces the system registers, as a debugger or a loader does: no checks, and the CPL
    /// follows SS.DPL as KVM's does.
    pub fn set_system_registers(&mut self, sregs: &SystemRegisters) {
        self.sregs = *sregs;
        self.cpl = if sregs.cr0 & 1 == 0 { 0 } else { sregs.ss.dpl };
        self.mmu.set_cr3(sregs.cr3);
        self.update_paging_role();
        if self.mmu.walker().role().paging_mode() == umbra_mmu::paging::PagingMode::Pae
            && let Ok(pdptrs) = self.mmu.walker().load_pdptrs(sregs.cr3, &*self.memslots)
        {
            self.mmu.set_pdptrs(pdptrs);
        }
    }

    /// The number of instructions retired since the vCPU was made.
    pub fn instructions_retired(&self) -> u64 {
        self.retired
    }

    /// The current CPU mode.
    pub fn mode(&self) -> CpuMode {
        self.sregs.mode()
    }

    /// Recomputes the CPU role after CR0, CR4 or EFER changed.
    pub(crate) fn update_paging_role(&mut self) {
        self.mmu.set_role(CpuRole::from_regs(
            self.sregs.cr0,
            self.sregs.cr4,
            self.sregs.efer,
        ));
    }

    /// Whether `address` is canonical for the current linear-address width.
    pub(crate) fn canonical(&self, address: u64) -> bool {
        umbra_mmu::paging::is_canonical(
            umbra_mmu::addr::Gva(address),
            self.mmu.walker().role().la57(),
        )
    }

    /// Whether the vCPU would take a maskable interrupt now: RFLAGS.IF set and no interrupt
    /// shadow (STI, MOV SS) in force.
    pub fn interrupts_enabled(&self) -> bool {
        self.regs.rflags & crate::state::RFLAGS_IF != 0 && !self.interrupt_shadow
    }

    /// Whether the vCPU is halted, waiting for an interrupt.
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Delivers external interrupt `vector` at the current instruction boundary, waking the
    /// vCPU from HLT. The caller checked [`Interpreter::interrupts_enabled`].
    pub fn deliver_interrupt(&mut self, vector: u8) -> StepEvent {
        self.halted = false;
        let rip = self.regs.rip;
        // Faults while delivering an external event carry EXT = 1 and skip the gate's DPL
        // check, as the processor's own exceptions do.
        match self.deliver(vector, None, delivery::Source::Exception, rip) {
            Ok(()) => StepEvent::None,
            Err(fault) => match self.raise(fault) {
                Ok(()) => StepEvent::None,
                Err(_) => StepEvent::Shutdown,
            },
        }
    }

    /// Turns the MMU's TLB and shadow pages off (`false`: every access walks the guest's
    /// tables) or on.
    pub fn set_mmu_caching(&mut self, on: bool) {
        self.mmu.set_caching(on);
    }

    /// The MMU's counters.
    pub fn mmu_counters(&self) -> umbra_mmu::vcpu_mmu::MmuCounters {
        self.mmu.counters()
    }

    /// The code size of the current code segment: 16, 32 or 64 bits.
    pub(crate) fn code_bitness(&self) -> u32 {
        match self.mode() {
            CpuMode::Real => 16,
            CpuMode::Long => 64,
            _ if self.regs.rflags & crate::state::RFLAGS_VM != 0 => 16,
            _ if self.sregs.cs.db => 32,
            _ => 16,
        }
    }

    /// Runs one instruction, or delivers the exception it raises.
    pub fn step(&mut self) -> StepEvent {
        if self.halted {
            return StepEvent::Halt;
        }
        self.event = StepEvent::None;
        self.mmu.begin_instruction();
        let shadowed = std::mem::take(&mut self.interrupt_shadow);
        let single_step = self.regs.rflags & RFLAGS_TF != 0;
        let mut trap_allowed = true;
        let result = self.fetch_decode().and_then(|instruction| {
            // Software interrupts clear TF on the way into their handler, which runs without
            // a single-step trap; IRET loads RF from the stack, where every other
            // instruction clears it when it completes (SDM Vol. 3B, 18.3.1.1).
            let mnemonic = instruction.mnemonic();
            trap_allowed = !matches!(
                mnemonic,
                Mnemonic::Int | Mnemonic::Int3 | Mnemonic::Into | Mnemonic::Int1
            );
            let keeps_rf = matches!(mnemonic, Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq);
            self.execute(&instruction)?;
            if !keeps_rf {
                self.regs.rflags &= !RFLAGS_RF;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.regs.rip = self.next_rip;
                self.retired += 1;
                // A single-step trap follows an instruction that began with TF set, except
                // one that loaded SS (its shadow holds the trap back one instruction).
                if single_step && trap_allowed && !self.interrupt_shadow {
                    self.dr[6] |= DR6_BS;
                    if self.trap(exception::vector::DB).is_err() {
                        return StepEvent::Shutdown;
                    }
                }
            }
            Err(exception) => {
                // A faulting instruction leaves the shadow of the one before it unconsumed.
                self.interrupt_shadow = shadowed && self.interrupt_shadow;
                if self.raise(exception).is_err() {
                    return StepEvent::Shutdown;
                }
            }
        }
        self.event
    }

    /// Fetches and decodes the instruction at CS:RIP.
    fn fetch_decode(&mut self) -> Result<Instruction, Exception> {
        let bitness = self.code_bitness();
        let rip = self.regs.rip;
        let window = self.fetch_window(rip)?;
        let linear = self.fetch_linear(rip);
        if self.mode() == CpuMode::Long && !self.canonical(linear) {
            return Err(Exception::gp(0));
        }
        let fetch = self.access(umbra_mmu::walker::AccessKind::Fetch);
        let mapping = self.translate(linear, fetch)?;
        let shadow = self.mmu.shadow();
        let generation = shadow.code_generation();
        if let Some(instruction) = self.decode_cache.lookup(mapping.gpa, bitness, generation)
            && instruction.len() <= window
        {
            let instruction = *instruction;
            self.set_next_rip(rip, &instruction, bitness);
            return Ok(instruction);
        }
        // Not cached. Code from RAM that fits in its page will be: its frame is protected
        // first, so that any store to it from now on makes the entry stale, and only then
        // are its bytes read.
        let cacheable = mapping.host.is_some();
        let generation = if cacheable {
            shadow.protect_code(mapping.gpa.gfn());
            shadow.code_generation()
        } else {
            generation
        };
        let instruction = self.fetch_and_decode(rip, linear, window, bitness)?;
        if cacheable && mapping.gpa.page_offset() as usize + instruction.len() <= 0x1000 {
            self.decode_cache
                .insert(mapping.gpa, bitness, generation, instruction);
        }
        self.set_next_rip(rip, &instruction, bitness);
        Ok(instruction)
    }

    /// Where RIP goes after `instruction` at `rip`, wrapped to the code size.
    fn set_next_rip(&mut self, rip: u64, instruction: &Instruction, bitness: u32) {
        let next = rip.wrapping_add(instruction.len() as u64);
        self.next_rip = match bitness {
            16 => next & 0xffff,
            32 => next & 0xffff_ffff,
            _ => next,
        };
    }

    /// Fetches the instruction bytes at `rip` (linear address `linear`, at most `window`
    /// bytes) and decodes them.
    fn fetch_and_decode(
        &mut self,
        rip: u64,
        linear: u64,
        window: usize,
        bitness: u32,
    ) -> Result<Instruction, Exception> {
        let mut bytes = [0u8; MAX_INSTRUCTION_LEN];
        // Fetch what lies on the first page; touch the next page only if the instruction
        // turns out to continue there, so a fault on it is raised only when it must be.
        let on_page = (0x1000 - (linear & 0xfff) as usize).min(window);
        self.fetch_bytes(rip, &mut bytes[..on_page])?;
        let instruction = match decode(bitness, &bytes[..on_page], rip) {
            Decoded::NeedMore if on_page < window => {
                self.fetch_bytes(
                    rip.wrapping_add(on_page as u64),
                    &mut bytes[on_page..window],
                )?;
                decode(bitness, &bytes[..window], rip)
            }
            decoded => decoded,
        };
        match instruction {
            Decoded::Instruction(instruction) => Ok(instruction),
            // An instruction running past the code segment's limit, or longer than 15 bytes.
            Decoded::NeedMore => Err(Exception::gp(0)),
            Decoded::Invalid => Err(Exception::ud()),
        }
    }
}

/// What decoding some bytes gave.
enum Decoded {
    /// A whole instruction.
    Instruction(Instruction),
    /// The bytes ran out before the instruction did.
    NeedMore,
    /// Not a valid encoding in this mode.
    Invalid,
}

/// Decodes one instruction from `bytes`.
fn decode(bitness: u32, bytes: &[u8], rip: u64) -> Decoded {
    let mut decoder = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    match decoder.last_error() {
        DecoderError::None => Decoded::Instruction(instruction),
        DecoderError::NoMoreBytes => Decoded::NeedMore,
        _ => Decoded::Invalid,
    }
}
