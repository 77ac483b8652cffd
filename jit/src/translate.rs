//! Block translation: a run of guest instructions on one page, to host code.
//!
//! Guest and host share an instruction set, so most integer instructions are *re-encoded*:
//! the host runs the guest's own instruction, with its registers renamed to host registers
//! loaded from the context, and its memory operand replaced by `[r14]` once R14 holds the host
//! address of the guest operand (see [`crate::emitter`]). The host's flags are then the guest's,
//! exactly, undefined flags included (the interpreter also runs these instructions on the
//! host). Stack and control-flow instructions are written out by hand. Anything else ends the
//! block with an exit to the interpreter, which runs that one instruction.
//!
//! A block ends at a control transfer, at an instruction it does not translate, at the end of
//! its page, or after [`MAX_BLOCK_INSTRUCTIONS`].

// dynasm's `Rq(n)` calls `.into()` on a register number that is already a `u8`.
#![allow(clippy::useless_conversion)]

use dynasmrt::{DynamicLabel, DynasmApi, DynasmLabelApi, dynasm};
use iced_x86::{
    Code, ConditionCode, CpuidFeature, Decoder, DecoderError, DecoderOptions, Encoder, FlowControl,
    Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register, RflagsBits,
};
use umbra_cpu::interp::cpuid;
use umbra_mmu::tlb::InlineTlb;
use umbra_mmu::walker::{Access, AccessKind, Privilege};

use crate::context::{Exit, offset};
use crate::emitter::{
    BudgetUpdate, Emitter, ExitPoint, FlagState, RegisterCache, Runtime, reg, registers_in,
};

/// RFLAGS.IF.
const RFLAGS_IF: i32 = 1 << 9;
/// RFLAGS.DF.
const RFLAGS_DF: i32 = 1 << 10;
/// RFLAGS.AC.
const RFLAGS_AC: i32 = 1 << 18;

/// The most instructions one block holds.
pub(crate) const MAX_BLOCK_INSTRUCTIONS: usize = 64;

/// Where a block starts and what it may assume.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockStart {
    /// The guest RIP of its first instruction.
    pub rip: u64,
    /// The TLB bit of a data read in the block's privilege context.
    pub read_bit: u16,
    /// The TLB bit of a data write.
    pub write_bit: u16,
    /// Whether SSE instructions run rather than fault (see
    /// [`umbra_cpu::interp::translator::BlockContext::sse`]).
    pub sse: bool,
    /// Whether SSE floating-point instructions run without an exception to raise (see
    /// [`umbra_cpu::interp::translator::BlockContext::float`]).
    pub float: bool,
}

impl BlockStart {
    /// Whether the block runs at CPL 0 ([`at_cpl0`]).
    fn at_cpl0(&self) -> bool {
        at_cpl0(self.read_bit)
    }
}

/// Whether a block context with TLB read bit `read_bit` is at CPL 0: blocks run at CPL 0 or
/// 3 only ([`umbra_cpu::interp::Interpreter::block_context`]), and the read bit names the
/// privilege context.
pub(crate) fn at_cpl0(read_bit: u16) -> bool {
    read_bit != InlineTlb::direct_bit(Access::new(AccessKind::Read, Privilege::User))
}

/// A translated block.
pub(crate) struct BlockCode {
    /// Host code, assembled for the address it was asked for.
    pub code: Vec<u8>,
    /// Guest instructions in the block.
    pub instructions: u32,
    /// Bytes of guest code it covers, the instruction it leaves to the interpreter included.
    pub guest_bytes: u32,
}

/// What translating gave.
pub(crate) enum Translation {
    /// A block.
    Block(BlockCode),
    /// The first instruction is not translated (the interpreter runs it): what it is, or
    /// `None` when it crosses the end of the page or does not decode.
    Untranslated(Option<Mnemonic>),
}

/// How one guest instruction becomes host code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lowering {
    /// Re-encoded and run by the host.
    Native,
    /// LEA: the address computation, without an access.
    Lea,
    /// No architectural effect beyond RIP.
    Nop,
    /// PUSH r64, imm or m64.
    Push,
    /// PUSHFQ.
    PushFlags,
    /// POP r64.
    Pop,
    /// JMP rel.
    Jump,
    /// Jcc rel.
    Branch,
    /// CALL rel.
    Call,
    /// RET, RET imm16.
    Return,
    /// JMP r/m64.
    JumpIndirect,
    /// CALL r/m64.
    CallIndirect,
    /// REP STOS with 64-bit addresses.
    RepStos,
    /// REP MOVS with 64-bit addresses and DS as the source's segment.
    RepMovs,
    /// RDTSC at CPL 0 (where CR4.TSD cannot make it fault): the host's, offset.
    ReadTsc,
    /// MOV of a segment selector to a general register with a home.
    ReadSelector,
    /// MOV from CR0, CR2, CR3 or CR4 to a general register with a home, at CPL 0.
    ReadControl,
    /// LEAVE.
    Leave,
    /// SWAPGS at CPL 0: GS's base and IA32_KERNEL_GS_BASE exchanged in the context.
    SwapGs,
    /// CLD or STD; CLI, STI, STAC or CLAC at CPL 0: sets (`set`) or clears the RFLAGS bits
    /// in `mask`. STI, whose interrupt shadow covers the next instruction, ends the block
    /// after that one, back in the vCPU's loop (as [`Exit::Budget`] does), which delivers the
    /// interrupts pending; STAC and CLAC, which change the privilege context, end it at once,
    /// back in the dispatcher ([`Exit::Dispatch`]).
    SystemFlag { mask: i32, set: bool },
    /// Left to the interpreter.
    Interpret,
}

/// Translates the block starting at `start`, whose bytes run to the end of its page in
/// `bytes` (and on into the next page for an instruction that does), for host address
/// `base`.
pub(crate) fn translate(
    bytes: &[u8],
    start: BlockStart,
    base: usize,
    runtime: Runtime,
) -> Translation {
    let instructions = decode_block(bytes, start);
    let Some(first) = instructions.first() else {
        let mut decoder = Decoder::with_ip(64, bytes, start.rip, DecoderOptions::NONE);
        let instruction = decoder.decode();
        let mnemonic = (decoder.last_error() == DecoderError::None).then(|| instruction.mnemonic());
        return Translation::Untranslated(mnemonic);
    };
    let &(first, first_lowering) = first;
    if first_lowering == Lowering::Interpret {
        return Translation::Untranslated(Some(first.mnemonic()));
    }
    // Only the last instruction can be the interpreter's (decoding stops there).
    let ends_in_interpreter = instructions.last().map(|&(_, l)| l) == Some(Lowering::Interpret);
    let mut info = InstructionInfoFactory::new();
    let self_loop = (!ends_in_interpreter)
        .then(|| loop_registers(&instructions, start.rip, &mut info))
        .flatten();
    let mut emitter = Emitter::new(base, runtime, !start.at_cpl0());
    let budget_exit = emitter.ops.new_dynamic_label();
    let mut block = BlockTranslator {
        emitter,
        info,
        start,
        length: (instructions.len() - usize::from(ends_in_interpreter)) as u32,
        index: 0,
        accesses: 0,
        self_loop: None,
        decoded: instructions.len() as u32,
        side_exits: Vec::new(),
        in_sti_shadow: false,
        budget_exit,
        returns: Vec::new(),
    };
    block.prologue();
    if let Some(registers) = self_loop {
        block.enter_loop(registers);
    }
    let mut ended = false;
    for (instruction, lowering) in &instructions {
        if block.instruction(instruction, *lowering) {
            ended = true;
            break;
        }
        block.in_sti_shadow = is_native_sti(instruction);
        block.index += 1;
    }
    if !ended {
        // Out of instructions or page: on to the next one; after STI's shadow, back to the
        // vCPU's loop, which delivers the interrupts pending.
        let next = instructions.last().map_or(start.rip, |(i, _)| i.next_ip());
        block.emitter.spill_flags();
        if instructions.iter().any(|(i, _)| is_native_sti(i)) {
            let at = block.after(next);
            block.emitter.exit(Exit::Budget, at);
        } else {
            block.jump_to(next);
        }
    }
    block.finish_side_exits();
    block.finish_returns();
    block.finish_budget_exit();
    block.emitter.finish_slow_paths();
    match block.emitter.assemble(block.accesses) {
        Some(code) => Translation::Block(BlockCode {
            code,
            instructions: block.length,
            guest_bytes: instructions
                .last()
                .map_or(0, |(last, _)| (last.next_ip() - start.rip) as u32),
        }),
        None => Translation::Untranslated(Some(first.mnemonic())),
    }
}

