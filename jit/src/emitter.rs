//! The pieces of host code every block is built from: guest registers and flags moved between
//! the block context and the host, the inline TLB lookup with its slow path, and exits.
//!
//! Conventions inside generated code: RBX holds the [`BlockContext`](crate::context) address;
//! RSI holds an access's linear, then host, address; RAX, RCX, RDX, RDI and R8-R11 are scratch
//! (the slow-path helper may clobber them); R12 keeps a value across a helper call; RSP is the
//! host stack, 16-byte aligned, which blocks never move. Guest registers are loaded from the
//! context and stored back around each instruction, so that the context is exact whenever
//! control can leave the block.
//!
//! The guest's arithmetic flags are either in the context or live in the host's RFLAGS
//! ([`FlagState`]); the state is tracked while translating, so that flags are saved only
//! before code that clobbers them or leaves.

// dynasm's `Rq(n)` calls `.into()` on a register number that is already a `u8`.
#![allow(clippy::useless_conversion)]

use dynasmrt::x64::X64Relocation;
use dynasmrt::{DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler, dynasm};
use umbra_mmu::tlb::{TLB_ENTRIES, TLB_INDEX_BITS, entry_layout};

use crate::context::{Exit, offset};

/// RFLAGS' arithmetic flags: OF, SF, ZF, AF, PF, CF.
pub(crate) const ARITHMETIC_FLAGS: u32 = 0x8d5;

/// Host register numbers.
pub(crate) mod reg {
    /// RAX.
    pub const RAX: u8 = 0;
    /// RBX: the block context.
    pub const RBX: u8 = 3;
    /// RSP: the host stack.
    pub const RSP: u8 = 4;
    /// RSI: the memory access's address.
    pub const RSI: u8 = 6;
}

/// Where the guest's arithmetic flags are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlagState {
    /// The host's RFLAGS hold them.
    pub in_host: bool,
    /// The context's copy is older than the host's.
    pub stale: bool,
}

/// An inline TLB lookup's way out: the call to the slow path, and what to do when even that
/// cannot give a host address.
struct SlowPath {
    entry: DynamicLabel,
    resume: DynamicLabel,
    /// Access size, and bit 8 set for a write.
    how: u32,
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
}

/// The host addresses generated code calls or jumps to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Runtime {
    /// Where blocks return to the dispatcher, with an [`Exit`] in EAX.
    pub exit: usize,
    /// `extern "sysv64" fn(*mut BlockContext, linear: u64, how: u64) -> u64`: the host
    /// address for an access the inline lookup missed, or 0.
    pub slow_access: usize,
}

/// An assembler for one block, with the translation-time state its pieces share.
pub(crate) struct Emitter {
    pub ops: VecAssembler<X64Relocation>,
    runtime: Runtime,
    pub flags: FlagState,
    slow_paths: Vec<SlowPath>,
}

impl Emitter {
    /// An emitter for code that will live at `base`.
    pub(crate) fn new(base: usize, runtime: Runtime) -> Emitter {
        Emitter {
            ops: VecAssembler::new(base),
            runtime,
            flags: FlagState {
                in_host: false,
                stale: false,
            },
            slow_paths: Vec::new(),
        }
    }

    /// MOV host register `host` <- guest register `guest`.
    pub(crate) fn load_gpr(&mut self, host: u8, guest: u8) {
        dynasm!(self.ops ; .arch x64 ; mov Rq(host), QWORD [rbx + offset::gpr(guest)]);
    }

    /// MOV guest register `guest` <- host register `host`.
    pub(crate) fn store_gpr(&mut self, guest: u8, host: u8) {
        dynasm!(self.ops ; .arch x64 ; mov QWORD [rbx + offset::gpr(guest)], Rq(host));
    }

    /// MOV host register `host` <- `value`.
    pub(crate) fn load_imm(&mut self, host: u8, value: u64) {
        if let Ok(small) = i32::try_from(value as i64) {
            dynasm!(self.ops ; .arch x64 ; mov Rq(host), DWORD small);
        } else {
            dynasm!(self.ops ; .arch x64 ; mov Rq(host), QWORD value as i64);
        }
    }

