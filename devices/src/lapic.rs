//! The local APIC of one vCPU (xAPIC mode), and the interrupt messages APICs exchange.
//!
//! The model keeps the registers of the SDM's chapter on the APIC (ID, version, TPR, PPR, EOI,
//! LDR, DFR, SVR, ISR, TMR, IRR, ESR, ICR, the six LVT entries, the timer's initial and current
//! counts and divide configuration) and computes what the vCPU may take:
//!
//! - An interrupt in IRR is deliverable when its priority class (vector bits 7-4) is above the
//!   processor-priority class (PPR, the higher of TPR and the highest vector in service).
//!   [`LocalApic::acknowledge`] moves the highest deliverable vector from IRR to ISR.
//! - A write to EOI ends the highest vector in service; if it arrived level-triggered (its TMR
//!   bit is set) the write returns [`LapicAction::Eoi`] for the machine to broadcast to the
//!   I/O APIC.
//! - A write to ICR's low half sends an IPI: [`LapicAction::Send`] with an
//!   [`InterruptMessage`] the machine routes to every matching local APIC. INIT, start-up, NMI,
//!   fixed and lowest-priority IPIs are modelled; "INIT level de-assert" is a no-op, as on every
//!   APIC since the Pentium 4.
//! - The timer counts a 1 GHz bus clock (as KVM's and QEMU's do) through the divide
//!   configuration, in one-shot or periodic mode, or fires at a TSC deadline. It is computed
//!   from the clock, given as `now` in nanoseconds; the owner calls [`LocalApic::run_due`] at
//!   [`LocalApic::next_deadline`].
//! - LINT0 is wired to the 8259A's INTR: while the APIC is hardware-disabled, or LINT0 is
//!   unmasked in ExtINT mode, [`LocalApic::accepts_pic`] says the vCPU takes its interrupts
//!   from the PIC. At reset the bootstrap processor's LINT0 is ExtINT and unmasked, as the
//!   BIOS leaves it (KVM and QEMU start it so too), so a guest that never programs its APIC
//!   still gets PIC interrupts.
//!
//! Departures from the hardware: LINT0 honours only the ExtINT mode (no PIC-to-fixed-vector
//! conversion), and LINT1, the thermal and the performance-counter entries hold what is
//! written but nothing drives them; SMIs and ExtINT messages are dropped; lowest-priority
//! delivery goes to the first matching APIC instead of arbitrating; directed EOI and the
//! x2APIC mode are not offered; the APIC base cannot be moved (only the enable bit of
//! IA32_APIC_BASE acts). Every error the model detects (send or receive of an illegal vector,
//! an access to a reserved register) is reported in ESR and through the LVT error entry.

use crate::clock::NANOS_PER_SEC;
use crate::irq::CpuSignal;

/// Where the local APIC's registers appear in every vCPU's physical address space.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// Size of the local APIC's MMIO window.
pub const LAPIC_MMIO_LEN: u64 = 0x1000;

/// The APIC's version register: version 0x14 (an integrated xAPIC), LVT entries 0-5.
const VERSION: u32 = 0x14 | ((LVT_COUNT as u32 - 1) << 16);
/// The physical and logical destination that means "every APIC".
const BROADCAST: u8 = 0xff;

/// Register offsets in the MMIO window.
mod reg {
    pub const ID: u64 = 0x020;
    pub const VERSION: u64 = 0x030;
    pub const TPR: u64 = 0x080;
    pub const APR: u64 = 0x090;
    pub const PPR: u64 = 0x0a0;
    pub const EOI: u64 = 0x0b0;
    pub const RRD: u64 = 0x0c0;
    pub const LDR: u64 = 0x0d0;
    pub const DFR: u64 = 0x0e0;
    pub const SVR: u64 = 0x0f0;
    pub const ISR: u64 = 0x100;
    pub const ISR_LAST: u64 = 0x170;
    pub const TMR: u64 = 0x180;
    pub const TMR_LAST: u64 = 0x1f0;
    pub const IRR: u64 = 0x200;
    pub const IRR_LAST: u64 = 0x270;
    pub const ESR: u64 = 0x280;
    pub const ICR_LOW: u64 = 0x300;
    pub const ICR_HIGH: u64 = 0x310;
    pub const LVT_TIMER: u64 = 0x320;
    pub const LVT_ERROR: u64 = 0x370;
    pub const TIMER_INITIAL: u64 = 0x380;
    pub const TIMER_CURRENT: u64 = 0x390;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
}

