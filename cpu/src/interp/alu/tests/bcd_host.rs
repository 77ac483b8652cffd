//! The BCD adjustments against the host CPU itself. They are invalid in 64-bit mode, but a
//! 64-bit Linux process can far-return into Linux's 32-bit user code segment and run them in
//! compatibility mode: every AX, with every CF/AF combination and the other flags all clear or
//! all set, for DAA, DAS, AAA, AAS, AAM and AAD (bases 10 and 7). Results and the flags the
//! SDM defines must match on any processor; the flags it leaves undefined must match too on
//! AMD, where the module's choice for them was measured.
//!
//! The comparison runs in a child process (this test binary again), so a kernel without 32-bit
//! compatibility segments, where the far return faults, takes down only the child, and the
//! test reports that it could not run.

use std::arch::global_asm;
use std::process::Command;

use super::flag_names;
use crate::interp::alu::{AF, ARITH_FLAGS, CF, PF, SF, ZF, aaa, aad, aam, aas, daa, das};

/// Linux's 32-bit and 64-bit user code segment selectors.
const USER32_CS: u32 = 0x23;
const USER64_CS: u32 = 0x33;

// The 64-bit entry (System V: RDI = the data area, below 4 GiB; RSI = the 32-bit loop to run;
// RDX = the record count) saves the callee-saved registers and RSP in the data area, moves to
// a stack inside it and far-returns to the loop in compatibility mode. Each loop loads DS
// (null in 64-bit mode, which compatibility mode cannot use), then for each 16-byte record
// [EAX in, EFLAGS in, EAX out, EFLAGS out] runs its instruction between POPFD and PUSHFD, and
// far-returns to the 64-bit exit, whose address is at offset 8 of the data area. The code is
// position-independent: it is copied below 4 GiB before it runs.
global_asm!(
    ".pushsection .text.umbra_alu_bcd_host, \"ax\"",
    ".globl umbra_alu_bcd_host_start",
    "umbra_alu_bcd_host_start:",
    ".code64",
    ".globl umbra_alu_bcd_host_entry",
    "umbra_alu_bcd_host_entry:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rdi], rsp",
    "mov rbp, rdi",
    "mov ecx, edx",
    "lea rsp, [rdi + 0xff0]",
    "push {user32_cs}",
    "push rsi",
    "retfq",
    ".globl umbra_alu_bcd_host_exit",
    "umbra_alu_bcd_host_exit:",
    "mov ebp, ebp",
    "xor eax, eax",
    "mov ds, ax",
    "mov rsp, [rbp]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".code32",
    ".macro umbra_alu_bcd_loop name, insn:vararg",
    ".globl umbra_alu_bcd_host_\\name",
    "umbra_alu_bcd_host_\\name:",
    "push ss",
    "pop ds",
    "lea edi, [ebp + 0x1000]",
    "1:",
    "mov eax, [edi]",
    "push dword ptr [edi + 4]",
    "popfd",
    "\\insn",
    "pushfd",
    "pop edx",
    "mov [edi + 8], eax",
    "mov [edi + 12], edx",
    "add edi, 16",
    "dec ecx",
    "jnz 1b",
    "push {user64_cs}",
    "push dword ptr [ebp + 8]",
    "retf",
    ".endm",
    "umbra_alu_bcd_loop daa, daa",
    "umbra_alu_bcd_loop das, das",
    "umbra_alu_bcd_loop aaa, aaa",
    "umbra_alu_bcd_loop aas, aas",
    "umbra_alu_bcd_loop aam10, aam 10",
    "umbra_alu_bcd_loop aam7, aam 7",
    "umbra_alu_bcd_loop aad10, aad 10",
    "umbra_alu_bcd_loop aad7, aad 7",
    ".code64",
    ".globl umbra_alu_bcd_host_end",
    "umbra_alu_bcd_host_end:",
    ".popsection",
    user32_cs = const USER32_CS,
    user64_cs = const USER64_CS,
);

unsafe extern "C" {
    safe static umbra_alu_bcd_host_start: u8;
    safe static umbra_alu_bcd_host_end: u8;
    safe static umbra_alu_bcd_host_entry: u8;
    safe static umbra_alu_bcd_host_exit: u8;
    safe static umbra_alu_bcd_host_daa: u8;
    safe static umbra_alu_bcd_host_das: u8;
    safe static umbra_alu_bcd_host_aaa: u8;
    safe static umbra_alu_bcd_host_aas: u8;
    safe static umbra_alu_bcd_host_aam10: u8;
    safe static umbra_alu_bcd_host_aam7: u8;
    safe static umbra_alu_bcd_host_aad10: u8;
    safe static umbra_alu_bcd_host_aad7: u8;
}

