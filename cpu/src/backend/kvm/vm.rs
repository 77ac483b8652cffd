//! A KVM virtual machine, with Umbra's memslots mirrored into it.
//!
//! Umbra's [`Memslots`] are the one description of guest physical memory; KVM gets a copy of
//! each change through `KVM_SET_USER_MEMORY_REGION`, made from the memslots' commit hook, so the
//! change reaches KVM before any reader of Umbra's slots can see it, and a change KVM refuses is
//! not made at all.

use std::sync::Arc;

use kvm_bindings::{
    CpuId, KVM_CAP_SET_GUEST_DEBUG2, KVM_GUESTDBG_BLOCKIRQ, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, VmFd};
use umbra_mmu::addr::PAGE_SIZE;
use umbra_mmu::memslot::{
    Memslot, MemslotError, MemslotFlags, MemslotObserver, Memslots, SlotChange, SlotId,
};

use super::vcpu::VcpuTraits;
use super::{KvmError, KvmFlavor, KvmVcpu};
use crate::backend::{BackendError, IoHandler, Vcpu, Vm};

/// Where KVM may put the three pages of the real-mode TSS that VMX without unrestricted guest
/// needs: below the 16 MiB of firmware flash under 4 GiB, where QEMU puts it too, outside any
/// memslot Umbra makes.
const TSS_ADDRESS: usize = 0xfeff_d000;

/// A KVM VM.
pub struct KvmVm {
    vm: Arc<VmFd>,
    flavor: KvmFlavor,
    cpuid: CpuId,
    memslots: Arc<Memslots>,
    vcpu_traits: VcpuTraits,
}

impl KvmVm {
    /// Wraps a fresh KVM VM of `flavor`, whose vCPUs get `cpuid`, mirrors `memslots` into it
    /// and keeps following them.
    pub(super) fn new(
        vm: VmFd,
        flavor: KvmFlavor,
        cpuid: CpuId,
        memslots: Arc<Memslots>,
    ) -> Result<Arc<Self>, BackendError> {
        if vm.check_extension(Cap::SetTssAddr) {
            vm.set_tss_address(TSS_ADDRESS)
                .map_err(KvmError::ioctl("KVM_SET_TSS_ADDR"))?;
        }
        let debug_flags = vm.check_extension_raw(KVM_CAP_SET_GUEST_DEBUG2.into());
        let vcpu_traits = VcpuTraits {
            maxphyaddr: cpuid_leaf(&cpuid, 0x8000_0008)
                .map_or(36, |eax_ebx_ecx_edx| eax_ebx_ecx_edx[0] as u8)
                .clamp(32, 52),
            gbpages: cpuid_leaf(&cpuid, 0x8000_0001).is_some_and(|regs| regs[3] & (1 << 26) != 0),
            breakpoints_by_stepping: flavor == KvmFlavor::Pvm,
            block_irq: debug_flags > 0 && debug_flags as u32 & KVM_GUESTDBG_BLOCKIRQ != 0,
        };
        let vm = Arc::new(vm);
        // The memslots show the mirror every slot they already have before any later change.
        memslots.set_observer(Box::new(MemslotMirror { vm: vm.clone() }))?;
        Ok(Arc::new(Self {
            vm,
            flavor,
            cpuid,
            memslots,
            vcpu_traits,
        }))
    }

    /// The memslots this VM runs on.
    pub fn memslots(&self) -> &Arc<Memslots> {
        &self.memslots
    }
}

impl Vm for KvmVm {
    fn create_vcpu(
        &self,
        index: u32,
        io: Arc<dyn IoHandler>,
    ) -> Result<Box<dyn Vcpu>, BackendError> {
        let fd = self
            .vm
            .create_vcpu(index.into())
            .map_err(KvmError::ioctl("KVM_CREATE_VCPU"))?;
        fd.set_cpuid2(&self.cpuid)
            .map_err(KvmError::ioctl("KVM_SET_CPUID2"))?;
        Ok(Box::new(KvmVcpu::new(
            fd,
            io,
            self.memslots.clone(),
            self.vcpu_traits,
        )?))
    }

