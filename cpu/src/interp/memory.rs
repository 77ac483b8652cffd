//! Guest memory as instructions see it: segmentation, then paging, then RAM or a device.
//!
//! An access is first *resolved*: its linear address checked against the segment and every
//! page it touches translated, so that a fault is raised before any byte moves. Only then are
//! the bytes read or written, page by page, in RAM through the memslots or, for addresses no
//! RAM slot holds (and writes to read-only slots), on the MMIO bus. A read-modify-write
//! instruction resolves its operand once, for writing, as the processor does: the page fault it
//! takes on a read-only page has W/R = 1.

use umbra_mmu::addr::{Gpa, Gva};
use umbra_mmu::tlb::Mapping;
use umbra_mmu::walker::{Access, AccessKind, Privilege};

use super::segmentation::SegReg;
use super::{Interpreter, StepEvent};
use crate::interp::exception::{Exception, vector};
use crate::state::RFLAGS_AC;

/// CR0.AM: alignment checking is allowed.
const CR0_AM: u64 = 1 << 18;

/// Where an access of at most 4 KiB lands: one or two translated runs of guest memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Location {
    first: Mapping,
    first_len: usize,
    /// The rest, when the access crosses into the next page.
    second: Option<Mapping>,
    len: usize,
}

impl Interpreter {
    /// The page-level view of an access of `kind` made by the current code.
    pub(crate) fn access(&self, kind: AccessKind) -> Access {
        let privilege = if self.cpl == 3 {
            Privilege::User
        } else {
            Privilege::Supervisor
        };
        Access::new(kind, privilege).with_eflags_ac(self.regs.rflags & RFLAGS_AC != 0)
    }

    /// Translates `linear` for `access`: through the TLB, the shadow pages, or a walk of the
    /// guest's page tables.
    pub(crate) fn translate(&mut self, linear: u64, access: Access) -> Result<Mapping, Exception> {
        self.mmu
            .translate(Gva(linear), access)
            .map_err(|fault| Exception::pf(fault.address.0, fault.error_code))
    }

    /// Reads bytes inside one translated page.
    fn read_mapped(&mut self, mapping: &Mapping, buf: &mut [u8]) {
        match mapping.host {
            // SAFETY: the mapping was translated during this instruction and `buf` stays
            // within its page (locations split at page boundaries).
            Some(host) => unsafe { self.mmu.read_host(host, buf) },
            None => self.read_physical(mapping.gpa, buf),
        }
    }

    /// Writes bytes inside one translated page; a store that cannot go straight to host
    /// memory goes through the memslots or the MMIO bus, and tells the MMU in case it wrote a
    /// guest page table.
    pub(crate) fn write_mapped(&mut self, mapping: &Mapping, data: &[u8]) {
        match mapping.host {
            // SAFETY: as in `read_mapped`, for a mapping translated for a write.
            Some(host) => unsafe { self.mmu.write_host(host, data) },
            None => {
                self.write_physical(mapping.gpa, data);
                self.mmu.after_slow_write(mapping);
            }
        }
    }

    /// Translates the `len` bytes at `linear` (at most a page) for `access`.
    fn resolve_linear(
        &mut self,
        linear: u64,
        len: usize,
        access: Access,
    ) -> Result<Location, Exception> {
        debug_assert!((1..=4096).contains(&len));
        if access.kind != AccessKind::Fetch {
            self.watch_access(linear, len, access.kind == AccessKind::Write);
        }
        let first_len = (0x1000 - (linear & 0xfff) as usize).min(len);
        let first = self.translate(linear, access)?;
        let second = if first_len < len {
            let next = self.wrap_linear(linear.wrapping_add(first_len as u64));
            Some(self.translate(next, access)?)
        } else {
            None
        };
        Ok(Location {
            first,
            first_len,
            second,
            len,
        })
    }

    /// A linear address past the end of the address space wraps, at 4 GiB outside IA-32e mode.
    fn wrap_linear(&self, linear: u64) -> u64 {
        if self.sregs.efer & (1 << 10) != 0 {
            linear
        } else {
            linear & 0xffff_ffff
        }
    }

    /// Resolves a data access of `len` bytes at `seg:offset`.
    pub(crate) fn resolve(
        &mut self,
        seg: SegReg,
        offset: u64,
        len: usize,
        write: bool,
    ) -> Result<Location, Exception> {
        let linear = self.linear(seg, offset, len as u64, write)?;
        self.check_alignment(linear, len)?;
        let kind = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        self.resolve_linear(linear, len, self.access(kind))
    }

    /// #AC(0) for a misaligned access at CPL 3 with CR0.AM and EFLAGS.AC set.
    fn check_alignment(&self, linear: u64, len: usize) -> Result<(), Exception> {
        let checking = self.cpl == 3
            && self.sregs.cr0 & CR0_AM != 0
            && self.regs.rflags & RFLAGS_AC != 0
            && len <= 8;
        if checking && linear & (len as u64 - 1) != 0 {
            return Err(Exception::with_code(vector::AC, 0));
        }
        Ok(())
    }

