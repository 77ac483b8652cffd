//! The PC's interrupt controllers wired together, in userspace: the 8259A pair, the I/O APIC
//! and one local APIC per vCPU, behind the [`InterruptController`] seam.
//!
//! The wiring is a PC's:
//!
//! - ISA IRQ lines 0-15 reach the 8259A pair and the I/O APIC; line 0 (the PIT) lands on I/O
//!   APIC pin 2, as the interrupt source override of every PC's firmware tables says, and line
//!   2 is the 8259A cascade, driven by nothing outside. Lines 16-23 reach only the I/O APIC.
//!   I/O APIC pin 0, where some boards wire the 8259A's INTR, is left unconnected, as in QEMU.
//! - The 8259A's INTR goes to LINT0 of every local APIC: a vCPU whose APIC accepts it (LINT0
//!   in ExtINT mode, as at reset on the bootstrap processor, or the APIC disabled) takes the
//!   PIC's interrupts, ahead of its APIC's own, since ExtINT ignores the task priority.
//! - The I/O APIC's messages and the local APICs' IPIs travel to the local APICs whose
//!   destination matches; the EOI of a level-triggered vector goes back to the I/O APIC.
//!
//! All of it is one state under one lock (guests touch these registers rarely next to the
//! instructions they run, and the lock is never held while calling out of the chip), and one
//! [`PcIrqChip`] is shared by the devices (through [`IrqLine`](crate::irq::IrqLine)s), the
//! bus (through [`PicPorts`], [`IoapicMmio`] and each vCPU's [`LapicMmio`]) and the vCPU loops.
//!
//! A vCPU loop that halts waits in [`PcIrqChip::wait_for_event`] until the next timer deadline
//! or until something is delivered to its APIC (or the PIC's INTR rises while it takes it);
//! [`PcIrqChip::kick`] wakes it for any other reason. The guest's MSRs and CR8 that belong to
//! the APIC reach it through [`PcIrqChip::write_tsc_deadline`], [`PcIrqChip::tsc_deadline`],
//! [`PcIrqChip::write_apic_base`], [`PcIrqChip::write_cr8`] and [`PcIrqChip::cr8`].

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::bus::{Bus, BusDevice, BusError};
use crate::clock::{Clock, Timed};
use crate::ioapic::{self, IOAPIC_BASE, IOAPIC_MMIO_LEN, IOAPIC_PINS, Ioapic};
use crate::irq::{CpuSignal, InterruptController};
use crate::lapic::{DeliveryMode, InterruptMessage, LapicAction, LocalApic};
use crate::pic::{ELCR_PORT, PIC_MASTER_PORT, PIC_SLAVE_PORT, Pic};

/// The most vCPUs the xAPIC's 8-bit IDs can tell apart (ID 0xff means "all").
pub const MAX_VCPUS: usize = 255;
/// The I/O APIC pin ISA IRQ 0 is wired to.
const TIMER_PIN: usize = 2;
/// The 8259A cascade input, which no device drives.
const CASCADE_LINE: u32 = 2;
/// ISA IRQ lines, which reach the 8259A as well as the I/O APIC.
const ISA_LINES: u32 = 16;

/// Errors in building an interrupt controller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IrqChipError {
    /// No vCPU to deliver to.
    #[error("an interrupt controller needs at least one vCPU")]
    NoVcpus,
    /// More vCPUs than xAPIC IDs.
    #[error("{0} vCPUs are more than the {MAX_VCPUS} xAPIC IDs")]
    TooManyVcpus(usize),
    /// The TSC-deadline timer cannot count a TSC of zero hertz.
    #[error("the TSC frequency must not be zero")]
    ZeroTscFrequency,
}

/// How a halted vCPU learns that it has something to do.
#[derive(Default)]
struct Wakeup {
    /// Set by every event since the vCPU last waited: an event that comes between the vCPU's
    /// last look at its interrupts and its wait is not lost.
    pending: Mutex<bool>,
    condvar: Condvar,
}