    /// Makes the host's flags the guest's, if they are not already.
    pub(crate) fn load_flags(&mut self) {
        if self.flags.in_host {
            return;
        }
        // SAHF takes SF, ZF, AF, PF and CF from AH; OF comes from adding 0x40 to itself,
        // which overflows exactly when the byte is 0x40 (RFLAGS.OF, bit 11, shifted down 5).
        dynasm!(self.ops
            ; .arch x64
            ; mov eax, DWORD [rbx + offset::RFLAGS]
            ; mov ecx, eax
            ; and ecx, 0x800
            ; shr ecx, 5
            ; shl eax, 8
            ; add cl, cl
            ; sahf
        );
        self.flags = FlagState {
            in_host: true,
            stale: false,
        };
    }

    /// PUSHFQ; POP RAX: the host's flags into RAX, the flags themselves untouched.
    fn capture_flags(&mut self) {
        dynasm!(self.ops ; .arch x64 ; pushfq ; pop rax);
    }

    /// Merges the arithmetic flags in RAX (from [`Emitter::capture_flags`]) into the
    /// context's RFLAGS. Clobbers the host's flags and RCX.
    fn merge_flags(&mut self) {
        dynasm!(self.ops
            ; .arch x64
            ; and eax, ARITHMETIC_FLAGS as i32
            ; mov rcx, QWORD [rbx + offset::RFLAGS]
            ; and rcx, !(ARITHMETIC_FLAGS as i32)
            ; or rcx, rax
            ; mov QWORD [rbx + offset::RFLAGS], rcx
        );
    }

    /// Makes the context's flags current, before code that clobbers the host's flags or
    /// leaves the block. The host's flags are lost.
    pub(crate) fn spill_flags(&mut self) {
        if self.flags.stale {
            self.capture_flags();
            self.merge_flags();
        }
        self.flags = FlagState {
            in_host: false,
            stale: false,
        };
    }

    /// The guest's flags are in the host's now (an instruction just set them).
    pub(crate) fn flags_written(&mut self) {
        self.flags = FlagState {
            in_host: true,
            stale: true,
        };
    }

    /// A conditional branch on the guest's flags to `taken` when condition `cc` holds
    /// (numbered as in Jcc's opcode, 0 = O .. 15 = G). Whichever way it goes, the block
    /// leaves with the flags saved: the fall-through merges them here, and the caller places
    /// `taken` with [`Emitter::take_branch`], passing on what this returns.
    pub(crate) fn branch_on_flags(&mut self, cc: u8, taken: DynamicLabel) -> bool {
        self.load_flags();
        let stale = self.flags.stale;
        if stale {
            self.capture_flags();
        }
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
        if stale {
            self.merge_flags();
        }
        self.flags = FlagState {
            in_host: false,
            stale: false,
        };
        stale
    }

    /// Places the target of a conditional branch from [`Emitter::branch_on_flags`]: the
    /// flags captured then are merged here too.
    pub(crate) fn take_branch(&mut self, taken: DynamicLabel, stale: bool) {
        dynasm!(self.ops ; .arch x64 ; =>taken);
        if stale {
            self.merge_flags();
        }
        self.flags = FlagState {
            in_host: false,
            stale: false,
        };
    }

    /// Leaves the block at `at` with `exit`, RIP set to `at.rip`. The flags must be spilled.
    pub(crate) fn exit(&mut self, exit: Exit, at: ExitPoint) {
        debug_assert!(!self.flags.stale);
        self.account(at);
        self.load_imm(reg::RAX, at.rip);
        dynasm!(self.ops
            ; .arch x64
            ; mov QWORD [rbx + offset::RIP], rax
            ; mov eax, exit as i32
            ; jmp extern self.runtime.exit
        );
    }

    /// Gives back the unrun instructions and counts the accesses made, for an exit at `at`.
    fn account(&mut self, at: ExitPoint) {
        if at.unrun > 0 {
            dynasm!(self.ops ; .arch x64 ; add QWORD [rbx + offset::BUDGET], at.unrun as i32);
        }
        if at.accesses > 0 {
            dynasm!(self.ops ; .arch x64 ; add QWORD [rbx + offset::ACCESSES], at.accesses as i32);
        }
    }

    /// Leaves the block at `at` with RIP already stored in the context.
    pub(crate) fn exit_stored_rip(&mut self, exit: Exit, at: ExitPoint) {
        debug_assert!(!self.flags.stale);
        self.account(at);
        dynasm!(self.ops
            ; .arch x64
            ; mov eax, exit as i32
            ; jmp extern self.runtime.exit
        );
    }