/// The block's instructions, each with its lowering: up to the first control transfer but a
/// conditional branch (included) or the first one the interpreter must run (included, as
/// the block's exit), within the page. A conditional branch inside the block is a side exit
/// when taken.
fn decode_block(bytes: &[u8], start: BlockStart) -> Vec<(Instruction, Lowering)> {
    let mut decoder = Decoder::with_ip(64, bytes, start.rip, DecoderOptions::NONE);
    let mut instructions = Vec::new();
    // Bytes past the page are there for an instruction that starts on it and runs on.
    let page_left = 0x1000 - (start.rip & 0xfff);
    while instructions.len() < MAX_BLOCK_INSTRUCTIONS
        && decoder.can_decode()
        && decoder.ip().wrapping_sub(start.rip) < page_left
    {
        let instruction = decoder.decode();
        if decoder.last_error() != DecoderError::None {
            break;
        }
        let mut lowered = lowering(&instruction, start);
        // The instruction in STI's shadow ends the block; one that transfers control is the
        // interpreter's (but RET, which leaves for the vCPU's loop), so that interrupts are
        // delivered right after it.
        let shadowed = instructions.last().is_some_and(|(i, _)| is_native_sti(i));
        if shadowed
            && instruction.flow_control() != FlowControl::Next
            && lowered != Lowering::Return
        {
            lowered = Lowering::Interpret;
        }
        instructions.push((instruction, lowered));
        // A conditional branch leaves on one way only: the block goes on along the other; but
        // one back to the block's start ends it, as a loop that goes round without leaving.
        let side_exit =
            lowered == Lowering::Branch && instruction.near_branch_target() != start.rip;
        let ends = lowered == Lowering::Interpret
            || shadowed
            || (instruction.flow_control() != FlowControl::Next && !side_exit)
            || matches!(
                lowered,
                Lowering::SystemFlag {
                    mask: RFLAGS_AC,
                    ..
                }
            );
        if ends {
            break;
        }
    }
    // An STI with no instruction after it in the block is the interpreter's, which keeps
    // its shadow.
    if let Some(last) = instructions.last_mut()
        && is_native_sti(&last.0)
    {
        last.1 = Lowering::Interpret;
    }
    instructions
}

/// Whether `i` is STI (lowered as [`Lowering::SystemFlag`] when it is not the
/// interpreter's).
fn is_native_sti(i: &Instruction) -> bool {
    i.mnemonic() == Mnemonic::Sti
}

/// How `i` is translated in a block starting at `start`.
fn lowering(i: &Instruction, start: BlockStart) -> Lowering {
    use Code::*;
    let direct = i.op0_kind() == OpKind::NearBranch64 && is_canonical(i.near_branch_target());
    match i.code() {
        // PREFETCHh only hints, and never faults.
        Nopd | Nopq | Nopw | Nop_rm16 | Nop_rm32 | Nop_rm64 | Endbr64 | Pause | Prefetchnta_m8
        | Prefetcht0_m8 | Prefetcht1_m8 | Prefetcht2_m8 => Lowering::Nop,
        Lea_r16_m | Lea_r32_m | Lea_r64_m if is_plain_memory(i) => Lowering::Lea,
        Push_r64 | Pushq_imm8 | Pushq_imm32 => Lowering::Push,
        Push_rm64 if is_plain_memory(i) => Lowering::Push,
        Pushfq => Lowering::PushFlags,
        Rdtsc if start.at_cpl0() => Lowering::ReadTsc,
        Mov_r32m16_Sreg | Mov_r64m16_Sreg | Mov_rm16_Sreg
            if i.op0_kind() == OpKind::Register && has_home(i.op0_register()) =>
        {
            Lowering::ReadSelector
        }
        Mov_r64_cr
            if start.at_cpl0()
                && matches!(
                    i.op1_register(),
                    Register::CR0 | Register::CR2 | Register::CR3 | Register::CR4
                )
                && has_home(i.op0_register()) =>
        {
            Lowering::ReadControl
        }
        Leaveq => Lowering::Leave,
        Swapgs if start.at_cpl0() => Lowering::SwapGs,
        Cld | Std => Lowering::SystemFlag {
            mask: RFLAGS_DF,
            set: i.code() == Std,
        },
        Cli | Sti if start.at_cpl0() => Lowering::SystemFlag {
            mask: RFLAGS_IF,
            set: i.code() == Sti,
        },
        Clac | Stac if start.at_cpl0() => Lowering::SystemFlag {
            mask: RFLAGS_AC,
            set: i.code() == Stac,
        },
        Pop_r64 => Lowering::Pop,
        Jmp_rel8_64 | Jmp_rel32_64 if direct => Lowering::Jump,
        Call_rel32_64 if direct => Lowering::Call,
        Retnq | Retnq_imm16 => Lowering::Return,
        Jmp_rm64 if i.op0_kind() == OpKind::Register || is_plain_memory(i) => {
            Lowering::JumpIndirect
        }
        Call_rm64 if i.op0_kind() == OpKind::Register || is_plain_memory(i) => {
            Lowering::CallIndirect
        }
        Stosb_m8_AL | Stosw_m16_AX | Stosd_m32_EAX | Stosq_m64_RAX
            if is_plain_rep(i) && i.op0_kind() == OpKind::MemoryESRDI =>
        {
            Lowering::RepStos
        }
        Movsb_m8_m8 | Movsw_m16_m16 | Movsd_m32_m32 | Movsq_m64_m64
            if is_plain_rep(i)
                && i.op0_kind() == OpKind::MemoryESRDI
                && i.segment_prefix() == Register::None =>
        {
            Lowering::RepMovs
        }
        _ if i.is_jcc_short_or_near() && direct => Lowering::Branch,
        _ if runs_natively(i)
            || (start.sse && runs_natively_sse(i))
            || (start.float && is_float(i) && runs_natively_sse_operands(i)) =>
        {
            Lowering::Native
        }
        _ => Lowering::Interpret,
    }
}

/// Whether `i` has a REP prefix and no REPNE.
fn is_plain_rep(i: &Instruction) -> bool {
    i.has_rep_prefix() && !i.has_repne_prefix()
}

/// Whether `address` is canonical in every paging mode (48-bit).
fn is_canonical(address: u64) -> bool {
    ((address << 16) as i64 >> 16) as u64 == address
}

/// Whether `kind` is an immediate.
fn is_immediate(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// Whether `i`'s memory operand is one the translator computes: general base and index
/// registers (or RIP), no vector index.
fn is_plain_memory(i: &Instruction) -> bool {
    let base = i.memory_base();
    let index = i.memory_index();
    (base == Register::None || base == Register::RIP || base.is_gpr())
        && (index == Register::None || index.is_gpr())
}

/// The instructions the host may run for the guest: integer instructions whose only effects
/// are on general registers, the arithmetic flags and one memory operand, that cannot fault
/// on their own (division only on 32 and 64 bits, behind a guard that leaves for the
/// interpreter where it would: see `BlockTranslator::divide_guard`), and the fences; all of
/// them with features the guest's CPUID has.
fn runs_natively(i: &Instruction) -> bool {
    use Mnemonic::*;
    let family = matches!(
        i.mnemonic(),
        Add | Or
            | Adc
            | Sbb
            | And
            | Sub
            | Xor
            | Cmp
            | Test
            | Inc
            | Dec
            | Neg
            | Not
            | Mov
            | Movzx
            | Movsx
            | Movsxd
            | Shl
            | Sal
            | Shr
            | Sar
            | Rol
            | Ror
            | Rcl
            | Rcr
            | Shld
            | Shrd
            | Imul
            | Mul
            | Xchg
            | Bswap
            | Bt
            | Bts
            | Btr
            | Btc
            | Bsf
            | Bsr
            | Tzcnt
            | Lzcnt
            | Popcnt
            | Cbw
            | Cwde
            | Cdqe
            | Cwd
            | Cdq
            | Cqo
            | Clc
            | Stc
            | Cmc
            | Xadd
            | Cmpxchg
            | Cmpxchg16b
            | Andn
            | Bextr
            | Blsi
            | Blsmsk
            | Blsr
            | Bzhi
            | Pdep
            | Pext
            | Rorx
            | Sarx
            | Shlx
            | Shrx
            | Mulx
            | Adcx
            | Adox
            | Movbe
            | Lahf
            | Sahf
            | Lfence
            | Mfence
            | Sfence
    ) || is_setcc_or_cmovcc(i)
        || is_divide(i);
    // TZCNT is the guest's whether or not BMI1 is advertised (without it, REP BSF runs as
    // TZCNT on processors that have it, and the interpreter does the same): the host's runs
    // it when it has BMI1.
    let available = |f: CpuidFeature| {
        cpuid::advertises(f)
            || (f == CpuidFeature::BMI1
                && i.mnemonic() == Tzcnt
                && std::arch::is_x86_feature_detected!("bmi1"))
    };
    if !family || !i.cpuid_features().iter().all(|&f| available(f)) {
        return false;
    }
    // iced's flag bits: OF, SF, ZF, AF, CF, PF are the low six.
    let arithmetic = 0x3f;
    if (i.rflags_read() | i.rflags_modified()) & !arithmetic != 0 {
        return false;
    }
    let mut memory = false;
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::Register if i.op_register(n).is_gpr() => {}
            OpKind::Memory => memory = true,
            kind if is_immediate(kind) => {}
            _ => return false,
        }
    }
    if memory {
        // A bit string's element is found from a 64-bit address (see
        // `BlockTranslator::bit_string_into_r14`).
        // CMPXCHG16B's 16 bytes must be aligned (see `needs_alignment`).
        let size = i.memory_size().size();
        if !is_plain_memory(i)
            || (size > 8 && i.mnemonic() != Cmpxchg16b)
            || (is_bit_string(i) && is_addr32(i))
        {
            return false;
        }
    }
    true
}

/// Whether `i` is BT, BTS, BTR or BTC on memory with the bit offset in a register: a bit
/// string, whose offset may address memory beyond the operand.
fn is_bit_string(i: &Instruction) -> bool {
    matches!(
        i.mnemonic(),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) && i.op0_kind() == OpKind::Memory
        && i.op1_kind() == OpKind::Register
}

