//! The pieces of host code every block is built from: guest registers and flags moved between
//! the block context and the host, the TLB lookup with its slow path, and exits; and the
//! routines every block shares, which keep the blocks small: the TLB lookup's fast path and
//! the jump-cache lookup, called rather than repeated, since kernel code runs through so many
//! blocks that the host's instruction caches hold only a part of them.
//!
//! Conventions inside generated code: R15 holds the [`BlockContext`](crate::context) address;
//! R14 holds an access's linear, then host, address; RSP is the host stack, 16-byte aligned
//! at every call to the slow path, which blocks never move but for the shared routines'
//! return addresses.
//! Every other guest register has a *home*, the host register of the same number, where it is
//! kept between instructions once loaded ([`RegisterCache`]), and stored back to the context
//! before control can leave the block, so that the context is exact at every exit. R12 and R13
//! are scratch for address computations and the inline TLB lookup; the slow-path helper may
//! clobber every caller-saved register, which its call saves and restores. Guest RSP and
//! R12-R15 have no home: an instruction using them gets them in a borrowed register for its
//! own duration.
//!
//! The guest's arithmetic flags are parked in the context between blocks, or live in the
//! host's RFLAGS inside one ([`FlagState`]); the state is tracked while translating, so that
//! flags are parked only before code that clobbers them or leaves.

// dynasm's `Rq(n)` calls `.into()` on a register number that is already a `u8`.
#![allow(clippy::useless_conversion)]

use dynasmrt::x64::X64Relocation;
use dynasmrt::{DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler, dynasm};
use iced_x86::Mnemonic;
use umbra_mmu::tlb::{ACCESS_BITS, TLB_ENTRIES, TLB_INDEX_BITS, entry_layout};

use crate::context::{
    ACCESS_SLOTS, ARITHMETIC_FLAGS, Exit, JUMP_CACHE_BITS, RETURN_STACK, ReturnEntry, budget,
    jump_entry, jump_index, offset,
};

/// Host register numbers.
pub(crate) mod reg {
    /// RAX.
    pub const RAX: u8 = 0;
    /// RDX.
    pub const RDX: u8 = 2;
    /// RSP: the host stack.
    pub const RSP: u8 = 4;
    /// RBP.
    pub const RBP: u8 = 5;
    /// R12: scratch for address computations and the TLB lookup.
    pub const SCRATCH: u8 = 12;
    /// R13: scratch for the TLB lookup.
    pub const SCRATCH2: u8 = 13;
    /// R14: the memory access's address.
    pub const ADDRESS: u8 = 14;
    /// R15: the block context.
    pub const CONTEXT: u8 = 15;
}

/// Which guest registers are in their homes, and which of those are newer than the context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RegisterCache {
    /// Guest registers (by bit) that their home holds.
    pub loaded: u16,
    /// Guest registers whose home holds a value the context does not have yet.
    pub dirty: u16,
}

/// Guest registers without a home: RSP, R12, R13, R14 and R15.
pub(crate) const HOMELESS: u16 =
    1 << reg::RSP | 1 << reg::SCRATCH | 1 << reg::SCRATCH2 | 1 << reg::ADDRESS | 1 << reg::CONTEXT;

/// The registers the slow-path helper may clobber (the System V caller-saved ones): RAX, RCX,
/// RDX, RSI, RDI and R8-R11.
const HELPER_CLOBBERS: u16 = 0b1111_1100_0111;

/// The registers whose bits are set in `mask`, lowest first.
pub(crate) fn registers_in(mask: u16) -> impl Iterator<Item = u8> {
    (0..16u8).filter(move |n| mask & (1 << n) != 0)
}

/// Where the guest's arithmetic flags are. Between blocks, and at every exit, they are in
/// the context's `parked_flags`, as LAHF and SETO leave them (AH: SF, ZF, AF, PF, CF; AL: OF);
/// inside a block they may be newer in the host's RFLAGS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlagState {
    /// The host's RFLAGS hold them.
    pub in_host: bool,
    /// The parked copy is older than the host's (only while `in_host`).
    pub stale: bool,
}

impl FlagState {
    /// The flags parked, and the host's holding nothing of them: as at a block's start, and
    /// at code reached from another block.
    pub(crate) const PARKED: FlagState = FlagState {
        in_host: false,
        stale: false,
    };
}

