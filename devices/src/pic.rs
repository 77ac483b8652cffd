//! The PC's pair of 8259A programmable interrupt controllers, with the ELCR.
//!
//! The master takes ISA IRQs 0-7 and the slave IRQs 8-15; the slave's INT output drives the
//! master's IR2, so the master's IRQ 2 stands for "something on the slave". Each controller has
//! the 8259A's registers: IRR (requests), ISR (in service), IMR (masked), the programmed vector
//! base, and the rotating priority (IRQ `priority_base` is highest, the one before it lowest).
//! The ELCR (edge/level control register, ports 0x4d0-0x4d1, as the PIIX has it) makes an input
//! level-triggered: its IRR bit then follows the line instead of latching its rising edge. IRQs
//! 0, 1, 2, 8 and 13 are edge-only, as on the PIIX.
//!
//! Programming follows the datasheet: ICW1 on the command port starts initialisation (the edge
//! detectors are reset so a line already high needs a new rising edge, IMR and ISR are
//! cleared, priority returns to IRQ 0 first, the status read selects IRR), then ICW2 (vector
//! base), ICW3 when cascaded, ICW4 when ICW1 asked for it (auto-EOI, special fully nested mode).
//! Afterwards the data port is the IMR, and the command port takes OCW2 (non-specific,
//! specific and rotating EOIs, set priority, rotate in auto-EOI) and OCW3 (IRR/ISR read
//! select, poll, special mask).
//!
//! The INTA cycle ([`Pic::acknowledge`]) picks the highest-priority unmasked request above
//! everything in service, sets its ISR bit (unless in auto-EOI) and clears its IRR bit (if
//! edge-triggered). If nothing qualifies, the controller answers with IRQ 7's vector and sets
//! no ISR bit: the spurious interrupt. When the master picks IRQ 2 but the slave's request has
//! gone in the meantime, the slave gives its spurious IRQ 7 (vector base + 7, "IRQ 15").
//!
//! Departures from the chip: ICW1's LTIM bit is ignored (the ELCR decides, as on PIIX-era
//! boards), as are ICW4's buffered mode and 8080 mode bits; the ICW3 slave wiring is fixed to
//! IR2 whatever is written.

/// Master command port; the master's data port follows it.
pub const PIC_MASTER_PORT: u64 = 0x20;
/// Slave command port; the slave's data port follows it.
pub const PIC_SLAVE_PORT: u64 = 0xa0;
/// The ELCR's two ports (master's IRQs 0-7, then slave's 8-15).
pub const ELCR_PORT: u64 = 0x4d0;

/// Offsets [`Pic::read`] and [`Pic::write`] take: port numbers less [`PIC_MASTER_PORT`].
pub mod offset {
    /// Master command (ICW1, OCW2, OCW3; reads IRR or ISR).
    pub const MASTER_COMMAND: u64 = 0x00;
    /// Master data (ICW2-4, IMR).
    pub const MASTER_DATA: u64 = 0x01;
    /// Slave command.
    pub const SLAVE_COMMAND: u64 = 0x80;
    /// Slave data.
    pub const SLAVE_DATA: u64 = 0x81;
    /// ELCR for IRQs 0-7.
    pub const ELCR_MASTER: u64 = 0x4b0;
    /// ELCR for IRQs 8-15.
    pub const ELCR_SLAVE: u64 = 0x4b1;
}

/// The master input the slave's output is wired to.
const CASCADE_IRQ: u8 = 2;
/// ELCR bits that can be set: the PIIX keeps IRQs 0, 1 and 2 edge-triggered on the master...
const MASTER_ELCR_MASK: u8 = 0xf8;
/// ...and IRQ 8 (the RTC) and IRQ 13 (the FPU) on the slave.
const SLAVE_ELCR_MASK: u8 = 0xde;

/// Command-port bit 4: this write is ICW1.
const ICW1: u8 = 0x10;
/// ICW1 bit 0: ICW4 follows.
const ICW1_IC4: u8 = 0x01;
/// ICW1 bit 1: single controller, no ICW3.
const ICW1_SINGLE: u8 = 0x02;
/// Command-port bit 3 (with bit 4 clear): this write is OCW3, not OCW2.
const OCW3: u8 = 0x08;
/// ICW4 bit 1: automatic EOI.
const ICW4_AEOI: u8 = 0x02;
/// ICW4 bit 4: special fully nested mode.
const ICW4_SFNM: u8 = 0x10;