/// LVT entries in register order.
const LVT_COUNT: usize = 6;
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_ERROR: usize = 5;
/// Writable bits of each LVT entry (the delivery-status and remote-IRR bits are read-only).
const LVT_WRITABLE: [u32; LVT_COUNT] = [
    0x0007_00ff, // timer: vector, mask, mode
    0x0001_07ff, // thermal: vector, delivery mode, mask
    0x0001_07ff, // performance counters
    0x0001_a7ff, // LINT0: vector, delivery mode, polarity, trigger, mask
    0x0001_a7ff, // LINT1
    0x0001_00ff, // error: vector, mask
];
const LVT_MASKED: u32 = 1 << 16;
const LVT_DELIVERY_EXTINT: u32 = 0x700;
const LVT_DELIVERY_MODE: u32 = 0x700;
const TIMER_MODE: u32 = 3 << 17;
const TIMER_PERIODIC: u32 = 1 << 17;
const TIMER_TSC_DEADLINE: u32 = 2 << 17;

const SVR_ENABLED: u32 = 1 << 8;
/// SVR bits that can be written: vector, software enable, focus-processor checking.
const SVR_WRITABLE: u32 = 0x3ff;
/// ICR low bits that can be written: vector, delivery mode, destination mode, level, trigger,
/// shorthand (bit 12, delivery status, always reads idle).
const ICR_LOW_WRITABLE: u32 = 0x000c_cfff;

/// ESR bits.
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// IA32_APIC_BASE bit 11: the APIC is enabled.
const APIC_BASE_ENABLE: u64 = 1 << 11;

/// How an interrupt message is delivered (the ICR's and redirection entries' bits 10-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// To the vector, on every destination.
    Fixed,
    /// To the vector, on one of the destinations.
    LowestPriority,
    /// System management interrupt.
    Smi,
    /// Non-maskable interrupt.
    Nmi,
    /// INIT.
    Init,
    /// Start-up IPI.
    Startup,
    /// External (8259A) interrupt.
    ExtInt,
}

impl DeliveryMode {
    /// Decodes a 3-bit delivery mode; the reserved encoding 011 (the old remote read) is `None`.
    pub fn from_bits(bits: u32) -> Option<Self> {
        Some(match bits & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::Startup,
            7 => Self::ExtInt,
            _ => return None,
        })
    }
}

/// Which APICs an interrupt message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The APIC with this ID (0xff: all of them).
    Physical(u8),
    /// The APICs whose logical ID matches, in the flat or cluster model of their DFR.
    Logical(u8),
    /// The sending APIC alone (the "self" shorthand); its ID.
    SelfOnly(u8),
    /// Every APIC.
    All,
    /// Every APIC but the sender, whose ID this is.
    AllButSelf(u8),
}

/// An interrupt message on the APIC bus: an IPI or an I/O APIC redirection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptMessage {
    /// Which APICs take it.
    pub destination: Destination,
    /// How.
    pub delivery: DeliveryMode,
    /// The vector (the start-up page for a start-up IPI).
    pub vector: u8,
    /// Whether it is level-triggered: the APIC then sets the vector's TMR bit and its EOI is
    /// broadcast.
    pub level_triggered: bool,
}

/// What a register write asks of the rest of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicAction {
    /// A level-triggered vector ended: I/O APIC entries with this vector clear Remote IRR.
    Eoi(u8),
    /// An IPI to route.
    Send(InterruptMessage),
}

/// The timer's state between register accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Not counting: initial count zero, a one-shot count that ran out, or no deadline armed.
    Idle,
    /// One-shot or periodic counting: `ticks_before` bus ticks had elapsed at clock time
    /// `since` (the divide configuration can change mid-count), and the count next reaches
    /// zero at `fires_at`.
    Counting {
        since: u64,
        ticks_before: u64,
        fires_at: u64,
    },
    /// TSC-deadline mode with IA32_TSC_DEADLINE = `tsc`, which the clock reaches at `fires_at`.
    Deadline { tsc: u64, fires_at: u64 },
}

/// A 256-bit vector register (ISR, TMR, IRR) as eight 32-bit words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VectorSet([u32; 8]);

impl VectorSet {
    fn set(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] |= 1 << (vector & 31);
    }

    fn clear(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] &= !(1 << (vector & 31));
    }

    fn contains(&self, vector: u8) -> bool {
        self.0[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
    }

    fn highest(&self) -> Option<u8> {
        let (word, bits) = self.0.iter().enumerate().rev().find(|(_, w)| **w != 0)?;
        Some((word * 32 + 31 - bits.leading_zeros() as usize) as u8)
    }
}

/// A local APIC.
#[derive(Clone, Debug)]
pub struct LocalApic {
    id: u8,
    bootstrap: bool,
    tsc_hz: u64,
    hardware_enabled: bool,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    /// ESR as the guest reads it: the errors up to the last ESR write.
    esr: u32,
    /// Errors since the last ESR write.
    esr_pending: u32,
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; LVT_COUNT],
    timer_initial: u32,
    timer_divide: u32,
    timer: Timer,
    waiting_for_startup: bool,
    init_pending: bool,
    startup_pending: Option<u8>,
    nmi_pending: bool,
}

