//! The serial console: what the guest writes, kept as lines with scrollback, and what the user
//! types, queued for the UART.
//!
//! The UART writes through a [`ConsoleWriter`], which hands the bytes to the UI thread over a
//! channel (never blocking the vCPU) and, with `--serial file:PATH`, copies them to the file.
//! The UI turns them into lines the way a terminal would show them, simply: `\n` ends a line,
//! `\r` returns to its start, backspace takes back a character, tabs stop every 8 columns,
//! and escape sequences (colours, cursor moves) are dropped.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use parking_lot::Mutex;
use umbra_devices::uart::Uart;

/// How many finished lines the scrollback keeps.
pub const SCROLLBACK: usize = 5000;

/// The UART's output, on its way to the UI (and to a file, with `--serial file:PATH`).
pub struct ConsoleWriter {
    to_ui: Sender<Vec<u8>>,
    copy: Option<Box<dyn Write + Send>>,
}

impl ConsoleWriter {
    /// A writer sending to `to_ui`, and copying to `copy` if given.
    pub fn new(to_ui: Sender<Vec<u8>>, copy: Option<Box<dyn Write + Send>>) -> ConsoleWriter {
        ConsoleWriter { to_ui, copy }
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // Once the UI has gone the bytes have nowhere to be shown; the copy still gets them.
        let _ = self.to_ui.send(bytes.to_vec());
        if let Some(copy) = &mut self.copy {
            copy.write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.copy {
            Some(copy) => copy.flush(),
            None => Ok(()),
        }
    }
}

/// Where an escape sequence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// Inside `ESC [ ...`, until its final byte.
    Csi,
}

/// The console's lines and the user's typing.
pub struct Console {
    from_guest: Receiver<Vec<u8>>,
    lines: VecDeque<String>,
    current: Vec<u8>,
    /// A `\r` came: the next character starts the line again.
    returned: bool,
    escape: Escape,
    /// Lines scrolled back from the end.
    scroll: usize,
    uart: Option<Arc<Mutex<Uart>>>,
    /// Bytes typed that the UART has not taken yet.
    typed: VecDeque<u8>,
}

impl Console {
    /// A console showing what arrives on `from_guest` and typing into `uart`.
    pub fn new(from_guest: Receiver<Vec<u8>>, uart: Option<Arc<Mutex<Uart>>>) -> Console {
        Console {
            from_guest,
            lines: VecDeque::new(),
            current: Vec::new(),
            returned: false,
            escape: Escape::None,
            scroll: 0,
            uart,
            typed: VecDeque::new(),
        }
    }

    /// Takes what the guest wrote since the last call, and hands the UART what it can take of
    /// the bytes typed.
    pub fn pump(&mut self) {
        while let Ok(bytes) = self.from_guest.try_recv() {
            self.feed(&bytes);
        }
        if let Some(uart) = &self.uart
            && !self.typed.is_empty()
        {
            let (front, _) = self.typed.as_slices();
            let taken = uart.lock().push_input(front);
            self.typed.drain(..taken);
        }
    }

    /// Queues bytes the user typed for the guest.
    pub fn type_bytes(&mut self, bytes: &[u8]) {
        self.typed.extend(bytes);
    }

    /// Adds the guest's output.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match (self.escape, byte) {
                (Escape::Started, b'[') => self.escape = Escape::Csi,
                (Escape::Started, _) => self.escape = Escape::None,
                (Escape::Csi, 0x40..=0x7e) => self.escape = Escape::None,
                (Escape::Csi, _) => {}
                (Escape::None, 0x1b) => self.escape = Escape::Started,
                (Escape::None, b'\n') => self.end_line(),
                (Escape::None, b'\r') => self.returned = true,
                (Escape::None, 0x08) => {
                    self.current.pop();
                }
                (Escape::None, b'\t') => {
                    self.start_character();
                    let stop = (self.current.len() / 8 + 1) * 8;
                    self.current.resize(stop, b' ');
                }
                (Escape::None, 0x00..=0x1f | 0x7f) => {}
                (Escape::None, _) => {
                    self.start_character();
                    self.current.push(byte);
                }
            }
        }
    }

    fn start_character(&mut self) {
        if self.returned {
            self.current.clear();
            self.returned = false;
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.current).into_owned();
        self.current.clear();
        self.returned = false;
        if self.lines.len() == SCROLLBACK {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        if self.scroll > 0 {
            // Keep the lines the user scrolled back to where they are.
            self.scroll = (self.scroll + 1).min(self.lines.len() - 1);
        }
    }

    /// Scrolls back (positive) or forward (negative) by `lines`.
    pub fn scroll_by(&mut self, lines: isize) {
        // The first line stays in view.
        let most = self.lines.len().saturating_sub(1);
        self.scroll = self.scroll.saturating_add_signed(lines).min(most);
    }

    /// How many lines the view is scrolled back.
    pub fn scroll(&self) -> usize {
        self.scroll
    }

    /// The last `count` lines up to the scroll position, the line being written last.
    pub fn view(&self, count: usize) -> Vec<String> {
        let mut all: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        let current = String::from_utf8_lossy(&self.current);
        if !current.is_empty() {
            all.push(&current);
        }
        let end = all.len().saturating_sub(self.scroll);
        let start = end.saturating_sub(count);
        all[start..end]
            .iter()
            .map(|line| (*line).to_owned())
            .collect()
    }

    /// Every line, for a test's look.
    #[cfg(test)]
    fn all(&self) -> Vec<String> {
        self.view(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn output_becomes_lines_as_a_terminal_shows_them() {
        let (_tx, rx) = mpsc::channel();
        let mut console = Console::new(rx, None);
        console.feed(b"\x1b[1;32mboot\x1b[0m ok\r\n");
        console.feed(b"progress 10%\rprogress 99%\r\n");
        console.feed(b"a\tb\x08c\n");
        console.feed(b"partial");
        assert_eq!(
            console.all(),
            ["boot ok", "progress 99%", "a       c", "partial"]
        );
    }

    #[test]
    fn scrolling_back_keeps_the_view_still() {
        let (tx, rx) = mpsc::channel();
        let mut console = Console::new(rx, None);
        for n in 0..10 {
            tx.send(format!("line {n}\n").into_bytes()).unwrap();
        }
        console.pump();
        assert_eq!(console.view(2), ["line 8", "line 9"]);
        console.scroll_by(3);
        assert_eq!(console.view(2), ["line 5", "line 6"]);
        console.feed(b"line 10\n");
        assert_eq!(console.view(2), ["line 5", "line 6"]);
        console.scroll_by(-100);
        assert_eq!(console.view(1), ["line 10"]);
        console.scroll_by(1000);
        assert_eq!(console.view(1), ["line 0"]);
    }
}