    /// Leaves the block for a direct jump to `at.rip` on the block's own page: through a
    /// `jmp rel32` that the dispatcher patches to the target's block once it has one.
    pub(crate) fn exit_chained(&mut self, at: ExitPoint) {
        debug_assert!(!self.flags.stale);
        self.account(at);
        let site = self.ops.new_dynamic_label();
        dynasm!(self.ops
            ; .arch x64
            ; =>site
            ; .u8 0xe9
            ; .u32 0
        );
        self.load_imm(reg::RAX, at.rip);
        dynasm!(self.ops
            ; .arch x64
            ; mov QWORD [rbx + offset::RIP], rax
            ; lea rax, [=>site]
            ; mov QWORD [rbx + offset::PATCH_SITE], rax
            ; mov eax, Exit::Chain as i32
            ; jmp extern self.runtime.exit
        );
    }

    /// Turns the linear address in RSI into the host address of `size` bytes there for a
    /// read or a `write`, through the TLB inline or the slow path; where neither gives one,
    /// the block leaves at `exit` for the interpreter. The flags must be spilled. Clobbers
    /// RAX, RCX and RDX (and, on the slow path, every scratch register).
    pub(crate) fn translate_rsi(&mut self, size: u32, write: bool, bit: u16, exit: ExitPoint) {
        debug_assert!(!self.flags.stale && size.is_power_of_two() && size <= 16);
        let slow = self.ops.new_dynamic_label();
        let resume = self.ops.new_dynamic_label();
        let index_mask = (TLB_ENTRIES - 1) as i32;
        let index_bits = TLB_INDEX_BITS as i8;
        let entry_shift = entry_layout::SIZE.trailing_zeros() as i8;
        debug_assert_eq!(1 << entry_shift, entry_layout::SIZE);
        dynasm!(self.ops
            ; .arch x64
            ; mov rax, rsi
            ; shr rax, 12
            ; mov rcx, rax
            ; shr rcx, index_bits
            ; xor rcx, rax
            ; add rcx, QWORD [rbx + offset::TLB_SPREAD]
            ; and ecx, index_mask
            ; shl ecx, entry_shift
            ; add rcx, QWORD [rbx + offset::TLB_ENTRIES]
            ; lea rax, [rax + rax + 1]
            ; cmp rax, QWORD [rcx + entry_layout::TAG as i32]
            ; jne =>slow
            ; mov eax, DWORD [rbx + offset::TLB_ROOT]
            ; cmp eax, DWORD [rcx + entry_layout::ROOT as i32]
            ; jne =>slow
            ; test WORD [rcx + entry_layout::DIRECT as i32], bit as i16
            ; jz =>slow
            ; mov eax, esi
            ; and eax, 0xfff
            ; cmp eax, (0x1000 - size) as i32
            ; ja =>slow
            ; add rax, QWORD [rcx + entry_layout::HOST as i32]
            ; mov rsi, rax
            ; =>resume
        );
        self.slow_paths.push(SlowPath {
            entry: slow,
            resume,
            how: size | u32::from(write) << 8,
            exit,
        });
    }

    /// Emits the slow paths of every inline lookup, after the block's last exit.
    pub(crate) fn finish_slow_paths(&mut self) {
        for path in std::mem::take(&mut self.slow_paths) {
            let failed = self.ops.new_dynamic_label();
            dynasm!(self.ops
                ; .arch x64
                ; =>path.entry
                ; mov rdi, rbx
                ; mov edx, path.how as i32
                ; mov rax, QWORD self.runtime.slow_access as i64
                ; call rax
                ; test rax, rax
                ; jz =>failed
                ; mov rsi, rax
                ; jmp =>path.resume
                ; =>failed
            );
            self.flags = FlagState {
                in_host: false,
                stale: false,
            };
            self.exit(Exit::Interpret, path.exit);
        }
    }

    /// Leaves for the interpreter at `exit` unless RAX holds an address canonical in every
    /// paging mode (a jump elsewhere raises #GP at the jump itself). The flags must be
    /// spilled. Clobbers RCX.
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
        self.exit(Exit::Interpret, exit);
        dynasm!(self.ops ; .arch x64 ; =>ok);
    }
}
