//! The dispatcher: finds or translates the block at RIP, runs it, and hands the vCPU to the
//! interpreter for what blocks leave to it.

use std::panic::AssertUnwindSafe;

use dynasmrt::x64::X64Relocation;
use dynasmrt::{DynasmApi, DynasmLabelApi, VecAssembler, dynasm};
use rustc_hash::FxHashMap;
use umbra_cpu::backend::emu::BlockEngine;
use umbra_cpu::interp::translator::{BlockContext as CpuContext, CodePage};
use umbra_cpu::interp::{Interpreter, StepEvent};
use umbra_cpu::state::Registers;
use umbra_mmu::tlb::{ACCESS_BITS, InlineTlb};

use crate::cache::{Block, BlockKey, CodeCache, FarContext};
use crate::code_buffer::{CodeBuffer, JUMP_LEN};
use crate::context::{self, BlockContext, Exit, JUMP_CACHE_BITS, JumpEntry, budget};
use crate::counters::JitCounters;
use crate::emitter::{Runtime, jump_lookup_routine, tlb_lookup_routine};
use crate::translate::{BlockStart, Translation, at_cpl0, translate};

/// The size of each vCPU's code buffer.
const CODE_BUFFER_BYTES: usize = 32 << 20;

/// The most instructions the interpreter runs in a row for code not hot enough to translate,
/// before the dispatcher looks again.
const COLD_RUN: u32 = 64;

/// The longest an x86 instruction is, in bytes.
const LONGEST_INSTRUCTION: usize = 15;

/// The linear address of the page after the one holding `rip`.
fn next_page(rip: u64) -> u64 {
    (rip | 0xfff).wrapping_add(1)
}

/// How many jump contexts' epochs are kept before they are all dropped.
const MAX_SAVED_JUMP_EPOCHS: usize = 1024;

/// Generated code's way in: `enter(context, block)` runs from `block` until an exit.
type EnterFn = unsafe extern "sysv64" fn(*mut BlockContext, usize) -> u32;

/// Why the dispatcher stopped running blocks.
enum Stop {
    /// The budget is spent.
    Budget,
    /// The interpreter must run the next instruction.
    Interpret,
    /// The code at RIP is not hot enough to translate yet: the interpreter runs it.
    Cold,
    /// A debugger's breakpoint is at RIP: the caller decides.
    Breakpoint,
    /// A block changed the privilege context: the next block is chosen in the new one.
    Dispatch,
}

/// One vCPU's JIT: a [`BlockEngine`].
pub struct Jit {
    cache: CodeCache,
    context: Box<BlockContext>,
    enter: EnterFn,
    runtime: Runtime,
    threshold: u32,
    /// The shadow MMU's code generation this cache is up to date with.
    code_generation: u64,
    counters: JitCounters,
    /// The jump cache ([`JumpEntry`]), which the context points at.
    jump_cache: Box<[JumpEntry]>,
    /// What the jump cache's epoch was started for: the root and the privilege context.
    jump_key: Option<JumpKey>,
    /// The epochs the other jump contexts met were left in.
    jump_epochs: FxHashMap<JumpKey, u64>,
    /// The first epoch since blocks last went: jump-cache entries of earlier ones must not
    /// be taken up again.
    blocks_epoch: u64,
    /// The jump epoch the return stack's calls were made in.
    returns_epoch: u64,
}

/// What a jump-cache epoch holds for besides the TLB's contents: the TLB tag of the code run
/// (at CPL 0 the upper half's, which roots may share; at CPL 3 the root's), and the block
/// context's read bit, SSE and floating-point settings (blocks are keyed by them).
type JumpKey = (u32, u16, bool, bool);

