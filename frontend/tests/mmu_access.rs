//! The `mmu-access` conformance firmware: Umbra's interpreter, KVM and QEMU's TCG must record
//! the same faults, error codes, CR2 values and accessed/dirty bits for every case each of them
//! runs. The firmware prints one digest line per (group, configuration) and a total; a case
//! group one backend skips (a feature its CPUID lacks) must be one the other says it skipped.
//!
//! The QEMU comparison uses `mmu-access-qemu`, the same firmware with QEMU TCG's known
//! deviations masked on every backend alike (see `qemu_masks` in `firmware/asm/mmu-access.s`):
//! P clear in reserved-bit error codes, accessed flags set by faulting walks, and EFLAGS.AC
//! lifting SMAP for implicit supervisor reads. KVM (here PVM, whose page faults KVM's
//! shadow-paging walker decides) agrees with the interpreter on every case both run, so no
//! KVM case is excluded.

mod common;

use std::collections::BTreeSet;

use common::{have_program, image_file, kvm_usable, run_qemu_tcg, run_umbra, text};

/// What the interpreter records: every group but the protection-key ones (it does not
/// advertise PKU), under all 16 configurations. A change here is a change in what the
/// interpreter or its MMU does on some case; the per-line digests say which group and
/// configuration, and KVM and QEMU say which backend is right.
const EMU_TOTAL: &str = "33920 cases, 26940 faults, digest 0x35e8eeb4fc55e5a7";

/// The groups, in the order the firmware runs them.
const GROUPS: [&str; 18] = [
    "pte",
    "pde",
    "pdpte",
    "pml4e",
    "pde-2m",
    "pdpte-1g",
    "pml4e-rsvd-ps",
    "pml4e-rsvd-51",
    "pdpte-rsvd-51",
    "pde-rsvd-51",
    "pte-rsvd-51",
    "pde-2m-rsvd-13",
    "pde-2m-rsvd-51",
    "pdpte-1g-rsvd-13",
    "pdpte-1g-rsvd-51",
    "pte-pkey-ad",
    "pte-pkey-wd",
    "pte-pkey-ad-wd",
];

/// The protection-key groups, which need PKU.
const PKEY_GROUPS: [&str; 3] = ["pte-pkey-ad", "pte-pkey-wd", "pte-pkey-ad-wd"];

/// What one run printed.
#[derive(Debug, Default)]
struct Report {
    /// Each case line, "<group> wp=W smep=S smap=M nxe=N" to "<n> cases, <f> faults, digest
    /// 0x<h>", in the order printed.
    lines: Vec<(String, String)>,
    /// Groups skipped for a missing feature.
    skipped_groups: BTreeSet<String>,
    /// Configuration bits ("smep", ...) whose configurations were skipped.
    skipped_bits: BTreeSet<String>,
    /// The total line's counts and digest.
    total: Option<String>,
}