/// Where a controller is in its initialisation sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InitStep {
    /// Initialised: the data port is the IMR.
    Ready,
    /// The next data write is ICW2.
    Icw2,
    /// The next data write is ICW3.
    Icw3,
    /// The next data write is ICW4.
    Icw4,
}

/// One 8259A.
#[derive(Clone, Debug)]
struct Controller {
    /// Input line levels.
    lines: u8,
    /// Requests latched by rising edges (meaningful for edge-triggered inputs).
    latched: u8,
    imr: u8,
    isr: u8,
    elcr: u8,
    elcr_mask: u8,
    /// The IRQ with the highest priority; priorities descend from it, wrapping at 8.
    priority_base: u8,
    vector_base: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    init: InitStep,
    expect_icw4: bool,
    single: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    master: bool,
}

impl Controller {
    fn new(master: bool) -> Self {
        Self {
            lines: 0,
            latched: 0,
            imr: 0,
            isr: 0,
            elcr: 0,
            elcr_mask: if master {
                MASTER_ELCR_MASK
            } else {
                SLAVE_ELCR_MASK
            },
            priority_base: 0,
            vector_base: 0,
            read_isr: false,
            poll: false,
            special_mask: false,
            init: InitStep::Ready,
            expect_icw4: false,
            single: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            master,
        }
    }

    /// The IRR: latched edges of edge-triggered inputs, current levels of level-triggered ones.
    fn irr(&self) -> u8 {
        (self.latched & !self.elcr) | (self.lines & self.elcr)
    }

    /// The priority rank (0 highest) of the highest-priority IRQ set in `mask`.
    fn best_rank(&self, mask: u8) -> Option<u8> {
        (0..8).find(|rank| mask & (1 << ((rank + self.priority_base) & 7)) != 0)
    }

    fn irq_of_rank(&self, rank: u8) -> u8 {
        (rank + self.priority_base) & 7
    }

    /// The IRQ this controller would present on INTA now: the highest-priority unmasked
    /// request that outranks everything in service.
    fn highest_request(&self) -> Option<u8> {
        let rank = self.best_rank(self.irr() & !self.imr)?;
        let mut in_service = self.isr;
        if self.special_mask {
            // Special mask mode: a masked in-service IRQ no longer holds lower ones back.
            in_service &= !self.imr;
        }
        if self.special_fully_nested && self.master {
            // Special fully nested mode: the slave's in-service IRQ 2 lets further slave
            // requests through, so the slave can nest its own priorities.
            in_service &= !(1 << CASCADE_IRQ);
        }
        let blocking = self.best_rank(in_service).unwrap_or(8);
        (rank < blocking).then(|| self.irq_of_rank(rank))
    }

