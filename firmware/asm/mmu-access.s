/*
 * mmu-access.s: MMU conformance in 4-level long mode. Page-table flags at every level, huge
 * pages, reserved bits, CR0.WP, CR4.SMEP, CR4.SMAP with EFLAGS.AC, EFER.NXE and, where the
 * CPU has it, protection keys, against reads, writes and fetches at CPL 3 and CPL 0 and an
 * implicit supervisor read. Each case records what happened; nothing is judged here. The
 * output is a digest to compare across Umbra's interpreter, KVM and QEMU, not a pass/fail.
 *
 * A case is one access to the test page at TEST_VA, which has a page-table chain of its own
 * (PML4 slot 1: PML4E, PDPTE, PDE, PTE, or fewer levels for 2 MiB and 1 GiB pages). Before
 * the access the case writes all four entries, A and D clear unless the case sets them, and
 * invalidates TEST_VA with INVLPG (which drops the paging-structure caches as well). After it
 * the case records two quadwords:
 *   word 0: bit 0 the access faulted; bits 23:8 the #PF error code; bits 63:32 the low byte
 *           of each entry afterwards (PTE in bits 39:32 up to PML4E in 63:56: A, D, P, R/W,
 *           U/S, PS as the walk left them);
 *   word 1: CR2 if it faulted, else 0.
 * and folds them into a hash: FNV-1a over 64-bit words with a fold that carries the
 * product's high half down, h = (h ^ word) * FNV_PRIME; h ^= h >> 32. Each step is a
 * bijection of h, so any one differing word changes the digest.
 *
 * The accesses (ACCESS_* below): at CPL 3 a byte read at TEST_VA + 8, a byte write there, and
 * a fetch (a CALL to the RET at TEST_VA); at CPL 0 the same read and write, each with
 * EFLAGS.AC clear and set, the fetch, and an implicit supervisor read: loading FS from an LDT
 * whose only descriptor is at TEST_VA + 0x10, with EFLAGS.AC clear and set (SDM 4.6.1: AC
 * never lifts SMAP for implicit accesses). EFLAGS.AC is set with POPFQ, not STAC: KVM's
 * instruction emulator lacks STAC and CLAC.
 *
 * The groups (the `groups` table): which entry's flags vary (every subset of the group's
 * mask), with the leaf at which level. Each group runs under each of 16 configurations:
 * CR0.WP, CR4.SMEP, CR4.SMAP and EFER.NXE on or off (bits 0 to 3 of the configuration). Each
 * (group, configuration) prints one line
 *   <group> wp=<0|1> smep=<0|1> smap=<0|1> nxe=<0|1>: <n> cases, <f> faults, digest 0x<h>
 * and at the end
 *   umbra mmu-access: total: <n> cases, <f> faults, digest 0x<h>
 * where the last digest is the same hash over the lines' digests. The exit status is 0.
 *
 * What the CPU does not advertise is skipped, and said so: without NX, SMEP or SMAP the
 * configurations that set its bit ("umbra mmu-access: <reason>: smep=1 is skipped"), without
 * 1 GiB pages their groups, and without PKU (CPUID.7.0:ECX[3], and OSPKE once CR4.PKE is
 * set) the protection-key groups ("<group>: skipped, <reason>", where the group's lines would
 * be). Umbra's interpreter does not advertise PKU yet.
 *
 * Why the accesses run where they do: on hosts whose KVM is PVM, CPL 3 code runs natively
 * (KVM's shadow paging decides its page faults) and CPL 0 code in KVM's instruction emulator
 * (its own walk decides). User code cannot reach ports there, and SYSCALL does not reach the
 * guest's CPL 0, so a CPL 3 access is entered with IRETQ and left with INT3 through a DPL 3
 * gate or with the #PF itself; either way CPL 0 resumes on its saved stack (access_done).
 * User code runs from an alias of the ROM in PML4 slot 2 (user pages), so that CPL 0 code,
 * identity-mapped in slot 0, stays on supervisor pages, as SMEP needs.
 *
 * Variants (build.rs): EXCLUDED_ACCESSES, a mask of 1 << ACCESS_*, leaves access kinds out
 * (for backends that cannot run them); the excluded kinds are named in one line. QEMU_TCG
 * masks what QEMU's TCG is known to do differently (see qemu_masks below).
 *
 * Memory (identity-mapped RAM; addresses other than the frame pool's are fixed):
 *   0x00000000  the 1 GiB test page's first bytes (TEST_VA maps physical 0 there)
 *   0x00300000  SYSTEM_PHYS: this image's GDT, TSS and trap stack
 *   0x00400000  LARGE_PHYS: the 2 MiB test page
 *   0x00600000  USER_STACK_PHYS: the 2 MiB user stack page
 *   frame pool  the test page tables, the 4 KiB test page, the user page tables
 */
    .include "umbra.inc"
    IMAGE_STRINGS mmu-access

