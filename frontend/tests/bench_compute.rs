//! The `bench-compute` firmware: its kernels give their fixed checksums on the emulator, on
//! KVM and on QEMU, and `umbra firmware dump` writes its ROM for QEMU's `-bios`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{have_program, kvm_usable, run_umbra, text};

/// The check lines of `bench-compute` (primes below 2^20, 4 MiB of data, 2^16 values).
const FULL_CHECKS: &str = "\
check sieve: primes counted 0x14069 ok
check crc32: crc of the xorshift data 0xec99a111 ok
check memcpy-mov: hash of the copy 0xb05c2eedd39d6509 ok
check memcpy-rep-movsq: hash of the copy 0xb05c2eedd39d6509 ok
check heapsort: hash of the sorted array 0x46919f3333cbb408 ok
";

/// The check lines of `bench-compute-quick` (primes below 2^16, 64 KiB, 2^12 values).
const QUICK_CHECKS: &str = "\
check sieve: primes counted 0x198e ok
check crc32: crc of the xorshift data 0x682dbf5a ok
check memcpy-mov: hash of the copy 0x817edad04b2e47e8 ok
check memcpy-rep-movsq: hash of the copy 0x817edad04b2e47e8 ok
check heapsort: hash of the sorted array 0xc7a8b5980dc9f6a9 ok
";

/// The kernels, in the order they run and report.
const KERNELS: [&str; 5] = [
    "sieve",
    "crc32",
    "memcpy-mov",
    "memcpy-rep-movsq",
    "heapsort",
];

/// One `bench <name>: <ticks> tsc ticks, <instructions> instructions` line.
#[derive(Debug, PartialEq)]
struct BenchLine {
    name: String,
    ticks: u64,
    instructions: u64,
}

fn parse_bench_line(line: &str) -> Option<BenchLine> {
    let (name, rest) = line.strip_prefix("bench ")?.split_once(": ")?;
    let (ticks, rest) = rest.split_once(" tsc ticks, ")?;
    let instructions = rest.strip_suffix(" instructions")?;
    Some(BenchLine {
        name: name.to_owned(),
        ticks: ticks.parse().ok()?,
        instructions: instructions.parse().ok()?,
    })
}

/// Checks what an image printed on the serial port: the banners, the checks, one bench line
/// per kernel whose figures add up to the total, and the summary.
fn assert_bench_output(stdout: &str, checks: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    let expected_start = [
        "umbra bench-compute: real mode",
        "umbra bench-compute: protected mode",
        "umbra bench-compute: long mode (4-level paging)",
        "umbra bench-compute: the kernels run at cpl 3",
    ];
    assert_eq!(lines[..4], expected_start, "{stdout}");
    let check_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("check "))
        .collect();
    assert_eq!(check_lines, checks.lines().collect::<Vec<_>>(), "{stdout}");
    let bench: Vec<BenchLine> = lines
        .iter()
        .filter(|l| l.starts_with("bench "))
        .map(|l| parse_bench_line(l).unwrap_or_else(|| panic!("malformed: {l}")))
        .collect();
    let names: Vec<&str> = bench.iter().map(|b| b.name.as_str()).collect();
    let mut expected_names = KERNELS.to_vec();
    expected_names.push("total");
    assert_eq!(names, expected_names, "{stdout}");
    let (kernels, total) = bench.split_at(KERNELS.len());
    assert_eq!(
        total[0].ticks,
        kernels.iter().map(|b| b.ticks).sum::<u64>(),
        "{stdout}"
    );
    assert_eq!(
        total[0].instructions,
        kernels.iter().map(|b| b.instructions).sum::<u64>(),
        "{stdout}"
    );
    assert!(kernels.iter().all(|b| b.ticks > 0), "{stdout}");
    assert_eq!(
        lines.last().copied(),
        Some("umbra bench-compute: all 5 checks passed"),
        "{stdout}"
    );
}