    fn set_line(&mut self, irq: u8, level: bool) {
        let bit = 1 << irq;
        if level && self.lines & bit == 0 {
            self.latched |= bit;
        }
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// The INTA cycle for `irq`.
    fn intack(&mut self, irq: u8) {
        let bit = 1 << irq;
        if !self.auto_eoi {
            self.isr |= bit;
        } else if self.rotate_on_auto_eoi {
            self.priority_base = (irq + 1) & 7;
        }
        if self.elcr & bit == 0 {
            self.latched &= !bit;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & ICW1 != 0 {
            self.start_init(value);
        } else if value & OCW3 != 0 {
            self.poll = value & 0x04 != 0;
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            self.ocw2(value);
        }
    }

    fn start_init(&mut self, icw1: u8) {
        // The edge detectors are reset: a line that is high now needs a new rising edge.
        self.latched = 0;
        self.imr = 0;
        self.isr = 0;
        self.priority_base = 0;
        self.read_isr = false;
        self.poll = false;
        self.special_mask = false;
        self.auto_eoi = false;
        self.rotate_on_auto_eoi = false;
        self.special_fully_nested = false;
        self.expect_icw4 = icw1 & ICW1_IC4 != 0;
        self.single = icw1 & ICW1_SINGLE != 0;
        self.init = InitStep::Icw2;
    }

    /// OCW2: EOIs and priority rotation; bits 7-5 select the command, bits 2-0 the IRQ.
    fn ocw2(&mut self, value: u8) {
        let irq = value & 7;
        match value >> 5 {
            0b000 => self.rotate_on_auto_eoi = false,
            0b100 => self.rotate_on_auto_eoi = true,
            command @ (0b001 | 0b101) => {
                // Non-specific EOI: the highest-priority IRQ in service ends.
                if let Some(rank) = self.best_rank(self.isr) {
                    let irq = self.irq_of_rank(rank);
                    self.isr &= !(1 << irq);
                    if command == 0b101 {
                        self.priority_base = (irq + 1) & 7;
                    }
                }
            }
            0b011 => self.isr &= !(1 << irq),
            0b110 => self.priority_base = (irq + 1) & 7,
            0b111 => {
                self.isr &= !(1 << irq);
                self.priority_base = (irq + 1) & 7;
            }
            _ => {}
        }
    }

    fn write_data(&mut self, value: u8) {
        self.init = match self.init {
            InitStep::Ready => {
                self.imr = value;
                InitStep::Ready
            }
            InitStep::Icw2 => {
                self.vector_base = value & 0xf8;
                match (self.single, self.expect_icw4) {
                    (false, _) => InitStep::Icw3,
                    (true, true) => InitStep::Icw4,
                    (true, false) => InitStep::Ready,
                }
            }
            InitStep::Icw3 if self.expect_icw4 => InitStep::Icw4,
            InitStep::Icw3 => InitStep::Ready,
            InitStep::Icw4 => {
                self.auto_eoi = value & ICW4_AEOI != 0;
                self.special_fully_nested = value & ICW4_SFNM != 0;
                InitStep::Ready
            }
        };
    }

    /// A read in poll mode: the poll command acknowledges the highest request, as INTA does,
    /// and returns it with bit 7 set, or 0 if there is none.
    fn poll_read(&mut self) -> u8 {
        self.poll = false;
        match self.highest_request() {
            Some(irq) => {
                self.intack(irq);
                0x80 | irq
            }
            None => 0,
        }
    }
}

/// The master/slave 8259A pair and the ELCR.
#[derive(Clone, Debug)]
pub struct Pic {
    master: Controller,
    slave: Controller,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// Both controllers in their power-up state: nothing masked, vector base 0, all inputs
    /// edge-triggered; the guest's initialisation sequence sets them up.
    pub fn new() -> Self {
        Self {
            master: Controller::new(true),
            slave: Controller::new(false),
        }
    }

    /// Drives ISA IRQ `irq` (0-15) to `level`. IRQ 2 is the cascade input, driven by the slave
    /// alone: a request for it from outside, like any IRQ above 15, is ignored.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 if irq != CASCADE_IRQ => self.master.set_line(irq, level),
            8..=15 => self.slave.set_line(irq - 8, level),
            _ => return,
        }
        self.cascade();
    }

    /// Whether the master's INT output (the CPU's INTR input) is asserted.
    pub fn output(&self) -> bool {
        self.master.highest_request().is_some()
    }

    /// The vector the next INTA cycle would return, if INTR is asserted.
    pub fn pending_vector(&self) -> Option<u8> {
        // The INTA cycle on a copy: the same logic, without its side effects.
        self.output().then(|| self.clone().acknowledge())
    }

    /// The INTA cycle: returns the vector of the highest-priority request and puts it in
    /// service; the spurious IRQ 7 (or 15) vector if there is none.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.highest_request() {
            Some(CASCADE_IRQ) => {
                let vector = match self.slave.highest_request() {
                    Some(irq) => {
                        self.slave.intack(irq);
                        self.slave.vector_base + irq
                    }
                    None => self.slave.vector_base + 7,
                };
                self.cascade();
                self.master.intack(CASCADE_IRQ);
                vector
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.vector_base + irq
            }
            None => self.master.vector_base + 7,
        };
        self.cascade();
        vector
    }

    /// A guest read of a PIC or ELCR port, at `offset` from [`PIC_MASTER_PORT`].
    pub fn read(&mut self, offset: u64) -> u8 {
        let value = match offset {
            offset::MASTER_COMMAND
            | offset::MASTER_DATA
            | offset::SLAVE_COMMAND
            | offset::SLAVE_DATA => {
                let controller = self.controller(offset);
                if controller.poll {
                    controller.poll_read()
                } else if offset & 1 != 0 {
                    controller.imr
                } else if controller.read_isr {
                    controller.isr
                } else {
                    controller.irr()
                }
            }
            offset::ELCR_MASTER => self.master.elcr,
            offset::ELCR_SLAVE => self.slave.elcr,
            _ => 0xff,
        };
        self.cascade();
        value
    }

    /// A guest write of a PIC or ELCR port, at `offset` from [`PIC_MASTER_PORT`].
    pub fn write(&mut self, offset: u64, value: u8) {
        match offset {
            offset::MASTER_COMMAND | offset::SLAVE_COMMAND => {
                self.controller(offset).write_command(value)
            }
            offset::MASTER_DATA | offset::SLAVE_DATA => self.controller(offset).write_data(value),
            offset::ELCR_MASTER => self.master.elcr = value & self.master.elcr_mask,
            offset::ELCR_SLAVE => self.slave.elcr = value & self.slave.elcr_mask,
            _ => {}
        }
        self.cascade();
    }

    fn controller(&mut self, offset: u64) -> &mut Controller {
        if offset < offset::SLAVE_COMMAND {
            &mut self.master
        } else {
            &mut self.slave
        }
    }

    /// Carries the slave's INT output to the master's IR2.
    fn cascade(&mut self) {
        let slave_out = self.slave.highest_request().is_some();
        self.master.set_line(CASCADE_IRQ, slave_out);
    }
}

