//! Drawing a [`Snapshot`]: pure functions of it, so that a test draws the same frame every
//! time (ratatui's `TestBackend`).
//!
//! A terminal of at least [`FULL_WIDTH`] x [`FULL_HEIGHT`] shows every pane at once; a smaller
//! one (80x24 and up) shows the console above one other pane, the one focus last moved to.

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, List, ListItem, ListState, Paragraph, Row, Sparkline, Table, Wrap,
};
use umbra_cpu::state::{CpuMode, SystemRegisters};

use super::rates::human;
use super::snapshot::{Pane, RunState, Snapshot, VcpuState};
use crate::inspect;

/// The narrowest terminal that shows every pane at once.
pub const FULL_WIDTH: u16 = 160;
/// The lowest terminal that shows every pane at once.
pub const FULL_HEIGHT: u16 = 40;

/// The styles, with colours or without (NO_COLOR).
#[derive(Clone, Copy, Debug)]
struct Theme {
    color: bool,
}

impl Theme {
    fn paint(self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    fn border(self, focused: bool) -> Style {
        if focused {
            self.paint(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            self.paint(Color::DarkGray)
        }
    }

    fn label(self) -> Style {
        self.paint(Color::Yellow)
    }

    /// A bit that is set.
    fn on(self) -> Style {
        self.paint(Color::Green).add_modifier(Modifier::BOLD)
    }

    /// A bit that is clear.
    fn off(self) -> Style {
        self.paint(Color::DarkGray)
    }

    fn alert(self) -> Style {
        self.paint(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
}

/// Draws the whole screen.
pub fn render(frame: &mut Frame, snapshot: &Snapshot) {
    let theme = Theme {
        color: snapshot.color,
    };
    let [status, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(status_line(snapshot, theme), status);
    for (pane, area) in panes(snapshot, body) {
        render_pane(frame, area, pane, snapshot);
    }
    frame.render_widget(footer_line(snapshot, theme), footer);
    if let Some(overlay) = &snapshot.overlay {
        popup(frame, body, &overlay.title, &overlay.text, theme);
    }
    if snapshot.help {
        popup(frame, body, "help", HELP, theme);
    }
}

/// Where each pane goes in `body`.
fn panes(snapshot: &Snapshot, body: Rect) -> Vec<(Pane, Rect)> {
    if body.width < FULL_WIDTH || body.height + 2 < FULL_HEIGHT {
        let [console, detail] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Min(0)]).areas(body);
        return vec![(Pane::Console, console), (snapshot.detail, detail)];
    }
    let [left, middle, right] = Layout::horizontal([
        Constraint::Percentage(40),
        Constraint::Percentage(30),
        Constraint::Percentage(30),
    ])
    .areas(body);
    let memslot_rows = snapshot.memslots.len() as u16 + 3;
    let [console, memslots] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(memslot_rows)]).areas(left);
    let [vcpu, mmu] = Layout::vertical([Constraint::Length(18), Constraint::Min(0)]).areas(middle);
    let mut placed = vec![
        (Pane::Console, console),
        (Pane::Memslots, memslots),
        (Pane::Vcpu, vcpu),
        (Pane::Mmu, mmu),
    ];
    if snapshot.browser.is_some() {
        placed.push((Pane::Browser, right));
    } else {
        let rate_rows = snapshot.rates.len().max(1) as u16 + 2;
        let [rates, kvm] =
            Layout::vertical([Constraint::Length(rate_rows), Constraint::Min(0)]).areas(right);
        placed.push((Pane::Rates, rates));
        placed.push((Pane::Kvm, kvm));
    }
    placed
}

/// Draws one pane in `area`.
pub fn render_pane(frame: &mut Frame, area: Rect, pane: Pane, snapshot: &Snapshot) {
    let theme = Theme {
        color: snapshot.color,
    };
    let mut title = pane.title().to_owned();
    if pane == Pane::Console {
        if snapshot.console_scroll > 0 {
            title.push_str(&format!(" (scrolled back {})", snapshot.console_scroll));
        }
        if snapshot.focus == Pane::Console {
            title.push_str(" - keys go to the guest");
        }
    }
    if let (Pane::Browser, Some(browser)) = (pane, &snapshot.browser) {
        title = format!("page tables: {}", browser.path);
    }
    let block = Block::bordered()
        .title(format!(" {title} "))
        .border_style(theme.border(snapshot.focus == pane));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    match pane {
        Pane::Console => console(frame, inner, snapshot),
        Pane::Vcpu => text(frame, inner, vcpu_lines(snapshot, theme)),
        Pane::Mmu => text(frame, inner, mmu_lines(snapshot, theme)),
        Pane::Rates => rates(frame, inner, snapshot, theme),
        Pane::Memslots => memslots(frame, inner, snapshot, theme),
        Pane::Kvm => text(frame, inner, kvm_lines(snapshot, theme)),
        Pane::Browser => browser(frame, inner, snapshot, theme),
    }
}

fn text(frame: &mut Frame, area: Rect, lines: Vec<Line<'static>>) {
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
}

fn status_line(snapshot: &Snapshot, theme: Theme) -> Line<'static> {
    let (state, style) = match &snapshot.run {
        RunState::Running => ("RUNNING".to_owned(), theme.on()),
        RunState::Paused => (
            "PAUSED".to_owned(),
            theme.paint(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        RunState::Ended(reason) => (format!("ENDED: {reason}"), theme.alert()),
    };
    let mut spans = vec![
        Span::styled(" umbra ", theme.label().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{} | ", snapshot.backend)),
        Span::styled(state, style),
    ];
    if let Some(vcpu) = &snapshot.vcpu {
        spans.push(Span::raw(format!(" | rip {:#x}", vcpu.regs.rip)));
        if let Some(walker) = &vcpu.walker {
            spans.push(Span::raw(format!(" | {}", walker.role())));
        }
    }
    Line::from(spans)
}

fn footer_line(snapshot: &Snapshot, theme: Theme) -> Line<'static> {
    if let Some(prompt) = &snapshot.prompt {
        return Line::from(vec![
            Span::styled(format!("{}: ", prompt.label), theme.label()),
            Span::raw(format!("{}_", prompt.text)),
        ]);
    }
    if let Some(message) = &snapshot.message {
        return Line::styled(message.clone(), theme.alert());
    }
    let hints = match (snapshot.focus, &snapshot.run) {
        (Pane::Console, _) => {
            "keys go to the guest; Ctrl-A then a key for the TUI: Ctrl-A Tab leaves, Ctrl-A q quits"
        }
        (Pane::Browser, _) => {
            "up/down select  enter open  backspace back  g go to address  esc close  ? help"
        }
        (_, RunState::Ended(_)) => {
            "the guest has stopped: q quits  w walk  t page tables  Tab focus  ? help"
        }
        _ => "p pause/resume  s step  w walk  t page tables  Tab focus  c console  ? help  q quit",
    };
    Line::styled(hints, theme.off())
}

fn popup(frame: &mut Frame, body: Rect, title: &str, text: &str, theme: Theme) {
    let lines = text.lines().count() as u16 + 2;
    let widest = text.lines().map(str::len).max().unwrap_or(0) as u16 + 4;
    let width = widest.clamp(20, body.width);
    let height = lines.min(body.height);
    let area = Rect {
        x: body.x + (body.width - width) / 2,
        y: body.y + (body.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(format!(" {title} (esc closes) "))
        .border_style(theme.border(true));
    frame.render_widget(
        Paragraph::new(text.to_owned())
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// The keys, as `?` shows them.
pub const HELP: &str = "\
p, space     pause or resume the guest
s            single step (pauses first)
w            walk an address: ADDR [r|w|x] [user|kernel] (gdb's monitor walk)
t            page-table browser of the current CR3:
               up/down or j/k select, enter or l opens the entry's table,
               backspace or h goes back up, g goes to a virtual address
Tab, S-Tab   move focus (a small screen shows the focused pane)
c            focus the console: keys go to the guest; there, Ctrl-A then a
               key is the TUI's (Ctrl-A Tab leaves, Ctrl-A q quits,
               Ctrl-A Ctrl-A sends Ctrl-A)
PgUp, PgDn   scroll the console back and forth
esc          close this help, a walk's result or the browser
q            quit (the guest is stopped)";

fn console(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    let skip = snapshot
        .console
        .len()
        .saturating_sub(usize::from(area.height));
    let lines: Vec<Line> = snapshot.console[skip..]
        .iter()
        .map(|line| Line::raw(line.clone()))
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}

/// A register's bits by name, from bit 0 up: set ones in capitals, clear ones in small
/// letters (and in colour when there is colour).
fn bits(value: u64, names: &[(u32, &'static str)], theme: Theme) -> Vec<Span<'static>> {
    names
        .iter()
        .flat_map(|&(bit, name)| {
            let span = if value >> bit & 1 != 0 {
                Span::styled(name, theme.on())
            } else {
                Span::styled(name.to_lowercase(), theme.off())
            };
            [span, Span::raw(" ")]
        })
        .collect()
}

const CR0_BITS: [(u32, &str); 11] = [
    (0, "PE"),
    (1, "MP"),
    (2, "EM"),
    (3, "TS"),
    (4, "ET"),
    (5, "NE"),
    (16, "WP"),
    (18, "AM"),
    (29, "NW"),
    (30, "CD"),
    (31, "PG"),
];
const CR3_BITS: [(u32, &str); 2] = [(3, "PWT"), (4, "PCD")];
const CR4_BITS: [(u32, &str); 22] = [
    (0, "VME"),
    (1, "PVI"),
    (2, "TSD"),
    (3, "DE"),
    (4, "PSE"),
    (5, "PAE"),
    (6, "MCE"),
    (7, "PGE"),
    (8, "PCE"),
    (9, "OSFXSR"),
    (10, "OSXMMEXCPT"),
    (11, "UMIP"),
    (12, "LA57"),
    (13, "VMXE"),
    (16, "FSGSBASE"),
    (17, "PCIDE"),
    (18, "OSXSAVE"),
    (20, "SMEP"),
    (21, "SMAP"),
    (22, "PKE"),
    (23, "CET"),
    (24, "PKS"),
];
const EFER_BITS: [(u32, &str); 5] = [
    (0, "SCE"),
    (8, "LME"),
    (10, "LMA"),
    (11, "NXE"),
    (12, "SVME"),
];
const RFLAGS_BITS: [(u32, &str); 9] = [
    (0, "CF"),
    (2, "PF"),
    (4, "AF"),
    (6, "ZF"),
    (7, "SF"),
    (8, "TF"),
    (9, "IF"),
    (10, "DF"),
    (11, "OF"),
];

/// "long 64-bit", "protected 32-bit", ...
fn mode_name(sregs: &SystemRegisters) -> &'static str {
    match sregs.mode() {
        CpuMode::Real => "real",
        CpuMode::Protected if sregs.cs.db => "protected 32-bit",
        CpuMode::Protected => "protected 16-bit",
        CpuMode::Long => "long 64-bit",
        CpuMode::Compatibility => "compatibility",
    }
}

/// The instruction at RIP in Intel syntax, and its bytes.
fn disassemble(vcpu: &VcpuState) -> (String, String) {
    let bitness = match vcpu.sregs.mode() {
        CpuMode::Long => 64,
        CpuMode::Real => 16,
        _ if vcpu.sregs.cs.db => 32,
        _ => 16,
    };
    let mut decoder = Decoder::with_ip(bitness, &vcpu.code, vcpu.regs.rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return (
            "(not mapped, or not an instruction)".to_owned(),
            hex(&vcpu.code),
        );
    }
    let mut text = String::new();
    IntelFormatter::new().format(&instruction, &mut text);
    (text, hex(&vcpu.code[..instruction.len()]))
}

fn hex(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    hex.join(" ")
}

fn waiting(snapshot: &Snapshot) -> Vec<Line<'static>> {
    vec![Line::raw(match snapshot.run {
        RunState::Ended(_) => "the vCPU could not be read",
        _ => "waiting for the vCPU...",
    })]
}

fn vcpu_lines(snapshot: &Snapshot, theme: Theme) -> Vec<Line<'static>> {
    let Some(vcpu) = &snapshot.vcpu else {
        return waiting(snapshot);
    };
    let (regs, sregs) = (&vcpu.regs, &vcpu.sregs);
    let label = |name: &str| Span::styled(format!("{name:<6}"), theme.label());
    let cpl = if sregs.mode() == CpuMode::Real {
        0
    } else {
        sregs.ss.dpl
    };
    let (instruction, bytes) = disassemble(vcpu);
    let with = |mut head: Vec<Span<'static>>, tail: Vec<Span<'static>>| {
        head.extend(tail);
        Line::from(head)
    };
    let mut lines = vec![
        Line::from(vec![
            label("mode"),
            Span::raw(format!("{}  ", mode_name(sregs))),
            Span::styled("CPL ", theme.label()),
            Span::raw(format!("{cpl}")),
        ]),
        Line::from(vec![
            label("RIP"),
            Span::raw(format!("{:#x}  ", regs.rip)),
            Span::styled(instruction, theme.on()),
            Span::styled(format!("  ({bytes})"), theme.off()),
        ]),
        with(
            vec![label("CR0"), Span::raw(format!("{:#x} ", sregs.cr0))],
            bits(sregs.cr0, &CR0_BITS, theme),
        ),
        with(
            vec![
                label("CR3"),
                Span::raw(format!(
                    "{:#x} pcid {:#x} ",
                    sregs.cr3 & !0xfff,
                    sregs.cr3 & 0xfff
                )),
            ],
            bits(sregs.cr3, &CR3_BITS, theme),
        ),
        with(
            vec![label("CR4"), Span::raw(format!("{:#x} ", sregs.cr4))],
            bits(sregs.cr4, &CR4_BITS, theme),
        ),
        with(
            vec![label("EFER"), Span::raw(format!("{:#x} ", sregs.efer))],
            bits(sregs.efer, &EFER_BITS, theme),
        ),
        Line::from(vec![label("CR2"), Span::raw(format!("{:#x}", sregs.cr2))]),
        with(
            vec![label("FLAGS"), Span::raw(format!("{:#x} ", regs.rflags))],
            bits(regs.rflags, &RFLAGS_BITS, theme),
        ),
    ];
    // RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP: two to a line.
    let gprs = [("RAX", 0), ("RBX", 3), ("RCX", 1), ("RDX", 2)]
        .into_iter()
        .chain([("RSI", 6), ("RDI", 7), ("RBP", 5), ("RSP", 4)]);
    let spans: Vec<Span<'static>> = gprs
        .flat_map(|(name, i)| [label(name), Span::raw(format!("{:#018x}  ", regs.gpr[i]))])
        .collect();
    lines.extend(spans.chunks(4).map(|pair| Line::from(pair.to_vec())));
    lines
}

fn mmu_lines(snapshot: &Snapshot, theme: Theme) -> Vec<Line<'static>> {
    let Some(vcpu) = &snapshot.vcpu else {
        return waiting(snapshot);
    };
    let Some(walker) = &vcpu.walker else {
        return vec![Line::raw("the backend cannot show the vCPU's paging state")];
    };
    let mut text = inspect::roots_report(walker, vcpu.mmu.as_ref(), &snapshot.backend);
    if let Some(mmu) = &vcpu.mmu {
        let shadow = &mmu.shadow;
        let levels: Vec<String> = (1..=5)
            .rev()
            .filter(|&level| shadow.pages_by_level[level - 1] != 0)
            .map(|level| format!("L{level} {}", shadow.pages_by_level[level - 1]))
            .collect();
        text.push_str(&format!(
            "\nshadow pages: {} alive ({}), {} made, {} zapped\n\
             unsync pages: none (every shadowed guest table is write-tracked)\n{}",
            shadow.pages_alive,
            if levels.is_empty() {
                "none".to_owned()
            } else {
                levels.join(", ")
            },
            shadow.pages_created,
            shadow.pages_zapped,
            inspect::tlb_report(mmu)
        ));
    }
    let jit: Vec<String> = vcpu
        .stats
        .iter()
        .filter_map(|(name, value)| {
            name.strip_prefix("jit_")
                .map(|name| format!("{name} {}", human(*value)))
        })
        .collect();
    if !jit.is_empty() {
        text.push_str(&format!("\nJIT: {}", jit.join(", ")));
    }
    text.lines()
        .map(|line| match line.split_once(':') {
            Some((head, tail)) if !line.starts_with(' ') && head.len() <= 14 => Line::from(vec![
                Span::styled(format!("{head}:"), theme.label()),
                Span::raw(tail.to_owned()),
            ]),
            _ => Line::raw(line.to_owned()),
        })
        .collect()
}

fn rates(frame: &mut Frame, area: Rect, snapshot: &Snapshot, theme: Theme) {
    if snapshot.rates.is_empty() {
        text(
            frame,
            area,
            vec![Line::raw(
                "no counters yet (the backend keeps none, or the first sample is coming)",
            )],
        );
        return;
    }
    for (series, row) in snapshot.rates.iter().zip(area.rows()) {
        let [label, value, spark] = Layout::horizontal([
            Constraint::Length(11),
            Constraint::Length(8),
            Constraint::Min(0),
        ])
        .areas(row);
        frame.render_widget(Span::styled(series.label, theme.label()), label);
        frame.render_widget(Line::raw(series.latest.clone()).right_aligned(), value);
        let shown = series
            .samples
            .len()
            .saturating_sub(usize::from(spark.width.saturating_sub(1)));
        let mut sparkline = Sparkline::default()
            .data(&series.samples[shown..])
            .style(theme.paint(Color::Green));
        if let Some(max) = series.max {
            sparkline = sparkline.max(max);
        }
        frame.render_widget(
            sparkline,
            Rect {
                x: spark.x + 1,
                width: spark.width.saturating_sub(1),
                ..spark
            },
        );
    }
}

/// A size in bytes, in the largest unit that divides it or KiB.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}

fn memslots(frame: &mut Frame, area: Rect, snapshot: &Snapshot, theme: Theme) {
    let rows = snapshot.memslots.iter().map(|slot| {
        Row::new(vec![
            Cell::from(slot.id.to_string()),
            Cell::from(format!("{:#x}-{:#x}", slot.start, slot.last)),
            Cell::from(size(slot.pages * umbra_mmu::addr::PAGE_SIZE)),
            Cell::from(slot.flags.clone()),
            Cell::from(slot.dirty.map_or_else(|| "-".to_owned(), |n| n.to_string())),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(4),
            Constraint::Length(23),
            Constraint::Length(8),
            Constraint::Min(8),
            Constraint::Length(6),
        ],
    )
    .header(Row::new(["slot", "guest physical", "size", "flags", "dirty"]).style(theme.label()));
    frame.render_widget(table, area);
}

/// Whether a KVM statistic is about memory management (shown first).
fn about_mmu(name: &str) -> bool {
    ["mmu", "pf_", "tlb", "pages", "nx_", "invlpg"]
        .iter()
        .any(|word| name.contains(word))
}

fn kvm_lines(snapshot: &Snapshot, theme: Theme) -> Vec<Line<'static>> {
    let vcpu_stats = snapshot
        .vcpu
        .as_ref()
        .map_or(&[][..], |vcpu| &vcpu.kernel_stats[..]);
    let vm_stats = match &snapshot.vm_stats {
        Ok(stats) => &stats[..],
        Err(why) => return vec![Line::raw(format!("not available on this host ({why})"))],
    };
    if vm_stats.is_empty() && vcpu_stats.is_empty() {
        return vec![Line::raw(format!(
            "{}: no kernel statistics (the MMU is Umbra's own: see the MMU pane)",
            snapshot.backend
        ))];
    }
    let mut lines = Vec::new();
    for (whose, stats) in [("VM", vm_stats), ("vCPU 0", vcpu_stats)] {
        lines.push(Line::styled(format!("{whose}:"), theme.label()));
        let mut sorted: Vec<&(String, u64)> = stats.iter().collect();
        sorted.sort_by_key(|(name, _)| !about_mmu(name));
        lines.extend(
            sorted
                .into_iter()
                .map(|(name, value)| Line::raw(format!("  {name:<28} {value}"))),
        );
    }
    lines
}

fn browser(frame: &mut Frame, area: Rect, snapshot: &Snapshot, theme: Theme) {
    let Some(view) = &snapshot.browser else {
        text(
            frame,
            area,
            vec![Line::raw("t opens the page-table browser")],
        );
        return;
    };
    let [list, note] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
    let wide = area.width >= 90;
    let items: Vec<ListItem> = view
        .rows
        .iter()
        .map(|row| {
            let value = if wide {
                format!("{:#018x} ", row.value)
            } else {
                String::new()
            };
            ListItem::new(format!(
                "{:>4} {:#018x} {value}{:<24} {}",
                row.index, row.va, row.target, row.flags
            ))
        })
        .collect();
    if items.is_empty() {
        text(frame, list, vec![Line::raw("no present entries")]);
    } else {
        let mut state = ListState::default().with_selected(Some(view.selected));
        frame.render_stateful_widget(
            List::new(items).highlight_style(theme.selected()),
            list,
            &mut state,
        );
    }
    if let Some(text) = &view.note {
        frame.render_widget(Line::styled(text.clone(), theme.on()), note);
    }
}
