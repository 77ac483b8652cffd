//! Where PVM departs from the SDM, and the interpreter follows the SDM: the named list of
//! cases the campaign keeps out of its results, one by one, each with its reason.
//!
//! PVM runs CPL 3 code of a 64-bit code segment natively on the host, which makes it an exact
//! oracle for user-mode instructions, except where the host's own state shows through (its
//! segment selectors, its RFLAGS.AC) and where PVM hands an instruction that faulted to KVM's
//! instruction emulator. CPL 3 code of 16- and 32-bit code segments runs in that emulator
//! (every INT3 there shows it), which lacks some instructions, gets others wrong and writes
//! split accesses in two; CPL 0 code and exception delivery always run there. The emulator
//! is no oracle for flags the SDM leaves undefined: those it does not compute with the
//! host's own instruction are masked (see [`super::compare`]).
//!
//! Deviations are kept out in one of three ways ([`Handling`]): forms the generator never
//! emits, where no comparison could mean anything; LOCK prefixes it never adds; and
//! differences explained one by one, where only what the deviation changes is left out and
//! everything else the sequence left is still compared.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::compare::{Difference, Value, sequence_registers};
use super::generator::Sequence;
use super::layout::{Mode, READ_ONLY};
use super::machine::{End, Snapshot};
use umbra_cpu::state::{Segment, SystemRegisters};

/// A divergent run, with what is needed to decide whether a difference is a known deviation.
pub struct Divergent<'a> {
    /// The sequence.
    pub sequence: &'a Sequence,
    /// KVM's result.
    pub kvm: &'a Snapshot,
    /// The interpreter's result.
    pub emu: &'a Snapshot,
}

/// A way PVM departs from the SDM.
pub struct PvmDeviation {
    /// A short name, as reports print it.
    pub name: &'static str,
    /// What PVM does, and what the SDM says.
    pub reason: &'static str,
    /// How the campaign keeps it from failing.
    pub handling: Handling,
}

/// How a deviation is kept out of the results.
pub enum Handling {
    /// The generator never emits the instruction forms for which this returns true (in the
    /// mode given): no comparison of them could mean anything.
    Excluded(fn(Mode, Code) -> bool),
    /// The generator never puts a LOCK prefix on the forms for which this returns true (in
    /// the mode given).
    LockExcluded(fn(Mode, Code) -> bool),
    /// A difference for which this returns true is counted under the deviation's name
    /// instead of failing the campaign.
    Explained(fn(&Divergent, &Difference) -> bool),
}

/// RFLAGS.RF.
const RF: u64 = 1 << 16;
/// RFLAGS.AC.
const AC: u64 = 1 << 18;
/// #DB.
const DB: u8 = 1;
/// #UD.
const UD: u8 = 6;
/// #SS.
const SS: u8 = 12;
/// #GP.
const GP: u8 = 13;
/// #PF.
const PF: u8 = 14;
/// #AC.
const AC_VECTOR: u8 = 17;
/// CR0.AM.
const CR0_AM: u64 = 1 << 18;