/// An inline TLB lookup's way out: the call to the slow path, and what to do when even that
/// cannot give a host address.
struct SlowPath {
    /// The call to the slow path, when the TLB misses.
    entry: DynamicLabel,
    resume: DynamicLabel,
    /// The access's slot, if it has one, and its TLB lookup, out of line, when it misses.
    slot: Option<(usize, DynamicLabel)>,
    /// The TLB's bit for the access.
    bit: u16,
    /// Whether the access is a string instruction's elements, RBP bytes of them.
    run: bool,
    /// Access size, and bit 8 set for a write.
    how: u32,
    /// Homes holding guest registers that the helper may clobber: saved around the call.
    saved: u16,
    /// Where the interpreter takes over.
    exit: ExitPoint,
}

/// The state a block leaves behind at some point: which guest instruction comes next, and how
/// much of the block has run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExitPoint {
    /// The guest RIP.
    pub rip: u64,
    /// Instructions of the block not run: given back to the budget.
    pub unrun: u32,
    /// Inline memory accesses made so far.
    pub accesses: u32,
    /// Guest registers whose homes must be stored to the context on the way out.
    pub dirty: u16,
}

/// Which way a budget update goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BudgetUpdate {
    /// A prologue's charge.
    Charge,
    /// An exit's refund.
    GiveBack,
}

/// A budget update whose immediate waits for the block's access count: the charge for the
/// block's `unrun` instructions from some point and its accesses after the first `made`.
#[derive(Clone, Copy, Debug)]
struct BudgetSite {
    /// Where the 32-bit immediate lies in the block's code.
    immediate_at: usize,
    unrun: u32,
    made: u32,
}

/// The host addresses generated code calls or jumps to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Runtime {
    /// Where blocks return to the dispatcher, with an [`Exit`] in EAX.
    pub exit: usize,
    /// The jump-cache lookup ([`jump_lookup_routine`]).
    pub jump_lookup: usize,
    /// The TLB lookup for each TLB bit ([`tlb_lookup_routine`]), by the bit's number.
    pub tlb_lookup: [usize; ACCESS_BITS],
    /// `extern "sysv64" fn(*mut BlockContext, linear: u64, how: u64) -> u64`: the host
    /// address for an access the inline lookup missed, or 0. `how`: the access's size in
    /// bits 7:0, bit 8 set for a write, and a string instruction's bytes in bits 31:16.
    pub slow_access: usize,
}

/// An assembler for one block, with the translation-time state its pieces share.
pub(crate) struct Emitter {
    pub ops: VecAssembler<X64Relocation>,
    /// The host address the code is assembled for.
    base: usize,
    runtime: Runtime,
    pub flags: FlagState,
    /// Guest registers in their homes.
    pub cache: RegisterCache,
    slow_paths: Vec<SlowPath>,
    budget_sites: Vec<BudgetSite>,
    /// Whether memory accesses look in their slot before the TLB ([`Emitter::new`]).
    slots: bool,
}

impl Emitter {
    /// An emitter of code for address `base`. With `slots`, each memory access keeps the
    /// translation it last used in a slot of its own, looked at before the TLB: for user
    /// code, whose accesses mostly come back to the same page. Kernel code goes straight to
    /// the TLB: its accesses move from page to page (objects, each process's structures) and
    /// its page-table stores empty the slots often, so that in a Linux guest a slot misses a
    /// third of the time at CPL 0, each miss a mispredicted branch.
    pub(crate) fn new(base: usize, runtime: Runtime, slots: bool) -> Emitter {
        Emitter {
            ops: VecAssembler::new(base),
            base,
            runtime,
            flags: FlagState::PARKED,
            cache: RegisterCache::default(),
            slow_paths: Vec::new(),
            budget_sites: Vec::new(),
            slots,
        }
    }

    /// Stores the homes of the registers in `mask` to the context, the cache's state
    /// unchanged (for a way out, which leaves the cache behind).
    fn store_homes(&mut self, mask: u16) {
        for n in registers_in(mask) {
            self.store_gpr(n, n);
        }
    }

    /// Stores the dirty registers in `mask`: the context is up to date with them.
    pub(crate) fn write_back(&mut self, mask: u16) {
        self.store_homes(self.cache.dirty & mask);
        self.cache.dirty &= !mask;
    }

    /// Stores the dirty registers in `mask` and gives their homes up.
    pub(crate) fn flush(&mut self, mask: u16) {
        self.write_back(mask);
        self.cache.loaded &= !mask;
    }

