/*
 * pt-modify.s: the guest changes its own page tables, as an operating system does, in every
 * paging mode it can enter, and records what its accesses see afterwards: which frame a
 * read or a write reached, or which page fault it took (error code and CR2), and the
 * accessed and dirty flags the walks left. Nothing is judged where the SDM defines the
 * result: the lines are to be compared across Umbra's interpreter, KVM and QEMU. Where the
 * SDM allows more than one result (a translation the TLB may still hold), the line says only
 * whether the result was one of those allowed, never which.
 *
 * The modes (the `modes` table), each with page tables of its own:
 *   32-bit       32-bit paging, CR4.PSE = 0 (4 KiB pages only)
 *   32-bit-pse   32-bit paging, CR4.PSE = 1 (4 MiB pages too)
 *   pae          PAE paging (2 MiB pages too; the PDPTEs are loaded into registers)
 *   4-level      4-level paging in long mode
 *   5-level      5-level paging, only where CPUID.7.0:ECX[16] (LA57) is set; else one line
 *                "5-level: skipped, la57 not advertised (cpuid.7.0:ecx[16] = 0)"
 * The case runner is 32-bit code, so that one body serves every mode: legacy protected mode
 * for 32-bit and PAE paging, compatibility mode under 4- and 5-level paging. image_main, the
 * table builder and the printer are 64-bit code in the boot address space; run_mode switches
 * between them (64-bit -> compatibility mode -> paging off -> the mode's CR4, EFER.LME and CR3
 * -> paging on, and back the same way, as "Initializing IA-32e Mode" in the SDM has it). A
 * CPU that refuses the mode with #GP when CR0.PG is set (PVM runs guests in long mode only)
 * gets one line instead of the mode's:
 *   32-bit: skipped, setting cr0.pg raised #gp
 *
 * In every mode the test address V = TEST_VA (1 GiB) and V2 = V + 4 KiB have a page table of
 * their own, PT0, and a second one, PT1, waits: PT0 maps V to frame a and V2 to c, PT1 maps
 * V to b and V2 to d. Each frame holds its marker at offset 0; the large-page cases map V to
 * the 4 MiB frames large-a and large-b instead. Before every case the runner restores that
 * state (A and D clear everywhere) and reloads CR3, so each case starts with an empty TLB.
 * The cases (the `cases` table; [x] marks those that need x):
 *   remap-invlpg          read V; PTE(V) := b; INVLPG V; read V; write V
 *   remap-cr3             read V; PTE(V) := b; MOV to CR3; read V; write V
 *   remap-stale           read V; PTE(V) := b; read V (a or b); INVLPG V; read V
 *   unmap-invlpg          read V; PTE(V).P := 0; INVLPG V; read V; PTE(V) := b, present,
 *                         without INVLPG (SDM 4.10.4.3: no TLB entry comes from a non-present
 *                         entry); read V
 *   unmap-stale           read V; PTE(V).P := 0; read V (a or #PF); INVLPG V; read V
 *   write-protect-invlpg  write V; PTE(V).R/W := 0; INVLPG V; write V; PTE(V) := a writable
 *                         (A, D clear); INVLPG V; write V
 *   write-protect-stale   write V; PTE(V).R/W := 0; write V (a or #PF); INVLPG V; write V;
 *                         PTE(V).R/W := 1; write V (a, or the spurious #PF SDM 4.10.4.3
 *                         allows); INVLPG V; write V
 *   pde-switch-invlpg     read V, V2; PDE := PT1; INVLPG V; read V; read V2 (c or d: INVLPG V
 *                         leaves V2's TLB entry)
 *   pde-switch-cr3        read V, V2; PDE := PT1; MOV to CR3; read V, V2
 *   pde-switch-stale      read V; PDE := PT1; read V (a or b); INVLPG V; read V
 *   pdpte-switch-invlpg   [PDPTE] read V; PDPTE := a PD whose entry for V is PT1; INVLPG V;
 *                         read V. PAE keeps using the PDPTE registers loaded by MOV to CR3
 *                         (SDM 4.4.1), so V still reads a there; the other modes read b.
 *   pdpte-switch-cr3      [PDPTE] the same with MOV to CR3: b everywhere
 *   large-remap-invlpg    [large] PDE := large-a; MOV to CR3; read V; PDE := large-b;
 *                         INVLPG V; read V; write V
 *   large-remap-stale     [large] PDE := large-a; MOV to CR3; read V; PDE := large-b; read V
 *                         (large-a or large-b); INVLPG V; read V
 *   large-split-invlpg    [large] PDE := large-a; MOV to CR3; read V; PDE := PT0; INVLPG V;
 *                         read V
 *   large-merge-invlpg    [large] read V (through PT0); PDE := large-b; INVLPG V; read V;
 *                         write V
 *   global-remap-cr3      [PGE] CR4.PGE := 1; PTE(V) := a, global; read V; PTE(V) := b,
 *                         global; MOV to CR3; read V (a or b: MOV to CR3 keeps global
 *                         entries); INVLPG V; read V; CR4.PGE := 0
 *   global-remap-pge      [PGE] CR4.PGE := 1; PTE(V) := a, global; read V; PTE(V) := b,
 *                         global; CR4.PGE := 0 (which flushes global entries too); read V
 * After its accesses a case records the A and D flags of the entries they went through.
 * [PDPTE] cases run in the modes with a level above the PD, [large] ones in those with large
 * pages; without PGE (CPUID.1:EDX[13]) the [PGE] cases print "<mode> <case>: skipped, pge not
 * advertised (cpuid.1:edx[13] = 0)".
 *
 * The accesses run at CPL 3: on hosts whose KVM is PVM, user code runs natively (KVM's shadow
 * paging decides its faults) while CPL 0 code runs in KVM's instruction emulator. CPL 0 only
 * writes the page tables, INVLPGs, and writes CR3 and CR4. A user access is entered with IRET
 * and left with INT3 through a DPL 3 gate (or with the #PF); either way the runner resumes on
 * its saved stack (access_resume). In long mode the way in is IRETQ from 64-bit code, to
 * 64-bit user code, and the gates are 64-bit, their handlers going back to the 32-bit runner
 * with a far return: on PVM hosts a 32-bit IRET at CPL 0 in compatibility mode raises #GP
 * (KVM's instruction emulator has IRET for real mode only; PVM runs IRETQ itself), and INT3 in
 * 32-bit user code arrives as #UD. User code runs from the ROM itself, which every mode maps
 * user-readable: user_read and user_write are the same bytes as 32-bit and as 64-bit code.
 * Each write stores a value of its own in a slot of its own (WRITE_SLOT_BASE + 4n, n counting
 * the mode's writes), so the printer finds afterwards which frame it reached; its CR2, if it
 * faults, is V plus that offset.
 *
 * Output: one line per case and mode, the accesses and flags in order, then a total:
 *   32-bit remap-invlpg: read a, read b, write b, pte a=1 d=1
 *   32-bit unmap-stale: read a, read old-or-new ok, read #pf 0x4 cr2 0x40000000
 *   ...
 *   umbra pt-modify: total: <n> cases, digest 0x<h>
 * "read x" or "write x" names the frame reached (its marker in hex if it is none of them);
 * "old-or-new ok" is an access with two allowed results that gave one of them, and "old-or-
 * new FAILED (<what it did>)" one that gave neither. "pte a=A d=D" are a 4 KiB page's PTE
 * flags, "pde a=A" a PDE's that points to a page table, "pde a=A d=D" a large page's. The
 * digest hashes what the lines print (FNV-1a over 64-bit words, as in mmu-access.s). The exit
 * status is the number of FAILED accesses, 0 when every access gave a result the SDM allows.
 *
 * Memory: everything below 1 MiB (code data, stack, the frame pool with every table and the
 * 4 KiB frames) is identity-mapped, supervisor-only, in every mode; the ROM is identity-
 * mapped user-readable; large-a and large-b are at LARGE_A and LARGE_B (4 MiB-aligned).
 */
    .include "umbra.inc"
    IMAGE_STRINGS pt-modify

