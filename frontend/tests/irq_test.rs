//! The `irq-test` firmware: the PC's interrupt hardware programmed as an OS programs it (the
//! 8259 pair as Linux's init_8259A, the local APIC in virtual wire mode, PIT channel 0 at
//! 1000 Hz, the RTC's time and its periodic interrupt, a UART line sent one byte per THRE
//! interrupt). It prints only what does not depend on timing, so QEMU, the emulator and KVM
//! must print exactly `EXPECTED` and exit with status 0.

mod common;

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use common::{have_program, image_file, kvm_usable, run_qemu_tcg, text};

/// What the firmware prints when every check passes, wherever it runs.
const EXPECTED: &str = "\
umbra irq-test: real mode
umbra irq-test: protected mode
umbra irq-test: long mode (4-level paging)
check pic: master imr reads back the probe 0xfb ok
check pit channel 2: 10 ms one-shot timed by the tsc 0x1 ok
check pit irq0: request seen in the master's irr 0x1 ok
check pit irq0: interrupts taken of 20 0x14 ok
check pit irq0: 1st to 20th within 5-100 ms by the tsc 0x1 ok
check rtc: time read clear of update cycles 0x1 ok
check rtc: fields invalid for register b's format 0x0 ok
check rtc irq8: interrupts taken of 10 0xa ok
check rtc irq8: register c reads without irqf and pf 0x0 ok
umbra irq-test: uart: this line went out one byte per thre interrupt
check uart irq4: bytes left unsent 0x0 ok
check uart irq4: iir reads naming another cause 0x0 ok
check pic: interrupts on other vectors 0x0 ok
umbra irq-test: all 12 checks passed
";

/// Held by each test while its guest runs. The firmware times interrupts against the TSC
/// with a wide margin, but guests running side by side on a small host take turns on its cores,
/// and an emulated timer loses the ticks that come while its guest waits for a turn.
static ONE_GUEST_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Waits for this test's turn to run its guest (a test that failed holding the turn has
/// still given it back).
fn guest_turn() -> MutexGuard<'static, ()> {
    ONE_GUEST_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `umbra run --firmware irq-test` on `accel` under `timeout`, so that a backend that
/// loses an interrupt and halts for good cannot hang the test suite.
fn run_on_umbra(accel: &str) -> Output {
    let _turn = guest_turn();
    Command::new("timeout")
        .arg("120")
        .arg(env!("CARGO_BIN_EXE_umbra"))
        .args(["run", "--firmware", "irq-test", "--accel", accel])
        .output()
        .expect("umbra starts")
}

/// Checks a run of `umbra` on `accel` printed `EXPECTED` and ended through isa-debug-exit
/// with status 0.
fn assert_passes_on_umbra(accel: &str) {
    let out = run_on_umbra(accel);
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), EXPECTED, "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with(&format!("umbra: {accel}: isa-debug-exit, status 0; ")),
        "{summary}"
    );
}

#[test]
fn qemu_tcg_takes_every_interrupt() {
    if !have_program("qemu_tcg_takes_every_interrupt", "qemu-system-x86_64") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = umbra_firmware::find("irq-test").expect("irq-test is built in");
    let rom = image_file(dir.path(), image);
    let out = {
        let _turn = guest_turn();
        run_qemu_tcg(&rom, &[])
    };
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), EXPECTED, "stderr: {stderr}");
    // QEMU exits with (status << 1) | 1.
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
}

#[test]
fn emu_takes_every_interrupt() {
    assert_passes_on_umbra("emu");
}

#[test]
fn kvm_takes_every_interrupt() {
    if !kvm_usable("kvm_takes_every_interrupt") {
        return;
    }
    assert_passes_on_umbra("kvm");
}
