//! Random instruction sequences, encoded with iced-x86.
//!
//! The instructions come from a catalogue of iced-x86 [`Code`]s: every legacy-encoded form
//! valid in the mode whose mnemonic is in [`MNEMONICS`] (the integer instructions the
//! interpreter implements, that CPL 3 may run) and whose operands the generator knows how to
//! fill. Operands are random, with two registers reserved so that the sequence keeps its
//! footing: rSP (so pushes and pops stay on the stack in the data region) and rBX, the base
//! register of every memory operand, which therefore never changes. A memory operand is
//! `rBX + displacement` (sometimes plus a random index register, sometimes RIP-relative,
//! sometimes with the other address size or a segment override) aimed at a chosen target:
//! mostly the read/write data region, sometimes the read-only, not-present or supervisor page
//! or the sequence's own read-only code, sometimes straddling a page boundary, so that page
//! faults and their error codes and CR2 are compared too. Branches jump forward, a few
//! instructions ahead inside the sequence, so every sequence ends. Divisions and string
//! instructions are sometimes prepared (rDX cleared, rSI/rDI/rCX pointed at the data), so that
//! they also run to completion instead of always faulting.

use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, EncodingKind, Instruction, MemoryOperand, Mnemonic,
    OpCodeOperandKind, Register, RepPrefixKind,
};

use super::layout::{
    self, CODE, CODE_SIZE, DATA, DATA_SIZE, Mode, NOT_PRESENT, RAM_SIZE, READ_ONLY, SUPERVISOR,
};
use super::rng::Rng;

/// The mnemonics sequences are made of: integer data movement, arithmetic, logic, shifts,
/// bit operations, conversions, flags, the stack, string operations and forward branches.
/// TZCNT is left out: the interpreter does not advertise BMI1, so it runs as BSF, whereas
/// the host has BMI1.
pub const MNEMONICS: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Add, Or, Adc, Sbb, And, Sub, Xor, Cmp, Test, Inc, Dec, Neg, Not, Rol, Ror, Rcl, Rcr, Shl,
        Sal, Shr, Sar, Shld, Shrd, Mul, Imul, Div, Idiv, Bt, Bts, Btr, Btc, Bsf, Bsr, Lzcnt,
        Popcnt, Movbe, Cmpxchg, Cmpxchg8b, Cmpxchg16b, Xadd, Xchg, Cmovo, Cmovno, Cmovb, Cmovae,
        Cmove, Cmovne, Cmovbe, Cmova, Cmovs, Cmovns, Cmovp, Cmovnp, Cmovl, Cmovge, Cmovle, Cmovg,
        Seto, Setno, Setb, Setae, Sete, Setne, Setbe, Seta, Sets, Setns, Setp, Setnp, Setl, Setge,
        Setle, Setg, Jo, Jno, Jb, Jae, Je, Jne, Jbe, Ja, Js, Jns, Jp, Jnp, Jl, Jge, Jle, Jg, Jmp,
        Loop, Loope, Loopne, Jcxz, Jecxz, Jrcxz, Lea, Mov, Movzx, Movsx, Movsxd, Cbw, Cwde, Cdqe,
        Cwd, Cdq, Cqo, Bswap, Push, Pop, Pusha, Pushad, Pushf, Pushfd, Pushfq, Popf, Popfd, Popfq,
        Movsb, Movsw, Movsd, Movsq, Stosb, Stosw, Stosd, Stosq, Lodsb, Lodsw, Lodsd, Lodsq, Cmpsb,
        Cmpsw, Cmpsd, Cmpsq, Scasb, Scasw, Scasd, Scasq, Lahf, Sahf, Clc, Stc, Cmc, Cld, Std, Nop,
        Xlatb, Daa, Das, Aaa, Aas, Aam, Aad,
    ]
};

/// Where memory operands point: rBX holds this linear address all through a sequence.
pub const BASE_POINTER: u64 = DATA + 0x1000;
/// Where the stack pointer starts: the middle of the data region's second page, with room
/// for pushes and pops either way.
pub const STACK_POINTER: u64 = DATA + 0x1800;

