//! Time for device models: the machine's clock, and the devices that act at points on it.
//!
//! No device model reads the host's time itself: each takes a [`Clock`], so a test (or a run
//! that must repeat exactly) drives them with a [`ManualClock`] and sees the same behaviour every
//! time, and a real machine gives them a [`HostClock`]. Clock time is nanoseconds since an
//! arbitrary origin and never goes backwards.
//!
//! Counters the guest reads (the PIT's count, the LAPIC's current count, the RTC's seconds) are
//! computed from the clock when they are read, so they are exact however rarely anyone looks.
//! What cannot wait for a read is an interrupt: a device with one due at a later time implements
//! [`Timed`], and a vCPU loop keeps its devices in one [`Timers`] list, asks it
//! [`Timers::next_deadline`] before it sleeps (in HLT, or between runs) and calls
//! [`Timers::run_due`] once the clock has passed that deadline. A late call delays the
//! interrupt; a periodic source that missed several periods raises one interrupt for all of
//! them, as an interrupt controller whose request is already pending would see anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// Nanoseconds in a second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The machine's time.
pub trait Clock: Send + Sync {
    /// Nanoseconds since the clock's origin; never less than an earlier answer.
    fn now_ns(&self) -> u64;
}

/// The host's monotonic clock, counted from the moment the clock was made.
#[derive(Debug)]
pub struct HostClock {
    origin: Instant,
}

impl HostClock {
    /// A clock that reads zero now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for HostClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for HostClock {
    fn now_ns(&self) -> u64 {
        // u64 nanoseconds last 584 years from the origin.
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to: tests and exactly repeatable runs use it.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_ns`.
    pub fn new(start_ns: u64) -> Self {
        Self {
            now: AtomicU64::new(start_ns),
        }
    }

    /// Moves the clock forward by `ns`.
    pub fn advance(&self, ns: u64) {
        self.now.fetch_add(ns, Ordering::SeqCst);
    }

    /// Moves the clock forward to `ns`; a time in the past leaves it where it is, since a clock
    /// never goes backwards.
    pub fn advance_to(&self, ns: u64) {
        self.now.fetch_max(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// A device with interrupts due at points on the clock.
pub trait Timed: Send {
    /// The clock time at which the device next has something to do, if it has anything.
    fn next_deadline(&self) -> Option<u64>;
    /// Does everything that is due by the clock's present time.
    fn run_due(&mut self);
}

/// A timed device shared between a [`Timers`] list and the bus that carries its registers.
pub type SharedTimed = Arc<Mutex<dyn Timed>>;

/// The timed devices of a machine, as a vCPU loop polls them.
#[derive(Default)]
pub struct Timers {
    devices: Vec<SharedTimed>,
}

impl Timers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a device.
    pub fn add(&mut self, device: SharedTimed) {
        self.devices.push(device);
    }

    /// The earliest deadline of any device: the latest time a vCPU loop may sleep to.
    pub fn next_deadline(&self) -> Option<u64> {
        self.devices
            .iter()
            .filter_map(|device| device.lock().next_deadline())
            .min()
    }

    /// Runs what is due on every device.
    pub fn run_due(&self) {
        for device in &self.devices {
            device.lock().run_due();
        }
    }
}

/// How many whole periods of a `hz` clock have passed at `ns` nanoseconds.
pub(crate) fn ticks_at(ns: u64, hz: u64) -> u64 {
    (u128::from(ns) * u128::from(hz) / u128::from(NANOS_PER_SEC)) as u64
}

/// The first nanosecond at which `ticks_at` reaches `tick`: the time of that tick's edge.
pub(crate) fn tick_time(tick: u64, hz: u64) -> u64 {
    (u128::from(tick) * u128::from(NANOS_PER_SEC)).div_ceil(u128::from(hz)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_forward() {
        let clock = ManualClock::new(10);
        clock.advance(5);
        assert_eq!(clock.now_ns(), 15);
        clock.advance_to(12);
        assert_eq!(clock.now_ns(), 15);
        clock.advance_to(40);
        assert_eq!(clock.now_ns(), 40);
    }

    #[test]
    fn the_host_clock_does_not_go_backwards() {
        let clock = HostClock::new();
        let first = clock.now_ns();
        assert!(clock.now_ns() >= first);
    }

    #[test]
    fn tick_edges_round_up_to_the_first_nanosecond_of_the_tick() {
        let hz = 1_193_182;
        for tick in [0, 1, 2, 1193, 1_193_182, 1 << 40] {
            let edge = tick_time(tick, hz);
            assert_eq!(ticks_at(edge, hz), tick);
            if edge > 0 {
                assert_eq!(ticks_at(edge - 1, hz), tick - 1);
            }
        }
    }

    /// Fires once at its deadline and counts the firings.
    struct OneShot {
        at: Option<u64>,
        clock: Arc<ManualClock>,
        fired: u32,
    }

    impl Timed for OneShot {
        fn next_deadline(&self) -> Option<u64> {
            self.at
        }
        fn run_due(&mut self) {
            if self.at.is_some_and(|at| at <= self.clock.now_ns()) {
                self.at = None;
                self.fired += 1;
            }
        }
    }

    #[test]
    fn timers_report_the_earliest_deadline_and_run_only_what_is_due() {
        let clock = Arc::new(ManualClock::new(0));
        let early = Arc::new(Mutex::new(OneShot {
            at: Some(100),
            clock: clock.clone(),
            fired: 0,
        }));
        let late = Arc::new(Mutex::new(OneShot {
            at: Some(300),
            clock: clock.clone(),
            fired: 0,
        }));
        let mut timers = Timers::new();
        timers.add(early.clone());
        timers.add(late.clone());
        assert_eq!(timers.next_deadline(), Some(100));
        clock.advance_to(150);
        timers.run_due();
        assert_eq!((early.lock().fired, late.lock().fired), (1, 0));
        assert_eq!(timers.next_deadline(), Some(300));
        clock.advance_to(300);
        timers.run_due();
        assert_eq!(late.lock().fired, 1);
        assert_eq!(timers.next_deadline(), None);
    }
}