/* Where things are. */
    .set TEST_VA, 0x0000008000000000        /* PML4 slot 1 */
    .set TEST_PML4_INDEX, 1
    .set TEST_DATA, 8                       /* the byte reads and writes touch */
    .set TEST_LDT, 0x10                     /* the LDT's one descriptor */
    .set USER_VA, 0x0000010000000000        /* PML4 slot 2: the ROM alias, the user stack */
    .set USER_PML4_INDEX, 2
    .set USER_STACK_PHYS, 0x600000
    .set USER_STACK_TOP, USER_VA + 2 * LARGE_PAGE_SIZE
    .set USER_ALIAS_OFFSET, USER_VA - ROM_LARGE_PAGE
    .set LARGE_PHYS, 0x400000
    .set HUGE_PHYS, 0
    .set SYSTEM_PHYS, 0x300000
    .set GDT_PHYS, SYSTEM_PHYS
    .set TSS_PHYS, SYSTEM_PHYS + 0x100
    .set TRAP_STACK_TOP, SYSTEM_PHYS + 0x2000

/* The GDT: the boot selectors keep their places (the IDT's gates name SEL_CODE64). */
    .set SEL_USER_DATA, 0x20
    .set SEL_USER_CODE64, 0x28
    .set SEL_TSS, 0x30
    .set SEL_LDT, 0x40
    .set GDT_SIZE, SEL_LDT + 16
    .set LDT_DATA_SELECTOR, 0x4             /* index 0, TI = 1 (the LDT), RPL 0 */
    .set RPL_3, 3
    .set TSS_SIZE, 104
    .set TSS_RSP0, 4
    .set TSS_IOMAP_BASE, 102
    .set DATA_DESCRIPTOR, 0x00cf93000000ffff /* DPL 0 data, accessed bit set */

/* The IDT gates this image replaces. */
    .set VECTOR_BP, 3
    .set VECTOR_PF, 14
    .set GATE_SIZE, 16
    .set GATE_DPL3, 0x6000                  /* added to traps.s's DPL 0 interrupt gate */

/* Paging bits beyond umbra.inc's. */
    .set PTE_US, 1 << 2
    .set PTE_A, 1 << 5
    .set PTE_D, 1 << 6
    .set PTE_NX, 1 << 63
    .set PTE_PKEY1, 1 << 59                 /* protection key 1 */
    .set PTE_RSVD13, 1 << 13                /* reserved in a 2 MiB PDE and a 1 GiB PDPTE */
    .set PTE_RSVD51, 1 << 51                /* above MAXPHYADDR on every backend */
    .set UPPER, PTE_P | PTE_RW | PTE_US     /* a non-leaf entry that allows everything */
    .set LEAF, PTE_P | PTE_RW | PTE_US
    .set PF_ERR_RSVD, 1 << 3
    .set ENTRY_A_BITS, 0x20202020 << 32     /* word 0's copies of the four A bits */

    .set CR4_PKE, 1 << 22
    .set CR4_SMEP, 1 << 20
    .set CR4_SMAP, 1 << 21
    .set RFLAGS_FIXED, 1 << 1
    .set RFLAGS_AC, 1 << 18

    .set FNV_OFFSET, 0xcbf29ce484222325
    .set FNV_PRIME, 0x100000001b3

/* CPU features (bits of `features`). */
    .set FEATURE_NX, 1 << 0
    .set FEATURE_SMEP, 1 << 1
    .set FEATURE_SMAP, 1 << 2
    .set FEATURE_1G, 1 << 3
    .set FEATURE_PKU, 1 << 4

/* Configuration bits. */
    .set CONFIG_WP, 1 << 0
    .set CONFIG_SMEP, 1 << 1
    .set CONFIG_SMAP, 1 << 2
    .set CONFIG_NXE, 1 << 3
    .set CONFIGS, 16

/* Access kinds: the index into access_routines and access_names. */
    .set ACCESS_USER_READ, 0
    .set ACCESS_USER_WRITE, 1
    .set ACCESS_USER_FETCH, 2
    .set ACCESS_READ, 3
    .set ACCESS_READ_AC, 4
    .set ACCESS_WRITE, 5
    .set ACCESS_WRITE_AC, 6
    .set ACCESS_FETCH, 7
    .set ACCESS_IMPLICIT_READ, 8
    .set ACCESS_IMPLICIT_READ_AC, 9
    .set ACCESSES, 10

.ifndef EXCLUDED_ACCESSES
    .set EXCLUDED_ACCESSES, 0
.endif
.ifdef QEMU_TCG
    /* TCG lets EFLAGS.AC lift SMAP for implicit accesses (see qemu_masks). */
    .set EXCLUDED_ACCESSES, EXCLUDED_ACCESSES | (1 << ACCESS_IMPLICIT_READ_AC)
.endif

/* One group in the `groups` table. */
    .set GROUP_NAME, 0
    .set GROUP_MASK, 8                      /* the flags that vary, every subset in turn */
    .set GROUP_FLAGS, 16                    /* 4 quadwords: the PTE's, PDE's, PDPTE's, PML4E's */
    .set GROUP_PKRU, 48
    .set GROUP_LEAF, 52                     /* the leaf's level: 1 (4 KiB), 2 (2 MiB), 3 (1 GiB) */
    .set GROUP_VARIED, 53                   /* the level whose entry takes the subset */
    .set GROUP_NEEDS, 54                    /* FEATURE_* bits */
    .set GROUP_SIZE, 56

.macro GROUP name, leaf, varied, mask, pte, pde, pdpte, pml4e, needs=0, pkru=0
    .pushsection .rodata.group_names, "a"
.Lgroup_name\@:
    .asciz "\name"
    .popsection
    .pushsection .rodata.groups, "a"
    .quad .Lgroup_name\@, \mask, \pte, \pde, \pdpte, \pml4e
    .long \pkru
    .byte \leaf, \varied, \needs, 0
    .popsection