/// The SSE instructions the host may run for the guest: moves, logic, integer arithmetic,
/// shuffles and compares on XMM registers, which read and write nothing but their operands
/// (and, for PTEST, the flags): no MXCSR, no exception but a misaligned operand's, which the
/// block checks for first.
fn runs_natively_sse(i: &Instruction) -> bool {
    use Mnemonic::*;
    let family = match i.mnemonic() {
        Movsd => matches!(i.code(), Code::Movsd_xmm_xmmm64 | Code::Movsd_xmmm64_xmm),
        Movd | Movq | Movdqa | Movdqu | Movaps | Movups | Movapd | Movupd | Movss | Movhps
        | Movlps | Movhpd | Movlpd | Movhlps | Movlhps | Lddqu | Pxor | Por | Pand | Pandn
        | Xorps | Xorpd | Andps | Andpd | Andnps | Andnpd | Orps | Orpd | Paddb | Paddw | Paddd
        | Paddq | Psubb | Psubw | Psubd | Psubq | Paddusb | Paddusw | Psubusb | Psubusw
        | Paddsb | Paddsw | Psubsb | Psubsw | Pcmpeqb | Pcmpeqw | Pcmpeqd | Pcmpeqq | Pcmpgtb
        | Pcmpgtw | Pcmpgtd | Pmovmskb | Movmskps | Movmskpd | Punpcklbw | Punpcklwd
        | Punpckldq | Punpcklqdq | Punpckhbw | Punpckhwd | Punpckhdq | Punpckhqdq | Pshufd
        | Pshuflw | Pshufhw | Pshufb | Psllw | Pslld | Psllq | Psrlw | Psrld | Psrlq | Psraw
        | Psrad | Pslldq | Psrldq | Pminub | Pmaxub | Pminsw | Pmaxsw | Pminsb | Pmaxsb
        | Pminuw | Pmaxuw | Pminud | Pmaxud | Pminsd | Pmaxsd | Pavgb | Pavgw | Psadbw | Pmullw
        | Pmulhw | Pmulhuw | Pmuludq | Pmulld | Pmaddwd | Packuswb | Packsswb | Packssdw
        | Palignr | Pinsrw | Pextrw | Pinsrb | Pinsrd | Pinsrq | Pextrb | Pextrd | Pextrq
        | Shufps | Shufpd | Unpcklps | Unpckhps | Unpcklpd | Unpckhpd | Ptest | Pabsb | Pabsw
        | Pabsd | Pblendw => true,
        _ => false,
    };
    family && runs_natively_sse_operands(i)
}

/// The SSE floating-point instructions: arithmetic, square roots, minima and maxima,
/// compares and conversions, scalar and packed. They read and write MXCSR, which generated
/// code loads with the guest's around them, in a context where it masks every exception
/// ([`BlockStart::float`]).
fn is_float(i: &Instruction) -> bool {
    use Mnemonic::*;
    match i.mnemonic() {
        // The string instruction shares the compare's mnemonic.
        Cmpsd => i.code() == Code::Cmpsd_xmm_xmmm64_imm8,
        Addss | Addsd | Addps | Addpd | Subss | Subsd | Subps | Subpd | Mulss | Mulsd | Mulps
        | Mulpd | Divss | Divsd | Divps | Divpd | Minss | Minsd | Minps | Minpd | Maxss | Maxsd
        | Maxps | Maxpd | Sqrtss | Sqrtsd | Sqrtps | Sqrtpd | Cmpss | Cmpps | Cmppd | Ucomiss
        | Ucomisd | Comiss | Comisd | Cvtsi2ss | Cvtsi2sd | Cvtss2sd | Cvtsd2ss | Cvttss2si
        | Cvttsd2si | Cvtss2si | Cvtsd2si | Cvtdq2ps | Cvtdq2pd | Cvtps2dq | Cvttps2dq
        | Cvtpd2dq | Cvttpd2dq | Cvtps2pd | Cvtpd2ps | Roundss | Roundsd | Roundps | Roundpd
        | Haddps | Haddpd | Hsubps | Hsubpd | Addsubps | Addsubpd | Dpps | Dppd => true,
        _ => false,
    }
}

/// Whether the host may run the SSE instruction `i` for the guest as far as its feature and
/// operands go: the guest's CPUID has the feature, it touches no flag but the arithmetic
/// ones, and its operands are general or XMM registers, immediates and plain memory.
fn runs_natively_sse_operands(i: &Instruction) -> bool {
    if !i.cpuid_features().iter().all(|&f| cpuid::advertises(f)) {
        return false;
    }
    if (i.rflags_read() | i.rflags_modified()) & !0x3f != 0 {
        return false;
    }
    (0..i.op_count()).all(|n| match i.op_kind(n) {
        OpKind::Register => {
            let r = i.op_register(n);
            r.is_gpr() || r.is_xmm()
        }
        OpKind::Memory => is_plain_memory(i) && i.memory_size().size() <= 16,
        kind => is_immediate(kind),
    })
}

/// Whether `i`'s memory operand must be 16-byte aligned (a legacy SSE instruction on 128
/// bits, but for the unaligned moves; CMPXCHG16B): a misaligned one raises #GP.
fn needs_alignment(i: &Instruction) -> bool {
    use Mnemonic::*;
    let memory = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
    let xmm =
        (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_xmm());
    memory
        && i.memory_size().size() == 16
        && ((xmm && !matches!(i.mnemonic(), Movdqu | Movups | Movupd | Lddqu))
            || i.mnemonic() == Cmpxchg16b)
}

/// Whether `i` is a DIV or IDIV of a 32- or 64-bit operand (the sizes generated code
/// guards; see `BlockTranslator::divide_guard`).
fn is_divide(i: &Instruction) -> bool {
    use Code::*;
    matches!(i.code(), Div_rm32 | Div_rm64 | Idiv_rm32 | Idiv_rm64)
}

/// Whether `i` is a SETcc or a CMOVcc: a conditional instruction that does not branch.
fn is_setcc_or_cmovcc(i: &Instruction) -> bool {
    i.condition_code() != ConditionCode::None && i.flow_control() == FlowControl::Next
}

/// Whether `i` needs the guest's flags in the host's before it runs: it reads some, or
/// writes only some (the others must survive), or is a shift or rotate.
fn needs_flags(i: &Instruction) -> bool {
    let modified = i.rflags_modified();
    i.rflags_read() != 0 || (modified != 0 && modified != 0x3f) || is_shift_or_rotate(i)
}

/// Whether the guest's CF is all `i` needs of the flags before it runs: it reads no other,
/// and writes every other or none (see [`Emitter::load_carry`]).
fn needs_carry_only(i: &Instruction) -> bool {
    let carry = RflagsBits::CF;
    let modified = i.rflags_modified();
    let kept = 0x3f & !modified & !carry;
    needs_flags(i)
        && !is_shift_or_rotate(i)
        && i.rflags_read() & !carry == 0
        && (modified == 0 || kept == 0)
}

/// Whether `i` shifts or rotates: it may write no flag (a count of 0), and iced-x86's flag
/// lists for it follow the count it can see (an 8-bit RCR by 9 writes none by them, where the
/// processor writes OF, which the SDM leaves undefined).
fn is_shift_or_rotate(i: &Instruction) -> bool {
    use Mnemonic::*;
    matches!(
        i.mnemonic(),
        Shl | Sal | Shr | Sar | Rol | Ror | Rcl | Rcr | Shld | Shrd
    )
}

/// The number (0 = RAX .. 15 = R15) of general register `r`.
fn gpr_number(r: Register) -> u8 {
    r.full_register().number() as u8
}

/// The general register numbered `number` with the size and (for a byte) high-ness of `like`.
fn same_kind(like: Register, number: u8) -> Option<Register> {
    let base = if like.is_gpr64() {
        Register::RAX
    } else if like.is_gpr32() {
        Register::EAX
    } else if like.is_gpr16() {
        Register::AX
    } else if matches!(
        like,
        Register::AH | Register::CH | Register::DH | Register::BH
    ) {
        return (number < 4).then(|| register_at(Register::AH, number));
    } else if number < 4 {
        Register::AL
    } else if number < 8 {
        return Some(register_at(Register::SPL, number - 4));
    } else {
        return Some(register_at(Register::R8L, number - 8));
    };
    Some(register_at(base, number))
}

/// The register `n` places after `base` in iced's numbering.
fn register_at(base: Register, n: u8) -> Register {
    Register::try_from(base as usize + usize::from(n)).expect("a general register")
}

/// For a block that loops to its own start (its last instruction jumps there, and every
/// other runs natively, computes an address, does nothing or leaves on a branch taken): the
/// homes its body uses, and those it writes, which stay in their host registers from one
/// iteration to the next. `None` for any other block.
fn loop_registers(
    instructions: &[(Instruction, Lowering)],
    rip: u64,
    info: &mut InstructionInfoFactory,
) -> Option<LoopRegisters> {
    let ((last, last_lowering), body) = instructions.split_last()?;
    let back = matches!(last_lowering, Lowering::Branch | Lowering::Jump)
        && last.near_branch_target() == rip;
    let plain = body.iter().all(|(_, l)| {
        matches!(
            l,
            Lowering::Native | Lowering::Lea | Lowering::Nop | Lowering::Branch
        )
    });
    if !back || !plain {
        return None;
    }
    let mut registers = LoopRegisters::default();
    for (i, _) in body {
        for used in info.info(i).used_registers() {
            let r = used.register();
            if !r.is_gpr() {
                continue;
            }
            let bit = 1 << gpr_number(r);
            registers.used |= bit;
            if !matches!(used.access(), OpAccess::Read | OpAccess::CondRead) {
                registers.written |= bit;
            }
        }
    }
    registers.used &= !HOMELESS_GUESTS;
    registers.written &= registers.used;
    Some(registers)
}

