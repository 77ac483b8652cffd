//! The block context: the memory generated code works in, and how it tells the dispatcher
//! why it stopped.
//!
//! While a block runs, R15 holds the address of a [`BlockContext`]; the guest's general
//! registers, RIP and RFLAGS live in it (copied in from the interpreter before the dispatcher
//! enters generated code, and back after), and are exact at every exit.
//!
//! The arithmetic flags travel in the form LAHF and SETO give them ([`park_flags`] and
//! [`unpark_flags`] convert), so that generated code saves and restores them with a few simple
//! instructions.

use std::mem::offset_of;

use umbra_mmu::tlb::CodeInvalidations;

/// What generated code reads and writes, at fixed offsets from R15.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BlockContext {
    /// RAX..R15, in the encoding's order.
    pub gpr: [u64; 16],
    /// The guest's RIP: written at every exit.
    pub rip: u64,
    /// The guest's RFLAGS but for its arithmetic flags, which are in `parked_flags` while
    /// generated code runs.
    pub rflags: u64,
    /// FS's base, added to FS-relative addresses.
    pub fs_base: u64,
    /// GS's base.
    pub gs_base: u64,
    /// IA32_KERNEL_GS_BASE, which SWAPGS exchanges with GS's base.
    pub kernel_gs_base: u64,
    /// Two counts in one ([`budget`]): in bits 63:24, the instructions blocks may still
    /// start (a block entered with fewer than its length left exits before running any); in
    /// bits 23:0, the memory accesses that reached the inline TLB lookup. A block's prologue
    /// charges its length and its accesses with one instruction, and an exit gives back what
    /// the block did not run with one more.
    pub budget: i64,
    /// The first TLB entry.
    pub tlb_entries: u64,
    /// The TLB tags of the lower and the upper half of the address space
    /// ([`umbra_mmu::tlb::InlineTlb::tags`]).
    pub tlb_tags: [u64; 2],
    /// On a [`Exit::Chain`] exit: the address of the jump to patch to the next block.
    pub patch_site: u64,
    /// The guest's XMM registers (`*mut u128`, XMM0 first).
    pub xmm: u64,
    /// The guest's MXCSR (`*mut u32`), loaded around the floating-point instructions blocks
    /// run.
    pub mxcsr: u64,
    /// The host's MXCSR, restored after each of them.
    pub host_mxcsr: u64,
    /// What RDTSC adds to the host's time-stamp counter for the guest's.
    pub tsc_offset: u64,
    /// The segment selectors: ES, CS, SS, DS, FS, GS.
    pub selectors: [u16; 6],
    /// The guest's arithmetic flags as LAHF and SETO leave them: bits 15:8 are RFLAGS' low
    /// byte (SF, ZF, AF, PF, CF), bit 0 is OF.
    pub parked_flags: u64,
    /// Accesses the inline lookup sent to the slow path.
    pub slow_accesses: u64,
    /// A value generated code keeps across a slow-path call (PUSH's operand, read before
    /// the stack is looked up).
    pub held: u64,
    /// The vCPU, for the slow-path helper: a `*mut Interpreter`, valid while a block runs.
    pub cpu: u64,
    /// The jump cache's first entry (a `*const JumpEntry`).
    pub jump_cache: u64,
    /// The jump cache's epoch: its entries of another epoch are stale. Each jump context
    /// (the root, the privilege context, the SSE settings) has its own, so that entries
    /// survive a switch away and back ([`BlockContext::switch_jump_epoch`]).
    pub jump_epoch: u64,
    /// The vCPU's TLB invalidations when the access slots were last checked against them.
    pub tlb_invalidations: u64,
    /// The vCPU's TLB invalidations of code pages when the epochs were last checked against
    /// them.
    pub tlb_code_invalidations: CodeInvalidations,
    /// The epoch every epoch last ended at ([`BlockContext::end_jump_epochs`]): those before
    /// it are dead (epochs only grow).
    pub first_live_epoch: u64,
    /// The epoch the epochs of private jump contexts last ended at
    /// ([`BlockContext::end_private_jump_epochs`]): those before it are dead.
    pub first_live_private_epoch: u64,
    /// Whether the current jump context is shared: kernel code under the tag that roots
    /// share for the upper half. Its entries hold upper-half targets only, and go only with
    /// the invalidations a processor's TLB entries for them go with
    /// ([`CodeInvalidations::upper`]).
    pub jump_shared: bool,
    /// The last epoch handed out: epochs are never reused.
    pub last_jump_epoch: u64,
    /// On an [`Exit::Interpret`]: the number of the mnemonic of the instruction the block
    /// does not translate, plus one; 0 when something else sends the interpreter (an access
    /// the slow path could not make, a check that failed).
    pub exit_mnemonic: u64,
    /// What memory accesses in generated code last translated.
    pub access_slots: AccessSlots,
    /// CR0 to CR4 by number, as MOV from them reads them (CR1, which does not exist, as 0);
    /// only the interpreter changes them.
    pub control_registers: [u64; 5],
    /// The calls blocks made in this jump epoch, most recent at `return_top`, the oldest
    /// overwritten ([`ReturnEntry`]).
    pub return_stack: [ReturnEntry; RETURN_STACK],
    /// The return stack's most recent entry.
    pub return_top: u64,
}