#[cfg(test)]
mod tests {
    use super::offset::*;
    use super::*;

    /// Linux's `init_8259A`: mask everything, ICW1-4 on both controllers (vectors 0x30 and
    /// 0x38, normal EOI), then restore the masks.
    fn linux_init(pic: &mut Pic, auto_eoi: bool) {
        pic.write(MASTER_DATA, 0xff);
        pic.write(MASTER_COMMAND, 0x11);
        pic.write(MASTER_DATA, 0x30);
        pic.write(MASTER_DATA, 1 << 2);
        pic.write(MASTER_DATA, if auto_eoi { 0x03 } else { 0x01 });
        pic.write(SLAVE_COMMAND, 0x11);
        pic.write(SLAVE_DATA, 0x38);
        pic.write(SLAVE_DATA, 2);
        pic.write(SLAVE_DATA, 0x01);
        pic.write(MASTER_DATA, 0xfb);
        pic.write(SLAVE_DATA, 0xff);
    }

    /// Linux's `mask_and_ack_8259A`: specific EOI to the controller of `irq` (and to the
    /// master's IRQ 2 for a slave IRQ).
    fn linux_ack(pic: &mut Pic, irq: u8) {
        if irq >= 8 {
            pic.write(SLAVE_COMMAND, 0x60 + (irq & 7));
            pic.write(MASTER_COMMAND, 0x60 + CASCADE_IRQ);
        } else {
            pic.write(MASTER_COMMAND, 0x60 + irq);
        }
    }

    fn isr(pic: &mut Pic, command: u64) -> u8 {
        pic.write(command, 0x0b);
        let isr = pic.read(command);
        pic.write(command, 0x0a);
        isr
    }

    #[test]
    fn linux_probe_reads_back_the_mask() {
        let mut pic = Pic::new();
        pic.write(SLAVE_DATA, 0xff);
        pic.write(MASTER_DATA, !(1 << 2));
        assert_eq!(pic.read(MASTER_DATA), 0xfb);
        assert_eq!(pic.read(SLAVE_DATA), 0xff);
    }