    /// Makes guest register `n` present in its home.
    pub(crate) fn use_home(&mut self, n: u8) {
        debug_assert_eq!(HOMELESS & (1 << n), 0);
        if self.cache.loaded & (1 << n) == 0 {
            self.load_gpr(n, n);
            self.cache.loaded |= 1 << n;
        }
    }

    /// Guest register `n`'s home was written.
    pub(crate) fn home_written(&mut self, n: u8) {
        self.cache.loaded |= 1 << n;
        self.cache.dirty |= 1 << n;
    }

    /// MOV host register `host` <- guest register `guest`.
    pub(crate) fn load_gpr(&mut self, host: u8, guest: u8) {
        dynasm!(self.ops ; .arch x64 ; mov Rq(host), QWORD [r15 + offset::gpr(guest)]);
    }

    /// MOV guest register `guest` <- host register `host`.
    pub(crate) fn store_gpr(&mut self, guest: u8, host: u8) {
        dynasm!(self.ops ; .arch x64 ; mov QWORD [r15 + offset::gpr(guest)], Rq(host));
    }

    /// MOV host register `host` <- `value`.
    pub(crate) fn load_imm(&mut self, host: u8, value: u64) {
        if let Ok(small) = i32::try_from(value as i64) {
            dynasm!(self.ops ; .arch x64 ; mov Rq(host), DWORD small);
        } else {
            dynasm!(self.ops ; .arch x64 ; mov Rq(host), QWORD value as i64);
        }
    }

    /// Makes the host's flags the guest's, if they are not already: SAHF loads SF, ZF, AF, PF
    /// and CF from AH, and adding 0x7f to AL = OF (0 or 1) overflows exactly when OF is set.
    /// RAX is kept (in R12).
    pub(crate) fn load_flags(&mut self) {
        if self.flags.in_host {
            return;
        }
        dynasm!(self.ops
            ; .arch x64
            ; mov r12, rax
            ; mov ax, WORD [r15 + offset::PARKED_FLAGS]
            ; add al, 0x7f
            ; sahf
            ; mov rax, r12
        );
        self.flags.in_host = true;
    }

    /// Makes the host's CF the guest's with one BT: for an instruction that reads no other
    /// flag and leaves no other unwritten (INC, DEC, ADC, SBB...). The host's other flags
    /// are not the guest's afterwards.
    pub(crate) fn load_carry(&mut self) {
        if !self.flags.in_host {
            dynasm!(self.ops ; .arch x64 ; bt QWORD [r15 + offset::PARKED_FLAGS], 8);
        }
    }

    /// Parks the host's flags when they are newer than the parked copy: five simple
    /// instructions that change no flag (PUSHFQ is microcoded and slow). RAX is kept.
    pub(crate) fn park_flags(&mut self) {
        if !self.flags.stale {
            return;
        }
        dynasm!(self.ops
            ; .arch x64
            ; mov r12, rax
            ; lahf
            ; seto al
            ; mov WORD [r15 + offset::PARKED_FLAGS], ax
            ; mov rax, r12
        );
        self.flags.stale = false;
    }

    /// RAX <- the guest's RFLAGS as PUSHF stores it: the context's, with the parked arithmetic
    /// flags in their places (RF and VM, which PUSHF stores clear, are clear whenever blocks
    /// run). The flags must be parked; clobbers R12.
    pub(crate) fn flags_image_into_rax(&mut self) {
        debug_assert!(!self.flags.stale);
        dynasm!(self.ops
            ; .arch x64
            ; mov rax, QWORD [r15 + offset::RFLAGS]
            ; and rax, !(ARITHMETIC_FLAGS as i32)
            ; movzx r12d, BYTE [r15 + offset::PARKED_FLAGS + 1]
            ; and r12d, (ARITHMETIC_FLAGS & 0xff) as i32
            ; or rax, r12
            ; movzx r12d, BYTE [r15 + offset::PARKED_FLAGS]
            ; and r12d, 1
            ; shl r12d, 11
            ; or rax, r12
        );
    }

    /// Code that clobbers the host's flags, or leaves the block, follows: they are parked.
    pub(crate) fn spill_flags(&mut self) {
        self.park_flags();
        self.flags.in_host = false;
    }

    /// The guest's flags are in the host's now (an instruction just set them).
    pub(crate) fn flags_written(&mut self) {
        self.flags = FlagState {
            in_host: true,
            stale: true,
        };
    }

