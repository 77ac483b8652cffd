//! The `pt-modify` firmware: a guest that changes its own page tables, with and without INVLPG,
//! in 32-bit paging (with and without CR4.PSE), PAE paging, and 4- and 5-level paging, prints
//! one line per case and paging mode. Where the SDM defines a result the line states it (the
//! frame an access reached, or its #PF error code and CR2, and the A and D flags afterwards);
//! where the SDM allows the old or the new translation the line says only "old-or-new ok".
//! So every backend must print the same lines as `EXPECTED` has them, in every mode it runs.
//!
//! What a backend cannot run it says it skipped, and the comparison leaves out:
//! - 5-level paging needs CPUID.7.0:ECX[16] (LA57): QEMU's `-cpu max` has it, the interpreter
//!   and KVM here do not.
//! - KVM on PVM (KVM's software backend) runs guests in long mode only: setting CR0.PG with
//!   EFER.LME clear raises #GP there, a limit of PVM's, not of the architecture, so 32-bit and
//!   PAE paging are compared between the interpreter and QEMU alone. The firmware names the
//!   #GP in the line that skips the mode.
//!
//! Where a backend runs a case and gets a result the SDM does not allow, `QEMU_DEVIATIONS`
//! names it with the SDM's reasoning; nothing else may differ.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{have_program, image_file, kvm_usable, run_qemu_tcg, run_umbra, text};

/// The paging modes, in the order the firmware runs them.
const MODES: [&str; 5] = ["32-bit", "32-bit-pse", "pae", "4-level", "5-level"];

/// What each case prints wherever it runs, in the order the firmware runs the cases. A write's
/// CR2 is the test address plus the offset of its slot (each write of a mode stores at a slot
/// of its own), the same in every mode since every mode runs these writes in this order.
const EXPECTED: [(&str, &str); 18] = [
    ("remap-invlpg", "read a, read b, write b, pte a=1 d=1"),
    ("remap-cr3", "read a, read b, write b, pte a=1 d=1"),
    (
        "remap-stale",
        "read a, read old-or-new ok, read b, pte a=1 d=0",
    ),
    (
        "unmap-invlpg",
        "read a, read #pf 0x4 cr2 0x40000000, read b, pte a=1 d=0",
    ),
    (
        "unmap-stale",
        "read a, read old-or-new ok, read #pf 0x4 cr2 0x40000000",
    ),
    (
        "write-protect-invlpg",
        "write a, write #pf 0x7 cr2 0x4000001c, write a, pte a=1 d=1",
    ),
    (
        "write-protect-stale",
        "write a, write old-or-new ok, write #pf 0x7 cr2 0x4000002c, write old-or-new ok, \
         write a, pte a=1 d=1",
    ),
    (
        "pde-switch-invlpg",
        "read a, read c, read b, read old-or-new ok, pde a=1, pte a=1 d=0",
    ),
    (
        "pde-switch-cr3",
        "read a, read c, read b, read d, pde a=1, pte a=1 d=0, pte a=1 d=0",
    ),
    (
        "pde-switch-stale",
        "read a, read old-or-new ok, read b, pde a=1",
    ),
    // In PAE paging the old PD stays in use: see `PAE_PDPTE_SWITCH_INVLPG`.
    ("pdpte-switch-invlpg", "read a, read b, pte a=1 d=0"),
    ("pdpte-switch-cr3", "read a, read b, pde a=1, pte a=1 d=0"),
    (
        "large-remap-invlpg",
        "read large-a, read large-b, write large-b, pde a=1 d=1",
    ),
    (
        "large-remap-stale",
        "read large-a, read old-or-new ok, read large-b, pde a=1 d=0",
    ),
    (
        "large-split-invlpg",
        "read large-a, read a, pde a=1, pte a=1 d=0",
    ),
    (
        "large-merge-invlpg",
        "read a, read large-b, write large-b, pde a=1 d=1",
    ),
    (
        "global-remap-cr3",
        "read a, read old-or-new ok, read b, pte a=1 d=0",
    ),
    ("global-remap-pge", "read a, read b, pte a=1 d=0"),
];