impl Jit {
    /// A JIT translating a block once it has been reached more than `threshold` times.
    pub fn new(threshold: u32) -> std::io::Result<Jit> {
        let mut buffer = CodeBuffer::new(CODE_BUFFER_BYTES)?;
        let (enter, runtime, permanent) = permanent_code(&mut buffer);
        // SAFETY: `enter` is the entry sequence just assembled, with the signature of
        // `EnterFn` (System V: context in RDI, block in RSI, exit code in EAX).
        let enter: EnterFn = unsafe { std::mem::transmute::<usize, EnterFn>(enter) };
        let jump_cache = vec![JumpEntry::default(); 1 << JUMP_CACHE_BITS].into_boxed_slice();
        Ok(Jit {
            cache: CodeCache::new(buffer, permanent),
            context: Box::new(BlockContext {
                host_mxcsr: host_mxcsr().into(),
                jump_cache: jump_cache.as_ptr() as u64,
                // Entries start in epoch 0: none is valid.
                jump_epoch: 1,
                last_jump_epoch: 1,
                ..BlockContext::default()
            }),
            enter,
            runtime,
            threshold,
            code_generation: 0,
            counters: JitCounters::default(),
            jump_cache,
            jump_key: None,
            jump_epochs: FxHashMap::default(),
            blocks_epoch: 1,
            returns_epoch: 1,
        })
    }

    /// The JIT's counters.
    pub fn statistics(&self) -> &JitCounters {
        &self.counters
    }

    /// One interpreter step for an instruction blocks do not run; `Some` when [`Jit::run`]
    /// must return: with the step's event, or after interrupts became enabled.
    fn interpret(&mut self, cpu: &mut Interpreter, left: &mut i64) -> Option<StepEvent> {
        let was_enabled = cpu.interrupts_enabled();
        let event = cpu.step();
        *left -= 1;
        self.counters.interpreted += 1;
        if event != StepEvent::None {
            return Some(event);
        }
        (!was_enabled && cpu.interrupts_enabled()).then_some(StepEvent::None)
    }

    /// Interprets code not yet hot: up to [`COLD_RUN`] instructions, until one jumps or the
    /// next is at one of `breakpoints`.
    fn interpret_cold(
        &mut self,
        cpu: &mut Interpreter,
        left: &mut i64,
        breakpoints: &[u64],
    ) -> Option<StepEvent> {
        for step in 0..COLD_RUN {
            if step > 0 && !breakpoints.is_empty() && breakpoints.contains(&cpu.rip_linear()) {
                break;
            }
            let rip = cpu.registers().rip;
            if let Some(stop) = self.interpret(cpu, left) {
                return Some(stop);
            }
            let next = cpu.registers().rip;
            let sequential = next > rip && next - rip <= 15;
            if !sequential || *left <= 0 {
                break;
            }
        }
        None
    }

    /// Brings the cache up to date with stores to code frames since it last looked.
    fn catch_up(&mut self, cpu: &Interpreter) {
        let shadow = cpu.shadow_mmu();
        let generation = shadow.code_generation();
        if generation == self.code_generation {
            return;
        }
        // Blocks may go: the jump cache must not lead to them.
        self.forget_jump_targets();
        match shadow.code_written_between(self.code_generation, generation) {
            Some(frames) => {
                for gfn in frames {
                    self.counters.invalidations += self.cache.invalidate_page(gfn.0) as u64;
                }
            }
            None => {
                self.counters.invalidations += self.cache.flush() as u64;
                self.counters.flushes += 1;
            }
        }
        self.code_generation = generation;
    }