/// Entries of [`BlockContext::return_stack`] (a power of two).
pub const RETURN_STACK: usize = 16;

/// A call a block made, for the return to it: its return address, and where the calling
/// block goes on to the block there (a chained jump of its own). A return to that address,
/// in the jump epoch the call was made in, takes it instead of looking its target up.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ReturnEntry {
    /// The return address; [`NO_RETURN`] for none.
    pub rip: u64,
    /// The calling block's way on to it.
    pub code: u64,
}

impl Default for ReturnEntry {
    fn default() -> Self {
        ReturnEntry {
            rip: NO_RETURN,
            code: 0,
        }
    }
}

/// A return address no return goes to: it is not canonical.
pub const NO_RETURN: u64 = 1 << 63;

/// Entries of [`AccessSlots`] (a power of two).
pub const ACCESS_SLOTS: usize = 4096;

/// What a memory access in user code (blocks at CPL 3: see the emitter's `new`) last
/// translated through the TLB (accesses whose code lies [`ACCESS_SLOTS`] apart share one):
/// its page's TLB key, for the access's size, and the addend to the host address. The
/// access hits here when its key is the same, with a compare that lies off the path from the
/// address to the data. A slot is filled only from a TLB entry letting the access go to host
/// memory directly, and the key names the root's tag; so it stays right until the TLB's
/// invalidations count changes (a flush that hands tags out again, or a page's translation
/// dropped), when every slot is emptied ([`AccessSlots::forget`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AccessSlot {
    /// The key, as the TLB's (`umbra_mmu::tlb::entry_layout::KEY`); `u64::MAX` for none.
    pub key: u64,
    /// The TLB entry's addend.
    pub addend: u64,
}

impl Default for AccessSlot {
    fn default() -> Self {
        // The key of the last page under the tag no entry is filled under: never looked up.
        AccessSlot {
            key: u64::MAX,
            addend: 0,
        }
    }
}

/// The slots of every memory access in generated code.
#[repr(C)]
#[derive(Debug)]
pub struct AccessSlots(pub [AccessSlot; ACCESS_SLOTS]);

impl Default for AccessSlots {
    fn default() -> Self {
        AccessSlots([AccessSlot::default(); ACCESS_SLOTS])
    }
}

impl AccessSlots {
    /// Empties every slot.
    pub fn forget(&mut self) {
        self.0.fill(AccessSlot::default());
    }
}

impl BlockContext {
    /// Forgets the calls on the return stack: the blocks they lead to may not be those of
    /// their return addresses any more.
    pub fn forget_returns(&mut self) {
        for entry in &mut self.return_stack {
            entry.rip = NO_RETURN;
        }
    }