/// Set in the child's environment.
const CHILD: &str = "UMBRA_ALU_BCD_HOST_CHILD";

#[test]
fn bcd_matches_the_host_in_compatibility_mode() {
    if std::env::var_os(CHILD).is_some() {
        compare_with_host();
        return;
    }
    let module = module_path!().split_once("::").expect("crate::module").1;
    let name = format!("{module}::bcd_matches_the_host_in_compatibility_mode");
    let exe = std::env::current_exe().expect("test binary");
    let output = Command::new(exe)
        .args(["--exact", &name, "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary");
    let report = String::from_utf8_lossy(&output.stdout);
    match output.status.code() {
        Some(0) if report.contains("1 passed") => {}
        None => eprintln!(
            "not run: the host cannot run 32-bit code ({})",
            output.status
        ),
        _ => panic!("{report}{}", String::from_utf8_lossy(&output.stderr)),
    }
}

/// One instruction's probe: its 32-bit loop and the module's function on (AX, RFLAGS).
struct Probe {
    name: &'static str,
    code: &'static u8,
    ours: fn(u16, u64) -> (u16, u64),
    /// The flags the SDM defines for it.
    defined: u64,
}

fn compare_with_host() {
    const DAA_DEFINED: u64 = CF | AF | SF | ZF | PF;
    let probes = [
        Probe {
            name: "DAA",
            code: &umbra_alu_bcd_host_daa,
            ours: |ax, f| on_al(daa, ax, f),
            defined: DAA_DEFINED,
        },
        Probe {
            name: "DAS",
            code: &umbra_alu_bcd_host_das,
            ours: |ax, f| on_al(das, ax, f),
            defined: DAA_DEFINED,
        },
        Probe {
            name: "AAA",
            code: &umbra_alu_bcd_host_aaa,
            ours: aaa,
            defined: CF | AF,
        },
        Probe {
            name: "AAS",
            code: &umbra_alu_bcd_host_aas,
            ours: aas,
            defined: CF | AF,
        },
        Probe {
            name: "AAM 10",
            code: &umbra_alu_bcd_host_aam10,
            ours: |ax, f| aam(ax as u8, 10, f).expect("base 10"),
            defined: SF | ZF | PF,
        },
        Probe {
            name: "AAM 7",
            code: &umbra_alu_bcd_host_aam7,
            ours: |ax, f| aam(ax as u8, 7, f).expect("base 7"),
            defined: SF | ZF | PF,
        },
        Probe {
            name: "AAD 10",
            code: &umbra_alu_bcd_host_aad10,
            ours: |ax, f| aad(ax, 10, f),
            defined: SF | ZF | PF,
        },
        Probe {
            name: "AAD 7",
            code: &umbra_alu_bcd_host_aad7,
            ours: |ax, f| aad(ax, 7, f),
            defined: SF | ZF | PF,
        },
    ];
    let inputs: Vec<(u16, u32)> = (0..=u16::MAX)
        .flat_map(|ax| {
            [0, ARITH_FLAGS & !(CF | AF)]
                .into_iter()
                .flat_map(|others| [0, CF, AF, CF | AF].map(|bits| (others | bits | 2) as u32))
                .map(move |flags| (ax, flags))
        })
        .collect();
    let amd = host_vendor() == *b"AuthenticAMD";
    let mut host = CompatibilityMode::new(inputs.len());
    for probe in probes {
        let outputs = host.run(probe.code, &inputs);
        let compared = if amd { ARITH_FLAGS } else { probe.defined };
        for (&(ax, flags), &(host_ax, host_flags)) in inputs.iter().zip(&outputs) {
            let (our_ax, our_flags) = (probe.ours)(ax, flags.into());
            let host_flags = u64::from(host_flags);
            assert!(
                our_ax == host_ax && (our_flags ^ host_flags) & compared == 0,
                "{} AX {ax:#06x} flags {}: host {host_ax:#06x} {}, ours {our_ax:#06x} {}",
                probe.name,
                flag_names(flags.into()),
                flag_names(host_flags),
                flag_names(our_flags)
            );
        }
    }
}

/// Runs an AL-only adjustment on AX.
fn on_al(adjust: fn(u8, u64) -> (u8, u64), ax: u16, rflags: u64) -> (u16, u64) {
    let (al, flags) = adjust(ax as u8, rflags);
    ((ax & 0xff00) | u16::from(al), flags)
}

/// The host's CPUID vendor string.
fn host_vendor() -> [u8; 12] {
    let leaf = core::arch::x86_64::__cpuid(0);
    let mut vendor = [0; 12];
    for (chunk, register) in vendor.chunks_mut(4).zip([leaf.ebx, leaf.edx, leaf.ecx]) {
        chunk.copy_from_slice(&register.to_le_bytes());
    }
    vendor
}

/// The probe code and its data area, mapped below 4 GiB, where 32-bit code can reach them.
struct CompatibilityMode {
    code: *mut u8,
    data: *mut u8,
    data_len: usize,
}

/// Where the records start in the data area (the first page holds the saved RSP, the exit's
/// address and the stack).
const RECORDS: usize = 0x1000;

impl CompatibilityMode {
    fn new(records: usize) -> CompatibilityMode {
        let data_len = RECORDS + records * 16;
        let code = map_low(4096);
        let data = map_low(data_len);
        let start = &raw const umbra_alu_bcd_host_start as usize;
        let len = &raw const umbra_alu_bcd_host_end as usize - start;
        assert!(len <= 4096);
        // SAFETY: `code` is a fresh writable mapping of 4096 bytes and `len` fits in it; the
        // source is this binary's own text between two labels of the same section.
        unsafe {
            std::ptr::copy_nonoverlapping(start as *const u8, code, len);
            let protect = libc::PROT_READ | libc::PROT_EXEC;
            assert_eq!(libc::mprotect(code.cast(), 4096, protect), 0);
        }
        let host = CompatibilityMode {
            code,
            data,
            data_len,
        };
        let exit = host.copied(&umbra_alu_bcd_host_exit) as u32;
        // SAFETY: `data` is a fresh writable mapping of at least one page.
        unsafe { data.add(8).cast::<u32>().write(exit) };
        host
    }

    /// The address of `label` in the copy of the probe code.
    fn copied(&self, label: &u8) -> usize {
        self.code as usize
            + (label as *const u8 as usize - &raw const umbra_alu_bcd_host_start as usize)
    }

    /// Runs the loop at `label` over `inputs` (AX, EFLAGS) and returns (AX, EFLAGS) after each.
    fn run(&mut self, label: &u8, inputs: &[(u16, u32)]) -> Vec<(u16, u32)> {
        assert!(RECORDS + inputs.len() * 16 <= self.data_len);
        let records = self.data.wrapping_add(RECORDS).cast::<[u32; 4]>();
        for (index, &(ax, flags)) in inputs.iter().enumerate() {
            // SAFETY: the record is inside the data mapping (checked above) and aligned.
            unsafe { records.add(index).write([ax.into(), flags, 0, 0]) };
        }
        // SAFETY: the entry is the copied probe code, which follows the System V convention
        // (callee-saved registers and RSP restored, DF untouched) and touches only the data
        // area: its stack below offset 0xff0, the saved RSP and exit address at 0 and 8, and
        // `inputs.len()` records from offset 0x1000, all inside the mapping.
        unsafe {
            let entry = std::mem::transmute::<usize, extern "sysv64" fn(u64, u64, u64)>(
                self.copied(&umbra_alu_bcd_host_entry),
            );
            entry(
                self.data as u64,
                self.copied(label) as u64,
                inputs.len() as u64,
            );
        }
        (0..inputs.len())
            .map(|index| {
                // SAFETY: as for the writes above.
                let [_, _, ax, flags] = unsafe { records.add(index).read() };
                (ax as u16, flags)
            })
            .collect()
    }
}

impl Drop for CompatibilityMode {
    fn drop(&mut self) {
        // SAFETY: both are mappings this value made and nothing refers to any more.
        unsafe {
            libc::munmap(self.code.cast(), 4096);
            libc::munmap(self.data.cast(), self.data_len);
        }
    }
}

/// A fresh read-write anonymous mapping of `len` bytes below 4 GiB.
fn map_low(len: usize) -> *mut u8 {
    let protect = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT;
    // SAFETY: an anonymous mapping at an address the kernel chooses affects no existing memory.
    let address = unsafe { libc::mmap(std::ptr::null_mut(), len, protect, flags, -1, 0) };
    assert_ne!(address, libc::MAP_FAILED, "mmap below 4 GiB");
    assert!((address as usize) + len <= 1 << 32);
    address.cast()
}
