//! The PC platform around the vCPU: interrupt controllers, timers, the CMOS clock, the
//! keyboard controller, the serial port, QEMU's fw_cfg and debug-exit port, on one port bus
//! and one MMIO bus.
//!
//! The devices come from `umbra_devices`; this module only places them where a PC has them
//! and connects their interrupt lines to the 8259 pair, the I/O APIC and the local APIC (one
//! [`PcIrqChip`]), whose side of the vCPU's INTR pin is handed to the backend
//! ([`umbra_cpu::backend::InterruptLines`]).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use umbra_cpu::backend::{InterruptLines, IoHandler, VcpuKick};
use umbra_cpu::interp::msr::host_tsc_hz;
use umbra_devices::bus::{Bus, BusError};
use umbra_devices::clock::{Clock, HostClock, Timers};
use umbra_devices::debug_exit::{DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_LEN, DebugExit};
use umbra_devices::fw_cfg::{FW_CFG_PORT, FW_CFG_PORT_LEN, FwCfg};
use umbra_devices::i8042::{I8042, KEYBOARD_IRQ, MOUSE_IRQ};
use umbra_devices::irq::{InterruptController, IrqLine};
use umbra_devices::irqchip::{IrqChipError, PcIrqChip};
use umbra_devices::lapic::{LAPIC_BASE, LAPIC_MMIO_LEN};
use umbra_devices::pit::{PIT_IRQ, Pit};
use umbra_devices::rtc::{RTC_IRQ, RTC_PORT, RTC_PORT_LEN, Rtc};
use umbra_devices::run_control::RunControl;
use umbra_devices::uart::{COM1_IRQ, COM1_PORT, UART_PORT_LEN, Uart};
use umbra_mmu::addr::Gpa;

/// Why the platform could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// Two devices claimed the same addresses (a bug in the layout).
    #[error("cannot place a device: {0}")]
    Bus(#[from] BusError),
    /// The interrupt controllers could not be made.
    #[error("cannot build the interrupt controllers: {0}")]
    IrqChip(#[from] IrqChipError),
}

/// The machine's devices, as a vCPU reaches them: one bus for ports, one for MMIO.
pub struct DeviceBuses {
    pio: Bus,
    mmio: Bus,
}

impl IoHandler for DeviceBuses {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.pio.read(port.into(), data);
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        self.pio.write(port.into(), data);
    }

    fn mmio_read(&self, gpa: Gpa, data: &mut [u8]) {
        self.mmio.read(gpa.0, data);
    }

    fn mmio_write(&self, gpa: Gpa, data: &[u8]) {
        self.mmio.write(gpa.0, data);
    }
}

/// vCPU 0's INTR pin on the interrupt controllers.
struct Intr(Arc<PcIrqChip>);

impl InterruptLines for Intr {
    fn pending(&self) -> bool {
        self.0.pending_interrupt(0).is_some()
    }

    fn acknowledge(&self) -> Option<u8> {
        self.0.acknowledge(0)
    }
}

/// The longest a halted vCPU sleeps before the machine looks again at stop requests and a
/// debugger, when no timer is due sooner.
const LONGEST_HALT: Duration = Duration::from_millis(50);

/// A PC's devices, one vCPU's worth.
pub struct Platform {
    buses: Arc<DeviceBuses>,
    chip: Arc<PcIrqChip>,
    clock: Arc<dyn Clock>,
    timers: Arc<Timers>,
    uart: Arc<Mutex<Uart>>,
}