    #[test]
    fn the_timer_irq_after_linux_init_is_delivered_and_ended() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(MASTER_DATA, 0xfa);
        pic.set_irq(0, true);
        assert!(pic.output());
        assert_eq!(pic.pending_vector(), Some(0x30));
        assert_eq!(pic.acknowledge(), 0x30);
        assert!(!pic.output());
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 0x01);
        // The line is still high: no new edge, no new request.
        pic.set_irq(0, true);
        linux_ack(&mut pic, 0);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 0);
        assert!(!pic.output());
        pic.set_irq(0, false);
        pic.set_irq(0, true);
        assert_eq!(pic.acknowledge(), 0x30);
    }

    #[test]
    fn priorities_nest_and_masks_hold_requests_back() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(MASTER_DATA, 0x00);
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), 0x34);
        // A lower-priority request waits for the EOI; a higher one preempts.
        pic.set_irq(6, true);
        assert!(!pic.output());
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x31);
        pic.write(MASTER_COMMAND, 0x20);
        assert!(!pic.output(), "IRQ 4 is still in service");
        pic.write(MASTER_COMMAND, 0x20);
        assert_eq!(pic.acknowledge(), 0x36);
        // A masked request stays in IRR without raising INTR.
        pic.write(MASTER_COMMAND, 0x20);
        pic.write(MASTER_DATA, 1 << 5);
        pic.set_irq(5, true);
        assert!(!pic.output());
        assert_eq!(pic.read(MASTER_COMMAND) & (1 << 5), 1 << 5);
        pic.write(MASTER_DATA, 0);
        assert_eq!(pic.acknowledge(), 0x35);
    }

    #[test]
    fn slave_irqs_go_through_the_cascade() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(SLAVE_DATA, 0x00);
        pic.set_irq(12, true);
        assert_eq!(pic.pending_vector(), Some(0x3c));
        assert_eq!(pic.acknowledge(), 0x3c);
        assert_eq!(isr(&mut pic, SLAVE_COMMAND), 1 << 4);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 1 << 2);
        linux_ack(&mut pic, 12);
        assert_eq!(isr(&mut pic, SLAVE_COMMAND), 0);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 0);
    }

    #[test]
    fn a_withdrawn_slave_request_is_the_spurious_irq_15() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(SLAVE_DATA, 0x00);
        pic.write(ELCR_SLAVE, 1 << 2);
        assert_eq!(pic.read(ELCR_SLAVE), 1 << 2);
        pic.set_irq(10, true);
        pic.set_irq(10, false);
        // The master latched the slave's rising output on IR2; the slave has nothing now.
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x3f);
        assert_eq!(
            isr(&mut pic, SLAVE_COMMAND),
            0,
            "no ISR bit for a spurious IRQ"
        );
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 1 << 2);
    }

    #[test]
    fn an_inta_without_a_request_is_the_spurious_irq_7() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        assert!(!pic.output());
        assert_eq!(pic.pending_vector(), None);
        assert_eq!(pic.acknowledge(), 0x37);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 0);
    }

    #[test]
    fn level_triggered_inputs_follow_the_line() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(SLAVE_DATA, 0x00);
        // IRQs 8 and 13 stay edge-triggered whatever is written.
        pic.write(ELCR_SLAVE, 0xff);
        assert_eq!(pic.read(ELCR_SLAVE), 0xde);
        pic.set_irq(11, true);
        assert_eq!(pic.acknowledge(), 0x3b);
        linux_ack(&mut pic, 11);
        // Still high after the EOI: requested again, no new edge needed.
        assert_eq!(pic.acknowledge(), 0x3b);
        // Serviced before its EOI, the line is low and nothing is left.
        pic.set_irq(11, false);
        linux_ack(&mut pic, 11);
        assert!(!pic.output());
    }

    #[test]
    fn icw1_needs_a_fresh_edge_for_a_line_held_high() {
        let mut pic = Pic::new();
        pic.set_irq(3, true);
        linux_init(&mut pic, false);
        pic.write(MASTER_DATA, 0);
        assert!(!pic.output());
        pic.set_irq(3, false);
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), 0x33);
    }

    #[test]
    fn auto_eoi_sets_no_isr_bit_and_can_rotate() {
        let mut pic = Pic::new();
        linux_init(&mut pic, true);
        pic.write(MASTER_DATA, 0);
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), 0x33);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 0);
        // Rotate in auto-EOI: IRQ 3 becomes the lowest priority once acknowledged.
        pic.write(MASTER_COMMAND, 0x80);
        pic.set_irq(3, false);
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), 0x33);
        pic.set_irq(3, false);
        pic.set_irq(3, true);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x35);
        assert_eq!(pic.acknowledge(), 0x33);
    }

    #[test]
    fn rotation_commands_move_the_lowest_priority() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(MASTER_DATA, 0);
        // Set priority: IRQ 4 lowest, so IRQ 5 is highest.
        pic.write(MASTER_COMMAND, 0xc4);
        pic.set_irq(1, true);
        pic.set_irq(6, true);
        assert_eq!(pic.acknowledge(), 0x36);
        // Rotate on non-specific EOI: IRQ 6 ends and becomes lowest; IRQ 7 highest.
        pic.write(MASTER_COMMAND, 0xa0);
        pic.set_irq(7, true);
        assert_eq!(pic.acknowledge(), 0x37);
        // Rotate on specific EOI of IRQ 7: IRQ 0 is highest again.
        pic.write(MASTER_COMMAND, 0xe7);
        pic.set_irq(0, true);
        assert_eq!(pic.acknowledge(), 0x30);
    }

    #[test]
    fn poll_mode_acknowledges_through_the_port() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(MASTER_DATA, 0);
        pic.set_irq(5, true);
        pic.write(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read(MASTER_COMMAND), 0x85);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 1 << 5);
        pic.write(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read(MASTER_DATA), 0);
    }

    #[test]
    fn special_mask_mode_lets_lower_priorities_past_a_masked_isr() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(MASTER_DATA, 0);
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x31);
        pic.set_irq(4, true);
        assert!(!pic.output());
        pic.write(MASTER_DATA, 1 << 1);
        pic.write(MASTER_COMMAND, 0x68);
        assert_eq!(pic.acknowledge(), 0x34);
        pic.write(MASTER_COMMAND, 0x48);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), (1 << 1) | (1 << 4));
    }
}
