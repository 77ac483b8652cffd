//! The JIT against code a translator must not get wrong: the `jit-test` firmware rewrites
//! code that has run hot (from outside, and from inside the block itself), runs code through
//! a second virtual alias and through one address mapped to two frames by CR3 switches, and
//! faults in the middle of a hot block. It must print the same on the JIT translating at once,
//! on the JIT's default threshold, on the interpreter alone, on KVM and on QEMU.

mod common;

use common::{have_program, image_file, kvm_usable, run_qemu_tcg, run_umbra, text};

/// Every check line and the summary, as the firmware prints them.
fn checks(serial: &str) -> Vec<&str> {
    serial
        .lines()
        .filter(|line| line.starts_with("check ") || line.starts_with("umbra jit-test: "))
        .filter(|line| !line.ends_with(" mode") && !line.contains("mode ("))
        .collect()
}

/// Runs the firmware on Umbra with `args`: its check lines, after asserting that every
/// check passed.
fn run(rom: &str, args: &[&str]) -> String {
    let mut all = vec!["run", "--firmware", rom];
    all.extend_from_slice(args);
    let out = run_umbra(&all);
    let serial = text(&out.stdout);
    assert!(
        out.status.success() && serial.contains("umbra jit-test: all 19 checks passed"),
        "{args:?}: {}\n{serial}{}",
        out.status,
        text(&out.stderr)
    );
    checks(&serial).join("\n")
}

#[test]
fn jit_test_prints_the_same_on_the_jit_the_interpreter_kvm_and_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let rom = image_file(dir.path(), umbra_firmware::test_images::jit_test());
    let at_once = run(&rom, &["--accel", "emu", "--jit-threshold", "0"]);
    assert_eq!(run(&rom, &["--accel", "emu"]), at_once, "default threshold");
    assert_eq!(
        run(&rom, &["--accel", "emu", "--jit", "off"]),
        at_once,
        "interpreter"
    );
    if kvm_usable("jit_test on kvm") {
        let out = run_umbra(&["run", "--firmware", &rom, "--accel", "kvm"]);
        let errors = text(&out.stderr);
        if errors.contains("PVM") && errors.contains("instruction emulation failed") {
            // PVM runs CPL 0 code in KVM's instruction emulator, which has no SSE.
            eprintln!(
                "jit_test on kvm: PVM cannot run the SSE checks at CPL 0; compared up to them"
            );
            let serial = text(&out.stdout);
            assert!(at_once.starts_with(&checks(&serial).join("\n")), "{serial}");
        } else {
            assert_eq!(run(&rom, &["--accel", "kvm"]), at_once, "kvm");
        }
    }
    if have_program("jit_test on qemu", "qemu-system-x86_64") {
        // -cpu max: POPCNT, which the SSE check uses and QEMU's default CPU lacks.
        let out = run_qemu_tcg(&rom, &["-cpu", "max"]);
        // isa-debug-exit status 0 is QEMU's exit status 1.
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert_eq!(checks(&text(&out.stdout)).join("\n"), at_once, "qemu");
    }
}