    /// The block for `key`, translated now if needed and hot enough.
    fn block(
        &mut self,
        cpu: &mut Interpreter,
        key: BlockKey,
        page: CodePage,
        context: CpuContext,
    ) -> Result<(usize, u32, u32), Stop> {
        match self.cache.get(&key) {
            Some(Block::Code {
                entry,
                guest_bytes,
                instructions,
                next_frame,
            }) => {
                // An instruction running into the next page: that page must still be the
                // frame its bytes came from (if not, the interpreter runs it).
                if let Some(frame) = next_frame
                    && cpu.code_page(next_page(key.rip)).map(|p| p.gpa >> 12) != Some(frame)
                {
                    return Err(Stop::Interpret);
                }
                self.counters.cache_hits += 1;
                return Ok((entry, guest_bytes, instructions));
            }
            Some(Block::Interpret(mnemonic)) => {
                self.counters.count_fallback(mnemonic);
                return Err(Stop::Interpret);
            }
            None => {}
        }
        if !self.cache.heat_up(key, self.threshold) {
            return Err(Stop::Cold);
        }
        // Stores to the frame must take the slow path before its bytes are read (they then
        // invalidate what is translated from them).
        cpu.protect_code(umbra_mmu::addr::Gfn(key.gpa >> 12));
        let offset = (key.gpa & 0xfff) as usize;
        // SAFETY: `host_page` is the host address of the guest frame holding the code, RAM
        // that stays mapped while the vCPU runs (the MMU pins its slot); the slice stays in
        // that page. Another vCPU's store racing with this read makes the block stale, which
        // the protection just set catches.
        let bytes =
            unsafe { std::slice::from_raw_parts(page.host_page.add(offset), 0x1000 - offset) };
        let start = BlockStart {
            rip: key.rip,
            read_bit: context.read_bit,
            write_bit: context.write_bit,
            sse: context.sse,
            float: context.float,
        };
        let mut spanning = Vec::new();
        let mut next_frame = None;
        for attempt in 0..2 {
            let code = if next_frame.is_some() {
                &spanning[..]
            } else {
                bytes
            };
            match translate(code, start, self.cache.next_address(), self.runtime) {
                Translation::Untranslated(None) if next_frame.is_none() && attempt == 0 => {
                    // Perhaps an instruction running into the next page: its bytes follow.
                    let Some(frame) = self.next_page_bytes(cpu, key.rip, bytes, &mut spanning)
                    else {
                        self.cache.insert_interpreted(key, None);
                        self.counters.count_fallback(None);
                        return Err(Stop::Interpret);
                    };
                    next_frame = Some(frame);
                }
                Translation::Untranslated(mnemonic) => {
                    self.cache.insert_interpreted(key, mnemonic);
                    self.counters.count_fallback(mnemonic);
                    return Err(Stop::Interpret);
                }
                Translation::Block(block) => {
                    if let Some(entry) = self.cache.insert_code(
                        key,
                        &block.code,
                        block.guest_bytes,
                        block.instructions,
                        next_frame,
                    ) {
                        self.counters.blocks_translated += 1;
                        self.counters.host_bytes += block.code.len() as u64;
                        self.counters.guest_instructions += u64::from(block.instructions);
                        // Translating protected the frame: the TLB must drop direct stores
                        // to it before the block runs; a flush gives the root a new tag,
                        // which generated code must look under, and ends the jump cache's
                        // epoch.
                        cpu.begin_block();
                        if !self.follow_jump_context(cpu, context) {
                            return Err(Stop::Interpret);
                        }
                        return Ok((entry, block.guest_bytes, block.instructions));
                    }
                    // The buffer is full: start over, once.
                    if attempt == 0 {
                        self.counters.invalidations += self.cache.flush() as u64;
                        self.counters.flushes += 1;
                        self.forget_jump_targets();
                    }
                }
            }
        }
        Err(Stop::Interpret)
    }

    /// The bytes of the page at `rip` from it on (`bytes`) followed by the first bytes of the
    /// next page, into `spanning`, and that page's frame, which stores must now take the slow
    /// path to (they invalidate the block); `None` when `rip` is not within an instruction's
    /// length of the page's end, or the next page cannot be fetched from.
    fn next_page_bytes(
        &mut self,
        cpu: &mut Interpreter,
        rip: u64,
        bytes: &[u8],
        spanning: &mut Vec<u8>,
    ) -> Option<u64> {
        if bytes.len() >= LONGEST_INSTRUCTION {
            return None;
        }
        let next = cpu.code_page(next_page(rip))?;
        let frame = next.gpa >> 12;
        cpu.protect_code(umbra_mmu::addr::Gfn(frame));
        // SAFETY: as for the first page: the host address of the next page's frame, RAM
        // that stays mapped while the vCPU runs, read within the page.
        let more = unsafe {
            std::slice::from_raw_parts(next.host_page, LONGEST_INSTRUCTION - bytes.len())
        };
        spanning.clear();
        spanning.extend_from_slice(bytes);
        spanning.extend_from_slice(more);
        Some(frame)
    }

