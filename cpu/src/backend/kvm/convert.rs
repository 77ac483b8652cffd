//! Conversions between KVM's register structures and Umbra's [`crate::state`].

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};

use crate::state::{DescriptorTable, Registers, Segment, SystemRegisters};

impl From<&kvm_regs> for Registers {
    fn from(r: &kvm_regs) -> Self {
        Registers {
            gpr: [
                r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15,
            ],
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

impl From<&Registers> for kvm_regs {
    fn from(r: &Registers) -> Self {
        let [
            rax,
            rcx,
            rdx,
            rbx,
            rsp,
            rbp,
            rsi,
            rdi,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        ] = r.gpr;
        kvm_regs {
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rsp,
            rbp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

impl From<&kvm_segment> for Segment {
    fn from(s: &kvm_segment) -> Self {
        Segment {
            selector: s.selector,
            base: s.base,
            limit: s.limit,
            type_: s.type_,
            s: s.s != 0,
            dpl: s.dpl,
            present: s.present != 0,
            avl: s.avl != 0,
            l: s.l != 0,
            db: s.db != 0,
            g: s.g != 0,
            unusable: s.unusable != 0,
        }
    }
}

impl From<&Segment> for kvm_segment {
    fn from(s: &Segment) -> Self {
        kvm_segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present.into(),
            dpl: s.dpl,
            db: s.db.into(),
            s: s.s.into(),
            l: s.l.into(),
            g: s.g.into(),
            avl: s.avl.into(),
            unusable: s.unusable.into(),
            padding: 0,
        }
    }
}

impl From<&kvm_dtable> for DescriptorTable {
    fn from(t: &kvm_dtable) -> Self {
        DescriptorTable {
            base: t.base,
            limit: t.limit,
        }
    }
}

impl From<&DescriptorTable> for kvm_dtable {
    fn from(t: &DescriptorTable) -> Self {
        kvm_dtable {
            base: t.base,
            limit: t.limit,
            padding: [0; 3],
        }
    }
}

impl From<&kvm_sregs> for SystemRegisters {
    fn from(s: &kvm_sregs) -> Self {
        SystemRegisters {
            cs: (&s.cs).into(),
            ds: (&s.ds).into(),
            es: (&s.es).into(),
            fs: (&s.fs).into(),
            gs: (&s.gs).into(),
            ss: (&s.ss).into(),
            tr: (&s.tr).into(),
            ldtr: (&s.ldt).into(),
            gdt: (&s.gdt).into(),
            idt: (&s.idt).into(),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.apic_base,
        }
    }
}

/// Writes `from` into `to`, keeping the fields of `to` that Umbra's state does not carry
/// (KVM's pending-interrupt bitmap).
pub(super) fn apply_system_registers(from: &SystemRegisters, to: &mut kvm_sregs) {
    to.cs = (&from.cs).into();
    to.ds = (&from.ds).into();
    to.es = (&from.es).into();
    to.fs = (&from.fs).into();
    to.gs = (&from.gs).into();
    to.ss = (&from.ss).into();
    to.tr = (&from.tr).into();
    to.ldt = (&from.ldtr).into();
    to.gdt = (&from.gdt).into();
    to.idt = (&from.idt).into();
    to.cr0 = from.cr0;
    to.cr2 = from.cr2;
    to.cr3 = from.cr3;
    to.cr4 = from.cr4;
    to.cr8 = from.cr8;
    to.efer = from.efer;
    to.apic_base = from.apic_base;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_survive_a_round_trip_through_kvm() {
        let regs = Registers {
            gpr: std::array::from_fn(|i| 0x1000 + i as u64),
            rip: 0xfff0,
            rflags: 0x202,
        };
        let kvm: kvm_regs = (&regs).into();
        assert_eq!(kvm.rcx, 0x1001);
        assert_eq!(kvm.rsp, 0x1004);
        assert_eq!(kvm.r15, 0x100f);
        assert_eq!(Registers::from(&kvm), regs);
    }

    #[test]
    fn segments_survive_a_round_trip_through_kvm() {
        let cs = Segment {
            selector: 0x8,
            base: 0,
            limit: 0xffff_ffff,
            type_: 0xb,
            s: true,
            present: true,
            l: true,
            g: true,
            ..Segment::default()
        };
        let kvm: kvm_segment = (&cs).into();
        assert_eq!(Segment::from(&kvm), cs);
    }
}