/// The register numbers of rSP and rBX, which random operands never write.
const RSP_INDEX: usize = 4;
const RBX_INDEX: usize = 3;
/// How far ahead a branch may jump, in instructions: few enough that a short branch always
/// reaches (6 instructions of at most 15 bytes are within a rel8's 127).
const MAX_BRANCH_DISTANCE: u64 = 6;

/// The generated sequence with its initial state.
#[derive(Clone, Debug)]
pub struct Sequence {
    /// The mode it runs in.
    pub mode: Mode,
    /// The seed it was made from: the same seed in the same mode makes it again.
    pub seed: u64,
    /// The code, placed at [`layout::CODE`], ending in INT3.
    pub code: Vec<u8>,
    /// The RIP of each instruction of the code, in order.
    pub starts: Vec<u64>,
    /// The initial register state.
    pub gpr: [u64; 16],
    /// The initial RFLAGS (arithmetic flags and DF; [`layout::RFLAGS_BASE`] is added).
    pub rflags: u64,
    /// The whole initial memory image.
    pub memory: Vec<u8>,
}

impl Sequence {
    /// The instructions of the code, decoded, with their RIPs. Each is decoded at its own
    /// start, so that an INT3 written over the first byte of one (see
    /// [`super::bisect::prefix`]) leaves the others as they were.
    pub fn instructions(&self) -> Vec<Instruction> {
        self.starts
            .iter()
            .map(|&start| {
                let offset = (start - self.mode.entry()) as usize;
                Decoder::with_ip(
                    self.mode.bitness(),
                    &self.code[offset..],
                    start,
                    DecoderOptions::NONE,
                )
                .decode()
            })
            .collect()
    }
}

/// The registers an operand of each size may name.
struct RegisterPools {
    r8: Vec<Register>,
    r16: Vec<Register>,
    r32: Vec<Register>,
    r64: Vec<Register>,
}

impl RegisterPools {
    /// The registers of `mode` that random operands may write: all but rSP and rBX (and
    /// their parts: SPL, BL, BH).
    fn new(mode: Mode) -> RegisterPools {
        use Register::*;
        let wide = mode == Mode::Long64;
        let pick = |all: &[Register]| -> Vec<Register> {
            all.iter()
                .enumerate()
                .filter(|&(n, _)| n != RSP_INDEX && n != RBX_INDEX && (wide || n < 8))
                .map(|(_, &r)| r)
                .collect()
        };
        let mut r8 = vec![AL, CL, DL, AH, CH, DH];
        if wide {
            r8.extend([BPL, SIL, DIL, R8L, R9L, R10L, R11L, R12L, R13L, R14L, R15L]);
        }
        RegisterPools {
            r8,
            r16: pick(&[
                AX, CX, DX, BX, SP, BP, SI, DI, R8W, R9W, R10W, R11W, R12W, R13W, R14W, R15W,
            ]),
            r32: pick(&[
                EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI, R8D, R9D, R10D, R11D, R12D, R13D, R14D,
                R15D,
            ]),
            r64: if wide {
                pick(&[
                    RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15,
                ])
            } else {
                Vec::new()
            },
        }
    }
}

/// An operand being chosen.
#[derive(Clone, Copy, Debug)]
enum Operand {
    Register(Register),
    Memory(MemoryOperand),
    Immediate(i64),
}

/// A body instruction before encoding: branches still name their target by index.
struct Pending {
    instruction: Instruction,
    /// For a branch: the index of the instruction it jumps to.
    target: Option<usize>,
}

/// Makes sequences for one mode.
pub struct Generator {
    mode: Mode,
    catalogue: Vec<Code>,
    pools: RegisterPools,
    image: Vec<u8>,
}

impl Generator {
    /// A generator for `mode`, with its catalogue of instruction forms.
    pub fn new(mode: Mode) -> Generator {
        let catalogue = Code::values().filter(|&code| usable(code, mode)).collect();
        Generator {
            mode,
            catalogue,
            pools: RegisterPools::new(mode),
            image: layout::memory_image(mode),
        }
    }