    /// Ends every jump-cache epoch because blocks may be gone: no entry filled before may be
    /// taken up again.
    fn forget_jump_targets(&mut self) {
        self.context.end_jump_epochs();
        self.context.forget_returns();
        self.blocks_epoch = self.context.jump_epoch;
    }

    /// The block at `rip` from the jump cache: an entry of this epoch, or one of an earlier
    /// epoch since blocks last went (a root switch or a TLB invalidation ended it) whose
    /// block is the one `rip` translates to now, in this context. Blocks whose instruction
    /// runs into the next page are taken up only in their own epoch (their second page is
    /// not checked here).
    fn jump_cache_entry(
        &mut self,
        cpu: &mut Interpreter,
        rip: u64,
        context: CpuContext,
    ) -> Option<usize> {
        let index = context::jump_index(rip);
        let cached = self.jump_cache[index];
        if cached.rip != rip || !self.jump_cacheable(rip) {
            return None;
        }
        if cached.epoch == self.context.jump_epoch {
            return Some(cached.entry as usize);
        }
        let near_page_end = 0x1000 - (rip & 0xfff) < LONGEST_INSTRUCTION as u64;
        if cached.epoch < self.blocks_epoch || near_page_end {
            return None;
        }
        let page = cpu.code_page(rip)?;
        let tag = JumpEntry::block_tag(page.gpa, context.read_bit, context.sse, context.float);
        if cached.block != tag {
            return None;
        }
        self.jump_cache[index].epoch = self.context.jump_epoch;
        Some(cached.entry as usize)
    }

    /// Whether the jump cache may hold `rip` in the current jump context: not a lower-half
    /// address under a tag roots share.
    fn jump_cacheable(&self, rip: u64) -> bool {
        !self.context.jump_shared || rip >> 63 != 0
    }

    /// Brings generated code's view of the TLB up to date ([`follow_tlb`]) and switches to
    /// the jump context it and `context` make; `false` while the TLB is off.
    fn follow_jump_context(&mut self, cpu: &Interpreter, context: CpuContext) -> bool {
        let Some(tlb) = follow_tlb(&mut self.context, cpu) else {
            return false;
        };
        let [lower, upper] = tlb.tags;
        let shared = at_cpl0(context.read_bit) && upper != lower;
        let tag = if shared { upper } else { lower };
        let jump_key = (tag, context.read_bit, context.sse, context.float);
        if self.jump_key != Some(jump_key) {
            self.switch_jump_key(jump_key, shared);
        }
        // The return stack holds for the epoch its calls were made in.
        if self.context.jump_epoch != self.returns_epoch {
            self.context.forget_returns();
            self.returns_epoch = self.context.jump_epoch;
        }
        true
    }

    /// The jump context far chains are made in now, at CPL 0 ([`FarContext`]).
    fn far_context(&self) -> FarContext {
        let (tag, ..) = self
            .jump_key
            .expect("a jump context is followed before blocks run");
        self.context
            .jump_shared
            .then_some((tag, self.context.first_live_epoch))
    }

    /// Makes `key` the jump context: the jump cache's entries filled under it before are
    /// valid again if no epoch has ended since, and those of the context left are kept.
    fn switch_jump_key(&mut self, key: JumpKey, shared: bool) {
        // Epochs saved before the last end are dead: drop them now and then.
        if self.jump_epochs.len() >= MAX_SAVED_JUMP_EPOCHS {
            self.jump_epochs.clear();
        }
        let saved = self.jump_epochs.get(&key).copied();
        let left = self.context.switch_jump_epoch(saved, shared);
        if let Some(old) = self.jump_key.replace(key) {
            self.jump_epochs.insert(old, left);
        }
    }

