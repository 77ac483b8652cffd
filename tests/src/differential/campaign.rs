//! A campaign: many sequences in every mode, each run on KVM and on the interpreter and
//! compared, with the figures a run reports.
//!
//! KVM runs each sequence freely. The interpreter single-steps it (which costs it nothing),
//! so that the campaign knows which instructions actually ran: that gives the count of
//! instructions executed, the iced-x86 [`Code`]s covered, and the flags left undefined.

use std::collections::{BTreeMap, HashSet};

use iced_x86::{Code, Instruction};
use umbra_cpu::backend::Hypervisor;
use umbra_cpu::backend::emu::{EmuHypervisor, EmuOptions};

use super::bisect::{FirstDivergence, PairRun, first_divergence, prefix};
use super::compare::{
    Difference, UndefinedFlags, compare, sdm_undefined_flags, sequence_registers, undefined_flags,
};
use super::deviations::{Divergent, explanation};
use super::generator::{Generator, Sequence};
use super::layout::Mode;
use super::machine::{End, MachineError, Snapshot, Step, TestMachine};

/// The most interpreter steps one sequence may take: its instructions and one exception.
const MAX_STEPS: usize = 200;
/// #DB, the single-step trap.
const DEBUG_VECTOR: u8 = 1;

/// A divergence no known deviation explains.
#[derive(Clone, Debug)]
pub struct Report {
    /// The sequence.
    pub sequence: Sequence,
    /// What differs at the end.
    pub differences: Vec<Difference>,
    /// The first instruction after which the registers differ, if they ever do.
    pub first: Option<FirstDivergence>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sequence = &self.sequence;
        writeln!(
            f,
            "divergence in {} mode, seed {}:",
            sequence.mode, sequence.seed
        )?;
        f.write_str(&listing(sequence))?;
        writeln!(f, "at the end:")?;
        for difference in &self.differences {
            writeln!(f, "  {difference}")?;
        }
        match &self.first {
            Some(first) => write!(f, "{first}"),
            None => writeln!(f, "the registers agree after every step"),
        }
    }
}

/// What a campaign has done so far.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Sequences run on both backends.
    pub sequences: u64,
    /// Instructions of the sequences the interpreter executed.
    pub instructions: u64,
    /// The distinct instruction forms executed.
    pub codes: HashSet<Code>,
    /// Divergences no known deviation explains.
    pub divergences: u64,
    /// Sequences with a difference explained by each known PVM deviation.
    pub deviations: BTreeMap<&'static str, u64>,
    /// How sequences ended, by kind (on KVM).
    pub ends: BTreeMap<String, u64>,
    /// Sequences compared only up to an instruction that read a flag left undefined.
    pub cut_short: u64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sequences {}, instructions executed {}, distinct iced-x86 Codes {}, divergences {}",
            self.sequences,
            self.instructions,
            self.codes.len(),
            self.divergences
        )?;
        if self.cut_short > 0 {
            write!(
                f,
                "\n  compared up to a read of an undefined flag: {}",
                self.cut_short
            )?;
        }
        for (name, count) in &self.deviations {
            write!(f, "\n  known PVM deviation {name}: {count}")?;
        }
        Ok(())
    }
}

/// The machines and generator of one mode.
struct Rig {
    generator: Generator,
    kvm: TestMachine,
    /// The interpreter, single-stepped.
    emu: TestMachine,
    /// The emulator with the JIT translating every block at once, run freely.
    jit: TestMachine,
}

/// One sequence run on both backends.
struct Outcome {
    pair: PairRun,
    /// The instructions of the sequence the interpreter executed.
    trace: Vec<Instruction>,
    /// How the run ended on KVM.
    end: End,
    /// The known deviations that explained a difference.
    explained: HashSet<&'static str>,
    /// Whether the results compared are those of a shorter sequence, ending before an
    /// instruction that read a flag left undefined (see [`undefined_flags`]).
    cut_short: bool,
}

