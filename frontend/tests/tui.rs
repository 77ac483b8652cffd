//! `umbra run --tui` in a real terminal: tmux runs it on the `demo` firmware, a test types
//! keys (a walk while paused at reset, a single step, resume, a walk of the final page tables,
//! quit), reads the screen with capture-pane, and checks that the terminal is given back
//! (normal screen, canonical mode) when umbra exits. A second test boots the host's Debian
//! kernel under the TUI, when it is there. Skipped, saying so, without tmux.

mod common;
mod kernel;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a screen may take to show what is waited for (the emulator on a loaded host).
const PATIENCE: Duration = Duration::from_secs(120);

/// A tmux server of the test's own, with one session running a command.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `command` in a `width` x `height` terminal.
    fn start(command: &str, width: u16, height: u16) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let tmux = Tmux {
            socket: dir.path().join("tmux.sock"),
            _dir: dir,
        };
        let status = tmux
            .command()
            .args(["new-session", "-d", "-s", "umbra", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(command)
            .status()
            .expect("tmux starts");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&self.socket);
        command
    }

    /// Types `keys` (tmux's key names: "Escape", "Enter", or literal text with `literal`).
    fn send(&self, keys: &str, literal: bool) {
        let mut command = self.command();
        command.args(["send-keys", "-t", "umbra"]);
        if literal {
            command.arg("-l");
        }
        assert!(command.arg(keys).status().unwrap().success());
    }

    /// The screen as text.
    fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-t", "umbra"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the screen shows every one of `texts`, and returns it.
    fn wait_for(&self, texts: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if texts.iter().all(|text| screen.contains(text)) {
                return screen;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the screen never showed {texts:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A tmux format variable of the pane (`alternate_on`, ...).
    fn pane_variable(&self, name: &str) -> String {
        let output = self
            .command()
            .args(["display-message", "-p", "-t", "umbra"])
            .arg(format!("#{{{name}}}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The shell command tmux runs: umbra with `args`, then, once it exits, its status and the
/// terminal's mode as the shell finds it.
fn script(umbra: &Path, args: &str) -> String {
    format!(
        "{} {args}; echo UMBRA-EXIT-$?; stty -a | grep -o -- '-\\?icanon' | sed 's/^/MODE /'; sleep 600",
        umbra.display()
    )
}

#[test]
fn pause_walk_step_resume_and_quit_in_a_real_terminal() {
    if !common::have_program("pause_walk_step_resume_and_quit_in_a_real_terminal", "tmux") {
        return;
    }
    let umbra = Path::new(env!("CARGO_BIN_EXE_umbra"));
    let tmux = Tmux::start(
        &script(umbra, "run --tui -S --accel emu --firmware demo"),
        100,
        30,
    );

    // -S: paused at the reset vector, the paging state that of reset.
    tmux.wait_for(&["PAUSED", "rip 0xfff0", "cpu role:  paging off"]);
    // Focus moves back from the MMU pane to the vCPU's, which the small screen then shows.
    tmux.send("BTab", false);
    tmux.wait_for(&["mode  real", "CR0   0x60000010"]);

    // A walk while paused: paging is off, so the address is physical.
    tmux.send("w", true);
    tmux.wait_for(&["walk ADDR [r|w|x] [user|kernel]:"]);
    tmux.send("0x1000 w", true);
    tmux.send("Enter", false);
    tmux.wait_for(&["walk (esc closes)", "paging off: physical 0x1000"]);
    tmux.send("Escape", false);

    // One instruction: the far jump at the reset vector.
    tmux.send("s", true);
    let screen = tmux.wait_for(&["PAUSED"]);
    let stepped = Instant::now();
    let mut screen = screen;
    while screen.contains("rip 0xfff0 ") {
        assert!(
            stepped.elapsed() < PATIENCE,
            "the step never came:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
        screen = tmux.screen();
    }

    // Resume: the demo runs to its end, and the TUI stays up with the reason.
    tmux.send("p", true);
    let screen = tmux.wait_for(&[
        "ENDED: isa-debug-exit, status 0",
        "all 8 checks passed",
        "mode  long 64-bit",
    ]);
    assert!(screen.contains("4-level"), "{screen}");

    // A walk through the demo's final 4-level tables.
    tmux.send("w", true);
    tmux.send("0x1000", true);
    tmux.send("Enter", false);
    tmux.wait_for(&["PML4E[0]", "-> physical"]);
    tmux.send("Escape", false);

    // Quit: umbra exits with the guest's status, and the terminal is the shell's again.
    tmux.send("q", true);
    let screen = tmux.wait_for(&["UMBRA-EXIT-0", "MODE "]);
    assert!(
        screen.contains("MODE icanon"),
        "raw mode was left on:\n{screen}"
    );
    assert_eq!(
        tmux.pane_variable("alternate_on"),
        "0",
        "still on the alternate screen"
    );
    assert!(
        screen.contains("umbra: emu:"),
        "the summary line follows the TUI:\n{screen}"
    );
}

#[test]
fn linux_boots_under_the_tui_with_its_roots_tlb_and_jit_in_view() {
    let test = "linux_boots_under_the_tui_with_its_roots_tlb_and_jit_in_view";
    if !common::have_program(test, "tmux") {
        return;
    }
    let Some(kernel) = kernel::guest_available(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = kernel::initramfs(dir.path());
    let umbra = Path::new(env!("CARGO_BIN_EXE_umbra"));
    let args = format!(
        "run --tui --accel emu -m 512M -kernel {} -initrd {} -append 'console=ttyS0 pci=off umbra.quick'",
        kernel.display(),
        initrd.display()
    );
    // Large enough for every pane.
    let tmux = Tmux::start(&script(umbra, &args), 170, 45);
    let screen = tmux.wait_for(&[
        "ENDED: halted with interrupts disabled",
        kernel::USERSPACE_LINE,
        kernel::DONE_LINE,
    ]);
    for pane in [
        "cached roots",
        "shadow pages:",
        "TLB:",
        "JIT: blocks_translated",
        "memslots",
    ] {
        assert!(
            screen.contains(pane),
            "no {pane:?} on the screen:\n{screen}"
        );
    }
    assert!(screen.contains("mode  long 64-bit"), "{screen}");
    tmux.send("q", true);
    let screen = tmux.wait_for(&["UMBRA-EXIT-0", "MODE "]);
    assert!(
        screen.contains("MODE icanon"),
        "raw mode was left on:\n{screen}"
    );
}

#[test]
fn the_tui_needs_a_terminal() {
    let output = common::run_umbra(&["run", "--tui", "--accel", "emu"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        common::text(&output.stderr).trim(),
        "umbra: --tui needs a terminal on standard output"
    );
}