/* Where things are. */
    .set TEST_VA, 0x40000000
    .set TEST_VA2, TEST_VA + PAGE_SIZE
    .set LARGE_A, 0x800000
    .set LARGE_B, 0xc00000
    .set IDENTITY_END, 0x100000             /* identity-mapped below this, in every mode */
    .set ROM_END, 0x100000000
    .set WRITE_SLOT_BASE, 0x10              /* write n stores at offset WRITE_SLOT_BASE + 4n */
    .set WRITE_SLOTS, (PAGE_SIZE - WRITE_SLOT_BASE) / 4
    .set WRITE_TAG, 0x57000000              /* write n of mode m stores WRITE_TAG + m << 16 + n */

/* The markers at offset 0 of each frame, in the order of frame_addresses. */
    .set MARK_A, 0x1000a
    .set MARK_B, 0x1000b
    .set MARK_C, 0x1000c
    .set MARK_D, 0x1000d
    .set MARK_LARGE_A, 0x2000a
    .set MARK_LARGE_B, 0x2000b
    .set FRAMES, 6
    .set FAULT_TAG, 0xf0000000              /* an outcome: FAULT_TAG | the #PF error code */
    .set PF_USER_READ_NOT_PRESENT, 0x4
    .set PF_USER_WRITE_READ_ONLY, 0x7

/* The GDT: the boot selectors keep their places (traps.s's IDT gates name SEL_CODE64). */
    .set SEL_USER_DATA, 0x20
    .set SEL_USER_CODE32, 0x28
    .set SEL_USER_CODE64, 0x30
    .set SEL_TSS64, 0x38
    .set SEL_TSS32, 0x48
    .set GDT_SIZE, SEL_TSS32 + 8
    .set RPL_3, 3
    .set DESCRIPTOR_TYPE, 5                 /* the byte of a descriptor with P, DPL, type */
    .set TSS_AVAILABLE, 0x89                /* present, DPL 0, available TSS (LTR marks it busy) */
    .set TSS_SIZE, 104
    .set TSS_SP0, 4                         /* RSP0 in the 64-bit TSS, ESP0 in the 32-bit one */
    .set TSS32_SS0, 8
    .set TSS_IOMAP_BASE, 102
    .set TRAP_STACK_SIZE, 0x1000

/* The IDTs. */
    .set EXCEPTION_VECTORS, 32
    .set VECTOR_BP, 3
    .set VECTOR_GP, 13
    .set VECTOR_PF, 14
    .set GATE64_SIZE, 16
    .set GATE32_SIZE, 8
    .set GATE_DPL3, 0x6000                  /* added to a DPL 0 interrupt gate's type word */
    .set GATE32_INTERRUPT, 0x8e00           /* present, DPL 0, 32-bit interrupt gate */
    .set STUB32_SIZE, 16
    /* Vectors for which the CPU pushes an error code: 8, 10-14, 17, 21, 29, 30. */
    .set VECTORS_WITH_ERROR_CODE, 0x60227d00

/* Paging bits beyond umbra.inc's. */
    .set PTE_US, 1 << 2
    .set PTE_A, 1 << 5
    .set PTE_D, 1 << 6
    .set PTE_G, 1 << 8
    .set PTE_FLAGS_MASK, 0xfff
    .set LEAF, PTE_P | PTE_RW | PTE_US
    .set UPPER, PTE_P | PTE_RW | PTE_US
    .set CR4_PSE, 1 << 4
    .set CR4_PGE, 1 << 7
    .set CR4_LA57, 1 << 12
    .set RFLAGS_FIXED, 1 << 1

/* CPU features (bits of `features`). */
    .set FEATURE_LA57, 1 << 0
    .set FEATURE_PGE, 1 << 1

/* One mode in the `modes` table. */
    .set MODE_NAME, 0                       /* .long: ROM addresses fit in 32 bits */
    .set MODE_CR4, 4
    .set MODE_LEVELS, 8                     /* 2 (32-bit paging) to 5 */
    .set MODE_INDEX_BITS, 9                 /* per level: 10 or 9 */
    .set MODE_ENTRY_SHIFT, 10               /* log2 of the entry size: 2 or 3 */
    .set MODE_FLAGS, 11
    .set MODE_NEEDS, 12                     /* FEATURE_* bits */
    .set MODE_SIZE, 16
    .set MODE_LONG, 1 << 0                  /* EFER.LME: long mode */
    .set MODE_LARGE, 1 << 1                 /* the PDE can map a large page */
    .set MODE_PDPTE_REGISTERS, 1 << 2       /* PAE: the root's entries take P alone */

.macro MODE name, cr4, levels, index_bits, entry_shift, flags, needs=0
    .pushsection .rodata.mode_names, "a"
.Lmode_name\@:
    .asciz "\name"
    .popsection
    .pushsection .rodata.modes, "a"
    .long .Lmode_name\@, \cr4
    .byte \levels, \index_bits, \entry_shift, \flags, \needs, 0, 0, 0
    .popsection
.endm

/* One case in the `cases` table. */
    .set CASE_NAME, 0
    .set CASE_ROUTINE, 4
    .set CASE_NEEDS, 8
    .set CASE_SIZE, 12
    .set NEEDS_PDPTE, 1 << 0                /* a level above the PD */
    .set NEEDS_LARGE, 1 << 1                /* large pages */
    .set NEEDS_PGE, 1 << 2                  /* CPUID.1:EDX[13] */

.macro CASE name, routine, needs=0
    .pushsection .rodata.case_names, "a"
.Lcase_name\@:
    .asciz "\name"
    .popsection
    .pushsection .rodata.cases, "a"
    .long .Lcase_name\@, \routine, \needs
    .popsection
.endm

/* One record of the runner, for the printer. */
    .set RECORD_KIND, 0
    .set RECORD_ARG, 4                      /* case: its index; access: the address; flags:
                                             * FLAGS_* */
    .set RECORD_FAULTED, 8                  /* flags: the entry's low 32 bits */
    .set RECORD_VALUE, 12                   /* read: the value; write: its slot */
    .set RECORD_ERROR, 16
    .set RECORD_CR2, 20
    .set RECORD_OLD, 24                     /* two allowed outcomes, or 0, 0: print it */
    .set RECORD_NEW, 28
    .set RECORD_SIZE, 32
    .set RECORDS, 256
    .set EV_CASE, 1
    .set EV_SKIPPED, 2
    .set EV_READ, 3
    .set EV_WRITE, 4
    .set EV_FLAGS, 5
    /* Which entry a flags record is about: a 4 KiB page's PTE (A and D), a PDE that points to
     * a page table (A), a PDE that maps a large page (A and D). */
    .set FLAGS_PTE, 0
    .set FLAGS_PDE, 1
    .set FLAGS_LARGE, 2

    .set FNV_OFFSET, 0xcbf29ce484222325
    .set FNV_PRIME, 0x100000001b3

/* ---------------------------------------------------------------- RAM */

    .bss
    .balign 16
gdt:
    .skip GDT_SIZE
    .balign 16
tss64:
    .skip TSS_SIZE
    .balign 16
tss32:
    .skip TSS_SIZE
    .balign 16
trap_stack:
    .skip TRAP_STACK_SIZE
trap_stack_top:
    .balign 8
idt32:
    .skip EXCEPTION_VECTORS * GATE32_SIZE
idt64_descriptor:                           /* as SIDT stored it: limit, 64-bit base */
    .skip 16
records:
    .skip RECORDS * RECORD_SIZE
records_end:

    .balign 8
features:
    .skip 8
base_cr4:
    .skip 8
mode_saved_rsp:                             /* image_main's stack while a mode runs */
    .skip 8
/* The current mode, as the table builder and the runner need it. */
mode_levels:
    .skip 1
mode_index_bits:
    .skip 1
mode_entry_shift:
    .skip 1
mode_flags:
    .skip 1
mode_cr4:
    .skip 4
mode_root:
    .skip 4
mode_name:
    .skip 4
/* The mode's entries the cases write (addresses) and what they write into them (values). */
pte_v:                                      /* PT0's entries for V and V2 */
    .skip 4
pte_v2:
    .skip 4
pt1_pte_v:                                  /* PT1's */
    .skip 4
pt1_pte_v2:
    .skip 4
pde_v:                                      /* the PDE above V */
    .skip 4
pt0_pde:                                    /* PT0, PT1 as that PDE's value */
    .skip 4
pt1_pde:
    .skip 4
pdpte_v:                                    /* the PDPTE above V, 0 in 32-bit paging */
    .skip 4
pd1_pdpte:                                  /* V's own PD, and the other one, as its value */
    .skip 4
pd2_pdpte:
    .skip 4