impl Rig {
    /// Runs `sequence` on the interpreter and on the JIT: what differs at the end, and each
    /// one's registers (the interpreter's as `kvm`, the JIT's as `emu`). Nothing differs
    /// where the runs cannot be compared: past the reader of an undefined flag neither is an
    /// oracle for the other (the interpreter need not leave undefined flags as the host does).
    fn run_jit_pair(&mut self, sequence: &Sequence) -> Result<PairRun, MachineError> {
        let mode = sequence.mode;
        let (interpreter, _, _, undefined) = self.interpret(sequence)?;
        let reference = sequence_registers(mode, &interpreter);
        if undefined.read_by.is_some() {
            return Ok(PairRun {
                differences: Vec::new(),
                kvm: reference,
                emu: reference,
            });
        }
        self.jit.load(sequence)?;
        let end = self.jit.run()?;
        let jit = self.jit.snapshot(end)?;
        Ok(PairRun {
            differences: compare(mode, &interpreter, &jit, undefined.flags),
            kvm: reference,
            emu: sequence_registers(mode, &jit),
        })
    }

    /// Runs `sequence` on the single-stepped interpreter: the state it leaves, the
    /// instructions it executed, the flags they leave undefined that KVM and the interpreter
    /// are known to leave differently, and all those the SDM leaves undefined.
    fn interpret(
        &mut self,
        sequence: &Sequence,
    ) -> Result<(Snapshot, Vec<Instruction>, UndefinedFlags, UndefinedFlags), MachineError> {
        self.emu.load(sequence)?;
        let instructions = sequence.instructions();
        let mut trace = Vec::new();
        let mut end = End::Stopped(format!("no end after {MAX_STEPS} steps"));
        for _ in 0..MAX_STEPS {
            let rip = self.emu.registers()?.rip;
            let step = self.emu.step()?;
            if let Some(instruction) = instructions.iter().find(|i| i.ip() == rip) {
                trace.push(*instruction);
            }
            if let Step::Ended(how) = step {
                end = how;
                break;
            }
        }
        let emu = self.emu.snapshot(end)?;
        // An instruction that faulted (the frame holds its own RIP) changed no flag; one
        // that a single-step trap stopped between two iterations (a REP string instruction,
        // whose frame holds its RIP too) changed them as its completed iterations did.
        let faulted = trace.last().is_some_and(|last| {
            matches!(emu.end, End::Exception(vector) if vector != DEBUG_VECTOR)
                && sequence_registers(sequence.mode, &emu).rip == last.ip()
        });
        let (completed, faulting) = match trace.split_last() {
            Some((last, completed)) if faulted => (completed, Some(last)),
            _ => (&trace[..], None),
        };
        let undefined = undefined_flags(completed, faulting);
        let sdm_undefined = sdm_undefined_flags(completed, faulting);
        Ok((emu, trace, undefined, sdm_undefined))
    }

    /// Runs `sequence` on both backends and compares the results.
    fn run_pair(&mut self, sequence: &Sequence) -> Result<Outcome, MachineError> {
        self.kvm.load(sequence)?;
        let end = self.kvm.run()?;
        let kvm = self.kvm.snapshot(end)?;

        let (emu, trace, undefined, _) = self.interpret(sequence)?;
        let mode = sequence.mode;
        if let Some(reader) = undefined.read_by {
            // What the reader and everything after it do may depend on the undefined flag:
            // compare the sequence that ends right before it instead. A flag is only
            // undefined after an instruction has run, so the reader is not the first.
            let k = sequence
                .starts
                .iter()
                .position(|&start| start == reader.ip())
                .and_then(|k| k.checked_sub(1))
                .expect("a reader of an undefined flag follows the instruction that left it");
            let cut = self.run_pair(&prefix(sequence, k))?;
            return Ok(Outcome {
                trace,
                end: kvm.end,
                cut_short: true,
                ..cut
            });
        }
        let divergent = Divergent {
            sequence,
            kvm: &kvm,
            emu: &emu,
        };
        let mut explained = HashSet::new();
        let differences = compare(mode, &kvm, &emu, undefined.flags)
            .into_iter()
            .filter(|difference| match explanation(&divergent, difference) {
                Some(name) => {
                    explained.insert(name);
                    false
                }
                None => true,
            })
            .collect();
        Ok(Outcome {
            pair: PairRun {
                differences,
                kvm: sequence_registers(mode, &kvm),
                emu: sequence_registers(mode, &emu),
            },
            trace,
            end: kvm.end,
            explained,
            cut_short: false,
        })
    }
}