    /// A conditional branch on the guest's flags to `taken` when condition `cc` holds
    /// (numbered as in Jcc's opcode, 0 = O .. 15 = G); both ways leave with the flags
    /// parked.
    pub(crate) fn branch_on_flags(&mut self, cc: u8, taken: DynamicLabel) {
        self.park_flags();
        self.jump_on_flags(cc, taken);
        self.flags.in_host = false;
    }

    /// A conditional branch on the guest's flags, which stay in the host's RFLAGS on both
    /// ways (a Jcc changes none), and as stale as they were: the taken way must park them
    /// before it leaves.
    pub(crate) fn jump_on_flags(&mut self, cc: u8, taken: DynamicLabel) {
        self.load_flags();
        match cc {
            0x0 => dynasm!(self.ops ; .arch x64 ; jo =>taken),
            0x1 => dynasm!(self.ops ; .arch x64 ; jno =>taken),
            0x2 => dynasm!(self.ops ; .arch x64 ; jb =>taken),
            0x3 => dynasm!(self.ops ; .arch x64 ; jae =>taken),
            0x4 => dynasm!(self.ops ; .arch x64 ; je =>taken),
            0x5 => dynasm!(self.ops ; .arch x64 ; jne =>taken),
            0x6 => dynasm!(self.ops ; .arch x64 ; jbe =>taken),
            0x7 => dynasm!(self.ops ; .arch x64 ; ja =>taken),
            0x8 => dynasm!(self.ops ; .arch x64 ; js =>taken),
            0x9 => dynasm!(self.ops ; .arch x64 ; jns =>taken),
            0xa => dynasm!(self.ops ; .arch x64 ; jp =>taken),
            0xb => dynasm!(self.ops ; .arch x64 ; jnp =>taken),
            0xc => dynasm!(self.ops ; .arch x64 ; jl =>taken),
            0xd => dynasm!(self.ops ; .arch x64 ; jge =>taken),
            0xe => dynasm!(self.ops ; .arch x64 ; jle =>taken),
            _ => dynasm!(self.ops ; .arch x64 ; jg =>taken),
        }
    }

    /// Leaves the block at `at` with `exit`, RIP set to `at.rip`. The flags must be spilled.
    pub(crate) fn exit(&mut self, exit: Exit, at: ExitPoint) {
        debug_assert!(!self.flags.stale);
        self.store_homes(at.dirty);
        self.account(at);
        self.load_imm(reg::RAX, at.rip);
        dynasm!(self.ops ; .arch x64 ; mov QWORD [r15 + offset::RIP], rax);
        self.leave(exit);
    }

    /// Leaves the block at `at` for the interpreter, which runs `instruction` there because
    /// the block does not translate it, or (`None`) because a check or an access failed. The
    /// flags must be spilled.
    pub(crate) fn exit_to_interpreter(&mut self, at: ExitPoint, instruction: Option<Mnemonic>) {
        let tag = instruction.map_or(0, |m| m as i32 + 1);
        dynasm!(self.ops ; .arch x64 ; mov QWORD [r15 + offset::EXIT_MNEMONIC], tag);
        self.exit(Exit::Interpret, at);
    }

    /// Returns to the dispatcher with `exit`; a [`Exit::Jump`] goes to the block at RIP
    /// instead when the jump cache has it ([`jump_lookup_routine`]).
    fn leave(&mut self, exit: Exit) {
        if exit == Exit::Jump {
            dynasm!(self.ops
                ; .arch x64
                ; call extern self.runtime.jump_lookup
                ; jmp rax
            );
        } else {
            dynasm!(self.ops
                ; .arch x64
                ; mov eax, exit as i32
                ; jmp extern self.runtime.exit
            );
        }
    }

    /// Pushes a call on the return stack: its return address `rip`, and `code`, where the
    /// block goes on to the block there. The flags must be spilled. Clobbers RAX and R12.
    pub(crate) fn push_return(&mut self, rip: u64, code: DynamicLabel) {
        let mask = (RETURN_STACK - 1) as i32;
        let shift = size_of::<ReturnEntry>().trailing_zeros() as i8;
        debug_assert!(!self.flags.in_host);
        dynasm!(self.ops
            ; .arch x64
            ; mov rax, QWORD [r15 + offset::RETURN_TOP]
            ; add eax, 1
            ; and eax, mask
            ; mov QWORD [r15 + offset::RETURN_TOP], rax
            ; shl eax, shift
        );
        self.load_imm(reg::SCRATCH, rip);
        dynasm!(self.ops
            ; .arch x64
            ; mov QWORD [r15 + rax + offset::RETURN_STACK], r12
            ; lea r12, [=>code]
            ; mov QWORD [r15 + rax + offset::RETURN_STACK + 8], r12
        );
    }