impl LocalApic {
    /// The APIC with ID `id` in its power-up state; ID 0 is the bootstrap processor's, the
    /// others wait for INIT and start-up IPIs. `tsc_hz` is the guest's TSC frequency, which
    /// the TSC-deadline timer counts in.
    pub fn new(id: u8, tsc_hz: u64) -> Self {
        let mut apic = Self {
            id,
            bootstrap: id == 0,
            tsc_hz,
            hardware_enabled: true,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            irr: VectorSet::default(),
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [LVT_MASKED; LVT_COUNT],
            timer_initial: 0,
            timer_divide: 0,
            timer: Timer::Idle,
            waiting_for_startup: false,
            init_pending: false,
            startup_pending: None,
            nmi_pending: false,
        };
        apic.reset();
        apic.waiting_for_startup = !apic.bootstrap;
        apic
    }

    /// The register state of power-up, INIT and hardware re-enable; the ID, the enable bit of
    /// IA32_APIC_BASE and the pending signals stay.
    fn reset(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = 0xffff_ffff;
        self.svr = 0xff;
        self.isr = VectorSet::default();
        self.tmr = VectorSet::default();
        self.irr = VectorSet::default();
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_low = 0;
        self.icr_high = 0;
        self.lvt = [LVT_MASKED; LVT_COUNT];
        if self.bootstrap {
            self.lvt[LVT_LINT0] = LVT_DELIVERY_EXTINT;
        }
        self.timer_initial = 0;
        self.timer_divide = 0;
        self.timer = Timer::Idle;
    }

