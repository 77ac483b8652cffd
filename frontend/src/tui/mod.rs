//! `umbra run --tui`: a full-screen terminal UI beside the running guest, to watch its MMU
//! work.
//!
//! The screen holds the guest's serial console (scrollback; keys go to the guest when it has
//! focus), the vCPU (mode, CPL, RIP and the instruction there, CR0/CR3/CR4/EFER bit by bit),
//! the MMU (CPU and page roles, the current and cached roots, shadow pages per level, the
//! TLB, the JIT's counters when it keeps them), rates over time as sparklines, the memslots,
//! and on KVM the kernel's own statistics. The guest can be paused, stepped, and looked into:
//! a walk of any address (the code of gdb's `monitor walk`), a browser of the page tables.
//!
//! - [`snapshot`]: what is shown, and how the vCPU publishes it without waiting for the UI.
//! - [`render`]: drawing it (pure functions of a [`snapshot::Snapshot`]).
//! - [`app`]: the UI thread: keys, stops, the refresh tick.
//! - [`console`]: the serial console's lines and the user's typing.
//! - [`rates`]: counters turned into rates over time.
//! - [`browser`]: the page-table browser.
//! - [`terminal`]: taking the terminal, and giving it back on quit or panic.
//!
//! The machine runs on the calling thread as without the TUI; the UI has a thread of its own,
//! and reaches the vCPU only through the debugger's control (pause, step, calls on the parked
//! vCPU) and the published snapshots. The run ends when the user quits; when the guest ends
//! first, the UI stays up with the final state and the reason until the user quits.

pub mod app;
pub mod browser;
pub mod console;
pub mod rates;
pub mod render;
pub mod snapshot;
pub mod terminal;

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};

use anyhow::{Context, anyhow};
use umbra_cpu::backend::BackendError;

use crate::machine::{Machine, RunOutcome};
use app::{App, Links, RunReport};
use console::{Console, ConsoleWriter};
use snapshot::Publisher;
use terminal::Screen;

/// The serial port's writer for a run with the TUI, and where the UI reads what it writes;
/// `copy` (a `--serial file:PATH`) gets every byte too.
pub fn serial_writer(
    copy: Option<Box<dyn Write + Send>>,
) -> (Box<dyn Write + Send>, Receiver<Vec<u8>>) {
    let (to_ui, from_guest) = mpsc::channel();
    (Box::new(ConsoleWriter::new(to_ui, copy)), from_guest)
}

/// Whether colours are on: not when NO_COLOR is set to anything but the empty string
/// (<https://no-color.org>).
pub fn colors_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// Runs `machine` with the TUI on this terminal, its serial output coming from `serial` (see
/// [`serial_writer`]), until the user quits; with `start_paused` the guest waits for the user
/// before its first instruction. Returns how the run ended.
pub fn run(
    machine: &mut Machine,
    serial: Receiver<Vec<u8>>,
    backend: &'static str,
    start_paused: bool,
) -> anyhow::Result<RunOutcome> {
    let screen = Screen::take().context("cannot set up the terminal for --tui")?;
    let control = machine.debug_control(true);
    let publisher = Arc::new(Publisher::new(
        machine.memslots().clone(),
        machine.vcpu().kick_handle(),
    ));
    machine.set_observer(publisher.clone());
    let (report, reports) = mpsc::channel();
    let links = Links {
        backend,
        control,
        publisher,
        memory: machine.memslots().clone(),
        vm: machine.vm().clone(),
        report: reports,
        color: colors_wanted(),
        start_paused,
    };
    let app = App::new(links, Console::new(serial, Some(machine.uart())));
    let ui = std::thread::Builder::new()
        .name("tui".to_owned())
        .spawn(move || app.run(screen))
        .context("cannot start the TUI's thread")?;
    let result = panic::catch_unwind(AssertUnwindSafe(|| machine.run()));
    // The UI may have gone already (the user quit): then nobody needs telling.
    let _ = report.send(match &result {
        Ok(Ok(outcome)) => RunReport::Ended(outcome.end.to_string()),
        Ok(Err(error)) => RunReport::Ended(format!("the backend failed: {error}")),
        Err(_) => RunReport::Aborted,
    });
    let ui = ui.join();
    let result = result.unwrap_or_else(|panic| panic::resume_unwind(panic));
    match ui {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(anyhow!("the terminal failed: {error}")),
        Err(_) => return Err(anyhow!("the TUI failed (its panic message is above)")),
    }
    result.map_err(|error: BackendError| anyhow::Error::new(error))
}