impl Wakeup {
    fn notify(&self) {
        *self.pending.lock() = true;
        self.condvar.notify_one();
    }
}

/// The controllers' state, all under one lock.
struct Controllers {
    pic: Pic,
    ioapic: Ioapic,
    lapics: Vec<LocalApic>,
}

impl Controllers {
    /// Runs an I/O APIC operation and delivers the messages it sends.
    fn ioapic_op(
        &mut self,
        wakeups: &[Wakeup],
        op: impl FnOnce(&mut Ioapic, &mut dyn FnMut(InterruptMessage)),
    ) {
        let Self { ioapic, lapics, .. } = self;
        op(ioapic, &mut |message| deliver(lapics, wakeups, message));
    }

    /// Wakes the vCPUs that take the PIC's INTR if it is asserted.
    fn pic_changed(&self, wakeups: &[Wakeup]) {
        if self.pic.output() {
            for (apic, wakeup) in self.lapics.iter().zip(wakeups) {
                if apic.accepts_pic() {
                    wakeup.notify();
                }
            }
        }
    }

    fn end_of_interrupt(&mut self, vector: u8, wakeups: &[Wakeup]) {
        self.ioapic_op(wakeups, |ioapic, send| {
            ioapic.end_of_interrupt(vector, send)
        });
    }
}

/// Routes an APIC-bus message to the local APICs it is for, waking the vCPUs that got
/// something to do.
fn deliver(lapics: &mut [LocalApic], wakeups: &[Wakeup], message: InterruptMessage) {
    let mut targets = lapics
        .iter_mut()
        .zip(wakeups)
        .filter(|(apic, _)| apic.matches(message.destination));
    if message.delivery == DeliveryMode::LowestPriority {
        // No arbitration: the first APIC addressed takes it.
        if let Some((apic, wakeup)) = targets.next()
            && apic.accept(&message)
        {
            wakeup.notify();
        }
    } else {
        for (apic, wakeup) in targets {
            if apic.accept(&message) {
                wakeup.notify();
            }
        }
    }
}

/// The PC's interrupt controllers for a machine of one or more vCPUs.
///
/// Methods that take a vCPU index panic if it is not below [`Self::vcpus`]: the index comes
/// from the host's own code, never from the guest.
pub struct PcIrqChip {
    clock: Arc<dyn Clock>,
    controllers: Mutex<Controllers>,
    wakeups: Vec<Wakeup>,
}

impl PcIrqChip {
    /// Controllers for `vcpus` vCPUs (vCPU `n` has APIC ID `n`; vCPU 0 is the bootstrap
    /// processor) whose guest TSC runs at `tsc_hz`, timed by `clock`. The I/O APIC has ID 0.
    pub fn new(clock: Arc<dyn Clock>, vcpus: usize, tsc_hz: u64) -> Result<Self, IrqChipError> {
        if vcpus == 0 {
            return Err(IrqChipError::NoVcpus);
        }
        if vcpus > MAX_VCPUS {
            return Err(IrqChipError::TooManyVcpus(vcpus));
        }
        if tsc_hz == 0 {
            return Err(IrqChipError::ZeroTscFrequency);
        }
        Ok(Self {
            clock,
            controllers: Mutex::new(Controllers {
                pic: Pic::new(),
                ioapic: Ioapic::new(0),
                lapics: (0..vcpus)
                    .map(|id| LocalApic::new(id as u8, tsc_hz))
                    .collect(),
            }),
            wakeups: (0..vcpus).map(|_| Wakeup::default()).collect(),
        })
    }

