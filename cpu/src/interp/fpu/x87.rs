//! x87 instructions run by the host's own x87 unit, on the guest's state.
//!
//! An instruction runs between FXRSTOR64 of the guest's [`FxState`] and FXSAVE64 back into it,
//! as the very opcode byte and ModR/M byte the guest encoded: a register form (ModR/M mod = 11)
//! exactly as written, undocumented aliases (FSTP1, FXCH4, FFREEP, ...) included; a memory form
//! with its ModR/M reg field and the operand moved to `[rax]`, a host buffer the interpreter
//! fills from guest memory before a load and copies to guest memory after a store. The result,
//! C0-C3, TOP, the tags and every exception flag are then the processor's own; transcendental
//! instructions give what this host's processor gives, as KVM on the same host does.
//!
//! # Never a host exception
//!
//! An unmasked x87 exception is reported by the *next* waiting x87 instruction. The runner
//! clears the exception flags, SF, ES and B before loading the state, so the instruction itself
//! never finds one pending, and puts the old flags back afterwards (they are sticky; no
//! instruction run here clears any) before recomputing ES and B from flags and masks, as the
//! processor does. After FXSAVE64 the host's own x87 state is re-initialized with FNINIT (which
//! does not wait either) and its control word and MXCSR restored.
//!
//! # Cost
//!
//! On top of the instruction: STMXCSR, FNSTCW, FXRSTOR64 and FXSAVE64 of 512 bytes, FNINIT
//! and FLDCW, plus POPFQ/PUSHFQ around the forms that read or write EFLAGS (FCMOVcc, FCOMI).
//! FXRSTOR64, FXSAVE64 and FNINIT take most of it: about 200 ns per instruction through
//! `Interpreter::step` on an AMD EPYC host, against 30-40 ns for an integer or SSE one. No
//! allocation.

use super::{FxState, MXCSR_MASK, fsw};
use crate::interp::alu::ARITH_FLAGS;

/// Runs `$insn` on the host with `$state` (a `&mut FxState`) loaded and saved back. `$operands`
/// are further asm! operands, each followed by a comma.
///
/// The image is loaded with the host's own MXCSR in place of the guest's (no x87 instruction
/// reads MXCSR), so that the host's needs no restoring afterwards.
macro_rules! on_guest_state {
    ($state:expr, [$($insn:expr),* $(,)?], $($operands:tt)*) => {{
        let state: &mut FxState = $state;
        let guest_mxcsr = state.mxcsr;
        state.mxcsr = host_mxcsr();
        let image: *mut FxState = &raw mut *state;
        let mut host_cw: u16 = 0;
        // SAFETY: `image` points to a live, 16-byte aligned 512-byte FxState (the type's
        // alignment), which FXRSTOR64 reads and FXSAVE64 writes; its MXCSR is the host's own,
        // so FXRSTOR64 cannot fault. The instruction in between touches only x87 state,
        // EFLAGS and the operands given to it. Every vector and x87 register is declared
        // clobbered (`clobber_abi`); the host's x87 state is re-initialized and its control
        // word restored, as the Rust ABI expects them. No waiting x87 instruction runs while
        // an unmasked exception is pending (see the module documentation), so the host takes
        // no floating-point exception.
        unsafe {
            ::core::arch::asm!(
                "fnstcw word ptr [{cw}]",
                "fxrstor64 [{image}]",
                $($insn,)*
                "fxsave64 [{image}]",
                "fninit",
                "fldcw word ptr [{cw}]",
                image = in(reg) image,
                cw = in(reg) &raw mut host_cw,
                $($operands)*
                clobber_abi("C"),
            );
        }
        state.mxcsr = guest_mxcsr;
    }};
}

/// The host's MXCSR.
fn host_mxcsr() -> u32 {
    let mut value = 0u32;
    // SAFETY: STMXCSR stores four bytes to the local it is given.
    unsafe {
        ::core::arch::asm!(
            "stmxcsr dword ptr [{value}]",
            value = in(reg) &raw mut value,
            options(nostack, preserves_flags),
        );
    }
    value
}

/// Whether register form `opcode`, `modrm` reads or writes EFLAGS: FCMOVcc (DA and DB C0-DF)
/// and FCOMI, FUCOMI and their popping forms (DB and DF E8-F7).
const fn touches_flags(opcode: u8, modrm: u8) -> bool {
    match opcode {
        0xda => modrm < 0xe0,
        0xdb => modrm < 0xe0 || (modrm >= 0xe8 && modrm < 0xf8),
        0xdf => modrm >= 0xe8 && modrm < 0xf8,
        _ => false,
    }
}

/// A register form: opcode `OPCODE` (0xd8-0xdf), ModR/M `MODRM` (0xc0-0xff); returns
/// RFLAGS after it, the guest's `rflags` with the arithmetic flags the host left, which are
/// loaded first for the forms that read or write them.
fn register_form<const OPCODE: u8, const MODRM: u8>(state: &mut FxState, rflags: u64) -> u64 {
    if !touches_flags(OPCODE, MODRM) {
        on_guest_state!(
            state,
            [".byte {opcode}, {modrm}"],
            opcode = const OPCODE,
            modrm = const MODRM,
        );
        return rflags;
    }
    // Only the six arithmetic flags (and the fixed bit 1) are loaded: never TF, DF or AC.
    let mut flags = (rflags & ARITH_FLAGS) | 2;
    on_guest_state!(
        state,
        [
            "push rcx",
            "popfq",
            ".byte {opcode}, {modrm}",
            "pushfq",
            "pop rcx",
        ],
        inout("rcx") flags,
        opcode = const OPCODE,
        modrm = const MODRM,
    );
    (rflags & !ARITH_FLAGS) | (flags & ARITH_FLAGS)
}