/// `pdpte-switch-invlpg` in PAE paging: the CPU walks from the PDPTE registers, which MOV to
/// CR3 loads and INVLPG does not (SDM 4.4.1), so after the PDPTE store and INVLPG the read
/// still reaches frame a, and the new PD's page table is never walked (its PTE keeps A clear).
const PAE_PDPTE_SWITCH_INVLPG: &str = "read a, read a, pte a=0 d=0";

/// Cases QEMU's TCG (7.2) gets wrong, with the line it prints instead and why the SDM says so.
const QEMU_DEVIATIONS: [(&str, &str, &str); 1] = [(
    "pae pdpte-switch-invlpg",
    "read a, read b, pte a=1 d=0",
    "TCG has no PDPTE registers: its PAE walk reads the PDPTE from memory every time, so it \
     follows a PDPTE store once INVLPG drops the TLB entry; SDM 4.4.1 has PAE paging use the \
     PDPTE registers, which only MOV to CR0, CR3 or CR4 (and task switches) reload",
)];

/// Why a mode's line says it was skipped, on each backend that may skip it.
const NO_LA57: &str = "la57 not advertised (cpuid.7.0:ecx[16] = 0)";
const PAGING_REFUSED: &str = "setting cr0.pg raised #gp";

/// The cases that need a level above the PD, and those that need large pages.
const NEEDS_PDPTE: [&str; 2] = ["pdpte-switch-invlpg", "pdpte-switch-cr3"];
const NEEDS_LARGE: [&str; 4] = [
    "large-remap-invlpg",
    "large-remap-stale",
    "large-split-invlpg",
    "large-merge-invlpg",
];

/// The lines a mode prints, "<mode> <case>" to the rest, in order: every case it has.
fn expected_lines(mode: &str) -> Vec<(String, String)> {
    let has_pdpte = !mode.starts_with("32-bit");
    let has_large = mode != "32-bit";
    EXPECTED
        .iter()
        .filter(|(case, _)| has_pdpte || !NEEDS_PDPTE.contains(case))
        .filter(|(case, _)| has_large || !NEEDS_LARGE.contains(case))
        .map(|&(case, line)| {
            let line = match (mode, case) {
                ("pae", "pdpte-switch-invlpg") => PAE_PDPTE_SWITCH_INVLPG,
                _ => line,
            };
            (format!("{mode} {case}"), line.to_owned())
        })
        .collect()
}

/// What one run printed.
#[derive(Debug, Default)]
struct Report {
    /// Each case line, "<mode> <case>" to the rest, in the order printed.
    lines: Vec<(String, String)>,
    /// Modes skipped, with the reason given.
    skipped_modes: BTreeMap<String, String>,
    /// Case lines skipped ("<mode> <case>"), for a feature the CPU lacks.
    skipped_cases: BTreeSet<String>,
    /// The total line's counts and digest.
    total: Option<String>,
}

impl Report {
    /// Parses the firmware's output; any line it does not print is an error, so that a fatal
    /// stop (an unexpected exception) fails the test with the firmware's own words.
    fn parse(stdout: &str) -> Report {
        const PREFIX: &str = "umbra pt-modify: ";
        let mut report = Report::default();
        for line in stdout.lines() {
            if let Some(own) = line.strip_prefix(PREFIX) {
                if let Some(total) = own.strip_prefix("total: ") {
                    report.total = Some(total.to_owned());
                } else {
                    let boot = ["real mode", "protected mode", "long mode (4-level paging)"];
                    assert!(boot.contains(&own), "unexpected line: {line}");
                }
            } else if let Some((key, reason)) = line.split_once(": skipped, ") {
                if key.contains(' ') {
                    report.skipped_cases.insert(key.to_owned());
                } else {
                    report
                        .skipped_modes
                        .insert(key.to_owned(), reason.to_owned());
                }
            } else if let Some((key, rest)) = line.split_once(": ")
                && MODES.contains(&key.split(' ').next().unwrap_or_default())
            {
                report.lines.push((key.to_owned(), rest.to_owned()));
            } else {
                panic!("unexpected line: {line}");
            }
        }
        report
    }