pd2_pde_v:                                  /* the other PD's entry for V (to PT1) */
    .skip 4
/* The frames, in the order of frame_marks. */
frame_addresses:
    .skip FRAMES * 4
    .set frame_a, frame_addresses
    .set frame_b, frame_addresses + 4
    .set frame_c, frame_addresses + 8
    .set frame_d, frame_addresses + 12
user_stack_top:
    .skip 4
/* The access in progress (the runner's; the handlers fill in the result). */
access_in_progress:
    .skip 4
access_saved_esp:
    .skip 4
access_va:
    .skip 4
access_faulted:
    .skip 4
access_value:
    .skip 4
access_error:
    .skip 4
access_cr2:
    .skip 4
judged_old:                                 /* the next access's two allowed outcomes */
    .skip 4
judged_new:
    .skip 4
write_count:
    .skip 4
write_tag:                                  /* WRITE_TAG + the mode's index << 16 */
    .skip 4
record_next:
    .skip 4
/* mode_enter is setting CR0.PG for a legacy mode; the CPU refused it with #GP. */
enabling_paging:
    .skip 4
paging_refused:
    .skip 4
/* An exception nobody expected in legacy mode, for image_main to report. */
fatal_pending:
    .skip 4
fatal_vector:
    .skip 4
fatal_error:
    .skip 4
fatal_eip:
    .skip 4
fatal_cr2:
    .skip 4
/* What the printer adds up. */
    .balign 8
total_hash:
    .skip 8
total_cases:
    .skip 8
failed_accesses:
    .skip 8
tokens_on_line:
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
    .quad 0x00cffb000000ffff                /* 0x28: user 32-bit code, DPL 3 */
    .quad 0x00affb000000ffff                /* 0x30: user 64-bit code, DPL 3 */
    /* 0x38: the 64-bit TSS (16 bytes) and 0x48: the 32-bit one; bases set by system_init. */
    .quad (TSS_SIZE - 1) | (TSS_AVAILABLE << 40)
    .quad 0
    .quad (TSS_SIZE - 1) | (TSS_AVAILABLE << 40)
gdt_template_end:
gdt_descriptor:
    .word GDT_SIZE - 1
    .quad gdt
idt32_descriptor:
    .word EXCEPTION_VECTORS * GATE32_SIZE - 1
    .long idt32

    .balign 4
frame_marks:
    .long MARK_A, MARK_B, MARK_C, MARK_D, MARK_LARGE_A, MARK_LARGE_B
frame_names:
    .long name_a, name_b, name_c, name_d, name_large_a, name_large_b
name_a:
    .asciz "a"
name_b:
    .asciz "b"
name_c:
    .asciz "c"
name_d:
    .asciz "d"
name_large_a:
    .asciz "large-a"
name_large_b:
    .asciz "large-b"

    .balign 4
flags_names:
    .long pte_name, pde_name, pde_name
pte_name:
    .asciz "pte"
pde_name:
    .asciz "pde"
a_infix:
    .asciz " a="
d_infix:
    .asciz " d="
read_name:
    .asciz "read "
write_name:
    .asciz "write "
pf_prefix:
    .asciz "#pf "
cr2_infix:
    .asciz " cr2 "
lost_name:
    .asciz "nowhere"
judged_ok:
    .asciz "old-or-new ok"
judged_failed:
    .asciz "old-or-new FAILED ("
colon:
    .asciz ":"
token_separator:
    .asciz ","
skipped_infix:
    .asciz ": skipped, "
no_la57_reason:
    .asciz "la57 not advertised (cpuid.7.0:ecx[16] = 0)"
paging_refused_reason:
    .asciz "setting cr0.pg raised #gp"
no_pge_reason:
    .asciz "pge not advertised (cpuid.1:edx[13] = 0)"
total_prefix:
    .asciz "total: "
cases_infix:
    .asciz " cases, digest "
unexpected_prefix:
    .asciz "unexpected exception "
in_infix:
    .asciz " in "
error_code_infix:
    .asciz ", error code "
rip_infix:
    .asciz ", rip "
fatal_cr2_infix:
    .asciz ", cr2 "

    .pushsection .rodata.modes, "a"
    .balign 4
modes:
    .popsection
    MODE 32-bit, 0, 2, 10, 2, 0
    MODE 32-bit-pse, CR4_PSE, 2, 10, 2, MODE_LARGE
    MODE pae, CR4_PAE, 3, 9, 3, MODE_LARGE|MODE_PDPTE_REGISTERS
    MODE 4-level, CR4_PAE, 4, 9, 3, MODE_LARGE|MODE_LONG
    MODE 5-level, CR4_PAE|CR4_LA57, 5, 9, 3, MODE_LARGE|MODE_LONG, FEATURE_LA57
    .pushsection .rodata.modes, "a"
modes_end:
    .popsection

    .pushsection .rodata.cases, "a"
    .balign 4
cases:
    .popsection
    CASE remap-invlpg, case_remap_invlpg
    CASE remap-cr3, case_remap_cr3
    CASE remap-stale, case_remap_stale
    CASE unmap-invlpg, case_unmap_invlpg
    CASE unmap-stale, case_unmap_stale
    CASE write-protect-invlpg, case_write_protect_invlpg
    CASE write-protect-stale, case_write_protect_stale
    CASE pde-switch-invlpg, case_pde_switch_invlpg
    CASE pde-switch-cr3, case_pde_switch_cr3
    CASE pde-switch-stale, case_pde_switch_stale
    CASE pdpte-switch-invlpg, case_pdpte_switch_invlpg, NEEDS_PDPTE
    CASE pdpte-switch-cr3, case_pdpte_switch_cr3, NEEDS_PDPTE
    CASE large-remap-invlpg, case_large_remap_invlpg, NEEDS_LARGE
    CASE large-remap-stale, case_large_remap_stale, NEEDS_LARGE
    CASE large-split-invlpg, case_large_split_invlpg, NEEDS_LARGE
    CASE large-merge-invlpg, case_large_merge_invlpg, NEEDS_LARGE
    CASE global-remap-cr3, case_global_remap_cr3, NEEDS_PGE
    CASE global-remap-pge, case_global_remap_pge, NEEDS_PGE
    .pushsection .rodata.cases, "a"
cases_end:
    .popsection

/* ---------------------------------------------------------------- 64-bit: setup */

    .text
    .code64

/* image_main: runs the cases in every mode the CPU has; returns the number of accesses that
 * gave neither of their two allowed results. */
    .global image_main
image_main:
    push %rbx
    push %r12
    push %r13
    call probe_features
    call system_init
    call frames_init
    mov %cr4, %rax
    mov %rax, base_cr4
    movabs $FNV_OFFSET, %rax
    mov %rax, total_hash
    lea modes(%rip), %r12
    xor %r13d, %r13d                        /* the mode's index */
.Lnext_mode:
    movl MODE_NAME(%r12), %eax
    mov %eax, mode_name
    movzbl MODE_NEEDS(%r12), %eax
    not %eax
    or features, %eax
    not %eax
    test %eax, %eax
    jz .Lmode_runs
    lea no_la57_reason(%rip), %rsi          /* LA57 is the only feature a mode needs */
    call print_mode_skipped
    jmp .Lmode_done
.Lmode_runs:
    call mode_prepare
    call run_mode
    cmpl $0, fatal_pending
    jne report_fatal
    cmpl $0, paging_refused
    jne .Lmode_refused
    call print_records
    jmp .Lmode_done
.Lmode_refused:
    movl $0, paging_refused
    lea paging_refused_reason(%rip), %rsi
    call print_mode_skipped
.Lmode_done:
    add $MODE_SIZE, %r12
    inc %r13d
    lea modes_end(%rip), %rax
    cmp %rax, %r12
    jb .Lnext_mode

    lea total_prefix(%rip), %rdi
    call print_prefixed
    mov total_cases, %rdi
    call print_dec
    lea cases_infix(%rip), %rdi
    call puts
    mov total_hash, %rdi
    call print_hex
    mov $'\n', %edi
    call putc
    mov failed_accesses, %rax
    pop %r13
    pop %r12
    pop %rbx
    ret

/* print_mode_skipped(%r12 = mode, %rsi = reason): "<mode>: skipped, <reason>". Clobbers
 * %rax, %rdx, %rdi. */
print_mode_skipped:
    movl MODE_NAME(%r12), %edi
    call puts
    lea skipped_infix(%rip), %rdi
    call puts
    mov %rsi, %rdi
    call puts
    mov $'\n', %edi
    jmp putc