.endm

/* MISSING_FEATURES reg: leaves in reg its FEATURE_* bits that `features` lacks; ZF is set
 * when there are none. */
.macro MISSING_FEATURES reg
    not \reg
    or features, \reg
    not \reg
    test \reg, \reg
.endm

/* ---------------------------------------------------------------- RAM */

    .bss
    .balign 8
features:
    .skip 8
base_cr4:
    .skip 8
/* The test chain: what a leaf entry points at (indexed by level - 1: the 4 KiB page,
 * LARGE_PHYS, HUGE_PHYS), what a non-leaf entry points at (the table below it; unused for
 * the PTE), each entry's address, and its value before the subset is ORed in. */
leaf_page:
    .skip 3 * 8
table_below:
    .skip 4 * 8
entry_address:                              /* PTE, PDE, PDPTE, PML4E */
    .skip 4 * 8
entry_value:
    .skip 4 * 8
varied_entry:                               /* the entry_address slot the subset goes into */
    .skip 8
/* The case in progress. */
case_rsp:                                   /* the stack access_done returns on; 0: none */
    .skip 8
case_faulted:
    .skip 8
case_error_code:
    .skip 8
case_cr2:
    .skip 8
/* The (group, configuration) line in progress, and the run. */
line_hash:
    .skip 8
line_cases:
    .skip 8
line_faults:
    .skip 8
total_hash:
    .skip 8
total_cases:
    .skip 8
total_faults:
    .skip 8

/* ---------------------------------------------------------------- ROM data */

    .section .rodata
    .balign 8
gdt_template:
    .quad 0                                 /* null */
    .quad 0x00cf9b000000ffff                /* 0x08: 32-bit code, as at boot */
    .quad 0x00cf93000000ffff                /* 0x10: data, as at boot */
    .quad 0x00af9b000000ffff                /* 0x18: 64-bit code, as at boot */
    .quad 0x00cff3000000ffff                /* 0x20: user data, DPL 3 */
    .quad 0x00affb000000ffff                /* 0x28: user 64-bit code, DPL 3 */
    /* 0x30: the TSS (present, DPL 0, available 64-bit TSS) at TSS_PHYS. */
    .quad (TSS_SIZE - 1) | ((TSS_PHYS & 0xffffff) << 16) | (0x89 << 40) | ((TSS_PHYS >> 24) << 56)
    .quad TSS_PHYS >> 32
    /* 0x40: the LDT (present, DPL 0, type 2), one descriptor at TEST_VA + TEST_LDT. */
    .set LDT_BASE, TEST_VA + TEST_LDT
    .quad 7 | ((LDT_BASE & 0xffffff) << 16) | (0x82 << 40) | (((LDT_BASE >> 24) & 0xff) << 56)
    .quad LDT_BASE >> 32
gdt_template_end:
gdt_descriptor:
    .word GDT_SIZE - 1
    .quad GDT_PHYS

    .balign 8
access_routines:
    .quad access_user_read, access_user_write, access_user_fetch
    .quad access_read, access_read_ac, access_write, access_write_ac, access_fetch
    .quad access_implicit_read, access_implicit_read_ac
access_names:
    .quad user_read_name, user_write_name, user_fetch_name
    .quad read_name, read_ac_name, write_name, write_ac_name, fetch_name
    .quad implicit_read_name, implicit_read_ac_name
user_read_name:
    .asciz "user-read"
user_write_name:
    .asciz "user-write"
user_fetch_name:
    .asciz "user-fetch"
read_name:
    .asciz "read"
read_ac_name:
    .asciz "read-ac"
write_name:
    .asciz "write"
write_ac_name:
    .asciz "write-ac"
fetch_name:
    .asciz "fetch"
implicit_read_name:
    .asciz "implicit-read"
implicit_read_ac_name:
    .asciz "implicit-read-ac"

/* What each configuration bit needs, and its name in the lines. */
config_needs:
    .byte 0, FEATURE_SMEP, FEATURE_SMAP, FEATURE_NX
config_names:
    .quad wp_name, smep_name, smap_name, nxe_name
wp_name:
    .asciz " wp="
smep_name:
    .asciz " smep="
smap_name:
    .asciz " smap="
nxe_name:
    .asciz " nxe="

/* Why a feature is missing, in FEATURE_* order. */
missing_reasons:
    .quad no_nx_reason, no_smep_reason, no_smap_reason, no_1g_reason, no_pku_reason
no_nx_reason:
    .asciz "nx not advertised (cpuid.80000001h:edx[20] = 0)"
no_smep_reason:
    .asciz "smep not advertised (cpuid.7.0:ebx[7] = 0)"
no_smap_reason:
    .asciz "smap not advertised (cpuid.7.0:ebx[20] = 0)"
no_1g_reason:
    .asciz "1 GiB pages not advertised (cpuid.80000001h:edx[26] = 0)"
no_pku_reason:
    .asciz "pku not usable (cpuid.7.0:ecx[3] = 0, or ecx[4] = 0 with cr4.pke = 1)"
config_skipped_suffix:
    .asciz "1 is skipped\n"
group_skipped_infix:
    .asciz ": skipped, "

excluded_message:
    .asciz "excluded access kinds:"
total_name:
    .asciz "total"
cases_infix:
    .asciz ": "
