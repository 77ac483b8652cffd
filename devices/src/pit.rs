//! The 8254 programmable interval timer, and the speaker/gate bits of port 0x61.
//!
//! Three 16-bit down-counters clocked at 1.193182 MHz. Channel 0's OUT drives IRQ 0; channel
//! 2's gate and OUT are bits 0 and 5 of port 0x61 (which Linux uses to calibrate the TSC);
//! channel 1 (once DRAM refresh) only counts. Port 0x43 takes control words (channel, access as
//! latch / low byte / high byte / low-then-high, mode 0-5, BCD) and the read-back command
//! (latch the count and/or the status byte of several channels at once).
//!
//! Counts and OUT levels are computed from the clock when they are read, so they are exact to
//! the tick whenever the guest looks. Channel 0 raises IRQ 0 at each rising edge of its OUT: in
//! mode 0 and 1 when the count runs out, in modes 2 and 3 once per period, in modes 4 and 5 one
//! tick after the count runs out. [`Pit::run_due`] delivers the edge (the line goes low, then
//! high) when the clock passes it; one call delivers one edge however many periods went by.
//! Between edges the line stays at the level OUT takes after its rising edge (high), except
//! that a control word or a count written to channel 0 sets it to OUT's new level at once.
//!
//! OUT as the datasheet gives it: mode 0 low until the count runs out, then high; mode 1 (as
//! QEMU, triggered when the count is written) low while counting, high after; mode 2 high,
//! low for the tick before each reload; mode 3 high for the first half of each period, low for
//! the second; modes 4 and 5 high, low for the tick at which the count reaches zero. Before a
//! count is written after a control word, OUT is low in mode 0 and high in the others. A low
//! gate suspends counting in modes 0 and 4, and stops it (OUT high) in modes 2 and 3; its
//! rising edge restarts modes 1, 2, 3 and 5 from the initial count.
//!
//! Departures from the chip, all shared with QEMU: BCD counting is not modelled (the bit is
//! kept for the status byte, the count runs in binary); a count is loaded at once rather than
//! on the next clock edge, and a new count written in mode 2 or 3 restarts the period instead
//! of waiting for the current one to end; mode 3 with an odd count divides the period evenly.
//! Bit 4 of port 0x61 (the DRAM refresh toggle) flips on every read, so a guest that waits for
//! it to flip never waits.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::bus::{Bus, BusDevice, BusError};
use crate::clock::{Clock, Timed, tick_time, ticks_at};
use crate::irq::IrqLine;

/// The PIT's first port (channel 0); channels 1 and 2 and the control port follow.
pub const PIT_PORT: u64 = 0x40;
/// System control port B: channel 2's gate and OUT, and the speaker.
pub const SPEAKER_PORT: u64 = 0x61;
/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// The interrupt line of channel 0.
pub const PIT_IRQ: u32 = 0;

/// Offsets in the device: ports less [`PIT_PORT`].
const CONTROL: u64 = 3;
const PORT_B: u64 = SPEAKER_PORT - PIT_PORT;

/// How a channel's count is read and written (control word bits 5-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Low,
    High,
    Word,
}

impl Access {
    fn bits(self) -> u8 {
        match self {
            Access::Low => 1,
            Access::High => 2,
            Access::Word => 3,
        }
    }
}

/// A count latched for reading: the bytes not yet read, first in the low byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Latched {
    value: u16,
    bytes_left: u8,
}

/// One counter.
#[derive(Clone, Debug)]
struct Channel {
    mode: u8,
    bcd: bool,
    access: Access,
    /// The initial count, 1 to 0x10000 (a written 0 means 0x10000).
    initial: u64,
    /// Whether a complete count was written since the last control word.
    armed: bool,
    gate: bool,
    /// Ticks counted before `started`, when the count was suspended by the gate.
    ticks_before: u64,
    /// The PIT tick at which counting last (re)started; `None` while suspended or stopped.
    started: Option<u64>,
    /// The low byte of a word write, waiting for the high byte.
    low_written: Option<u8>,
    /// A word read has returned the low byte and the high byte comes next.
    high_read_next: bool,
    latched: Option<Latched>,
    status: Option<u8>,
}