/// The homes a block looping to itself keeps loaded ([`loop_registers`]).
#[derive(Clone, Copy, Debug, Default)]
struct LoopRegisters {
    /// Loaded before the first iteration and kept.
    used: u16,
    /// Written by an iteration: treated as dirty throughout, so that any exit stores them.
    written: u16,
}

/// A block looping to itself: where an iteration starts, and its registers.
#[derive(Clone, Copy, Debug)]
struct SelfLoop {
    top: DynamicLabel,
    registers: LoopRegisters,
}

/// The translator's state while it walks a block.
struct BlockTranslator {
    emitter: Emitter,
    info: InstructionInfoFactory,
    start: BlockStart,
    /// Instructions the block runs (the untranslated one it may end on excluded).
    length: u32,
    /// The instruction being translated, from 0.
    index: u32,
    /// Inline memory accesses before it.
    accesses: u32,
    /// Set when the block loops to itself.
    self_loop: Option<SelfLoop>,
    /// The instructions decoded (the one left to the interpreter at the end included).
    decoded: u32,
    /// Conditional branches inside the block: their taken way's label, exit point, target,
    /// and where the flags were.
    side_exits: Vec<(DynamicLabel, ExitPoint, u64, FlagState)>,
    /// Whether the instruction being translated follows an STI (it is in its shadow).
    in_sti_shadow: bool,
    /// Where the prologue goes when the budget cannot cover the block.
    budget_exit: DynamicLabel,
    /// The block's calls: where it goes on to each one's return address, and the address.
    returns: Vec<(DynamicLabel, u64)>,
}

impl BlockTranslator {
    /// Starts the first iteration of a block that loops to itself: the homes it uses loaded,
    /// those it writes counted dirty, for every iteration alike.
    fn enter_loop(&mut self, registers: LoopRegisters) {
        for n in registers_in(registers.used) {
            self.emitter.load_gpr(n, n);
        }
        self.emitter.cache = RegisterCache {
            loaded: registers.used,
            dirty: registers.written,
        };
        let top = self.emitter.ops.new_dynamic_label();
        dynasm!(self.emitter.ops ; .arch x64 ; =>top);
        self.self_loop = Some(SelfLoop { top, registers });
    }

    /// Whether a jump to `target` from the block's end goes back to its own start, in a block
    /// that loops to itself.
    fn loops_back(&self, target: u64) -> bool {
        self.self_loop.is_some() && target == self.start.rip
    }

    /// The jump back to the start of a block that loops to itself: the homes as the first
    /// iteration found them, the budget charged again, and on to the next iteration without
    /// leaving; or, when the budget cannot cover another, out with the state stored. The
    /// flags must be parked.
    fn back_edge(&mut self, top: DynamicLabel, registers: LoopRegisters) {
        for n in registers_in(registers.used & !self.emitter.cache.loaded) {
            self.emitter.load_gpr(n, n);
        }
        self.emitter.cache.loaded |= registers.used;
        self.emitter
            .budget_update(BudgetUpdate::Charge, self.length, 0);
        dynasm!(self.emitter.ops ; .arch x64 ; jge =>top);
        let at = ExitPoint {
            rip: self.start.rip,
            unrun: self.length,
            accesses: 0,
            dirty: self.emitter.cache.dirty | registers.written,
        };
        self.emitter.exit(Exit::Budget, at);
    }

    /// The block's way in: takes its length and its accesses from the budget, or leaves, out
    /// of line ([`BlockTranslator::finish_budget_exit`]), when the budget cannot cover them.
    fn prologue(&mut self) {
        self.emitter
            .budget_update(BudgetUpdate::Charge, self.length, 0);
        dynasm!(self.emitter.ops
            ; .arch x64
            ; jl =>self.budget_exit
        );
    }

    /// Emits the prologue's way out, after the block's last exit: the budget given back, RIP
    /// the block's start.
    fn finish_budget_exit(&mut self) {
        dynasm!(self.emitter.ops ; .arch x64 ; =>self.budget_exit);
        self.emitter.flags = FlagState::PARKED;
        self.emitter.exit(
            Exit::Budget,
            ExitPoint {
                rip: self.start.rip,
                unrun: self.length,
                accesses: 0,
                dirty: 0,
            },
        );
    }

    /// The exit point before the current instruction, at `rip`.
    fn before(&self, rip: u64) -> ExitPoint {
        ExitPoint {
            rip,
            unrun: self.length - self.index,
            accesses: self.accesses,
            dirty: self.emitter.cache.dirty,
        }
    }

    /// The exit point after the current instruction, going to `rip`.
    fn after(&self, rip: u64) -> ExitPoint {
        ExitPoint {
            rip,
            // Past the block's last instruction (a fall-through to the next page) none is left.
            unrun: self.length.saturating_sub(self.index + 1),
            accesses: self.accesses,
            dirty: self.emitter.cache.dirty,
        }
    }

    /// Leaves for `target` after the current instruction: chained if it is on this page.
    fn jump_to(&mut self, target: u64) {
        if let Some(SelfLoop { top, registers }) = self.self_loop
            && target == self.start.rip
        {
            self.back_edge(top, registers);
            return;
        }
        let at = self.after(target);
        self.leave_for(target, at);
    }

    /// Leaves for `target` from exit point `at`: chained if it is on this page, or if both
    /// are kernel code in the upper half (see [`Exit::FarChain`]).
    fn leave_for(&mut self, target: u64, at: ExitPoint) {
        if target >> 12 == self.start.rip >> 12 {
            self.emitter.exit_chained(at);
        } else if self.start.at_cpl0() && self.start.rip >> 63 != 0 && target >> 63 != 0 {
            self.emitter.exit_far_chained(at);
        } else {
            self.emitter.exit(Exit::Jump, at);
        }
    }

    /// Translates one instruction, lowered as `lowering`; `true` when it ended the block.
    fn instruction(&mut self, i: &Instruction, lowering: Lowering) -> bool {
        match lowering {
            Lowering::Native => {
                if !self.native(i) {
                    self.leave_to_interpreter(i);
                    return true;
                }
            }
            Lowering::Lea => self.lea(i),
            Lowering::Nop => {}
            Lowering::Push => {
                self.emitter.flush(ALL_REGISTERS);
                self.push(i);
            }
            Lowering::PushFlags => {
                self.emitter.flush(ALL_REGISTERS);
                self.stack_store(i, Emitter::flags_image_into_rax);
            }
            Lowering::Pop => {
                self.emitter.flush(ALL_REGISTERS);
                self.pop(i);
            }
            Lowering::Jump => {
                self.emitter.spill_flags();
                self.jump_to(i.near_branch_target());
                return true;
            }
            Lowering::Branch if self.index + 1 < self.decoded => self.side_exit(i),
            Lowering::Branch => {
                self.branch(i);
                return true;
            }
            Lowering::Call => {
                self.emitter.flush(ALL_REGISTERS);
                self.push_value(i, i.next_ip());
                self.push_return(i.next_ip());
                self.jump_to(i.near_branch_target());
                return true;
            }
            Lowering::Return => {
                self.emitter.flush(ALL_REGISTERS);
                self.ret(i);
                return true;
            }
            Lowering::JumpIndirect => {
                self.emitter.flush(ALL_REGISTERS);
                self.target_into_rbx(i);
                self.leave_for_rbx();
                return true;
            }
            Lowering::CallIndirect => {
                self.emitter.flush(ALL_REGISTERS);
                self.target_into_rbx(i);
                self.push_value(i, i.next_ip());
                self.push_return(i.next_ip());
                self.leave_for_rbx();
                return true;
            }
            Lowering::RepStos | Lowering::RepMovs => {
                self.emitter.flush(ALL_REGISTERS);
                self.emitter.spill_flags();
                self.rep_string(i, lowering == Lowering::RepMovs);
            }
            Lowering::ReadTsc => self.read_tsc(),
            Lowering::ReadSelector => self.read_selector(i),
            Lowering::ReadControl => self.read_control(i),
            Lowering::SwapGs => dynasm!(self.emitter.ops
                ; .arch x64
                ; mov r12, QWORD [r15 + offset::GS_BASE]
                ; mov r13, QWORD [r15 + offset::KERNEL_GS_BASE]
                ; mov QWORD [r15 + offset::GS_BASE], r13
                ; mov QWORD [r15 + offset::KERNEL_GS_BASE], r12
            ),
            Lowering::Leave => {
                self.emitter.flush(ALL_REGISTERS);
                self.leave(i);
            }
            Lowering::SystemFlag { mask, set } => {
                self.emitter.spill_flags();
                let rflags = &mut self.emitter.ops;
                if set {
                    dynasm!(rflags ; .arch x64 ; or QWORD [r15 + offset::RFLAGS], mask);
                } else {
                    dynasm!(rflags ; .arch x64 ; and QWORD [r15 + offset::RFLAGS], !mask);
                }
                // EFLAGS.AC names the privilege context (under SMAP).
                if mask == RFLAGS_AC {
                    let at = self.after(i.next_ip());
                    self.emitter.exit(Exit::Dispatch, at);
                    return true;
                }
            }
            Lowering::Interpret => {
                self.leave_to_interpreter(i);
                return true;
            }
        }
        false
    }