cases_suffix:
    .asciz " cases, "
faults_suffix:
    .asciz " faults, digest "
unexpected_fault_message:
    .asciz "page fault outside a case or the test page, rip "
cr2_infix:
    .asciz ", cr2 "

    .set P, PTE_P
    .set RW, PTE_RW
    .set US, PTE_US
    .set A, PTE_A
    .set D, PTE_D
    .set NX, PTE_NX
    .set PS, PTE_PS
    .pushsection .rodata.groups, "a"
    .balign 8
groups:
    .popsection
    /* Leaf and upper-level flags. Entries not varied allow everything, A and D clear. */
    GROUP pte, 1, 1, P|RW|US|A|D|NX, 0, UPPER, UPPER, UPPER
    GROUP pde, 1, 2, P|RW|US|NX, LEAF, 0, UPPER, UPPER
    GROUP pdpte, 1, 3, P|RW|US|NX, LEAF, 0, UPPER, UPPER
    GROUP pml4e, 1, 4, P|RW|US|NX, LEAF, UPPER, UPPER, 0
    /* Huge pages (the PTE, or PTE and PDE, are not used). */
    GROUP pde-2m, 2, 2, P|RW|US|D|NX, LEAF, PS, UPPER, UPPER
    GROUP pdpte-1g, 3, 3, P|RW|US|D|NX, LEAF, UPPER, PS, UPPER, FEATURE_1G
    /* One reserved bit at a time, in present and non-present entries. Bit 51 is above
     * MAXPHYADDR on every backend (40 on Umbra's interpreter and QEMU, the host's on KVM). */
    GROUP pml4e-rsvd-ps, 1, 4, P|PS, LEAF, UPPER, UPPER, RW|US
    GROUP pml4e-rsvd-51, 1, 4, P|PTE_RSVD51, LEAF, UPPER, UPPER, RW|US
    GROUP pdpte-rsvd-51, 1, 3, P|PTE_RSVD51, LEAF, UPPER, RW|US, UPPER
    GROUP pde-rsvd-51, 1, 2, P|PTE_RSVD51, LEAF, RW|US, UPPER, UPPER
    GROUP pte-rsvd-51, 1, 1, P|PTE_RSVD51, RW|US, UPPER, UPPER, UPPER
    GROUP pde-2m-rsvd-13, 2, 2, P|PTE_RSVD13, LEAF, RW|US|PS, UPPER, UPPER
    GROUP pde-2m-rsvd-51, 2, 2, P|PTE_RSVD51, LEAF, RW|US|PS, UPPER, UPPER
    GROUP pdpte-1g-rsvd-13, 3, 3, P|PTE_RSVD13, LEAF, UPPER, RW|US|PS, UPPER, FEATURE_1G
    GROUP pdpte-1g-rsvd-51, 3, 3, P|PTE_RSVD51, LEAF, UPPER, RW|US|PS, UPPER, FEATURE_1G
    /* Protection keys: key 0 or 1 on a user or supervisor page, with PKRU denying key 1
     * access (AD), writes (WD), or both. */
    GROUP pte-pkey-ad, 1, 1, RW|US|PTE_PKEY1, P, UPPER, UPPER, UPPER, FEATURE_PKU, 0x4
    GROUP pte-pkey-wd, 1, 1, RW|US|PTE_PKEY1, P, UPPER, UPPER, UPPER, FEATURE_PKU, 0x8
    GROUP pte-pkey-ad-wd, 1, 1, RW|US|PTE_PKEY1, P, UPPER, UPPER, UPPER, FEATURE_PKU, 0xc
    .pushsection .rodata.groups, "a"
groups_end:
    .popsection

/* ---------------------------------------------------------------- CPL 0 */

    .text
    .code64

/* image_main: runs every group under every configuration; returns 0. */
    .global image_main
image_main:
    push %rbx
    push %r12
    push %r13
    call probe_features
    call report_skipped
    call system_init
    call mappings_init
    mov %cr4, %rax
    mov %rax, base_cr4
    movabs $FNV_OFFSET, %rax
    mov %rax, total_hash
    lea groups(%rip), %r12
.Lnext_group:
    movzbl GROUP_NEEDS(%r12), %eax
    MISSING_FEATURES %eax
    jz .Lgroup_runs
    call report_skipped_group
    jmp .Lgroup_done
.Lgroup_runs:
    call group_init
    xor %r13d, %r13d
.Lnext_config:
    mov %r13d, %edi
    call config_supported
    test %eax, %eax
    jz .Lconfig_done
    mov %r12, %rdi
    mov %r13d, %esi
    call run_line
.Lconfig_done:
    inc %r13d
    cmp $CONFIGS, %r13d
    jb .Lnext_config
.Lgroup_done:
    add $GROUP_SIZE, %r12
    lea groups_end(%rip), %rax
    cmp %rax, %r12
    jb .Lnext_group

    mov $CONFIG_WP | CONFIG_NXE, %edi       /* as boot.s left it */
    xor %esi, %esi
    call apply_config
    lea total_name(%rip), %rdi
    call print_prefixed
    mov total_cases, %rdi
    mov total_faults, %rsi
    mov total_hash, %rdx
    call print_counts
    xor %eax, %eax
    pop %r13
    pop %r12
    pop %rbx
    ret


/*
 * probe_features: sets `features` from CPUID. PKU counts only if CR4.PKE can be set and
 * then shows as OSPKE. Clobbers %rax, %rcx, %rdx, %rsi.
 */
