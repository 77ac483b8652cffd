//! Where PVM departs from the SDM, and the interpreter follows the SDM: the named list of
//! cases the campaign keeps out of its results, one by one, each with its reason.
//!
//! PVM runs CPL 3 code of a 64-bit code segment natively on the host, which makes it an exact
//! oracle for user-mode instructions, except where the host's own state shows through (its
//! segment selectors, its RFLAGS.AC). CPL 3 code of 16- and 32-bit code segments it runs, at
//! least at times, in KVM's instruction emulator, which lacks some instructions and writes
//! split accesses in two; CPL 0 code and exception delivery always run there.

use iced_x86::{Code, Mnemonic};

use super::compare::{Difference, Value, sequence_registers};
use super::generator::Sequence;
use super::layout::{Mode, READ_ONLY};
use super::machine::{End, Snapshot};

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
    /// A difference for which this returns true is counted under the deviation's name
    /// instead of failing the campaign.
    Explained(fn(&Divergent, &Difference) -> bool),
}

/// RFLAGS.RF.
const RF: u64 = 1 << 16;
/// RFLAGS.AC.
const AC: u64 = 1 << 18;
/// #UD.
const UD: u8 = 6;
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
        name: "emulator-lacks-popcnt-lzcnt-movbe",
        reason: "KVM's instruction emulator has no POPCNT, LZCNT or MOVBE and injects #UD \
                 for them",
        handling: Handling::Explained(|divergent, _| {
            emulator_refused(
                divergent,
                &[Mnemonic::Popcnt, Mnemonic::Lzcnt, Mnemonic::Movbe],
            )
        }),
    },
    PvmDeviation {
        name: "emulator-lacks-bcd",
        reason: "KVM's instruction emulator has no DAA, AAA, AAS, AAM or AAD and injects #UD \
                 for them",
        handling: Handling::Explained(|divergent, _| {
            use Mnemonic::*;
            emulator_refused(divergent, &[Daa, Das, Aaa, Aas, Aam, Aad])
        }),
    },
    PvmDeviation {
        name: "emulator-refuses-int3",
        reason: "KVM's instruction emulator runs software interrupts only in real mode and \
                 injects #UD for the sequence's final INT3",
        handling: Handling::Explained(|divergent, _| {
            emulator_refused(divergent, &[Mnemonic::Int3])
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
];

/// Whether the generator should leave out `code` in `mode` for a known deviation.
pub fn excluded(mode: Mode, code: Code) -> bool {
    PVM_DEVIATIONS
        .iter()
        .any(|d| matches!(d.handling, Handling::Excluded(excludes) if excludes(mode, code)))
}

/// The known deviation that explains `difference`, if one does.
pub fn explanation(divergent: &Divergent, difference: &Difference) -> Option<&'static str> {
    PVM_DEVIATIONS.iter().find_map(|d| match d.handling {
        Handling::Explained(explains) if explains(divergent, difference) => Some(d.name),
        _ => None,
    })
}

/// KVM ended with #UD on an instruction of `mnemonics` where the interpreter did not.
fn emulator_refused(divergent: &Divergent, mnemonics: &[Mnemonic]) -> bool {
    let mode = divergent.sequence.mode;
    let rip = sequence_registers(mode, divergent.kvm).rip;
    let refused = divergent
        .sequence
        .instructions()
        .iter()
        .any(|i| i.ip() == rip && mnemonics.contains(&i.mnemonic()));
    let at = |snapshot: &Snapshot| sequence_registers(mode, snapshot).rip;
    refused
        && divergent.kvm.end == End::Exception(UD)
        && (divergent.emu.end != End::Exception(UD) || at(divergent.emu) != rip)
}
