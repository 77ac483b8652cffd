//! Comparing what two backends left: how the run ended, the registers, the frame the final
//! exception pushed (which holds the sequence's last RIP, RFLAGS and RSP), CR2 after a page
//! fault, and all of memory.
//!
//! Flags the SDM leaves undefined are compared like the others: the interpreter computes
//! arithmetic flags by running the same instruction on the host, and under PVM a 64-bit CPL 3
//! sequence runs natively on that same host, so even undefined flags agree. Where they
//! cannot, [`UNDEFINED_FLAGS`] lists the instruction and the flags to mask, each with its
//! reason; a flag is masked only while the last instruction that wrote it is one listed, and
//! a run is compared only up to the first instruction that reads a masked flag (see
//! [`undefined_flags`]). [`flags_after_fault`] names the one fault whose flags processors
//! leave differently.

use iced_x86::{Instruction, Mnemonic, RflagsBits};
use umbra_cpu::state::{Registers, Segment};

use super::layout::{KERNEL_STACK_TOP, Mode, RAM_SIZE};
use super::machine::{End, Snapshot};

/// Instructions whose undefined flags the two backends leave differently, and why. Every
/// other generated instruction's undefined flags have been seen to agree.
pub const UNDEFINED_FLAGS: &[(Mnemonic, u64, &str)] = &[(
    Mnemonic::Das,
    OF,
    "KVM's instruction emulator, which runs every DAS (an instruction invalid in 64-bit \
     mode), clears the OF that the SDM leaves undefined; the interpreter sets it as the \
     host's processors do, as the subtraction of the adjustment does",
)];

/// RFLAGS bits.
const CF: u64 = 1 << 0;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const IF: u64 = 1 << 9;
const DF: u64 = 1 << 10;
const OF: u64 = 1 << 11;
const AC: u64 = 1 << 18;

/// iced-x86's [`RflagsBits`], which number the flags their own way, as RFLAGS bits.
fn rflags_bits(iced: u32) -> u64 {
    [
        (RflagsBits::CF, CF),
        (RflagsBits::PF, PF),
        (RflagsBits::AF, AF),
        (RflagsBits::ZF, ZF),
        (RflagsBits::SF, SF),
        (RflagsBits::IF, IF),
        (RflagsBits::DF, DF),
        (RflagsBits::OF, OF),
        (RflagsBits::AC, AC),
    ]
    .into_iter()
    .filter(|&(bit, _)| iced & bit != 0)
    .fold(0, |flags, (_, flag)| flags | flag)
}

/// What the flags of [`UNDEFINED_FLAGS`] come to in a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct UndefinedFlags {
    /// The flags still undefined at the end: left by an instruction of [`UNDEFINED_FLAGS`],
    /// not written since.
    pub flags: u64,
    /// The first instruction that read a flag while it was undefined, if one did: what it
    /// and everything after it do may depend on that flag, so the run is no oracle past it.
    pub read_by: Option<Instruction>,
}

/// The flags that processors leave differently when `instruction` faults: after some
/// iterations of a REPE or REPNE CMPS or SCAS, the SDM puts RFLAGS back as it was before the
/// instruction (as the interpreter, presenting itself as an Intel processor, does), where this
/// host's AMD processor leaves the flags of a later iteration (and KVM's instruction emulator
/// those of the last time it returned to the guest, every 1024 iterations).
pub fn flags_after_fault(instruction: &Instruction) -> u64 {
    use Mnemonic::*;
    let repeated = instruction.has_rep_prefix() || instruction.has_repne_prefix();
    let compares = matches!(
        instruction.mnemonic(),
        Cmpsb | Cmpsw | Cmpsd | Cmpsq | Scasb | Scasw | Scasd | Scasq
    );
    if repeated && compares {
        OF | SF | ZF | AF | PF | CF
    } else {
        0
    }
}

/// The undefined flags of a run: `completed` are the instructions it completed, in order,
/// `faulted` the one whose fault ended it, if one did (it changed no flag itself, but see
/// [`flags_after_fault`]).
pub fn undefined_flags(completed: &[Instruction], faulted: Option<&Instruction>) -> UndefinedFlags {
    undefined_flags_of(completed, faulted, |instruction| {
        UNDEFINED_FLAGS
            .iter()
            .find(|(mnemonic, _, _)| *mnemonic == instruction.mnemonic())
            .map_or(0, |(_, flags, _)| *flags)
    })
}