probe_features:
    push %rbx
    xor %esi, %esi
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb .Lprobe_leaf7
    mov $0x80000001, %eax
    cpuid
    bt $20, %edx
    jnc .Lprobe_no_nx
    or $FEATURE_NX, %esi
.Lprobe_no_nx:
    bt $26, %edx
    jnc .Lprobe_leaf7
    or $FEATURE_1G, %esi
.Lprobe_leaf7:
    xor %eax, %eax
    cpuid
    cmp $7, %eax
    jb .Lprobe_done
    mov $7, %eax
    xor %ecx, %ecx
    cpuid
    bt $7, %ebx
    jnc .Lprobe_no_smep
    or $FEATURE_SMEP, %esi
.Lprobe_no_smep:
    bt $20, %ebx
    jnc .Lprobe_no_smap
    or $FEATURE_SMAP, %esi
.Lprobe_no_smap:
    bt $3, %ecx
    jnc .Lprobe_done
    mov %cr4, %rax
    or $CR4_PKE, %rax
    mov %rax, %cr4
    mov $7, %eax
    xor %ecx, %ecx
    cpuid
    mov %cr4, %rax
    and $~CR4_PKE, %rax
    mov %rax, %cr4
    bt $4, %ecx
    jnc .Lprobe_done
    or $FEATURE_PKU, %esi
.Lprobe_done:
    mov %rsi, features
    pop %rbx
    ret

/* report_skipped: for each configuration bit the CPU lacks a feature for, "umbra
 * mmu-access: <reason>: <bit>=1 is skipped"; then the excluded access kinds, if any.
 * Clobbers %rax, %rcx, %rdx, %rsi, %rdi. */
report_skipped:
    push %rbx
    xor %ebx, %ebx
.Lreport_config_bit:
    lea config_needs(%rip), %rax
    movzbl (%rax, %rbx), %eax
    MISSING_FEATURES %eax
    jz .Lreport_next_config_bit
    bsf %eax, %eax
    lea missing_reasons(%rip), %rdx
    mov (%rdx, %rax, 8), %rdi
    call print_prefixed
    lea cases_infix(%rip), %rdi
    call puts
    lea config_names(%rip), %rax
    mov (%rax, %rbx, 8), %rdi
    inc %rdi                                /* the name without its leading space */
    call puts
    lea config_skipped_suffix(%rip), %rdi
    call puts
.Lreport_next_config_bit:
    inc %ebx
    cmp $4, %ebx
    jb .Lreport_config_bit
.if EXCLUDED_ACCESSES
    lea excluded_message(%rip), %rdi
    call print_prefixed
    xor %ebx, %ebx
.Lreport_access:
    mov $EXCLUDED_ACCESSES, %eax
    bt %ebx, %eax
    jnc .Lreport_next_access
    mov $' ', %edi
    call putc
    lea access_names(%rip), %rax
    mov (%rax, %rbx, 8), %rdi
    call puts
.Lreport_next_access:
    inc %ebx
    cmp $ACCESSES, %ebx
    jb .Lreport_access
    mov $'\n', %edi
    call putc
.endif
    pop %rbx
    ret

/* report_skipped_group(%r12 = group, %eax = the features it lacks): "<group>: skipped,
 * <reason>" for the first of them. Clobbers %rax, %rcx, %rdx, %rsi, %rdi. */
report_skipped_group:
    push %rbx
    bsf %eax, %ebx
    mov GROUP_NAME(%r12), %rdi
    call puts
    lea group_skipped_infix(%rip), %rdi
    call puts
    lea missing_reasons(%rip), %rax
    mov (%rax, %rbx, 8), %rdi
    call puts
    mov $'\n', %edi
    call putc
    pop %rbx
    ret

/*
 * system_init: this image's GDT (traps.s's selectors plus user segments, a TSS and the
 * LDT), the TSS's RSP0 on the trap stack, and the IDT gates for #BP (DPL 3: user code ends
 * a case with INT3) and #PF, in the IDT traps.s made (SIDT finds it). Clobbers %rax, %rcx,
 * %rsi, %rdi.
 */
system_init:
    lea gdt_template(%rip), %rsi
    mov $GDT_PHYS, %edi
    mov $(gdt_template_end - gdt_template) / 8, %ecx
.Lcopy_gdt:
    mov (%rsi), %rax
    mov %rax, (%rdi)
    add $8, %rsi
    add $8, %rdi
    dec %ecx
    jnz .Lcopy_gdt
    /* No I/O bitmap (it would start past the TSS's limit): CPL 3 gets no ports. */
    movw $TSS_SIZE, TSS_PHYS + TSS_IOMAP_BASE
    movq $TRAP_STACK_TOP, TSS_PHYS + TSS_RSP0
    lgdt gdt_descriptor(%rip)
    mov $SEL_TSS, %eax
    ltr %ax
    mov $SEL_LDT, %eax
    lldt %ax

    sub $16, %rsp
    sidt (%rsp)
    mov 2(%rsp), %rdi
    add $16, %rsp
    lea access_done(%rip), %rax             /* INT3 from user code: the access completed */
    lea VECTOR_BP * GATE_SIZE(%rdi), %rsi
    call set_gate
    addw $GATE_DPL3, VECTOR_BP * GATE_SIZE + 4(%rdi)
    lea case_page_fault(%rip), %rax
    lea VECTOR_PF * GATE_SIZE(%rdi), %rsi
    jmp set_gate