    /// Ends every jump-cache epoch, the current one and those saved for other contexts:
    /// translations or blocks the entries rest on may have gone.
    pub fn end_jump_epochs(&mut self) {
        self.jump_epoch = self.new_jump_epoch();
        self.first_live_epoch = self.jump_epoch;
        self.first_live_private_epoch = self.jump_epoch;
    }

    /// Ends the epochs of every jump context but the shared ones: a translation of code may
    /// have changed, though not one that shared contexts must let go of yet.
    pub fn end_private_jump_epochs(&mut self) {
        let epoch = self.new_jump_epoch();
        self.first_live_private_epoch = epoch;
        if !self.jump_shared {
            self.jump_epoch = epoch;
        }
    }

    /// Switches to the epoch `saved`, one a context (`shared` or not) left earlier, when it
    /// is still live, or else to a new one; returns the epoch left.
    pub fn switch_jump_epoch(&mut self, saved: Option<u64>, shared: bool) -> u64 {
        let left = self.jump_epoch;
        let first_live = if shared {
            self.first_live_epoch
        } else {
            self.first_live_private_epoch
        };
        self.jump_epoch = match saved {
            Some(epoch) if epoch >= first_live => epoch,
            _ => self.new_jump_epoch(),
        };
        self.jump_shared = shared;
        left
    }

    fn new_jump_epoch(&mut self) -> u64 {
        self.last_jump_epoch += 1;
        self.last_jump_epoch
    }
}

/// An entry of the jump cache, where blocks leaving for a RIP they cannot chain to (an
/// indirect jump or call, a return, a jump to another page) look its block up before going
/// back to the dispatcher: valid while its epoch is the context's, that is while the
/// translations and blocks it was filled under still stand (see `Jit::run_blocks`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct JumpEntry {
    /// The guest RIP.
    pub rip: u64,
    /// The epoch it was filled in.
    pub epoch: u64,
    /// The block's host code.
    pub entry: u64,
    /// The block's guest physical address and context ([`JumpEntry::block_tag`]), by which
    /// the dispatcher may take the entry up again in a later epoch.
    pub block: u64,
}

impl JumpEntry {
    /// The entry for `rip`'s block at `entry`, in `epoch`, tagged `block`.
    pub fn new(rip: u64, epoch: u64, entry: u64, block: u64) -> JumpEntry {
        JumpEntry {
            rip,
            epoch,
            entry,
            block,
        }
    }

    /// What names a block besides its RIP: the guest physical address of its first
    /// instruction, and the TLB read bit, SSE and floating-point settings of its context.
    pub fn block_tag(gpa: u64, read_bit: u16, sse: bool, float: bool) -> u64 {
        (gpa << 8)
            | u64::from(read_bit.trailing_zeros()) << 2
            | u64::from(sse) << 1
            | u64::from(float)
    }
}

/// log2 of the jump cache's entries.
pub const JUMP_CACHE_BITS: u32 = 16;

/// The jump cache's index for `rip` (what generated code computes too).
pub fn jump_index(rip: u64) -> usize {
    ((rip ^ (rip >> JUMP_CACHE_BITS)) & ((1 << JUMP_CACHE_BITS) - 1)) as usize
}

/// Where a jump-cache entry's fields lie.
pub mod jump_entry {
    use super::JumpEntry;
    use std::mem::offset_of;

    /// The size of an entry, a power of two.
    pub const SIZE: usize = size_of::<JumpEntry>();
    /// RIP.
    pub const RIP: i32 = offset_of!(JumpEntry, rip) as i32;
    /// The epoch.
    pub const EPOCH: i32 = offset_of!(JumpEntry, epoch) as i32;
    /// The host code.
    pub const ENTRY: i32 = offset_of!(JumpEntry, entry) as i32;
}

/// Offsets of [`BlockContext`]'s fields, for generated code.
pub mod offset {
    use super::*;