    /// Leaves the block for the return address in RAX, with RIP already stored: the way
    /// the call there went on, if it is the return stack's most recent ([`ReturnEntry`]),
    /// which it then pops, else [`Exit::Jump`]. The flags must be spilled.
    pub(crate) fn exit_return(&mut self, at: ExitPoint) {
        debug_assert!(!self.flags.stale);
        self.store_homes(at.dirty);
        self.account(at);
        let mask = (RETURN_STACK - 1) as i32;
        let shift = size_of::<ReturnEntry>().trailing_zeros() as i8;
        let other = self.ops.new_dynamic_label();
        dynasm!(self.ops
            ; .arch x64
            ; mov r12, QWORD [r15 + offset::RETURN_TOP]
            ; mov r13d, r12d
            ; shl r13d, shift
            ; cmp rax, QWORD [r15 + r13 + offset::RETURN_STACK]
            ; jne =>other
            ; sub r12d, 1
            ; and r12d, mask
            ; mov QWORD [r15 + offset::RETURN_TOP], r12
            ; jmp QWORD [r15 + r13 + offset::RETURN_STACK + 8]
            ; =>other
        );
        self.leave(Exit::Jump);
    }

    /// Starts bringing the jump-cache entry for `rip` into the host's caches: a call's, for
    /// the return there, which finds it in the jump cache, a table too large to stay cached.
    /// Clobbers R12.
    pub(crate) fn prefetch_jump_entry(&mut self, rip: u64) {
        let at = (jump_index(rip) * jump_entry::SIZE) as i32;
        dynasm!(self.ops
            ; .arch x64
            ; mov r12, QWORD [r15 + offset::JUMP_CACHE]
            ; prefetcht0 [r12 + at]
        );
    }

    /// Gives back, for an exit at `at`, what the prologue charged for the instructions not
    /// run and their accesses not made. An exit after the block's last instruction has nothing
    /// to give back.
    fn account(&mut self, at: ExitPoint) {
        if at.unrun > 0 {
            self.budget_update(BudgetUpdate::GiveBack, at.unrun, at.accesses);
        }
    }

    /// Updates the budget by the charge for `unrun` instructions and the accesses after the
    /// first `made`, an amount known once the block's accesses are all counted: the
    /// immediate is patched then ([`BudgetSite`]).
    pub(crate) fn budget_update(&mut self, update: BudgetUpdate, unrun: u32, made: u32) {
        let placeholder = i32::MAX;
        match update {
            BudgetUpdate::Charge => {
                dynasm!(self.ops ; .arch x64 ; sub QWORD [r15 + offset::BUDGET], placeholder);
            }
            BudgetUpdate::GiveBack => {
                dynasm!(self.ops ; .arch x64 ; add QWORD [r15 + offset::BUDGET], placeholder);
            }
        }
        self.budget_sites.push(BudgetSite {
            immediate_at: self.ops.offset().0 - 4,
            unrun,
            made,
        });
    }

    /// The block's code, with the budget updates' immediates written in now that it is known
    /// to make `accesses` inline accesses in all; `None` if it does not assemble.
    pub(crate) fn assemble(self, accesses: u32) -> Option<Vec<u8>> {
        let mut code = self.ops.finalize().ok()?;
        for site in &self.budget_sites {
            debug_assert!(site.made <= accesses);
            let charge = budget::charge(site.unrun, accesses - site.made);
            code[site.immediate_at..site.immediate_at + 4].copy_from_slice(&charge.to_le_bytes());
        }
        Some(code)
    }

    /// Leaves the block at `at` with RIP already stored in the context.
    pub(crate) fn exit_stored_rip(&mut self, exit: Exit, at: ExitPoint) {
        debug_assert!(!self.flags.stale);
        self.store_homes(at.dirty);
        self.account(at);
        self.leave(exit);
    }