    /// REP STOS or (`copy`) REP MOVS, run by the host's own instruction on host memory a
    /// page at a time, with DF clear: the elements up to the end of each operand's page, in
    /// RAM a store may reach directly, are done, RCX counts them off and RDI (and RSI) move
    /// past them; if elements are left, the block leaves for the instruction again, as an
    /// interrupt between two of its iterations would. Anything else (DF set, an element
    /// across two pages, a fault, device memory, a watched or code frame) leaves for the
    /// interpreter, which runs the instruction as it is. RCX 0 does nothing. Every register
    /// must have been flushed and the flags spilled; clobbers them all but RSP.
    fn rep_string(&mut self, i: &Instruction, copy: bool) {
        let shift = (i.memory_size().size() as u32).trailing_zeros() as i8;
        let at = self.before(i.ip());
        let done = self.emitter.ops.new_dynamic_label();
        let interpret = self.emitter.ops.new_dynamic_label();
        let more = self.emitter.ops.new_dynamic_label();
        let (count_at, source_at, destination_at, value_at) = (
            offset::gpr(1),
            offset::gpr(6),
            offset::gpr(7),
            offset::gpr(reg::RAX),
        );
        // This run: the elements left, as far as each operand's page goes (none when an
        // element would straddle two pages). EAX: the bytes to the end of the pages; RBP:
        // the run's bytes, which the slow-path helper keeps.
        dynasm!(self.emitter.ops
            ; .arch x64
            ; mov rcx, QWORD [r15 + count_at]
            ; test rcx, rcx
            ; jz =>done
            ; test DWORD [r15 + offset::RFLAGS], RFLAGS_DF
            ; jnz =>interpret
            ; mov eax, DWORD [r15 + destination_at]
            ; and eax, 0xfff
            ; neg eax
            ; add eax, 0x1000
        );
        if copy {
            dynasm!(self.emitter.ops
                ; .arch x64
                ; mov edx, DWORD [r15 + source_at]
                ; and edx, 0xfff
                ; neg edx
                ; add edx, 0x1000
                ; cmp edx, eax
                ; cmovb eax, edx
            );
        }
        dynasm!(self.emitter.ops
            ; .arch x64
            ; shr eax, shift
            ; jz =>interpret
            ; cmp rcx, rax
            ; cmova rcx, rax
            ; mov rbp, rcx
            ; shl rbp, shift
        );
        if copy {
            // The source's host address in RBX, which the slow-path helper keeps.
            dynasm!(self.emitter.ops ; .arch x64 ; mov r14, QWORD [r15 + source_at]);
            self.translate_run_address(i, 1, false, true);
            dynasm!(self.emitter.ops ; .arch x64 ; mov rbx, r14);
        }
        dynasm!(self.emitter.ops ; .arch x64 ; mov r14, QWORD [r15 + destination_at]);
        self.translate_run_address(i, 1, true, true);
        dynasm!(self.emitter.ops
            ; .arch x64
            ; mov rdi, r14
            ; mov rcx, rbp
            ; shr rcx, shift
        );
        if copy {
            dynasm!(self.emitter.ops ; .arch x64 ; mov rsi, rbx);
        } else {
            dynasm!(self.emitter.ops ; .arch x64 ; mov rax, QWORD [r15 + value_at]);
        }
        match (copy, shift) {
            (false, 0) => dynasm!(self.emitter.ops ; .arch x64 ; rep stosb),
            (false, 1) => dynasm!(self.emitter.ops ; .arch x64 ; rep stosw),
            (false, 2) => dynasm!(self.emitter.ops ; .arch x64 ; rep stosd),
            (false, _) => dynasm!(self.emitter.ops ; .arch x64 ; rep stosq),
            (true, 0) => dynasm!(self.emitter.ops ; .arch x64 ; rep movsb),
            (true, 1) => dynasm!(self.emitter.ops ; .arch x64 ; rep movsw),
            (true, 2) => dynasm!(self.emitter.ops ; .arch x64 ; rep movsd),
            (true, _) => dynasm!(self.emitter.ops ; .arch x64 ; rep movsq),
        }
        // The run done: the operands move past it, and RCX counts it off.
        dynasm!(self.emitter.ops
            ; .arch x64
            ; add QWORD [r15 + destination_at], rbp
        );
        if copy {
            dynasm!(self.emitter.ops ; .arch x64 ; add QWORD [r15 + source_at], rbp);
        }
        dynasm!(self.emitter.ops
            ; .arch x64
            ; shr rbp, shift
            ; sub QWORD [r15 + count_at], rbp
            ; jnz =>more
            ; jmp =>done
            ; =>interpret
        );
        self.emitter.exit_to_interpreter(at, None);
        // Elements are left on the next page: the instruction goes on from its start, as
        // after an interrupt (RIP at it, RCX, RSI and RDI where the run left them).
        dynasm!(self.emitter.ops ; .arch x64 ; =>more);
        self.leave_for(i.ip(), at);
        dynasm!(self.emitter.ops ; .arch x64 ; =>done);
    }

    /// MOV r, Sreg: the selector, zero-extended into a 32- or 64-bit register, or into the
    /// low 16 bits of one.
    fn read_selector(&mut self, i: &Instruction) {
        let dst = gpr_number(i.op0_register());
        let at = offset::selector(i.op1_register().number() as u8);
        if i.op0_register().size() == 2 {
            self.emitter.use_home(dst);
            dynasm!(self.emitter.ops ; .arch x64 ; mov Rw(dst), WORD [r15 + at]);
        } else {
            dynasm!(self.emitter.ops ; .arch x64 ; movzx Rd(dst), WORD [r15 + at]);
        }
        self.emitter.home_written(dst);
    }

    /// MOV r64, CRn: the copy of the control register in the context.
    fn read_control(&mut self, i: &Instruction) {
        let dst = gpr_number(i.op0_register());
        let at = offset::control_register(i.op1_register().number() as u8);
        dynasm!(self.emitter.ops ; .arch x64 ; mov Rq(dst), QWORD [r15 + at]);
        self.emitter.home_written(dst);
    }

    /// LEAVE: RBP <- the qword at RBP, RSP <- RBP + 8 (the load first: it may fault). Every
    /// register must have been flushed.
    fn leave(&mut self, i: &Instruction) {
        self.qword_load(i, reg::RBP, 0);
        dynasm!(self.emitter.ops
            ; .arch x64
            ; mov QWORD [r15 + offset::gpr(reg::RSP)], rcx
            ; mov QWORD [r15 + offset::gpr(reg::RBP)], rax
        );
    }

    /// RDTSC: EDX:EAX <- the host's time-stamp counter plus the guest's offset.
    fn read_tsc(&mut self) {
        self.emitter.spill_flags();
        dynasm!(self.emitter.ops
            ; .arch x64
            ; rdtsc
            ; shl rdx, 32
            ; or rax, rdx
            ; add rax, QWORD [r15 + offset::TSC_OFFSET]
            ; mov rdx, rax
            ; shr rdx, 32
            ; mov eax, eax
        );
        self.emitter.home_written(reg::RAX);
        self.emitter.home_written(reg::RDX);
    }

    /// Leaves the block for the interpreter to run `i`.
    fn leave_to_interpreter(&mut self, i: &Instruction) {
        self.emitter.spill_flags();
        let at = self.before(i.ip());
        self.emitter.exit_to_interpreter(at, Some(i.mnemonic()));
    }

    /// Leaves the block for the address in RBX (an indirect jump's target).
    fn leave_for_rbx(&mut self) {
        dynasm!(self.emitter.ops ; .arch x64 ; mov QWORD [r15 + offset::RIP], rbx);
        // The exit's RIP is the one just stored.
        let at = self.after(0);
        self.emitter.exit_stored_rip(Exit::Jump, at);
    }

    /// R14 <- the linear address of `i`'s memory operand (without a segment base for LEA).
    /// Flag-free: only MOV and LEA; clobbers R12.
    fn address_into_r14(&mut self, i: &Instruction, with_segment: bool) {
        let base = i.memory_base();
        let index = i.memory_index();
        // iced gives RIP- and EIP-relative operands' absolute address here, and the others'
        // displacement extended as their address size does.
        let disp = i.memory_displacement64();
        if matches!(base, Register::RIP | Register::EIP)
            || (base == Register::None && index == Register::None)
        {
            self.emitter.load_imm(reg::ADDRESS, disp);
        } else {
            let disp = disp as i64 as i32;
            let addr32 = is_addr32(i);
            let b = (base != Register::None).then(|| self.register_for_address(base, reg::ADDRESS));
            let x =
                (index != Register::None).then(|| self.register_for_address(index, reg::SCRATCH));
            let ops = &mut self.emitter.ops;
            match (b, x, i.memory_index_scale()) {
                (Some(b), Some(x), 1) => dynasm!(ops ; .arch x64 ; lea r14, [Rq(b) + Rq(x) + disp]),
                (Some(b), Some(x), 2) => {
                    dynasm!(ops ; .arch x64 ; lea r14, [Rq(b) + Rq(x) * 2 + disp])
                }
                (Some(b), Some(x), 4) => {
                    dynasm!(ops ; .arch x64 ; lea r14, [Rq(b) + Rq(x) * 4 + disp])
                }
                (Some(b), Some(x), _) => {
                    dynasm!(ops ; .arch x64 ; lea r14, [Rq(b) + Rq(x) * 8 + disp])
                }
                (None, Some(x), 1) => dynasm!(ops ; .arch x64 ; lea r14, [Rq(x) + disp]),
                (None, Some(x), 2) => dynasm!(ops ; .arch x64 ; lea r14, [Rq(x) * 2 + disp]),
                (None, Some(x), 4) => dynasm!(ops ; .arch x64 ; lea r14, [Rq(x) * 4 + disp]),
                (None, Some(x), _) => dynasm!(ops ; .arch x64 ; lea r14, [Rq(x) * 8 + disp]),
                (Some(b), None, _) if disp != 0 => {
                    dynasm!(ops ; .arch x64 ; lea r14, [Rq(b) + disp])
                }
                (Some(b), None, _) if b != reg::ADDRESS => {
                    dynasm!(ops ; .arch x64 ; mov r14, Rq(b))
                }
                _ => {}
            }
            if addr32 {
                // A 32-bit address wraps at 4 GiB.
                dynasm!(ops ; .arch x64 ; mov r14d, r14d);
            }
        }
        if with_segment {
            let segment_base = match i.memory_segment() {
                Register::FS => Some(offset::FS_BASE),
                Register::GS => Some(offset::GS_BASE),
                _ => None,
            };
            if let Some(at) = segment_base {
                dynasm!(self.emitter.ops
                    ; .arch x64
                    ; mov r12, QWORD [r15 + at]
                    ; lea r14, [r14 + r12]
                );
            }
        }
    }