/* probe_features: sets `features` from CPUID. Clobbers %rax, %rcx, %rdx, %rsi. */
probe_features:
    push %rbx
    xor %esi, %esi
    mov $1, %eax
    cpuid
    bt $13, %edx
    jnc .Lprobe_leaf7
    or $FEATURE_PGE, %esi
.Lprobe_leaf7:
    xor %eax, %eax
    cpuid
    cmp $7, %eax
    jb .Lprobe_done
    mov $7, %eax
    xor %ecx, %ecx
    cpuid
    bt $16, %ecx
    jnc .Lprobe_done
    or $FEATURE_LA57, %esi
.Lprobe_done:
    mov %rsi, features
    pop %rbx
    ret

/*
 * system_init: this image's GDT (the boot selectors, user data and 32-bit user code, a
 * 64-bit and a 32-bit TSS, both with the trap stack for CPL 0), the #BP (DPL 3) and #PF
 * gates of traps.s's IDT pointed at this image's handlers, and the 32-bit IDT for legacy
 * mode. Loads the GDT and the 64-bit TSS. Clobbers %rax, %rcx, %rdx, %rsi, %rdi.
 */
system_init:
    lea gdt_template(%rip), %rsi
    mov $gdt, %edi
    mov $(gdt_template_end - gdt_template) / 8, %ecx
.Lcopy_gdt:
    mov (%rsi), %rax
    mov %rax, (%rdi)
    add $8, %rsi
    add $8, %rdi
    dec %ecx
    jnz .Lcopy_gdt
    mov $gdt + SEL_TSS64, %edi
    mov $tss64, %eax
    call set_descriptor_base
    mov $gdt + SEL_TSS32, %edi
    mov $tss32, %eax
    call set_descriptor_base
    /* No I/O bitmaps (they would start past the limit): CPL 3 gets no ports. */
    movq $trap_stack_top, tss64 + TSS_SP0
    movw $TSS_SIZE, tss64 + TSS_IOMAP_BASE
    movl $trap_stack_top, tss32 + TSS_SP0
    movl $SEL_DATA, tss32 + TSS32_SS0
    movw $TSS_SIZE, tss32 + TSS_IOMAP_BASE
    lgdt gdt_descriptor(%rip)
    mov $SEL_TSS64, %eax
    ltr %ax

    sidt idt64_descriptor
    mov idt64_descriptor + 2, %rdi
    lea bp64(%rip), %rax
    lea VECTOR_BP * GATE64_SIZE(%rdi), %rsi
    call set_gate64
    addw $GATE_DPL3, VECTOR_BP * GATE64_SIZE + 4(%rdi)
    lea pf64(%rip), %rax
    lea VECTOR_PF * GATE64_SIZE(%rdi), %rsi
    call set_gate64

    mov $idt32, %edi
    lea stubs32(%rip), %rsi
    xor %ecx, %ecx
.Lgate32:
    mov %rsi, %rax
    mov $GATE32_INTERRUPT, %edx
    cmp $VECTOR_PF, %ecx
    jne .Lgate32_not_pf
    lea pf32(%rip), %rax
.Lgate32_not_pf:
    cmp $VECTOR_BP, %ecx
    jne .Lgate32_write
    lea bp32(%rip), %rax
    add $GATE_DPL3, %edx
.Lgate32_write:
    mov %ax, (%rdi)
    movw $SEL_CODE32, 2(%rdi)
    mov %dx, 4(%rdi)
    shr $16, %eax
    mov %ax, 6(%rdi)
    add $STUB32_SIZE, %rsi
    add $GATE32_SIZE, %rdi
    inc %ecx
    cmp $EXCEPTION_VECTORS, %ecx
    jb .Lgate32
    ret

/* set_descriptor_base(%rdi = descriptor, %eax = base below 4 GiB). Clobbers %rax. */
set_descriptor_base:
    mov %ax, 2(%rdi)
    shr $16, %eax
    mov %al, 4(%rdi)
    mov %ah, 7(%rdi)
    ret

/* set_gate64(%rsi = gate, %rax = handler): points a 64-bit gate traps.s made at the
 * handler. Clobbers %rax. */
set_gate64:
    mov %ax, (%rsi)
    shr $16, %rax
    mov %ax, 6(%rsi)
    shr $16, %rax
    mov %eax, 8(%rsi)
    ret

/* frames_init: the 4 KiB frames a to d and the user stack from the pool, and every frame's
 * marker. Clobbers %rax, %rcx, %rdx, %rsi. */
frames_init:
    xor %ecx, %ecx
.Lsmall_frame:
    call alloc_frame
    mov %eax, frame_addresses(, %rcx, 4)
    inc %ecx
    cmp $4, %ecx
    jb .Lsmall_frame
    movl $LARGE_A, frame_addresses + 4 * 4
    movl $LARGE_B, frame_addresses + 5 * 4
    lea frame_marks(%rip), %rsi
    xor %ecx, %ecx
.Lmark_frame:
    movl frame_addresses(, %rcx, 4), %eax
    movl (%rsi, %rcx, 4), %edx
    movl %edx, (%rax)
    inc %ecx
    cmp $FRAMES, %ecx
    jb .Lmark_frame
    call alloc_frame
    add $PAGE_SIZE, %eax
    mov %eax, user_stack_top
    ret

/* ---------------------------------------------------------------- 64-bit: a mode's tables */

/*
 * mode_prepare(%r12 = mode): the mode's page tables from the pool and the variables the
 * runner reads: the identity map below IDENTITY_END (supervisor), the user stack and the
 * ROM (user), V and V2 through PT0, PT1, and above PT0 a second PD (pd2) for the PDPTE cases.
 * The entries are written as the runner's reset_case leaves them. Clobbers %rax, %rcx, %rdx,
 * %rsi, %rdi, %r8-%r11.
 */
mode_prepare:
    push %rbx
    movl MODE_CR4(%r12), %eax
    mov %eax, mode_cr4
    mov MODE_LEVELS(%r12), %al
    mov %al, mode_levels
    mov MODE_INDEX_BITS(%r12), %al
    mov %al, mode_index_bits
    mov MODE_ENTRY_SHIFT(%r12), %al
    mov %al, mode_entry_shift
    mov MODE_FLAGS(%r12), %al
    mov %al, mode_flags
    call alloc_frame
    mov %eax, mode_root
    mov %r13d, %eax
    shl $16, %eax
    add $WRITE_TAG, %eax
    mov %eax, write_tag

    xor %ebx, %ebx                          /* the identity map */
.Lidentity_page:
    mov %rbx, %rsi
    lea PTE_P | PTE_RW(%rbx), %rdx
    call map_4k
    add $PAGE_SIZE, %ebx
    cmp $IDENTITY_END, %ebx
    jb .Lidentity_page
    movl user_stack_top, %esi
    sub $PAGE_SIZE, %esi
    lea PTE_P | PTE_RW | PTE_US(%rsi), %rdx
    call map_4k
    mov $ROM_BASE, %ebx
.Lrom_page:
    mov %rbx, %rsi
    lea PTE_P | PTE_US(%rbx), %rdx
    call map_4k
    add $PAGE_SIZE, %rbx
    movabs $ROM_END, %rax
    cmp %rax, %rbx
    jb .Lrom_page

    mov $TEST_VA, %esi
    mov $1, %edx
    call mode_entry
    mov %eax, pte_v
    mov $TEST_VA2, %esi
    mov $1, %edx
    call mode_entry
    mov %eax, pte_v2
    mov $TEST_VA, %esi
    mov $2, %edx
    call mode_entry
    mov %eax, pde_v
    movl (%rax), %eax
    and $~PTE_FLAGS_MASK, %eax
    or $UPPER, %eax
    mov %eax, pt0_pde
    call alloc_frame                        /* PT1 */
    lea UPPER(%rax), %ecx
    mov %ecx, pt1_pde
    mov %rax, %rbx
    mov $TEST_VA, %esi
    mov $1, %edx
    call entry_offset
    add %ebx, %eax
    mov %eax, pt1_pte_v
    mov $TEST_VA2, %esi
    mov $1, %edx
    call entry_offset
    add %ebx, %eax
    mov %eax, pt1_pte_v2

    movl $0, pdpte_v
    cmpb $3, mode_levels
    jb .Lprepared
    mov $TEST_VA, %esi
    mov $3, %edx
    call mode_entry
    mov %eax, pdpte_v
    movl (%rax), %ecx
    mov %ecx, pd1_pdpte
    and $PTE_FLAGS_MASK, %ecx               /* P alone in PAE's PDPTEs, else UPPER */
    call alloc_frame                        /* pd2 */
    or %eax, %ecx
    mov %ecx, pd2_pdpte
    mov %rax, %rbx
    mov $TEST_VA, %esi
    mov $2, %edx
    call entry_offset
    add %ebx, %eax
    mov %eax, pd2_pde_v