    /// Reads the bytes of a resolved location.
    pub(crate) fn read_location(&mut self, location: &Location, buf: &mut [u8]) {
        debug_assert_eq!(buf.len(), location.len);
        let (head, tail) = buf.split_at_mut(location.first_len);
        self.read_mapped(&location.first, head);
        if let Some(second) = location.second {
            self.read_mapped(&second, tail);
        }
    }

    /// Writes the bytes of a resolved location.
    pub(crate) fn write_location(&mut self, location: &Location, data: &[u8]) {
        debug_assert_eq!(data.len(), location.len);
        let (head, tail) = data.split_at(location.first_len);
        self.write_mapped(&location.first, head);
        if let Some(second) = location.second {
            self.write_mapped(&second, tail);
        }
    }

    /// Reads guest physical memory inside one page: RAM, or else the MMIO bus.
    pub(crate) fn read_physical(&mut self, gpa: Gpa, buf: &mut [u8]) {
        if self.memslots.read(gpa, buf).is_err() {
            self.io.mmio_read(gpa, buf);
            self.event = StepEvent::Io;
        }
    }

    /// Writes guest physical memory inside one page: RAM, or else (no RAM, or read-only RAM
    /// such as a ROM) the MMIO bus.
    pub(crate) fn write_physical(&mut self, gpa: Gpa, data: &[u8]) {
        if self.memslots.write(gpa, data).is_err() {
            self.io.mmio_write(gpa, data);
            self.event = StepEvent::Io;
        }
    }

    /// Reads a little-endian value of `len` (1 to 8) bytes at `seg:offset`.
    pub(crate) fn read_mem(
        &mut self,
        seg: SegReg,
        offset: u64,
        len: usize,
    ) -> Result<u64, Exception> {
        let location = self.resolve(seg, offset, len, false)?;
        Ok(self.read_value(&location))
    }

    /// Writes the low `len` (1 to 8) bytes of `value` at `seg:offset`.
    pub(crate) fn write_mem(
        &mut self,
        seg: SegReg,
        offset: u64,
        len: usize,
        value: u64,
    ) -> Result<(), Exception> {
        let location = self.resolve(seg, offset, len, true)?;
        self.write_value(&location, value);
        Ok(())
    }

    /// Reads the little-endian value (at most 8 bytes) of a resolved location.
    pub(crate) fn read_value(&mut self, location: &Location) -> u64 {
        let mut bytes = [0u8; 8];
        self.read_location(location, &mut bytes[..location.len]);
        u64::from_le_bytes(bytes)
    }

    /// Writes a little-endian value (at most 8 bytes) to a resolved location.
    pub(crate) fn write_value(&mut self, location: &Location, value: u64) {
        let bytes = value.to_le_bytes();
        self.write_location(location, &bytes[..location.len]);
    }

    /// Reads 8 bytes of a system structure (GDT, LDT, IDT, TSS) at `linear`: an implicit
    /// supervisor access, whatever the CPL.
    pub(crate) fn read_system_u64(&mut self, linear: u64) -> Result<u64, Exception> {
        let mut bytes = [0u8; 8];
        self.read_system(linear, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Reads bytes of a system structure at `linear`.
    pub(crate) fn read_system(&mut self, linear: u64, buf: &mut [u8]) -> Result<(), Exception> {
        let access = Access::new(AccessKind::Read, Privilege::ImplicitSupervisor);
        let location = self.resolve_linear(self.wrap_linear(linear), buf.len(), access)?;
        self.read_location(&location, buf);
        Ok(())
    }

    /// Writes bytes of a system structure at `linear` (a descriptor's accessed or busy bit).
    pub(crate) fn write_system(&mut self, linear: u64, data: &[u8]) -> Result<(), Exception> {
        let access = Access::new(AccessKind::Write, Privilege::ImplicitSupervisor);
        let location = self.resolve_linear(self.wrap_linear(linear), data.len(), access)?;
        self.write_location(&location, data);
        Ok(())
    }

    /// How many instruction bytes may be fetched at `rip`: at most 15, and not past the code
    /// segment's limit.
    pub(crate) fn fetch_window(&self, rip: u64) -> Result<usize, Exception> {
        const MAX: u64 = 15;
        if self.mode() == crate::state::CpuMode::Long {
            return Ok(MAX as usize);
        }
        let limit = u64::from(self.sregs.cs.limit);
        if rip > limit {
            return Err(Exception::gp(0));
        }
        Ok((limit - rip + 1).min(MAX) as usize)
    }

    /// The linear address of instruction byte `rip`.
    pub(crate) fn fetch_linear(&self, rip: u64) -> u64 {
        if self.mode() == crate::state::CpuMode::Long {
            rip
        } else {
            self.sregs.cs.base.wrapping_add(rip) & 0xffff_ffff
        }
    }

    /// Fetches instruction bytes at `rip` (inside one fetch window).
    pub(crate) fn fetch_bytes(&mut self, rip: u64, buf: &mut [u8]) -> Result<(), Exception> {
        let linear = self.fetch_linear(rip);
        if self.mode() == crate::state::CpuMode::Long && !self.canonical(linear) {
            return Err(Exception::gp(0));
        }
        let location = self.resolve_linear(linear, buf.len(), self.access(AccessKind::Fetch))?;
        self.read_location(&location, buf);
        Ok(())
    }
}