/// The known PVM deviations.
pub const PVM_DEVIATIONS: &[PvmDeviation] = &[
    PvmDeviation {
        name: "host-segment-selectors",
        reason: "natively run 64-bit CPL 3 code sees the host's data segment selectors, not \
                 the guest's: PUSH of a segment register (and MOV from one) gives the host's",
        handling: Handling::Excluded(|mode, code| {
            mode == Mode::Long64
                && code
                    .op_code()
                    .op_kinds()
                    .iter()
                    .any(|kind| super::generator::is_segment(*kind))
        }),
    },
    PvmDeviation {
        name: "rflags-ac-dropped",
        reason: "POPF at CPL 3 setting RFLAGS.AC has no lasting effect: PVM reports (and \
                 pushes) RFLAGS with AC clear; the SDM lets POPF set AC at any CPL",
        handling: Handling::Explained(|divergent, difference| {
            matches!(difference.what.as_str(), "rflags" | "frame rflags")
                && matches!(
                    (&difference.kvm, &difference.emu),
                    (Value::Number(kvm), Value::Number(emu))
                        if (kvm ^ emu) & !RF == AC && emu & AC != 0
                )
                && divergent.sequence.mode == Mode::Long64
        }),
    },
    PvmDeviation {
        name: "handler-rflags-ac-dropped",
        reason: "PVM reports the RFLAGS of CPL 0 code with AC clear: the exception handler's, \
                 although the frame it was delivered with holds AC set; the SDM (Vol. 3A, \
                 6.12.1.3) has delivery clear TF, VM, RF and NT (and IF through an interrupt \
                 gate), not AC",
        handling: Handling::Explained(|_, difference| {
            difference.what == "rflags"
                && matches!(
                    (&difference.kvm, &difference.emu),
                    (Value::Number(kvm), Value::Number(emu)) if kvm ^ emu == AC && emu & AC != 0
                )
        }),
    },
    PvmDeviation {
        name: "alignment-check-without-cr0-am",
        reason: "natively run 64-bit CPL 3 code with RFLAGS.AC set takes #AC on a misaligned \
                 access although the guest's CR0.AM is 0 (the host's CR0.AM applies); the SDM \
                 raises #AC only with CR0.AM = 1",
        handling: Handling::Explained(|divergent, _| {
            divergent.sequence.mode == Mode::Long64
                && divergent.kvm.end == End::Exception(AC_VECTOR)
                && divergent.kvm.system.cr0 & CR0_AM == 0
        }),
    },
    PvmDeviation {
        name: "int3-pushes-rf",
        reason: "PVM delivers the #BP of an INT3 executed at CPL 3 with RF set in the RFLAGS \
                 image it pushes; the SDM (Vol. 3B, 18.3.1.1) pushes RF as 0 for a software \
                 interrupt, RF having been cleared at its start",
        handling: Handling::Explained(|divergent, difference| {
            difference.what == "frame rflags"
                && divergent.kvm.end == End::Finished
                && matches!(
                    (&difference.kvm, &difference.emu),
                    (Value::Number(kvm), Value::Number(emu))
                        if (kvm ^ emu) & !AC == RF && kvm & RF != 0
                )
        }),
    },
    PvmDeviation {
        name: "emulator-lacks-popcnt-movbe",
        reason: "KVM's instruction emulator has no POPCNT and runs no MOVBE here; it \
                 injects #UD for them",
        handling: Handling::Excluded(|mode, code| {
            emulated(mode) && matches!(code.mnemonic(), Mnemonic::Popcnt | Mnemonic::Movbe)
        }),
    },
    PvmDeviation {
        name: "gp-emulated-popcnt-movbe",
        reason: "PVM hands a 64-bit CPL 3 instruction that takes #GP or #SS (a \
                 non-canonical address) to KVM's instruction emulator, which runs neither \
                 POPCNT nor MOVBE and injects #UD for them instead; the #UD frame has no \
                 error code, so the handler's RSP differs too",
        handling: Handling::Explained(|divergent, difference| {
            use Mnemonic::*;
            divergent.sequence.mode == Mode::Long64
                && exception_instead_of(divergent, UD, &[GP, SS])
                    .is_some_and(|i| matches!(i.mnemonic(), Popcnt | Movbe))
                && (fault_shows(difference) || difference.what == "rsp")
        }),
    },
    PvmDeviation {
        name: "lock-nop-runs",
        reason: "PVM runs LOCK NOP (0F 1F /0) with a memory operand in 64-bit CPL 3 code as a \
                 NOP; the SDM raises #UD for LOCK on an instruction it does not apply to, as \
                 this host's processor does when it runs the instruction itself",
        handling: Handling::LockExcluded(|mode, code| {
            mode == Mode::Long64 && code.mnemonic() == Mnemonic::Nop
        }),
    },
    PvmDeviation {
        name: "emulator-runs-lzcnt-as-bsr",
        reason: "KVM's instruction emulator decodes F3 0F BD as BSR, ignoring the F3 prefix; \
                 the SDM makes it LZCNT on a processor with CPUID.80000001H:ECX.ABM[bit 5], \
                 which the interpreter advertises",
        handling: Handling::Excluded(|mode, code| {
            emulated(mode) && code.mnemonic() == Mnemonic::Lzcnt
        }),
    },
    PvmDeviation {
        name: "emulator-lacks-daa-aaa-aas",
        reason: "KVM's instruction emulator has no DAA, AAA or AAS and injects #UD for them",
        handling: Handling::Excluded(|mode, code| {
            use Mnemonic::*;
            emulated(mode) && matches!(code.mnemonic(), Daa | Aaa | Aas)
        }),
    },
    PvmDeviation {
        name: "emulator-aam-aad-flags-of-whole-register",
        reason: "KVM's instruction emulator sets SF and ZF after AAM and AAD from all of AX \
                 or EAX (the operand size), not from AL as the SDM has it (so AL = 0 with \
                 EAX bit 31 set gives SF = 1, ZF = 0)",
        handling: Handling::Excluded(|mode, code| {
            emulated(mode) && matches!(code.mnemonic(), Mnemonic::Aam | Mnemonic::Aad)
        }),
    },
    PvmDeviation {
        name: "emulator-refuses-int3",
        reason: "KVM's instruction emulator runs software interrupts only in real mode and \
                 injects #UD for the sequence's final INT3, a fault: its frame holds the \
                 INT3's own address and RF set where the SDM's #BP trap frame holds the next \
                 instruction's and RF clear",
        handling: Handling::Explained(|divergent, difference| {
            int3_refused(divergent) && int3_refusal_shows(difference)
        }),
    },
    PvmDeviation {
        name: "emulator-split-write",
        reason: "KVM's instruction emulator writes an access that straddles into a read-only \
                 page in two, storing the first part before the second faults; the SDM has a \
                 faulting instruction change nothing",
        handling: Handling::Explained(|divergent, difference| {
            let straddle = READ_ONLY as usize - 8..READ_ONLY as usize;
            divergent.sequence.mode != Mode::Long64
                && divergent.kvm.end == End::Exception(PF)
                && divergent.kvm.system.cr2 == READ_ONLY
                && difference
                    .what
                    .strip_prefix("memory ")
                    .and_then(|a| usize::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                    .is_some_and(|address| straddle.contains(&address))
        }),
    },
    PvmDeviation {
        name: "emulator-rmw-reads-before-write-check",
        reason: "KVM's instruction emulator reads the destination of a read-modify-write \
                 instruction before it checks that the segment may be written: through a \
                 code segment (a CS override, or DS loaded with a code selector) into a page \
                 that is not present it raises #PF, with the write bit set, where the SDM's \
                 segment checks, and so #GP(0), come before paging",
        handling: Handling::Explained(|divergent, difference| {
            rmw_to_unwritable_segment(divergent) && fault_shows(difference)
        }),
    },
    PvmDeviation {
        name: "emulator-single-steps-rep-per-1024",
        reason: "KVM's instruction emulator runs the iterations of a REP string instruction \
                 until rCX is a multiple of 1024 (or the instruction ends or faults) before it \
                 returns to the guest, and only then takes the single-step trap of TF, \
                 pushing RF set, with RIP still on the instruction even when the last \
                 iteration brought rCX to 0; the processor traps after each iteration, RF \
                 clear, as this host's does in 64-bit code, and after the last one with RIP \
                 past the instruction",
        handling: Handling::Explained(|divergent, difference| {
            rep_single_stepped(divergent) && string_state_shows(difference)
        }),
    },
    PvmDeviation {
        name: "emulator-skips-4gib-limit-check",
        reason: "KVM's instruction emulator does no limit check in a segment whose limit is \
                 4 GiB - 1, so an access that runs past offset 0xffffffff wraps to 0 and \
                 faults on the unmapped top page; the SDM (Vol. 3A, 5.3) raises #GP(0) \
                 (#SS(0) in SS) for an access past the limit, as this host's processor does \
                 for 32-bit code",
        handling: Handling::Explained(|divergent, difference| {
            wrapped_past_4gib(divergent) && fault_shows(difference)
        }),
    },
];

/// Whether the generator should leave out `code` in `mode` for a known deviation.
pub fn excluded(mode: Mode, code: Code) -> bool {
    PVM_DEVIATIONS
        .iter()
        .any(|d| matches!(d.handling, Handling::Excluded(excludes) if excludes(mode, code)))
}

/// Whether the generator should not put a LOCK prefix on `code` in `mode` for a known
/// deviation.
pub fn lock_excluded(mode: Mode, code: Code) -> bool {
    PVM_DEVIATIONS
        .iter()
        .any(|d| matches!(d.handling, Handling::LockExcluded(excludes) if excludes(mode, code)))
}

/// The known deviation that explains `difference`, if one does.
pub fn explanation(divergent: &Divergent, difference: &Difference) -> Option<&'static str> {
    PVM_DEVIATIONS.iter().find_map(|d| match d.handling {
        Handling::Explained(explains) if explains(divergent, difference) => Some(d.name),
        _ => None,
    })
}

