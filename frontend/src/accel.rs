//! Choosing what runs the guest (`--accel`), and saying why.

use umbra_cpu::backend::Hypervisor;
use umbra_cpu::backend::emu::EmuOptions;
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
    /// KVM was asked for and cannot be used.
    #[error(transparent)]
    Kvm(#[from] KvmError),
}

/// Picks the backend for `accel` on this host.
///
/// `auto` takes KVM only where it runs guests in hardware with two-dimensional paging; on a
/// host without it, or whose KVM is a software backend such as PVM (which runs every guest
/// kernel instruction in KVM's own emulator), Umbra's emulator is the faster choice.
pub fn choose(accel: Accel, emu_options: EmuOptions) -> Result<Choice, AccelError> {
    let emu = |reason: String| Choice {
        hypervisor: Box::new(emu_options),
        reason,
    };
    match accel {
        Accel::Emu => Ok(emu("emu, as asked".to_owned())),
        Accel::Kvm => Ok(Choice {
            hypervisor: Box::new(KvmHypervisor::new()?),
            reason: format!("kvm, as asked ({})", KvmFlavor::detect()),
        }),
        Accel::Auto => {
            if !std::path::Path::new(umbra_cpu::backend::kvm::KVM_DEVICE).exists() {
                return Ok(emu("emu: this host has no KVM".to_owned()));
            }
            let flavor = KvmFlavor::detect();
            match (flavor, KvmHypervisor::new()) {
                (
                    KvmFlavor::Hardware {
                        two_dimensional_paging: true,
                        ..
                    },
                    Ok(kvm),
                ) => Ok(Choice {
                    hypervisor: Box::new(kvm),
                    reason: format!("kvm: this host has {flavor}"),
                }),
                (_, Err(e)) => Ok(emu(format!("emu: KVM cannot be used here ({e})"))),
                _ => Ok(emu(format!("emu: this host has {flavor}"))),
            }
        }
    }
}
