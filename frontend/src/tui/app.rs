//! The UI thread: keys, the vCPU's stops, the guest's output and a 10 Hz tick in, a
//! [`Snapshot`] drawn out.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use umbra_cpu::backend::Vm;
use umbra_mmu::memslot::Memslots;

use super::browser::Browser;
use super::console::Console;
use super::rates::Rates;
use super::render::render;
use super::snapshot::{Overlay, Pane, Prompt, Publisher, RunState, Snapshot};
use super::terminal::Screen;
use crate::gdb::control::{DebugControl, SessionEvent, Stop};
use crate::inspect::{self, WalkRequest, parse_number};

/// How often the screen is refreshed and the vCPU asked for its state.
pub const TICK: Duration = Duration::from_millis(100);

/// How many console lines a snapshot carries (more than any terminal is high).
const CONSOLE_LINES: usize = 300;

/// What the machine's thread tells the UI at the end of the run.
#[derive(Debug)]
pub enum RunReport {
    /// The run ended, for this reason.
    Ended(String),
    /// The machine's thread panicked: leave at once.
    Aborted,
}

/// What a prompt is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asking {
    Walk,
    GoTo,
}

/// The machine as the UI reaches it.
pub struct Links {
    /// The backend's name.
    pub backend: &'static str,
    /// Pause, step, resume and end the run.
    pub control: Arc<DebugControl>,
    /// The vCPU's published states.
    pub publisher: Arc<Publisher>,
    /// Guest memory.
    pub memory: Arc<Memslots>,
    /// The backend's VM, for its kernel statistics.
    pub vm: Arc<dyn Vm>,
    /// The end of the run.
    pub report: Receiver<RunReport>,
    /// Whether colours are on.
    pub color: bool,
    /// The guest waits for the user before its first instruction (`-S`).
    pub start_paused: bool,
}

/// The UI's state.
pub struct App {
    links: Links,
    stops: Option<Receiver<SessionEvent>>,
    console: Console,
    rates: Rates,
    run: RunState,
    focus: Pane,
    detail: Pane,
    browser: Option<Browser>,
    prompt: Option<(Asking, String)>,
    overlay: Option<Overlay>,
    help: bool,
    message: Option<String>,
    vm_stats: Result<Vec<(String, u64)>, String>,
    /// Ctrl-A came in the console: the next key is the TUI's.
    prefix: bool,
    quit: bool,
}

impl App {
    /// A UI over `links`, showing `console`.
    pub fn new(links: Links, console: Console) -> App {
        App {
            links,
            stops: None,
            console,
            rates: Rates::default(),
            run: RunState::Running,
            focus: Pane::Mmu,
            detail: Pane::Mmu,
            browser: None,
            prompt: None,
            overlay: None,
            help: false,
            message: None,
            vm_stats: Ok(Vec::new()),
            prefix: false,
            quit: false,
        }
    }

    /// Runs the UI on `screen` until the user quits (or the machine's thread panicked).
    pub fn run(mut self, mut screen: Screen) -> std::io::Result<()> {
        // The vCPU waits before its first instruction until the UI is listening for its stops.
        let (stops, events) = std::sync::mpsc::channel();
        if self.links.control.attach(stops).is_ok() {
            self.stops = Some(events);
            if self.links.start_paused {
                self.stopped(Stop::Interrupted);
            } else {
                self.links.control.resume(false);
            }
        }
        let mut next_tick = Instant::now();
        while !self.quit {
            screen.reclaim()?;
            self.take_news();
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
            let snapshot = self.snapshot();
            screen.terminal.draw(|frame| render(frame, &snapshot))?;
            let wait = next_tick.saturating_duration_since(Instant::now());
            if event::poll(wait)?
                && let Event::Key(key) = event::read()?
                && key.kind != KeyEventKind::Release
            {
                self.key(key);
            }
        }
        Ok(())
    }

    /// The vCPU's stops, the end of the run, the guest's output.
    fn take_news(&mut self) {
        let stops: Vec<SessionEvent> = self
            .stops
            .as_ref()
            .map(|events| events.try_iter().collect())
            .unwrap_or_default();
        for event in stops {
            if let SessionEvent::Stopped(stop) = event {
                self.stopped(stop);
            }
        }
        match self.links.report.try_recv() {
            Ok(RunReport::Ended(reason)) => self.run = RunState::Ended(reason),
            Ok(RunReport::Aborted) => self.quit = true,
            Err(_) => {}
        }
        self.console.pump();
    }