    /// The general register numbered `n` (0 = RAX).
    pub const fn gpr(n: u8) -> i32 {
        (offset_of!(BlockContext, gpr) + 8 * n as usize) as i32
    }
    /// RIP.
    pub const RIP: i32 = offset_of!(BlockContext, rip) as i32;
    /// RFLAGS.
    pub const RFLAGS: i32 = offset_of!(BlockContext, rflags) as i32;
    /// FS's base.
    pub const FS_BASE: i32 = offset_of!(BlockContext, fs_base) as i32;
    /// GS's base.
    pub const GS_BASE: i32 = offset_of!(BlockContext, gs_base) as i32;
    /// IA32_KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: i32 = offset_of!(BlockContext, kernel_gs_base) as i32;
    /// The budget and access count.
    pub const BUDGET: i32 = offset_of!(BlockContext, budget) as i32;
    /// The TLB's first entry.
    pub const TLB_ENTRIES: i32 = offset_of!(BlockContext, tlb_entries) as i32;
    /// The TLB tags, the lower half's first.
    pub const TLB_TAGS: i32 = offset_of!(BlockContext, tlb_tags) as i32;
    /// The jump to patch.
    pub const PATCH_SITE: i32 = offset_of!(BlockContext, patch_site) as i32;
    /// The XMM registers' address.
    pub const XMM: i32 = offset_of!(BlockContext, xmm) as i32;
    /// MXCSR's address.
    pub const MXCSR: i32 = offset_of!(BlockContext, mxcsr) as i32;
    /// The host's MXCSR.
    pub const HOST_MXCSR: i32 = offset_of!(BlockContext, host_mxcsr) as i32;
    /// Segment register `n`'s selector (u16; 0 = ES).
    pub const fn selector(n: u8) -> i32 {
        (offset_of!(BlockContext, selectors) + 2 * n as usize) as i32
    }
    /// Control register `n`, CR0 to CR4 (u64).
    pub const fn control_register(n: u8) -> i32 {
        (offset_of!(BlockContext, control_registers) + 8 * n as usize) as i32
    }
    /// The value kept across a call.
    pub const HELD: i32 = offset_of!(BlockContext, held) as i32;
    /// The guest's time-stamp counter's offset.
    pub const TSC_OFFSET: i32 = offset_of!(BlockContext, tsc_offset) as i32;
    /// The parked flags.
    pub const PARKED_FLAGS: i32 = offset_of!(BlockContext, parked_flags) as i32;
    /// The jump cache.
    pub const JUMP_CACHE: i32 = offset_of!(BlockContext, jump_cache) as i32;
    /// The jump cache's epoch.
    pub const JUMP_EPOCH: i32 = offset_of!(BlockContext, jump_epoch) as i32;
    /// The exit's mnemonic.
    pub const EXIT_MNEMONIC: i32 = offset_of!(BlockContext, exit_mnemonic) as i32;
    /// The return stack.
    pub const RETURN_STACK: i32 = offset_of!(BlockContext, return_stack) as i32;
    /// The return stack's most recent entry.
    pub const RETURN_TOP: i32 = offset_of!(BlockContext, return_top) as i32;
    /// Access slot `n`'s key; its addend follows.
    pub const fn access_slot(n: usize) -> i32 {
        (offset_of!(BlockContext, access_slots) + n * size_of::<AccessSlot>()) as i32
    }
}

/// The packing of [`BlockContext::budget`].
pub mod budget {
    /// Where the instruction count starts.
    pub const SHIFT: u32 = 24;
    /// The most instructions a budget may hold, so that the count stays far from overflowing.
    pub const MAX_INSTRUCTIONS: i64 = 1 << 32;

    /// A budget of `instructions` and no access.
    pub fn new(instructions: i64) -> i64 {
        debug_assert!((0..=MAX_INSTRUCTIONS).contains(&instructions));
        instructions << SHIFT
    }

    /// The instructions left in `budget`.
    pub fn instructions(budget: i64) -> i64 {
        budget >> SHIFT
    }

    /// The accesses counted in `budget` (fewer than 2^24: a budget is given for at most a few
    /// thousand instructions, each with at most two accesses).
    pub fn accesses(budget: i64) -> u64 {
        (budget & ((1 << SHIFT) - 1)) as u64
    }