impl Platform {
    /// The devices of a PC with `ram_size` bytes of RAM, with the serial port writing to
    /// `serial` and stop requests going to `control`.
    pub fn new(
        serial: Box<dyn Write + Send>,
        control: &Arc<RunControl>,
        ram_size: u64,
    ) -> Result<Platform, PlatformError> {
        let clock: Arc<dyn Clock> = Arc::new(HostClock::new());
        let chip = Arc::new(PcIrqChip::new(clock.clone(), 1, host_tsc_hz())?);
        let buses = DeviceBuses {
            pio: Bus::new(),
            mmio: Bus::new(),
        };
        chip.attach(&buses.pio, &buses.mmio)?;
        let lapic = Arc::new(Mutex::new(chip.lapic_mmio(0)));
        buses.mmio.insert(LAPIC_BASE, LAPIC_MMIO_LEN, lapic)?;
        let line = |n| IrqLine::new(chip.clone(), n);

        let pit = Arc::new(Mutex::new(Pit::new(clock.clone(), line(PIT_IRQ))));
        Pit::attach(&pit, &buses.pio)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        let rtc = Arc::new(Mutex::new(Rtc::new(clock.clone(), line(RTC_IRQ), now)));
        buses.pio.insert(RTC_PORT, RTC_PORT_LEN, rtc.clone())?;
        let uart = Uart::new(serial).with_irq(line(COM1_IRQ));
        let uart = Arc::new(Mutex::new(uart));
        buses.pio.insert(COM1_PORT, UART_PORT_LEN, uart.clone())?;
        let i8042 = I8042::new(control.clone(), line(KEYBOARD_IRQ), line(MOUSE_IRQ));
        I8042::attach(&Arc::new(Mutex::new(i8042)), &buses.pio)?;
        let fw_cfg = Arc::new(Mutex::new(FwCfg::new(ram_size, 1)));
        buses.pio.insert(FW_CFG_PORT, FW_CFG_PORT_LEN, fw_cfg)?;
        let debug_exit = Arc::new(Mutex::new(DebugExit::new(control.clone())));
        buses
            .pio
            .insert(DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_LEN, debug_exit)?;

        let mut timers = Timers::new();
        timers.add(pit);
        timers.add(rtc);
        timers.add(Arc::new(Mutex::new(chip.lapic_timer(0))));
        Ok(Platform {
            buses: Arc::new(buses),
            chip,
            clock,
            timers: Arc::new(timers),
            uart,
        })
    }

    /// What vCPU 0 does its I/O through.
    pub fn buses(&self) -> Arc<DeviceBuses> {
        self.buses.clone()
    }

    /// COM1, for a host that types into it ([`Uart::push_input`]).
    pub fn uart(&self) -> Arc<Mutex<Uart>> {
        self.uart.clone()
    }

    /// vCPU 0's INTR pin, for the backend.
    pub fn interrupt_lines(&self) -> Arc<dyn InterruptLines> {
        Arc::new(Intr(self.chip.clone()))
    }

    /// Runs the timers that are due (the PIT, the RTC, the local APIC timer).
    pub fn run_timers(&self) {
        self.timers.run_due();
    }

    /// Kicks `vcpu` out of its backend's run whenever a timer falls due, until the returned
    /// guard is dropped (see [`TimerKicks`]).
    pub fn kick_at_deadlines(&self, vcpu: Arc<VcpuKick>) -> std::io::Result<TimerKicks> {
        TimerKicks::start(self.clock.clone(), self.timers.clone(), vcpu)
    }

    /// Whether an interrupt waits for vCPU 0.
    pub fn interrupt_pending(&self) -> bool {
        self.chip.pending_interrupt(0).is_some()
    }

    /// Sleeps while vCPU 0 is halted: until an interrupt is delivered to it, the next timer is
    /// due, or `LONGEST_HALT` has passed; then runs the timers due.
    pub fn wait_while_halted(&self) {
        let longest = self.clock.now_ns() + LONGEST_HALT.as_nanos() as u64;
        let deadline = self
            .timers
            .next_deadline()
            .map_or(longest, |due| due.min(longest));
        self.chip.wait_for_event(0, Some(deadline));
        self.timers.run_due();
    }
}

/// The longest the thread of [`TimerKicks`] sleeps before it looks at the timers again (a
/// timer programmed meanwhile falls due this late at most).
const LONGEST_KICK_SLEEP: Duration = Duration::from_millis(1);

/// A thread that kicks the vCPU out of its backend's run when a timer falls due, so that the
/// vCPU loop runs the timers and delivers their interrupts: KVM runs guest code until the
/// guest exits, and a guest spinning while it waits for a timer interrupt (Linux calibrating
/// its APIC timer against the PIT) may never exit on its own. The emulator's runs end often
/// anyway; a kick only ends one sooner.
pub struct TimerKicks {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TimerKicks {
    fn start(
        clock: Arc<dyn Clock>,
        timers: Arc<Timers>,
        vcpu: Arc<VcpuKick>,
    ) -> std::io::Result<TimerKicks> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("umbra-timer-kicks".into())
            .spawn(move || {
                // The deadline last kicked for: one kick each, however long the vCPU takes.
                let mut kicked_for = None;
                while !stopped.load(Ordering::Acquire) {
                    let now = clock.now_ns();
                    let sleep = match timers.next_deadline() {
                        Some(due) if due <= now => {
                            if kicked_for != Some(due) {
                                vcpu.kick();
                                kicked_for = Some(due);
                            }
                            Duration::from_micros(100)
                        }
                        Some(due) => Duration::from_nanos(due - now),
                        None => LONGEST_KICK_SLEEP,
                    };
                    std::thread::park_timeout(sleep.min(LONGEST_KICK_SLEEP));
                }
            })?;
        Ok(TimerKicks {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TimerKicks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