.Lprepared:
    pop %rbx
    ret

/* map_4k(%rsi = virtual address, %rdx = PTE): writes the PTE into the mode's tables, making
 * the tables above it. Clobbers %rax, %rcx, %rdx, %rdi, %r8-%r11. */
map_4k:
    push %rdx
    mov $1, %edx
    call mode_entry
    pop %rdx
    movl %edx, (%rax)
    ret

/*
 * mode_entry(%rsi = virtual address, %edx = level, 1 for the PTE): the address of the entry
 * at that level in the mode's tables, in %rax; missing tables above it come from the pool,
 * linked with UPPER (P alone in PAE's PDPTEs: their R/W and U/S bits are reserved). Entries
 * are written as 32 bits: every frame is below 4 GiB and no entry sets a bit above 31, so a
 * PAE or long-mode entry's upper half stays zero. Clobbers %rcx, %rdx, %rdi, %r8-%r11.
 */
mode_entry:
    mov %edx, %r10d                         /* the level wanted */
    movzbl mode_levels, %edx                /* the level of the table at %rdi */
    movl mode_root, %edi
.Lentry_walk:
    call entry_offset
    add %rdi, %rax
    cmp %r10d, %edx
    je .Lentry_found
    movl (%rax), %edi
    test $PTE_P, %edi
    jnz .Lentry_next
    mov %rax, %r11
    call alloc_frame
    mov %eax, %edi
    or $UPPER, %edi
    cmpb %dl, mode_levels
    jne .Lentry_link
    testb $MODE_PDPTE_REGISTERS, mode_flags
    jz .Lentry_link
    and $~(PTE_RW | PTE_US), %edi
.Lentry_link:
    movl %edi, (%r11)
.Lentry_next:
    and $~PTE_FLAGS_MASK, %edi
    dec %edx
    jmp .Lentry_walk
.Lentry_found:
    ret

/* entry_offset(%rsi = virtual address, %edx = level): the offset of its entry in a table of
 * that level of the current mode, in %rax. Clobbers %rcx, %r8, %r9. */
entry_offset:
    movzbl mode_index_bits, %r8d
    lea -1(%rdx), %ecx
    imul %r8d, %ecx
    add $12, %ecx                           /* the index's shift */
    mov %rsi, %rax
    shr %cl, %rax
    mov %r8d, %ecx
    mov $1, %r9d
    shl %cl, %r9d
    dec %r9d
    and %r9, %rax
    movzbl mode_entry_shift, %ecx
    shl %cl, %rax
    ret

/* ---------------------------------------------------------------- 64-bit: running a mode */

/*
 * run_mode: runs the cases in the mode mode_prepare set up and comes back to the boot
 * address space. The upper halves of the general registers are undefined once the CPU has
 * left 64-bit mode (SDM vol. 1, 3.4.1.1), so everything that must survive is in memory: the
 * stack pointer in mode_saved_rsp, the callee-saved registers on that stack. Clobbers %rax,
 * %rcx, %rdx, %rsi, %rdi, %r8-%r11.
 */
run_mode:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, mode_saved_rsp
    pushq $SEL_CODE32
    lea mode_enter(%rip), %rax
    push %rax
    lretq
mode_returned:
    mov mode_saved_rsp, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

/* The long-mode handlers of the runner's accesses: INT3 ends a user access that completed
 * (%eax holds what a read read), #PF one that faulted. Either way the runner resumes in
 * compatibility mode on its own stack (access_resume); SS is NULL after an interrupt from
 * CPL 3 in long mode, and compatibility mode needs a real one. */
bp64:
    cmpl $0, access_in_progress
    je .Lunexpected_bp64
    mov %eax, access_value
    jmp .Lresume64
pf64:
    cmpl $0, access_in_progress
    je .Lunexpected_pf64
    mov (%rsp), %eax
    mov %eax, access_error
    mov %cr2, %rax
    mov %eax, access_cr2
    movl $1, access_faulted
.Lresume64:
    mov $SEL_DATA, %eax
    mov %eax, %ss
    pushq $SEL_CODE32
    lea access_resume(%rip), %rax
    push %rax
    lretq
.Lunexpected_bp64:
    pushq $0
    movl $VECTOR_BP, fatal_vector
    jmp .Lunexpected64
.Lunexpected_pf64:
    movl $VECTOR_PF, fatal_vector
.Lunexpected64:
    mov (%rsp), %eax
    mov %eax, fatal_error
    mov 8(%rsp), %eax
    mov %eax, fatal_eip
    mov %cr2, %rax
    mov %eax, fatal_cr2
    /* fall through */

/* report_fatal: "umbra pt-modify: unexpected exception V in <mode>, error code E, rip R,
 * cr2 C" from the fatal_* variables, and the run ends with EXIT_FATAL. */
report_fatal:
    lea unexpected_prefix(%rip), %rdi
    call print_prefixed
    movl fatal_vector, %edi
    call print_hex
    lea in_infix(%rip), %rdi
    call puts
    movl mode_name, %edi
    call puts
    lea error_code_infix(%rip), %rdi
    call puts
    movl fatal_error, %edi
    call print_hex
    lea rip_infix(%rip), %rdi
    call puts
    movl fatal_eip, %edi
    call print_hex
    lea fatal_cr2_infix(%rip), %rdi
    call puts
    movl fatal_cr2, %edi
    call print_hex
    mov $'\n', %edi
    call putc
    mov $EXIT_FATAL, %edi
    jmp exit

/* ---------------------------------------------------------------- 64-bit: the lines */

/*
 * print_records(%r12 = mode, %r13d = its index): the mode's lines from the runner's records,
 * each folded into total_hash. Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8-%r11.
 */
print_records:
    push %rbx
    push %r14
    mov $records, %ebx
.Lnext_record:
    cmpl record_next, %ebx
    jae .Lrecords_done
    movl RECORD_KIND(%rbx), %esi
    call hash_into_total
    cmp $EV_CASE, %esi
    je .Lline_start
    cmp $EV_SKIPPED, %esi
    je .Lline_start
    cmp $EV_FLAGS, %esi
    je .Lprint_flags
    call print_access
    jmp .Lrecord_done
.Lline_start:
    cmp $records, %ebx
    je .Lfirst_line
    mov $'\n', %edi
    call putc
.Lfirst_line:
    call print_case_name
    movq $0, tokens_on_line
    cmpl $EV_SKIPPED, RECORD_KIND(%rbx)
    je .Lprint_skip_reason
    incq total_cases
    lea colon(%rip), %rdi
    call puts
    jmp .Lrecord_done
.Lprint_skip_reason:
    lea skipped_infix(%rip), %rdi
    call puts
    lea no_pge_reason(%rip), %rdi           /* PGE is the only feature a case needs */
    call puts
    jmp .Lrecord_done
.Lprint_flags:
    call print_separator
    movl RECORD_ARG(%rbx), %r14d
    lea flags_names(%rip), %rax
    movl (%rax, %r14, 4), %edi
    call puts
    lea a_infix(%rip), %rdi
    call puts
    movl RECORD_FAULTED(%rbx), %esi         /* the entry */
    shr $5, %esi
    and $1, %esi
    call hash_into_total
    lea '0'(%rsi), %edi
    call putc
    cmp $FLAGS_PDE, %r14d
    je .Lrecord_done
    lea d_infix(%rip), %rdi
    call puts
    movl RECORD_FAULTED(%rbx), %esi
    shr $6, %esi
    and $1, %esi
    call hash_into_total
    lea '0'(%rsi), %edi
    call putc
.Lrecord_done:
    add $RECORD_SIZE, %ebx
    jmp .Lnext_record
.Lrecords_done:
    cmp $records, %ebx
    je .Lno_lines
    mov $'\n', %edi
    call putc
.Lno_lines:
    pop %r14
    pop %rbx
    ret