/// [`undefined_flags`] with every flag the SDM leaves undefined masked, for comparing two
/// runs of which neither is the processor (the interpreter and the JIT, which runs
/// instructions on the host).
pub fn sdm_undefined_flags(
    completed: &[Instruction],
    faulted: Option<&Instruction>,
) -> UndefinedFlags {
    undefined_flags_of(completed, faulted, |instruction| {
        rflags_bits(instruction.rflags_undefined())
    })
}

/// The undefined flags of a run, where `masked` gives the flags each instruction leaves
/// undefined.
fn undefined_flags_of(
    completed: &[Instruction],
    faulted: Option<&Instruction>,
    masked: impl Fn(&Instruction) -> u64,
) -> UndefinedFlags {
    let mut flags = 0;
    for instruction in completed {
        if rflags_bits(instruction.rflags_read()) & flags != 0 {
            return UndefinedFlags {
                flags,
                read_by: Some(*instruction),
            };
        }
        let masked = masked(instruction);
        // A flag the SDM leaves undefined after the instruction is, on the host's processor,
        // often the one it had (BT's OF, for one): it stays masked.
        let written = if may_leave_flags(instruction) {
            0
        } else {
            rflags_bits(instruction.rflags_modified() & !instruction.rflags_undefined())
        };
        flags = (flags & !written) | masked;
    }
    UndefinedFlags {
        flags: flags | faulted.map_or(0, flags_after_fault),
        read_by: None,
    }
}

/// Whether `instruction` may leave every flag as it was, which iced-x86's flag lists do not
/// say: a shift or rotate whose count may be 0 after masking (a count in CL, or an immediate
/// that masks to 0), a REP-prefixed CMPS or SCAS, which does nothing when rCX is 0.
fn may_leave_flags(instruction: &Instruction) -> bool {
    use Mnemonic::*;
    match instruction.mnemonic() {
        Rol | Ror | Rcl | Rcr | Shl | Sal | Shr | Sar | Shld | Shrd => {
            let count = instruction.op_count() - 1;
            let mask = if instruction.op0_register().size() == 8
                || instruction.memory_size().size() == 8
            {
                0x3f
            } else {
                0x1f
            };
            // Not an immediate: the count is in CL.
            instruction
                .try_immediate(count)
                .map_or(true, |count| count & mask == 0)
        }
        Cmpsb | Cmpsw | Cmpsd | Cmpsq | Scasb | Scasw | Scasd | Scasq => {
            instruction.has_rep_prefix() || instruction.has_repne_prefix()
        }
        _ => false,
    }
}

/// A value that differs: a register or field, a run of memory bytes, or how a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A register or a field of a frame.
    Number(u64),
    /// Bytes of memory, in address order.
    Bytes(Vec<u8>),
    /// How a run ended.
    End(End),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n:#x}"),
            Value::Bytes(bytes) => bytes.iter().try_for_each(|b| write!(f, "{b:02x}")),
            Value::End(end) => end.fmt(f),
        }
    }
}

/// One thing that differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// What it is: a register's name, `memory 0x20010`, `frame rflags`.
    pub what: String,
    /// KVM's value.
    pub kvm: Value,
    /// The interpreter's value.
    pub emu: Value,
}

impl Difference {
    fn numbers(what: &str, kvm: u64, emu: u64) -> Difference {
        Difference {
            what: what.to_string(),
            kvm: Value::Number(kvm),
            emu: Value::Number(emu),
        }
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: kvm {}, emu {}", self.what, self.kvm, self.emu)
    }
}

/// The names of the general registers, in the encoding's order.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// The exception vectors that push an error code.
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// The frame an exception handler finds on its stack, from CPL 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    error_code: Option<u64>,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

impl Frame {
    /// The frame at the handler's stack pointer, if the run ended in a handler.
    fn read(mode: Mode, snapshot: &Snapshot) -> Option<(Frame, std::ops::Range<usize>)> {
        let vector = match snapshot.end {
            End::Finished => super::layout::END_VECTOR,
            End::Exception(vector) => vector,
            End::Stopped(_) => return None,
        };
        let slot = if mode == Mode::Protected16 { 4 } else { 8 };
        let start = snapshot.registers.gpr[4] as usize;
        let words = 5 + usize::from(has_error_code(vector));
        let end = start + words * slot;
        if end > (KERNEL_STACK_TOP as usize).min(RAM_SIZE) {
            return None;
        }
        let mut values = snapshot.memory[start..end].chunks(slot).map(|word| {
            let mut bytes = [0u8; 8];
            bytes[..slot].copy_from_slice(word);
            u64::from_le_bytes(bytes)
        });
        let error_code = has_error_code(vector).then(|| values.next().unwrap_or_default());
        let mut next = || values.next().unwrap_or_default();
        let frame = Frame {
            error_code,
            rip: next(),
            cs: next(),
            rflags: next(),
            rsp: next(),
            ss: next(),
        };
        Some((frame, start..end))
    }
}

