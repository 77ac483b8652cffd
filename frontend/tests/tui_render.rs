//! The TUI's frames for fixed snapshots: each pane, the whole screen in a small and a large
//! terminal, the help, and NO_COLOR. The frames are insta snapshots (`tests/snapshots/`);
//! `cargo insta review` (or INSTA_UPDATE=always) accepts a deliberate change.

use std::sync::Arc;
use std::time::Instant;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use umbra::inspect::MemslotRow;
use umbra::tui::browser::{BrowserRow, BrowserView};
use umbra::tui::rates::RateSeries;
use umbra::tui::render::{render, render_pane};
use umbra::tui::snapshot::{Overlay, Pane, RunState, Snapshot, VcpuState};
use umbra_cpu::state::{Registers, Segment, SystemRegisters};
use umbra_mmu::counters::MmuCounters;
use umbra_mmu::role::{CR0_PG, CR0_WP, CR4_PAE, CpuRole, EFER_LMA, EFER_NXE, PageRole};
use umbra_mmu::shadow::ShadowStats;
use umbra_mmu::vcpu_mmu::{MmuSnapshot, RootInfo};
use umbra_mmu::walker::Walker;

const CR0: u64 = CR0_PG | CR0_WP | 0x11;
const CR4: u64 = CR4_PAE | 1 << 7 | 1 << 9;
const EFER: u64 = EFER_LMA | EFER_NXE | 1 << 8;

/// A vCPU in long mode at CPL 0, at `mov rax, [rbx+8]`, with three cached roots.
fn vcpu(with_mmu: bool) -> VcpuState {
    let role = CpuRole::from_regs(CR0, CR4, EFER);
    let mut walker = Walker::new(40, true).unwrap();
    walker.set_role(role);
    walker.set_cr3(0x6000);
    let mut gpr = [0; 16];
    gpr[0] = 0x1234;
    gpr[3] = 0x40_0000;
    gpr[4] = 0x7ff0;
    let root = |id, cr3, hits| RootInfo {
        cr3,
        role: PageRole::root(role),
        id,
        hits,
    };
    let mmu = MmuSnapshot {
        role,
        cr3: 0x6000,
        shadowing: true,
        roots: vec![
            root(0, 0x6000, 12),
            root(3, 0x15000, 4),
            root(2, 0x10001, 0),
        ],
        tlb_used: 7,
        counters: MmuCounters {
            tlb_hits: 118_742,
            tlb_misses: 84,
            tlb_fills: 83,
            tlb_flushes: 18,
            shadow_hits: 30,
            walks: 54,
            ..MmuCounters::default()
        },
        shadow: ShadowStats {
            pages_created: 46,
            pages_zapped: 2,
            pages_alive: 44,
            pages_by_level: [14, 15, 10, 5, 0],
            ..ShadowStats::default()
        },
    };
    VcpuState {
        taken: Instant::now(),
        regs: Registers {
            gpr,
            rip: 0x10_0a2c,
            rflags: 0x246,
        },
        sregs: SystemRegisters {
            cs: Segment {
                l: true,
                ..Segment::default()
            },
            cr0: CR0,
            cr3: 0x6000,
            cr4: CR4,
            efer: EFER,
            cr2: 0x4000_0000_1000,
            ..SystemRegisters::default()
        },
        code: vec![0x48, 0x8b, 0x43, 0x08, 0x90],
        walker: Some(walker),
        mmu: with_mmu.then_some(mmu),
        stats: vec![
            ("tlb_hits", 118_742),
            ("jit_blocks_translated", 35),
            ("jit_invalidations", 0),
        ],
        kernel_stats: if with_mmu {
            Vec::new()
        } else {
            vec![("pf_taken".to_owned(), 812), ("exits".to_owned(), 4410)]
        },
    }
}

fn series(label: &'static str, samples: &[u64], max: Option<u64>, latest: &str) -> RateSeries {
    RateSeries {
        label,
        samples: samples.to_vec(),
        max,
        latest: latest.to_owned(),
    }
}

/// The emulator's screen a moment into the demo.
fn snapshot() -> Snapshot {
    Snapshot {
        backend: "emu".to_owned(),
        run: RunState::Running,
        vcpu: Some(Arc::new(vcpu(true))),
        rates: vec![
            series("TLB hit %", &[90, 95, 99, 99, 100, 98], Some(100), "98%"),
            series("walks/s", &[0, 120, 40, 0, 3, 10], None, "10"),
            series("faults/s", &[0, 2, 0, 0, 1, 0], None, "0"),
            series("CR3 sw/s", &[0, 0, 3, 9, 3, 0], None, "0"),
            series("JIT blk/s", &[0, 30, 5, 0, 0, 0], None, "0"),
        ],
        memslots: vec![
            MemslotRow {
                id: 0,
                start: 0,
                last: 0x9_ffff,
                pages: 160,
                flags: String::new(),
                dirty: None,
            },
            MemslotRow {
                id: 1,
                start: 0x10_0000,
                last: 0x7ff_ffff,
                pages: 32512,
                flags: "log-dirty".to_owned(),
                dirty: Some(17),
            },
            MemslotRow {
                id: 2,
                start: 0xfff0_0000,
                last: 0xffff_ffff,
                pages: 256,
                flags: "readonly".to_owned(),
                dirty: None,
            },
        ],
        vm_stats: Ok(Vec::new()),
        console: vec![
            "umbra demo: long mode".to_owned(),
            "check cr3 switch: space 1 reads 0x1111 ok".to_owned(),
            "check cr0.wp=1: page fault error code 0x3 ok".to_owned(),
        ],
        console_scroll: 0,
        focus: Pane::Mmu,
        detail: Pane::Mmu,
        browser: None,
        prompt: None,
        overlay: None,
        help: false,
        message: None,
        color: true,
    }
}