/// KVM ended with #UD on the INT3 that the interpreter ran to the sequence's end.
fn int3_refused(divergent: &Divergent) -> bool {
    let mode = divergent.sequence.mode;
    let rip = sequence_registers(mode, divergent.kvm).rip;
    divergent.kvm.end == End::Exception(UD)
        && divergent.emu.end == End::Finished
        && sequence_registers(mode, divergent.emu).rip == rip + 1
        && divergent
            .sequence
            .instructions()
            .iter()
            .any(|i| i.ip() == rip && i.code() == Code::Int3)
}

/// Whether `difference` is one that a #UD fault on the final INT3 makes, instead of its #BP
/// trap: how the run ended, the handler's RIP, the frame's RIP, and RF in the frame's RFLAGS.
/// Everything else the sequence left is still compared.
fn int3_refusal_shows(difference: &Difference) -> bool {
    match difference.what.as_str() {
        "end" | "rip" | "frame rip" => true,
        "frame rflags" => matches!(
            (&difference.kvm, &difference.emu),
            (Value::Number(kvm), Value::Number(emu)) if kvm ^ emu == RF && kvm & RF != 0
        ),
        _ => false,
    }
}

/// KVM took exception `kvm_vector` and the interpreter one of `vectors`, both at the same
/// instruction: the one returned.
fn exception_instead_of(
    divergent: &Divergent,
    kvm_vector: u8,
    vectors: &[u8],
) -> Option<Instruction> {
    let mode = divergent.sequence.mode;
    let rip = sequence_registers(mode, divergent.kvm).rip;
    let emu_vector = match divergent.emu.end {
        End::Exception(vector) => vector,
        _ => return None,
    };
    (divergent.kvm.end == End::Exception(kvm_vector)
        && vectors.contains(&emu_vector)
        && sequence_registers(mode, divergent.emu).rip == rip)
        .then(|| {
            divergent
                .sequence
                .instructions()
                .into_iter()
                .find(|i| i.ip() == rip)
        })
        .flatten()
}

