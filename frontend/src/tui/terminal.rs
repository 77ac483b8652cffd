//! The terminal: raw mode and the alternate screen while the TUI is up, the user's terminal
//! as it was afterwards, whatever happens.
//!
//! A panic anywhere in the process restores the terminal before the panic's message is
//! printed (a hook in front of the previous one), so the message is readable and the shell
//! usable. A panic the process survives (the emulator turns one inside the interpreter into an
//! internal error that ends the run) is followed by the TUI taking the screen back
//! ([`Screen::reclaim`]), with the message left on the normal screen for after the TUI.

use std::io::{self, Stdout, stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

/// The terminal is in the TUI's hands (raw mode, alternate screen).
static TAKEN: AtomicBool = AtomicBool::new(false);
/// A panic gave the terminal back while the TUI was up.
static PANICKED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// The TUI's terminal; dropping it gives the terminal back.
pub struct Screen {
    /// The ratatui terminal drawing on standard output.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

/// Puts the terminal back as the user had it, if the TUI has it.
fn give_back() {
    if TAKEN.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(stdout(), LeaveAlternateScreen);
    }
}

fn take() -> io::Result<()> {
    enable_raw_mode()?;
    TAKEN.store(true, Ordering::SeqCst);
    execute!(stdout(), EnterAlternateScreen)?;
    Ok(())
}

impl Screen {
    /// Takes the terminal: raw mode, the alternate screen, and the panic hook that gives it
    /// back.
    pub fn take() -> io::Result<Screen> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if TAKEN.load(Ordering::SeqCst) {
                    PANICKED.store(true, Ordering::SeqCst);
                }
                give_back();
                previous(info);
            }));
        });
        take()?;
        match Terminal::new(CrosstermBackend::new(stdout())) {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(error) => {
                give_back();
                Err(error)
            }
        }
    }

    /// After a panic the process survived gave the terminal back, takes it again and redraws
    /// everything; returns whether that happened.
    pub fn reclaim(&mut self) -> io::Result<bool> {
        if !PANICKED.swap(false, Ordering::SeqCst) {
            return Ok(false);
        }
        take()?;
        self.terminal.clear()?;
        Ok(true)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        give_back();
    }
}