    /// Runs blocks from the vCPU's RIP while they chain and jump to each other. With
    /// `breakpoints`, one block at a time (no chaining), none that holds one: the block
    /// where one is stops the run (`Stop::Breakpoint` at its start, else `Stop::Interpret`).
    fn run_blocks(
        &mut self,
        cpu: &mut Interpreter,
        context: CpuContext,
        left: &mut i64,
        breakpoints: &[u64],
    ) -> Stop {
        let Some(tlb) = cpu.inline_tlb() else {
            return Stop::Interpret;
        };
        let regs = cpu.registers();
        let ctx = &mut *self.context;
        ctx.gpr = regs.gpr;
        ctx.rip = regs.rip;
        ctx.rflags = regs.rflags;
        ctx.parked_flags = context::park_flags(regs.rflags);
        ctx.fs_base = context.fs_base;
        ctx.gs_base = context.gs_base;
        ctx.kernel_gs_base = cpu.kernel_gs_base();
        ctx.tsc_offset = cpu.tsc_offset();
        ctx.selectors = cpu.selectors();
        ctx.control_registers = cpu.control_registers();
        ctx.budget = budget::new(*left);
        ctx.slow_accesses = 0;
        ctx.tlb_entries = tlb.entries as u64;
        if !breakpoints.is_empty() {
            // Blocks run one at a time: none may find the next in the jump cache.
            self.forget_jump_targets();
        }
        let mut patch: Option<(usize, u64, Exit)> = None;
        let stop = loop {
            cpu.begin_block();
            self.catch_up(cpu);
            let rip = self.context.rip;
            if !self.follow_jump_context(cpu, context) {
                break Stop::Interpret;
            }
            if at_cpl0(context.read_bit) {
                self.cache.keep_far_chains(self.far_context());
            }
            // Without breakpoints, the jump cache first, as generated code looks (after an
            // exit to the interpreter, the next block is mostly there).
            let cached = if breakpoints.is_empty() {
                self.jump_cache_entry(cpu, rip, context)
            } else {
                None
            };
            // The block's length and instructions matter only with breakpoints.
            let (entry, guest_bytes, instructions) = if let Some(entry) = cached {
                self.counters.cache_hits += 1;
                (entry, 0, 0)
            } else {
                let Some(page) = cpu.code_page(rip) else {
                    break Stop::Interpret;
                };
                let key = BlockKey {
                    rip,
                    gpa: page.gpa,
                    read_bit: context.read_bit,
                    sse: context.sse,
                    float: context.float,
                };
                let block = match self.block(cpu, key, page, context) {
                    Ok(block) => block,
                    // `block` counted the instruction left to the interpreter.
                    Err(stop) => break stop,
                };
                if breakpoints.is_empty() && self.jump_cacheable(rip) {
                    let tag = JumpEntry::block_tag(
                        page.gpa,
                        context.read_bit,
                        context.sse,
                        context.float,
                    );
                    self.jump_cache[context::jump_index(rip)] =
                        JumpEntry::new(rip, self.context.jump_epoch, block.0 as u64, tag);
                }
                block
            };
            if let Some((site, epoch, exit)) = patch.take()
                && epoch == self.cache.epoch()
            {
                if exit == Exit::FarChain {
                    let far = self.far_context();
                    // Without shared translations, on to the jump-cache lookup after the site.
                    let target = if far.is_some() {
                        self.counters.far_chains += 1;
                        entry
                    } else {
                        site + JUMP_LEN
                    };
                    self.cache.chain_far(site, target, far);
                } else {
                    self.cache.patch(site, entry);
                }
                self.counters.chain_patches += 1;
            }
            if !breakpoints.is_empty() {
                let end = rip.wrapping_add(u64::from(guest_bytes));
                if let Some(&at) = breakpoints.iter().find(|&&b| b >= rip && b < end) {
                    break if at == rip {
                        Stop::Breakpoint
                    } else {
                        Stop::Interpret
                    };
                }
            }
            // With breakpoints, this block alone: the budget it is given covers it and no
            // more, so a chained successor's prologue leaves at once; the rest is held back.
            let held_back = if breakpoints.is_empty() {
                0
            } else {
                let left = budget::instructions(self.context.budget);
                budget::new((left - i64::from(instructions)).max(0))
            };
            self.context.budget -= held_back;
            // Taken afresh before each entry: `cpu` was used since.
            self.context.xmm = cpu.xmm_registers() as u64;
            self.context.mxcsr = cpu.mxcsr_register() as u64;
            self.context.cpu = cpu as *mut Interpreter as u64;
            // SAFETY: `entry` is a block of this cache, assembled for its address, and the
            // context is this JIT's, with the TLB view of this vCPU's current root; while
            // generated code runs, nothing else uses `cpu`, which the slow-path helper
            // reaches through the context.
            let code = unsafe { (self.enter)(&mut *self.context, entry) };
            self.context.budget += held_back;
            self.counters.blocks_run += 1;
            match Exit::from_code(code) {
                Exit::Jump => {}
                exit @ (Exit::Chain | Exit::FarChain) => {
                    patch = Some((self.context.patch_site as usize, self.cache.epoch(), exit));
                }
                Exit::Interpret => {
                    match self.context.exit_mnemonic {
                        0 => self.counters.slow_exits += 1,
                        tag => self.counters.count_fallback_number(tag as usize - 1),
                    }
                    break Stop::Interpret;
                }
                Exit::Budget => break Stop::Budget,
                Exit::Dispatch => break Stop::Dispatch,
            }
        };
        let ctx = &*self.context;
        let retired = (*left - budget::instructions(ctx.budget)) as u64;
        *left = budget::instructions(ctx.budget);
        cpu.set_registers(&Registers {
            gpr: ctx.gpr,
            rip: ctx.rip,
            rflags: context::unpark_flags(ctx.rflags, ctx.parked_flags),
        });
        cpu.set_gs_bases(ctx.gs_base, ctx.kernel_gs_base);
        self.counters.slow_accesses += ctx.slow_accesses;
        let accesses = budget::accesses(ctx.budget);
        cpu.retire_translated(retired, accesses.saturating_sub(ctx.slow_accesses));
        self.counters.instructions += retired;
        stop
    }
}