impl Channel {
    /// A channel counting in mode 3 from 0x10000, as PC firmware leaves channels 0 and 1.
    fn new(gate: bool, tick: u64) -> Self {
        Self {
            mode: 3,
            bcd: false,
            access: Access::Word,
            initial: 0x10000,
            armed: true,
            gate,
            ticks_before: 0,
            started: gate.then_some(tick),
            low_written: None,
            high_read_next: false,
            latched: None,
            status: None,
        }
    }

    /// Ticks counted at PIT tick `tick`.
    fn elapsed(&self, tick: u64) -> u64 {
        self.ticks_before + self.started.map_or(0, |started| tick - started)
    }

    /// Whether the gate lets this mode count (modes 1 and 5 count once triggered).
    fn gate_counts(&self) -> bool {
        self.gate || matches!(self.mode, 1 | 5)
    }

    fn control_word(&mut self, mode: u8, access: Access, bcd: bool) {
        // Modes 6 and 7 are modes 2 and 3.
        self.mode = if mode >= 6 { mode - 4 } else { mode };
        self.access = access;
        self.bcd = bcd;
        self.armed = false;
        self.started = None;
        self.low_written = None;
        self.high_read_next = false;
        self.latched = None;
        self.status = None;
    }

    /// A byte written to the channel's port at PIT tick `tick`.
    fn write(&mut self, value: u8, tick: u64) {
        let value = u64::from(value);
        match (self.access, self.low_written.take()) {
            (Access::Low, _) => self.load(value, tick),
            (Access::High, _) => self.load(value << 8, tick),
            (Access::Word, Some(low)) => self.load(u64::from(low) | (value << 8), tick),
            (Access::Word, None) => {
                self.low_written = Some(value as u8);
                if self.mode == 0 {
                    // In mode 0 the first byte of a new count stops counting and sets OUT low.
                    self.armed = false;
                    self.started = None;
                }
            }
        }
    }

    fn load(&mut self, count: u64, tick: u64) {
        self.initial = if count == 0 { 0x10000 } else { count };
        self.armed = true;
        self.ticks_before = 0;
        self.started = self.gate_counts().then_some(tick);
    }

