//! The MC146818 real-time clock and its CMOS memory: port 0x70 selects a byte (bit 7 masks
//! NMIs), port 0x71 reads or writes it.
//!
//! The clock keeps the time it was started with, advanced by the machine's [`Clock`], and
//! shows it in the registers as register B asks: BCD or binary, 24-hour or 12-hour with bit 7
//! of the hour for PM. The century is at 0x32 (0x37 reads and writes it too, as on PS/2s).
//! Register A's UIP bit is set for the last 244 us of each second, the update cycle during
//! which the time registers must not be read. Setting register B's SET bit stops the updates
//! (and clears UIE) so the guest can write a new time, which counts on from where SET is
//! cleared, in the same phase of the second; writing a time register while SET is clear sets
//! the time at once. The divider bits of register A stop the clock (values 11x) and restart it
//! (010), the first update coming half a second after the restart.
//!
//! Register C's flags are set as the datasheet says: UF at the end of each update cycle, AF
//! when an update lands on the alarm time (each alarm byte with its two top bits set matches
//! anything), PF at the periodic rate register A's low nibble selects (3.90625 ms for 1 and
//! 122.07 us for 3 to 500 ms for 15, a period of `2^(rate-1)` cycles of the 32.768 kHz base,
//! rates 1 and 2 standing for 8 and 9). Reading register C clears them. IRQ 8 is high while a
//! flag is set whose enable bit (PIE, AIE, UIE) in register B is set, and IRQF reports it.
//! The flags are brought up to date whenever the guest reads register C, and
//! [`Rtc::run_due`] raises the interrupt of an enabled one when its time comes.
//!
//! Bytes 0x0e-0x7f are battery-backed memory; [`Rtc::set_memory_size`] writes the memory-size
//! fields firmware and boot loaders read (0x15-0x18, 0x30-0x31, 0x34-0x35, 0x5b-0x5d).
//!
//! Departures from the chip: the square-wave output and daylight-saving bits are stored but do
//! nothing, and register D always reports a good battery.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::clock::{Clock, NANOS_PER_SEC, Timed, tick_time, ticks_at};
use crate::irq::IrqLine;

/// The RTC's index port; the data port follows.
pub const RTC_PORT: u64 = 0x70;
/// The number of ports it occupies.
pub const RTC_PORT_LEN: u64 = 2;
/// Its interrupt line.
pub const RTC_IRQ: u32 = 8;
/// Bytes of CMOS memory, clock registers included.
pub const CMOS_SIZE: usize = 128;

/// CMOS byte indices.
mod index {
    pub const SECONDS: usize = 0x00;
    pub const SECONDS_ALARM: usize = 0x01;
    pub const MINUTES: usize = 0x02;
    pub const MINUTES_ALARM: usize = 0x03;
    pub const HOURS: usize = 0x04;
    pub const HOURS_ALARM: usize = 0x05;
    pub const DAY_OF_WEEK: usize = 0x06;
    pub const DAY_OF_MONTH: usize = 0x07;
    pub const MONTH: usize = 0x08;
    pub const YEAR: usize = 0x09;
    pub const A: usize = 0x0a;
    pub const B: usize = 0x0b;
    pub const C: usize = 0x0c;
    pub const D: usize = 0x0d;
    /// The first byte of battery-backed memory.
    pub const NVRAM: usize = 0x0e;
    pub const CENTURY: usize = 0x32;
    pub const PS2_CENTURY: usize = 0x37;
}

/// The registers that show the time, which follow it while the clock updates.
const TIME_FIELDS: [usize; 8] = [
    index::SECONDS,
    index::MINUTES,
    index::HOURS,
    index::DAY_OF_WEEK,
    index::DAY_OF_MONTH,
    index::MONTH,
    index::YEAR,
    index::CENTURY,
];

const A_UIP: u8 = 0x80;
const A_DIVIDER: u8 = 0x70;
/// Divider value for a running clock: the 32.768 kHz time base.
const A_DIVIDER_RUNNING: u8 = 0x20;
const A_RATE: u8 = 0x0f;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24_HOUR: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
/// Register C's flags, in the same bit positions as their enables in register B.
const C_FLAGS: u8 = C_PF | C_AF | C_UF;
const D_VALID_RAM_AND_TIME: u8 = 0x80;
/// Hour bit 7 in 12-hour mode.
const PM: u8 = 0x80;

