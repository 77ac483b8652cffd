//! Differential testing of the interpreter against KVM: random instruction sequences in
//! 64-bit, compatibility and 16-bit protected mode, and the built-in demo firmware, must
//! leave the same state on both backends. Skipped (with a message) where /dev/kvm is not
//! usable.

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use umbra::machine::{Machine, MachineConfig};
use umbra_cpu::backend::Hypervisor;
use umbra_cpu::backend::emu::EmuHypervisor;
use umbra_cpu::backend::kvm::KvmHypervisor;
use umbra_tests::differential::campaign::Campaign;
use umbra_tests::differential::layout::Mode;

/// Sequences per mode: about ten seconds in a release build.
const SEQUENCES_PER_MODE: u64 = 10_000;
/// The fixed first seed.
const SEED: u64 = 0x5eed;

#[test]
fn random_sequences_agree_with_kvm() {
    let Ok(kvm) = KvmHypervisor::new() else {
        eprintln!("skipped random_sequences_agree_with_kvm: /dev/kvm is not usable");
        return;
    };
    let mut campaign = Campaign::new(&kvm).expect("test machines");
    let mut first_report = None;
    for n in 0..SEQUENCES_PER_MODE {
        for mode in Mode::ALL {
            let report = campaign.run(mode, SEED + n).expect("a run");
            first_report = first_report.or(report);
        }
    }
    println!("{}", campaign.stats);
    if let Some(report) = first_report {
        panic!(
            "{} divergences; the first:\n{report}",
            campaign.stats.divergences
        );
    }
}

#[test]
fn the_jit_agrees_with_the_interpreter_on_random_sequences() {
    // No KVM needed: the "KVM" side of the campaign is the emulator, and is not run.
    let mut campaign = Campaign::new(&EmuHypervisor).expect("test machines");
    let mut reports = Vec::new();
    for n in 0..SEQUENCES_PER_MODE {
        for mode in Mode::ALL {
            if let Some(report) = campaign.run_jit(mode, SEED + n).expect("a run") {
                reports.push(report);
            }
        }
    }
    for report in reports.iter().skip(1).take(4) {
        eprintln!("{report}");
    }
    if let Some(first) = reports.first() {
        panic!("{} divergences; the first:\n{first}", reports.len());
    }
}

/// Serial output shared with the test.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the demo firmware on `hypervisor`: how it ended, its serial output, its registers.
fn run_demo(hypervisor: &dyn Hypervisor) -> (String, String, umbra_cpu::state::Registers) {
    let serial = Capture::default();
    let config = MachineConfig {
        memory: "128M".parse().unwrap(),
        rom: umbra_firmware::find("demo").unwrap().rom,
        serial: Box::new(serial.clone()),
    };
    let mut machine = Machine::new(hypervisor, config).unwrap();
    let outcome = machine.run().unwrap();
    let registers = machine.vcpu().registers().unwrap();
    let output = String::from_utf8_lossy(&serial.0.lock()).into_owned();
    (outcome.end.to_string(), output, registers)
}

#[test]
fn demo_firmware_agrees_on_both_backends() {
    let Ok(kvm) = KvmHypervisor::new() else {
        eprintln!("skipped demo_firmware_agrees_on_both_backends: /dev/kvm is not usable");
        return;
    };
    let (kvm_end, kvm_output, kvm_registers) = run_demo(&kvm);
    let (emu_end, emu_output, emu_registers) = run_demo(&EmuHypervisor);
    assert_eq!(kvm_end, "isa-debug-exit, status 0");
    assert_eq!(emu_end, kvm_end);
    assert!(kvm_output.contains("all 8 checks passed"), "{kvm_output}");
    assert_eq!(emu_output, kvm_output);
    assert_eq!(emu_registers, kvm_registers);
}
