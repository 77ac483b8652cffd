//! Segmentation: segment registers, descriptors, and the offset-to-linear translation with its
//! limit and type checks (SDM Vol. 3A, chapters 3 and 5).

use iced_x86::Register;

use super::Interpreter;
use super::exception::Exception;
use crate::state::{CpuMode, RFLAGS_VM, Segment};

/// A segment register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegReg {
    /// ES.
    Es,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
}

impl SegReg {
    /// The segment register iced-x86 names, if `register` is one.
    pub fn from_register(register: Register) -> Option<SegReg> {
        Some(match register {
            Register::ES => SegReg::Es,
            Register::CS => SegReg::Cs,
            Register::SS => SegReg::Ss,
            Register::DS => SegReg::Ds,
            Register::FS => SegReg::Fs,
            Register::GS => SegReg::Gs,
            _ => return None,
        })
    }

    /// The exception a limit or type violation through this segment raises: #SS for the stack,
    /// #GP otherwise (error code 0).
    fn violation(self) -> Exception {
        match self {
            SegReg::Ss => Exception::ss(0),
            _ => Exception::gp(0),
        }
    }
}

/// Type-field bits of a code or data descriptor.
mod kind {
    /// Code (1) or data (0).
    pub const CODE: u8 = 0x8;
    /// Data: expand-down. Code: conforming.
    pub const EXPAND_DOWN_OR_CONFORMING: u8 = 0x4;
    /// Data: writable. Code: readable.
    pub const WRITABLE_OR_READABLE: u8 = 0x2;
    /// Accessed.
    pub const ACCESSED: u8 = 0x1;
}

/// A segment descriptor as it sits in the GDT or LDT (the low 8 bytes; system descriptors in
/// IA-32e mode have 8 more, read separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor(pub u64);

impl Descriptor {
    /// The descriptor's base address (bits 31:0).
    pub fn base(self) -> u64 {
        let d = self.0;
        ((d >> 16) & 0xff_ffff) | ((d >> 32) & 0xff00_0000)
    }

    /// The limit in bytes, scaled by the granularity bit.
    pub fn limit(self) -> u32 {
        let d = self.0;
        let raw = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
        if self.g() { (raw << 12) | 0xfff } else { raw }
    }

    /// The type field.
    pub fn type_(self) -> u8 {
        ((self.0 >> 40) & 0xf) as u8
    }

    /// S: a code or data segment.
    pub fn s(self) -> bool {
        self.0 & (1 << 44) != 0
    }

    /// The descriptor privilege level.
    pub fn dpl(self) -> u8 {
        ((self.0 >> 45) & 3) as u8
    }

    /// P: present.
    pub fn present(self) -> bool {
        self.0 & (1 << 47) != 0
    }

    /// G: 4 KiB granularity.
    pub fn g(self) -> bool {
        self.0 & (1 << 55) != 0
    }

    /// A code segment.
    pub fn is_code(self) -> bool {
        self.s() && self.type_() & kind::CODE != 0
    }

    /// A conforming code segment.
    pub fn is_conforming(self) -> bool {
        self.is_code() && self.type_() & kind::EXPAND_DOWN_OR_CONFORMING != 0
    }

    /// A writable data segment.
    pub fn is_writable_data(self) -> bool {
        self.s()
            && self.type_() & (kind::CODE | kind::WRITABLE_OR_READABLE)
                == kind::WRITABLE_OR_READABLE
    }

    /// A data segment or a readable code segment.
    pub fn is_readable(self) -> bool {
        self.s()
            && (self.type_() & kind::CODE == 0 || self.type_() & kind::WRITABLE_OR_READABLE != 0)
    }

    /// The same descriptor with the accessed bit set.
    pub fn accessed(self) -> Descriptor {
        Descriptor(self.0 | (u64::from(kind::ACCESSED) << 40))
    }

    /// The segment register contents this descriptor loads with `selector`.
    pub fn to_segment(self, selector: u16) -> Segment {
        let d = self.0;
        Segment {
            selector,
            base: self.base(),
            limit: self.limit(),
            type_: self.type_(),
            s: self.s(),
            dpl: self.dpl(),
            present: self.present(),
            avl: d & (1 << 52) != 0,
            l: d & (1 << 53) != 0,
            db: d & (1 << 54) != 0,
            g: self.g(),
            unusable: false,
        }
    }
}