    /// The number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.wakeups.len()
    }

    /// Puts the PIC and ELCR ports on `pio` and the I/O APIC on `mmio`. Each vCPU's local APIC
    /// is its own device ([`Self::lapic_mmio`]), since one address means a different APIC on
    /// each vCPU.
    pub fn attach(self: &Arc<Self>, pio: &Bus, mmio: &Bus) -> Result<(), BusError> {
        let ports = Arc::new(Mutex::new(PicPorts { chip: self.clone() }));
        for port in [PIC_MASTER_PORT, PIC_SLAVE_PORT, ELCR_PORT] {
            pio.insert_window(port, 2, ports.clone(), port - PIC_MASTER_PORT)?;
        }
        mmio.insert(
            IOAPIC_BASE,
            IOAPIC_MMIO_LEN,
            Arc::new(Mutex::new(IoapicMmio { chip: self.clone() })),
        )
    }

    /// The MMIO device of vCPU `vcpu`'s local APIC, to put at
    /// [`LAPIC_BASE`](crate::lapic::LAPIC_BASE) on the bus that vCPU uses.
    pub fn lapic_mmio(self: &Arc<Self>, vcpu: usize) -> LapicMmio {
        assert!(vcpu < self.vcpus(), "vCPU {vcpu} has no local APIC");
        LapicMmio {
            chip: self.clone(),
            vcpu,
        }
    }

    /// The timer of vCPU `vcpu`'s local APIC, for the machine's
    /// [`Timers`](crate::clock::Timers).
    pub fn lapic_timer(self: &Arc<Self>, vcpu: usize) -> LapicTimer {
        assert!(vcpu < self.vcpus(), "vCPU {vcpu} has no local APIC");
        LapicTimer {
            chip: self.clone(),
            vcpu,
        }
    }

    /// WRMSR IA32_TSC_DEADLINE on vCPU `vcpu`, whose TSC reads `tsc_now`.
    pub fn write_tsc_deadline(&self, vcpu: usize, deadline: u64, tsc_now: u64) {
        let now = self.clock.now_ns();
        self.controllers.lock().lapics[vcpu].write_tsc_deadline(deadline, tsc_now, now);
    }

    /// RDMSR IA32_TSC_DEADLINE on vCPU `vcpu`.
    pub fn tsc_deadline(&self, vcpu: usize) -> u64 {
        self.controllers.lock().lapics[vcpu].tsc_deadline()
    }

    /// WRMSR IA32_APIC_BASE on vCPU `vcpu` (only the enable bit acts).
    pub fn write_apic_base(&self, vcpu: usize, value: u64) {
        let mut controllers = self.controllers.lock();
        controllers.lapics[vcpu].write_apic_base(value);
        controllers.pic_changed(&self.wakeups);
    }

    /// MOV to CR8 on vCPU `vcpu`.
    pub fn write_cr8(&self, vcpu: usize, value: u8) {
        self.controllers.lock().lapics[vcpu].write_cr8(value);
    }

    /// MOV from CR8 on vCPU `vcpu`.
    pub fn cr8(&self, vcpu: usize) -> u8 {
        self.controllers.lock().lapics[vcpu].cr8()
    }

    /// Blocks the calling vCPU `vcpu` until something was delivered to it since its last wait,
    /// [`Self::kick`] was called, or the clock reaches `deadline` (forever if `None`). The
    /// caller checks afterwards what there is to do; a wake-up may find nothing. The wait is
    /// in host time, the deadline's distance from the clock's present reading.
    pub fn wait_for_event(&self, vcpu: usize, deadline: Option<u64>) {
        let wakeup = &self.wakeups[vcpu];
        let mut pending = wakeup.pending.lock();
        if !*pending {
            match deadline {
                Some(deadline) => {
                    let now = self.clock.now_ns();
                    if deadline > now {
                        wakeup
                            .condvar
                            .wait_for(&mut pending, Duration::from_nanos(deadline - now));
                    }
                }
                None => wakeup.condvar.wait(&mut pending),
            }
        }
        *pending = false;
    }

    /// Wakes vCPU `vcpu` from [`Self::wait_for_event`], or makes its next wait return at once.
    pub fn kick(&self, vcpu: usize) {
        self.wakeups[vcpu].notify();
    }

    fn lapic_read(&self, vcpu: usize, offset: u64) -> u32 {
        let now = self.clock.now_ns();
        self.controllers.lock().lapics[vcpu].read(offset, now)
    }

    fn lapic_write(&self, vcpu: usize, offset: u64, value: u32) {
        let now = self.clock.now_ns();
        let mut controllers = self.controllers.lock();
        match controllers.lapics[vcpu].write(offset, value, now) {
            Some(LapicAction::Send(message)) => {
                deliver(&mut controllers.lapics, &self.wakeups, message)
            }
            Some(LapicAction::Eoi(vector)) => controllers.end_of_interrupt(vector, &self.wakeups),
            None => {}
        }
        // A LINT0 or enable change can hand this vCPU the PIC's pending INTR.
        controllers.pic_changed(&self.wakeups);
    }
}

