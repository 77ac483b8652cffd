//! Finding the first instruction after which the two backends disagree.
//!
//! The search runs prefixes of the sequence: prefix `k` is the sequence with an INT3 written
//! over the first byte of every instruction after the `k`-th, so that whichever way its
//! branches go, it ends (through the same handler as the whole sequence) right after
//! instruction `k` or at the first later instruction it reaches. The first prefix whose
//! results differ names the instruction.
//!
//! Single-stepping KVM (KVM_SET_GUEST_DEBUG with KVM_GUESTDBG_SINGLESTEP) would be the
//! obvious way, but PVM delivers the single-step trap of CPL 3 code to the guest's own #DB
//! handler instead of exiting to the VMM; prefixes work the same on every backend.

use iced_x86::{Code, Formatter, Instruction, IntelFormatter};
use umbra_cpu::state::Registers;

use super::compare::{Difference, GPR_NAMES};
use super::generator::Sequence;
use super::layout::{self, CODE};

/// The first instruction whose result differs.
#[derive(Clone, Debug)]
pub struct FirstDivergence {
    /// The instruction, with its RIP.
    pub instruction: Instruction,
    /// The registers before it (the interpreter's, which agree with KVM's there).
    pub before: Registers,
    /// KVM's registers after it.
    pub kvm: Registers,
    /// The interpreter's registers after it.
    pub emu: Registers,
    /// What differs after it.
    pub differences: Vec<Difference>,
}

impl std::fmt::Display for FirstDivergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        IntelFormatter::new().format(&self.instruction, &mut text);
        writeln!(
            f,
            "first divergent instruction: {:#x}: {text}",
            self.instruction.ip()
        )?;
        for difference in &self.differences {
            writeln!(f, "  {difference}")?;
        }
        writeln!(
            f,
            "  {:>6} {:>18} {:>18} {:>18}",
            "", "before", "kvm", "emu"
        )?;
        let rows = [("rip", 16), ("rflags", 17)]
            .into_iter()
            .chain(GPR_NAMES.iter().enumerate().map(|(n, name)| (*name, n)));
        for (name, index) in rows {
            let value = |r: &Registers| match index {
                16 => r.rip,
                17 => r.rflags,
                n => r.gpr[n],
            };
            writeln!(
                f,
                "  {name:>6} {:>18x} {:>18x} {:>18x}",
                value(&self.before),
                value(&self.kvm),
                value(&self.emu)
            )?;
        }
        Ok(())
    }
}

/// What running one sequence on both backends gave: the differences, and the registers each
/// side left (see [`super::compare::sequence_registers`]).
pub struct PairRun {
    /// What differs (known deviations already left out).
    pub differences: Vec<Difference>,
    /// KVM's registers.
    pub kvm: Registers,
    /// The interpreter's registers.
    pub emu: Registers,
}

/// `sequence` ending right after its instruction `k`.
pub fn prefix(sequence: &Sequence, k: usize) -> Sequence {
    let mut truncated = sequence.clone();
    let code_start = sequence.mode.entry();
    for start in &sequence.starts[k + 1..] {
        let offset = (start - code_start) as usize;
        truncated.code[offset] = 0xcc;
        truncated.memory[CODE as usize + offset] = 0xcc;
    }
    truncated
}

/// Runs prefixes of `sequence` through `run_pair` until one differs.
pub fn first_divergence<E>(
    sequence: &Sequence,
    mut run_pair: impl FnMut(&Sequence) -> Result<PairRun, E>,
) -> Result<Option<FirstDivergence>, E> {
    let instructions = sequence.instructions();
    let mut before = layout::registers(sequence.mode, sequence.gpr, sequence.rflags);
    for (k, instruction) in instructions.iter().enumerate() {
        if instruction.code() == Code::Int3 {
            break;
        }
        let run = run_pair(&prefix(sequence, k))?;
        if !run.differences.is_empty() {
            return Ok(Some(FirstDivergence {
                instruction: *instruction,
                before,
                kvm: run.kvm,
                emu: run.emu,
                differences: run.differences,
            }));
        }
        before = run.emu;
    }
    Ok(None)
}