    /// Leaves the block for a direct jump to `at.rip` on the block's own page: through a
    /// `jmp rel32` that the dispatcher patches to the target's block once it has one.
    pub(crate) fn exit_chained(&mut self, at: ExitPoint) {
        debug_assert!(!self.flags.stale);
        self.store_homes(at.dirty);
        self.account(at);
        let site = self.ops.new_dynamic_label();
        dynasm!(self.ops
            ; .arch x64
            ; =>site
            ; .u8 0xe9
            ; .u32 0
        );
        self.ask_for_chain(site, at.rip, Exit::Chain);
    }

    /// Leaves the block for a direct jump to `at.rip` on another page: through a `jmp rel32`
    /// to the dispatcher ([`Exit::FarChain`]), which points it at the target's block while
    /// the target's translation stands, or at the jump-cache lookup that follows it.
    pub(crate) fn exit_far_chained(&mut self, at: ExitPoint) {
        debug_assert!(!self.flags.stale);
        self.store_homes(at.dirty);
        self.account(at);
        let site = self.ops.new_dynamic_label();
        let ask = self.ops.new_dynamic_label();
        dynasm!(self.ops
            ; .arch x64
            ; =>site
            ; jmp =>ask
        );
        self.load_imm(reg::RAX, at.rip);
        dynasm!(self.ops ; .arch x64 ; mov QWORD [r15 + offset::RIP], rax);
        self.leave(Exit::Jump);
        dynasm!(self.ops ; .arch x64 ; =>ask);
        self.ask_for_chain(site, at.rip, Exit::FarChain);
    }

    /// Leaves for the dispatcher with `exit`, RIP `rip` and the jump to patch at `site`.
    fn ask_for_chain(&mut self, site: DynamicLabel, rip: u64, exit: Exit) {
        self.load_imm(reg::RAX, rip);
        dynasm!(self.ops
            ; .arch x64
            ; mov QWORD [r15 + offset::RIP], rax
            ; lea rax, [=>site]
            ; mov QWORD [r15 + offset::PATCH_SITE], rax
        );
        self.leave(exit);
    }

    /// Turns the linear address in R14 into the host address of `size` bytes there for a
    /// read or a `write`, through the access's slot (with slots), the TLB, or the slow path; where
    /// none gives one, the block leaves at `exit` for the interpreter. With `run`, the
    /// access is a string instruction's elements, RBP bytes of them, all in the page
    /// (checked before): the slow path is told the whole run's length, since a store there
    /// may need the shadow entries it overwrites zapped first. The flags must be parked.
    /// Clobbers R12 and R13.
    pub(crate) fn translate_address(
        &mut self,
        size: u32,
        write: bool,
        bit: u16,
        run: bool,
        mut exit: ExitPoint,
    ) {
        debug_assert!(!self.flags.stale && size.is_power_of_two() && size <= 16);
        exit.dirty = self.cache.dirty;
        let slow = self.ops.new_dynamic_label();
        let resume = self.ops.new_dynamic_label();
        // The slot: by where the access's code lies.
        let slot = self.slots.then(|| {
            let n = ((self.base + self.ops.offset().0) >> 4) % ACCESS_SLOTS;
            (n, self.ops.new_dynamic_label())
        });
        // R12: the access's last byte, so that an access running into the next page misses.
        if size == 1 {
            dynasm!(self.ops ; .arch x64 ; mov r12, r14);
        } else {
            dynasm!(self.ops ; .arch x64 ; lea r12, [r14 + (size - 1) as i32]);
        }
        match slot {
            Some((n, lookup)) => {
                tlb_key_into_r12(&mut self.ops);
                dynasm!(self.ops
                    ; .arch x64
                    ; cmp r12, QWORD [r15 + offset::access_slot(n)]
                    ; jne =>lookup
                    ; add r14, QWORD [r15 + offset::access_slot(n) + 8]
                );
            }
            None => {
                let lookup = self.runtime.tlb_lookup[bit.trailing_zeros() as usize];
                dynasm!(self.ops
                    ; .arch x64
                    ; call extern lookup
                    ; jne =>slow
                );
            }
        }
        dynasm!(self.ops ; .arch x64 ; =>resume);
        self.slow_paths.push(SlowPath {
            entry: slow,
            resume,
            slot,
            bit,
            run,
            how: size | u32::from(write) << 8,
            saved: self.cache.loaded & HELPER_CLOBBERS,
            exit,
        });
    }