    fn set_gate(&mut self, gate: bool, tick: u64) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        if !self.armed {
            return;
        }
        match (self.mode, gate) {
            // A low gate holds the count in modes 0, 2, 3 and 4 (and OUT high in 2 and 3).
            (0 | 2 | 3 | 4, false) => {
                self.ticks_before = self.elapsed(tick);
                self.started = None;
            }
            // Modes 0 and 4 go on counting from there...
            (0 | 4, true) => self.started = Some(tick),
            // ...the others start over from the initial count; modes 1 and 5 ignore the
            // falling edge.
            (_, true) => {
                self.ticks_before = 0;
                self.started = Some(tick);
            }
            (_, false) => {}
        }
    }

    fn out(&self, tick: u64) -> bool {
        if !self.armed {
            return self.mode != 0;
        }
        let t = self.elapsed(tick);
        let n = self.initial;
        match self.mode {
            0 | 1 => t >= n,
            2 if self.started.is_none() => true,
            2 => t % n != n - 1,
            3 if self.started.is_none() => true,
            3 => t % n < n.div_ceil(2),
            _ => t != n,
        }
    }

    fn count(&self, tick: u64) -> u16 {
        if !self.armed {
            return self.initial as u16;
        }
        let t = self.elapsed(tick);
        let n = self.initial;
        let count = match self.mode {
            0 | 1 | 4 | 5 => n.wrapping_sub(t),
            2 => n - t % n,
            _ => n - (2 * t) % n,
        };
        count as u16
    }

    /// The PIT tick of the first rising edge of OUT after tick `tick`, if there is one.
    fn next_rising_edge(&self, tick: u64) -> Option<u64> {
        let started = self.started.filter(|_| self.armed)?;
        let t = self.elapsed(tick);
        let n = self.initial;
        let edge = match self.mode {
            0 | 1 => (t < n).then_some(n)?,
            2 | 3 => (t / n + 1) * n,
            _ => (t <= n).then_some(n + 1)?,
        };
        Some(started + (edge - self.ticks_before))
    }

    /// The status byte of the read-back command.
    fn status_byte(&self, tick: u64) -> u8 {
        (u8::from(self.out(tick)) << 7)
            | (u8::from(!self.armed) << 6)
            | (self.access.bits() << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn latch_count(&mut self, tick: u64) {
        if self.latched.is_none() {
            self.latched = Some(Latched {
                value: self.count(tick),
                bytes_left: if self.access == Access::Word { 2 } else { 1 },
            });
        }
    }

    fn read(&mut self, tick: u64) -> u8 {
        if let Some(status) = self.status.take() {
            return status;
        }
        let (value, high) = match self.latched {
            Some(latched) => {
                let high = self.access == Access::High
                    || (self.access == Access::Word && latched.bytes_left == 1);
                self.latched = (latched.bytes_left == 2).then_some(Latched {
                    bytes_left: 1,
                    ..latched
                });
                (latched.value, high)
            }
            None => {
                let high = match self.access {
                    Access::Low => false,
                    Access::High => true,
                    Access::Word => {
                        self.high_read_next = !self.high_read_next;
                        !self.high_read_next
                    }
                };
                (self.count(tick), high)
            }
        };
        if high {
            (value >> 8) as u8
        } else {
            value as u8
        }
    }
}

/// The 8254 and port 0x61.
pub struct Pit {
    clock: Arc<dyn Clock>,
    irq: IrqLine,
    channels: [Channel; 3],
    /// Port 0x61 bit 1: speaker data enable.
    speaker_data: bool,
    /// Port 0x61 bits 2-3 (parity and channel check enables), kept as written.
    check_enables: u8,
    refresh: bool,
    /// The clock time of channel 0's next rising edge.
    next_edge: Option<u64>,
}

impl Pit {
    /// The PIT as firmware leaves it: every channel in mode 3 with count 0x10000 (channel 0
    /// interrupting at 18.2 Hz), channel 2's gate low. Channel 0 drives `irq`.
    pub fn new(clock: Arc<dyn Clock>, irq: IrqLine) -> Self {
        let tick = ticks_at(clock.now_ns(), PIT_HZ);
        let mut pit = Self {
            clock,
            irq,
            channels: [
                Channel::new(true, tick),
                Channel::new(true, tick),
                Channel::new(false, tick),
            ],
            speaker_data: false,
            check_enables: 0,
            refresh: false,
            next_edge: None,
        };
        // Mode 3 starts with OUT high.
        pit.irq.set_level(true);
        pit.schedule(tick);
        pit
    }

    /// Puts the PIT's ports (0x40-0x43 and 0x61) on `pio`.
    pub fn attach(pit: &Arc<Mutex<Pit>>, pio: &Bus) -> Result<(), BusError> {
        pio.insert_window(PIT_PORT, 4, pit.clone(), 0)?;
        pio.insert_window(SPEAKER_PORT, 1, pit.clone(), PORT_B)
    }

    fn tick(&self) -> u64 {
        ticks_at(self.clock.now_ns(), PIT_HZ)
    }

    /// Recomputes when channel 0 next raises IRQ 0.
    fn schedule(&mut self, tick: u64) {
        self.next_edge = self.channels[0]
            .next_rising_edge(tick)
            .map(|edge| tick_time(edge, PIT_HZ));
    }

    /// After channel 0 was programmed: its IRQ line takes OUT's level now.
    fn channel0_programmed(&mut self, tick: u64) {
        self.irq.set_level(self.channels[0].out(tick));
        self.schedule(tick);
    }

    fn write_control(&mut self, value: u8, tick: u64) {
        let select = value >> 6;
        if select == 3 {
            self.read_back(value, tick);
            return;
        }
        let channel = &mut self.channels[usize::from(select)];
        let access = match (value >> 4) & 3 {
            0 => {
                channel.latch_count(tick);
                return;
            }
            1 => Access::Low,
            2 => Access::High,
            _ => Access::Word,
        };
        channel.control_word((value >> 1) & 7, access, value & 1 != 0);
        if select == 0 {
            self.channel0_programmed(tick);
        }
    }

    /// The read-back command: bit 5 clear latches counts, bit 4 clear latches status, of the
    /// channels in bits 1-3.
    fn read_back(&mut self, value: u8, tick: u64) {
        for (index, channel) in self.channels.iter_mut().enumerate() {
            if value & (2 << index) == 0 {
                continue;
            }
            if value & 0x20 == 0 {
                channel.latch_count(tick);
            }
            if value & 0x10 == 0 && channel.status.is_none() {
                channel.status = Some(channel.status_byte(tick));
            }
        }
    }

    fn read_port_b(&mut self, tick: u64) -> u8 {
        self.refresh = !self.refresh;
        let channel2 = &self.channels[2];
        u8::from(channel2.gate)
            | (u8::from(self.speaker_data) << 1)
            | self.check_enables
            | (u8::from(self.refresh) << 4)
            | (u8::from(channel2.out(tick)) << 5)
    }

    fn write_port_b(&mut self, value: u8, tick: u64) {
        self.speaker_data = value & 0x02 != 0;
        self.check_enables = value & 0x0c;
        self.channels[2].set_gate(value & 0x01 != 0, tick);
    }
}

impl BusDevice for Pit {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let tick = self.tick();
        let value = match offset {
            0..=2 => self.channels[offset as usize].read(tick),
            PORT_B => self.read_port_b(tick),
            // The control port is write-only.
            _ => 0,
        };
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let tick = self.tick();
        let value = data[0];
        match offset {
            0 => {
                self.channels[0].write(value, tick);
                self.channel0_programmed(tick);
            }
            1 | 2 => self.channels[offset as usize].write(value, tick),
            CONTROL => self.write_control(value, tick),
            PORT_B => self.write_port_b(value, tick),
            _ => {}
        }
    }
}

