//! `umbra`: boot a guest on KVM or Umbra's emulator.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use umbra::accel;
use umbra::cli::{self, Cli, Command, FirmwareCommand, MmuMode, RunArgs, SerialTarget, Switch};
use umbra::console::{Console, ConsoleLink};
use umbra::gdb::target::MachineView;
use umbra::machine::{LinuxOnBackend, Machine, MachineConfig, MachineError, RunOutcome};
use umbra::report::{EXIT_BAD_INPUT, EXIT_GUEST_FAILURE, exit_status, summary_line};
use umbra::rom::RomImage;
use umbra_cpu::backend::Vcpu;
use umbra_cpu::backend::emu::EmuOptions;

/// An error and the exit status it gives.
struct Failure {
    error: anyhow::Error,
    status: u8,
}

impl Failure {
    fn bad_input(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            error: error.into(),
            status: EXIT_BAD_INPUT,
        }
    }

    fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            error: error.into(),
            status: EXIT_GUEST_FAILURE,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(cli::qemu_spellings(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(EXIT_BAD_INPUT);
        }
        Err(e) => {
            // clap's message is its first paragraph (a list, such as the missing arguments,
            // continues it on indented lines); the usage and tips after it are left out.
            let rendered = e.to_string();
            let paragraph: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = paragraph.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("umbra: {message} (see 'umbra --help')");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Firmware(FirmwareCommand::List) => Ok(list_firmware()),
        Command::Firmware(FirmwareCommand::Dump { name, file }) => dump_firmware(&name, &file),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(failure) => {
            eprintln!("umbra: {:#}", failure.error);
            ExitCode::from(failure.status)
        }
    }
}

fn list_firmware() -> u8 {
    let images = umbra_firmware::builtin();
    let width = images
        .iter()
        .map(|image| image.name.len())
        .max()
        .unwrap_or(0);
    for image in images {
        println!("{:<width$}  {}", image.name, image.summary);
    }
    0
}

fn dump_firmware(name: &str, file: &Path) -> Result<u8, Failure> {
    let image = umbra_firmware::find(name)
        .with_context(|| {
            format!("no built-in firmware named '{name}' (umbra firmware list shows them)")
        })
        .map_err(Failure::bad_input)?;
    std::fs::write(file, image.rom)
        .with_context(|| format!("cannot write {}", file.display()))
        .map_err(Failure::bad_input)?;
    Ok(0)
}