    /// The host register holding guest register `r` for an address computation: its home
    /// (loaded if it was not), or, for a homeless one, `scratch` loaded from the context.
    fn register_for_address(&mut self, r: Register, scratch: u8) -> u8 {
        let n = gpr_number(r);
        if has_home(r) {
            self.emitter.use_home(n);
            n
        } else {
            self.emitter.load_gpr(scratch, n);
            scratch
        }
    }

    /// R14 <- the host address of `i`'s memory operand for a read or a `write` of `size`
    /// bytes, or an exit to the interpreter before `i`.
    fn access_into_r14(&mut self, i: &Instruction, size: u32, write: bool) {
        self.emitter.spill_flags();
        self.address_into_r14(i, true);
        if needs_alignment(i) {
            let at = self.before(i.ip());
            self.emitter.require_aligned_r14(16, at);
        }
        self.translate_address(i, size, write);
    }

    /// R14 <- the host address of the element of `i`'s bit string (BT, BTS, BTR or BTC on
    /// memory with a register offset) holding the bit, of `size` bytes, for a read or a
    /// `write`: the operand's address moved by the offset's signed element count; R13 <- the
    /// bit's offset in the element. Or an exit to the interpreter before `i`.
    fn bit_string_into_r14(&mut self, i: &Instruction, size: u32, write: bool) {
        self.emitter.spill_flags();
        self.address_into_r14(i, true);
        let offset = i.op1_register();
        let n = self.register_for_address(offset, reg::SCRATCH);
        let ops = &mut self.emitter.ops;
        match size {
            2 => {
                dynasm!(ops ; .arch x64 ; movsx r12, Rw(n) ; sar r12, 4 ; lea r14, [r14 + r12 * 2])
            }
            4 => {
                dynasm!(ops ; .arch x64 ; movsxd r12, Rd(n) ; sar r12, 5 ; lea r14, [r14 + r12 * 4])
            }
            _ => dynasm!(ops ; .arch x64 ; mov r12, Rq(n) ; sar r12, 6 ; lea r14, [r14 + r12 * 8]),
        }
        self.translate_address(i, size, write);
        let n = self.register_for_address(offset, reg::SCRATCH);
        dynasm!(self.emitter.ops
            ; .arch x64
            ; mov r13, Rq(n)
            ; and r13d, (size * 8 - 1) as i32
        );
    }

    /// The inline lookup for the address in R14, leaving before `i` on failure.
    fn translate_address(&mut self, i: &Instruction, size: u32, write: bool) {
        self.translate_run_address(i, size, write, false);
    }

    /// The inline lookup for the address in R14, of an access of `size` bytes or, with
    /// `run`, of a string instruction's elements, RBP bytes of them (see
    /// [`Emitter::translate_address`]), leaving before `i` on failure.
    fn translate_run_address(&mut self, i: &Instruction, size: u32, write: bool, run: bool) {
        let bit = if write {
            self.start.write_bit
        } else {
            self.start.read_bit
        };
        let exit = self.before(i.ip());
        self.emitter.translate_address(size, write, bit, run, exit);
        self.accesses += 1;
    }

    /// Re-encodes `i` for the host (see the module's documentation); `false` if it cannot be
    /// (a register the renaming cannot place), with nothing emitted.
    fn native(&mut self, i: &Instruction) -> bool {
        let Some(plan) = self.rename(i) else {
            return false;
        };
        if let Some((size, write)) = plan.memory {
            if is_bit_string(i) {
                self.bit_string_into_r14(i, size, write);
            } else {
                self.access_into_r14(i, size, write);
            }
        }
        if needs_carry_only(i) {
            self.emitter.load_carry();
        } else if needs_flags(i) {
            self.emitter.load_flags();
        }
        for planned in &plan.registers {
            let (host, guest) = (planned.host, planned.guest);
            if host != guest {
                // A homeless guest register, in a borrowed home for this instruction.
                self.emitter.flush(1 << host);
                if planned.read {
                    self.emitter.load_gpr(host, guest);
                }
            } else if planned.read {
                self.emitter.use_home(host);
            }
        }
        if !plan.xmm.is_empty() {
            dynasm!(self.emitter.ops ; .arch x64 ; mov r12, QWORD [r15 + offset::XMM]);
            for &(n, _) in &plan.xmm {
                dynasm!(self.emitter.ops ; .arch x64 ; movdqu Rx(n), [r12 + 16 * i32::from(n)]);
            }
        }
        if is_divide(i) {
            self.emitter.spill_flags();
            self.divide_guard(i, plan.first_register);
            // The flags DIV leaves undefined come out of the guest's, as the interpreter's do.
            self.emitter.load_flags();
        }
        let float = is_float(i);
        if float {
            // Under the guest's MXCSR, whose exceptions are all masked: its rounding, DAZ and
            // FTZ apply, and the flags raised accumulate in it.
            dynasm!(self.emitter.ops
                ; .arch x64
                ; mov r13, QWORD [r15 + offset::MXCSR]
                ; ldmxcsr [r13]
            );
        }
        self.emitter.ops.extend(plan.code);
        if float {
            dynasm!(self.emitter.ops
                ; .arch x64
                ; stmxcsr [r13]
                ; ldmxcsr [r15 + offset::HOST_MXCSR]
            );
        }
        for &(n, written) in &plan.xmm {
            if written {
                dynasm!(self.emitter.ops ; .arch x64 ; movdqu [r12 + 16 * i32::from(n)], Rx(n));
            }
        }
        for planned in &plan.registers {
            let (host, guest) = (planned.host, planned.guest);
            if host == guest {
                if planned.written {
                    self.emitter.home_written(host);
                }
            } else if planned.written {
                self.emitter.store_gpr(guest, host);
            }
        }
        if i.rflags_modified() != 0 || is_shift_or_rotate(i) {
            self.emitter.flags_written();
        }
        true
    }

    /// Leaves for the interpreter before the division `i` (DIV or IDIV on 32 or 64 bits)
    /// unless it cannot raise #DE: a divisor other than 0 and, for DIV, a high half of the
    /// dividend below it; for IDIV, a dividend that is its low half sign-extended, and not the
    /// most negative one divided by -1. (IDIV's other dividends may be fine too; the
    /// interpreter takes them.) `divisor` is the host register standing for the operand, or
    /// `None` when it is in memory at R14. The flags must be parked; clobbers R12 and R13.
    fn divide_guard(&mut self, i: &Instruction, divisor: Option<Register>) {
        let wide = i.memory_size().size() == 8 || divisor.is_some_and(|r| r.is_gpr64());
        let signed = i.mnemonic() == Mnemonic::Idiv;
        let fail = self.emitter.ops.new_dynamic_label();
        let ok = self.emitter.ops.new_dynamic_label();
        let ops = &mut self.emitter.ops;
        match (divisor, wide) {
            (Some(r), true) => dynasm!(ops ; .arch x64 ; mov r13, Rq(gpr_number(r))),
            (Some(r), false) => dynasm!(ops ; .arch x64 ; mov r13d, Rd(gpr_number(r))),
            (None, true) => dynasm!(ops ; .arch x64 ; mov r13, QWORD [r14]),
            (None, false) => dynasm!(ops ; .arch x64 ; mov r13d, DWORD [r14]),
        }
        match (signed, wide) {
            (false, true) => dynasm!(ops
                ; .arch x64
                ; test r13, r13
                ; jz =>fail
                ; cmp rdx, r13
                ; jae =>fail
                ; jmp =>ok
            ),
            (false, false) => dynasm!(ops
                ; .arch x64
                ; test r13d, r13d
                ; jz =>fail
                ; cmp edx, r13d
                ; jae =>fail
                ; jmp =>ok
            ),
            (true, true) => dynasm!(ops
                ; .arch x64
                ; test r13, r13
                ; jz =>fail
                ; mov r12, rax
                ; sar r12, 63
                ; cmp r12, rdx
                ; jne =>fail
                ; cmp r13, -1
                ; jne =>ok
                ; mov r12, QWORD i64::MIN
                ; cmp rax, r12
                ; jne =>ok
            ),
            (true, false) => dynasm!(ops
                ; .arch x64
                ; test r13d, r13d
                ; jz =>fail
                ; mov r12d, eax
                ; sar r12d, 31
                ; cmp r12d, edx
                ; jne =>fail
                ; cmp r13d, -1
                ; jne =>ok
                ; cmp eax, i32::MIN
                ; jne =>ok
            ),
        }
        dynasm!(self.emitter.ops ; .arch x64 ; =>fail);
        let at = self.before(i.ip());
        self.emitter.exit_to_interpreter(at, None);
        dynasm!(self.emitter.ops ; .arch x64 ; =>ok);
    }