    /// The mode it makes sequences for.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The instruction forms sequences are drawn from.
    pub fn catalogue(&self) -> &[Code] {
        &self.catalogue
    }

    /// The sequence of `seed`.
    pub fn generate(&self, seed: u64) -> Sequence {
        let mut rng = Rng::new(seed ^ (self.mode.bitness() as u64) << 56);
        let length = 10 + rng.below(21) as usize;
        let mut body: Vec<Pending> = Vec::with_capacity(length + 8);
        while body.len() < length {
            self.push_random(&mut rng, &mut body);
        }
        let end = Instruction::with(Code::Int3);
        body.push(Pending {
            instruction: end,
            target: None,
        });
        let (code, starts) = self.encode(&body);

        let mut gpr: [u64; 16] = std::array::from_fn(|_| rng.interesting());
        if self.mode != Mode::Long64 {
            // Outside 64-bit mode only the low halves are architecturally visible.
            for value in &mut gpr {
                *value &= 0xffff_ffff;
            }
        }
        gpr[RSP_INDEX] = self.mode.data_offset(STACK_POINTER) - rng.below(4) * 2;
        gpr[RBX_INDEX] = self.mode.data_offset(BASE_POINTER);
        // CF, PF, AF, ZF, SF, OF and DF at random.
        let rflags = rng.next_u64() & 0x8d5;

        let mut memory = self.image.clone();
        for region in [DATA..READ_ONLY + 0x1000, SUPERVISOR..SUPERVISOR + 0x1000] {
            for byte in &mut memory[region.start as usize..region.end as usize] {
                *byte = rng.next_u64() as u8;
            }
        }
        memory[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
        debug_assert!(memory.len() == RAM_SIZE);
        Sequence {
            mode: self.mode,
            seed,
            code,
            starts,
            gpr,
            rflags,
            memory,
        }
    }

    /// Encodes the body at the mode's entry point, resolving branch targets: a first pass
    /// finds every instruction's address (a branch's length does not depend on its target),
    /// the second encodes the branches to them. Targets past the end land on the final INT3.
    /// Returns the code and the instructions' addresses.
    fn encode(&self, body: &[Pending]) -> (Vec<u8>, Vec<u64>) {
        let bitness = self.mode.bitness();
        let mut addresses = Vec::with_capacity(body.len());
        let mut address = self.mode.entry();
        for pending in body {
            addresses.push(address);
            let mut encoder = Encoder::new(bitness);
            let mut instruction = pending.instruction;
            if pending.target.is_some() {
                instruction.set_near_branch64(address);
            }
            address += encoder
                .encode(&instruction, address)
                .expect("every instruction was encoded on its own first")
                as u64;
        }
        let mut encoder = Encoder::new(bitness);
        for (pending, &address) in body.iter().zip(&addresses) {
            let mut instruction = pending.instruction;
            if let Some(target) = pending.target {
                instruction.set_near_branch64(addresses[target.min(body.len() - 1)]);
            }
            encoder
                .encode(&instruction, address)
                .expect("a forward branch within reach");
        }
        let code = encoder.take_buffer();
        assert!((code.len() as u64) < CODE_SIZE);
        (code, addresses)
    }

    /// Appends one random instruction, with what prepares it.
    fn push_random(&self, rng: &mut Rng, body: &mut Vec<Pending>) {
        let code = *rng.pick(&self.catalogue);
        let mnemonic = code.mnemonic();
        if is_string(mnemonic) {
            self.push_string(rng, code, body);
            return;
        }
        if matches!(mnemonic, Mnemonic::Div | Mnemonic::Idiv) && rng.percent(60) {
            self.prepare_division(rng, code, body);
        }
        let instruction = match self.instruction(rng, code) {
            Some(instruction) => instruction,
            None => return,
        };
        let target = code
            .op_code()
            .op_kinds()
            .iter()
            .any(|kind| is_branch(*kind))
            .then(|| body.len() + 1 + rng.below(MAX_BRANCH_DISTANCE) as usize);
        body.push(Pending {
            instruction,
            target,
        });
    }

    /// One instruction of form `code` with random operands, or `None` if this draw of
    /// operands does not encode (such as AH with a REX prefix).
    fn instruction(&self, rng: &mut Rng, code: Code) -> Option<Instruction> {
        let op_code = code.op_code();
        if code == Code::Xlat_m8 {
            let base = match self.mode {
                Mode::Long64 => Register::RBX,
                Mode::Compat32 => Register::EBX,
                Mode::Protected16 => Register::BX,
            };
            let memory = MemoryOperand::with_base_index(base, Register::AL);
            return Instruction::with1(code, memory).ok();
        }
        let memory_size = Instruction::with(code).memory_size().size() as u64;
        let operands: Vec<Operand> = op_code
            .op_kinds()
            .iter()
            .map(|&kind| self.operand(rng, code, kind, memory_size))
            .collect();
        let mut instruction = build(code, &operands)?;
        let lock = rng.percent(2) || (lockable(mnemonic_of(code)) && rng.percent(20));
        if lock && !super::deviations::lock_excluded(self.mode, code) {
            instruction.set_has_lock_prefix(true);
        }
        // Check that it encodes on its own (a branch, to itself), so the whole sequence does,
        // and that the bytes decode back to the same form: POP CS, which only the 8086 has,
        // encodes as a lone 0F that this processor reads as the first byte of whatever
        // follows. The check decodes without iced-x86's validity checks, so that a LOCK
        // prefix on a form that does not take it stays in (its #UD is compared too).
        let mut probe = instruction;
        if op_code.op_kinds().iter().any(|kind| is_branch(*kind)) {
            probe.set_near_branch64(self.mode.entry());
        }
        let mut encoder = Encoder::new(self.mode.bitness());
        let length = encoder.encode(&probe, self.mode.entry()).ok()?;
        let bytes = encoder.take_buffer();
        let decoded = Decoder::with_ip(
            self.mode.bitness(),
            &bytes,
            self.mode.entry(),
            DecoderOptions::NO_INVALID_CHECK,
        )
        .decode();
        (decoded.code() == code && decoded.len() == length).then_some(instruction)
    }

    /// A random operand of `kind` for `code`.
    fn operand(&self, rng: &mut Rng, code: Code, kind: OpCodeOperandKind, size: u64) -> Operand {
        use OpCodeOperandKind as K;
        let register = |pool: &[Register], rng: &mut Rng| Operand::Register(*rng.pick(pool));
        match kind {
            K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem if rng.percent(40) => {
                Operand::Memory(self.memory_operand(rng, code, size))
            }
            K::mem => Operand::Memory(self.memory_operand(rng, code, size)),
            K::r8_or_mem | K::r8_reg | K::r8_opcode => register(&self.pools.r8, rng),
            K::r16_or_mem | K::r16_reg | K::r16_rm | K::r16_opcode => {
                register(&self.pools.r16, rng)
            }
            K::r32_or_mem | K::r32_reg | K::r32_rm | K::r32_opcode => {
                register(&self.pools.r32, rng)
            }
            K::r64_or_mem | K::r64_reg | K::r64_rm | K::r64_opcode => {
                register(&self.pools.r64, rng)
            }
            K::al => Operand::Register(Register::AL),
            K::cl => Operand::Register(Register::CL),
            K::ax => Operand::Register(Register::AX),
            K::dx => Operand::Register(Register::DX),
            K::eax => Operand::Register(Register::EAX),
            K::rax => Operand::Register(Register::RAX),
            K::es => Operand::Register(Register::ES),
            K::cs => Operand::Register(Register::CS),
            K::ss => Operand::Register(Register::SS),
            K::ds => Operand::Register(Register::DS),
            K::fs => Operand::Register(Register::FS),
            K::gs => Operand::Register(Register::GS),
            K::imm8_const_1 => Operand::Immediate(1),
            K::imm8 if is_shift(code.mnemonic()) => Operand::Immediate(match rng.below(4) {
                0 => rng.below(256) as i64,
                _ => rng.below(70) as i64,
            }),
            K::imm8 if matches!(code.mnemonic(), Mnemonic::Aam | Mnemonic::Aad) => {
                Operand::Immediate(if rng.percent(10) {
                    0
                } else {
                    rng.below(256) as i64
                })
            }
            K::imm8 => Operand::Immediate(rng.below(256) as i64 - 128),
            K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => {
                Operand::Immediate(rng.interesting() as i8 as i64)
            }
            K::imm16 => Operand::Immediate(rng.interesting() as i16 as i64),
            K::imm32 | K::imm32sex64 => Operand::Immediate(rng.interesting() as i32 as i64),
            K::imm64 => Operand::Immediate(rng.interesting() as i64),
            // Branch displacements are filled in when the block is encoded.
            _ => Operand::Immediate(0),
        }
    }

    /// A memory operand aimed at a random target.
    fn memory_operand(&self, rng: &mut Rng, code: Code, size: u64) -> MemoryOperand {
        let size = size.max(1);
        let alignment = if code == Code::Cmpxchg16b_m128 && rng.percent(80) {
            16
        } else if rng.percent(50) {
            size.next_power_of_two().min(8)
        } else {
            1
        };
        let target = memory_target(rng, size, alignment);
        let displacement = target as i64 - BASE_POINTER as i64;
        let segment = if rng.percent(5) {
            *rng.pick(&[
                Register::ES,
                Register::CS,
                Register::SS,
                Register::DS,
                Register::FS,
                Register::GS,
            ])
        } else {
            Register::None
        };
        let other_address_size = rng.percent(8);
        let (base, index_pool): (Register, &[Register]) = match (self.mode, other_address_size) {
            (Mode::Long64, false) => (Register::RBX, &self.pools.r64),
            (Mode::Long64, true) | (Mode::Compat32, false) | (Mode::Protected16, true) => {
                (Register::EBX, &self.pools.r32)
            }
            (Mode::Compat32, true) | (Mode::Protected16, false) => (Register::BX, &[]),
        };
        if self.mode == Mode::Long64 && rng.percent(10) {
            // RIP-relative: the encoder turns the absolute target into a displacement.
            return MemoryOperand::new(
                Register::RIP,
                Register::None,
                1,
                target as i64,
                1,
                false,
                segment,
            );
        }
        if base == Register::BX {
            // 16-bit addressing: [BX + disp16], sometimes [BX + SI/DI + disp16].
            let index = if rng.percent(10) {
                *rng.pick(&[Register::SI, Register::DI])
            } else {
                Register::None
            };
            let displacement = displacement as i16 as i64;
            return MemoryOperand::new(base, index, 1, displacement, 1, false, segment);
        }
        let (index, scale) = if rng.percent(5) && !index_pool.is_empty() {
            (*rng.pick(index_pool), *rng.pick(&[1, 2, 4, 8]))
        } else {
            (Register::None, 1)
        };
        MemoryOperand::new(base, index, scale, displacement, 1, false, segment)
    }

    /// Clears or sign-extends into the high half of a division's dividend, so that the
    /// quotient often fits.
    fn prepare_division(&self, rng: &mut Rng, code: Code, body: &mut Vec<Pending>) {
        let size = Instruction::with(code).op0_register().size();
        let size = if size == 0 {
            Instruction::with(code).memory_size().size()
        } else {
            size
        };
        let signed = code.mnemonic() == Mnemonic::Idiv && rng.percent(70);
        let instruction = match (size, signed) {
            (1, false) => Instruction::with2(Code::Mov_r8_imm8, Register::AH, 0i64),
            (1, true) => Ok(Instruction::with(Code::Cbw)),
            (2, false) => Instruction::with2(Code::Xor_r16_rm16, Register::DX, Register::DX),
            (2, true) => Ok(Instruction::with(Code::Cwd)),
            (4, false) => Instruction::with2(Code::Xor_r32_rm32, Register::EDX, Register::EDX),
            (4, true) => Ok(Instruction::with(Code::Cdq)),
            (_, false) => Instruction::with2(Code::Xor_r64_rm64, Register::RDX, Register::RDX),
            (_, true) => Ok(Instruction::with(Code::Cqo)),
        };
        if let Ok(instruction) = instruction {
            body.push(Pending {
                instruction,
                target: None,
            });
        }
    }

    /// A string instruction, usually with rSI, rDI (and with REP, rCX) pointed at the data.
    fn push_string(&self, rng: &mut Rng, code: Code, body: &mut Vec<Pending>) {
        let bitness = self.mode.bitness();
        let address_size = if rng.percent(10) {
            match bitness {
                64 => 32,
                32 => 16,
                _ => 32,
            }
        } else {
            bitness
        };
        let rep = match rng.below(3) {
            0 => RepPrefixKind::None,
            1 => RepPrefixKind::Repe,
            _ => RepPrefixKind::Repne,
        };
        if rng.percent(90) {
            let (si, di, cx, mov) = match address_size {
                16 => (
                    Register::SI,
                    Register::DI,
                    Register::CX,
                    Code::Mov_r16_imm16,
                ),
                _ => (
                    Register::ESI,
                    Register::EDI,
                    Register::ECX,
                    Code::Mov_r32_imm32,
                ),
            };
            let pointer = |rng: &mut Rng| {
                let linear = memory_target(rng, 8, 1);
                self.mode.data_offset(linear.max(self.mode.data_base())) as i64
            };
            let source = pointer(rng);
            let destination = pointer(rng);
            let count = rng.below(9) as i64;
            for (register, value) in [(si, source), (di, destination), (cx, count)] {
                // A 16-bit pointer in a 32-bit address space points low; let it.
                let value = if mov == Code::Mov_r16_imm16 {
                    value as u16 as i64
                } else {
                    value
                };
                if let Ok(instruction) = Instruction::with2(mov, register, value) {
                    body.push(Pending {
                        instruction,
                        target: None,
                    });
                }
            }
        }
        let segment = if rng.percent(10) {
            Register::FS
        } else {
            Register::None
        };
        if let Some(instruction) = string_instruction(code, address_size, segment, rep) {
            body.push(Pending {
                instruction,
                target: None,
            });
        }
    }
}

/// A linear address for an access of `size` bytes, aligned to `alignment` where it lands in
/// one of the regions.
fn memory_target(rng: &mut Rng, size: u64, alignment: u64) -> u64 {
    let inside = |rng: &mut Rng, start: u64, len: u64| {
        let offset = rng.below(len - size.min(len) + 1);
        start + offset / alignment * alignment
    };
    match rng.below(100) {
        0..80 => inside(rng, DATA, DATA_SIZE),
        80..85 => inside(rng, READ_ONLY, 0x1000),
        85..89 => inside(rng, NOT_PRESENT, 0x1000),
        89..92 => inside(rng, SUPERVISOR, 0x1000),
        92..97 => {
            // Straddle a page boundary: data into read-only, or the two data pages. Not into
            // a page that faults when the first does too: which of two faulting pages a
            // split access reports is not architectural (this host's processor reports the
            // second page's fault, the interpreter the first's).
            let boundary = *rng.pick(&[DATA + 0x1000, READ_ONLY]);
            boundary - 1 - rng.below(size.max(2) - 1)
        }
        _ => inside(rng, CODE, 0x100),
    }
}

/// Whether `code` can be generated in `mode`.
fn usable(code: Code, mode: Mode) -> bool {
    let op_code = code.op_code();
    let in_mode = match mode {
        Mode::Long64 => op_code.mode64(),
        Mode::Compat32 => op_code.mode32(),
        Mode::Protected16 => op_code.mode16(),
    };
    // Forms that iced-x86 decodes only with a decoder option are those of old or other
    // processors (the 486's early CMPXCHG at 0F A6/A7): #UD or another instruction here.
    if !op_code.is_instruction()
        || op_code.decoder_option() != DecoderOptions::NONE
        || op_code.encoding() != EncodingKind::Legacy
        || !in_mode
        || !MNEMONICS.contains(&code.mnemonic())
        || super::deviations::excluded(mode, code)
    {
        return false;
    }
    let kinds = op_code.op_kinds();
    if code.mnemonic() == Mnemonic::Jmp && !kinds.iter().any(|&kind| is_branch(kind)) {
        // Indirect and far jumps would go anywhere.
        return false;
    }
    if kinds.iter().any(|&kind| is_branch(kind)) {
        // Branches with the mode's own operand size: others truncate the target.
        let size = op_code.operand_size();
        return size == mode.bitness() || (size == 0 && mode != Mode::Long64);
    }
    if is_string(code.mnemonic()) || code == Code::Xlat_m8 {
        return true;
    }
    if vendor_specific(code, mode) {
        return false;
    }
    kinds.iter().all(|&kind| supported(kind))
}

/// Forms whose result the SDM leaves to the processor, where Intel's (which the
/// interpreter, presenting itself as an Intel CPU, follows) and AMD's differ, so an AMD
/// host is no oracle:
/// - PUSH of a segment register with a 32- or 64-bit operand size: recent Intel processors
///   store the selector's 16 bits, AMD's the zero-extended selector in the whole slot;
/// - CMPXCHG with a 32-bit register destination in 64-bit mode: Intel writes the destination
///   back when the comparison fails (zero-extending it), AMD leaves it alone.
fn vendor_specific(code: Code, mode: Mode) -> bool {
    let op_code = code.op_code();
    let kinds = op_code.op_kinds();
    let segment_push = code.mnemonic() == Mnemonic::Push
        && kinds.iter().any(|&kind| is_segment(kind))
        && op_code.operand_size() != 16;
    let wide_cmpxchg = code == Code::Cmpxchg_rm32_r32 && mode == Mode::Long64;
    segment_push || wide_cmpxchg
}

/// Operand kinds [`Generator::operand`] fills.
fn supported(kind: OpCodeOperandKind) -> bool {
    use OpCodeOperandKind as K;
    matches!(
        kind,
        K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::mem
            | K::r8_reg
            | K::r8_opcode
            | K::r16_reg
            | K::r16_rm
            | K::r16_opcode
            | K::r32_reg
            | K::r32_rm
            | K::r32_opcode
            | K::r64_reg
            | K::r64_rm
            | K::r64_opcode
            | K::al
            | K::cl
            | K::ax
            | K::eax
            | K::rax
            | K::es
            | K::cs
            | K::ss
            | K::ds
            | K::fs
            | K::gs
            | K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm8sex64
            | K::imm16
            | K::imm32
            | K::imm32sex64
            | K::imm64
    )
}

/// A segment register operand.
pub(super) fn is_segment(kind: OpCodeOperandKind) -> bool {
    use OpCodeOperandKind as K;
    matches!(kind, K::es | K::cs | K::ss | K::ds | K::fs | K::gs)
}

/// A relative branch operand.
fn is_branch(kind: OpCodeOperandKind) -> bool {
    use OpCodeOperandKind as K;
    matches!(
        kind,
        K::br16_1 | K::br32_1 | K::br64_1 | K::br16_2 | K::br32_4 | K::br64_4
    )
}

fn is_shift(mnemonic: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        mnemonic,
        Rol | Ror | Rcl | Rcr | Shl | Sal | Shr | Sar | Shld | Shrd
    )
}

