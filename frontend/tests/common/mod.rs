//! What the end-to-end tests share: running the `umbra` binary and knowing what the host has.
// Each test binary uses only some of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

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

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `umbra run` with a gdb server on `port`, once it says it listens; its stderr lines so far.
pub fn start_umbra(args: &[impl AsRef<std::ffi::OsStr>], port: u16) -> (Child, Vec<String>) {
    let address = format!("tcp::{port}");
    let mut child = umbra(&["run"])
        .args(args)
        .args(["--gdb", &address])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("umbra starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("umbra ended before listening: {lines:?}");
        }
        let listening = line.contains("gdb: listening");
        lines.push(line);
        if listening {
            break;
        }
    }
    // The rest of stderr is read when the test collects the output.
    child.stderr = Some(stderr.into_inner());
    (child, lines)
}

/// Runs gdb in batch mode (on `elf`'s symbols, if given) with `commands` after connecting to
/// `port`, for at most `seconds`; returns what it printed.
pub fn run_gdb(port: u16, elf: Option<&str>, seconds: u32, commands: &[&str]) -> String {
    let mut gdb = Command::new("timeout");
    gdb.arg(seconds.to_string())
        .args(["gdb", "-batch", "-nx"])
        .args(["-ex", "set pagination off"])
        .args(["-ex", "set architecture i386:x86-64"])
        .args(["-ex", &format!("target remote 127.0.0.1:{port}")]);
    for command in commands {
        gdb.args(["-ex", command]);
    }
    let output = gdb.args(elf).output().expect("gdb starts");
    format!("{}{}", text(&output.stdout), text(&output.stderr))
}