    /// How `i` runs on the host: its registers renamed away from RSP, R14 and R15, its memory
    /// operand made `[r14]`, encoded.
    fn rename(&mut self, i: &Instruction) -> Option<NativePlan> {
        let reserved = |n: u8| HOMELESS_GUESTS & (1 << n) != 0;
        let mut used = 0u16;
        for r in self.info.info(i).used_registers() {
            if r.register().is_gpr() {
                used |= 1 << gpr_number(r.register());
            }
        }
        let mut host_of = [0u8; 16];
        for (n, slot) in host_of.iter_mut().enumerate() {
            *slot = n as u8;
        }
        let mut taken = used;
        let mut rewritten = *i;
        for n in 0..i.op_count() {
            if i.op_kind(n) != OpKind::Register {
                continue;
            }
            let r = i.op_register(n);
            if !r.is_gpr() {
                continue;
            }
            let guest = gpr_number(r);
            if reserved(guest) && host_of[usize::from(guest)] == guest {
                let free = (0..16u8).find(|&h| !reserved(h) && taken & (1 << h) == 0)?;
                taken |= 1 << free;
                host_of[usize::from(guest)] = free;
            }
            rewritten.set_op_register(n, same_kind(r, host_of[usize::from(guest)])?);
        }
        let memory = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
        let mut plan_memory = None;
        if memory {
            let write = self
                .info
                .info(i)
                .used_memory()
                .iter()
                .any(|m| !matches!(m.access(), OpAccess::Read | OpAccess::CondRead));
            plan_memory = Some((i.memory_size().size() as u32, write));
            rewritten.set_memory_base(Register::R14);
            rewritten.set_memory_index(Register::None);
            rewritten.set_memory_index_scale(1);
            rewritten.set_memory_displacement64(0);
            rewritten.set_memory_displ_size(0);
            rewritten.set_segment_prefix(Register::None);
        }
        // A bit string's offset, reduced to the element, is in R13 (set by
        // `bit_string_into_r14`).
        let bit_string = is_bit_string(i);
        if bit_string {
            rewritten.set_op1_register(same_kind(i.op1_register(), reg::SCRATCH2)?);
        }
        // A host register holds the guest register renamed to it, or its namesake.
        let guest_of = |host: u8| {
            (0..16u8)
                .find(|&g| g != host && host_of[usize::from(g)] == host)
                .unwrap_or(host)
        };
        let mut registers: Vec<PlannedRegister> = Vec::new();
        let mut xmm: Vec<(u8, bool)> = Vec::new();
        for r in self.info.info(&rewritten).used_registers() {
            let register = r.register();
            if register.is_xmm() {
                let written = !matches!(r.access(), OpAccess::Read | OpAccess::CondRead);
                let n = register.number() as u8;
                match xmm.iter_mut().find(|(x, _)| *x == n) {
                    Some(entry) => entry.1 |= written,
                    None => xmm.push((n, written)),
                }
                continue;
            }
            if !register.is_gpr() {
                continue;
            }
            let host = gpr_number(register);
            if (host == reg::ADDRESS && memory) || (host == reg::SCRATCH2 && bit_string) {
                continue;
            }
            if reserved(host) {
                return None;
            }
            let written = !matches!(
                r.access(),
                OpAccess::Read | OpAccess::CondRead | OpAccess::NoMemAccess
            );
            // A write of 32 or 64 bits replaces the whole register (32 bits zero-extend).
            let replaced = r.access() == OpAccess::Write && register.size() >= 4;
            match registers.iter_mut().find(|planned| planned.host == host) {
                Some(planned) => {
                    planned.read |= !replaced;
                    planned.written |= written;
                }
                None => registers.push(PlannedRegister {
                    host,
                    guest: guest_of(host),
                    read: !replaced,
                    written,
                }),
            }
        }
        let mut encoder = Encoder::new(64);
        encoder.encode(&rewritten, 0).ok()?;
        Some(NativePlan {
            code: encoder.take_buffer(),
            registers,
            xmm,
            memory: plan_memory,
            first_register: (rewritten.op0_kind() == OpKind::Register)
                .then(|| rewritten.op0_register()),
        })
    }

    /// LEA: the address, truncated to the operand size, into the destination.
    fn lea(&mut self, i: &Instruction) {
        self.address_into_r14(i, false);
        let dst = gpr_number(i.op0_register());
        let size = i.op0_register().size();
        if HOMELESS_GUESTS & (1 << dst) == 0 {
            if size == 2 {
                self.emitter.use_home(dst);
            }
            let ops = &mut self.emitter.ops;
            match size {
                8 => dynasm!(ops ; .arch x64 ; mov Rq(dst), r14),
                4 => dynasm!(ops ; .arch x64 ; mov Rd(dst), r14d),
                _ => dynasm!(ops ; .arch x64 ; mov Rw(dst), r14w),
            }
            self.emitter.home_written(dst);
            return;
        }
        let ops = &mut self.emitter.ops;
        match size {
            8 => dynasm!(ops ; .arch x64 ; mov QWORD [r15 + offset::gpr(dst)], r14),
            4 => dynasm!(ops
                ; .arch x64
                ; mov r14d, r14d
                ; mov QWORD [r15 + offset::gpr(dst)], r14
            ),
            _ => dynasm!(ops ; .arch x64 ; mov WORD [r15 + offset::gpr(dst)], r14w),
        }
    }

    /// PUSH r64 / imm.
    fn push(&mut self, i: &Instruction) {
        match i.op0_kind() {
            OpKind::Register => {
                let source = gpr_number(i.op0_register());
                self.stack_store(i, |e| e.load_gpr(reg::RAX, source));
            }
            OpKind::Memory => {
                // The operand first (its address uses RSP as it was), kept in the context
                // across the stack's lookup.
                self.emitter.spill_flags();
                self.address_into_r14(i, true);
                self.translate_address(i, 8, false);
                dynasm!(self.emitter.ops
                    ; .arch x64
                    ; mov r12, QWORD [r14]
                    ; mov QWORD [r15 + offset::HELD], r12
                );
                // The homes the address loaded are clean; the store takes RAX.
                self.emitter.flush(ALL_REGISTERS);
                self.stack_store(i, |e| {
                    dynasm!(e.ops ; .arch x64 ; mov rax, QWORD [r15 + offset::HELD]);
                });
            }
            _ => {
                let value = i.immediate(0);
                self.stack_store(i, |e| e.load_imm(reg::RAX, value));
            }
        }
    }

    /// Pushes `value` (a return address) for `i`.
    fn push_value(&mut self, i: &Instruction, value: u64) {
        self.stack_store(i, |e| e.load_imm(reg::RAX, value));
    }

    /// Pushes what `value` puts in RAX: the store first (it may fault), then RSP.
    fn stack_store(&mut self, i: &Instruction, value: impl FnOnce(&mut Emitter)) {
        self.emitter.spill_flags();
        let stack_pointer = offset::gpr(reg::RSP);
        dynasm!(self.emitter.ops
            ; .arch x64
            ; mov r14, QWORD [r15 + stack_pointer]
            ; lea r14, [r14 - 8]
        );
        self.translate_address(i, 8, true);
        value(&mut self.emitter);
        dynasm!(self.emitter.ops
            ; .arch x64
            ; mov QWORD [r14], rax
            ; mov rax, QWORD [r15 + stack_pointer]
            ; lea rax, [rax - 8]
            ; mov QWORD [r15 + stack_pointer], rax
        );
    }

    /// RAX <- the qword at the address in guest register `base` (in the context); RCX <- that
    /// address + 8 + `release`, not yet stored (with RSP: a pop, releasing `release` bytes
    /// more).
    fn qword_load(&mut self, i: &Instruction, base: u8, release: i32) {
        self.emitter.spill_flags();
        let at = offset::gpr(base);
        dynasm!(self.emitter.ops ; .arch x64 ; mov r14, QWORD [r15 + at]);
        self.translate_address(i, 8, false);
        dynasm!(self.emitter.ops
            ; .arch x64
            ; mov rax, QWORD [r14]
            ; mov rcx, QWORD [r15 + at]
            ; lea rcx, [rcx + (8 + release)]
        );
    }

    /// POP r64: RSP moves first, so that POP RSP loads the value popped.
    fn pop(&mut self, i: &Instruction) {
        self.qword_load(i, reg::RSP, 0);
        let dst = gpr_number(i.op0_register());
        dynasm!(self.emitter.ops
            ; .arch x64
            ; mov QWORD [r15 + offset::gpr(reg::RSP)], rcx
            ; mov QWORD [r15 + offset::gpr(dst)], rax
        );
    }