/// The error code of a fault about `selector`: its index, TI and (with EXT = 0) nothing else.
pub fn selector_error(selector: u16) -> u32 {
    u32::from(selector & 0xfffc)
}

impl Interpreter {
    /// The segment register `seg`.
    pub(crate) fn segment(&self, seg: SegReg) -> &Segment {
        let s = &self.sregs;
        match seg {
            SegReg::Es => &s.es,
            SegReg::Cs => &s.cs,
            SegReg::Ss => &s.ss,
            SegReg::Ds => &s.ds,
            SegReg::Fs => &s.fs,
            SegReg::Gs => &s.gs,
        }
    }

    /// The segment register `seg`, for writing.
    pub(crate) fn segment_mut(&mut self, seg: SegReg) -> &mut Segment {
        let s = &mut self.sregs;
        match seg {
            SegReg::Es => &mut s.es,
            SegReg::Cs => &mut s.cs,
            SegReg::Ss => &mut s.ss,
            SegReg::Ds => &mut s.ds,
            SegReg::Fs => &mut s.fs,
            SegReg::Gs => &mut s.gs,
        }
    }

    /// Whether the CPU is in virtual-8086 mode.
    pub(crate) fn v86(&self) -> bool {
        self.regs.rflags & RFLAGS_VM != 0 && self.mode() == CpuMode::Protected
    }

    /// The linear address of `size` bytes at `offset` in `seg`, after the checks the SDM makes
    /// for a read (`write` false) or write: canonical form in 64-bit mode, the segment's
    /// usability, type and limit elsewhere.
    pub(crate) fn linear(
        &self,
        seg: SegReg,
        offset: u64,
        size: u64,
        write: bool,
    ) -> Result<u64, Exception> {
        let segment = self.segment(seg);
        if self.mode() == CpuMode::Long {
            let base = match seg {
                SegReg::Fs | SegReg::Gs => segment.base,
                _ => 0,
            };
            let linear = base.wrapping_add(offset);
            let last = linear.wrapping_add(size - 1);
            if !self.canonical(linear) || !self.canonical(last) {
                return Err(seg.violation());
            }
            return Ok(linear);
        }
        if self.mode() != CpuMode::Real && !self.v86() {
            if segment.unusable || !segment.present {
                return Err(seg.violation());
            }
            let code = segment.type_ & kind::CODE != 0;
            let rw = segment.type_ & kind::WRITABLE_OR_READABLE != 0;
            // Code segments are never writable through a data access; read-only data cannot
            // be written; execute-only code cannot be read (except by fetching it).
            let forbidden = if write {
                code || !rw
            } else {
                code && !rw && seg != SegReg::Cs
            };
            if forbidden {
                return Err(seg.violation());
            }
        }
        let last = offset.wrapping_add(size - 1);
        let expand_down = segment.type_ & (kind::CODE | kind::EXPAND_DOWN_OR_CONFORMING)
            == kind::EXPAND_DOWN_OR_CONFORMING
            && segment.s;
        let within = if expand_down {
            let upper = if segment.db { 0xffff_ffff } else { 0xffff };
            offset > u64::from(segment.limit) && last <= upper && last >= offset
        } else {
            last <= u64::from(segment.limit) && last >= offset
        };
        if !within {
            return Err(seg.violation());
        }
        Ok(segment.base.wrapping_add(offset) & 0xffff_ffff)
    }

    /// Reads the descriptor `selector` names from the GDT or LDT; #GP(selector) if it lies
    /// beyond the table's limit.
    pub(crate) fn read_descriptor(&mut self, selector: u16) -> Result<Descriptor, Exception> {
        let (base, limit) = self.descriptor_table(selector)?;
        let offset = u64::from(selector & 0xfff8);
        if offset + 7 > limit {
            return Err(Exception::gp(selector_error(selector)));
        }
        Ok(Descriptor(self.read_system_u64(base + offset)?))
    }

    /// The base and limit of the table `selector` indexes (TI = 1: the LDT).
    fn descriptor_table(&self, selector: u16) -> Result<(u64, u64), Exception> {
        if selector & 4 == 0 {
            Ok((self.sregs.gdt.base, u64::from(self.sregs.gdt.limit)))
        } else if self.sregs.ldtr.unusable || !self.sregs.ldtr.present {
            Err(Exception::gp(selector_error(selector)))
        } else {
            Ok((self.sregs.ldtr.base, u64::from(self.sregs.ldtr.limit)))
        }
    }

