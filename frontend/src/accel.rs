//! Choosing what runs the guest (`--accel`), and saying why.

use umbra_cpu::backend::Hypervisor;
use umbra_cpu::backend::kvm::{KvmError, KvmFlavor, KvmHypervisor};

use crate::cli::Accel;

/// The backend chosen, and the sentence that explains the choice to the user.
pub struct Choice {
    /// The backend.
    pub hypervisor: Box<dyn Hypervisor>,
    /// Why it was chosen, for one line on stderr.
    pub reason: String,
}

/// Why no backend could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    /// The emulator was asked for by name.
    #[error("the emulator backend (--accel emu) does not exist yet; use --accel kvm")]
    EmulatorMissing,
    /// KVM was needed and cannot be used.
    #[error(transparent)]
    Kvm(#[from] KvmError),
}

/// Picks the backend for `accel` on this host.
pub fn choose(accel: Accel) -> Result<Choice, AccelError> {
    match accel {
        Accel::Emu => Err(AccelError::EmulatorMissing),
        Accel::Kvm => Ok(Choice {
            hypervisor: Box::new(KvmHypervisor::new()?),
            reason: format!("kvm, as asked ({})", KvmFlavor::detect()),
        }),
        Accel::Auto => {
            let flavor = KvmFlavor::detect();
            let why = match flavor {
                KvmFlavor::Hardware {
                    two_dimensional_paging: true,
                    ..
                } => format!("kvm: this host has {flavor}"),
                _ => format!(
                    "kvm: this host has {flavor}; auto prefers the emulator here, \
                     but the emulator backend does not exist yet"
                ),
            };
            Ok(Choice {
                hypervisor: Box::new(KvmHypervisor::new()?),
                reason: why,
            })
        }
    }
}