impl BlockEngine for Jit {
    fn run(&mut self, cpu: &mut Interpreter, budget: u32, breakpoints: &[u64]) -> StepEvent {
        let mut left = i64::from(budget);
        while left > 0 {
            if !breakpoints.is_empty() && breakpoints.contains(&cpu.rip_linear()) {
                return StepEvent::None;
            }
            let was_enabled = cpu.interrupts_enabled();
            let stop = match cpu.block_context() {
                Some(context) => self.run_blocks(cpu, context, &mut left, breakpoints),
                None => Stop::Interpret,
            };
            let event = match stop {
                // What is left is less than the next block (with breakpoints: the block
                // ran, alone): the slice is over.
                Stop::Budget | Stop::Breakpoint => return StepEvent::None,
                Stop::Interpret => self.interpret(cpu, &mut left),
                Stop::Cold => self.interpret_cold(cpu, &mut left, breakpoints),
                Stop::Dispatch => None,
            };
            if let Some(event) = event {
                return event;
            }
            // A block's STI, with the instruction in its shadow run by the interpreter: the
            // caller delivers what is pending.
            if !was_enabled && cpu.interrupts_enabled() {
                return StepEvent::None;
            }
        }
        StepEvent::None
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut list = self.counters.list();
        list.push(("jit_code_bytes", self.cache.code_bytes() as u64));
        list
    }
}

/// The slow path of the inline TLB lookup, called by generated code: the host address for an
/// access of `how & 0xff` bytes at `linear` (a write if `how & 0x100`; a string
/// instruction's `how >> 16` bytes if that is not 0), or 0 when the interpreter must make it.
extern "sysv64" fn slow_access(ctx: *mut BlockContext, linear: u64, how: u64) -> u64 {
    // SAFETY: generated code passes the context it runs in, which the dispatcher owns and
    // does not touch while a block runs.
    let ctx = unsafe { &mut *ctx };
    ctx.slow_accesses += 1;
    // SAFETY: the dispatcher stored the vCPU it runs before entering generated code, and
    // holds no reference into it while the block runs.
    let cpu = unsafe { &mut *(ctx.cpu as *mut Interpreter) };
    let run = (how >> 16) as usize;
    let size = if run != 0 { run } else { (how & 0xff) as usize };
    let write = how & 0x100 != 0;
    // A panic must not unwind through generated code: the interpreter then runs the
    // instruction, and meets the same trouble where it can be reported.
    let host = std::panic::catch_unwind(AssertUnwindSafe(|| {
        cpu.translate_direct(linear, size, write)
    }))
    .ok()
    .flatten()
    .map_or(0, |host| host as u64);
    // A store to a page table, or to code, drops TLB entries, and a flush gives the root a
    // new tag.
    follow_tlb(ctx, cpu);
    host
}