/* set_gate(%rsi = gate, %rax = handler): points an interrupt gate traps.s made at the
 * handler. Clobbers %rax. */
set_gate:
    mov %ax, (%rsi)
    shr $16, %rax
    mov %ax, 6(%rsi)
    shr $16, %rax
    mov %eax, 8(%rsi)
    ret

/*
 * mappings_init: the test chain in PML4 slot 1 (tables from the pool, entries written per
 * case), the bytes each test page holds, and the user mappings in slot 2: the ROM's 2 MiB
 * page (read-only, executable) and the user stack. Clobbers %rax, %rcx, %rdx, %rdi.
 */
mappings_init:
    /* entry_address: PTE, PDE, PDPTE, PML4E; each table from the pool. */
    mov $boot_pml4 + TEST_PML4_INDEX * 8, %eax
    mov %rax, entry_address + 3 * 8
    call alloc_frame                        /* the PDPT */
    mov %rax, %rdi
    mov %rax, entry_address + 2 * 8
    call alloc_frame                        /* the PD */
    mov %rax, %rcx
    mov %rax, entry_address + 1 * 8
    call alloc_frame                        /* the PT */
    mov %rax, %rdx
    mov %rax, entry_address
    mov %rdi, table_below + 3 * 8
    mov %rcx, table_below + 2 * 8
    mov %rdx, table_below + 1 * 8
    call alloc_frame                        /* the 4 KiB test page */
    mov %rax, leaf_page
    movq $LARGE_PHYS, leaf_page + 8
    movq $HUGE_PHYS, leaf_page + 2 * 8
    mov %rax, %rdi
    call fill_test_page
    mov $LARGE_PHYS, %edi
    call fill_test_page
    mov $HUGE_PHYS, %edi
    call fill_test_page

    call alloc_frame                        /* the user PDPT */
    mov %rax, %rdi
    lea UPPER(%rax), %rax
    mov %rax, boot_pml4 + USER_PML4_INDEX * 8
    call alloc_frame                        /* the user PD */
    lea UPPER(%rax), %rcx
    mov %rcx, (%rdi)
    mov $ROM_LARGE_PAGE | PTE_P | PTE_US | PTE_PS, %ecx
    mov %rcx, (%rax)
    movq $USER_STACK_PHYS | PTE_P | PTE_RW | PTE_US | PTE_PS, 8(%rax)
    ret

/* fill_test_page(%rdi): what every test page holds: a RET at 0, data at TEST_DATA, and at
 * TEST_LDT the LDT's data descriptor, its accessed bit set so loading it only reads. */
fill_test_page:
    movb $0xc3, (%rdi)
    movq $0, TEST_DATA(%rdi)
    movabs $DATA_DESCRIPTOR, %rax
    mov %rax, TEST_LDT(%rdi)
    ret

/*
 * group_init(%r12 = group): entry_value (each entry's address and the group's flags) and
 * varied_entry. A leaf entry points at its test page; every other entry at the table below
 * it. Clobbers %rax, %rcx, %rdx, %rsi.
 */
group_init:
    movzbl GROUP_LEAF(%r12), %edx
    xor %ecx, %ecx                          /* level - 1 */
.Lgroup_entry:
    mov table_below(, %rcx, 8), %rax
    lea 1(%rcx), %esi
    cmp %edx, %esi
    jne .Lgroup_flags
    mov leaf_page - 8(, %rdx, 8), %rax
.Lgroup_flags:
    or GROUP_FLAGS(%r12, %rcx, 8), %rax
    mov %rax, entry_value(, %rcx, 8)
    inc %ecx
    cmp $4, %ecx
    jb .Lgroup_entry
    movzbl GROUP_VARIED(%r12), %eax
    mov entry_address - 8(, %rax, 8), %rax
    mov %rax, varied_entry
    ret

/* config_supported(%edi = configuration): %eax non-zero if the CPU has what it needs.
 * Clobbers %rcx, %rdx. */
config_supported:
    xor %ecx, %ecx
    xor %edx, %edx
.Lconfig_bit:
    bt %ecx, %edi
    jnc .Lconfig_next_bit
    lea config_needs(%rip), %rax
    or (%rax, %rcx), %dl
.Lconfig_next_bit:
    inc %ecx
    cmp $4, %ecx
    jb .Lconfig_bit
    MISSING_FEATURES %edx
    setz %al
    movzbl %al, %eax
    ret

/*
 * apply_config(%edi = configuration, %esi = PKRU, or 0 without protection keys; non-zero
 * also sets CR4.PKE): CR0.WP, CR4.SMEP, CR4.SMAP, CR4.PKE and EFER.NXE as the configuration
 * says. Clobbers %rax, %rcx, %rdx.
 */
apply_config:
    mov %cr0, %rax
    and $~CR0_WP, %eax
    test $CONFIG_WP, %edi
    jz .Lset_cr0
    or $CR0_WP, %eax
.Lset_cr0:
    mov %rax, %cr0
    mov base_cr4, %rax
    test $CONFIG_SMEP, %edi
    jz .Lno_smep
    or $CR4_SMEP, %eax
.Lno_smep:
    test $CONFIG_SMAP, %edi
    jz .Lno_smap
    or $CR4_SMAP, %eax