fn kvm_snapshot() -> Snapshot {
    Snapshot {
        backend: "kvm".to_owned(),
        vcpu: Some(Arc::new(vcpu(false))),
        vm_stats: Ok(vec![
            ("remote_tlb_flush".to_owned(), 3),
            ("mmu_shadow_zapped".to_owned(), 0),
            ("pages_4k".to_owned(), 310),
        ]),
        ..snapshot()
    }
}

fn browser_view() -> BrowserView {
    BrowserView {
        path: "CR3 0x6000 > PML4E[0]".to_owned(),
        rows: vec![
            BrowserRow {
                index: 0,
                va: 0,
                value: 0x8023,
                target: "table 0x8000".to_owned(),
                flags: "P W A".to_owned(),
            },
            BrowserRow {
                index: 1,
                va: 0x4000_0000,
                value: 0x4000_00e3,
                target: "1 GiB page 0x40000000".to_owned(),
                flags: "P W A D PS".to_owned(),
            },
        ],
        selected: 1,
        note: Some("0x40001000 -> physical 0x40001000 (1 GiB page)".to_owned()),
    }
}

fn draw(width: u16, height: u16, paint: impl FnOnce(&mut ratatui::Frame)) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(paint).unwrap();
    terminal
}

fn pane(pane: Pane, snapshot: &Snapshot) -> Terminal<TestBackend> {
    draw(80, 16, |frame| {
        render_pane(frame, frame.area(), pane, snapshot)
    })
}

#[test]
fn vcpu_pane() {
    insta::assert_snapshot!(pane(Pane::Vcpu, &snapshot()).backend());
}

#[test]
fn mmu_pane() {
    insta::assert_snapshot!(pane(Pane::Mmu, &snapshot()).backend());
}

#[test]
fn mmu_pane_on_kvm() {
    insta::assert_snapshot!(pane(Pane::Mmu, &kvm_snapshot()).backend());
}

#[test]
fn rates_pane() {
    insta::assert_snapshot!(pane(Pane::Rates, &snapshot()).backend());
}

#[test]
fn memslots_pane() {
    insta::assert_snapshot!(pane(Pane::Memslots, &snapshot()).backend());
}

#[test]
fn kvm_pane() {
    insta::assert_snapshot!(pane(Pane::Kvm, &kvm_snapshot()).backend());
}

#[test]
fn console_pane_focused_and_scrolled() {
    let snapshot = Snapshot {
        focus: Pane::Console,
        console_scroll: 4,
        ..snapshot()
    };
    insta::assert_snapshot!(pane(Pane::Console, &snapshot).backend());
}

#[test]
fn browser_pane() {
    let snapshot = Snapshot {
        browser: Some(browser_view()),
        focus: Pane::Browser,
        ..snapshot()
    };
    insta::assert_snapshot!(pane(Pane::Browser, &snapshot).backend());
}

#[test]
fn small_screen_shows_the_console_and_one_pane() {
    let snapshot = Snapshot {
        detail: Pane::Vcpu,
        ..snapshot()
    };
    insta::assert_snapshot!(draw(80, 24, |frame| render(frame, &snapshot)).backend());
}

#[test]
fn large_screen_shows_every_pane() {
    insta::assert_snapshot!(draw(170, 45, |frame| render(frame, &kvm_snapshot())).backend());
}

#[test]
fn the_end_and_a_walk_stay_on_screen() {
    let snapshot = Snapshot {
        run: RunState::Ended("isa-debug-exit, status 0".to_owned()),
        overlay: Some(Overlay {
            title: "walk".to_owned(),
            text: "read by kernel at 0x1000, cr3 0x6000, 4-level WP NXE\n  \
                   PML4E[0]   at 0x6000: 0x0000000000007023 P W A\n  \
                   -> physical 0x1000 (4 KiB page)"
                .to_owned(),
        }),
        ..snapshot()
    };
    insta::assert_snapshot!(draw(80, 24, |frame| render(frame, &snapshot)).backend());
}

#[test]
fn help() {
    let snapshot = Snapshot {
        help: true,
        ..snapshot()
    };
    insta::assert_snapshot!(draw(80, 24, |frame| render(frame, &snapshot)).backend());
}

#[test]
fn no_color_means_no_colours() {
    let colours = |color: bool| {
        let snapshot = Snapshot {
            color,
            ..kvm_snapshot()
        };
        let terminal = draw(170, 45, |frame| render(frame, &snapshot));
        terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .filter(|cell| cell.fg != Color::Reset || cell.bg != Color::Reset)
            .count()
    };
    assert!(colours(true) > 0);
    assert_eq!(colours(false), 0, "NO_COLOR: no cell has a colour");
}
