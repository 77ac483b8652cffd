//! The Intel MultiProcessor Specification 1.4 table, so a kernel booted without firmware
//! finds the local APIC, the I/O APIC and how the ISA interrupts reach it, as SeaBIOS and
//! Firecracker (`arch/x86_64/mptable.rs`) describe a PC: one processor, an ISA bus, the I/O
//! APIC at 0xfec00000, ISA IRQs on the I/O APIC pins of the same number except IRQ 0 (the
//! PIT), which is on pin 2 (the wiring of `umbra_devices::irqchip`), the 8259A on LINT0
//! (ExtINT) and NMI on LINT1.
//!
//! The table sits at the start of the extended BIOS data area (0x9fc00, reserved in the e820
//! map), the last KiB of conventional memory, where Linux looks for it.

use umbra_devices::ioapic::IOAPIC_BASE;
use umbra_devices::lapic::LAPIC_BASE;
use umbra_mmu::addr::Gpa;
use umbra_mmu::memslot::{MemslotError, Memslots};

use super::e820::EBDA_START;

/// Where the floating pointer structure goes; the configuration table follows it.
pub const MPTABLE_ADDR: u64 = EBDA_START;

/// The local APIC's version (an integrated xAPIC), as its version register reads.
const LAPIC_VERSION: u8 = 0x14;
/// The I/O APIC's version, as its version register reads.
const IOAPIC_VERSION: u8 = 0x20;
/// The I/O APIC's ID: the one after the processor's.
const IOAPIC_ID: u8 = 1;
/// The I/O APIC pin ISA IRQ 0 is wired to.
const TIMER_PIN: u8 = 2;
/// The ISA IRQs (2 is the 8259A cascade, wired to nothing).
const ISA_IRQS: u8 = 16;

/// Entry types.
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
/// Interrupt types.
const INTERRUPT_INT: u8 = 0;
const INTERRUPT_NMI: u8 = 1;
const INTERRUPT_EXTINT: u8 = 3;
/// Processor flags: enabled, the bootstrap processor.
const CPU_ENABLED_BSP: u8 = 0b11;

/// The floating pointer structure and the configuration table, with their checksums, for a
/// machine of one processor whose CPUID.1 gives `signature` (EAX) and `features` (EDX).
pub fn mptable(signature: u32, features: u32) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut count = 0u16;
    let mut entry = |bytes: &[u8]| {
        entries.extend_from_slice(bytes);
        count += 1;
    };
    let mut processor = vec![ENTRY_PROCESSOR, 0, LAPIC_VERSION, CPU_ENABLED_BSP];
    processor.extend(signature.to_le_bytes());
    processor.extend(features.to_le_bytes());
    processor.extend([0; 8]);
    entry(&processor);
    entry(&[ENTRY_BUS, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    let mut ioapic = vec![ENTRY_IOAPIC, IOAPIC_ID, IOAPIC_VERSION, 1];
    ioapic.extend((IOAPIC_BASE as u32).to_le_bytes());
    entry(&ioapic);
    for irq in (0..ISA_IRQS).filter(|&irq| irq != 2) {
        let pin = if irq == 0 { TIMER_PIN } else { irq };
        // Flags 0: polarity and trigger as the ISA bus has them (high, edge).
        entry(&[
            ENTRY_IO_INTERRUPT,
            INTERRUPT_INT,
            0,
            0,
            0,
            irq,
            IOAPIC_ID,
            pin,
        ]);
    }
    entry(&[ENTRY_LOCAL_INTERRUPT, INTERRUPT_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entry(&[ENTRY_LOCAL_INTERRUPT, INTERRUPT_NMI, 0, 0, 0, 0, 0xff, 1]);

    const POINTER_LEN: usize = 16;
    const HEADER_LEN: usize = 44;
    let mut table = Vec::with_capacity(POINTER_LEN + HEADER_LEN + entries.len());
    table.extend(b"_MP_");
    table.extend(((MPTABLE_ADDR as usize + POINTER_LEN) as u32).to_le_bytes());
    // Length in 16-byte units, specification 1.4, checksum, no default configuration.
    table.extend([1, 4, 0, 0, 0, 0, 0, 0]);
    table[10] = checksum(&table);

    table.extend(b"PCMP");
    table.extend(((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    table.extend([4, 0]);
    table.extend(b"UMBRA   ");
    table.extend(b"PC          ");
    table.extend([0; 6]);
    table.extend(count.to_le_bytes());
    table.extend((LAPIC_BASE as u32).to_le_bytes());
    table.extend([0; 4]);
    table.extend(entries);
    table[POINTER_LEN + 7] = checksum(&table[POINTER_LEN..]);
    table
}

/// Writes [`mptable`] at [`MPTABLE_ADDR`].
pub fn write(memslots: &Memslots, signature: u32, features: u32) -> Result<(), MemslotError> {
    memslots.write(Gpa(MPTABLE_ADDR), &mptable(signature, features))
}

/// The byte that makes `bytes` sum to 0.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, &byte| sum.wrapping_add(byte))
        .wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte))
    }

    #[test]
    fn the_table_is_found_and_sums_to_zero() {
        let table = mptable(0x306d4, 0x1234);
        assert_eq!(&table[..4], b"_MP_");
        assert_eq!(sum(&table[..16]), 0);
        let config = u32::from_le_bytes(table[4..8].try_into().unwrap()) as usize;
        assert_eq!(config, 0x9fc10);
        let header = &table[16..];
        assert_eq!(&header[..4], b"PCMP");
        let length = u16::from_le_bytes(header[4..6].try_into().unwrap()) as usize;
        assert_eq!(length, header.len());
        assert_eq!(sum(header), 0);
        // A processor, a bus, an I/O APIC, 15 ISA interrupts and 2 local ones.
        assert_eq!(u16::from_le_bytes(header[34..36].try_into().unwrap()), 20);
        assert_eq!(length, 44 + 20 + 8 + 8 + 17 * 8);
        assert!(MPTABLE_ADDR as usize + table.len() <= 0xa_0000);
    }

    #[test]
    fn isa_irq_0_is_on_pin_2_and_the_processor_is_described() {
        let table = mptable(0x306d4, 0x1234);
        let entries = &table[16 + 44..];
        assert_eq!(entries[..4], [0, 0, 0x14, 0b11]);
        assert_eq!(entries[4..8], 0x306d4u32.to_le_bytes());
        assert_eq!(entries[8..12], 0x1234u32.to_le_bytes());
        let interrupts: Vec<&[u8]> = entries[36..].chunks(8).collect();
        assert_eq!(interrupts[0], [3, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(interrupts[1], [3, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(interrupts[2], [3, 0, 0, 0, 0, 3, 1, 3]);
        assert_eq!(interrupts[15], [4, 3, 0, 0, 0, 0, 0xff, 0]);
        assert_eq!(interrupts[16], [4, 1, 0, 0, 0, 0, 0xff, 1]);
    }
}