/// KVM took a page fault where the interpreter took #GP for a read-modify-write of memory
/// through a segment that may not be written, in a mode KVM emulates.
fn rmw_to_unwritable_segment(divergent: &Divergent) -> bool {
    emulated(divergent.sequence.mode)
        && exception_instead_of(divergent, PF, &[GP]).is_some_and(|i| {
            i.op0_kind() == OpKind::Memory
                && segment(&divergent.emu.system, i.memory_segment())
                    .is_some_and(|s| s.type_ & 0b1010 != 0b0010)
        })
}

/// The segment register `register` of `system`.
fn segment(system: &SystemRegisters, register: Register) -> Option<Segment> {
    Some(match register {
        Register::ES => system.es,
        Register::CS => system.cs,
        Register::SS => system.ss,
        Register::DS => system.ds,
        Register::FS => system.fs,
        Register::GS => system.gs,
        _ => return None,
    })
}

/// The interpreter took the single-step trap of a REP string instruction (between two of its
/// iterations or after it), in a mode KVM emulates, and KVM ended in an exception in it or
/// right after it.
fn rep_single_stepped(divergent: &Divergent) -> bool {
    let mode = divergent.sequence.mode;
    let emu_rip = sequence_registers(mode, divergent.emu).rip;
    let kvm_rip = sequence_registers(mode, divergent.kvm).rip;
    emulated(mode)
        && divergent.emu.end == End::Exception(DB)
        && matches!(divergent.kvm.end, End::Exception(_))
        && divergent.sequence.instructions().iter().any(|i| {
            let in_or_after = |rip| rip == i.ip() || rip == i.next_ip();
            in_or_after(emu_rip)
                && in_or_after(kvm_rip)
                && (i.has_rep_prefix() || i.has_repne_prefix())
                && i.op_kinds().any(is_string_operand)
        })
}

/// An implicit string operand: `[rSI]` or `ES:[rDI]`.
fn is_string_operand(kind: OpKind) -> bool {
    use OpKind::*;
    matches!(
        kind,
        MemorySegSI | MemorySegESI | MemorySegRSI | MemoryESDI | MemoryESEDI | MemoryESRDI
    )
}

/// Whether `difference` is one that a string instruction stopped after another number of
/// iterations makes: rCX, rSI, rDI, rAX (LODS), the flags (CMPS, SCAS, RF), memory (STOS,
/// MOVS), the frame's RIP (the instruction, or the next if it ended), and, where it ended in
/// a fault instead of the trap, what that shows.
fn string_state_shows(difference: &Difference) -> bool {
    fault_shows(difference)
        || difference.what.starts_with("memory ")
        || matches!(
            difference.what.as_str(),
            "rcx" | "rsi" | "rdi" | "rax" | "rsp" | "rflags" | "frame rflags" | "frame rip"
        )
}

/// KVM took a page fault on the last page below 4 GiB where the interpreter took a limit
/// fault, in compatibility mode (whose data segments are flat, with a limit of 4 GiB - 1).
fn wrapped_past_4gib(divergent: &Divergent) -> bool {
    divergent.sequence.mode == Mode::Compat32
        && divergent.kvm.system.cr2 >= 0xffff_f000
        && divergent.kvm.system.cr2 <= 0xffff_ffff
        && exception_instead_of(divergent, PF, &[GP, SS]).is_some()
}

/// Whether `difference` is one that one exception taken instead of another makes: how the
/// run ended, the handler's RIP, CR2 and the error code.
fn fault_shows(difference: &Difference) -> bool {
    matches!(
        difference.what.as_str(),
        "end" | "rip" | "cr2" | "error code"
    )
}

/// Whether KVM runs CPL 3 code of `mode` in its instruction emulator: all code of 16- and
/// 32-bit code segments, as every such sequence's final INT3 shows (see
/// `emulator-refuses-int3`); 64-bit code runs natively.
fn emulated(mode: Mode) -> bool {
    mode != Mode::Long64
}
