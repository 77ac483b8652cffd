//! The serial console on a terminal, as a user meets it: `umbra run --firmware echo` on a
//! pseudo-terminal, typed into through its master side. The terminal must be in raw mode while
//! the guest runs and as it was afterwards; keys reach the guest (the echo firmware sends them
//! back), Ctrl-A Ctrl-A sends a Ctrl-A, Ctrl-A h prints the keys and Ctrl-A x quits; on each
//! backend. And without a terminal, piped bytes reach the guest as they are.
//!
//! One more types into a busybox shell on Debian's kernel (seconds with the JIT), and says it
//! skipped where the kernel or busybox is missing.

mod common;
mod kernel;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{kvm_usable, text, umbra};
use kernel::{DONE_LINE, guest_args, guest_available, initramfs};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{LocalModes, tcgetattr};

/// How long the guest may take to answer (KVM under PVM emulates every instruction).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
const CTRL_A: u8 = 0x01;
const CTRL_D: u8 = 0x04;

/// `umbra run` on a pseudo-terminal: standard input and output are its slave side, standard
/// error a pipe. Dropping it kills Umbra, so that a failed test leaves no guest spinning.
struct OnTerminal {
    child: Child,
    master: File,
    slave: OwnedFd,
    /// Everything Umbra wrote to the terminal so far.
    screen: Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn start(args: &[impl AsRef<std::ffi::OsStr>]) -> OnTerminal {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave: OwnedFd = File::options()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(name.to_str().unwrap())
            .unwrap()
            .into();
        let child = umbra(&["run"])
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::piped())
            .spawn()
            .expect("umbra starts");
        let master = File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let shown = screen.clone();
        // Reads until the test ends (the slave side stays open here, so reads never fail).
        std::thread::spawn(move || {
            let mut buffer = [0; 1024];
            while let Ok(read @ 1..) = reader.read(&mut buffer) {
                shown.lock().unwrap().extend_from_slice(&buffer[..read]);
            }
        });
        OnTerminal {
            child,
            master,
            slave,
            screen,
        }
    }

    /// Waits until the terminal shows `expected` after byte `from`; returns where it ends.
    fn wait_for(&self, expected: &[u8], from: usize) -> usize {
        self.wait_within(ANSWER_TIMEOUT, expected, from)
    }

    /// [`OnTerminal::wait_for`], for at most `limit`.
    fn wait_within(&self, limit: Duration, expected: &[u8], from: usize) -> usize {
        let start = Instant::now();
        loop {
            let screen = self.screen.lock().unwrap().clone();
            if let Some(at) = screen[from.min(screen.len())..]
                .windows(expected.len())
                .position(|window| window == expected)
            {
                return from + at + expected.len();
            }
            assert!(
                start.elapsed() < limit,
                "the terminal never showed {:?}; it shows {:?}",
                text(expected),
                text(&screen)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    /// Whether the terminal edits lines and echoes keys, as a shell leaves it.
    fn cooked(&self) -> bool {
        let modes = tcgetattr(&self.slave).unwrap().local_modes;
        modes.contains(LocalModes::ICANON | LocalModes::ECHO)
    }

    /// Waits for Umbra to end; its exit status and standard error.
    fn finish(&mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < ANSWER_TIMEOUT, "umbra did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Types into the echo firmware on `accel`: keys, an escaped Ctrl-A, the help, then Ctrl-D.
fn keys_reach_the_guest(accel: &str) {
    let mut terminal = OnTerminal::start(&["--accel", accel, "--firmware", "echo"]);
    let at = terminal.wait_for(b"umbra echo: ready", 0);
    assert!(!terminal.cooked(), "raw mode while the guest runs");
    terminal.type_keys(b"hello, guest");
    let at = terminal.wait_for(b"hello, guest", at);
    terminal.type_keys(&[CTRL_A, CTRL_A, b'!']);
    let at = terminal.wait_for(&[CTRL_A, b'!'], at);
    terminal.type_keys(&[CTRL_A, b'h']);
    let at = terminal.wait_for(b"Ctrl-A x        quit Umbra", at);
    terminal.type_keys(&[CTRL_D]);
    terminal.wait_for(b"umbra echo: end of input", at);
    let (status, stderr) = terminal.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("Ctrl-A x quits"), "{stderr}");
    assert!(stderr.contains("isa-debug-exit, status 0"), "{stderr}");
    assert!(terminal.cooked(), "the terminal's settings are back");
}

/// Quits the echo firmware, which would run forever, with Ctrl-A x.
fn ctrl_a_x_quits(accel: &str) {
    let mut terminal = OnTerminal::start(&["--accel", accel, "--firmware", "echo"]);
    terminal.wait_for(b"umbra echo: ready", 0);
    terminal.type_keys(&[CTRL_A, b'x']);
    let (status, stderr) = terminal.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains(&format!("umbra: {accel}: quit from the console (Ctrl-A x)")),
        "{stderr}"
    );
    assert!(terminal.cooked(), "the terminal's settings are back");
}

#[test]
fn keys_reach_the_guest_on_the_emulator() {
    keys_reach_the_guest("emu");
}

#[test]
fn ctrl_a_x_quits_on_the_emulator() {
    ctrl_a_x_quits("emu");
}

#[test]
fn keys_reach_the_guest_on_kvm() {
    if kvm_usable("keys_reach_the_guest_on_kvm") {
        keys_reach_the_guest("kvm");
    }
}

#[test]
fn ctrl_a_x_quits_on_kvm() {
    if kvm_usable("ctrl_a_x_quits_on_kvm") {
        ctrl_a_x_quits("kvm");
    }
}

#[test]
fn piped_input_reaches_the_guest_as_it_is() {
    let mut child = umbra(&["run", "--accel", "emu", "--firmware", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("umbra starts");
    // No escapes without a terminal: Ctrl-A and x are the guest's.
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&[b'a', CTRL_A, b'x', b'z', CTRL_D])
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let serial = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        serial.contains("ready; what you type comes back, Ctrl-D ends\na\x01xz\n"),
        "{serial:?}"
    );
    assert!(serial.ends_with("umbra echo: end of input\n"), "{serial:?}");
}

#[test]
fn a_shell_in_linux_answers_on_the_terminal() {
    let test = "a_shell_in_linux_answers_on_the_terminal";
    let Some(kernel) = guest_available(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path());
    let mut terminal = OnTerminal::start(&guest_args(
        "emu",
        &kernel,
        &initrd,
        "console=ttyS0 pci=off umbra.quick umbra.shell",
    ));
    // Booting takes minutes; the shell answers at once after that.
    let at = terminal.wait_within(
        Duration::from_secs(1800),
        b"umbra-init: shell (exit to power off)",
        0,
    );
    terminal.type_keys(b"echo answer $((6 * 7))\r");
    let at = terminal.wait_for(b"answer 42", at);
    terminal.type_keys(b"exit\r");
    terminal.wait_for(DONE_LINE.as_bytes(), at);
    let (status, stderr) = terminal.finish();
    eprintln!("{}{stderr}", text(&terminal.screen.lock().unwrap()));
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("halted with interrupts disabled"),
        "{stderr}"
    );
    assert!(terminal.cooked(), "the terminal's settings are back");
}