/// A memory form: opcode `OPCODE`, ModR/M reg field `REG`, its operand at `operand`.
fn memory_form<const OPCODE: u8, const REG: u8>(state: &mut FxState, operand: *mut u8) {
    on_guest_state!(
        state,
        [".byte {opcode}, {modrm}"],
        in("rax") operand,
        opcode = const OPCODE,
        // mod = 00, rm = 000: [rax].
        modrm = const REG << 3,
    );
}

/// The register forms of one opcode byte, by ModR/M - 0xc0.
macro_rules! register_row {
    ($op:literal; $($m:literal)*) => {
        [$(register_form::<{ 0xd8 + $op }, { 0xc0 + $m }>),*]
    };
}

/// All 64 register forms of opcode 0xd8 + `$op`.
macro_rules! register_forms {
    ($op:literal) => {
        register_row!($op;
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
            32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
            61 62 63)
    };
}

/// The eight memory forms of opcode 0xd8 + `$op`, by reg field.
macro_rules! memory_forms {
    ($op:literal) => {
        [
            memory_form::<{ 0xd8 + $op }, 0>,
            memory_form::<{ 0xd8 + $op }, 1>,
            memory_form::<{ 0xd8 + $op }, 2>,
            memory_form::<{ 0xd8 + $op }, 3>,
            memory_form::<{ 0xd8 + $op }, 4>,
            memory_form::<{ 0xd8 + $op }, 5>,
            memory_form::<{ 0xd8 + $op }, 6>,
            memory_form::<{ 0xd8 + $op }, 7>,
        ]
    };
}

/// A register form's runner.
type RegisterForm = fn(&mut FxState, u64) -> u64;

/// A memory form's runner.
type MemoryForm = fn(&mut FxState, *mut u8);

/// Every register form, by opcode byte - 0xd8 and ModR/M - 0xc0.
static REGISTER_FORMS: [[RegisterForm; 64]; 8] = [
    register_forms!(0),
    register_forms!(1),
    register_forms!(2),
    register_forms!(3),
    register_forms!(4),
    register_forms!(5),
    register_forms!(6),
    register_forms!(7),
];

/// Every memory form, by opcode byte - 0xd8 and ModR/M reg field.
static MEMORY_FORMS: [[MemoryForm; 8]; 8] = [
    memory_forms!(0),
    memory_forms!(1),
    memory_forms!(2),
    memory_forms!(3),
    memory_forms!(4),
    memory_forms!(5),
    memory_forms!(6),
    memory_forms!(7),
];

/// What the host reported for a register form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The exception flags (and SF) the instruction raised, masked or not.
    pub(crate) raised: u16,
    /// RFLAGS after it: the guest's, with the arithmetic flags the host left.
    pub(crate) rflags: u64,
}

/// Runs `run` on `state` with the exception flags cleared, then merges them back (see the
/// module documentation).
fn with_flags_set_aside(state: &mut FxState, run: impl FnOnce(&mut FxState)) -> u16 {
    let sticky = fsw::EXCEPTIONS | fsw::SF;
    let old = state.fsw & sticky;
    state.fsw &= !(sticky | fsw::ES | fsw::B);
    run(state);
    let raised = state.fsw & sticky;
    state.fsw |= old;
    state.update_error_summary();
    // FXSAVE64 stored the host's mask; the guest's is the one it was given.
    state.mxcsr_mask = MXCSR_MASK;
    raised
}

/// Runs the register form `opcode` (0xd8-0xdf), `modrm` (0xc0-0xff) on `state`, with the
/// guest's `rflags` (FCMOVcc reads them; FCOMI and its kin write ZF, PF and CF).
///
/// The caller passes only encodings the decoder accepted, which the host executes.
pub(crate) fn run_register(state: &mut FxState, opcode: u8, modrm: u8, rflags: u64) -> Outcome {
    let form = REGISTER_FORMS[usize::from(opcode & 7)][usize::from(modrm & 0x3f)];
    let mut after = rflags;
    let raised = with_flags_set_aside(state, |state| after = form(state, rflags));
    Outcome {
        raised,
        rflags: after,
    }
}

/// Runs the memory form `opcode` (0xd8-0xdf) with ModR/M reg field `reg` on `state`, its
/// operand in `operand` (loaded from it, or stored into it); returns the exception flags (and
/// SF) it raised.
pub(crate) fn run_memory(state: &mut FxState, opcode: u8, reg: u8, operand: &mut [u8; 16]) -> u16 {
    let form = MEMORY_FORMS[usize::from(opcode & 7)][usize::from(reg & 7)];
    with_flags_set_aside(state, |state| form(state, operand.as_mut_ptr()))
}

/// Loads `state` into the host's x87 and SSE unit and stores it back, so that every field
/// takes the form the processor gives it (FXRSTOR ignores reserved bits of the control word,
/// recomputes ES and B, ...). The caller has checked MXCSR.
pub(crate) fn normalize(state: &mut FxState) {
    on_guest_state!(state, [],);
    state.mxcsr_mask = MXCSR_MASK;
}

/// Whether FXSAVE64 on this host stores the instruction pointer of an x87 instruction that
/// raised no exception.
pub(super) fn probe_fxsave_pointers() -> bool {
    let mut state = FxState {
        fcw: super::FCW_INIT,
        ftw: 0,
        ..FxState::default()
    };
    on_guest_state!(&mut state, ["fldz"],);
    state.fip != 0
}