/// The time base of the divider chain.
const RTC_HZ: u64 = 32_768;
/// How long UIP is set before each update: 8 cycles of the time base, 244 us.
const UIP_NS: u64 = 8 * NANOS_PER_SEC / RTC_HZ;
const SECS_PER_DAY: i64 = 86_400;

/// Errors in setting up the CMOS memory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtcError {
    /// The index is a clock register or beyond the 128 bytes.
    #[error("CMOS byte {0:#x} is not battery-backed memory")]
    NotNvram(usize),
}

/// The MC146818 and its CMOS memory.
pub struct Rtc {
    clock: Arc<dyn Clock>,
    irq: IrqLine,
    cmos: [u8; CMOS_SIZE],
    index: usize,
    nmi_masked: bool,
    /// The clock's time, in seconds since 1970-01-01 00:00:00 UTC, at clock time `base_ns`,
    /// which is the start of that second. `base_ns` may lie before the clock's origin.
    base_secs: i64,
    base_ns: i64,
    /// Flags are up to date for every event at or before this clock time; never before
    /// `base_ns` (every change of the base first brings the flags up to date).
    synced_ns: u64,
    /// The clock time of the next update that sets AF.
    next_alarm: Option<u64>,
}

impl Rtc {
    /// An RTC showing `unix_secs` (seconds since 1970-01-01 00:00:00 UTC; pass the host's
    /// time) now, in 24-hour BCD, with the divider running and no interrupt enabled. It drives
    /// `irq`.
    pub fn new(clock: Arc<dyn Clock>, irq: IrqLine, unix_secs: i64) -> Self {
        let now = clock.now_ns();
        let mut cmos = [0; CMOS_SIZE];
        cmos[index::A] = A_DIVIDER_RUNNING | 0x06;
        cmos[index::B] = B_24_HOUR;
        cmos[index::D] = D_VALID_RAM_AND_TIME;
        let mut rtc = Self {
            clock,
            irq,
            cmos,
            index: 0,
            nmi_masked: false,
            base_secs: unix_secs,
            base_ns: now as i64,
            synced_ns: now,
            next_alarm: None,
        };
        rtc.show_time(now);
        rtc.find_next_alarm();
        rtc
    }

    /// Whether bit 7 of the last write to port 0x70 asked for NMIs to be masked.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// Writes CMOS byte `index` (0x0e-0x7f) as firmware would before the guest starts.
    pub fn set_nvram(&mut self, index: usize, value: u8) -> Result<(), RtcError> {
        if !(index::NVRAM..CMOS_SIZE).contains(&index) {
            return Err(RtcError::NotNvram(index));
        }
        self.cmos[index] = value;
        Ok(())
    }