/// Brings generated code's view of the vCPU's TLB up to date and returns it: the tags of
/// the two halves of the address space; empty access slots if translations were dropped
/// since the last look, and a new jump-cache epoch if translations of code pages were (what
/// they rest on may have changed). `None` while the TLB is off.
fn follow_tlb(ctx: &mut BlockContext, cpu: &Interpreter) -> Option<InlineTlb> {
    let tlb = cpu.inline_tlb()?;
    ctx.tlb_tags = tlb.tags.map(u64::from);
    let invalidations = cpu.tlb_invalidations();
    if invalidations != ctx.tlb_invalidations {
        ctx.tlb_invalidations = invalidations;
        ctx.access_slots.forget();
    }
    let code = cpu.tlb_code_invalidations();
    let seen = ctx.tlb_code_invalidations;
    if code.upper != seen.upper {
        ctx.end_jump_epochs();
    } else if code.any != seen.any {
        ctx.end_private_jump_epochs();
    }
    ctx.tlb_code_invalidations = code;
    Some(tlb)
}

/// This thread's MXCSR, which generated code restores after each floating-point instruction
/// it runs under the guest's.
fn host_mxcsr() -> u32 {
    let mut value = 0u32;
    // SAFETY: STMXCSR stores the four bytes of MXCSR at the address of the local `value`.
    unsafe {
        std::arch::asm!(
            "stmxcsr dword ptr [{at}]",
            at = in(reg) &raw mut value,
            options(nostack, preserves_flags),
        );
    }
    value
}

/// Assembles the code every block shares at the start of `buffer`: the way into generated
/// code, the way out, the jump-cache lookup and the TLB lookups. Gives the entry's address,
/// the addresses blocks use, and the bytes it all takes.
fn permanent_code(buffer: &mut CodeBuffer) -> (usize, Runtime, usize) {
    let base = buffer.next_address();
    let mut ops = VecAssembler::<X64Relocation>::new(base);
    let exit = ops.new_dynamic_label();
    // In: save the callee-saved registers blocks use, align the stack for calls (six pushes
    // and the return address leave it 8 off), take the context into R15, jump to the block.
    // Out: the exit code is in EAX already.
    dynasm!(ops
        ; .arch x64
        ; push rbx
        ; push rbp
        ; push r12
        ; push r13
        ; push r14
        ; push r15
        ; sub rsp, 8
        ; mov r15, rdi
        ; jmp rsi
        ; =>exit
        ; add rsp, 8
        ; pop r15
        ; pop r14
        ; pop r13
        ; pop r12
        ; pop rbp
        ; pop rbx
        ; ret
    );
    let jump_lookup = ops.offset().0;
    jump_lookup_routine(&mut ops, exit);
    let lookups: Vec<_> = (0..ACCESS_BITS)
        .map(|n| {
            let start = ops.offset().0;
            tlb_lookup_routine(&mut ops, 1 << n);
            start
        })
        .collect();
    let exit_offset = ops.labels().resolve_dynamic(exit).expect("defined above").0;
    let code = ops.finalize().expect("the shared code assembles");
    let enter = buffer
        .append(&code)
        .expect("the code buffer holds the shared code");
    let runtime = Runtime {
        exit: enter + exit_offset,
        slow_access: slow_access as *const () as usize,
        jump_lookup: enter + jump_lookup,
        tlb_lookup: std::array::from_fn(|n| enter + lookups[n]),
    };
    (enter, runtime, code.len())
}