fn is_string(mnemonic: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        mnemonic,
        Movsb
            | Movsw
            | Movsd
            | Movsq
            | Stosb
            | Stosw
            | Stosd
            | Stosq
            | Lodsb
            | Lodsw
            | Lodsd
            | Lodsq
            | Cmpsb
            | Cmpsw
            | Cmpsd
            | Cmpsq
            | Scasb
            | Scasw
            | Scasd
            | Scasq
    )
}

fn mnemonic_of(code: Code) -> Mnemonic {
    code.mnemonic()
}

/// The instructions a LOCK prefix may precede.
fn lockable(mnemonic: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        mnemonic,
        Add | Adc
            | And
            | Btc
            | Btr
            | Bts
            | Cmpxchg
            | Cmpxchg8b
            | Cmpxchg16b
            | Dec
            | Inc
            | Neg
            | Not
            | Or
            | Sbb
            | Sub
            | Xor
            | Xadd
            | Xchg
    )
}

/// Builds `code` with `operands`, through iced-x86's typed constructors.
fn build(code: Code, operands: &[Operand]) -> Option<Instruction> {
    use Operand::*;
    let result = match *operands {
        [] => Ok(Instruction::with(code)),
        [Register(a)] => Instruction::with1(code, a),
        [Memory(a)] => Instruction::with1(code, a),
        [Immediate(_)] if is_branch(code.op_code().op_kind(0)) => Instruction::with_branch(code, 0),
        [Immediate(a)] => Instruction::with1(code, a as i32),
        [Register(a), Register(b)] => Instruction::with2(code, a, b),
        [Register(a), Memory(b)] => Instruction::with2(code, a, b),
        [Memory(a), Register(b)] => Instruction::with2(code, a, b),
        [Register(a), Immediate(b)] => Instruction::with2(code, a, b),
        [Memory(a), Immediate(b)] => Instruction::with2(code, a, b as i32),
        [Immediate(a), Register(b)] => Instruction::with2(code, a as i32, b),
        [Register(a), Register(b), Register(c)] => Instruction::with3(code, a, b, c),
        [Register(a), Register(b), Immediate(c)] => Instruction::with3(code, a, b, c as i32),
        [Register(a), Memory(b), Immediate(c)] => Instruction::with3(code, a, b, c as i32),
        [Memory(a), Register(b), Register(c)] => Instruction::with3(code, a, b, c),
        [Memory(a), Register(b), Immediate(c)] => Instruction::with3(code, a, b, c as i32),
        _ => return None,
    };
    result.ok()
}