    /// Fills the memory-size fields as PC firmware does for `below_4g` bytes of RAM under
    /// 4 GiB and `above_4g` above: base memory in KiB (at most 640), extended memory above
    /// 1 MiB in KiB (at most 65535, twice), memory from 16 MiB to 4 GiB and memory above 4 GiB
    /// in 64 KiB units.
    pub fn set_memory_size(&mut self, below_4g: u64, above_4g: u64) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let base = (below_4g / KIB).min(640);
        let extended = (below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        let above_16m = (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
        let high = (above_4g / (64 * KIB)).min(0xff_ffff);
        let fields: [(usize, u64, usize); 5] = [
            (0x15, base, 2),
            (0x17, extended, 2),
            (0x30, extended, 2),
            (0x34, above_16m, 2),
            (0x5b, high, 3),
        ];
        for (first, value, len) in fields {
            self.cmos[first..first + len].copy_from_slice(&value.to_le_bytes()[..len]);
        }
    }

    fn reg(&self, index: usize) -> u8 {
        self.cmos[index]
    }

    fn dividers_run(&self) -> bool {
        self.reg(index::A) & A_DIVIDER <= A_DIVIDER_RUNNING
    }

    /// Whether the registers follow the time: divider running, SET clear.
    fn updating(&self) -> bool {
        self.dividers_run() && self.reg(index::B) & B_SET == 0
    }

    fn binary(&self) -> bool {
        self.reg(index::B) & B_BINARY != 0
    }

    /// Nanoseconds from the base to clock time `ns`.
    fn since_base(&self, ns: u64) -> u64 {
        (ns as i64 - self.base_ns) as u64
    }

    fn secs_at(&self, ns: u64) -> i64 {
        self.base_secs + (self.since_base(ns) / NANOS_PER_SEC) as i64
    }

    fn encode(&self, value: i64) -> u8 {
        let value = value.rem_euclid(100) as u8;
        if self.binary() {
            value
        } else {
            ((value / 10) << 4) | (value % 10)
        }
    }

    fn decode(&self, value: u8) -> i64 {
        if self.binary() {
            i64::from(value)
        } else {
            i64::from(value >> 4) * 10 + i64::from(value & 0x0f)
        }
    }

    fn encode_hour(&self, hour: i64) -> u8 {
        if self.reg(index::B) & B_24_HOUR != 0 {
            self.encode(hour)
        } else {
            let pm = if hour >= 12 { PM } else { 0 };
            self.encode(if hour % 12 == 0 { 12 } else { hour % 12 }) | pm
        }
    }

    fn decode_hour(&self, value: u8) -> i64 {
        let hour = self.decode(value & !PM);
        if self.reg(index::B) & B_24_HOUR != 0 {
            hour
        } else {
            hour % 12 + if value & PM != 0 { 12 } else { 0 }
        }
    }

    /// Writes the time at clock time `now` into the time registers.
    fn show_time(&mut self, now: u64) {
        let secs = self.secs_at(now);
        let days = secs.div_euclid(SECS_PER_DAY);
        let time_of_day = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let fields = [
            (index::SECONDS, self.encode(time_of_day % 60)),
            (index::MINUTES, self.encode(time_of_day / 60 % 60)),
            (index::HOURS, self.encode_hour(time_of_day / 3600)),
            // 1970-01-01 was a Thursday; the register counts from Sunday = 1.
            (
                index::DAY_OF_WEEK,
                self.encode((days + 4).rem_euclid(7) + 1),
            ),
            (index::DAY_OF_MONTH, self.encode(day)),
            (index::MONTH, self.encode(month)),
            (index::YEAR, self.encode(year)),
            (index::CENTURY, self.encode(year.div_euclid(100))),
        ];
        for (index, value) in fields {
            self.cmos[index] = value;
        }
    }

    /// The time the time registers hold, in seconds since the epoch; out-of-range fields
    /// carry into the next ones, as `mktime` does.
    fn registers_time(&self) -> i64 {
        let year = self.decode(self.reg(index::CENTURY)) * 100 + self.decode(self.reg(index::YEAR));
        let days = days_from_civil(
            year,
            self.decode(self.reg(index::MONTH)),
            self.decode(self.reg(index::DAY_OF_MONTH)),
        );
        days * SECS_PER_DAY
            + self.decode_hour(self.reg(index::HOURS)) * 3600
            + self.decode(self.reg(index::MINUTES)) * 60
            + self.decode(self.reg(index::SECONDS))
    }

    /// Moves the base so that the time at `now` is `secs` plus `phase_ns` into that second.
    fn rebase(&mut self, now: u64, secs: i64, phase_ns: u64) {
        self.sync(now);
        self.base_secs = secs;
        self.base_ns = now as i64 - phase_ns as i64;
    }

    /// Starts the time over from the time registers, keeping the phase within the second.
    fn take_time_from_registers(&mut self, now: u64) {
        let phase = self.since_base(now) % NANOS_PER_SEC;
        self.rebase(now, self.registers_time(), phase);
        self.find_next_alarm();
    }

    /// Whether an update to the second `secs` matches the alarm registers.
    fn alarm_matches(&self, secs: i64) -> bool {
        let time_of_day = secs.rem_euclid(SECS_PER_DAY);
        let wanted = [
            (index::HOURS_ALARM, time_of_day / 3600),
            (index::MINUTES_ALARM, time_of_day / 60 % 60),
            (index::SECONDS_ALARM, time_of_day % 60),
        ];
        wanted.into_iter().all(|(index, value)| {
            let alarm = self.reg(index);
            let dont_care = alarm & 0xc0 == 0xc0;
            dont_care
                || if index == index::HOURS_ALARM {
                    self.decode_hour(alarm) == value
                } else {
                    self.decode(alarm) == value
                }
        })
    }

    /// Finds the next update, after the last synced one, that sets AF.
    fn find_next_alarm(&mut self) {
        self.next_alarm = None;
        if !self.updating() {
            return;
        }
        let synced_second = self.since_base(self.synced_ns) / NANOS_PER_SEC;
        // An alarm that matches no time of day (an hour of 25) never fires; one day of
        // seconds covers every other.
        let ahead = (1..=SECS_PER_DAY as u64)
            .find(|ahead| self.alarm_matches(self.base_secs + (synced_second + ahead) as i64));
        self.next_alarm = ahead
            .map(|ahead| (self.base_ns + ((synced_second + ahead) * NANOS_PER_SEC) as i64) as u64);
    }

    /// Cycles of the 32.768 kHz base per periodic interrupt, if a rate is selected.
    fn periodic_cycles(&self) -> Option<u64> {
        match self.reg(index::A) & A_RATE {
            0 => None,
            rate @ 1..=2 => Some(1 << (rate + 6)),
            rate => Some(1 << (rate - 1)),
        }
    }

    /// The clock time of the first periodic edge after `after`.
    fn next_periodic_edge(&self, after: u64) -> Option<u64> {
        let cycles = self.periodic_cycles().filter(|_| self.dividers_run())?;
        let edge = (ticks_at(self.since_base(after), RTC_HZ) / cycles + 1) * cycles;
        Some((self.base_ns + tick_time(edge, RTC_HZ) as i64) as u64)
    }

    /// The clock time of the first update after `after`.
    fn next_update(&self, after: u64) -> Option<u64> {
        self.updating().then(|| {
            let second = self.since_base(after) / NANOS_PER_SEC + 1;
            (self.base_ns + (second * NANOS_PER_SEC) as i64) as u64
        })
    }

    /// Sets the flags of every event after the last sync up to `now`, and the IRQ line.
    fn sync(&mut self, now: u64) {
        let from = self.synced_ns;
        let mut flags = 0;
        if self.next_update(from).is_some_and(|update| update <= now) {
            flags |= C_UF;
        }
        if self.next_alarm.is_some_and(|alarm| alarm <= now) {
            flags |= C_AF;
        }
        if self
            .next_periodic_edge(from)
            .is_some_and(|edge| edge <= now)
        {
            flags |= C_PF;
        }
        self.synced_ns = now;
        if flags & C_AF != 0 {
            self.find_next_alarm();
        }
        self.cmos[index::C] |= flags;
        self.update_irq();
    }

    fn interrupt_requested(&self) -> bool {
        self.reg(index::C) & self.reg(index::B) & C_FLAGS != 0
    }

    fn update_irq(&self) {
        self.irq.set_level(self.interrupt_requested());
    }

    fn read_data(&mut self, now: u64) -> u8 {
        match self.index {
            index if TIME_FIELDS.contains(&index) => {
                if self.updating() {
                    self.show_time(now);
                }
                self.reg(self.index)
            }
            index::A => {
                let in_update = self.updating()
                    && self.since_base(now) % NANOS_PER_SEC >= NANOS_PER_SEC - UIP_NS;
                self.reg(index::A) | if in_update { A_UIP } else { 0 }
            }
            index::C => {
                self.sync(now);
                let irqf = if self.interrupt_requested() {
                    C_IRQF
                } else {
                    0
                };
                let value = std::mem::take(&mut self.cmos[index::C]) | irqf;
                self.update_irq();
                value
            }
            index => self.reg(index),
        }
    }

    fn write_data(&mut self, value: u8, now: u64) {
        match self.index {
            index if TIME_FIELDS.contains(&index) => {
                let updating = self.updating();
                if updating {
                    // The other fields must say the present time, not the last one read.
                    self.show_time(now);
                }
                self.cmos[self.index] = value;
                if updating {
                    self.take_time_from_registers(now);
                }
            }
            index::SECONDS_ALARM | index::MINUTES_ALARM | index::HOURS_ALARM => {
                self.sync(now);
                self.cmos[self.index] = value;
                self.find_next_alarm();
            }
            index::A => self.write_register_a(value, now),
            index::B => self.write_register_b(value, now),
            index::C | index::D => {}
            index => self.cmos[index] = value,
        }
    }

    fn write_register_a(&mut self, value: u8, now: u64) {
        self.sync(now);
        let was_running = self.dividers_run();
        if was_running && self.updating() {
            self.show_time(now);
        }
        self.cmos[index::A] = value & !A_UIP;
        if !was_running && self.updating() {
            // Out of divider reset, the first update comes half a second later.
            self.rebase(now, self.registers_time(), NANOS_PER_SEC / 2);
        }
        self.find_next_alarm();
    }

    fn write_register_b(&mut self, mut value: u8, now: u64) {
        self.sync(now);
        let old = self.reg(index::B);
        if value & B_SET != 0 {
            if self.updating() {
                self.show_time(now);
            }
            // Setting SET clears UIE.
            value &= !B_UIE;
        } else if old & B_SET != 0 && self.dividers_run() {
            // The time written while SET was set, read in the format it was written in.
            self.take_time_from_registers(now);
        }
        self.cmos[index::B] = value;
        self.find_next_alarm();
        self.update_irq();
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = if offset == 0 {
            // The index port is write-only.
            0xff
        } else {
            let now = self.clock.now_ns();
            self.read_data(now)
        };
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let value = data[0];
        if offset == 0 {
            self.nmi_masked = value & 0x80 != 0;
            self.index = match usize::from(value & 0x7f) {
                index::PS2_CENTURY => index::CENTURY,
                index => index,
            };
        } else {
            let now = self.clock.now_ns();
            self.write_data(value, now);
        }
    }
}

impl Timed for Rtc {
    fn next_deadline(&self) -> Option<u64> {
        let enabled = self.reg(index::B) & !self.reg(index::C);
        let from = self.synced_ns;
        [
            (B_PIE, self.next_periodic_edge(from)),
            (B_UIE, self.next_update(from)),
            (B_AIE, self.next_alarm),
        ]
        .into_iter()
        .filter(|(enable, _)| enabled & enable != 0)
        .filter_map(|(_, deadline)| deadline)
        .min()
    }

