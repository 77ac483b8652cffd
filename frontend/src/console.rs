//! The guest's serial console on the host's terminal, as QEMU's `-serial mon:stdio` gives it.
//!
//! When the serial port writes to Umbra's standard output and standard input and output are
//! both a terminal, [`Console::attach`] puts the terminal in raw mode as QEMU does (no line
//! editing, no echo, and no signals: Ctrl-C and Ctrl-Z go to the guest; output processing
//! stays on, so a bare `\n` still starts a new line) and sends each key to the UART. Ctrl-A
//! starts an escape: Ctrl-A x quits (while gdb holds the vCPU stopped, once gdb lets it run),
//! Ctrl-A h prints the escapes, Ctrl-A Ctrl-A sends a Ctrl-A. The terminal gets its settings
//! back when the [`Console`] is dropped: at the end of the run, on an error, and while a panic
//! unwinds; and before the process dies of SIGTERM, SIGHUP, SIGINT or SIGQUIT.
//!
//! When standard input is not a terminal (a pipe, a file), its bytes go to the UART as they
//! are, without escapes, until it ends. When it is a terminal but the serial port writes to a
//! file, nothing is read.
//!
//! Input is read on a thread of its own that is never joined, so a run never waits at its end
//! for input that does not come.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use rustix::termios::{
    self, ControlModes, InputModes, LocalModes, OptionalActions, SpecialCodeIndex, Termios,
};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;
use umbra_cpu::backend::VcpuKick;
use umbra_devices::run_control::{RunControl, StopReason};
use umbra_devices::uart::Uart;

/// The escape key: Ctrl-A, as in QEMU.
const CTRL_A: u8 = 0x01;
/// How long the reader waits before offering the UART again the bytes its queue had no room for.
const FULL_QUEUE_RETRY: Duration = Duration::from_millis(10);
/// What Ctrl-A h prints.
const HELP: &str = "\r\nCtrl-A h        print this help\r\n\
                    Ctrl-A x        quit Umbra\r\n\
                    Ctrl-A Ctrl-A   send Ctrl-A to the guest\r\n";

/// The console's way into the machine: the UART the keys go to, and the run it may stop.
pub struct ConsoleLink {
    uart: Arc<Mutex<Uart>>,
    control: Arc<RunControl>,
    kick: Arc<VcpuKick>,
}

impl ConsoleLink {
    /// A link typing into `uart` and stopping the run through `control`, kicking the vCPU
    /// through `kick` so that it sees either at once (on KVM a busy guest would otherwise take
    /// an interrupt only when it next exits).
    pub fn new(uart: Arc<Mutex<Uart>>, control: Arc<RunControl>, kick: Arc<VcpuKick>) -> Self {
        ConsoleLink {
            uart,
            control,
            kick,
        }
    }

    /// Hands `bytes` to the UART, waiting while its input queue is full; gives up once the run
    /// has been asked to stop.
    fn send(&self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.control.stop_reason().is_none() {
            let taken = self.uart.lock().push_input(bytes);
            bytes = &bytes[taken..];
            if taken > 0 {
                self.kick.kick();
            } else {
                thread::sleep(FULL_QUEUE_RETRY);
            }
        }
    }

    /// Ends the run, as the user's quit.
    fn quit(&self) {
        self.control.request_stop(StopReason::UserQuit);
        self.kick.kick();
    }
}

/// What one key typed on the interactive console does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// The byte goes to the guest.
    Send(u8),
    /// Nothing (Ctrl-A, waiting for its second key; or an escape Umbra does not have).
    Nothing,
    /// Print the escapes.
    Help,
    /// Quit Umbra.
    Quit,
}

/// QEMU's Ctrl-A escapes: the state between one key and the next.
#[derive(Debug, Default)]
struct Escapes {
    /// Ctrl-A came: the next key is an escape.
    after_ctrl_a: bool,
}

impl Escapes {
    fn key(&mut self, byte: u8) -> Action {
        if std::mem::take(&mut self.after_ctrl_a) {
            match byte {
                CTRL_A => Action::Send(CTRL_A),
                b'x' | b'X' => Action::Quit,
                b'h' | b'H' | b'?' => Action::Help,
                // As QEMU, an escape it does not know is dropped.
                _ => Action::Nothing,
            }
        } else if byte == CTRL_A {
            self.after_ctrl_a = true;
            Action::Nothing
        } else {
            Action::Send(byte)
        }
    }
}

/// The terminal in raw mode; dropping it puts the settings back.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal on standard input in raw mode, as QEMU's stdio character device does.
    fn enter() -> io::Result<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.input_modes -= InputModes::IGNBRK
            | InputModes::BRKINT
            | InputModes::PARMRK
            | InputModes::ISTRIP
            | InputModes::INLCR
            | InputModes::IGNCR
            | InputModes::ICRNL
            | InputModes::IXON;
        raw.local_modes -=
            LocalModes::ECHO | LocalModes::ECHONL | LocalModes::ICANON | LocalModes::IEXTEN;
        raw.local_modes -= LocalModes::ISIG;
        raw.control_modes -= ControlModes::CSIZE | ControlModes::PARENB;
        raw.control_modes |= ControlModes::CS8;
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