    /// RET: the return address must be canonical before anything changes.
    fn ret(&mut self, i: &Instruction) {
        let release = if i.op_count() == 0 {
            0
        } else {
            i32::from(i.immediate16())
        };
        self.qword_load(i, reg::RSP, release);
        dynasm!(self.emitter.ops ; .arch x64 ; mov rdx, rcx);
        self.emitter.require_canonical_rax(self.before(i.ip()));
        dynasm!(self.emitter.ops
            ; .arch x64
            ; mov QWORD [r15 + offset::gpr(reg::RSP)], rdx
            ; mov QWORD [r15 + offset::RIP], rax
        );
        let at = self.after(0);
        // In STI's shadow, back to the vCPU's loop, which delivers the interrupts pending.
        if self.in_sti_shadow {
            self.emitter.exit_stored_rip(Exit::Budget, at);
        } else {
            self.emitter.exit_return(at);
        }
    }

    /// Records the call just made on the return stack, with the way on to its return
    /// address `rip` ([`BlockTranslator::finish_returns`]); and, should the return not find
    /// it there, starts bringing the jump-cache entry for `rip` into the host's caches.
    fn push_return(&mut self, rip: u64) {
        let code = self.emitter.ops.new_dynamic_label();
        self.emitter.push_return(rip, code);
        self.emitter.prefetch_jump_entry(rip);
        self.returns.push((code, rip));
    }

    /// Emits the ways on to the return addresses of the block's calls, after its last exit:
    /// a return arrives with the flags parked and every register in the context, the block's
    /// instructions all run.
    fn finish_returns(&mut self) {
        for (code, rip) in std::mem::take(&mut self.returns) {
            dynasm!(self.emitter.ops ; .arch x64 ; =>code);
            self.emitter.flags = FlagState::PARKED;
            let at = ExitPoint {
                rip,
                unrun: 0,
                accesses: self.accesses,
                dirty: 0,
            };
            self.leave_for(rip, at);
        }
    }

    /// RBX <- the target of an indirect JMP or CALL, checked canonical (RBX is callee-saved:
    /// a slow-path call keeps it; every home was given up before).
    fn target_into_rbx(&mut self, i: &Instruction) {
        self.emitter.spill_flags();
        if i.op0_kind() == OpKind::Register {
            self.emitter
                .load_gpr(reg::RAX, gpr_number(i.op0_register()));
        } else {
            self.access_into_r14(i, 8, false);
            dynasm!(self.emitter.ops ; .arch x64 ; mov rax, QWORD [r14]);
        }
        self.emitter.require_canonical_rax(self.before(i.ip()));
        dynasm!(self.emitter.ops ; .arch x64 ; mov rbx, rax);
    }

    /// A conditional branch inside the block: the taken way leaves (its exit out of line, at
    /// the block's end), the other goes on in the block with the registers kept in their
    /// homes.
    fn side_exit(&mut self, i: &Instruction) {
        let cc = condition_number(i.condition_code());
        let taken = self.emitter.ops.new_dynamic_label();
        self.emitter.jump_on_flags(cc, taken);
        let target = i.near_branch_target();
        self.side_exits
            .push((taken, self.after(target), target, self.emitter.flags));
    }

    /// Emits the side exits' code, after the block's last exit: each parks the flags as its
    /// branch left them, then leaves.
    fn finish_side_exits(&mut self) {
        for (label, at, target, flags) in std::mem::take(&mut self.side_exits) {
            dynasm!(self.emitter.ops ; .arch x64 ; =>label);
            self.emitter.flags = flags;
            self.emitter.spill_flags();
            self.leave_for(target, at);
        }
    }

    /// Jcc at the block's end: both ways leave the block.
    fn branch(&mut self, i: &Instruction) {
        let cc = condition_number(i.condition_code());
        // Both ways leave: the context is brought up to date once, before the branch; but
        // for the way back to the start of a block that loops to itself.
        if !self.loops_back(i.near_branch_target()) {
            self.emitter.write_back(ALL_REGISTERS);
        }
        let taken = self.emitter.ops.new_dynamic_label();
        self.emitter.branch_on_flags(cc, taken);
        self.jump_to(i.next_ip());
        dynasm!(self.emitter.ops ; .arch x64 ; =>taken);
        self.jump_to(i.near_branch_target());
    }
}

/// Every guest register.
const ALL_REGISTERS: u16 = 0xffff;

/// Guest registers without a home (see [`crate::emitter`]).
const HOMELESS_GUESTS: u16 = crate::emitter::HOMELESS;

/// Whether general register `r` has a home (see [`crate::emitter`]).
fn has_home(r: Register) -> bool {
    HOMELESS_GUESTS & (1 << gpr_number(r)) == 0
}

/// Whether `i` computes addresses in 32 bits.
fn is_addr32(i: &Instruction) -> bool {
    let base = i.memory_base();
    let index = i.memory_index();
    base.is_gpr32() || index.is_gpr32() || base == Register::EIP
}

/// A condition's number in Jcc's opcode.
fn condition_number(cc: ConditionCode) -> u8 {
    cc as u8 - ConditionCode::o as u8
}

/// A general register a native instruction uses.
struct PlannedRegister {
    /// The host register.
    host: u8,
    /// The guest register it stands for.
    guest: u8,
    /// Whether the instruction reads its value: it must be loaded (false when the
    /// instruction only replaces it).
    read: bool,
    /// Whether the instruction writes it.
    written: bool,
}

/// How a natively run instruction is set up.
struct NativePlan {
    /// The host instruction.
    code: Vec<u8>,
    /// The general registers it uses.
    registers: Vec<PlannedRegister>,
    /// XMM registers (the same number on host and guest), and whether it writes each.
    xmm: Vec<(u8, bool)>,
    /// The memory operand's size, and whether it is written.
    memory: Option<(u32, bool)>,
    /// The host register that stands for the first operand, if it is a register.
    first_register: Option<Register>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::Formatter;

    /// The host code for `guest` (64-bit code at 0x10000) at CPL 0, one instruction per line.
    fn listing(guest: &[u8]) -> String {
        listing_at(guest, 1 << 3, 1 << 4)
    }

    /// The host code of `guest` in the privilege context of `read_bit` and `write_bit`.
    fn listing_at(guest: &[u8], read_bit: u16, write_bit: u16) -> String {
        let runtime = Runtime {
            exit: 0x7000_0000,
            slow_access: 0x7100_0000,
            jump_lookup: 0x7300_0000,
            tlb_lookup: std::array::from_fn(|n| 0x7200_0000 + n * 0x100),
        };
        let start = BlockStart {
            rip: 0x10000,
            read_bit,
            write_bit,
            sse: true,
            float: true,
        };
        let base = 0x6000_0000;
        let Translation::Block(block) = translate(guest, start, base, runtime) else {
            return "untranslated".into();
        };
        let mut decoder = Decoder::with_ip(64, &block.code, base as u64, DecoderOptions::NONE);
        let mut formatter = iced_x86::IntelFormatter::new();
        let mut text = String::new();
        for i in &mut decoder {
            let mut line = String::new();
            formatter.format(&i, &mut line);
            text += &format!("{:4x}  {line}\n", i.ip() - base as u64);
        }
        text
    }

    #[test]
    fn a_counting_loop_keeps_its_flags_in_the_host_until_the_branch() {
        // add rax, rcx; dec rdx; jnz -8 (back to the add): one block, chained to itself.
        let guest = [0x48, 0x01, 0xc8, 0x48, 0xff, 0xca, 0x75, 0xf8];
        insta::assert_snapshot!(listing(&guest));
    }

    #[test]
    fn loads_and_stores_call_the_shared_tlb_lookup() {
        // mov rax, [rdi+8]; add [rsi+rax*4], eax; int3 (left to the interpreter).
        let guest = [0x48, 0x8b, 0x47, 0x08, 0x01, 0x04, 0x86, 0xcc];
        insta::assert_snapshot!(listing(&guest));
    }

    #[test]
    fn user_code_looks_in_its_access_slots_before_the_tlb() {
        // mov rax, [rdi+8]; add [rsi+rax*4], eax; int3, at CPL 3.
        let guest = [0x48, 0x8b, 0x47, 0x08, 0x01, 0x04, 0x86, 0xcc];
        insta::assert_snapshot!(listing_at(&guest, 1, 1 << 1));
    }

    #[test]
    fn sse_instructions_run_on_the_host_with_the_guests_xmm_registers() {
        // movdqa xmm0, [rdi] (aligned: checked); pcmpeqb xmm0, xmm1; pmovmskb eax, xmm0; int3.
        let guest = [
            0x66, 0x0f, 0x6f, 0x07, 0x66, 0x0f, 0x74, 0xc1, 0x66, 0x0f, 0xd7, 0xc0, 0xcc,
        ];
        insta::assert_snapshot!(listing(&guest));
    }

    #[test]
    fn a_loop_with_a_branch_out_keeps_its_registers_and_leaves_on_the_branch_only() {
        // 0: cmp rax, rcx; jae +6 (out, to 0x11); add rax, rdx; inc rbx; jmp 0 (back).
        let guest = [
            0x48, 0x39, 0xc8, 0x73, 0x08, 0x48, 0x01, 0xd0, 0x48, 0xff, 0xc3, 0xeb, 0xf3,
        ];
        insta::assert_snapshot!(listing(&guest));
    }

    #[test]
    fn a_call_pushes_its_return_address_and_a_return_leaves_for_the_dispatcher() {
        // push rbx; call +0 (the next instruction, on this page).
        let guest = [0x53, 0xe8, 0x00, 0x00, 0x00, 0x00];
        insta::assert_snapshot!("call", listing(&guest));
        // pop rbx; ret.
        insta::assert_snapshot!("ret", listing(&[0x5b, 0xc3]));
    }
}