impl Timed for Pit {
    fn next_deadline(&self) -> Option<u64> {
        self.next_edge
    }

    fn run_due(&mut self) {
        let now = self.clock.now_ns();
        if self.next_edge.is_some_and(|edge| edge <= now) {
            self.irq.set_level(false);
            self.irq.set_level(true);
            self.schedule(ticks_at(now, PIT_HZ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::irq::testing::RecordingController;

    /// Linux's LATCH for HZ = 1000.
    const LATCH: u16 = 1193;

    struct Bench {
        clock: Arc<ManualClock>,
        irqs: Arc<RecordingController>,
        /// Rising edges of IRQ 0 at power-up, when the line first goes high.
        power_up_edges: usize,
        pit: Pit,
    }

    impl Bench {
        fn new() -> Self {
            let clock = Arc::new(ManualClock::new(0));
            let (irqs, irq) = RecordingController::with_line(PIT_IRQ);
            let pit = Pit::new(clock.clone(), irq);
            let power_up_edges = irqs.rising_edges(PIT_IRQ);
            Self {
                clock,
                irqs,
                power_up_edges,
                pit,
            }
        }

        /// Rising edges of IRQ 0 since power-up.
        fn edges(&self) -> usize {
            self.irqs.rising_edges(PIT_IRQ) - self.power_up_edges
        }

        fn out(&mut self, port: u64, value: u8) {
            self.pit.write(port - PIT_PORT, &[value]);
        }

        fn inb(&mut self, port: u64) -> u8 {
            let mut byte = [0];
            self.pit.read(port - PIT_PORT, &mut byte);
            byte[0]
        }

        /// Advances to the PIT's next deadline and runs it; returns that deadline.
        fn next_edge(&mut self) -> u64 {
            let deadline = self.pit.next_deadline().expect("no edge due");
            self.clock.advance_to(deadline);
            self.pit.run_due();
            deadline
        }

        /// Latches channel `channel`'s count and reads it, low byte first.
        fn latched_count(&mut self, channel: u8) -> u16 {
            self.out(0x43, channel << 6);
            let port = PIT_PORT + u64::from(channel);
            u16::from(self.inb(port)) | (u16::from(self.inb(port)) << 8)
        }
    }

    #[test]
    fn power_up_channel_0_interrupts_at_18_hz() {
        let mut bench = Bench::new();
        assert_eq!(bench.next_edge(), tick_time(0x10000, PIT_HZ));
        assert_eq!(bench.edges(), 1);
    }

    #[test]
    fn linux_periodic_mode_2_at_hz_interrupts_every_latch_ticks() {
        let mut bench = Bench::new();
        bench.clock.advance_to(5_000);
        let start = ticks_at(5_000, PIT_HZ);
        bench.out(0x43, 0x34);
        bench.out(0x40, LATCH as u8);
        bench.out(0x40, (LATCH >> 8) as u8);
        for period in 1..=3 {
            let edge = bench.next_edge();
            assert_eq!(edge, tick_time(start + period * u64::from(LATCH), PIT_HZ));
            assert_eq!(bench.edges(), period as usize);
            assert!(bench.irqs.level(PIT_IRQ));
        }
        // Counts down from LATCH, reloading each period.
        let period_start = tick_time(start + 3 * u64::from(LATCH), PIT_HZ);
        bench.clock.advance_to(period_start + 100_000);
        let elapsed = ticks_at(period_start + 100_000, PIT_HZ) - (start + 3 * u64::from(LATCH));
        assert_eq!(bench.latched_count(0), LATCH - elapsed as u16);
        // Missed periods are one interrupt; the next comes on the period grid.
        bench.clock.advance(10_000_000);
        bench.pit.run_due();
        assert_eq!(bench.edges(), 4);
        let now = ticks_at(bench.clock.now_ns(), PIT_HZ);
        let next = start + ((now - start) / u64::from(LATCH) + 1) * u64::from(LATCH);
        assert_eq!(bench.pit.next_deadline(), Some(tick_time(next, PIT_HZ)));
    }

    #[test]
    fn linux_oneshot_mode_4_interrupts_once_after_the_count() {
        let mut bench = Bench::new();
        bench.out(0x43, 0x38);
        bench.out(0x40, 100);
        bench.out(0x40, 0);
        assert_eq!(bench.next_edge(), tick_time(101, PIT_HZ));
        assert_eq!(bench.edges(), 1);
        assert_eq!(bench.pit.next_deadline(), None);
        // Linux's shutdown: mode 0 with a zero count, which counts 0x10000 and interrupts once.
        bench.out(0x43, 0x30);
        assert!(!bench.irqs.level(PIT_IRQ), "mode 0 starts with OUT low");
        bench.out(0x40, 0);
        bench.out(0x40, 0);
        let loaded = ticks_at(bench.clock.now_ns(), PIT_HZ);
        assert_eq!(bench.next_edge(), tick_time(loaded + 0x10000, PIT_HZ));
        assert_eq!(bench.edges(), 2);
        assert_eq!(bench.pit.next_deadline(), None);
        // Mode 0 keeps counting down past zero, wrapping.
        bench.clock.advance(tick_time(5, PIT_HZ));
        assert_eq!(bench.latched_count(0), 0u16.wrapping_sub(5));
    }

    #[test]
    fn linux_tsc_calibration_polls_channel_2_out_through_port_0x61() {
        let mut bench = Bench::new();
        // pit_calibrate_tsc: gate high, speaker off; channel 2 mode 0; 10 ms latch.
        let port_b = bench.inb(SPEAKER_PORT);
        bench.out(SPEAKER_PORT, (port_b & !0x02) | 0x01);
        bench.out(0x43, 0xb0);
        bench.out(0x42, (11932 & 0xff) as u8);
        bench.out(0x42, (11932 >> 8) as u8);
        let loaded = ticks_at(bench.clock.now_ns(), PIT_HZ);
        assert_eq!(
            bench.inb(SPEAKER_PORT) & 0x21,
            0x01,
            "OUT2 low while counting"
        );
        bench.clock.advance_to(tick_time(loaded + 11931, PIT_HZ));
        assert_eq!(bench.inb(SPEAKER_PORT) & 0x20, 0);
        bench.clock.advance_to(tick_time(loaded + 11932, PIT_HZ));
        assert_eq!(bench.inb(SPEAKER_PORT) & 0x20, 0x20);
        // The refresh bit toggles on each read.
        assert_ne!(
            bench.inb(SPEAKER_PORT) & 0x10,
            bench.inb(SPEAKER_PORT) & 0x10
        );
        assert_eq!(bench.edges(), 0, "channel 2 has no IRQ");
    }

    #[test]
    fn quick_pit_calibration_reads_the_msb_falling() {
        let mut bench = Bench::new();
        bench.out(SPEAKER_PORT, 0x01);
        bench.out(0x43, 0xb0);
        bench.out(0x42, 0xff);
        bench.out(0x42, 0xff);
        let loaded = ticks_at(bench.clock.now_ns(), PIT_HZ);
        for expected_msb in [0xffu8, 0xfe, 0xfd] {
            bench.inb(0x42);
            assert_eq!(bench.inb(0x42), expected_msb);
            let next = u64::from(0xffu8 - expected_msb + 1) * 256;
            bench.clock.advance_to(tick_time(loaded + next, PIT_HZ));
        }
    }

    #[test]
    fn a_low_gate_suspends_mode_0_and_restarts_mode_2() {
        let mut bench = Bench::new();
        bench.out(SPEAKER_PORT, 0x01);
        bench.out(0x43, 0xb0);
        bench.out(0x42, 0);
        bench.out(0x42, 0x10);
        let t0 = bench.clock.now_ns();
        bench.clock.advance_to(t0 + tick_time(100, PIT_HZ));
        bench.out(SPEAKER_PORT, 0x00);
        let held = bench.latched_count(2);
        bench.clock.advance(1_000_000);
        assert_eq!(bench.latched_count(2), held);
        bench.out(SPEAKER_PORT, 0x01);
        bench.clock.advance(tick_time(50, PIT_HZ));
        assert!(bench.latched_count(2) < held);

        bench.out(0x43, 0xb4);
        bench.out(0x42, 100);
        bench.out(0x42, 0);
        bench.clock.advance(tick_time(30, PIT_HZ));
        bench.out(SPEAKER_PORT, 0x00);
        let held = bench.latched_count(2);
        assert!(held <= 70);
        bench.clock.advance(tick_time(30, PIT_HZ));
        assert_eq!(bench.latched_count(2), held, "held while the gate is low");
        assert_eq!(
            bench.inb(SPEAKER_PORT) & 0x20,
            0x20,
            "OUT high while the gate is low"
        );
        bench.out(SPEAKER_PORT, 0x01);
        assert_eq!(
            bench.latched_count(2),
            100,
            "the rising gate reloads mode 2"
        );
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let mut bench = Bench::new();
        bench.out(0x43, 0x34);
        // Status only: a control word was written but no count yet (null count set).
        bench.out(0x43, 0xe2);
        assert_eq!(bench.inb(0x40), 0x80 | 0x40 | 0x34);
        bench.out(0x40, 0x00);
        bench.out(0x40, 0x02);
        bench.clock.advance(tick_time(16, PIT_HZ));
        bench.out(0x43, 0xc2);
        // A second latch before the reads is ignored.
        bench.clock.advance(tick_time(16, PIT_HZ));
        bench.out(0x43, 0x00);
        assert_eq!(bench.inb(0x40), 0x80 | 0x34);
        assert_eq!(bench.inb(0x40), (0x200 - 16) as u8);
        assert_eq!(bench.inb(0x40), ((0x200 - 16) >> 8) as u8);
    }

    #[test]
    fn byte_access_modes_and_the_square_wave() {
        let mut bench = Bench::new();
        bench.out(SPEAKER_PORT, 0x03);
        // Channel 2, low byte only, mode 3 with count 10: OUT high 5 ticks, low 5.
        bench.out(0x43, 0x96);
        bench.out(0x42, 10);
        let loaded = ticks_at(bench.clock.now_ns(), PIT_HZ);
        bench.clock.advance_to(tick_time(loaded + 4, PIT_HZ));
        assert_eq!(bench.inb(SPEAKER_PORT) & 0x20, 0x20);
        assert_eq!(bench.inb(0x42), 2, "mode 3 counts down by two");
        bench.clock.advance_to(tick_time(loaded + 5, PIT_HZ));
        assert_eq!(bench.inb(SPEAKER_PORT) & 0x20, 0);
        // High byte only.
        bench.out(0x43, 0xa0);
        bench.out(0x42, 0x12);
        assert_eq!(bench.inb(0x42), 0x12);
        assert_eq!(bench.inb(0x43), 0, "the control port reads nothing");
    }
}