    fn line(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this run said it skipped the case line `key`.
    fn skipped(&self, key: &str) -> bool {
        let mode = key.split(' ').next().unwrap_or_default();
        self.skipped_modes.contains_key(mode) || self.skipped_cases.contains(key)
    }

    /// The modes whose lines this run printed.
    fn modes_run(&self) -> BTreeSet<&str> {
        self.lines
            .iter()
            .filter_map(|(key, _)| key.split(' ').next())
            .collect()
    }
}

/// Asserts that two runs print the same line for every case both ran, and that each case line
/// only one ran is one the other said it skipped. `deviations` names the lines `b` is known to
/// get wrong: there `b` may print the known wrong line instead, and the comparison says so.
fn assert_agree(
    a_name: &str,
    a: &Report,
    b_name: &str,
    b: &Report,
    deviations: &[(&str, &str, &str)],
) {
    let mut problems = Vec::new();
    for (key, ours) in &a.lines {
        let deviation = deviations.iter().find(|(k, _, _)| k == key);
        match (b.line(key), deviation) {
            (Some(theirs), Some((_, known, why))) if theirs == *known => {
                eprintln!("{key}: {b_name} prints {theirs:?}, {a_name} {ours:?}: known, {why}");
            }
            (Some(theirs), _) if theirs == ours => {}
            (Some(theirs), _) => {
                problems.push(format!("{key}: {a_name} {ours}; {b_name} {theirs}"))
            }
            (None, _) if b.skipped(key) => {}
            (None, _) => problems.push(format!("{key}: {b_name} neither ran nor skipped it")),
        }
    }
    for (key, _) in &b.lines {
        if a.line(key).is_none() && !a.skipped(key) {
            problems.push(format!("{key}: {a_name} neither ran nor skipped it"));
        }
    }
    assert!(
        problems.is_empty(),
        "{a_name} and {b_name} differ:\n{}",
        problems.join("\n")
    );
    let keys = |r: &Report| r.lines.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    if keys(a) == keys(b) && deviations.is_empty() {
        assert_eq!(a.total, b.total, "{a_name} and {b_name} totals");
    }
}

/// The ROM, written where Umbra and QEMU can name it (it is a test-only image).
fn rom(dir: &tempfile::TempDir) -> String {
    image_file(dir.path(), umbra_firmware::test_images::pt_modify())
}

/// Runs the firmware on Umbra with `accel`; it must exit with status 0 (no access gave a
/// result the SDM does not allow).
fn run_on_umbra(rom: &str, accel: &str) -> Report {
    let out = run_umbra(&["run", "--firmware", rom, "--accel", accel]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{accel}: {stdout}{}",
        text(&out.stderr)
    );
    Report::parse(&stdout)
}

/// The interpreter runs every mode but 5-level and prints, in each, what the SDM defines.
#[test]
fn emu_prints_what_the_sdm_defines_in_every_mode_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let emu = run_on_umbra(&rom(&dir), "emu");
    let skipped = BTreeMap::from([("5-level".to_owned(), NO_LA57.to_owned())]);
    assert_eq!(emu.skipped_modes, skipped);
    assert!(emu.skipped_cases.is_empty(), "{:?}", emu.skipped_cases);
    let expected: Vec<_> = MODES[..4].iter().flat_map(|m| expected_lines(m)).collect();
    assert_eq!(emu.lines, expected);
    let total = emu.total.expect("a total line");
    assert!(
        total.starts_with(&format!("{} cases, digest 0x", expected.len())),
        "{total}"
    );
}