fn run(args: RunArgs) -> Result<u8, Failure> {
    let kernel = args.kernel_boot();
    // A kernel boots without firmware: the loader sets the vCPU at its entry.
    let rom = match kernel {
        Some(_) => None,
        None => Some(RomImage::resolve(&args.firmware).map_err(Failure::bad_input)?),
    };
    let serial: Box<dyn Write + Send> = match &args.serial {
        SerialTarget::Stdio => Box::new(std::io::stdout()),
        SerialTarget::File(path) => Box::new(
            File::create(path)
                .with_context(|| format!("cannot create serial output file {}", path.display()))
                .map_err(Failure::bad_input)?,
        ),
    };
    // With the TUI, the console pane shows the serial output (and a file still gets it).
    let (serial, console) = if args.tui {
        if !std::io::stdout().is_terminal() {
            return Err(Failure::bad_input(anyhow::anyhow!(
                "--tui needs a terminal on standard output"
            )));
        }
        let copy = matches!(args.serial, SerialTarget::File(_)).then_some(serial);
        let (writer, console) = umbra::tui::serial_writer(copy);
        (writer, Some(console))
    } else {
        (serial, None)
    };
    let gdb = args.gdb_address();
    if args.wait_for_gdb && gdb.is_none() && !args.tui {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "-S waits for gdb to start the guest: give -s, --gdb or --tui too"
        )));
    }
    let emu_options = EmuOptions {
        mmu_caching: args.mmu == MmuMode::Shadow,
        engine: (args.jit == Switch::On).then(|| {
            Arc::new(umbra_jit::JitFactory {
                threshold: args.jit_threshold,
            }) as Arc<dyn umbra_cpu::backend::emu::BlockEngineFactory>
        }),
        ..EmuOptions::default()
    };
    let choice = accel::choose(args.accel, emu_options).map_err(Failure::runtime)?;
    if args.mmu == MmuMode::Walker && choice.hypervisor.name() != "emu" {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--mmu walker applies to the emulator only (this run uses {})",
            choice.hypervisor.name()
        )));
    }
    let config = MachineConfig {
        memory: args.memory,
        rom: rom.as_ref().map_or(&[], |rom| &rom.bytes),
        serial,
    };
    let mut machine = Machine::new(choice.hypervisor.as_ref(), config).map_err(|e| match e {
        MachineError::Memory(_) => {
            Failure::bad_input(anyhow::Error::new(e).context(format!("-m {}", args.memory)))
        }
        other => Failure::runtime(other),
    })?;
    let linux = match &kernel {
        Some(boot) => machine.load_kernel(boot).map_err(|e| match e {
            MachineError::Load(_) => Failure::bad_input(e),
            other => Failure::runtime(other),
        })?,
        None => LinuxOnBackend::default(),
    };
    eprintln!("umbra: accel {}", choice.reason);
    let backend = choice.hypervisor.name();
    if !linux.appended.is_empty() {
        eprintln!(
            "umbra: {backend}: appended to the kernel command line: {}",
            linux.appended.join(" ")
        );
    }
    if let Some(limitation) = linux.limitation {
        eprintln!("umbra: {backend}: warning: {limitation}");
    }
    if let Some(address) = gdb {
        let control = machine.debug_control(args.wait_for_gdb);
        let view = MachineView {
            memslots: machine.memslots().clone(),
            vm: machine.vm().clone(),
            backend: choice.hypervisor.name(),
        };
        umbra::gdb::serve(&address, control, view)
            .with_context(|| format!("cannot listen for gdb on {address}"))
            .map_err(Failure::bad_input)?;
        let waiting = if args.wait_for_gdb {
            "; the guest waits for gdb to start it"
        } else {
            ""
        };
        eprintln!("umbra: gdb: listening on {address}{waiting}");
    }
    let outcome = match console {
        Some(console) => umbra::tui::run(
            &mut machine,
            console,
            choice.hypervisor.name(),
            args.wait_for_gdb,
        ),
        None => run_with_console(&mut machine, &args.serial),
    }
    .map_err(Failure::runtime)?;
    eprintln!("{}", summary_line(choice.hypervisor.name(), &outcome));
    if args.stats {
        print_mmu_stats(choice.hypervisor.name(), machine.vcpu());
    }
    Ok(exit_status(&outcome.end, args.exit_code))
}

/// Runs the machine with standard input as the serial port's input: the terminal in raw mode
/// with QEMU's Ctrl-A keys when the serial output goes to it, piped bytes as they come
/// otherwise (see `umbra::console`). The terminal is restored before this returns.
fn run_with_console(machine: &mut Machine, serial: &SerialTarget) -> anyhow::Result<RunOutcome> {
    let link = ConsoleLink::new(
        machine.uart(),
        machine.run_control(),
        machine.vcpu().kick_handle(),
    );
    let console = Console::attach(link, *serial == SerialTarget::Stdio)
        .context("cannot set up the serial console on this terminal")?;
    if console.interactive() {
        eprintln!(
            "umbra: the serial console is this terminal: Ctrl-A x quits, Ctrl-A h lists the keys"
        );
    }
    Ok(machine.run()?)
}

/// `--stats`: the vCPU's MMU counters on stderr, one `name value` per line.
fn print_mmu_stats(backend: &str, vcpu: &dyn Vcpu) {
    let stats = vcpu.mmu_stats();
    if stats.is_empty() {
        eprintln!("umbra: {backend}: no MMU counters (the backend keeps none)");
    }
    for (name, value) in stats {
        eprintln!("{name} {value}");
    }
}
