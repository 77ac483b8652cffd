//! The I/O APIC (82093AA, version 0x20 as in ICH-era chipsets): 24 input pins, each with a
//! redirection entry that turns its interrupt into a message for the local APICs.
//!
//! The guest selects a register through IOREGSEL (offset 0x00) and reads or writes it through
//! IOWIN (offset 0x10): the ID (0x00), the version (0x01: version 0x20, 24 entries), the
//! arbitration ID (0x02), and the redirection table (0x10 + 2 * pin: low, then high dword).
//! Version 0x20 also has the EOI register at offset 0x40.
//!
//! An edge-triggered pin sends one message per rising edge while it is unmasked; an edge that
//! arrives masked is lost, as the 82093AA specifies. A level-triggered pin sends a message when
//! it is high and its entry's Remote IRR is clear, and sets Remote IRR; the local APIC's EOI of
//! that vector (or a write of it to the EOI register) clears Remote IRR, and a pin still high
//! then sends again. Changing an entry to edge-triggered clears its Remote IRR, which Linux's
//! `__eoi_ioapic_pin` relies on.
//!
//! Departures from the chip: the polarity bit is stored but the model's lines are already
//! "asserted = high"; delivery status always reads idle, since a message is delivered at once.

use crate::lapic::{DeliveryMode, Destination, InterruptMessage};

/// Where the I/O APIC's registers appear.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Size of its MMIO window.
pub const IOAPIC_MMIO_LEN: u64 = 0x1000;
/// Number of input pins.
pub const IOAPIC_PINS: usize = 24;

/// MMIO offsets.
pub mod offset {
    /// Register select.
    pub const IOREGSEL: u64 = 0x00;
    /// Register window.
    pub const IOWIN: u64 = 0x10;
    /// EOI (version 0x20): the vector written ends like a local APIC's EOI broadcast.
    pub const EOI: u64 = 0x40;
}

/// Indirect register indices.
const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
const REG_TABLE: u8 = 0x10;
const VERSION: u32 = 0x20 | ((IOAPIC_PINS as u32 - 1) << 16);

/// Redirection entry bits.
const ENTRY_REMOTE_IRR: u64 = 1 << 14;
const ENTRY_LEVEL: u64 = 1 << 15;
const ENTRY_MASKED: u64 = 1 << 16;
/// Bits the guest can write: everything but delivery status (12) and Remote IRR (14).
const ENTRY_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// An I/O APIC.
#[derive(Clone, Debug)]
pub struct Ioapic {
    id: u8,
    select: u8,
    table: [u64; IOAPIC_PINS],
    /// Pin input levels.
    levels: u32,
    /// Requests not yet sent: rising edges of edge-triggered pins, high level-triggered pins.
    irr: u32,
}

impl Ioapic {
    /// An I/O APIC with ID `id`, every entry masked.
    pub fn new(id: u8) -> Self {
        Self {
            id,
            select: 0,
            table: [ENTRY_MASKED; IOAPIC_PINS],
            levels: 0,
            irr: 0,
        }
    }

    /// Drives pin `pin` to `level`; messages it sends go to `deliver`. Pins beyond the 24 are
    /// ignored.
    pub fn set_irq(&mut self, pin: usize, level: bool, deliver: &mut dyn FnMut(InterruptMessage)) {
        if pin >= IOAPIC_PINS {
            return;
        }
        let bit = 1 << pin;
        let rising = level && self.levels & bit == 0;
        if level {
            self.levels |= bit;
        } else {
            self.levels &= !bit;
        }
        let entry = self.table[pin];
        if entry & ENTRY_LEVEL != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if rising && entry & ENTRY_MASKED == 0 {
            self.irr |= bit;
        }
        self.service(deliver);
    }

    /// Sends what the pins request and their entries allow.
    fn service(&mut self, deliver: &mut dyn FnMut(InterruptMessage)) {
        for pin in 0..IOAPIC_PINS {
            let bit = 1 << pin;
            let entry = self.table[pin];
            if self.irr & bit == 0 || entry & ENTRY_MASKED != 0 {
                continue;
            }
            let level_triggered = entry & ENTRY_LEVEL != 0;
            if level_triggered {
                if entry & ENTRY_REMOTE_IRR != 0 {
                    continue;
                }
                self.table[pin] |= ENTRY_REMOTE_IRR;
            } else {
                self.irr &= !bit;
            }
            if let Some(message) = message(entry) {
                deliver(message);
            }
        }
    }