.Lno_smap:
    test %esi, %esi
    jz .Lset_cr4
    or $CR4_PKE, %eax
.Lset_cr4:
    mov %rax, %cr4
    mov $MSR_EFER, %ecx
    rdmsr
    and $~EFER_NXE, %eax
    test $CONFIG_NXE, %edi
    jz .Lset_efer
    or $EFER_NXE, %eax
.Lset_efer:
    wrmsr
    test %esi, %esi
    jz .Lconfig_applied
    mov %esi, %eax
    xor %ecx, %ecx
    xor %edx, %edx
    wrpkru
.Lconfig_applied:
    ret

/*
 * run_line(%rdi = group, %esi = configuration): every case of the group under the
 * configuration, then its line. Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8-%r11.
 */
run_line:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rdi, %r12
    mov %esi, %r13d
    mov %esi, %edi
    mov GROUP_PKRU(%r12), %esi
    call apply_config
    movabs $FNV_OFFSET, %rax
    mov %rax, line_hash
    movq $0, line_cases
    movq $0, line_faults
    mov GROUP_MASK(%r12), %rbp
    xor %r14d, %r14d                        /* the subset */
.Lnext_subset:
    xor %r15d, %r15d                        /* the access */
.Lnext_access:
    mov $EXCLUDED_ACCESSES, %eax
    bt %r15d, %eax
    jc .Laccess_done
    call run_case
.Laccess_done:
    inc %r15d
    cmp $ACCESSES, %r15d
    jb .Lnext_access
    sub %rbp, %r14                          /* the next subset of the mask */
    and %rbp, %r14
    jnz .Lnext_subset

    call print_line
    mov total_hash, %rsi
    mov line_hash, %rax
    call hash_word
    mov %rsi, total_hash
    mov line_cases, %rax
    add %rax, total_cases
    mov line_faults, %rax
    add %rax, total_faults
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

/*
 * run_case(%r14 = subset, %r15d = access): one case: the entries, INVLPG, the access, and
 * its record folded into line_hash. Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8-%r11.
 */
run_case:
    xor %ecx, %ecx
.Lwrite_entry:
    mov entry_address(, %rcx, 8), %rdx
    mov entry_value(, %rcx, 8), %rax
    mov %rax, (%rdx)
    inc %ecx
    cmp $4, %ecx
    jb .Lwrite_entry
    mov varied_entry, %rdx
    or %r14, (%rdx)
    movabs $TEST_VA, %rdi
    invlpg (%rdi)
    xor %eax, %eax
    mov %rax, case_faulted
    mov %rax, case_error_code
    mov %rax, case_cr2
    call run_access

    /* Word 0: the entries' low bytes from the PML4E down, the error code, the fault. */
    xor %eax, %eax
    mov $3, %ecx
.Lrecord_entry:
    shl $8, %rax
    mov entry_address(, %rcx, 8), %rdx
    mov (%rdx), %al
    dec %ecx
    jns .Lrecord_entry
    shl $24, %rax
    or case_error_code, %rax
    shl $8, %rax
    or case_faulted, %rax
    mov case_cr2, %rdx
.ifdef QEMU_TCG
    call qemu_masks
.endif
    mov line_hash, %rsi
    call hash_word
    mov %rdx, %rax
    call hash_word
    mov %rsi, line_hash
    incq line_cases
    mov case_faulted, %rax
    add %rax, line_faults
    ret

/* hash_word(%rsi = hash, %rax = word): the hash with the word folded in. Clobbers %rcx. */
hash_word:
    xor %rax, %rsi
    movabs $FNV_PRIME, %rcx
    imul %rcx, %rsi
    mov %rsi, %rcx
    shr $32, %rcx
    xor %rcx, %rsi
    ret

.ifdef QEMU_TCG
/*
 * qemu_masks(%rax = word 0, %rdx = word 1): the record with what QEMU's TCG (7.2) is known
 * to do differently masked out, on every backend alike, so that the QEMU_TCG variant
 * compares QEMU with the others on everything else. Returns word 0 in %rax.
 *   - Reserved-bit faults: SDM 4.7 sets P in the error code whenever the fault is not for a
 *     non-present entry, so a reserved-bit fault has P = 1; TCG leaves P clear. P is
 *     dropped from every RSVD error code.
 *   - Accessed flags on a faulting walk: TCG sets A in each entry as it walks, before it
 *     knows whether the access faults; Intel CPUs, KVM and Umbra set A only when the whole
 *     walk succeeds (the SDM leaves the order open). A faulting case's A bits are dropped.
 * A third difference cannot be masked, so the variant leaves its access kind out
 * (EXCLUDED_ACCESSES): SDM 4.6.1 says EFLAGS.AC never lifts SMAP for implicit supervisor
 * accesses, but TCG picks its SMAP-exempt MMU index for them at CPL 0 with AC = 1
 * (cpu_mmu_index_kernel), so implicit-read-ac reads user pages there.
 */
qemu_masks:
    test $PF_ERR_RSVD << 8, %eax
    jz .Lmasked_rsvd
    and $~(PF_ERR_P << 8), %rax
.Lmasked_rsvd:
    testb $1, %al
    jz .Lmasked_accessed
    movabs $~ENTRY_A_BITS, %rcx
    and %rcx, %rax
.Lmasked_accessed:
    ret
.endif