/* print_case_name(%rbx = record, %r12 = mode): "<mode> <case>", the pair hashed too.
 * Clobbers %rax, %rcx, %rdx, %rsi, %rdi. */
print_case_name:
    mov %r13, %rsi
    call hash_into_total
    movl RECORD_ARG(%rbx), %esi
    call hash_into_total
    movl MODE_NAME(%r12), %edi
    call puts
    mov $' ', %edi
    call putc
    movl RECORD_ARG(%rbx), %eax
    imul $CASE_SIZE, %eax
    lea cases(%rip), %rdx
    movl CASE_NAME(%rdx, %rax), %edi
    jmp puts

/* print_separator: " " before a line's first token, ", " before the others. Clobbers %rax,
 * %rdx, %rdi. */
print_separator:
    cmpq $0, tokens_on_line
    je .Lfirst_token
    lea token_separator(%rip), %rdi
    call puts
.Lfirst_token:
    incq tokens_on_line
    mov $' ', %edi
    jmp putc

/*
 * print_access(%rbx = record): "read <outcome>" or "write <outcome>"; for an access with two
 * allowed outcomes, "old-or-new ok" if it gave one of them, else "old-or-new FAILED
 * (<outcome>)" and one more failed access. Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8-%r11.
 */
print_access:
    push %r14
    call print_separator
    lea read_name(%rip), %rdi
    cmpl $EV_READ, RECORD_KIND(%rbx)
    je .Laccess_name
    lea write_name(%rip), %rdi
.Laccess_name:
    call puts
    call access_outcome
    mov %eax, %r14d
    cmpl $0, RECORD_OLD(%rbx)
    je .Lprint_outcome
    /* Judged: only whether it was allowed goes into the line and the hash. A fault counts
     * only at the address accessed. */
    cmpl $0, RECORD_FAULTED(%rbx)
    je .Ljudge_outcome
    movl RECORD_CR2(%rbx), %eax
    cmpl RECORD_ARG(%rbx), %eax
    jne .Ljudged_failed
.Ljudge_outcome:
    cmpl RECORD_OLD(%rbx), %r14d
    je .Ljudged_ok
    cmpl RECORD_NEW(%rbx), %r14d
    je .Ljudged_ok
.Ljudged_failed:
    incq failed_accesses
    mov $0, %esi
    call hash_into_total
    lea judged_failed(%rip), %rdi
    call puts
    call print_outcome
    mov $')', %edi
    call putc
    jmp .Laccess_printed
.Ljudged_ok:
    mov $1, %esi
    call hash_into_total
    lea judged_ok(%rip), %rdi
    call puts
    jmp .Laccess_printed
.Lprint_outcome:
    mov %r14, %rsi
    call hash_into_total
    call print_outcome
.Laccess_printed:
    pop %r14
    ret

/* print_outcome(%rbx = record, %r14d = its outcome): "#pf 0x<error> cr2 0x<cr2>", the name of
 * the frame reached, "nowhere" for a write no frame holds, or the value a read read if it is
 * no frame's marker. The fault's CR2 is hashed too. Clobbers %rax, %rcx, %rdx, %rsi, %rdi. */
print_outcome:
    cmpl $0, RECORD_FAULTED(%rbx)
    je .Lnot_faulted
    movl RECORD_CR2(%rbx), %esi
    call hash_into_total
    lea pf_prefix(%rip), %rdi
    call puts
    movl RECORD_ERROR(%rbx), %edi
    call print_hex
    lea cr2_infix(%rip), %rdi
    call puts
    movl RECORD_CR2(%rbx), %edi
    jmp print_hex
.Lnot_faulted:
    lea frame_marks(%rip), %rdx
    xor %ecx, %ecx
.Lfind_mark:
    cmpl (%rdx, %rcx, 4), %r14d
    je .Lmark_found
    inc %ecx
    cmp $FRAMES, %ecx
    jb .Lfind_mark
    lea lost_name(%rip), %rdi
    test %r14d, %r14d
    jz puts
    mov %r14, %rdi
    jmp print_hex
.Lmark_found:
    lea frame_names(%rip), %rdx
    movl (%rdx, %rcx, 4), %edi
    jmp puts

/* access_outcome(%rbx = record): %eax = FAULT_TAG | the error code if it faulted, else the
 * value a read read, or the marker of the frame that holds a write's value (0 if none does).
 * Clobbers %rcx, %rdx, %r8. */
access_outcome:
    cmpl $0, RECORD_FAULTED(%rbx)
    je .Lcompleted
    movl RECORD_ERROR(%rbx), %eax
    or $FAULT_TAG, %eax
    ret
.Lcompleted:
    movl RECORD_VALUE(%rbx), %eax
    cmpl $EV_READ, RECORD_KIND(%rbx)
    je .Loutcome_done
    mov write_tag, %edx                     /* the value the write stored */
    add %eax, %edx
    xor %ecx, %ecx
.Lscan_frame:
    movl frame_addresses(, %rcx, 4), %eax
    add $WRITE_SLOT_BASE, %eax
    movl RECORD_VALUE(%rbx), %r8d
    lea (%rax, %r8, 4), %rax
    cmpl %edx, (%rax)
    je .Lwrite_found
    inc %ecx
    cmp $FRAMES, %ecx
    jb .Lscan_frame
    xor %eax, %eax
    ret
.Lwrite_found:
    lea frame_marks(%rip), %rax
    movl (%rax, %rcx, 4), %eax
.Loutcome_done:
    ret

/* hash_into_total(%rsi = word): folds it into total_hash as mmu-access.s folds its words.
 * Clobbers %rcx, %rdx. */
hash_into_total:
    mov total_hash, %rdx
    xor %rsi, %rdx
    movabs $FNV_PRIME, %rcx
    imul %rcx, %rdx
    mov %rdx, %rcx
    shr $32, %rcx
    xor %rcx, %rdx
    mov %rdx, total_hash
    ret

/* ---------------------------------------------------------------- 32-bit: the mode switch */

    .code32

/*
 * mode_enter: from image_main's 64-bit code (compatibility mode, CPL 0) into the mode, runs
 * the cases and goes back. Paging goes off (which leaves long mode), then EFER.LME, CR4 and
 * CR3 are the mode's and paging goes on: legacy 32-bit or PAE paging with the 32-bit IDT and
 * TSS, or long mode again, in compatibility mode, with the 64-bit ones. DS and ES hold the
 * user data segment throughout, as user code needs (IRET would load null into a DPL 0 one).
 */
mode_enter:
    mov $SEL_DATA, %eax
    mov %eax, %ss
    mov $SEL_USER_DATA | RPL_3, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %cr0, %eax
    and $~CR0_PG, %eax
    mov %eax, %cr0
    mov $MSR_EFER, %ecx
    rdmsr
    and $~EFER_LME, %eax
    testb $MODE_LONG, mode_flags
    jz .Lset_efer
    or $EFER_LME, %eax
.Lset_efer:
    wrmsr
    mov mode_cr4, %eax
    mov %eax, %cr4
    mov mode_root, %eax
    mov %eax, %cr3
    testb $MODE_LONG, mode_flags
    jnz .Lpaging_on
    lidt idt32_descriptor
    movl $1, enabling_paging
.Lpaging_on:
    mov %cr0, %eax
    or $CR0_PG, %eax
    mov %eax, %cr0
    testb $MODE_LONG, mode_flags
    jnz .Lrun
    movl $0, enabling_paging
    mov $SEL_TSS32, %eax
    call load_tss
.Lrun:
    call run_cases
    /* fall through */

/* mode_leave: back to the boot address space in long mode, and on to mode_returned in 64-bit
 * code. Also the way out of legacy mode after an unexpected exception (legacy_unexpected). */
mode_leave:
    mov %cr0, %eax
    and $~CR0_PG, %eax
    mov %eax, %cr0
    lidt idt64_descriptor                   /* its base is below 4 GiB: the 6-byte form does */
    mov base_cr4, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $CR0_PG, %eax
    mov %eax, %cr0
    mov $SEL_TSS64, %eax
    call load_tss
    ljmp $SEL_CODE64, $mode_returned

/* load_tss(%eax = selector): LTR, after marking the descriptor available again (LTR marks it
 * busy, and refuses a busy one). */
load_tss:
    movb $TSS_AVAILABLE, gdt + DESCRIPTOR_TYPE(%eax)
    ltr %ax
    ret