/// Runs `umbra run` on an image and checks its output and exit status.
fn assert_passes_on_umbra(firmware: &str, accel: &str, checks: &str) {
    let out = run_umbra(&["run", "--firmware", firmware, "--accel", accel]);
    let stderr = text(&out.stderr);
    assert_bench_output(&text(&out.stdout), checks);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
}

/// Writes the quick variant, a test-only image, to a file `umbra run --firmware` can name.
fn quick_image_file(dir: &Path) -> String {
    let path = dir.join("bench-compute-quick.rom");
    std::fs::write(
        &path,
        umbra_firmware::test_images::bench_compute_quick().rom,
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn bench_compute_passes_on_emu() {
    if cfg!(debug_assertions) {
        eprintln!(
            "skipped bench_compute_passes_on_emu: the interpreter takes about a minute on it \
             unoptimized (run with --release); quick_variant_passes_on_emu covers the kernels"
        );
        return;
    }
    assert_passes_on_umbra("bench-compute", "emu", FULL_CHECKS);
}

#[test]
fn bench_compute_passes_on_kvm() {
    if !kvm_usable("bench_compute_passes_on_kvm") {
        return;
    }
    assert_passes_on_umbra("bench-compute", "kvm", FULL_CHECKS);
}

#[test]
fn quick_variant_passes_on_emu() {
    let dir = tempfile::tempdir().unwrap();
    let rom = quick_image_file(dir.path());
    assert_passes_on_umbra(&rom, "emu", QUICK_CHECKS);
}

#[test]
fn quick_variant_passes_on_kvm() {
    if !kvm_usable("quick_variant_passes_on_kvm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rom = quick_image_file(dir.path());
    assert_passes_on_umbra(&rom, "kvm", QUICK_CHECKS);
}

/// The checksums are the architecture's, not Umbra's: QEMU's TCG gives the same ones, with
/// the quick variant's ROM as `umbra firmware dump` would write the full one.
#[test]
fn quick_variant_passes_on_qemu_tcg() {
    if !have_program("quick_variant_passes_on_qemu_tcg", "qemu-system-x86_64") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rom = quick_image_file(dir.path());
    // `timeout`: a guest that hangs must not hang the test suite.
    let out: Output = Command::new("timeout")
        .args(["60", "qemu-system-x86_64"])
        .args([
            "-bios", &rom, "-accel", "tcg", "-m", "128M", "-display", "none",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-serial", "stdio", "-nodefaults", "-no-reboot"])
        .output()
        .expect("qemu starts");
    assert_bench_output(&text(&out.stdout), QUICK_CHECKS);
    // QEMU's isa-debug-exit exits with (status << 1) | 1.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn firmware_dump_writes_the_builtin_rom() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench-compute.rom");
    let out = run_umbra(&["firmware", "dump", "bench-compute", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let image = umbra_firmware::find("bench-compute").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), image.rom);
}

#[test]
fn firmware_dump_refuses_unknown_names_and_unwritable_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.rom");
    let unknown = run_umbra(&["firmware", "dump", "no-such-image", file.to_str().unwrap()]);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(
        text(&unknown.stderr),
        "umbra: no built-in firmware named 'no-such-image' (umbra firmware list shows them)\n"
    );
    assert!(!file.exists());

    let unwritable = dir.path().join("missing-dir").join("x.rom");
    let out = run_umbra(&["firmware", "dump", "demo", unwritable.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("umbra: cannot write "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn bench_lines_parse() {
    assert_eq!(
        parse_bench_line("bench memcpy-rep-movsq: 123 tsc ticks, 45 instructions"),
        Some(BenchLine {
            name: "memcpy-rep-movsq".to_owned(),
            ticks: 123,
            instructions: 45,
        })
    );
    assert_eq!(parse_bench_line("bench sieve: 1 tsc ticks"), None);
    assert_eq!(parse_bench_line("check sieve: x ok"), None);
}
