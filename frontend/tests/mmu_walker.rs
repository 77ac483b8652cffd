//! The emulator's TLB and shadow pages against its page walker alone: the MMU conformance
//! firmware and the context-switch benchmark print the same with `--mmu shadow` and with
//! `--mmu walker`, every case and every check.

mod common;

use common::{kvm_usable, run_umbra, text};

/// Runs built-in `firmware` on the emulator with `--mmu mode`; its serial output.
fn output(firmware: &str, mode: &str) -> String {
    let out = run_umbra(&[
        "run",
        "--accel",
        "emu",
        "--mmu",
        mode,
        "--firmware",
        firmware,
    ]);
    assert!(
        out.status.success(),
        "{firmware} --mmu {mode}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn mmu_access_gives_the_same_digest_with_and_without_the_caches() {
    let cached = output("mmu-access", "shadow");
    assert!(cached.contains("umbra mmu-access: total: "), "{cached}");
    assert_eq!(cached, output("mmu-access", "walker"));
}

#[test]
fn the_demo_passes_with_the_walker_alone() {
    assert_eq!(output("demo", "shadow"), output("demo", "walker"));
}

#[test]
fn the_walker_switch_is_refused_for_kvm() {
    if !kvm_usable("the_walker_switch_is_refused_for_kvm") {
        return;
    }
    let out = run_umbra(&["run", "--accel", "kvm", "--mmu", "walker"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--mmu walker applies to the emulator only"));
}
