//! The `bench-ctxsw` firmware: its CR3 switches keep every address space's pages apart on the
//! emulator and on KVM, it says when the CPU has no PCIDs, and `umbra run --stats` prints the
//! emulator's MMU counters after a run.

mod common;

use common::{image_file, kvm_usable, run_umbra, text};

/// What `bench-ctxsw-quick` prints before its variants.
const QUICK_SETUP: &str = "umbra bench-ctxsw: 8 address spaces of 16 pages, 1000 switches per variant after 32 to warm up";

/// The variants, in the order they run.
const VARIANTS: [&str; 3] = ["cr3", "cr3-wp-toggle", "cr3-pcid-noflush"];

/// Checks a run's output: the boot lines, the setup line, then for each variant its bench line
/// (`switches` switches, some ticks) and its check, or for the PCID variant the line saying it
/// was skipped; then the summary. Returns the number of variants that ran.
fn assert_bench_output(stdout: &str, setup: &str, switches: Option<u32>) -> usize {
    let mut lines = stdout.lines();
    for boot in ["real mode", "protected mode", "long mode (4-level paging)"] {
        assert_eq!(
            lines.next(),
            Some(format!("umbra bench-ctxsw: {boot}").as_str()),
            "{stdout}"
        );
    }
    assert_eq!(lines.next(), Some(setup), "{stdout}");
    let mut ran = 0;
    for variant in VARIANTS {
        let line = lines.next().unwrap_or_default();
        if variant == "cr3-pcid-noflush" && line == "pcid: not supported, skipped" {
            continue;
        }
        if let Some(switches) = switches {
            let ticks = line
                .strip_prefix(&format!("bench {variant}: {switches} switches, "))
                .and_then(|rest| rest.strip_suffix(" tsc ticks"))
                .unwrap_or_else(|| panic!("not {variant}'s bench line: {line}\n{stdout}"));
            assert!(ticks.parse::<u64>().unwrap() > 0, "{line}");
        }
        let check = if switches.is_some() {
            lines.next().unwrap_or_default()
        } else {
            line
        };
        assert_eq!(
            check,
            format!("check {variant}: pages with a wrong count 0x0 ok"),
            "{stdout}"
        );
        ran += 1;
    }
    assert_eq!(
        lines.next(),
        Some(format!("umbra bench-ctxsw: all {ran} checks passed").as_str()),
        "{stdout}"
    );
    assert_eq!(lines.next(), None, "{stdout}");
    ran
}

/// Runs the quick variant on `accel` with `--stats`; returns stdout and stderr.
fn run_quick(accel: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let rom = image_file(dir.path(), umbra_firmware::test_images::bench_ctxsw_quick());
    let out = run_umbra(&["run", "--firmware", &rom, "--accel", accel, "--stats"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (text(&out.stdout), stderr)
}

/// The counters `--stats` printed: the stderr lines of the form `name value`.
fn counters(stderr: &str) -> Vec<(String, u64)> {
    stderr
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn quick_variant_passes_on_emu_and_prints_its_mmu_counters() {
    let (stdout, stderr) = run_quick("emu");
    assert_bench_output(&stdout, QUICK_SETUP, Some(1000));
    let counters = counters(&stderr);
    let names: Vec<_> = counters.iter().map(|(name, _)| name.as_str()).collect();
    for name in [
        "guest_walks",
        "tlb_hits",
        "tlb_misses",
        "root_hits",
        "root_misses",
        "shadow_pages_created",
    ] {
        assert!(names.contains(&name), "no {name} in {stderr}");
    }
    // 3 * 1032 switches, each writing CR3, and each touching 16 pages twice.
    let value = |name: &str| counters.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(
        value("root_hits") + value("root_misses") >= 3 * 1032,
        "{stderr}"
    );
    assert!(
        value("tlb_hits") + value("tlb_misses") >= 3 * 1032 * 32,
        "{stderr}"
    );
}

#[test]
fn quick_variant_passes_on_kvm() {
    if !kvm_usable("quick_variant_passes_on_kvm") {
        return;
    }
    let (stdout, stderr) = run_quick("kvm");
    assert_bench_output(&stdout, QUICK_SETUP, Some(1000));
    assert!(
        stderr.contains("umbra: kvm: no MMU counters (the backend keeps none)\n"),
        "{stderr}"
    );
    assert!(counters(&stderr).is_empty(), "{stderr}");
}

/// The warm-up image runs the same switches as the warm-up of `bench-ctxsw`, prints no bench
/// lines, and counts its pages the same way.
#[test]
fn warmup_variant_switches_without_timing() {
    let setup = "umbra bench-ctxsw: 8 address spaces of 16 pages, 0 switches per variant after 32 to warm up";
    for accel in ["emu", "kvm"] {
        if accel == "kvm" && !kvm_usable("warmup_variant_switches_without_timing") {
            continue;
        }
        let out = run_umbra(&["run", "--firmware", "bench-ctxsw-warmup", "--accel", accel]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_bench_output(&text(&out.stdout), setup, None);
    }
}