/// KVM agrees with the interpreter on every line both print. On PVM only the long-mode
/// paging modes run (KVM refuses the others), which still puts every case through KVM's
/// shadow paging.
#[test]
fn kvm_prints_what_emu_prints() {
    if !kvm_usable("kvm_prints_what_emu_prints") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rom = rom(&dir);
    let emu = run_on_umbra(&rom, "emu");
    let kvm = run_on_umbra(&rom, "kvm");
    for (mode, reason) in &kvm.skipped_modes {
        assert!(
            (mode == "5-level" && reason == NO_LA57) || reason == PAGING_REFUSED,
            "kvm skipped {mode}: {reason}"
        );
    }
    assert!(kvm.modes_run().contains("4-level"), "{:?}", kvm.lines);
    if !kvm.skipped_modes.is_empty() {
        eprintln!("kvm skipped {:?}", kvm.skipped_modes);
    }
    assert_agree("emu", &emu, "kvm", &kvm, &[]);
}

/// QEMU's TCG with `-cpu max` runs all five modes; it agrees with the interpreter but for its
/// known deviations, and its 5-level lines are the ones every mode prints.
#[test]
fn qemu_tcg_prints_what_emu_prints_but_for_its_known_deviations() {
    let test = "qemu_tcg_prints_what_emu_prints_but_for_its_known_deviations";
    if !have_program(test, "qemu-system-x86_64") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rom = rom(&dir);
    let out = run_qemu_tcg(&rom, &["-cpu", "max"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let qemu = Report::parse(&stdout);
    assert!(qemu.skipped_modes.is_empty(), "{:?}", qemu.skipped_modes);
    let five_level: Vec<_> = qemu
        .lines
        .iter()
        .filter(|(key, _)| key.starts_with("5-level "))
        .cloned()
        .collect();
    assert_eq!(five_level, expected_lines("5-level"));
    let emu = run_on_umbra(&rom, "emu");
    assert_agree("emu", &emu, "qemu-tcg", &qemu, &QEMU_DEVIATIONS);
}

#[test]
fn expected_lines_follow_each_modes_structures() {
    let count = |mode| expected_lines(mode).len();
    assert_eq!(count("32-bit"), 12);
    assert_eq!(count("32-bit-pse"), 16);
    for mode in ["pae", "4-level", "5-level"] {
        assert_eq!(count(mode), 18, "{mode}");
    }
    assert_eq!(
        expected_lines("pae")[10],
        (
            "pae pdpte-switch-invlpg".to_owned(),
            PAE_PDPTE_SWITCH_INVLPG.to_owned()
        )
    );
}

#[test]
fn reports_parse() {
    let report = Report::parse(
        "umbra pt-modify: real mode\n\
         32-bit: skipped, setting cr0.pg raised #gp\n\
         pae remap-invlpg: read a, read b, write b, pte a=1 d=1\n\
         pae global-remap-cr3: skipped, pge not advertised (cpuid.1:edx[13] = 0)\n\
         5-level: skipped, la57 not advertised (cpuid.7.0:ecx[16] = 0)\n\
         umbra pt-modify: total: 1 cases, digest 0x2\n",
    );
    assert_eq!(
        report.line("pae remap-invlpg"),
        Some("read a, read b, write b, pte a=1 d=1")
    );
    assert!(report.skipped("32-bit remap-invlpg"));
    assert!(report.skipped("pae global-remap-cr3"));
    assert!(report.skipped("5-level large-merge-invlpg"));
    assert!(!report.skipped("pae remap-invlpg"));
    assert_eq!(report.skipped_modes["32-bit"], PAGING_REFUSED);
    assert_eq!(report.skipped_modes["5-level"], NO_LA57);
    assert_eq!(report.total.as_deref(), Some("1 cases, digest 0x2"));
}
