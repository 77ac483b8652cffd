//! What the end-to-end tests share: running the `umbra` binary and knowing what the host has.
// Each test binary uses only some of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// A `umbra` command with `args`.
pub fn umbra(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_umbra"));
    command.args(args);
    command
}

/// Runs `umbra` with `args` and returns what it did.
pub fn run_umbra(args: &[&str]) -> Output {
    umbra(args).output().expect("umbra starts")
}

/// Whether KVM can be used here; if not, says the test is skipped.
pub fn kvm_usable(test: &str) -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        eprintln!("skipped {test}: /dev/kvm is not available on this host");
    }
    usable
}

/// Whether `program` is on PATH; if not, says the test is skipped.
pub fn have_program(test: &str, program: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| Path::new(&dir).join(program).is_file())
    });
    if !found {
        eprintln!("skipped {test}: {program} is not installed");
    }
    found
}

/// The text of a process's stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a firmware image (a test-only one, say) to `dir` as `<name>.rom`, a file
/// `umbra run --firmware` and QEMU's `-bios` can name; returns its path.
pub fn image_file(dir: &Path, image: &umbra_firmware::Image) -> String {
    let path = dir.join(format!("{}.rom", image.name));
    std::fs::write(&path, image.rom).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs a ROM image on `qemu-system-x86_64 -accel tcg` with Umbra's machine (128 MiB,
/// isa-debug-exit at 0xf4, the serial port on stdout) and `args` added, under `timeout`
/// so that a guest that hangs cannot hang the test suite. QEMU exits with
/// `(status << 1) | 1` for the guest's isa-debug-exit status.
pub fn run_qemu_tcg(rom: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["120", "qemu-system-x86_64", "-bios", rom, "-accel", "tcg"])
        .args(["-m", "128M", "-display", "none"])
        .args(["-nodefaults", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-serial", "stdio"])
        .args(args)
        .output()
        .expect("qemu starts")
}