    /// The APIC ID.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLED != 0
    }

    /// Reads the 32-bit register at `offset` in the MMIO window at clock time `now`.
    pub fn read(&mut self, offset: u64, now: u64) -> u32 {
        if !self.hardware_enabled {
            return 0;
        }
        let register = offset & 0xff0;
        // The word of a 256-bit register, or the entry of the LVT.
        let index = ((register & 0x70) >> 4) as usize;
        match register {
            reg::ID => u32::from(self.id) << 24,
            reg::VERSION => VERSION,
            reg::TPR => self.tpr,
            reg::APR | reg::EOI | reg::RRD => 0,
            reg::PPR => self.ppr(),
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            reg::ISR..=reg::ISR_LAST => self.isr.0[index],
            reg::TMR..=reg::TMR_LAST => self.tmr.0[index],
            reg::IRR..=reg::IRR_LAST => self.irr.0[index],
            reg::ESR => self.esr,
            reg::ICR_LOW => self.icr_low,
            reg::ICR_HIGH => self.icr_high,
            reg::LVT_TIMER..=reg::LVT_ERROR => {
                self.lvt[((register - reg::LVT_TIMER) >> 4) as usize]
            }
            reg::TIMER_INITIAL => self.timer_initial,
            reg::TIMER_CURRENT => self.current_count(now),
            reg::TIMER_DIVIDE => self.timer_divide,
            _ => {
                self.record_error(ESR_ILLEGAL_REGISTER);
                0
            }
        }
    }

    /// Writes the 32-bit register at `offset` in the MMIO window at clock time `now`; returns
    /// what the write asks of the machine.
    pub fn write(&mut self, offset: u64, value: u32, now: u64) -> Option<LapicAction> {
        if !self.hardware_enabled {
            return None;
        }
        let register = offset & 0xff0;
        match register {
            reg::ID => self.id = (value >> 24) as u8,
            reg::TPR => self.tpr = value & 0xff,
            reg::EOI => return self.end_of_interrupt(),
            reg::LDR => self.ldr = value & 0xff00_0000,
            reg::DFR => self.dfr = value | 0x0fff_ffff,
            reg::SVR => self.write_svr(value),
            reg::ESR => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            reg::ICR_LOW => {
                self.icr_low = value & ICR_LOW_WRITABLE;
                return self.send_ipi();
            }
            reg::ICR_HIGH => self.icr_high = value & 0xff00_0000,
            reg::LVT_TIMER..=reg::LVT_ERROR => {
                self.write_lvt(((register - reg::LVT_TIMER) >> 4) as usize, value)
            }
            reg::TIMER_INITIAL => self.write_initial_count(value, now),
            reg::TIMER_DIVIDE => self.write_divide(value, now),
            // Read-only registers ignore writes.
            reg::VERSION | reg::APR | reg::PPR | reg::RRD | reg::TIMER_CURRENT => {}
            reg::ISR..=reg::IRR_LAST => {}
            _ => self.record_error(ESR_ILLEGAL_REGISTER),
        }
        None
    }

    fn write_svr(&mut self, value: u32) {
        self.svr = value & SVR_WRITABLE;
        if !self.software_enabled() {
            // Software disable masks every LVT entry; they stay masked until re-enabled and
            // rewritten.
            for entry in &mut self.lvt {
                *entry |= LVT_MASKED;
            }
        }
    }

    fn write_lvt(&mut self, index: usize, value: u32) {
        let mut value = value & LVT_WRITABLE[index];
        if !self.software_enabled() {
            value |= LVT_MASKED;
        }
        if index == LVT_TIMER {
            let old_mode = self.lvt[LVT_TIMER] & TIMER_MODE;
            let new_mode = value & TIMER_MODE;
            // Entering or leaving TSC-deadline mode disarms the timer (SDM 10.5.4.1); one-shot
            // and periodic switch into each other without stopping the count.
            if (old_mode == TIMER_TSC_DEADLINE) != (new_mode == TIMER_TSC_DEADLINE) {
                self.timer_initial = 0;
                self.timer = Timer::Idle;
            }
        }
        self.lvt[index] = value;
    }

    /// Bus-clock nanoseconds per timer tick: the divide configuration (bits 0, 1 and 3) picks
    /// 2, 4, 8, 16, 32, 64, 128 or 1.
    fn divisor(&self) -> u64 {
        let code = (self.timer_divide & 3) | ((self.timer_divide & 8) >> 1);
        1 << ((code + 1) & 7)
    }

    fn timer_mode(&self) -> u32 {
        self.lvt[LVT_TIMER] & TIMER_MODE
    }

    fn write_initial_count(&mut self, value: u32, now: u64) {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            return;
        }
        self.timer_initial = value;
        self.timer = if value == 0 {
            Timer::Idle
        } else {
            Timer::Counting {
                since: now,
                ticks_before: 0,
                fires_at: now + u64::from(value) * self.divisor(),
            }
        };
    }

    fn write_divide(&mut self, value: u32, now: u64) {
        let old_divisor = self.divisor();
        self.timer_divide = value & 0xb;
        let new_divisor = self.divisor();
        if let Timer::Counting {
            since,
            ticks_before,
            fires_at,
        } = self.timer
        {
            // The count goes on from where it is, at the new rate.
            let elapsed = ticks_before + (now - since) / old_divisor;
            let remaining = fires_at.saturating_sub(now).div_ceil(old_divisor);
            self.timer = Timer::Counting {
                since: now,
                ticks_before: elapsed,
                fires_at: now + remaining * new_divisor,
            };
        }
    }

    fn current_count(&self, now: u64) -> u32 {
        let Timer::Counting {
            since,
            ticks_before,
            ..
        } = self.timer
        else {
            return 0;
        };
        let initial = u64::from(self.timer_initial);
        let elapsed = ticks_before + (now - since) / self.divisor();
        if self.timer_mode() == TIMER_PERIODIC {
            (initial - elapsed % initial) as u32
        } else {
            initial.saturating_sub(elapsed) as u32
        }
    }

    /// Writes IA32_TSC_DEADLINE (`deadline`, in guest TSC ticks) when the guest's TSC reads
    /// `tsc_now` and the clock `now`. Ignored outside TSC-deadline mode; zero disarms.
    pub fn write_tsc_deadline(&mut self, deadline: u64, tsc_now: u64, now: u64) {
        if self.timer_mode() != TIMER_TSC_DEADLINE {
            return;
        }
        self.timer = if deadline == 0 {
            Timer::Idle
        } else {
            let ticks = deadline.saturating_sub(tsc_now);
            let delay =
                (u128::from(ticks) * u128::from(NANOS_PER_SEC)).div_ceil(u128::from(self.tsc_hz));
            Timer::Deadline {
                tsc: deadline,
                fires_at: now.saturating_add(u64::try_from(delay).unwrap_or(u64::MAX)),
            }
        };
    }

    /// IA32_TSC_DEADLINE as RDMSR reads it: the armed deadline, zero once it fired or outside
    /// TSC-deadline mode.
    pub fn tsc_deadline(&self) -> u64 {
        match self.timer {
            Timer::Deadline { tsc, .. } if self.timer_mode() == TIMER_TSC_DEADLINE => tsc,
            _ => 0,
        }
    }

    /// The clock time at which the timer next fires.
    pub fn next_deadline(&self) -> Option<u64> {
        match self.timer {
            Timer::Idle => None,
            Timer::Counting { fires_at, .. } | Timer::Deadline { fires_at, .. } => Some(fires_at),
        }
    }

    /// Fires the timer if it is due at clock time `now`; returns whether that requested an
    /// interrupt. A periodic timer that missed periods fires once and goes on from the next
    /// period boundary after `now`.
    pub fn run_due(&mut self, now: u64) -> bool {
        match self.timer {
            Timer::Counting {
                since,
                ticks_before,
                fires_at,
            } if fires_at <= now => {
                if self.timer_mode() == TIMER_PERIODIC {
                    let period = u64::from(self.timer_initial) * self.divisor();
                    let missed = (now - fires_at) / period;
                    self.timer = Timer::Counting {
                        since,
                        ticks_before,
                        fires_at: fires_at + (missed + 1) * period,
                    };
                } else {
                    self.timer = Timer::Idle;
                }
            }
            Timer::Deadline { fires_at, .. } if fires_at <= now => self.timer = Timer::Idle,
            _ => return false,
        }
        self.fire_lvt(LVT_TIMER)
    }

    /// Requests the fixed interrupt of LVT entry `index` unless it is masked.
    fn fire_lvt(&mut self, index: usize) -> bool {
        let entry = self.lvt[index];
        if entry & LVT_MASKED != 0 {
            return false;
        }
        self.request(entry as u8, false)
    }

    /// Sets `vector` in IRR (and its TMR bit by trigger mode); vectors 0-15 are illegal.
    fn request(&mut self, vector: u8, level_triggered: bool) -> bool {
        if vector < 16 {
            self.record_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.irr.set(vector);
        if level_triggered {
            self.tmr.set(vector);
        } else {
            self.tmr.clear(vector);
        }
        true
    }

    /// Logs an error for the next ESR write and raises the LVT error interrupt.
    fn record_error(&mut self, error: u32) {
        self.esr_pending |= error;
        let entry = self.lvt[LVT_ERROR];
        // An illegal error vector is logged but raises nothing, or the error would feed itself.
        if entry & LVT_MASKED == 0 && entry as u8 >= 16 {
            self.irr.set(entry as u8);
            self.tmr.clear(entry as u8);
        }
    }

    /// The processor priority: the TPR, or the class of the highest vector in service if that
    /// is above the TPR's class.
    fn ppr(&self) -> u32 {
        let in_service = u32::from(self.isr.highest().unwrap_or(0));
        if self.tpr >> 4 >= in_service >> 4 {
            self.tpr
        } else {
            in_service & 0xf0
        }
    }

    /// The highest vector in IRR whose priority class is above the processor priority.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.hardware_enabled {
            return None;
        }
        let vector = self.irr.highest()?;
        (u32::from(vector >> 4) > self.ppr() >> 4).then_some(vector)
    }

    /// The INTA cycle: moves [`Self::pending_vector`] from IRR to ISR and returns it.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let vector = self.pending_vector()?;
        self.irr.clear(vector);
        self.isr.set(vector);
        Some(vector)
    }

    fn end_of_interrupt(&mut self) -> Option<LapicAction> {
        let vector = self.isr.highest()?;
        self.isr.clear(vector);
        self.tmr
            .contains(vector)
            .then_some(LapicAction::Eoi(vector))
    }

    /// Whether the vCPU takes the 8259A's INTR (LINT0 in ExtINT mode, or the APIC disabled).
    pub fn accepts_pic(&self) -> bool {
        let lint0 = self.lvt[LVT_LINT0];
        !self.hardware_enabled
            || (lint0 & LVT_MASKED == 0 && lint0 & LVT_DELIVERY_MODE == LVT_DELIVERY_EXTINT)
    }

    fn send_ipi(&mut self) -> Option<LapicAction> {
        let low = self.icr_low;
        let vector = low as u8;
        let delivery = DeliveryMode::from_bits(low >> 8)?;
        let assert = low & (1 << 14) != 0;
        let level_triggered = low & (1 << 15) != 0;
        if delivery == DeliveryMode::Init && level_triggered && !assert {
            return None;
        }
        if matches!(delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && vector < 16 {
            self.record_error(ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        let target = (self.icr_high >> 24) as u8;
        let destination = match (low >> 18) & 3 {
            0 if low & (1 << 11) != 0 => Destination::Logical(target),
            0 => Destination::Physical(target),
            1 => Destination::SelfOnly(self.id),
            2 => Destination::All,
            _ => Destination::AllButSelf(self.id),
        };
        Some(LapicAction::Send(InterruptMessage {
            destination,
            delivery,
            vector,
            level_triggered,
        }))
    }

    /// Whether a message for `destination` is for this APIC.
    pub fn matches(&self, destination: Destination) -> bool {
        match destination {
            Destination::Physical(id) => id == BROADCAST || id == self.id,
            Destination::Logical(BROADCAST) | Destination::All => true,
            Destination::Logical(target) => {
                let logical_id = (self.ldr >> 24) as u8;
                if self.dfr >> 28 == 0xf {
                    // Flat model: one bit per APIC.
                    target & logical_id != 0
                } else {
                    // Cluster model: cluster in the high nibble, one bit per APIC in the low.
                    target >> 4 == logical_id >> 4 && target & logical_id & 0x0f != 0
                }
            }
            Destination::SelfOnly(id) => id == self.id,
            Destination::AllButSelf(id) => id != self.id,
        }
    }

    /// Takes an interrupt message addressed to this APIC; returns whether the vCPU has
    /// something new to do.
    pub fn accept(&mut self, message: &InterruptMessage) -> bool {
        match message.delivery {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                // A software-disabled APIC drops fixed interrupts (what it already holds in
                // IRR stays deliverable).
                self.hardware_enabled
                    && self.software_enabled()
                    && self.request(message.vector, message.level_triggered)
            }
            DeliveryMode::Nmi => {
                self.nmi_pending = true;
                true
            }
            DeliveryMode::Init => {
                self.reset();
                self.init_pending = true;
                self.startup_pending = None;
                self.waiting_for_startup = true;
                true
            }
            DeliveryMode::Startup if self.waiting_for_startup => {
                self.waiting_for_startup = false;
                self.startup_pending = Some(message.vector);
                true
            }
            DeliveryMode::Startup | DeliveryMode::Smi | DeliveryMode::ExtInt => false,
        }
    }

    /// Takes the highest-ranking pending INIT, start-up or NMI.
    pub fn take_signal(&mut self) -> Option<CpuSignal> {
        if std::mem::take(&mut self.init_pending) {
            Some(CpuSignal::Init)
        } else if let Some(vector) = self.startup_pending.take() {
            Some(CpuSignal::Startup { vector })
        } else if std::mem::take(&mut self.nmi_pending) {
            Some(CpuSignal::Nmi)
        } else {
            None
        }
    }

    /// Writes IA32_APIC_BASE: clearing the enable bit turns the APIC off (the vCPU then takes
    /// the PIC's INTR directly) and resets its registers; setting it turns it back on in that
    /// reset state.
    pub fn write_apic_base(&mut self, value: u64) {
        let enable = value & APIC_BASE_ENABLE != 0;
        if self.hardware_enabled && !enable {
            self.reset();
        }
        self.hardware_enabled = enable;
    }

    /// The task priority as CR8 reads it (TPR bits 7-4).
    pub fn cr8(&self) -> u8 {
        (self.tpr >> 4) as u8
    }

    /// Writes CR8: TPR bits 7-4.
    pub fn write_cr8(&mut self, value: u8) {
        self.tpr = u32::from(value & 0xf) << 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSC_HZ: u64 = 2_000_000_000;

    /// The bootstrap processor's APIC, software-enabled as Linux's `setup_local_APIC` leaves
    /// it (spurious vector 0xff, flat logical model, logical ID 1).
    fn enabled_bsp() -> LocalApic {
        let mut apic = LocalApic::new(0, TSC_HZ);
        apic.write(reg::DFR, 0xffff_ffff, 0);
        apic.write(reg::LDR, 1 << 24, 0);
        apic.write(reg::TPR, 0, 0);
        apic.write(reg::SVR, 0x1ff, 0);
        apic
    }

    fn fixed(vector: u8, level_triggered: bool) -> InterruptMessage {
        InterruptMessage {
            destination: Destination::Physical(0),
            delivery: DeliveryMode::Fixed,
            vector,
            level_triggered,
        }
    }

    #[test]
    fn power_up_state() {
        let mut bsp = LocalApic::new(0, TSC_HZ);
        assert_eq!(bsp.read(reg::VERSION, 0), 0x0005_0014);
        assert_eq!(bsp.read(reg::ID, 0), 0);
        assert_eq!(bsp.read(reg::SVR, 0), 0xff);
        assert_eq!(bsp.read(reg::DFR, 0), 0xffff_ffff);
        assert_eq!(bsp.read(reg::LVT_TIMER, 0), LVT_MASKED);
        assert_eq!(
            bsp.read(0x350, 0),
            0x700,
            "the BSP's LINT0 is ExtINT, unmasked"
        );
        assert!(bsp.accepts_pic());
        let mut ap = LocalApic::new(3, TSC_HZ);
        assert_eq!(ap.read(reg::ID, 0), 3 << 24);
        assert_eq!(ap.read(0x350, 0), LVT_MASKED);
        assert!(!ap.accepts_pic());
    }

    #[test]
    fn priority_classes_decide_what_is_deliverable() {
        let mut apic = enabled_bsp();
        assert!(apic.accept(&fixed(0x31, false)));
        assert!(apic.accept(&fixed(0x41, false)));
        assert_eq!(apic.read(reg::IRR + 0x10, 0), 1 << 17);
        assert_eq!(apic.read(reg::IRR + 0x20, 0), 1 << 1);
        assert_eq!(apic.acknowledge(), Some(0x41));
        assert_eq!(apic.read(reg::PPR, 0), 0x40);
        // Class 3 waits while class 4 is in service.
        assert_eq!(apic.pending_vector(), None);
        assert_eq!(
            apic.write(reg::EOI, 0, 0),
            None,
            "edge-triggered: no broadcast"
        );
        assert_eq!(apic.pending_vector(), Some(0x31));
        // A TPR of class 3 holds it back too; class 4 gets past.
        apic.write(reg::TPR, 0x30, 0);
        assert_eq!(apic.pending_vector(), None);
        apic.accept(&fixed(0x40, false));
        assert_eq!(apic.acknowledge(), Some(0x40));
        apic.write_cr8(0);
        assert_eq!(apic.read(reg::TPR, 0), 0);
        apic.write_cr8(0x2);
        assert_eq!(apic.cr8(), 2);
    }

    #[test]
    fn a_level_triggered_vector_ends_with_a_broadcast() {
        let mut apic = enabled_bsp();
        apic.accept(&fixed(0x62, true));
        assert_eq!(apic.read(reg::TMR + 0x30, 0), 1 << 2);
        assert_eq!(apic.acknowledge(), Some(0x62));
        assert_eq!(apic.read(reg::ISR + 0x30, 0), 1 << 2);
        assert_eq!(apic.write(reg::EOI, 0, 0), Some(LapicAction::Eoi(0x62)));
        assert_eq!(apic.read(reg::ISR + 0x30, 0), 0);
    }

    #[test]
    fn icr_writes_send_self_ipis_init_and_startup() {
        let mut apic = enabled_bsp();
        assert_eq!(
            apic.write(reg::ICR_LOW, (1 << 18) | 0xfd, 0),
            Some(LapicAction::Send(InterruptMessage {
                destination: Destination::SelfOnly(0),
                delivery: DeliveryMode::Fixed,
                vector: 0xfd,
                level_triggered: false,
            }))
        );
        assert_eq!(
            apic.read(reg::ICR_LOW, 0) & (1 << 12),
            0,
            "delivery is idle at once"
        );
        // Linux's wakeup_secondary_cpu_via_init: INIT assert, INIT de-assert, two SIPIs.
        apic.write(reg::ICR_HIGH, 1 << 24, 0);
        let init = apic.write(reg::ICR_LOW, 0xc500, 0);
        assert_eq!(
            init,
            Some(LapicAction::Send(InterruptMessage {
                destination: Destination::Physical(1),
                delivery: DeliveryMode::Init,
                vector: 0,
                level_triggered: true,
            }))
        );
        assert_eq!(apic.write(reg::ICR_LOW, 0x8500, 0), None);
        let Some(LapicAction::Send(sipi)) = apic.write(reg::ICR_LOW, 0x0608, 0) else {
            panic!("no start-up IPI");
        };
        assert_eq!(sipi.delivery, DeliveryMode::Startup);

        let mut ap = LocalApic::new(1, TSC_HZ);
        let Some(LapicAction::Send(init)) = init else {
            unreachable!()
        };
        assert!(ap.matches(init.destination) && !apic.matches(init.destination));
        assert!(ap.accept(&init));
        assert!(ap.accept(&sipi));
        assert!(!ap.accept(&sipi), "a second SIPI finds the vCPU started");
        assert_eq!(ap.take_signal(), Some(CpuSignal::Init));
        assert_eq!(ap.take_signal(), Some(CpuSignal::Startup { vector: 8 }));
        assert_eq!(ap.take_signal(), None);
    }

    #[test]
    fn an_illegal_vector_is_an_error_not_an_interrupt() {
        let mut apic = enabled_bsp();
        apic.write(reg::LVT_ERROR, 0xfe, 0);
        assert_eq!(apic.write(reg::ICR_LOW, (1 << 18) | 0x05, 0), None);
        assert!(!apic.accept(&fixed(0x0e, false)));
        // Errors show in ESR after the next ESR write, as Linux reads it.
        assert_eq!(apic.read(reg::ESR, 0), 0);
        apic.write(reg::ESR, 0, 0);
        assert_eq!(
            apic.read(reg::ESR, 0),
            ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR
        );
        assert_eq!(apic.acknowledge(), Some(0xfe), "the LVT error interrupt");
        apic.read(0x2f0, 0);
        apic.write(reg::ESR, 0, 0);
        assert_eq!(apic.read(reg::ESR, 0), ESR_ILLEGAL_REGISTER);
    }

    #[test]
    fn software_disable_masks_the_lvt_and_drops_fixed_interrupts() {
        let mut apic = enabled_bsp();
        apic.write(reg::LVT_TIMER, 0xef, 0);
        apic.accept(&fixed(0x50, false));
        apic.write(reg::SVR, 0xff, 0);
        assert_eq!(apic.read(reg::LVT_TIMER, 0), LVT_MASKED | 0xef);
        apic.write(reg::LVT_TIMER, 0xef, 0);
        assert_eq!(apic.read(reg::LVT_TIMER, 0), LVT_MASKED | 0xef);
        assert!(!apic.accept(&fixed(0x60, false)));
        assert_eq!(
            apic.acknowledge(),
            Some(0x50),
            "what IRR held stays deliverable"
        );
        assert!(apic.accept(&InterruptMessage {
            delivery: DeliveryMode::Nmi,
            ..fixed(0, false)
        }));
        assert_eq!(apic.take_signal(), Some(CpuSignal::Nmi));
    }

    #[test]
    fn logical_destinations_in_the_flat_and_cluster_models() {
        let mut apic = enabled_bsp();
        apic.write(reg::LDR, 0x24 << 24, 0);
        assert!(apic.matches(Destination::Logical(0x04)));
        assert!(apic.matches(Destination::Logical(0x20)));
        assert!(!apic.matches(Destination::Logical(0x01)));
        apic.write(reg::DFR, 0x0fff_ffff, 0);
        assert_eq!(apic.read(reg::DFR, 0), 0x0fff_ffff);
        assert!(apic.matches(Destination::Logical(0x2c)));
        assert!(!apic.matches(Destination::Logical(0x1c)));
        assert!(apic.matches(Destination::Logical(0xff)));
        assert!(apic.matches(Destination::AllButSelf(1)));
        assert!(!apic.matches(Destination::AllButSelf(0)));
    }

    #[test]
    fn one_shot_timer_counts_down_and_fires_once() {
        let mut apic = enabled_bsp();
        apic.write(reg::TIMER_DIVIDE, 0xb, 0);
        apic.write(reg::LVT_TIMER, 0xef, 0);
        apic.write(reg::TIMER_INITIAL, 1000, 100);
        assert_eq!(apic.next_deadline(), Some(1100));
        assert_eq!(apic.read(reg::TIMER_CURRENT, 500), 600);
        assert!(!apic.run_due(1099));
        assert!(apic.run_due(1100));
        assert_eq!(apic.read(reg::TIMER_CURRENT, 1200), 0);
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.acknowledge(), Some(0xef));
    }

    #[test]
    fn periodic_timer_reloads_and_coalesces_missed_periods() {
        let mut apic = enabled_bsp();
        apic.write(reg::TIMER_DIVIDE, 0x3, 0);
        apic.write(reg::LVT_TIMER, TIMER_PERIODIC | 0xef, 0);
        apic.write(reg::TIMER_INITIAL, 100, 0);
        assert_eq!(apic.next_deadline(), Some(1600));
        assert_eq!(apic.read(reg::TIMER_CURRENT, 2 * 1600 + 800), 50);
        assert!(apic.run_due(5 * 1600 + 10));
        assert_eq!(apic.next_deadline(), Some(6 * 1600));
        // A masked timer keeps counting without interrupting.
        apic.write(reg::LVT_TIMER, TIMER_PERIODIC | LVT_MASKED | 0xef, 0);
        apic.acknowledge();
        assert!(!apic.run_due(6 * 1600));
        assert_eq!(apic.next_deadline(), Some(7 * 1600));
    }

    #[test]
    fn a_new_divide_configuration_rescales_the_remaining_count() {
        let mut apic = enabled_bsp();
        apic.write(reg::TIMER_DIVIDE, 0xb, 0);
        apic.write(reg::LVT_TIMER, 0xef, 0);
        apic.write(reg::TIMER_INITIAL, 1000, 0);
        apic.write(reg::TIMER_DIVIDE, 0x0, 400);
        assert_eq!(apic.read(reg::TIMER_CURRENT, 400), 600);
        assert_eq!(apic.next_deadline(), Some(400 + 600 * 2));
        assert_eq!(apic.read(reg::TIMER_CURRENT, 600), 500);
    }

    #[test]
    fn tsc_deadline_mode_fires_at_the_deadline_and_reads_zero_after() {
        let mut apic = enabled_bsp();
        apic.write(reg::LVT_TIMER, TIMER_TSC_DEADLINE | 0xec, 0);
        // The initial count has no effect in this mode, and the current count reads zero.
        apic.write(reg::TIMER_INITIAL, 1000, 0);
        assert_eq!(apic.next_deadline(), None);
        let tsc_now = 5_000_000;
        apic.write_tsc_deadline(tsc_now + 2_000_000, tsc_now, 10_000);
        assert_eq!(apic.tsc_deadline(), tsc_now + 2_000_000);
        assert_eq!(apic.next_deadline(), Some(10_000 + 1_000_000));
        assert_eq!(apic.read(reg::TIMER_CURRENT, 20_000), 0);
        assert!(!apic.run_due(1_009_999));
        assert!(apic.run_due(1_010_000));
        assert_eq!(apic.tsc_deadline(), 0);
        assert_eq!(apic.acknowledge(), Some(0xec));
        // A deadline already past fires at once; leaving the mode disarms.
        apic.write_tsc_deadline(1, tsc_now, 2_000_000);
        assert_eq!(apic.next_deadline(), Some(2_000_000));
        apic.write(reg::LVT_TIMER, 0xec, 0);
        assert_eq!(apic.next_deadline(), None);
        apic.write_tsc_deadline(tsc_now + 10, tsc_now, 0);
        assert_eq!(apic.tsc_deadline(), 0, "ignored outside TSC-deadline mode");
    }

    #[test]
    fn hardware_disable_hands_the_vcpu_to_the_pic_and_resets_the_apic() {
        let mut apic = enabled_bsp();
        apic.write(0x350, LVT_MASKED | LVT_DELIVERY_EXTINT, 0);
        assert!(!apic.accepts_pic());
        apic.accept(&fixed(0x80, false));
        apic.write_apic_base(LAPIC_BASE);
        assert!(apic.accepts_pic());
        assert_eq!(apic.pending_vector(), None);
        apic.write_apic_base(LAPIC_BASE | APIC_BASE_ENABLE);
        assert_eq!(apic.read(reg::SVR, 0), 0xff);
        assert_eq!(apic.read(reg::IRR + 0x40, 0), 0);
    }
}