impl Report {
    /// Parses the firmware's output; any line it does not print is an error, so that a fatal
    /// stop (an unexpected fault) fails the test with the firmware's own words.
    fn parse(stdout: &str) -> Report {
        const PREFIX: &str = "umbra mmu-access: ";
        let mut report = Report::default();
        for line in stdout.lines() {
            if let Some(own) = line.strip_prefix(PREFIX) {
                if let Some(total) = own.strip_prefix("total: ") {
                    report.total = Some(total.to_owned());
                } else if let Some(bit) = own
                    .strip_suffix("=1 is skipped")
                    .and_then(|rest| rest.rsplit(": ").next())
                {
                    report.skipped_bits.insert(bit.to_owned());
                } else {
                    let boot = ["real mode", "protected mode", "long mode (4-level paging)"];
                    assert!(
                        boot.contains(&own) || own.starts_with("excluded access kinds:"),
                        "unexpected line: {line}"
                    );
                }
            } else if let Some((group, _reason)) = line.split_once(": skipped, ") {
                report.skipped_groups.insert(group.to_owned());
            } else if let Some((key, value)) = line.split_once(": ")
                && key.contains(" wp=")
            {
                report.lines.push((key.to_owned(), value.to_owned()));
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
        let group = key.split(' ').next().unwrap_or_default();
        self.skipped_groups.contains(group)
            || self
                .skipped_bits
                .iter()
                .any(|bit| key.contains(&format!(" {bit}=1")))
    }
}

/// Asserts that two runs agree on every line both ran, that each line only one ran is one
/// the other skipped, and, when both ran the same lines, that the totals agree.
fn assert_agree(a_name: &str, a: &Report, b_name: &str, b: &Report) {
    let mut problems = Vec::new();
    for (key, ours) in &a.lines {
        match b.line(key) {
            Some(theirs) if theirs == ours => {}
            Some(theirs) => problems.push(format!("{key}: {a_name} {ours}; {b_name} {theirs}")),
            None if b.skipped(key) => {}
            None => problems.push(format!("{key}: {b_name} neither ran nor skipped it")),
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
    if keys(a) == keys(b) {
        assert_eq!(a.total, b.total, "{a_name} and {b_name} totals");
    } else {
        eprintln!(
            "{a_name} and {b_name} ran different case groups ({a_name} skipped {:?} {:?}, \
             {b_name} skipped {:?} {:?}): their totals are not compared",
            a.skipped_groups, a.skipped_bits, b.skipped_groups, b.skipped_bits
        );
    }
}

/// Runs `firmware` on Umbra with `accel`; it must exit with status 0.
fn run_on_umbra(firmware: &str, accel: &str) -> Report {
    let out = run_umbra(&["run", "--firmware", firmware, "--accel", accel]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{accel}: {stdout}{}",
        text(&out.stderr)
    );
    Report::parse(&stdout)
}

/// Runs a ROM on QEMU's TCG with `cpu`; the firmware's status 0 is QEMU's exit code 1.
fn run_on_qemu(rom: &str, cpu: &str) -> Report {
    let out = run_qemu_tcg(rom, &["-cpu", cpu]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    Report::parse(&stdout)
}

/// The interpreter runs every group it has the features for, under every configuration, one
/// line each, and records what it always has.
#[test]
fn emu_runs_every_case_group_and_records_the_known_digest() {
    let emu = run_on_umbra("mmu-access", "emu");
    let skipped: BTreeSet<String> = PKEY_GROUPS.iter().map(|g| g.to_string()).collect();
    assert_eq!(emu.skipped_groups, skipped);
    assert!(emu.skipped_bits.is_empty(), "{:?}", emu.skipped_bits);
    let mut expected_keys = Vec::new();
    for group in GROUPS.iter().filter(|g| !PKEY_GROUPS.contains(g)) {
        for config in 0..16 {
            let bit = |n: u32| (config >> n) & 1;
            expected_keys.push(format!(
                "{group} wp={} smep={} smap={} nxe={}",
                bit(0),
                bit(1),
                bit(2),
                bit(3)
            ));
        }
    }
    let keys: Vec<_> = emu.lines.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, expected_keys);
    let cases: u64 = emu
        .lines
        .iter()
        .map(|(_, v)| v.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(cases, 33920);
    assert_eq!(emu.total.as_deref(), Some(EMU_TOTAL));
}

#[test]
fn emu_and_kvm_agree_on_every_case_both_run() {
    if !kvm_usable("emu_and_kvm_agree_on_every_case_both_run") {
        return;
    }
    let emu = run_on_umbra("mmu-access", "emu");
    let kvm = run_on_umbra("mmu-access", "kvm");
    assert_agree("emu", &emu, "kvm", &kvm);
}

/// `-cpu max` for SMEP, SMAP and 1 GiB pages, without PKU, which the interpreter lacks.
#[test]
fn qemu_tcg_agrees_with_emu_once_its_known_deviations_are_masked() {
    let test = "qemu_tcg_agrees_with_emu_once_its_known_deviations_are_masked";
    if !have_program(test, "qemu-system-x86_64") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rom = image_file(dir.path(), umbra_firmware::test_images::mmu_access_qemu());
    let qemu = run_on_qemu(&rom, "max,-pku");
    let emu = run_on_umbra(&rom, "emu");
    assert!(
        qemu.skipped_groups
            .iter()
            .all(|g| PKEY_GROUPS.contains(&g.as_str()))
    );
    assert_agree("emu", &emu, "qemu-tcg", &qemu);
}

/// QEMU's TCG has PKU: the protection-key groups run there, one line per configuration.
#[test]
fn protection_key_groups_run_where_the_cpu_has_pku() {
    if !have_program(
        "protection_key_groups_run_where_the_cpu_has_pku",
        "qemu-system-x86_64",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rom = image_file(dir.path(), umbra_firmware::find("mmu-access").unwrap());
    let qemu = run_on_qemu(&rom, "max");
    assert!(qemu.skipped_groups.is_empty(), "{:?}", qemu.skipped_groups);
    for group in PKEY_GROUPS {
        let lines = qemu
            .lines
            .iter()
            .filter(|(k, _)| k.split(' ').next() == Some(group))
            .count();
        assert_eq!(lines, 16, "{group}");
    }
}

#[test]
fn reports_parse() {
    let report = Report::parse(
        "umbra mmu-access: real mode\n\
         umbra mmu-access: smep not advertised (cpuid.7.0:ebx[7] = 0): smep=1 is skipped\n\
         pte wp=0 smep=0 smap=0 nxe=0: 640 cases, 508 faults, digest 0x1\n\
         pdpte-1g: skipped, 1 GiB pages not advertised (cpuid.80000001h:edx[26] = 0)\n\
         umbra mmu-access: total: 640 cases, 508 faults, digest 0x2\n",
    );
    assert_eq!(
        report.line("pte wp=0 smep=0 smap=0 nxe=0"),
        Some("640 cases, 508 faults, digest 0x1")
    );
    assert!(report.skipped("pdpte-1g wp=0 smep=0 smap=0 nxe=0"));
    assert!(report.skipped("pte wp=0 smep=1 smap=0 nxe=0"));
    assert!(!report.skipped("pte wp=0 smep=0 smap=0 nxe=0"));
    assert_eq!(
        report.total.as_deref(),
        Some("640 cases, 508 faults, digest 0x2")
    );
}