    /// An access's TLB lookup after its slot `n` missed, out of line at `lookup`: the entry
    /// for the linear address in R14 and the key in R12; on a hit, the slot takes its addend
    /// and the access goes on at `resume` with its host address, else on to `slow`.
    /// Clobbers R13.
    fn tlb_lookup(&mut self, path: &SlowPath, n: usize, lookup: DynamicLabel) {
        let slot = offset::access_slot(n);
        dynasm!(self.ops ; .arch x64 ; =>lookup);
        tlb_entry_into_r13(&mut self.ops, path.bit, path.entry);
        dynasm!(self.ops
            ; .arch x64
            ; mov r13, QWORD [r13 + entry_layout::ADDEND as i32]
            ; mov QWORD [r15 + slot], r12
            ; mov QWORD [r15 + slot + 8], r13
            ; add r14, r13
            ; jmp =>path.resume
        );
    }

    /// Emits the slow paths of every inline lookup, after the block's last exit.
    pub(crate) fn finish_slow_paths(&mut self) {
        for path in std::mem::take(&mut self.slow_paths) {
            if let Some((n, lookup)) = path.slot {
                self.tlb_lookup(&path, n, lookup);
            }
            let failed = self.ops.new_dynamic_label();
            dynasm!(self.ops ; .arch x64 ; =>path.entry);
            // The stack stays 16-byte aligned at the call: an odd count pushes one twice.
            let saved: Vec<u8> = registers_in(path.saved).collect();
            let pad = saved.len() % 2 == 1;
            for &n in saved.iter().chain(saved.first().filter(|_| pad)) {
                dynasm!(self.ops ; .arch x64 ; push Rq(n));
            }
            // EDX: how, with a string instruction's bytes in bits 31:16 (at most a page).
            if path.run {
                dynasm!(self.ops
                    ; .arch x64
                    ; mov rdx, rbp
                    ; shl rdx, 16
                    ; or edx, path.how as i32
                );
            } else {
                dynasm!(self.ops ; .arch x64 ; mov edx, path.how as i32);
            }
            dynasm!(self.ops
                ; .arch x64
                ; mov rdi, r15
                ; mov rsi, r14
                ; mov rax, QWORD self.runtime.slow_access as i64
                ; call rax
                ; mov r14, rax
            );
            for &n in saved.iter().chain(saved.first().filter(|_| pad)).rev() {
                dynasm!(self.ops ; .arch x64 ; pop Rq(n));
            }
            dynasm!(self.ops
                ; .arch x64
                ; test r14, r14
                ; jz =>failed
                ; jmp =>path.resume
                ; =>failed
            );
            self.flags = FlagState::PARKED;
            self.exit_to_interpreter(path.exit, None);
        }
    }

    /// Leaves for the interpreter at `exit` unless the linear address in R14 is a multiple
    /// of `alignment` (the interpreter raises the #GP). The flags must be parked.
    pub(crate) fn require_aligned_r14(&mut self, alignment: u32, exit: ExitPoint) {
        let ok = self.ops.new_dynamic_label();
        dynasm!(self.ops
            ; .arch x64
            ; test r14d, (alignment - 1) as i32
            ; jz =>ok
        );
        self.exit_to_interpreter(exit, None);
        dynasm!(self.ops ; .arch x64 ; =>ok);
    }

    /// Leaves for the interpreter at `exit` unless RAX holds an address canonical in every
    /// paging mode (a jump elsewhere raises #GP at the jump itself). The flags must be
    /// spilled, and no register cached. Clobbers RCX.
    pub(crate) fn require_canonical_rax(&mut self, exit: ExitPoint) {
        let ok = self.ops.new_dynamic_label();
        dynasm!(self.ops
            ; .arch x64
            ; mov rcx, rax
            ; shl rcx, 16
            ; sar rcx, 16
            ; cmp rcx, rax
            ; je =>ok
        );
        self.exit_to_interpreter(exit, None);
        dynasm!(self.ops ; .arch x64 ; =>ok);
    }
}

/// R12: the TLB key of the page holding the linear address in R12, under its half's tag.
/// Clobbers R13.
fn tlb_key_into_r12(ops: &mut VecAssembler<X64Relocation>) {
    dynasm!(ops
        ; .arch x64
        ; mov r13, r12
        ; shr r13, 63
        ; and r12, !0xfff
        ; or r12, QWORD [r15 + r13 * 8 + offset::TLB_TAGS]
    );
}