    fn stopped(&mut self, stop: Stop) {
        match stop {
            Stop::Exited(_) | Stop::Terminated => self.links.control.end_reported(),
            Stop::Interrupted | Stop::Stepped | Stop::Breakpoint(_) | Stop::Watchpoint(_) => {
                self.run = RunState::Paused;
                let publisher = self.links.publisher.clone();
                // The run may have ended meanwhile; the last state is published then anyway.
                let _ = self.links.control.call(move |vcpu| publisher.publish(vcpu));
            }
        }
    }

    fn tick(&mut self) {
        if self.run == RunState::Running {
            self.links.publisher.request();
        }
        if let Some(state) = self.links.publisher.latest() {
            self.rates.update(&state);
        }
        self.vm_stats = self
            .links
            .vm
            .kernel_stats()
            .map_err(|error| error.to_string());
    }

    /// Everything to draw.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            backend: self.links.backend.to_owned(),
            run: self.run.clone(),
            vcpu: self.links.publisher.latest(),
            rates: self.rates.series(),
            memslots: inspect::memslot_rows(&self.links.memory),
            vm_stats: self.vm_stats.clone(),
            console: self.console.view(CONSOLE_LINES),
            console_scroll: self.console.scroll(),
            focus: self.focus,
            detail: self.detail,
            browser: self
                .browser
                .as_ref()
                .map(|browser| browser.view(&self.links.memory)),
            prompt: self.prompt.as_ref().map(|(asking, text)| Prompt {
                label: match asking {
                    Asking::Walk => format!("walk {}", WalkRequest::USAGE),
                    Asking::GoTo => "go to virtual address".to_owned(),
                },
                text: text.clone(),
            }),
            overlay: self.overlay.clone(),
            help: self.help,
            message: self.message.clone(),
            color: self.links.color,
        }
    }

    /// The panes focus moves through.
    fn panes(&self) -> Vec<Pane> {
        let mut panes = vec![
            Pane::Console,
            Pane::Vcpu,
            Pane::Mmu,
            Pane::Rates,
            Pane::Memslots,
        ];
        if self.links.backend == "kvm" {
            panes.push(Pane::Kvm);
        }
        if self.browser.is_some() {
            panes.push(Pane::Browser);
        }
        panes
    }

    fn focus_on(&mut self, pane: Pane) {
        self.focus = pane;
        if pane != Pane::Console {
            self.detail = pane;
        }
    }

    fn cycle_focus(&mut self, forward: bool) {
        let panes = self.panes();
        let at = panes.iter().position(|&p| p == self.focus).unwrap_or(0);
        let next = if forward {
            (at + 1) % panes.len()
        } else {
            (at + panes.len() - 1) % panes.len()
        };
        self.focus_on(panes[next]);
    }

    fn key(&mut self, key: KeyEvent) {
        self.message = None;
        if self.prompt.is_some() {
            self.prompt_key(key);
        } else if self.help || self.overlay.is_some() {
            if matches!(
                key.code,
                KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q' | '?')
            ) {
                self.help = false;
                self.overlay = None;
            }
        } else if self.focus == Pane::Console && !self.prefix {
            self.console_key(key);
        } else {
            self.prefix = false;
            self.command(key);
        }
    }

    fn console_key(&mut self, key: KeyEvent) {
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        let bytes: Vec<u8> = match key.code {
            KeyCode::Char('a') if control => {
                self.prefix = true;
                return;
            }
            KeyCode::PageUp => return self.console.scroll_by(10),
            KeyCode::PageDown => return self.console.scroll_by(-10),
            KeyCode::Char(c) if control && c.is_ascii_alphabetic() => {
                vec![c.to_ascii_lowercase() as u8 & 0x1f]
            }
            KeyCode::Char(c) => c.to_string().into_bytes(),
            KeyCode::Enter => b"\r".to_vec(),
            KeyCode::Backspace => vec![0x7f],
            KeyCode::Tab => b"\t".to_vec(),
            KeyCode::Esc => vec![0x1b],
            KeyCode::Up => b"\x1b[A".to_vec(),
            KeyCode::Down => b"\x1b[B".to_vec(),
            KeyCode::Right => b"\x1b[C".to_vec(),
            KeyCode::Left => b"\x1b[D".to_vec(),
            KeyCode::Home => b"\x1b[H".to_vec(),
            KeyCode::End => b"\x1b[F".to_vec(),
            KeyCode::Delete => b"\x1b[3~".to_vec(),
            _ => return,
        };
        self.console.scroll_by(-(self.console.scroll() as isize));
        self.console.type_bytes(&bytes);
    }

    /// A key that is the TUI's, not the guest's.
    fn command(&mut self, key: KeyEvent) {
        if self.focus == Pane::Browser && self.browser_key(key) {
            return;
        }
        match key.code {
            // Ctrl-A Ctrl-A in the console: the guest's Ctrl-A.
            KeyCode::Char('a')
                if key.modifiers.contains(KeyModifiers::CONTROL) && self.focus == Pane::Console =>
            {
                self.console.type_bytes(&[0x01]);
            }
            KeyCode::Char('q') => self.quit(),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('p' | ' ') => self.pause_or_resume(),
            KeyCode::Char('s') => self.step(),
            KeyCode::Char('w') => self.prompt = Some((Asking::Walk, String::new())),
            KeyCode::Char('t') => self.open_browser(),
            KeyCode::Char('c') => self.focus_on(Pane::Console),
            KeyCode::Tab => self.cycle_focus(true),
            KeyCode::BackTab => self.cycle_focus(false),
            KeyCode::PageUp => self.console.scroll_by(10),
            KeyCode::PageDown => self.console.scroll_by(-10),
            _ => {}
        }
    }

    /// The browser's keys; false for a key that is not one.
    fn browser_key(&mut self, key: KeyEvent) -> bool {
        let Some(browser) = &mut self.browser else {
            return false;
        };
        let memory = &self.links.memory;
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => browser.select_by(memory, -1),
            KeyCode::Down | KeyCode::Char('j') => browser.select_by(memory, 1),
            KeyCode::PageUp => browser.select_by(memory, -10),
            KeyCode::PageDown => browser.select_by(memory, 10),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
                if !browser.enter(memory) {
                    self.message = Some("that entry maps a page: there is no table below".into());
                }
            }
            KeyCode::Backspace | KeyCode::Left | KeyCode::Char('h') => {
                browser.leave();
            }
            KeyCode::Char('g') => self.prompt = Some((Asking::GoTo, String::new())),
            KeyCode::Esc => {
                self.browser = None;
                self.focus_on(Pane::Mmu);
            }
            _ => return false,
        }
        true
    }

    fn prompt_key(&mut self, key: KeyEvent) {
        let Some((asking, text)) = &mut self.prompt else {
            return;
        };
        match key.code {
            KeyCode::Char(c) => text.push(c),
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Esc => self.prompt = None,
            KeyCode::Enter => {
                let (asking, text) = (*asking, text.clone());
                self.prompt = None;
                self.answer(asking, &text);
            }
            _ => {}
        }
    }

    fn answer(&mut self, asking: Asking, text: &str) {
        let Some(walker) = self
            .links
            .publisher
            .latest()
            .and_then(|state| state.walker.clone())
        else {
            self.message = Some("the vCPU's paging state is not known yet".to_owned());
            return;
        };
        match asking {
            Asking::Walk => {
                let words: Vec<&str> = text.split_whitespace().collect();
                match WalkRequest::parse(&words) {
                    Some(request) => {
                        self.overlay = Some(Overlay {
                            title: "walk".to_owned(),
                            text: inspect::walk_report(&walker, &self.links.memory, request),
                        })
                    }
                    None => self.message = Some(format!("usage: walk {}", WalkRequest::USAGE)),
                }
            }
            Asking::GoTo => match (parse_number(text.trim()), &mut self.browser) {
                (Some(va), Some(browser)) => browser.go_to(&self.links.memory, &walker, va),
                _ => self.message = Some("go to: give a virtual address, as 0x7c00".to_owned()),
            },
        }
    }

    fn open_browser(&mut self) {
        let walker = self
            .links
            .publisher
            .latest()
            .and_then(|state| state.walker.clone());
        match walker.as_ref().map(Browser::open) {
            Some(Ok(browser)) => {
                self.browser = Some(browser);
                self.focus_on(Pane::Browser);
            }
            Some(Err(why)) => self.message = Some(why),
            None => self.message = Some("the vCPU's paging state is not known yet".to_owned()),
        }
    }

    fn pause_or_resume(&mut self) {
        match self.run {
            RunState::Running => self.links.control.interrupt(),
            RunState::Paused => {
                self.run = RunState::Running;
                self.links.control.resume(false);
            }
            RunState::Ended(_) => self.message = Some("the guest has stopped".to_owned()),
        }
    }

    fn step(&mut self) {
        match self.run {
            RunState::Running => {
                self.links.control.interrupt();
                self.message = Some("paused: s again steps one instruction".to_owned());
            }
            RunState::Paused => self.links.control.resume(true),
            RunState::Ended(_) => self.message = Some("the guest has stopped".to_owned()),
        }
    }

    fn quit(&mut self) {
        self.quit = true;
    }
}

impl Drop for App {
    /// However the UI ends (quit, or a panic on its thread), the run ends with it.
    fn drop(&mut self) {
        self.links.control.detach(false);
        self.links.control.kill();
    }
}