    fn run_due(&mut self) {
        let now = self.clock.now_ns();
        self.sync(now);
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date; months outside 1-12 carry into the
/// year, days outside the month into the next or previous (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = year + (month - 1).div_euclid(12);
    let month = (month - 1).rem_euclid(12) + 1;
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date (year, month 1-12, day 1-31) of day `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::irq::testing::RecordingController;

    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const LEAP_DAY_EVENING: i64 = 1_709_164_800 + 86_398;

    struct Bench {
        clock: Arc<ManualClock>,
        irqs: Arc<RecordingController>,
        rtc: Rtc,
    }

    impl Bench {
        fn new(unix_secs: i64) -> Self {
            let clock = Arc::new(ManualClock::new(1_000));
            let (irqs, irq) = RecordingController::with_line(RTC_IRQ);
            let rtc = Rtc::new(clock.clone(), irq, unix_secs);
            Self { clock, irqs, rtc }
        }

        fn read(&mut self, index: u8) -> u8 {
            self.rtc.write(0, &[index]);
            let mut byte = [0];
            self.rtc.read(1, &mut byte);
            byte[0]
        }

        fn write(&mut self, index: u8, value: u8) {
            self.rtc.write(0, &[index]);
            self.rtc.write(1, &[value]);
        }

        /// Linux's `mc146818_get_time`: wait out UIP, then read the fields.
        fn time(&mut self) -> [u8; 8] {
            while self.read(0x0a) & A_UIP != 0 {
                self.clock.advance(10_000);
            }
            [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(|index| self.read(index))
        }

        fn advance_to_deadline(&mut self) -> u64 {
            let deadline = self.rtc.next_deadline().expect("nothing due");
            self.clock.advance_to(deadline);
            self.rtc.run_due();
            deadline
        }
    }

    #[test]
    fn the_time_reads_in_bcd_and_rolls_over_a_leap_day() {
        let mut bench = Bench::new(LEAP_DAY_EVENING);
        assert_eq!(bench.read(0x0a), 0x26);
        assert_eq!(bench.read(0x0b), 0x02);
        assert_eq!(bench.read(0x0d), 0x80);
        // Seconds, minutes, hours, weekday, day, month, year, century.
        assert_eq!(
            bench.time(),
            [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]
        );
        bench.clock.advance(2 * NANOS_PER_SEC);
        assert_eq!(
            bench.time(),
            [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]
        );
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut bench = Bench::new(LEAP_DAY_EVENING);
        bench.write(0x0b, B_BINARY);
        assert_eq!(bench.time(), [58, 59, 0x80 | 11, 5, 29, 2, 24, 20]);
        bench.clock.advance(2 * NANOS_PER_SEC);
        assert_eq!(bench.read(0x04), 12, "midnight is 12 AM");
        bench.clock.advance(13 * 3600 * NANOS_PER_SEC);
        assert_eq!(bench.read(0x04), 0x80 | 1, "1 PM");
        assert_eq!(bench.read(0x37), 20, "the PS/2 century byte");
    }

    #[test]
    fn uip_covers_the_last_244_us_of_each_second() {
        let mut bench = Bench::new(LEAP_DAY_EVENING);
        let second = bench.clock.now_ns() + NANOS_PER_SEC;
        bench.clock.advance_to(second - UIP_NS - 1);
        assert_eq!(bench.read(0x0a) & A_UIP, 0);
        bench.clock.advance_to(second - UIP_NS);
        assert_eq!(bench.read(0x0a) & A_UIP, A_UIP);
        bench.clock.advance_to(second);
        assert_eq!(bench.read(0x0a) & A_UIP, 0);
    }

    #[test]
    fn setting_the_time_as_linux_does() {
        let mut bench = Bench::new(LEAP_DAY_EVENING);
        bench.clock.advance(NANOS_PER_SEC / 4);
        // mc146818_set_time: SET, write BCD fields, clear SET.
        bench.write(0x0b, B_24_HOUR | B_SET | B_UIE);
        assert_eq!(bench.read(0x0b), B_24_HOUR | B_SET, "SET clears UIE");
        for (index, value) in [(0x00, 0x30), (0x02, 0x15), (0x04, 0x08), (0x07, 0x31)] {
            bench.write(index, value);
        }
        for (index, value) in [(0x08, 0x12), (0x09, 0x99), (0x32, 0x19)] {
            bench.write(index, value);
        }
        bench.clock.advance(5 * NANOS_PER_SEC);
        assert_eq!(bench.read(0x00), 0x30, "no updates while SET");
        bench.write(0x0b, B_24_HOUR);
        // The new time counts on from the same phase of the second: 3/4 s to the next one.
        bench.clock.advance(NANOS_PER_SEC * 3 / 4 - 1);
        assert_eq!(
            [0x00, 0x02, 0x04].map(|i| bench.read(i)),
            [0x30, 0x15, 0x08]
        );
        bench.clock.advance(1);
        assert_eq!(
            bench.time(),
            [0x31, 0x15, 0x08, 0x06, 0x31, 0x12, 0x99, 0x19],
            "1999-12-31 was a Friday"
        );
        // A single field written while running sets the time at once.
        bench.write(0x02, 0x45);
        assert_eq!(bench.time()[..3], [0x31, 0x45, 0x08]);
    }

    #[test]
    fn periodic_interrupt_at_1024_hz_until_register_c_is_read() {
        let mut bench = Bench::new(LEAP_DAY_EVENING);
        let start = bench.clock.now_ns();
        assert_eq!(bench.rtc.next_deadline(), None, "no interrupt enabled");
        bench.write(0x0b, B_24_HOUR | B_PIE);
        assert_eq!(bench.advance_to_deadline(), start + 976_563);
        assert!(bench.irqs.level(RTC_IRQ));
        // Nothing more is due while PF waits to be read.
        assert_eq!(bench.rtc.next_deadline(), None);
        assert_eq!(bench.read(0x0c), C_IRQF | C_PF);
        assert!(!bench.irqs.level(RTC_IRQ));
        assert_eq!(bench.read(0x0c), 0);
        assert_eq!(bench.advance_to_deadline(), start + 2 * 976_563 - 1);
        assert_eq!(bench.irqs.rising_edges(RTC_IRQ), 2);
        // Rate 3 is 8192 Hz.
        bench.read(0x0c);
        bench.write(0x0a, 0x23);
        assert_eq!(
            bench.advance_to_deadline(),
            start + tick_time(64 + 4, RTC_HZ),
            "the next 8192 Hz edge"
        );
    }

    #[test]
    fn update_and_alarm_interrupts() {
        let mut bench = Bench::new(LEAP_DAY_EVENING);
        let start = bench.clock.now_ns();
        bench.write(0x0b, B_24_HOUR | B_UIE);
        assert_eq!(bench.advance_to_deadline(), start + NANOS_PER_SEC);
        // PF is set at the periodic rate whether or not PIE asks for interrupts.
        assert_eq!(bench.read(0x0c), C_IRQF | C_PF | C_UF);
        // Alarm at 00:00:00, one second later; UF and PF are set too but not enabled.
        bench.write(0x0b, B_24_HOUR | B_AIE);
        for index in [0x01, 0x03, 0x05] {
            bench.write(index, 0);
        }
        assert_eq!(bench.advance_to_deadline(), start + 2 * NANOS_PER_SEC);
        assert_eq!(bench.read(0x0c), C_IRQF | C_PF | C_AF | C_UF);
        // Don't-care minutes and hours: every minute at second 30.
        bench.write(0x03, 0xff);
        bench.write(0x05, 0xc0);
        bench.write(0x01, 0x30);
        assert_eq!(bench.advance_to_deadline(), start + 32 * NANOS_PER_SEC);
        assert_eq!(bench.rtc.next_deadline(), None, "AF is still pending");
        bench.read(0x0c);
        assert_eq!(bench.advance_to_deadline(), start + 92 * NANOS_PER_SEC);
    }

    #[test]
    fn a_divider_reset_stops_the_clock_and_restarts_it_half_a_second_late() {
        let mut bench = Bench::new(LEAP_DAY_EVENING);
        bench.write(0x0a, 0x76);
        bench.clock.advance(10 * NANOS_PER_SEC);
        assert_eq!(bench.read(0x00), 0x58);
        assert_eq!(bench.read(0x0a) & A_UIP, 0);
        bench.write(0x0a, 0x26);
        bench.clock.advance(NANOS_PER_SEC / 2 - 1);
        assert_eq!(bench.read(0x00), 0x58);
        bench.clock.advance(1);
        assert_eq!(bench.read(0x00), 0x59);
    }

    #[test]
    fn nmi_mask_nvram_and_memory_size() {
        let mut bench = Bench::new(0);
        bench.rtc.write(0, &[0x80 | 0x0f]);
        assert!(bench.rtc.nmi_masked());
        let mut byte = [0];
        bench.rtc.read(0, &mut byte);
        assert_eq!(byte, [0xff], "the index port is write-only");
        bench.rtc.write(0, &[0x0f]);
        assert!(!bench.rtc.nmi_masked());
        bench.write(0x40, 0x5a);
        assert_eq!(bench.read(0x40), 0x5a);
        // Registers C and D are read-only.
        bench.write(0x0d, 0);
        assert_eq!(bench.read(0x0d), 0x80);

        bench.rtc.set_memory_size(512 << 20, 1 << 30);
        let bytes = |bench: &mut Bench, indices: &[u8]| {
            indices.iter().map(|&i| bench.read(i)).collect::<Vec<_>>()
        };
        assert_eq!(bytes(&mut bench, &[0x15, 0x16]), [0x80, 0x02]);
        assert_eq!(bytes(&mut bench, &[0x17, 0x18, 0x30, 0x31]), [0xff; 4]);
        assert_eq!(bytes(&mut bench, &[0x34, 0x35]), [0x00, 0x1f]);
        assert_eq!(bytes(&mut bench, &[0x5b, 0x5c, 0x5d]), [0x00, 0x40, 0x00]);
        bench.rtc.set_nvram(0x38, 7).unwrap();
        assert_eq!(bench.read(0x38), 7);
        assert_eq!(bench.rtc.set_nvram(0x0b, 0), Err(RtcError::NotNvram(0x0b)));
        assert_eq!(bench.rtc.set_nvram(128, 0), Err(RtcError::NotNvram(128)));
        // The epoch itself: 1970-01-01, a Thursday.
        assert_eq!(bench.time(), [0, 0, 0, 5, 1, 1, 0x70, 0x19]);
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-719_468, -1, 0, 59, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2000, 13, 1), days_from_civil(2001, 1, 1));
        assert_eq!(days_from_civil(2024, 3, 0), days_from_civil(2024, 2, 29));
    }
}