/// `sequence`'s instructions, one per line: address, bytes, disassembly.
fn listing(sequence: &Sequence) -> String {
    use iced_x86::Formatter;
    let mut formatter = iced_x86::IntelFormatter::new();
    let mut lines = String::new();
    for instruction in sequence.instructions() {
        let mut text = String::new();
        formatter.format(&instruction, &mut text);
        let start = (instruction.ip() - sequence.mode.entry()) as usize;
        let bytes: String = sequence.code[start..start + instruction.len()]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        lines += &format!("  {:8x}  {bytes:<30} {text}\n", instruction.ip());
    }
    lines
}

/// The emulator with the JIT translating every block the first time it is reached.
fn jit_forced() -> EmuOptions {
    EmuOptions {
        engine: Some(std::sync::Arc::new(umbra_jit::JitFactory { threshold: 0 })),
        ..EmuOptions::default()
    }
}

/// Runs sequences on KVM and the interpreter and compares them.
pub struct Campaign {
    rigs: Vec<Rig>,
    /// The figures so far.
    pub stats: Stats,
}

impl Campaign {
    /// A campaign over every mode, with KVM from `kvm`.
    pub fn new(kvm: &dyn Hypervisor) -> Result<Campaign, MachineError> {
        let rigs = Mode::ALL
            .into_iter()
            .map(|mode| {
                let mut emu = TestMachine::new(&EmuHypervisor, mode)?;
                emu.set_single_step(true)?;
                Ok(Rig {
                    generator: Generator::new(mode),
                    kvm: TestMachine::new(kvm, mode)?,
                    emu,
                    jit: TestMachine::new(&jit_forced(), mode)?,
                })
            })
            .collect::<Result<_, MachineError>>()?;
        Ok(Campaign {
            rigs,
            stats: Stats::default(),
        })
    }

    /// The rig of `mode` among `rigs` (a field, so that the campaign's stats stay free).
    fn rig(rigs: &mut [Rig], mode: Mode) -> &mut Rig {
        rigs.iter_mut()
            .find(|rig| rig.generator.mode() == mode)
            .expect("a rig for every mode")
    }

    /// Runs the sequence of `seed` in `mode` on the interpreter alone and with the JIT
    /// translating every block at once: what differs at the end, if anything.
    pub fn run_jit(&mut self, mode: Mode, seed: u64) -> Result<Option<String>, MachineError> {
        let rig = Self::rig(&mut self.rigs, mode);
        let sequence = rig.generator.generate(seed);
        let run = rig.run_jit_pair(&sequence)?;
        if run.differences.is_empty() {
            return Ok(None);
        }
        let first = first_divergence(&sequence, |prefix| rig.run_jit_pair(prefix))?
            .map_or("the end".to_string(), |first| {
                format!("{:#x}", first.instruction.ip())
            });
        let mut report = format!(
            "the JIT diverges in {mode} mode, seed {seed}, from the instruction at {first} on:\n{}at the end:\n",
            listing(&sequence)
        );
        for d in run.differences {
            report += &format!("  {}: interpreter {}, jit {}\n", d.what, d.kvm, d.emu);
        }
        Ok(Some(report))
    }

    /// Runs the sequence of `seed` in `mode`; a divergence comes back as a report.
    pub fn run(&mut self, mode: Mode, seed: u64) -> Result<Option<Report>, MachineError> {
        let rig = Self::rig(&mut self.rigs, mode);
        let sequence = rig.generator.generate(seed);
        let outcome = rig.run_pair(&sequence)?;

        let stats = &mut self.stats;
        stats.sequences += 1;
        // The final INT3 is the harness's, not the sequence's.
        let executed = outcome.trace.iter().filter(|i| i.code() != Code::Int3);
        stats.instructions += executed.clone().count() as u64;
        stats.codes.extend(executed.map(|i| i.code()));
        *stats.ends.entry(outcome.end.to_string()).or_default() += 1;
        stats.cut_short += u64::from(outcome.cut_short);
        for name in outcome.explained {
            *stats.deviations.entry(name).or_default() += 1;
        }
        if outcome.pair.differences.is_empty() {
            return Ok(None);
        }
        stats.divergences += 1;
        let first = first_divergence(&sequence, |prefix| {
            rig.run_pair(prefix).map(|outcome| outcome.pair)
        })?;
        Ok(Some(Report {
            sequence,
            differences: outcome.pair.differences,
            first,
        }))
    }
}