/// Puts the terminal on standard input back as `saved` had it.
fn restore(saved: &Termios) {
    // Nothing more can be done if this fails (the terminal has gone).
    let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, saved);
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore(&self.saved);
    }
}

/// The console for one run: holds the terminal in raw mode while it lives.
pub struct Console {
    raw_mode: Option<RawMode>,
}

impl Console {
    /// Connects standard input to the guest's serial port through `link`, as the module's
    /// documentation says: interactively when `serial_on_stdout` and standard input and output
    /// are terminals, as plain bytes when standard input is not a terminal.
    pub fn attach(link: ConsoleLink, serial_on_stdout: bool) -> io::Result<Console> {
        let stdin_tty = termios::isatty(io::stdin());
        if !stdin_tty {
            thread::Builder::new()
                .name("serial-input".into())
                .spawn(move || forward_input(&link))?;
            return Ok(Console { raw_mode: None });
        }
        if !serial_on_stdout || !termios::isatty(io::stdout()) {
            return Ok(Console { raw_mode: None });
        }
        let raw_mode = RawMode::enter()?;
        restore_on_signals(raw_mode.saved.clone())?;
        thread::Builder::new()
            .name("console".into())
            .spawn(move || interact(&link))?;
        Ok(Console {
            raw_mode: Some(raw_mode),
        })
    }

    /// Whether the terminal is in raw mode, with the escapes on.
    pub fn interactive(&self) -> bool {
        self.raw_mode.is_some()
    }
}

/// Sends standard input to the guest as it comes, until it ends.
fn forward_input(link: &ConsoleLink) {
    let mut buffer = [0; 256];
    let mut stdin = io::stdin().lock();
    while let Ok(read @ 1..) = stdin.read(&mut buffer) {
        link.send(&buffer[..read]);
    }
}

/// Reads the keys on the raw terminal: the guest's, and Ctrl-A's escapes.
fn interact(link: &ConsoleLink) {
    let mut buffer = [0; 256];
    let mut escapes = Escapes::default();
    let mut stdin = io::stdin().lock();
    while let Ok(read @ 1..) = stdin.read(&mut buffer) {
        let mut keys = Vec::with_capacity(read);
        for &byte in &buffer[..read] {
            match escapes.key(byte) {
                Action::Send(byte) => keys.push(byte),
                Action::Nothing => {}
                Action::Help => {
                    link.send(&std::mem::take(&mut keys));
                    let mut stdout = io::stdout().lock();
                    let _ = stdout
                        .write_all(HELP.as_bytes())
                        .and_then(|()| stdout.flush());
                }
                Action::Quit => {
                    link.send(&keys);
                    // The summary line that follows starts on a line of its own.
                    let _ = io::stdout().write_all(b"\r\n");
                    link.quit();
                    return;
                }
            }
        }
        link.send(&keys);
    }
}

/// Restores `saved` before a terminating signal ends the process as it would have anyway.
fn restore_on_signals(saved: Termios) -> io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGHUP, SIGINT, SIGQUIT])?;
    thread::Builder::new()
        .name("console-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                restore(&saved);
                let _ = signal_hook::low_level::emulate_default_handler(signal);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(keys: &[u8]) -> Vec<Action> {
        let mut escapes = Escapes::default();
        keys.iter().map(|&key| escapes.key(key)).collect()
    }

    #[test]
    fn keys_go_to_the_guest_and_ctrl_a_starts_an_escape() {
        use Action::*;
        assert_eq!(
            actions(b"ls\r\x03"),
            [Send(b'l'), Send(b's'), Send(b'\r'), Send(0x03)]
        );
        assert_eq!(actions(b"\x01x"), [Nothing, Quit]);
        assert_eq!(actions(b"\x01X"), [Nothing, Quit]);
        assert_eq!(actions(b"\x01h\x01?"), [Nothing, Help, Nothing, Help]);
        assert_eq!(
            actions(b"\x01\x01\x01\x01a"),
            [Nothing, Send(CTRL_A), Nothing, Send(CTRL_A), Send(b'a')]
        );
        // An escape Umbra does not have is dropped, and the key after it is the guest's.
        assert_eq!(actions(b"\x01zx"), [Nothing, Nothing, Send(b'x')]);
    }

    #[test]
    fn keys_reach_the_uart_and_a_stopped_run_takes_no_more() {
        use umbra_devices::bus::BusDevice;
        use umbra_devices::uart::INPUT_LIMIT;

        let uart = Arc::new(Mutex::new(Uart::new(Box::new(io::sink()))));
        let control = Arc::new(RunControl::new());
        let link = ConsoleLink::new(uart.clone(), control.clone(), Arc::new(VcpuKick::new()));
        link.send(&vec![b'k'; INPUT_LIMIT]);
        link.quit();
        assert_eq!(control.stop_reason(), Some(StopReason::UserQuit));
        // The queue is full and the run has stopped: the send gives up instead of waiting.
        link.send(b"more");
        let mut byte = [0];
        uart.lock().read(0, &mut byte);
        assert_eq!(byte, [b'k']);
    }
}