    /// The EOI broadcast for `vector`: level-triggered entries with that vector clear Remote
    /// IRR, and those whose pin is still high send again.
    pub fn end_of_interrupt(&mut self, vector: u8, deliver: &mut dyn FnMut(InterruptMessage)) {
        for entry in &mut self.table {
            if *entry as u8 == vector && *entry & ENTRY_LEVEL != 0 {
                *entry &= !ENTRY_REMOTE_IRR;
            }
        }
        self.service(deliver);
    }

    /// Reads the 32-bit register at `offset` in the MMIO window.
    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            offset::IOREGSEL => u32::from(self.select),
            offset::IOWIN => match self.select {
                REG_ID | REG_ARBITRATION => u32::from(self.id) << 24,
                REG_VERSION => VERSION,
                index => match self.table_slot(index) {
                    Some((pin, true)) => (self.table[pin] >> 32) as u32,
                    Some((pin, false)) => self.table[pin] as u32,
                    None => 0,
                },
            },
            _ => 0,
        }
    }

    /// Writes the 32-bit register at `offset` in the MMIO window; messages the write releases
    /// go to `deliver`.
    pub fn write(&mut self, offset: u64, value: u32, deliver: &mut dyn FnMut(InterruptMessage)) {
        match offset {
            offset::IOREGSEL => self.select = value as u8,
            offset::IOWIN => match self.select {
                REG_ID => self.id = ((value >> 24) & 0x0f) as u8,
                index => {
                    if let Some((pin, high)) = self.table_slot(index) {
                        self.write_entry(pin, high, value);
                        self.service(deliver);
                    }
                }
            },
            offset::EOI => self.end_of_interrupt(value as u8, deliver),
            _ => {}
        }
    }

    /// The pin and half (high dword?) of redirection-table register `index`.
    fn table_slot(&self, index: u8) -> Option<(usize, bool)> {
        let pin = usize::from(index.checked_sub(REG_TABLE)? / 2);
        (pin < IOAPIC_PINS).then_some((pin, index & 1 != 0))
    }

    fn write_entry(&mut self, pin: usize, high: bool, value: u32) {
        let old = self.table[pin];
        let new = if high {
            (old & 0xffff_ffff) | (u64::from(value) << 32)
        } else {
            (old & !0xffff_ffff) | u64::from(value)
        };
        let mut entry = (new & ENTRY_WRITABLE) | (old & ENTRY_REMOTE_IRR);
        if entry & ENTRY_LEVEL == 0 {
            entry &= !ENTRY_REMOTE_IRR;
        } else if self.levels & (1 << pin) != 0 {
            // A pin that is high when its entry turns level-triggered is requesting.
            self.irr |= 1 << pin;
        }
        self.table[pin] = entry;
    }
}