    /// Sets the accessed bit of the descriptor `selector` names, as loading it does.
    pub(crate) fn mark_descriptor_accessed(
        &mut self,
        selector: u16,
        descriptor: Descriptor,
    ) -> Result<(), Exception> {
        if descriptor.type_() & kind::ACCESSED != 0 {
            return Ok(());
        }
        let (base, _) = self.descriptor_table(selector)?;
        let address = base + u64::from(selector & 0xfff8) + 5;
        let byte = (descriptor.accessed().0 >> 40) as u8;
        self.write_system(address, &[byte])
    }

    /// Loads data segment register `seg` (DS, ES, FS, GS or SS) with `selector`, as MOV, POP
    /// and LDS-family instructions do, with the protected-mode checks of the SDM.
    pub(crate) fn load_segment(&mut self, seg: SegReg, selector: u16) -> Result<(), Exception> {
        debug_assert_ne!(seg, SegReg::Cs);
        if self.mode() == CpuMode::Real || self.v86() {
            let v86 = self.v86();
            let segment = self.segment_mut(seg);
            segment.selector = selector;
            segment.base = u64::from(selector) << 4;
            if v86 {
                *segment = Segment {
                    selector,
                    base: u64::from(selector) << 4,
                    limit: 0xffff,
                    type_: 0x3,
                    s: true,
                    dpl: 3,
                    present: true,
                    ..Segment::default()
                };
            }
            return Ok(());
        }
        let rpl = (selector & 3) as u8;
        if selector & 0xfffc == 0 {
            // A null selector: SS may hold one only in 64-bit mode below CPL 3.
            let long = self.mode() == CpuMode::Long;
            if seg == SegReg::Ss && (!long || self.cpl == 3 || rpl != self.cpl) {
                return Err(Exception::gp(0));
            }
            let segment = self.segment_mut(seg);
            *segment = Segment {
                selector,
                unusable: true,
                dpl: rpl,
                ..Segment::default()
            };
            return Ok(());
        }
        let descriptor = self.read_descriptor(selector)?;
        let error = selector_error(selector);
        if seg == SegReg::Ss {
            if rpl != self.cpl || descriptor.dpl() != self.cpl || !descriptor.is_writable_data() {
                return Err(Exception::gp(error));
            }
            if !descriptor.present() {
                return Err(Exception::ss(error));
            }
        } else {
            if !descriptor.is_readable() {
                return Err(Exception::gp(error));
            }
            let privileged = !descriptor.is_conforming();
            if privileged && (rpl > descriptor.dpl() || self.cpl > descriptor.dpl()) {
                return Err(Exception::gp(error));
            }
            if !descriptor.present() {
                return Err(Exception::np(error));
            }
        }
        self.mark_descriptor_accessed(selector, descriptor)?;
        *self.segment_mut(seg) = descriptor.accessed().to_segment(selector);
        Ok(())
    }

    /// Loads CS for a far transfer to a code segment at `cpl`, without checks (the caller made
    /// them), and updates the CPL.
    pub(crate) fn set_code_segment(&mut self, selector: u16, descriptor: Descriptor, cpl: u8) {
        let mut cs = descriptor.accessed().to_segment(selector);
        cs.selector = (selector & !3) | u16::from(cpl);
        self.sregs.cs = cs;
        self.cpl = cpl;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_decode_as_the_sdm_lays_them_out() {
        // A flat 32-bit code segment: base 0, limit 0xfffff pages, type 0xa, DPL 0, P, D, G.
        let code32 = Descriptor(0x00cf_9a00_0000_ffff);
        assert_eq!(code32.base(), 0);
        assert_eq!(code32.limit(), 0xffff_ffff);
        assert_eq!(code32.type_(), 0xa);
        assert!(code32.is_code() && code32.present() && code32.is_readable());
        assert!(!code32.is_writable_data());
        let segment = code32.to_segment(0x8);
        assert!(segment.db && segment.g && !segment.l);
        // A 64-bit code segment at DPL 3.
        let code64 = Descriptor(0x00af_fa00_0000_ffff);
        assert!(code64.to_segment(0x33).l);
        assert_eq!(code64.dpl(), 3);
        // A byte-granular data segment with base 0x12345678 and limit 0x1234.
        let data = Descriptor(0x1200_9234_5678_1234);
        assert_eq!(data.base(), 0x1234_5678);
        assert_eq!(data.limit(), 0x1234);
        assert!(data.is_writable_data() && data.is_readable());
        assert_eq!(data.accessed().type_(), 0x3);
    }
}