impl InterruptController for PcIrqChip {
    fn set_irq_line(&self, line: u32, level: bool) {
        if line == CASCADE_LINE {
            return;
        }
        let mut controllers = self.controllers.lock();
        if line < ISA_LINES {
            controllers.pic.set_irq(line as u8, level);
            controllers.pic_changed(&self.wakeups);
        }
        let pin = if line == 0 { TIMER_PIN } else { line as usize };
        if pin < IOAPIC_PINS {
            controllers.ioapic_op(&self.wakeups, |ioapic, send| {
                ioapic.set_irq(pin, level, send)
            });
        }
    }

    fn pending_interrupt(&self, vcpu: usize) -> Option<u8> {
        let controllers = self.controllers.lock();
        let apic = &controllers.lapics[vcpu];
        if apic.accepts_pic() && controllers.pic.output() {
            return controllers.pic.pending_vector();
        }
        apic.pending_vector()
    }

    fn acknowledge(&self, vcpu: usize) -> Option<u8> {
        let mut controllers = self.controllers.lock();
        if controllers.lapics[vcpu].accepts_pic() && controllers.pic.output() {
            return Some(controllers.pic.acknowledge());
        }
        controllers.lapics[vcpu].acknowledge()
    }

    fn end_of_interrupt(&self, vector: u8) {
        self.controllers
            .lock()
            .end_of_interrupt(vector, &self.wakeups);
    }

    fn take_signal(&self, vcpu: usize) -> Option<CpuSignal> {
        self.controllers.lock().lapics[vcpu].take_signal()
    }
}

/// Reads `value`, a 32-bit register, at byte `offset & 3` of it into `data`.
fn read_register(value: u32, offset: u64, data: &mut [u8]) {
    let bytes = (value >> ((offset & 3) * 8)).to_le_bytes();
    let len = data.len().min(4);
    data.fill(0);
    data[..len].copy_from_slice(&bytes[..len]);
}

/// The value of a 4-byte write; `None` for other widths, which the APICs ignore.
fn dword(data: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(data.try_into().ok()?))
}

/// The 8259A and ELCR ports (0x20-0x21, 0xa0-0xa1, 0x4d0-0x4d1) as one bus device, whose
/// offsets are port numbers less 0x20; [`PcIrqChip::attach`] puts its three windows on the bus.
pub struct PicPorts {
    chip: Arc<PcIrqChip>,
}

impl BusDevice for PicPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.chip.controllers.lock().pic.read(offset);
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut controllers = self.chip.controllers.lock();
        controllers.pic.write(offset, data[0]);
        controllers.pic_changed(&self.chip.wakeups);
    }
}

/// The I/O APIC's MMIO window.
pub struct IoapicMmio {
    chip: Arc<PcIrqChip>,
}

impl BusDevice for IoapicMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.chip.controllers.lock().ioapic.read(offset & !3);
        read_register(value, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // IOREGSEL takes a byte write as well; the window and EOI take only dwords.
        let value = match (offset, dword(data)) {
            (_, Some(value)) => value,
            (ioapic::offset::IOREGSEL, None) => u32::from(data[0]),
            _ => return,
        };
        self.chip
            .controllers
            .lock()
            .ioapic_op(&self.chip.wakeups, |ioapic, send| {
                ioapic.write(offset, value, send)
            });
    }
}