/// A string instruction of form `code`.
fn string_instruction(
    code: Code,
    address_size: u32,
    segment: Register,
    rep: RepPrefixKind,
) -> Option<Instruction> {
    use Mnemonic::*;
    // MOVS, STOS and LODS take REP only (REPNE acts as REP on them, but iced-x86 names one).
    let plain_rep = if rep == RepPrefixKind::None {
        RepPrefixKind::None
    } else {
        RepPrefixKind::Repe
    };
    let result = match code.mnemonic() {
        Movsb => Instruction::with_movsb(address_size, segment, plain_rep),
        Movsw => Instruction::with_movsw(address_size, segment, plain_rep),
        Movsd => Instruction::with_movsd(address_size, segment, plain_rep),
        Movsq => Instruction::with_movsq(address_size, segment, plain_rep),
        Stosb => Instruction::with_stosb(address_size, plain_rep),
        Stosw => Instruction::with_stosw(address_size, plain_rep),
        Stosd => Instruction::with_stosd(address_size, plain_rep),
        Stosq => Instruction::with_stosq(address_size, plain_rep),
        Lodsb => Instruction::with_lodsb(address_size, segment, plain_rep),
        Lodsw => Instruction::with_lodsw(address_size, segment, plain_rep),
        Lodsd => Instruction::with_lodsd(address_size, segment, plain_rep),
        Lodsq => Instruction::with_lodsq(address_size, segment, plain_rep),
        Cmpsb => Instruction::with_cmpsb(address_size, segment, rep),
        Cmpsw => Instruction::with_cmpsw(address_size, segment, rep),
        Cmpsd => Instruction::with_cmpsd(address_size, segment, rep),
        Cmpsq => Instruction::with_cmpsq(address_size, segment, rep),
        Scasb => Instruction::with_scasb(address_size, rep),
        Scasw => Instruction::with_scasw(address_size, rep),
        Scasd => Instruction::with_scasd(address_size, rep),
        Scasq => Instruction::with_scasq(address_size, rep),
        _ => return None,
    };
    result.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_end_with_int3() {
        for mode in Mode::ALL {
            let generator = Generator::new(mode);
            assert!(generator.catalogue().len() > 100, "{mode}");
            for seed in 0..200 {
                let sequence = generator.generate(seed);
                assert_eq!(sequence.code.last(), Some(&0xcc), "{mode} seed {seed}");
                assert!(sequence.instructions().len() >= 10, "{mode} seed {seed}");
                assert_eq!(generator.generate(seed).code, sequence.code);
            }
        }
    }
}