/* The legacy-mode handlers: as bp64 and pf64, on the 32-bit IDT. */
bp32:
    cmpl $0, access_in_progress
    je .Lunexpected_bp32
    mov %eax, access_value
    jmp access_resume
pf32:
    cmpl $0, access_in_progress
    je .Lunexpected_pf32
    pop %eax
    mov %eax, access_error
    mov %cr2, %eax
    mov %eax, access_cr2
    movl $1, access_faulted
    /* fall through */

/* access_resume: the end of every user access: the runner goes on from cpl3_access's
 * return, on the stack it had. */
access_resume:
    movl $0, access_in_progress
    mov access_saved_esp, %esp
    ret

.Lunexpected_bp32:
    pushl $0
    pushl $VECTOR_BP
    jmp legacy_unexpected
.Lunexpected_pf32:
    pushl $VECTOR_PF
    jmp legacy_unexpected

/* One stub per vector of the 32-bit IDT, STUB32_SIZE bytes apart, each pushing the vector
 * (and 0 where the CPU pushes no error code) for legacy_unexpected. */
    .balign STUB32_SIZE
stubs32:
    .set vector, 0
    .rept EXCEPTION_VECTORS
    .org stubs32 + vector * STUB32_SIZE
    .if ((VECTORS_WITH_ERROR_CODE >> vector) & 1) == 0
    pushl $0
    .endif
    pushl $vector
    jmp legacy_unexpected
    .set vector, vector + 1
    .endr
    .org stubs32 + EXCEPTION_VECTORS * STUB32_SIZE

/* legacy_unexpected: an exception nobody expected in legacy mode (the vector, the error code
 * and EIP on the stack). 64-bit code reports it: back there first. */
legacy_unexpected:
    popl fatal_vector
    popl fatal_error
    popl fatal_eip
    mov %cr2, %eax
    mov %eax, fatal_cr2
    mov $SEL_DATA, %eax
    mov %eax, %ss
    cmpl $0, enabling_paging
    je .Lfatal
    cmpl $VECTOR_GP, fatal_vector
    jne .Lfatal
    movl $0, enabling_paging
    movl $1, paging_refused
    jmp mode_leave
.Lfatal:
    movl $1, fatal_pending
    jmp mode_leave

/* ---------------------------------------------------------------- 32-bit: the runner */

/* The cases' steps. Each clobbers %eax, %ecx, %edx, %esi, %edi. */

/* READ va[, old, new]: a read at CPL 3, recorded; with two allowed outcomes (markers, or
 * FAULT_TAG | error code for a #PF at va) only whether it gave one of them is printed. */
.macro READ va, old=0, new=0
    movl $\old, judged_old
    movl $\new, judged_new
    mov $\va, %edi
    call read_access
.endm

/* WRITE va[, old, new]: a write at CPL 3, likewise. */
.macro WRITE va, old=0, new=0
    movl $\old, judged_old
    movl $\new, judged_new
    mov $\va, %edi
    call write_access
.endm

/* SET entry, value[, flags]: the entry whose address is in the variable `entry` := `value`
 * (a variable, or an immediate), flags ORed in. */
.macro SET entry, value, flags=0
    mov \value, %eax
    .if \flags
    or $\flags, %eax
    .endif
    mov \entry, %edx
    mov %eax, (%edx)
.endm

/* INVALIDATE va: INVLPG. (A macro named INVLPG would shadow the instruction: GAS matches
 * macro names regardless of case.) */
.macro INVALIDATE va
    mov $\va, %eax
    invlpg (%eax)
.endm

/* RELOAD_CR3: MOV to CR3 of its own value, which flushes every non-global TLB entry and, in
 * PAE paging, reloads the PDPTE registers. */
.macro RELOAD_CR3
    mov %cr3, %eax
    mov %eax, %cr3
.endm

/* SET_CR4_PGE on: CR4.PGE := on. */
.macro SET_CR4_PGE on
    mov %cr4, %eax
    .if \on
    or $CR4_PGE, %eax
    .else
    and $~CR4_PGE, %eax
    .endif
    mov %eax, %cr4
.endm

/* FLAGS what, entry: records the A and D flags of the entry whose address is in `entry`. */
.macro FLAGS what, entry
    mov $\what, %ecx
    mov \entry, %edx
    call record_flags
.endm

/* run_cases: every case the mode has, each from the state reset_case makes. */
run_cases:
    movl $records, record_next
    movl $0, write_count
    mov $cases, %ebx
    xor %ebp, %ebp                          /* the case's index */
.Lnext_case:
    mov CASE_NEEDS(%ebx), %eax
    test $NEEDS_PDPTE, %eax
    jz .Lhas_levels
    cmpb $3, mode_levels
    jb .Lcase_done
.Lhas_levels:
    test $NEEDS_LARGE, %eax
    jz .Lhas_large
    testb $MODE_LARGE, mode_flags
    jz .Lcase_done
.Lhas_large:
    mov $EV_CASE, %ecx
    test $NEEDS_PGE, %eax
    jz .Lcase_runs
    testl $FEATURE_PGE, features
    jnz .Lcase_runs
    mov $EV_SKIPPED, %ecx
    call new_record
    mov %ecx, RECORD_KIND(%eax)
    mov %ebp, RECORD_ARG(%eax)
    jmp .Lcase_done
.Lcase_runs:
    call new_record
    mov %ecx, RECORD_KIND(%eax)
    mov %ebp, RECORD_ARG(%eax)
    push %ebx
    push %ebp
    call reset_case
    mov CASE_ROUTINE(%ebx), %eax
    call *%eax
    pop %ebp
    pop %ebx
.Lcase_done:
    add $CASE_SIZE, %ebx
    inc %ebp
    cmp $cases_end, %ebx
    jb .Lnext_case
    ret

/* reset_case: the tables as mode_prepare made them, A and D clear, then a TLB flush. */
reset_case:
    SET pde_v, pt0_pde
    SET pte_v, frame_a, LEAF
    SET pte_v2, frame_c, LEAF
    SET pt1_pte_v, frame_b, LEAF
    SET pt1_pte_v2, frame_d, LEAF
    cmpl $0, pdpte_v
    je .Lreset_flush
    SET pdpte_v, pd1_pdpte
    SET pd2_pde_v, pt1_pde
.Lreset_flush:
    RELOAD_CR3
    ret

/* new_record: %eax = the next record. Stops with #UD (reported as unexpected) should the
 * buffer be full: RECORDS is far above what any mode records. Clobbers nothing else. */
new_record:
    mov record_next, %eax
    cmp $records_end, %eax
    jb .Lrecord_free
    ud2
.Lrecord_free:
    addl $RECORD_SIZE, record_next
    ret

/* record_flags(%ecx = FLAGS_*, %edx = the entry's address). */
record_flags:
    call new_record
    movl $EV_FLAGS, RECORD_KIND(%eax)
    mov %ecx, RECORD_ARG(%eax)
    mov (%edx), %edx
    mov %edx, RECORD_FAULTED(%eax)
    ret

/* read_access(%edi = va), write_access(%edi = va): the access at CPL 3, then its record.
 * Write n of the mode stores write_tag + n at va + WRITE_SLOT_BASE + 4n and records n. */
read_access:
    mov $user_read, %esi
    call cpl3_access
    mov $EV_READ, %ecx
    jmp record_access
write_access:
    mov write_count, %edx
    cmp $WRITE_SLOTS, %edx
    jb .Lslot_free
    ud2                                     /* far more slots than writes: see WRITE_SLOTS */
.Lslot_free:
    incl write_count
    mov write_tag, %eax
    add %edx, %eax
    lea WRITE_SLOT_BASE(%edi, %edx, 4), %edi
    mov $user_write, %esi
    call cpl3_access
    mov write_count, %eax
    dec %eax
    mov %eax, access_value
    mov $EV_WRITE, %ecx
record_access:
    call new_record
    mov %ecx, RECORD_KIND(%eax)
    mov access_va, %edx
    mov %edx, RECORD_ARG(%eax)
    mov access_faulted, %edx
    mov %edx, RECORD_FAULTED(%eax)
    mov access_value, %edx
    mov %edx, RECORD_VALUE(%eax)
    mov access_error, %edx
    mov %edx, RECORD_ERROR(%eax)
    mov access_cr2, %edx
    mov %edx, RECORD_CR2(%eax)
    mov judged_old, %edx
    mov %edx, RECORD_OLD(%eax)
    mov judged_new, %edx
    mov %edx, RECORD_NEW(%eax)
    ret

