//! Guests booted end to end: the built-in firmware on the emulator and on KVM, and the same
//! image on QEMU.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{have_program, kvm_usable, run_umbra, text};

/// What the `demo` firmware prints when every check passes.
const DEMO_OUTPUT: &str = "\
umbra demo: real mode
umbra demo: protected mode
umbra demo: long mode (4-level paging)
check cr3 switch: space 1 reads 0x1111 ok
check cr3 switch: space 2 reads 0x2222 ok
check cr3 switch: space 3 reads 0x3333 ok
check cr0.wp=0: write to read-only page stores 0x5a5a ok
check cr0.wp=1: write to read-only page faults with cr2 0x400000001000 ok
check cr0.wp=1: page fault error code 0x3 ok
check 2 MiB page: virtual write, physical read gives 0x2000c0de ok
check 2 MiB page: physical write, virtual read gives 0x2000f00d ok
umbra demo: all 8 checks passed
";

/// Writes a test-only firmware image to a file a command line can name.
fn image_file(dir: &Path, image: &umbra_firmware::Image) -> String {
    let path = dir.join(format!("{}.rom", image.name));
    std::fs::write(&path, image.rom).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `qemu-system-x86_64` on a ROM image as QEMU users run test firmware.
fn run_qemu(rom: &str) -> Output {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-bios", rom, "-accel", "tcg", "-m", "128M", "-display", "none",
    ])
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
    .args([
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-nodefaults",
    ]);
    let child = qemu
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("qemu starts");
    let pid = child.id();
    // A guest that hangs must not hang the test suite.
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output().expect("qemu runs");
    drop(watchdog);
    out
}

#[test]
fn demo_boots_on_kvm_and_passes_every_check() {
    if !kvm_usable("demo_boots_on_kvm_and_passes_every_check") {
        return;
    }
    let out = run_umbra(&["run", "--accel", "kvm"]);
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), DEMO_OUTPUT, "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.starts_with("umbra: kvm: isa-debug-exit, status 0; "),
        "{summary}"
    );
    assert!(summary.ends_with(" exits"), "{summary}");
}

#[test]
fn demo_boots_on_the_emulator_and_passes_every_check() {
    let out = run_umbra(&["run", "--accel", "emu"]);
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), DEMO_OUTPUT, "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.starts_with("umbra: emu: isa-debug-exit, status 0; "),
        "{summary}"
    );
}

#[test]
fn the_default_command_boots_the_demo_and_says_why_it_chose_its_backend() {
    let out = run_umbra(&["run"]);
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), DEMO_OUTPUT, "stderr: {stderr}");
    let choice = stderr.lines().next().unwrap();
    assert!(
        choice.starts_with("umbra: accel emu: ") || choice.starts_with("umbra: accel kvm: "),
        "{choice}"
    );
    assert!(out.status.success());
}

/// The backends this host can run.
fn backends(test: &str) -> Vec<&'static str> {
    let mut backends = vec!["emu"];
    if kvm_usable(test) {
        backends.push("kvm");
    }
    backends
}

#[test]
fn a_failing_firmware_check_fails_the_run_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let rom = image_file(dir.path(), umbra_firmware::test_images::demo_fail());
    for accel in backends("a_failing_firmware_check_fails_the_run_on_every_backend") {
        let out = run_umbra(&["run", "--accel", accel, "--firmware", &rom]);
        let stdout = text(&out.stdout);
        let failed = "check cr3 switch: space 2 reads 0x2223 FAILED (expected 0x2222)\n";
        assert!(stdout.contains(failed), "{accel}: {stdout}");
        assert!(
            stdout.ends_with("umbra demo: 1 of 8 checks failed\n"),
            "{accel}: {stdout}"
        );
        assert_eq!(out.status.code(), Some(1), "{accel}");
        let args = [
            "run",
            "--accel",
            accel,
            "--firmware",
            &rom,
            "--exit-code",
            "qemu",
        ];
        assert_eq!(run_umbra(&args).status.code(), Some(3), "{accel}");
    }
}

#[test]
fn serial_output_can_go_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.txt");
    let target = format!("file:{}", log.display());
    let out = run_umbra(&["run", "--accel", "emu", "--serial", &target]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(log).unwrap(), DEMO_OUTPUT);
}

#[test]
fn demo_prints_the_same_and_exits_the_same_on_qemu_and_every_backend() {
    let test = "demo_prints_the_same_and_exits_the_same_on_qemu_and_every_backend";
    if !have_program(test, "qemu-system-x86_64") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for image in [
        umbra_firmware::find("demo").unwrap(),
        umbra_firmware::test_images::demo_fail(),
    ] {
        let rom = image_file(dir.path(), image);
        let qemu = run_qemu(&rom);
        for accel in backends(test) {
            let args = [
                "run",
                "--accel",
                accel,
                "--firmware",
                &rom,
                "--exit-code",
                "qemu",
            ];
            let umbra = run_umbra(&args);
            assert_eq!(
                text(&umbra.stdout),
                text(&qemu.stdout),
                "{} on {accel}",
                image.name
            );
            assert_eq!(
                umbra.status.code(),
                qemu.status.code(),
                "{} on {accel}",
                image.name
            );
        }
    }
}
