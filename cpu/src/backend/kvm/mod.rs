//! The KVM backend: guest code runs on the host CPU through `/dev/kvm`.
//!
//! Built on rust-vmm's `kvm-ioctls`, and kept to the documented KVM API so that it is correct
//! on hardware KVM with two-dimensional paging (EPT/NPT) as well as on hosts whose KVM is a
//! software backend such as PVM, where KVM runs all guest kernel code in its own instruction
//! emulator.

mod convert;
mod cpuid;
mod stats;
mod vcpu;
mod vm;

use std::path::Path;
use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm};
use umbra_mmu::memslot::Memslots;

pub use vcpu::KvmVcpu;
pub use vm::KvmVm;

use super::{BackendError, Hypervisor, Vm};

/// The path of the KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// Errors of the KVM backend.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` is not there.
    #[error("{KVM_DEVICE} does not exist: this host has no KVM (use --accel emu)")]
    NotFound,
    /// `/dev/kvm` is there but this user may not open it.
    #[error(
        "no permission to open {KVM_DEVICE} (add your user to the kvm group, or use --accel emu)"
    )]
    PermissionDenied,
    /// Opening `/dev/kvm` failed for another reason.
    #[error("cannot open {KVM_DEVICE}")]
    Open(#[source] kvm_ioctls::Error),
    /// The kernel speaks another KVM API version.
    #[error("{KVM_DEVICE} speaks KVM API version {0}; Umbra needs version 12")]
    ApiVersion(i32),
    /// The kernel lacks a capability Umbra needs.
    #[error("this host's KVM lacks {0}, which Umbra needs")]
    MissingCapability(&'static str),
    /// A KVM ioctl failed.
    #[error("KVM {what} failed")]
    Ioctl {
        /// The operation, as KVM's documentation names it.
        what: &'static str,
        /// The error the kernel returned.
        #[source]
        source: kvm_ioctls::Error,
    },
}

impl KvmError {
    /// A closure that wraps an ioctl error with the name of the operation.
    pub(crate) fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BackendError {
        move |source| KvmError::Ioctl { what, source }.into()
    }
}

/// How this host's KVM runs guests, as far as choosing a backend is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmFlavor {
    /// Hardware virtualization (Intel VMX or AMD SVM).
    Hardware {
        /// The vendor's name for it.
        technology: &'static str,
        /// Whether guest paging runs in hardware (EPT or NPT) rather than in KVM's shadow MMU.
        two_dimensional_paging: bool,
    },
    /// PVM, KVM's software backend for hosts without VMX/SVM: guest user code runs natively,
    /// but all guest kernel and real-mode code runs in KVM's instruction emulator.
    Pvm,
    /// A KVM module Umbra does not recognize.
    Unknown,
}

impl KvmFlavor {
    /// Reads the flavor from the loaded kernel modules' parameters in sysfs.
    pub fn detect() -> KvmFlavor {
        Self::detect_in(Path::new("/sys/module"))
    }

    fn detect_in(modules: &Path) -> KvmFlavor {
        let parameter = |module: &str, name: &str| {
            std::fs::read_to_string(modules.join(module).join("parameters").join(name))
                .map(|value| matches!(value.trim(), "Y" | "y" | "1"))
        };
        if modules.join("kvm_pvm").exists() {
            KvmFlavor::Pvm
        } else if let Ok(ept) = parameter("kvm_intel", "ept") {
            KvmFlavor::Hardware {
                technology: "Intel VMX",
                two_dimensional_paging: ept,
            }
        } else if let Ok(npt) = parameter("kvm_amd", "npt") {
            KvmFlavor::Hardware {
                technology: "AMD SVM",
                two_dimensional_paging: npt,
            }
        } else {
            KvmFlavor::Unknown
        }
    }
}

impl std::fmt::Display for KvmFlavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvmFlavor::Hardware {
                technology,
                two_dimensional_paging: true,
            } => write!(f, "hardware KVM ({technology} with two-dimensional paging)"),
            KvmFlavor::Hardware { technology, .. } => {
                write!(f, "hardware KVM ({technology}, shadow paging only)")
            }
            KvmFlavor::Pvm => f.write_str(
                "PVM, KVM's software backend (guest kernel code runs in KVM's instruction emulator)",
            ),
            KvmFlavor::Unknown => f.write_str("an unrecognized KVM module"),
        }
    }
}

/// The capabilities Umbra relies on, with the names KVM's documentation gives them.
const REQUIRED_CAPABILITIES: [(Cap, &str); 4] = [
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::ReadonlyMem, "KVM_CAP_READONLY_MEM"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
];

/// An open `/dev/kvm`.
pub struct KvmHypervisor {
    kvm: Kvm,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm` and checks that it offers what Umbra needs.
    pub fn new() -> Result<Self, KvmError> {
        let kvm = Kvm::new().map_err(|e| match e.errno() {
            libc::ENOENT | libc::ENXIO | libc::ENODEV => KvmError::NotFound,
            libc::EACCES | libc::EPERM => KvmError::PermissionDenied,
            _ => KvmError::Open(e),
        })?;
        let version = kvm.get_api_version();
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(KvmError::ApiVersion(version));
        }
        for (cap, name) in REQUIRED_CAPABILITIES {
            if !kvm.check_extension(cap) {
                return Err(KvmError::MissingCapability(name));
            }
        }
        Ok(Self { kvm })
    }
}

impl Hypervisor for KvmHypervisor {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn create_vm(&self, memslots: Arc<Memslots>) -> Result<Arc<dyn Vm>, BackendError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        let flavor = KvmFlavor::detect();
        let vm = self
            .kvm
            .create_vm()
            .map_err(KvmError::ioctl("KVM_CREATE_VM"))?;
        Ok(KvmVm::new(
            vm,
            flavor,
            cpuid::guest_cpuid(cpuid, flavor),
            memslots,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(modules: &[(&str, &str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (module, parameter, value) in modules {
            let params = dir.path().join(module).join("parameters");
            std::fs::create_dir_all(&params).unwrap();
            std::fs::write(params.join(parameter), value).unwrap();
        }
        dir
    }

    #[test]
    fn flavor_follows_the_loaded_module() {
        let pvm = fake_sysfs(&[("kvm_pvm", "verbose", "N")]);
        assert_eq!(KvmFlavor::detect_in(pvm.path()), KvmFlavor::Pvm);
        let ept = fake_sysfs(&[("kvm_intel", "ept", "Y\n")]);
        assert_eq!(
            KvmFlavor::detect_in(ept.path()),
            KvmFlavor::Hardware {
                technology: "Intel VMX",
                two_dimensional_paging: true
            }
        );
        let no_npt = fake_sysfs(&[("kvm_amd", "npt", "0\n")]);
        assert_eq!(
            KvmFlavor::detect_in(no_npt.path()),
            KvmFlavor::Hardware {
                technology: "AMD SVM",
                two_dimensional_paging: false
            }
        );
        let none = fake_sysfs(&[]);
        assert_eq!(KvmFlavor::detect_in(none.path()), KvmFlavor::Unknown);
    }
}