    /// What a block charges for `instructions` run with `accesses` made, or gives back for
    /// as many not run.
    pub fn charge(instructions: u32, accesses: u32) -> i32 {
        let charge = (i64::from(instructions) << SHIFT) - i64::from(accesses);
        i32::try_from(charge).expect("a block is at most 64 instructions")
    }
}

/// RFLAGS' arithmetic flags: OF, SF, ZF, AF, PF, CF.
pub(crate) const ARITHMETIC_FLAGS: u64 = 0x8d5;

/// `rflags`' arithmetic flags in the parked form.
pub fn park_flags(rflags: u64) -> u64 {
    ((rflags & 0xd5) << 8) | ((rflags >> 11) & 1)
}

/// `rflags` with its arithmetic flags replaced by the `parked` ones.
pub fn unpark_flags(rflags: u64, parked: u64) -> u64 {
    (rflags & !ARITHMETIC_FLAGS) | ((parked >> 8) & 0xd5) | ((parked & 1) << 11)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_park_and_unpark_to_themselves() {
        for flags in 0..0x1000u64 {
            let rflags = 0x202 | flags;
            let parked = park_flags(rflags);
            assert_eq!(
                unpark_flags(0x202, parked),
                0x202 | (flags & ARITHMETIC_FLAGS)
            );
            assert_eq!(unpark_flags(rflags, parked), rflags);
        }
    }

    #[test]
    fn ending_the_private_jump_epochs_keeps_the_shared_ones() {
        let mut ctx = BlockContext {
            jump_epoch: 1,
            last_jump_epoch: 1,
            ..BlockContext::default()
        };
        let private = ctx.switch_jump_epoch(None, true);
        let shared = ctx.jump_epoch;
        ctx.end_private_jump_epochs();
        assert_eq!(
            ctx.jump_epoch, shared,
            "the shared context goes on in its epoch"
        );
        let left = ctx.switch_jump_epoch(Some(private), false);
        assert_eq!(left, shared);
        assert!(ctx.jump_epoch > shared, "the private context's epoch ended");
        let private = ctx.jump_epoch;
        ctx.end_private_jump_epochs();
        assert!(
            ctx.jump_epoch > private,
            "the current private epoch ends too"
        );
        ctx.switch_jump_epoch(Some(shared), true);
        assert_eq!(ctx.jump_epoch, shared);
        ctx.end_jump_epochs();
        ctx.switch_jump_epoch(Some(private), false);
        ctx.switch_jump_epoch(Some(shared), true);
        assert!(
            ctx.jump_epoch > shared,
            "ending every epoch ends the shared ones"
        );
    }
}

/// Why generated code returned to the dispatcher (in EAX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Exit {
    /// RIP is where to go on: an indirect jump, or a direct one that cannot be chained.
    Jump = 0,
    /// RIP is a direct jump's target on the same page; `patch_site` is the jump to patch
    /// to the target's block.
    Chain = 1,
    /// RIP is an instruction for the interpreter: one the block does not translate, or one
    /// whose memory access missed the fast path (a fault, device memory, a watched frame).
    Interpret = 2,
    /// The budget ran out before the block at RIP.
    Budget = 3,
    /// RIP is where to go on, but the dispatcher must look again first: the block changed
    /// the privilege context.
    Dispatch = 4,
    /// RIP is the target of a direct jump from kernel code to another page of the upper
    /// half; `patch_site` is the jump to patch to the target's block (or to the jump-cache
    /// lookup that follows the site, where the upper half's translations are not shared).
    FarChain = 5,
}

impl Exit {
    /// The exit generated code returned.
    pub fn from_code(code: u32) -> Exit {
        match code {
            0 => Exit::Jump,
            1 => Exit::Chain,
            2 => Exit::Interpret,
            3 => Exit::Budget,
            4 => Exit::Dispatch,
            5 => Exit::FarChain,
            _ => unreachable!("generated code returns only exit codes"),
        }
    }
}