/// The APIC-bus message a redirection entry describes; `None` for the reserved delivery modes.
fn message(entry: u64) -> Option<InterruptMessage> {
    let target = (entry >> 56) as u8;
    Some(InterruptMessage {
        destination: if entry & (1 << 11) != 0 {
            Destination::Logical(target)
        } else {
            Destination::Physical(target)
        },
        delivery: DeliveryMode::from_bits((entry >> 8) as u32)?,
        vector: entry as u8,
        level_triggered: entry & ENTRY_LEVEL != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_entry(ioapic: &mut Ioapic, pin: u8, entry: u64, sent: &mut Vec<InterruptMessage>) {
        let mut deliver = |m| sent.push(m);
        ioapic.write(
            offset::IOREGSEL,
            u32::from(REG_TABLE + 2 * pin + 1),
            &mut deliver,
        );
        ioapic.write(offset::IOWIN, (entry >> 32) as u32, &mut deliver);
        ioapic.write(
            offset::IOREGSEL,
            u32::from(REG_TABLE + 2 * pin),
            &mut deliver,
        );
        ioapic.write(offset::IOWIN, entry as u32, &mut deliver);
    }

    fn read_reg(ioapic: &mut Ioapic, index: u8) -> u32 {
        ioapic.write(offset::IOREGSEL, u32::from(index), &mut |_| {});
        ioapic.read(offset::IOWIN)
    }

    #[test]
    fn identification_registers() {
        let mut ioapic = Ioapic::new(0);
        assert_eq!(read_reg(&mut ioapic, REG_VERSION), 0x0017_0020);
        ioapic.write(offset::IOREGSEL, u32::from(REG_ID), &mut |_| {});
        ioapic.write(offset::IOWIN, 0x0200_0000, &mut |_| {});
        assert_eq!(read_reg(&mut ioapic, REG_ID), 0x0200_0000);
        assert_eq!(read_reg(&mut ioapic, REG_ARBITRATION), 0x0200_0000);
        assert_eq!(read_reg(&mut ioapic, REG_TABLE + 9), 0);
        assert_eq!(read_reg(&mut ioapic, REG_TABLE + 8), ENTRY_MASKED as u32);
        assert_eq!(ioapic.read(offset::IOREGSEL), u32::from(REG_TABLE + 8));
    }

    #[test]
    fn an_edge_pin_sends_once_per_rising_edge_and_drops_masked_edges() {
        let mut ioapic = Ioapic::new(0);
        let mut sent = Vec::new();
        write_entry(&mut ioapic, 4, 0x0000_0000_0000_0034, &mut sent);
        ioapic.set_irq(4, true, &mut |m| sent.push(m));
        ioapic.set_irq(4, true, &mut |m| sent.push(m));
        assert_eq!(
            sent,
            [InterruptMessage {
                destination: Destination::Physical(0),
                delivery: DeliveryMode::Fixed,
                vector: 0x34,
                level_triggered: false,
            }]
        );
        ioapic.set_irq(4, false, &mut |m| sent.push(m));
        write_entry(&mut ioapic, 4, ENTRY_MASKED | 0x34, &mut sent);
        ioapic.set_irq(4, true, &mut |m| sent.push(m));
        write_entry(&mut ioapic, 4, 0x34, &mut sent);
        assert_eq!(sent.len(), 1, "the masked edge is lost");
    }

    #[test]
    fn a_level_pin_waits_for_the_eoi_and_resends_while_high() {
        let mut ioapic = Ioapic::new(0);
        let mut sent = Vec::new();
        write_entry(
            &mut ioapic,
            10,
            (1 << 56) | ENTRY_LEVEL | (1 << 11) | 0x3a,
            &mut sent,
        );
        ioapic.set_irq(10, true, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].destination, Destination::Logical(1));
        assert!(sent[0].level_triggered);
        assert_ne!(
            read_reg(&mut ioapic, REG_TABLE + 20) & (1 << 14),
            0,
            "Remote IRR"
        );
        ioapic.end_of_interrupt(0x3a, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 2, "still high: sent again");
        ioapic.set_irq(10, false, &mut |m| sent.push(m));
        ioapic.end_of_interrupt(0x3a, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 2);
        assert_eq!(read_reg(&mut ioapic, REG_TABLE + 20) & (1 << 14), 0);
        // The EOI register does the same as the broadcast.
        ioapic.set_irq(10, true, &mut |m| sent.push(m));
        ioapic.write(offset::EOI, 0x3a, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 4);
    }

    #[test]
    fn unmasking_a_high_level_pin_sends_and_edge_mode_clears_remote_irr() {
        let mut ioapic = Ioapic::new(0);
        let mut sent = Vec::new();
        write_entry(
            &mut ioapic,
            11,
            ENTRY_MASKED | ENTRY_LEVEL | 0x3b,
            &mut sent,
        );
        ioapic.set_irq(11, true, &mut |m| sent.push(m));
        assert!(sent.is_empty());
        write_entry(&mut ioapic, 11, ENTRY_LEVEL | 0x3b, &mut sent);
        assert_eq!(sent.len(), 1);
        // Linux's EOI by mode switch: mask, edge, level again, unmask.
        write_entry(&mut ioapic, 11, ENTRY_MASKED | 0x3b, &mut sent);
        assert_eq!(read_reg(&mut ioapic, REG_TABLE + 22) & (1 << 14), 0);
        write_entry(
            &mut ioapic,
            11,
            ENTRY_MASKED | ENTRY_LEVEL | 0x3b,
            &mut sent,
        );
        write_entry(&mut ioapic, 11, ENTRY_LEVEL | 0x3b, &mut sent);
        assert_eq!(sent.len(), 2);
    }

    #[test]
    fn read_only_bits_and_other_delivery_modes() {
        let mut ioapic = Ioapic::new(0);
        let mut sent = Vec::new();
        write_entry(&mut ioapic, 1, (1 << 14) | (1 << 12) | 0x400, &mut sent);
        assert_eq!(read_reg(&mut ioapic, REG_TABLE + 2), 0x400);
        ioapic.set_irq(1, true, &mut |m| sent.push(m));
        assert_eq!(sent[0].delivery, DeliveryMode::Nmi);
        write_entry(&mut ioapic, 2, 0x300, &mut sent);
        ioapic.set_irq(2, true, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 1, "the reserved delivery mode sends nothing");
        ioapic.set_irq(IOAPIC_PINS, true, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 1);
    }
}