/// One vCPU's local APIC MMIO window. Reads of 1-4 bytes inside a register return its bytes;
/// writes must be 4 bytes at a register's start, and others are ignored, as KVM does.
pub struct LapicMmio {
    chip: Arc<PcIrqChip>,
    vcpu: usize,
}

impl BusDevice for LapicMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.chip.lapic_read(self.vcpu, offset);
        read_register(value, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(value) = dword(data).filter(|_| offset & 0xf == 0) {
            self.chip.lapic_write(self.vcpu, offset, value);
        }
    }
}

/// One vCPU's local APIC timer, as a [`Timed`] device.
pub struct LapicTimer {
    chip: Arc<PcIrqChip>,
    vcpu: usize,
}

impl Timed for LapicTimer {
    fn next_deadline(&self) -> Option<u64> {
        self.chip.controllers.lock().lapics[self.vcpu].next_deadline()
    }

    fn run_due(&mut self) {
        let now = self.chip.clock.now_ns();
        if self.chip.controllers.lock().lapics[self.vcpu].run_due(now) {
            self.chip.wakeups[self.vcpu].notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::clock::{ManualClock, Timers};
    use crate::irq::IrqLine;
    use crate::lapic::LAPIC_BASE;
    use crate::pit::{PIT_HZ, PIT_IRQ, Pit};

    const TSC_HZ: u64 = 3_000_000_000;
    const SPURIOUS_VECTOR: u32 = 0xff;
    const TIMER_VECTOR: u8 = 0xec;

    struct Machine {
        clock: Arc<ManualClock>,
        chip: Arc<PcIrqChip>,
        pio: Bus,
        mmio: Bus,
    }

    impl Machine {
        fn new(vcpus: usize) -> Self {
            let clock = Arc::new(ManualClock::new(0));
            let chip = Arc::new(PcIrqChip::new(clock.clone(), vcpus, TSC_HZ).unwrap());
            let (pio, mmio) = (Bus::new(), Bus::new());
            chip.attach(&pio, &mmio).unwrap();
            mmio.insert(
                LAPIC_BASE,
                crate::lapic::LAPIC_MMIO_LEN,
                Arc::new(Mutex::new(chip.lapic_mmio(0))),
            )
            .unwrap();
            Self {
                clock,
                chip,
                pio,
                mmio,
            }
        }

        fn outb(&self, port: u64, value: u8) {
            self.pio.write(port, &[value]);
        }

        fn inb(&self, port: u64) -> u8 {
            let mut byte = [0];
            self.pio.read(port, &mut byte);
            byte[0]
        }

        fn write32(&self, addr: u64, value: u32) {
            self.mmio.write(addr, &value.to_le_bytes());
        }

        fn read32(&self, addr: u64) -> u32 {
            let mut bytes = [0; 4];
            self.mmio.read(addr, &mut bytes);
            u32::from_le_bytes(bytes)
        }

        /// Linux's `init_8259A`, leaving every IRQ but `unmasked` masked.
        fn init_pic(&self, unmasked: u16) {
            let [master, slave] = (!unmasked & !(1 << 2)).to_le_bytes();
            for (command, data, base, icw3) in [(0x20, 0x21, 0x30, 1 << 2), (0xa0, 0xa1, 0x38, 2)] {
                self.outb(command, 0x11);
                self.outb(data, base);
                self.outb(data, icw3);
                self.outb(data, 0x01);
            }
            self.outb(0x21, master);
            self.outb(0xa1, slave);
        }

        /// Linux's APIC mode on the BSP: software-enabled, LINT0 masked ExtINT, LINT1 NMI.
        fn enable_apic(&self) {
            self.write32(LAPIC_BASE + 0x0f0, 0x100 | SPURIOUS_VECTOR);
            self.write32(LAPIC_BASE + 0x350, 0x1_0700);
            self.write32(LAPIC_BASE + 0x360, 0x400);
        }

        /// Writes I/O APIC redirection entry `pin`, high half first as Linux does.
        fn route(&self, pin: u32, entry: u64) {
            self.write32(IOAPIC_BASE, 0x10 + 2 * pin + 1);
            self.write32(IOAPIC_BASE + 0x10, (entry >> 32) as u32);
            self.write32(IOAPIC_BASE, 0x10 + 2 * pin);
            self.write32(IOAPIC_BASE + 0x10, entry as u32);
        }

        fn eoi(&self) {
            self.write32(LAPIC_BASE + 0xb0, 0);
        }

        fn line(&self, line: u32) -> IrqLine {
            IrqLine::new(self.chip.clone(), line)
        }
    }

    #[test]
    fn construction_checks_its_arguments() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
        assert!(matches!(
            PcIrqChip::new(clock.clone(), 0, TSC_HZ),
            Err(IrqChipError::NoVcpus)
        ));
        assert!(matches!(
            PcIrqChip::new(clock.clone(), 256, TSC_HZ),
            Err(IrqChipError::TooManyVcpus(256))
        ));
        assert!(matches!(
            PcIrqChip::new(clock, 1, 0),
            Err(IrqChipError::ZeroTscFrequency)
        ));
    }

    #[test]
    fn pic_interrupts_reach_the_bsp_through_lint0_extint() {
        let machine = Machine::new(2);
        machine.init_pic(1 << 1);
        let keyboard = machine.line(1);
        keyboard.set_level(true);
        assert_eq!(machine.inb(0x20), 1 << 1, "IRR");
        assert_eq!(machine.chip.pending_interrupt(0), Some(0x31));
        assert_eq!(
            machine.chip.pending_interrupt(1),
            None,
            "APs' LINT0 is masked"
        );
        assert_eq!(machine.chip.acknowledge(0), Some(0x31));
        assert_eq!(machine.chip.pending_interrupt(0), None);
        machine.outb(0x20, 0x20);
        keyboard.set_level(false);
        // With LINT0 masked the PIC no longer reaches the vCPU...
        machine.enable_apic();
        keyboard.set_level(true);
        assert_eq!(machine.chip.pending_interrupt(0), None);
        // ...until the APIC is turned off, and the vCPU takes INTR directly.
        machine.chip.write_apic_base(0, LAPIC_BASE);
        assert_eq!(machine.chip.acknowledge(0), Some(0x31));
    }

    #[test]
    fn ioapic_routes_an_edge_irq_to_the_lapic() {
        let machine = Machine::new(1);
        machine.init_pic(0);
        machine.enable_apic();
        let serial = machine.line(4);
        machine.route(4, 0x24);
        serial.set_level(true);
        assert_eq!(machine.chip.pending_interrupt(0), Some(0x24));
        assert_eq!(machine.chip.acknowledge(0), Some(0x24));
        assert_eq!(machine.read32(LAPIC_BASE + 0x110), 1 << 4, "ISR");
        assert_eq!(machine.chip.acknowledge(0), None);
        machine.eoi();
        assert_eq!(machine.read32(LAPIC_BASE + 0x110), 0);
        // Another edge, another interrupt.
        serial.set_level(false);
        serial.set_level(true);
        assert_eq!(machine.chip.acknowledge(0), Some(0x24));
    }

    #[test]
    fn ioapic_level_irq_is_resent_after_eoi_while_the_line_is_high() {
        let machine = Machine::new(1);
        machine.init_pic(0);
        machine.enable_apic();
        let device = machine.line(10);
        // Level-triggered, active low as PCI is, logical destination 1 (flat model).
        machine.write32(LAPIC_BASE + 0x0d0, 1 << 24);
        machine.route(10, (1 << 56) | (1 << 15) | (1 << 13) | (1 << 11) | 0x3a);
        device.set_level(true);
        assert_eq!(machine.chip.acknowledge(0), Some(0x3a));
        assert_eq!(
            machine.read32(LAPIC_BASE + 0x180 + 0x10) & (1 << 26),
            1 << 26,
            "TMR"
        );
        machine.eoi();
        assert_eq!(
            machine.chip.acknowledge(0),
            Some(0x3a),
            "the line is still high"
        );
        device.set_level(false);
        machine.eoi();
        assert_eq!(machine.chip.pending_interrupt(0), None);
        // An EOI that reaches the I/O APIC from outside clears Remote IRR too.
        device.set_level(true);
        assert_eq!(machine.chip.acknowledge(0), Some(0x3a));
        assert_eq!(machine.read32(LAPIC_BASE + 0x200 + 0x10), 0, "IRR");
        machine.chip.end_of_interrupt(0x3a);
        assert_eq!(
            machine.read32(LAPIC_BASE + 0x200 + 0x10),
            1 << 26,
            "sent again"
        );
    }

    #[test]
    fn isa_irq_0_lands_on_ioapic_pin_2() {
        let machine = Machine::new(1);
        machine.init_pic(0);
        machine.enable_apic();
        machine.route(2, 0x30);
        let timer = machine.line(0);
        timer.set_level(false);
        timer.set_level(true);
        assert_eq!(machine.chip.acknowledge(0), Some(0x30));
        // Line 2 is the cascade: it drives nothing.
        machine.route(2, 0x31);
        machine.eoi();
        machine.line(2).set_level(true);
        assert_eq!(machine.chip.pending_interrupt(0), None);
    }

    /// Linux's `calibrate_APIC_clock`: the PIT ticks at HZ through the I/O APIC while the
    /// masked, periodic APIC timer counts down at bus clock / 16; 100 ticks later the count
    /// difference gives the APIC timer's period per jiffy.
    #[test]
    fn lapic_timer_calibration_against_the_pit() {
        const HZ: u64 = 1000;
        const LATCH: u64 = (PIT_HZ + HZ / 2) / HZ;
        const LAPIC_CAL_LOOPS: u64 = HZ / 10;
        let machine = Machine::new(1);
        let pit = Arc::new(Mutex::new(Pit::new(
            machine.clock.clone(),
            machine.line(PIT_IRQ),
        )));
        Pit::attach(&pit, &machine.pio).unwrap();
        let mut timers = Timers::new();
        timers.add(pit);
        timers.add(Arc::new(Mutex::new(machine.chip.lapic_timer(0))));

        machine.init_pic(0);
        machine.enable_apic();
        machine.route(2, 0x30);
        machine.outb(0x43, 0x34);
        machine.outb(0x40, LATCH as u8);
        machine.outb(0x40, (LATCH >> 8) as u8);
        // __setup_APIC_LVTT(0xffffffff, 0, 0): periodic, masked, divide by 16.
        machine.write32(LAPIC_BASE + 0x320, 0x3_0000 | u32::from(TIMER_VECTOR));
        machine.write32(LAPIC_BASE + 0x3e0, 0x3);
        machine.write32(LAPIC_BASE + 0x380, 0xffff_ffff / 16);

        let mut counts = Vec::new();
        while counts.len() as u64 <= LAPIC_CAL_LOOPS {
            machine.clock.advance_to(timers.next_deadline().unwrap());
            timers.run_due();
            assert_eq!(machine.chip.acknowledge(0), Some(0x30));
            counts.push(u64::from(machine.read32(LAPIC_BASE + 0x390)));
            machine.eoi();
        }
        let delta = counts[0] - counts[LAPIC_CAL_LOOPS as usize];
        let lapic_timer_period = delta * 16 / LAPIC_CAL_LOOPS;
        // One jiffy is LATCH PIT ticks; the bus clock is 1 GHz.
        let jiffy_ns = LATCH * 1_000_000_000 / PIT_HZ;
        assert!(
            lapic_timer_period.abs_diff(jiffy_ns) <= 16,
            "{lapic_timer_period}"
        );
        assert_eq!(
            machine.chip.pending_interrupt(0),
            None,
            "the APIC timer is masked"
        );
    }

    #[test]
    fn tsc_deadline_timer_through_the_msr() {
        let machine = Machine::new(1);
        machine.enable_apic();
        let mut timer = machine.chip.lapic_timer(0);
        machine.write32(LAPIC_BASE + 0x320, 0x4_0000 | u32::from(TIMER_VECTOR));
        let tsc_now = 1_000_000;
        machine
            .chip
            .write_tsc_deadline(0, tsc_now + 3 * TSC_HZ / 1000, tsc_now);
        assert_eq!(machine.chip.tsc_deadline(0), tsc_now + 3 * TSC_HZ / 1000);
        assert_eq!(timer.next_deadline(), Some(3_000_000));
        machine.clock.advance_to(2_999_999);
        timer.run_due();
        assert_eq!(machine.chip.pending_interrupt(0), None);
        machine.clock.advance_to(3_000_000);
        timer.run_due();
        assert_eq!(machine.chip.acknowledge(0), Some(TIMER_VECTOR));
        assert_eq!(machine.chip.tsc_deadline(0), 0);
        assert_eq!(timer.next_deadline(), None);
    }

    #[test]
    fn self_ipi_init_and_startup() {
        let machine = Machine::new(2);
        machine.enable_apic();
        machine.write32(LAPIC_BASE + 0x300, (1 << 18) | 0xf3);
        assert_eq!(machine.chip.acknowledge(0), Some(0xf3));
        // INIT assert, INIT de-assert, SIPI to APIC 1.
        machine.write32(LAPIC_BASE + 0x310, 1 << 24);
        machine.write32(LAPIC_BASE + 0x300, 0xc500);
        machine.write32(LAPIC_BASE + 0x300, 0x8500);
        machine.write32(LAPIC_BASE + 0x300, 0x0609);
        assert_eq!(machine.chip.take_signal(1), Some(CpuSignal::Init));
        assert_eq!(
            machine.chip.take_signal(1),
            Some(CpuSignal::Startup { vector: 9 })
        );
        assert_eq!(machine.chip.take_signal(1), None);
        assert_eq!(machine.chip.take_signal(0), None);
        // NMI to all but self.
        machine.write32(LAPIC_BASE + 0x300, (3 << 18) | 0x400);
        assert_eq!(machine.chip.take_signal(1), Some(CpuSignal::Nmi));
        assert_eq!(machine.chip.take_signal(0), None);
    }

    #[test]
    fn lapic_mmio_reads_bytes_and_ignores_narrow_writes() {
        let machine = Machine::new(1);
        let mut byte = [0];
        machine.mmio.read(LAPIC_BASE + 0x32, &mut byte);
        assert_eq!(byte, [0x05], "version register, byte 2: max LVT entry");
        machine.mmio.write(LAPIC_BASE + 0x80, &[0x40]);
        assert_eq!(machine.read32(LAPIC_BASE + 0x80), 0);
        machine.write32(LAPIC_BASE + 0x84, 0x40);
        assert_eq!(machine.read32(LAPIC_BASE + 0x80), 0);
        machine.chip.write_cr8(0, 4);
        assert_eq!(machine.read32(LAPIC_BASE + 0x80), 0x40);
        assert_eq!(machine.chip.cr8(0), 4);
        // The I/O APIC's select register takes bytes.
        machine.mmio.write(IOAPIC_BASE, &[0x01]);
        assert_eq!(machine.read32(IOAPIC_BASE + 0x10), 0x0017_0020);
    }

    #[test]
    fn a_halted_vcpu_wakes_for_an_interrupt_from_another_thread() {
        let machine = Machine::new(1);
        machine.init_pic(1 << 4);
        let serial = machine.line(4);
        let raiser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            serial.set_level(true);
        });
        machine.chip.wait_for_event(0, None);
        raiser.join().unwrap();
        assert_eq!(machine.chip.pending_interrupt(0), Some(0x34));
        // An event before the wait is not lost; a kick wakes too.
        machine.chip.kick(0);
        machine.chip.wait_for_event(0, None);
        // A deadline already reached does not wait.
        machine.chip.wait_for_event(0, Some(0));
    }
}