/// R13: the address of the TLB entry for the linear address in R14, whose key is in R12;
/// on to `miss` unless the entry has that key and lets the access (`bit`) go to host memory
/// directly.
fn tlb_entry_into_r13(ops: &mut VecAssembler<X64Relocation>, bit: u16, miss: DynamicLabel) {
    let index_mask = (TLB_ENTRIES - 1) as i32;
    let index_bits = TLB_INDEX_BITS as i8;
    let entry_shift = entry_layout::SIZE.trailing_zeros() as i8;
    debug_assert_eq!(1 << entry_shift, entry_layout::SIZE);
    debug_assert_eq!(
        entry_layout::SIZE,
        32,
        "the key times 8 is its spread, key / 4 entries"
    );
    // R13: the entry. The page number and its folded high bits, XORed together while
    // the address still has them ((la ^ la >> INDEX_BITS) >> shift), already shifted to
    // entry-size units; the key's spread, key / 4 entries, which the key times 8 adds; the
    // mask. The low bits of the shifted page number hold offset bits, which the mask clears
    // and the spread's zero low bits (tags are multiples of 4) never carry from.
    let page_shift = 12 - entry_shift;
    dynasm!(ops
        ; .arch x64
        ; mov r13, r14
        ; shr r13, index_bits
        ; xor r13, r14
        ; shr r13, page_shift
        ; lea r13, [r13 + r12 * 8]
        ; and r13d, index_mask << entry_shift
        ; add r13, QWORD [r15 + offset::TLB_ENTRIES]
        ; cmp r12, QWORD [r13 + entry_layout::KEY as i32]
        ; jne =>miss
        ; test WORD [r13 + entry_layout::DIRECT as i32], bit as i16
        ; jz =>miss
    );
}

/// Assembles the shared TLB lookup for accesses with TLB bit `bit`, which every access of code
/// without access slots calls: in, R14 the linear address and R12 that of the access's last
/// byte; out, ZF set and R14 the host address on a hit, ZF clear and R14 as it was on a miss.
/// Clobbers R12 and R13. Each access costs its block a call and a branch rather than the
/// lookup itself.
pub(crate) fn tlb_lookup_routine(ops: &mut VecAssembler<X64Relocation>, bit: u16) {
    let miss = ops.new_dynamic_label();
    tlb_key_into_r12(ops);
    tlb_entry_into_r13(ops, bit, miss);
    dynasm!(ops
        ; .arch x64
        ; add r14, QWORD [r13 + entry_layout::ADDEND as i32]
        ; cmp r12, r12
        ; ret
        ; =>miss
        // The context's address is never 0.
        ; test r15, r15
        ; ret
    );
}

/// Assembles the jump-cache lookup that every exit with [`Exit::Jump`] calls: out, RAX the
/// block for the RIP in the context if the jump cache has it for this epoch, else the way to
/// `exit` with [`Exit::Jump`]. The exit jumps to RAX itself, so that the host predicts each
/// exit's targets apart. Clobbers R12 and R13.
pub(crate) fn jump_lookup_routine(ops: &mut VecAssembler<X64Relocation>, exit: DynamicLabel) {
    let miss = ops.new_dynamic_label();
    let leave = ops.new_dynamic_label();
    let mask = (1i32 << JUMP_CACHE_BITS) - 1;
    let shift = jump_entry::SIZE.trailing_zeros() as i8;
    debug_assert_eq!(1 << shift, jump_entry::SIZE);
    dynasm!(ops
        ; .arch x64
        ; mov rax, QWORD [r15 + offset::RIP]
        ; mov r12, rax
        ; shr r12, JUMP_CACHE_BITS as i8
        ; xor r12, rax
        ; and r12d, mask
        ; shl r12d, shift
        ; add r12, QWORD [r15 + offset::JUMP_CACHE]
        ; cmp rax, QWORD [r12 + jump_entry::RIP]
        ; jne =>miss
        ; mov r13, QWORD [r12 + jump_entry::EPOCH]
        ; cmp r13, QWORD [r15 + offset::JUMP_EPOCH]
        ; jne =>miss
        ; mov rax, QWORD [r12 + jump_entry::ENTRY]
        ; ret
        ; =>miss
        ; lea rax, [=>leave]
        ; ret
        ; =>leave
        ; mov eax, Exit::Jump as i32
        ; jmp =>exit
    );
}