/// The registers the sequence left: those of the handler it ended in, with RIP, RSP and
/// RFLAGS taken back from the frame the exception pushed.
pub fn sequence_registers(mode: Mode, snapshot: &Snapshot) -> Registers {
    let mut registers = snapshot.registers;
    if let Some((frame, _)) = Frame::read(mode, snapshot) {
        registers.rip = frame.rip;
        registers.rflags = frame.rflags;
        registers.gpr[4] = frame.rsp;
    }
    registers
}

/// Everything that differs between KVM's and the interpreter's results; `undefined` are the
/// flags not to compare in the sequence's final RFLAGS.
pub fn compare(mode: Mode, kvm: &Snapshot, emu: &Snapshot, undefined: u64) -> Vec<Difference> {
    let mut differences = Vec::new();
    let mut check = |what: &str, a: u64, b: u64| {
        if a != b {
            differences.push(Difference::numbers(what, a, b));
        }
    };
    let masked = |r: &Registers| Registers {
        rflags: r.rflags & !undefined,
        ..*r
    };
    compare_registers(&masked(&kvm.registers), &masked(&emu.registers), &mut check);
    let segments = |s: &Snapshot| -> [(&'static str, Segment); 6] {
        let r = &s.system;
        [
            ("cs", r.cs),
            ("ss", r.ss),
            ("ds", r.ds),
            ("es", r.es),
            ("fs", r.fs),
            ("gs", r.gs),
        ]
    };
    for ((name, a), (_, b)) in segments(kvm).into_iter().zip(segments(emu)) {
        check(name, a.selector.into(), b.selector.into());
    }
    if kvm.end == End::Exception(14) {
        check("cr2", kvm.system.cr2, emu.system.cr2);
    }
    let mut frame_bytes = 0..0;
    if let (Some((a, range)), Some((b, _))) = (Frame::read(mode, kvm), Frame::read(mode, emu)) {
        if let (Some(x), Some(y)) = (a.error_code, b.error_code) {
            check("error code", x, y);
        }
        check("frame rip", a.rip, b.rip);
        check("frame cs", a.cs, b.cs);
        check("frame rflags", a.rflags & !undefined, b.rflags & !undefined);
        check("frame rsp", a.rsp, b.rsp);
        check("frame ss", a.ss, b.ss);
        frame_bytes = range;
    }
    let mut memory = Vec::new();
    let mut address = 0;
    while address < kvm.memory.len() {
        if kvm.memory[address] == emu.memory[address] || frame_bytes.contains(&address) {
            address += 1;
            continue;
        }
        let start = address;
        while address < kvm.memory.len()
            && address - start < 16
            && kvm.memory[address] != emu.memory[address]
        {
            address += 1;
        }
        memory.push(Difference {
            what: format!("memory {start:#x}"),
            kvm: Value::Bytes(kvm.memory[start..address].to_vec()),
            emu: Value::Bytes(emu.memory[start..address].to_vec()),
        });
    }
    if kvm.end != emu.end {
        differences.insert(
            0,
            Difference {
                what: "end".to_string(),
                kvm: Value::End(kvm.end.clone()),
                emu: Value::End(emu.end.clone()),
            },
        );
    }
    differences.extend(memory);
    differences
}

/// Compares RIP, RFLAGS and the general registers through `check`.
fn compare_registers(kvm: &Registers, emu: &Registers, check: &mut impl FnMut(&str, u64, u64)) {
    check("rip", kvm.rip, emu.rip);
    check("rflags", kvm.rflags, emu.rflags);
    for (n, name) in GPR_NAMES.iter().enumerate() {
        check(name, kvm.gpr[n], emu.gpr[n]);
    }
}

/// The registers that differ between two states, for the single-stepping search.
pub fn register_differences(kvm: &Registers, emu: &Registers) -> Vec<Difference> {
    let mut differences = Vec::new();
    compare_registers(kvm, emu, &mut |what, a, b| {
        if a != b {
            differences.push(Difference::numbers(what, a, b));
        }
    });
    differences
}