/*
 * cpl3_access(%esi = user routine, %edi = the address it accesses, %eax = the value a write
 * stores): runs the routine at CPL 3 (IRET or IRETQ there, INT3 or a #PF back) and returns
 * when it has ended, with the access_* variables saying how. Clobbers every general register
 * but %esp.
 */
cpl3_access:
    mov %edi, access_va
    movl $0, access_faulted
    movl $0, access_value
    movl $0, access_error
    movl $0, access_cr2
    mov %esp, access_saved_esp
    movl $1, access_in_progress
    testb $MODE_LONG, mode_flags
    jz .Lenter_user_legacy
    ljmp $SEL_CODE64, $enter_user_long
.Lenter_user_legacy:
    pushl $SEL_USER_DATA | RPL_3
    pushl user_stack_top
    pushl $RFLAGS_FIXED
    pushl $SEL_USER_CODE32 | RPL_3
    push %esi
    iret

/* enter_user_long: cpl3_access's way to CPL 3 in long mode, IRETQ from 64-bit code (KVM's
 * instruction emulator, which runs CPL 0 code on PVM hosts, has IRET only in real mode; PVM
 * itself handles IRETQ). */
    .code64
enter_user_long:
    pushq $SEL_USER_DATA | RPL_3
    movl user_stack_top, %ecx
    push %rcx
    pushq $RFLAGS_FIXED
    pushq $SEL_USER_CODE64 | RPL_3
    mov %esi, %esi
    push %rsi
    mov %edi, %edi
    iretq
    .code32

/* The cases. */
case_remap_invlpg:
    READ TEST_VA
    SET pte_v, frame_b, LEAF
    INVALIDATE TEST_VA
    READ TEST_VA
    WRITE TEST_VA
    FLAGS FLAGS_PTE, pte_v
    ret

case_remap_cr3:
    READ TEST_VA
    SET pte_v, frame_b, LEAF
    RELOAD_CR3
    READ TEST_VA
    WRITE TEST_VA
    FLAGS FLAGS_PTE, pte_v
    ret

case_remap_stale:
    READ TEST_VA
    SET pte_v, frame_b, LEAF
    READ TEST_VA, MARK_A, MARK_B
    INVALIDATE TEST_VA
    READ TEST_VA
    FLAGS FLAGS_PTE, pte_v
    ret

case_unmap_invlpg:
    READ TEST_VA
    SET pte_v, frame_a, PTE_RW|PTE_US
    INVALIDATE TEST_VA
    READ TEST_VA
    SET pte_v, frame_b, LEAF
    READ TEST_VA
    FLAGS FLAGS_PTE, pte_v
    ret

case_unmap_stale:
    READ TEST_VA
    SET pte_v, frame_a, PTE_RW|PTE_US
    READ TEST_VA, MARK_A, FAULT_TAG|PF_USER_READ_NOT_PRESENT
    INVALIDATE TEST_VA
    READ TEST_VA
    ret

/* The write-protecting stores keep A and D, as an OS clearing R/W does; the restoring ones
 * clear them, so that the last write's walk must set D again. */
case_write_protect_invlpg:
    WRITE TEST_VA
    SET pte_v, frame_a, PTE_P|PTE_US|PTE_A|PTE_D
    INVALIDATE TEST_VA
    WRITE TEST_VA
    SET pte_v, frame_a, LEAF
    INVALIDATE TEST_VA
    WRITE TEST_VA
    FLAGS FLAGS_PTE, pte_v
    ret

case_write_protect_stale:
    WRITE TEST_VA
    SET pte_v, frame_a, PTE_P|PTE_US|PTE_A|PTE_D
    WRITE TEST_VA, MARK_A, FAULT_TAG|PF_USER_WRITE_READ_ONLY
    INVALIDATE TEST_VA
    WRITE TEST_VA
    SET pte_v, frame_a, LEAF
    WRITE TEST_VA, MARK_A, FAULT_TAG|PF_USER_WRITE_READ_ONLY
    INVALIDATE TEST_VA
    WRITE TEST_VA
    FLAGS FLAGS_PTE, pte_v
    ret

case_pde_switch_invlpg:
    READ TEST_VA
    READ TEST_VA2
    SET pde_v, pt1_pde
    INVALIDATE TEST_VA
    READ TEST_VA
    READ TEST_VA2, MARK_C, MARK_D
    FLAGS FLAGS_PDE, pde_v
    FLAGS FLAGS_PTE, pt1_pte_v
    ret

case_pde_switch_cr3:
    READ TEST_VA
    READ TEST_VA2
    SET pde_v, pt1_pde
    RELOAD_CR3
    READ TEST_VA
    READ TEST_VA2
    FLAGS FLAGS_PDE, pde_v
    FLAGS FLAGS_PTE, pt1_pte_v
    FLAGS FLAGS_PTE, pt1_pte_v2
    ret

case_pde_switch_stale:
    READ TEST_VA
    SET pde_v, pt1_pde
    READ TEST_VA, MARK_A, MARK_B
    INVALIDATE TEST_VA
    READ TEST_VA
    FLAGS FLAGS_PDE, pde_v
    ret

case_pdpte_switch_invlpg:
    READ TEST_VA
    SET pdpte_v, pd2_pdpte
    INVALIDATE TEST_VA
    READ TEST_VA
    FLAGS FLAGS_PTE, pt1_pte_v
    ret

case_pdpte_switch_cr3:
    READ TEST_VA
    SET pdpte_v, pd2_pdpte
    RELOAD_CR3
    READ TEST_VA
    FLAGS FLAGS_PDE, pd2_pde_v
    FLAGS FLAGS_PTE, pt1_pte_v
    ret

case_large_remap_invlpg:
    SET pde_v, $LARGE_A, LEAF|PTE_PS
    RELOAD_CR3
    READ TEST_VA
    SET pde_v, $LARGE_B, LEAF|PTE_PS
    INVALIDATE TEST_VA
    READ TEST_VA
    WRITE TEST_VA
    FLAGS FLAGS_LARGE, pde_v
    ret

case_large_remap_stale:
    SET pde_v, $LARGE_A, LEAF|PTE_PS
    RELOAD_CR3
    READ TEST_VA
    SET pde_v, $LARGE_B, LEAF|PTE_PS
    READ TEST_VA, MARK_LARGE_A, MARK_LARGE_B
    INVALIDATE TEST_VA
    READ TEST_VA
    FLAGS FLAGS_LARGE, pde_v
    ret

case_large_split_invlpg:
    SET pde_v, $LARGE_A, LEAF|PTE_PS
    RELOAD_CR3
    READ TEST_VA
    SET pde_v, pt0_pde
    INVALIDATE TEST_VA
    READ TEST_VA
    FLAGS FLAGS_PDE, pde_v
    FLAGS FLAGS_PTE, pte_v
    ret

case_large_merge_invlpg:
    READ TEST_VA
    SET pde_v, $LARGE_B, LEAF|PTE_PS
    INVALIDATE TEST_VA
    READ TEST_VA
    WRITE TEST_VA
    FLAGS FLAGS_LARGE, pde_v
    ret

case_global_remap_cr3:
    SET_CR4_PGE 1
    SET pte_v, frame_a, LEAF|PTE_G
    READ TEST_VA
    SET pte_v, frame_b, LEAF|PTE_G
    RELOAD_CR3
    READ TEST_VA, MARK_A, MARK_B
    INVALIDATE TEST_VA
    READ TEST_VA
    SET_CR4_PGE 0
    FLAGS FLAGS_PTE, pte_v
    ret

case_global_remap_pge:
    SET_CR4_PGE 1
    SET pte_v, frame_a, LEAF|PTE_G
    READ TEST_VA
    SET pte_v, frame_b, LEAF|PTE_G
    SET_CR4_PGE 0
    READ TEST_VA
    FLAGS FLAGS_PTE, pte_v
    ret

/* ---------------------------------------------------------------- 32-bit: CPL 3 */

/* Run from the ROM (user-readable in every mode's tables) with %edi = va; INT3 ends them. */
user_read:
    mov (%edi), %eax
    int3
user_write:                                 /* %eax: the value */
    mov %eax, (%edi)
    int3

    .section .note.GNU-stack, "", @progbits