    fn get_dirty_log(&self, id: SlotId) -> Result<Vec<u64>, BackendError> {
        let slot = self.memslots.get(id).ok_or(MemslotError::UnknownId(id))?;
        let size = (slot.npages() * PAGE_SIZE) as usize;
        let from_kvm = self
            .vm
            .get_dirty_log(id.0.into(), size)
            .map_err(KvmError::ioctl("KVM_GET_DIRTY_LOG"))?;
        // Pages written by Umbra itself (devices, a debugger) are logged in Umbra's own bitmap;
        // pages written by the guest, in KVM's. The log is the union of both.
        let from_umbra = self.memslots.get_dirty_log(id)?;
        Ok(from_kvm
            .iter()
            .zip(from_umbra.iter().chain(std::iter::repeat(&0)))
            .map(|(k, u)| k | u)
            .collect())
    }

    fn kernel_stats(&self) -> Result<Vec<(String, u64)>, BackendError> {
        super::stats::read(&*self.vm)
    }

    fn linux_parameters(&self) -> &'static [&'static str] {
        match self.flavor {
            KvmFlavor::Pvm => super::cpuid::PVM_LINUX_PARAMETERS,
            _ => &[],
        }
    }

    fn linux_limitation(&self) -> Option<&'static str> {
        // PVM's SYSCALL exit handler delivers a SYSCALL made in guest user mode as an event
        // to the entry a PVM guest kernel registers (MSR_PVM_EVENT_ENTRY); a stock kernel
        // has none, and resumes at LSTAR still in user mode, where fetching its own entry
        // code faults.
        (self.flavor == KvmFlavor::Pvm).then_some(
            "PVM hands a SYSCALL made in guest user mode to the event entry of a kernel built \
             to run under PVM, which this kernel is not: it boots, but its userspace dies at \
             its first system call (on hardware KVM it runs)",
        )
    }
}

/// EAX, EBX, ECX and EDX of CPUID leaf `function` (subleaf 0) in `cpuid`.
fn cpuid_leaf(cpuid: &CpuId, function: u32) -> Option<[u32; 4]> {
    cpuid
        .as_slice()
        .iter()
        .find(|entry| entry.function == function && entry.index == 0)
        .map(|entry| [entry.eax, entry.ebx, entry.ecx, entry.edx])
}

/// The commit hook that copies every memslot change into KVM.
struct MemslotMirror {
    vm: Arc<VmFd>,
}

impl MemslotMirror {
    /// Tells KVM about `slot` as it now is.
    fn set_region(&self, slot: &Memslot) -> Result<(), KvmError> {
        let mut flags = 0;
        if slot.flags().contains(MemslotFlags::READONLY) {
            flags |= KVM_MEM_READONLY;
        }
        if slot.flags().contains(MemslotFlags::LOG_DIRTY) {
            flags |= KVM_MEM_LOG_DIRTY_PAGES;
        }
        self.set_raw_region(kvm_userspace_memory_region {
            slot: slot.id().0.into(),
            flags,
            guest_phys_addr: slot.base_gfn().gpa().0,
            memory_size: slot.npages() * PAGE_SIZE,
            userspace_addr: slot.userspace_addr(),
        })
    }

    /// Removes `slot` from KVM (a region of size zero, as the API says).
    fn remove_region(&self, slot: &Memslot) -> Result<(), KvmError> {
        self.set_raw_region(kvm_userspace_memory_region {
            slot: slot.id().0.into(),
            ..Default::default()
        })
    }

    fn set_raw_region(&self, region: kvm_userspace_memory_region) -> Result<(), KvmError> {
        // SAFETY: a non-empty region's host range lies inside a memslot's host mapping. The slot
        // holds that mapping alive, and Umbra's memslots call this hook to remove the region
        // from KVM before they drop the slot; every vCPU of this VM holds the memslots alive, so
        // KVM never runs a guest over a host range that is no longer mapped.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(|source| KvmError::Ioctl {
            what: "KVM_SET_USER_MEMORY_REGION",
            source,
        })
    }
}

impl MemslotObserver for MemslotMirror {
    fn commit(&self, change: &SlotChange) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match change {
            SlotChange::Create(slot) => self.set_region(slot)?,
            SlotChange::Delete(slot) => self.remove_region(slot)?,
            // KVM moves a slot in place (KVM_MR_MOVE) when only its address changes.
            SlotChange::Move { new, .. } => self.set_region(new)?,
            // KVM refuses to flip READONLY on a live slot: remove it and add it anew.
            SlotChange::FlagsChanged { old, new }
                if (old.flags() ^ new.flags()).contains(MemslotFlags::READONLY) =>
            {
                self.remove_region(old)?;
                self.set_region(new)?;
            }
            SlotChange::FlagsChanged { new, .. } => self.set_region(new)?,
        }
        Ok(())
    }
}