/*
 * run_access(%r15d = access): runs the access with %rdi = TEST_VA and returns when it has
 * completed or faulted; case_faulted, case_error_code and case_cr2 say which. The access
 * routines end at access_done, directly or through a handler, which returns from here on the
 * stack saved in case_rsp with RFLAGS as at boot. Clobbers %rax, %rdx.
 */
run_access:
    mov %rsp, case_rsp
    lea access_routines(%rip), %rax
    jmp *(%rax, %r15, 8)

access_done:
    pushq $RFLAGS_FIXED
    popfq
    mov case_rsp, %rsp
    movq $0, case_rsp
    ret

/* The CPL 0 accesses. */
access_read:
    movb TEST_DATA(%rdi), %al
    jmp access_done
access_read_ac:
    pushq $RFLAGS_FIXED | RFLAGS_AC
    popfq
    movb TEST_DATA(%rdi), %al
    jmp access_done
access_write:
    movb $0x5a, TEST_DATA(%rdi)
    jmp access_done
access_write_ac:
    pushq $RFLAGS_FIXED | RFLAGS_AC
    popfq
    movb $0x5a, TEST_DATA(%rdi)
    jmp access_done
access_fetch:
    call *%rdi
    jmp access_done
/* Loading FS from the LDT reads the descriptor at TEST_VA + TEST_LDT. */
access_implicit_read:
    mov $LDT_DATA_SELECTOR, %eax
    mov %eax, %fs
    jmp access_done
access_implicit_read_ac:
    pushq $RFLAGS_FIXED | RFLAGS_AC
    popfq
    mov $LDT_DATA_SELECTOR, %eax
    mov %eax, %fs
    jmp access_done

/* The CPL 3 accesses: IRETQ to the routine's user alias with the user stack. */
access_user_read:
    lea user_read(%rip), %rax
    jmp enter_user
access_user_write:
    lea user_write(%rip), %rax
    jmp enter_user
access_user_fetch:
    lea user_fetch(%rip), %rax
enter_user:
    movabs $USER_ALIAS_OFFSET, %rdx
    add %rdx, %rax
    pushq $SEL_USER_DATA | RPL_3
    movabs $USER_STACK_TOP, %rdx
    push %rdx
    pushq $RFLAGS_FIXED
    pushq $SEL_USER_CODE64 | RPL_3
    push %rax
    iretq

/*
 * The #PF handler: records a fault of the case in progress and ends its access. A fault with
 * no case in progress, or outside the test page, is a bug here: it is reported and the run
 * ends with EXIT_FATAL.
 */
case_page_fault:
    cmpq $0, case_rsp
    je .Lunexpected_fault
    mov %cr2, %rax
    movabs $TEST_VA, %rdx
    sub %rax, %rdx
    neg %rdx
    cmp $PAGE_SIZE, %rdx
    jae .Lunexpected_fault
    mov %rax, case_cr2
    mov (%rsp), %rax
    mov %rax, case_error_code
    movq $1, case_faulted
    jmp access_done
.Lunexpected_fault:
    lea unexpected_fault_message(%rip), %rdi
    call print_prefixed
    mov 8(%rsp), %rdi
    call print_hex
    lea cr2_infix(%rip), %rdi
    call puts
    mov %cr2, %rdi
    call print_hex
    mov $'\n', %edi
    call putc
    mov $EXIT_FATAL, %edi
    jmp exit

/*
 * print_line(%r12 = group, %r13d = configuration): "<group> wp=W smep=S smap=M nxe=N: ..."
 * with the line's counts and digest. Clobbers %rax, %rcx, %rdx, %rsi, %rdi.
 */
print_line:
    push %rbx
    mov GROUP_NAME(%r12), %rdi
    call puts
    xor %ebx, %ebx
.Lprint_config_bit:
    lea config_names(%rip), %rax
    mov (%rax, %rbx, 8), %rdi
    call puts
    xor %edi, %edi
    bt %ebx, %r13d
    adc $'0', %edi
    call putc
    inc %ebx
    cmp $4, %ebx
    jb .Lprint_config_bit
    mov line_cases, %rdi
    mov line_faults, %rsi
    mov line_hash, %rdx
    call print_counts
    pop %rbx
    ret

/* print_counts(%rdi = cases, %rsi = faults, %rdx = digest): ": N cases, F faults, digest
 * 0xH" and a newline. Clobbers %rax, %rcx, %rdx, %rsi, %rdi. */
print_counts:
    push %r12
    push %r13
    push %r14
    mov %rdi, %r12
    mov %rsi, %r13
    mov %rdx, %r14
    lea cases_infix(%rip), %rdi
    call puts
    mov %r12, %rdi
    call print_dec
    lea cases_suffix(%rip), %rdi
    call puts
    mov %r13, %rdi
    call print_dec
    lea faults_suffix(%rip), %rdi
    call puts
    mov %r14, %rdi
    call print_hex
    mov $'\n', %edi
    call putc
    pop %r14
    pop %r13
    pop %r12
    ret

/* ---------------------------------------------------------------- CPL 3 */

/* Run from the ROM's user alias with %rdi = TEST_VA; INT3 ends the case. */
user_read:
    movb TEST_DATA(%rdi), %al
    int3
user_write:
    movb $0x5a, TEST_DATA(%rdi)
    int3
user_fetch:
    call *%rdi
    int3

    .section .note.GNU-stack, "", @progbits
