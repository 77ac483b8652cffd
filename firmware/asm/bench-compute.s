/*
 * bench-compute.s: a fixed integer workload for comparing what runs guest code (Umbra's
 * interpreter, KVM, QEMU's TCG). After boot.s has reached long mode, image_main sets up
 * user mode (a GDT with user segments and a TSS, a DPL 3 gate, user-accessible mappings) and
 * runs five kernels at CPL 3:
 *   - sieve: a sieve of Eratosthenes, one byte per number, counting the primes below
 *     SIEVE_LIMIT;
 *   - crc32: fills DATA_BYTES with an xorshift64 stream and takes its CRC-32 (zlib's,
 *     table-driven, with integer instructions only: not SSE4.2's crc32);
 *   - memcpy-mov: copies the data with a loop of 8-byte MOVs, then hashes the copy;
 *   - memcpy-rep-movsq: copies the copy with REP MOVSQ, then hashes that copy;
 *   - heapsort: sorts SORT_COUNT xorshift64 values, then hashes the sorted array.
 * Only general-purpose integer instructions: no SSE, no x87.
 *
 * Why CPL 3: on hosts whose KVM is PVM, KVM's instruction emulator runs every instruction
 * at CPL 0 (a few MIPS), while CPL 3 code runs natively. So the kernels and their timing run
 * in user mode (RDTSC is allowed at CPL 3 since CR4.TSD is 0). Their output does not: PVM
 * runs guest user code on the real CPU under the host's IOPL, so IN and OUT at CPL 3 raise
 * #GP there whatever the guest's RFLAGS.IOPL says. User code instead asks CPL 0 to run a
 * routine for it (CALL_CPL0), which keeps console.s and checks.s as they are. The way down
 * is IRETQ, which KVM's emulator runs at CPL 0 as it does for the #PF handler in traps.s.
 * The way up is INT3 through a DPL 3 gate: of what a guest at CPL 3 can use, PVM delivers
 * exceptions and INT3 to the guest's CPL 0, but SYSCALL arrives at LSTAR still at CPL 3
 * (CS 0x33, SS 0x2b: the host's user selectors) and INT 0x40 or INT 0x80 arrive as #UD.
 *
 * Each kernel is timed with RDTSC around its call and reports, in checks.s's format, its
 * checksum (a fixed value: the same workload gives the same result everywhere), then
 *   bench <kernel>: <ticks> tsc ticks, <count> instructions
 * and at the end
 *   bench total: <ticks> tsc ticks, <count> instructions
 * (decimal). The instruction count is what the kernel executes between the two RDTSCs,
 * counted as it runs: loops with a fixed trip count multiply it by the instructions of their
 * body (the *_INSNS constants beside each loop), and loops whose path depends on the data
 * add each path's length to a register as they take it. REP MOVSQ counts as one
 * instruction, as the CPU retires it. The exit status is the number of wrong checksums.
 *
 * Built with --defsym QUICK=1 it is bench-compute-quick, the same kernels on smaller data,
 * for tests on slow builds.
 *
 * Memory (identity-mapped, all of it user-accessible once user mode is set up):
 *   0x00700000-0x007fffff  the user stack (USER_STACK_TOP = 8 MiB)
 *   0x01000000             the sieve, one byte per number below SIEVE_LIMIT
 *   0x02000000             the xorshift data (DATA_BYTES)
 *   0x03000000             the MOV copy of the data
 *   0x04000000             the REP MOVSQ copy of the MOV copy
 *   0x05000000             the array heapsort sorts (SORT_COUNT quadwords)
 */
    .include "umbra.inc"
    IMAGE_STRINGS bench-compute

/* The work. SIEVE_LIMIT is a square, so that the primes to strike out with are exactly
 * those below SIEVE_ROOT; sizes are multiples of 8 bytes. */
.ifdef QUICK
    .set SIEVE_LIMIT, 1 << 16
    .set SIEVE_ROOT, 1 << 8
    .set DATA_BYTES, 1 << 16
    .set SORT_COUNT, 1 << 12
    .set EXPECTED_PRIMES, 6542
    .set EXPECTED_CRC32, 0x682dbf5a
    .set EXPECTED_DATA_HASH, 0x817edad04b2e47e8
    .set EXPECTED_SORTED_HASH, 0xc7a8b5980dc9f6a9
.else
    .set SIEVE_LIMIT, 1 << 20
    .set SIEVE_ROOT, 1 << 10
    .set DATA_BYTES, 4 << 20
    .set SORT_COUNT, 1 << 16
    .set EXPECTED_PRIMES, 82025
    .set EXPECTED_CRC32, 0xec99a111
    .set EXPECTED_DATA_HASH, 0xb05c2eedd39d6509
    .set EXPECTED_SORTED_HASH, 0x46919f3333cbb408
.endif
    .set DATA_SEED, 0x9e3779b97f4a7c15
    .set SORT_SEED, 0x2545f4914f6cdd1d
    .set CRC32_POLY, 0xedb88320     /* zlib's CRC-32, bit-reflected */

    .set USER_STACK_TOP, 0x00800000
    .set SIEVE_BASE, 0x01000000
    .set DATA_BASE, 0x02000000
    .set COPY_BASE, 0x03000000
    .set COPY2_BASE, 0x04000000
    .set SORT_BASE, 0x05000000

/* The GDT of user mode. The boot selectors keep their places: the IDT's gates name
 * SEL_CODE64, and the data segments loaded at boot stay valid. */
    .set SEL_USER_DATA, 0x20
    .set SEL_USER_CODE64, 0x28
    .set SEL_TSS, 0x30
    .set GDT_SIZE, SEL_TSS + 16
    .set RPL_3, 3
    .set TSS_SIZE, 104
    .set TSS_RSP0, 4
    .set TSS_IOMAP_BASE, 102
    .set TSS_DESCRIPTOR_TYPE, 0x89 << 40  /* present, DPL 0, available 64-bit TSS */
    .set VECTOR_BP, 3
    .set GATE_SIZE, 16
    .set GATE_INTERRUPT64_DPL3, 0xee00    /* present, DPL 3, 64-bit interrupt gate, IST 0 */

    .set PTE_US, 1 << 2
    .set PT_LEVEL_PML4, 4
    .set CR4_TSD, 1 << 2
    .set RFLAGS_FIXED, 1 << 1

/*
 * CALL_CPL0 routine: at CPL 3, calls the routine at CPL 0 with the arguments in %rdi, %rsi,
 * %rdx and returns its %rax, as a CALL would; clobbers what the routine may.
 */
.macro CALL_CPL0 routine
    lea \routine(%rip), %rax
    int3
.endm

/* One kernel in the table bench_main walks. */
    .set KERNEL_FUNCTION, 0
    .set KERNEL_NAME, 8
    .set KERNEL_LABEL, 16
    .set KERNEL_EXPECTED, 24
    .set KERNEL_ENTRY_SIZE, 32

/* ---------------------------------------------------------------- RAM */

    .bss
    .balign 16
gdt:
    .skip GDT_SIZE
    .balign 16
tss:
    .skip TSS_SIZE
    .balign 8
kernel_rsp:                         /* the CPL 0 stack while user code runs */
    .skip 8
crc_table:
    .skip 256 * 4

/* ---------------------------------------------------------------- ROM data */

    .section .rodata
    .balign 8
/* The GDT's first GDT_TEMPLATE_QWORDS quadwords; the TSS descriptor is filled at run time
 * from the TSS's link address. */
gdt_template:
    .quad 0                         /* null */
    .quad 0x00cf9b000000ffff        /* 0x08: 32-bit code, as at boot */
    .quad 0x00cf93000000ffff        /* 0x10: data, as at boot */
    .quad 0x00af9b000000ffff        /* 0x18: 64-bit code, as at boot */
    .quad 0x00cff3000000ffff        /* 0x20: user data, DPL 3 */
    .quad 0x00affb000000ffff        /* 0x28: user 64-bit code, DPL 3 */
gdt_template_end:
    .set GDT_TEMPLATE_QWORDS, (gdt_template_end - gdt_template) / 8
gdt_descriptor:
    .word GDT_SIZE - 1
    .quad gdt

    .balign 8
kernels:
    .quad sieve_kernel, sieve_name, sieve_label, EXPECTED_PRIMES
    .quad crc32_kernel, crc32_name, crc32_label, EXPECTED_CRC32
    .quad memcpy_mov_kernel, memcpy_mov_name, memcpy_mov_label, EXPECTED_DATA_HASH
    .quad memcpy_rep_kernel, memcpy_rep_name, memcpy_rep_label, EXPECTED_DATA_HASH
    .quad heapsort_kernel, heapsort_name, heapsort_label, EXPECTED_SORTED_HASH
kernels_end:

sieve_name:
    .asciz "sieve"
sieve_label:
    .asciz "sieve: primes counted"
crc32_name:
    .asciz "crc32"
crc32_label:
    .asciz "crc32: crc of the xorshift data"
memcpy_mov_name:
    .asciz "memcpy-mov"
memcpy_mov_label:
    .asciz "memcpy-mov: hash of the copy"
memcpy_rep_name:
    .asciz "memcpy-rep-movsq"
memcpy_rep_label:
    .asciz "memcpy-rep-movsq: hash of the copy"
heapsort_name:
    .asciz "heapsort"
heapsort_label:
    .asciz "heapsort: hash of the sorted array"
total_name:
    .asciz "total"
user_mode_message:
    .asciz "the kernels run at cpl 3\n"
bench_prefix:
    .asciz "bench "
ticks_infix:
    .asciz ": "
ticks_suffix:
    .asciz " tsc ticks, "
instructions_suffix:
    .asciz " instructions\n"

    .text
    .code64

/* ---------------------------------------------------------------- CPL 0 */

/* image_main: runs the kernels at CPL 3; returns the number of wrong checksums. */
    .global image_main
image_main:
    call user_mode_init
    lea bench_main(%rip), %rdi
    jmp run_at_cpl3

/*
 * user_mode_init: loads a GDT with user segments and a TSS, points the #BP gate at
 * cpl0_call_entry with DPL 3 (for CALL_CPL0), and makes every mapping of the current
 * address space user-accessible. Clobbers %rax, %rcx, %rdx, %rsi, %rdi.
 */
user_mode_init:
    lea gdt_template(%rip), %rsi
    mov $gdt, %edi
    mov $GDT_TEMPLATE_QWORDS, %ecx
.Lcopy_gdt:
    mov (%rsi), %rax
    mov %rax, (%rdi)
    add $8, %rsi
    add $8, %rdi
    dec %ecx
    jnz .Lcopy_gdt
    /* The TSS descriptor's low quadword: limit 15:0, base 23:0 at bit 16, the type, base
     * 31:24 at bit 56. The high quadword (base 63:32) stays zero: .bss is below 4 GiB. */
    mov $tss, %eax
    mov %rax, %rdx
    and $0xffffff, %eax
    shl $16, %rax
    shr $24, %rdx
    shl $56, %rdx
    or %rdx, %rax
    movabs $TSS_DESCRIPTOR_TYPE | (TSS_SIZE - 1), %rdx
    or %rdx, %rax
    mov %rax, gdt + SEL_TSS
    /* No I/O bitmap (it would start past the TSS's limit): CPL 3 gets no ports. */
    movw $TSS_SIZE, tss + TSS_IOMAP_BASE
    lgdt gdt_descriptor(%rip)
    mov $SEL_TSS, %eax
    ltr %ax

    /* The #BP gate, in the IDT traps.s made (SIDT finds it): offset 15:0, the selector
     * (as idt_init wrote it), the type, offset 31:16, offset 63:32. */
    sub $16, %rsp
    sidt (%rsp)
    mov 2(%rsp), %rdi
    add $16, %rsp
    add $VECTOR_BP * GATE_SIZE, %rdi
    lea cpl0_call_entry(%rip), %rax
    mov %ax, (%rdi)
    movw $GATE_INTERRUPT64_DPL3, 4(%rdi)
    shr $16, %rax
    mov %ax, 6(%rdi)
    shr $16, %rax
    mov %eax, 8(%rdi)

    mov %cr4, %rax                  /* RDTSC at CPL 3 */
    and $~CR4_TSD, %rax
    mov %rax, %cr4
    mov %cr3, %rdi
    and $~0xfff, %rdi
    mov $PT_LEVEL_PML4, %esi
    call allow_user
    mov %cr3, %rax                  /* drop the TLB's supervisor-only translations */
    mov %rax, %cr3
    ret

/*
 * allow_user(%rdi = page table, %esi = its level, PT_LEVEL_PML4 for a PML4): sets the user
 * bit in every present entry of the table and of the tables below it. Clobbers %rax, %rsi,
 * %rdi.
 */
allow_user:
    push %rbx
    push %r12
    push %r13
    mov %rdi, %rbx
    mov %esi, %r12d
    xor %r13d, %r13d
.Lallow_entry:
    mov (%rbx, %r13, 8), %rax
    test $PTE_P, %al
    jz .Lallow_next
    or $PTE_US, %rax
    mov %rax, (%rbx, %r13, 8)
    cmp $PT_LEVEL_4K, %r12d
    je .Lallow_next
    test $PTE_PS, %al
    jnz .Lallow_next
    movabs $PTE_ADDR_MASK, %rdi
    and %rax, %rdi
    lea -1(%r12), %esi
    call allow_user
.Lallow_next:
    inc %r13d
    cmp $PT_ENTRIES, %r13d
    jb .Lallow_entry
    pop %r13
    pop %r12
    pop %rbx
    ret

/*
 * run_at_cpl3(%rdi = function): calls the function at CPL 3 on the user stack, with
 * interrupts off, and returns the %eax it returns. Exceptions at CPL 3, and the routines
 * CALL_CPL0 runs, use this routine's stack below what it saved (TSS.RSP0 and kernel_rsp),
 * so traps.s's handlers report faults at CPL 3 as they do at CPL 0. Clobbers %rcx, %rdx,
 * %rsi, %rdi, %r8-%r11.
 */
run_at_cpl3:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, kernel_rsp
    mov %rsp, tss + TSS_RSP0
    pushq $SEL_USER_DATA | RPL_3
    pushq $USER_STACK_TOP
    pushq $RFLAGS_FIXED
    pushq $SEL_USER_CODE64 | RPL_3
    lea user_trampoline(%rip), %rax
    push %rax
    mov %rdi, %rbx
    iretq

/* INT3's handler (CALL_CPL0): calls the routine in %rax on the CPL 0 stack the INT3 has
 * switched to (TSS.RSP0), then returns to CPL 3 after the INT3. */
cpl0_call_entry:
    call *%rax
    iretq

/* leave_user_mode(%edi = status), called through CALL_CPL0: returns from run_at_cpl3 with
 * that status. */
leave_user_mode:
    mov kernel_rsp, %rsp
    mov %edi, %eax
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

/* print_bench_line(%rdi = name, %rsi = ticks, %rdx = instructions), at CPL 0: prints
 * "bench <name>: <ticks> tsc ticks, <instructions> instructions". Clobbers %rax, %rcx,
 * %rdx, %rsi, %rdi. */
print_bench_line:
    push %r12
    push %r13
    push %rbp
    mov %rdi, %rbp
    mov %rsi, %r12
    mov %rdx, %r13
    lea bench_prefix(%rip), %rdi
    call puts
    mov %rbp, %rdi
    call puts
    lea ticks_infix(%rip), %rdi
    call puts
    mov %r12, %rdi
    call print_dec
    lea ticks_suffix(%rip), %rdi
    call puts
    mov %r13, %rdi
    call print_dec
    lea instructions_suffix(%rip), %rdi
    call puts
    pop %rbp
    pop %r13
    pop %r12
    ret

/* ---------------------------------------------------------------- CPL 3 */

/* Where run_at_cpl3 enters user mode: calls the function in %rbx, then returns its %eax to
 * CPL 0. */
user_trampoline:
    call *%rbx
    mov %eax, %edi
    CALL_CPL0 leave_user_mode

/* bench_main: runs and reports each kernel, then the totals; returns the number of wrong
 * checksums. */
bench_main:
    push %rbx
    push %r14
    push %r15
    lea user_mode_message(%rip), %rdi
    CALL_CPL0 print_prefixed
    xor %r14d, %r14d                /* ticks */
    xor %r15d, %r15d                /* instructions */
    lea kernels(%rip), %rbx
.Lnext_kernel:
    call run_kernel
    add %rax, %r14
    add %rdx, %r15
    add $KERNEL_ENTRY_SIZE, %rbx
    lea kernels_end(%rip), %rax
    cmp %rax, %rbx
    jb .Lnext_kernel
    lea total_name(%rip), %rdi
    mov %r14, %rsi
    mov %r15, %rdx
    CALL_CPL0 print_bench_line
    CALL_CPL0 report_checks
    pop %r15
    pop %r14
    pop %rbx
    ret

/* run_kernel(%rbx = its entry in `kernels`): runs one kernel between two RDTSCs, checks
 * its checksum and prints its bench line. Returns the ticks in %rax and the instructions
 * in %rdx. Clobbers %rcx, %rsi, %rdi, %r8-%r11. */
run_kernel:
    push %r12
    push %r13
    push %rbp
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %r12                  /* the start */
    call *KERNEL_FUNCTION(%rbx)
    mov %rax, %r13                  /* the checksum */
    mov %rdx, %rbp                  /* the instructions */
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    sub %r12, %rax
    mov %rax, %r12                  /* the ticks */
    mov KERNEL_LABEL(%rbx), %rdi
    mov %r13, %rsi
    mov KERNEL_EXPECTED(%rbx), %rdx
    CALL_CPL0 check_equal
    mov KERNEL_NAME(%rbx), %rdi
    mov %r12, %rsi
    mov %rbp, %rdx
    CALL_CPL0 print_bench_line
    mov %r12, %rax
    mov %rbp, %rdx
    pop %rbp
    pop %r13
    pop %r12
    ret

/*
 * The kernels. Each returns its checksum in %rax and the instructions it executed, from
 * its first to its RET, in %rdx; each may clobber every register but the callee-saved
 * ones. The *_INSNS constants are the instructions of the code they sit beside; keep them
 * in step with it.
 */

/* sieve_kernel: the number of primes below SIEVE_LIMIT. */
sieve_kernel:
    push %rbx
    mov $SIEVE_BASE, %ebx
    /* Every number starts as a prime candidate (flag 1), eight flags per store. */
    mov %rbx, %rdi
    lea SIEVE_LIMIT(%rbx), %rsi
    movabs $0x0101010101010101, %rax
.Lsieve_fill:
    mov %rax, (%rdi)
    add $8, %rdi
    cmp %rsi, %rdi
    jb .Lsieve_fill
    .set SIEVE_FILL_INSNS, 4        /* per 8 numbers */
    movw $0, (%rbx)                 /* 0 and 1 are not primes */

    /* Strike out the multiples of each prime p < SIEVE_ROOT from p * p on: they cover every
     * composite below SIEVE_LIMIT = SIEVE_ROOT^2. %r8 counts the primes, %r9 the strikes. */
    xor %r8d, %r8d
    xor %r9d, %r9d
    mov $2, %ecx
.Lsieve_candidate:
    cmpb $0, (%rbx, %rcx)
    je .Lsieve_next_candidate
    /* The strikes: ceil((SIEVE_LIMIT - p * p) / p). */
    mov %rcx, %rdi
    imul %rcx, %rdi
    mov $SIEVE_LIMIT - 1, %eax
    sub %rdi, %rax
    xor %edx, %edx
    div %rcx
    inc %rax
    add %rax, %r9
    inc %r8
    add %rbx, %rdi
.Lsieve_strike:
    movb $0, (%rdi)
    add %rcx, %rdi
    dec %rax
    jnz .Lsieve_strike
    .set SIEVE_STRIKE_INSNS, 4
    .set SIEVE_PRIME_INSNS, 10      /* from the MOV after the JE to the strikes */
.Lsieve_next_candidate:
    inc %ecx
    cmp $SIEVE_ROOT, %ecx
    jb .Lsieve_candidate
    .set SIEVE_CANDIDATE_INSNS, 5   /* the CMPB, the JE, and the three above */

    /* Count the flags left set. */
    xor %eax, %eax
    xor %ecx, %ecx
.Lsieve_count:
    movzbl (%rbx, %rcx), %edx
    add %rdx, %rax
    inc %rcx
    cmp $SIEVE_LIMIT, %rcx
    jb .Lsieve_count
    .set SIEVE_COUNT_INSNS, 5

    /* The instructions: the loops, then the straight-line code (PUSH, 4 before the fill
     * loop, MOVW, 3 before the candidates, 2 before the count, these 4, POP, RET = 17). */
    imul $SIEVE_PRIME_INSNS, %r8, %rdx
    imul $SIEVE_STRIKE_INSNS, %r9, %r9
    add %r9, %rdx
    add $17 + SIEVE_FILL_INSNS * SIEVE_LIMIT / 8 + SIEVE_CANDIDATE_INSNS * (SIEVE_ROOT - 2) + SIEVE_COUNT_INSNS * SIEVE_LIMIT, %rdx
    pop %rbx
    ret

/* crc32_kernel: zlib's CRC-32 of DATA_BYTES of xorshift64 output written at DATA_BASE. */
crc32_kernel:
    push %rbx
    mov $DATA_BASE, %edi
    mov $DATA_BYTES / 8, %esi
    movabs $DATA_SEED, %rdx
    call fill_xorshift

    /* The table: entry i is i's CRC remainder after eight bit-reflected steps; a step
     * XORs in the polynomial where the low bit was set, without a branch. */
    mov $crc_table, %ebx
    xor %ecx, %ecx
.Lcrc_table_entry:
    mov %ecx, %eax
    mov $8, %r8d
.Lcrc_table_bit:
    mov %eax, %edx
    and $1, %edx
    neg %edx
    and $CRC32_POLY, %edx
    shr $1, %eax
    xor %edx, %eax
    dec %r8d
    jnz .Lcrc_table_bit
    mov %eax, (%rbx, %rcx, 4)
    inc %ecx
    cmp $256, %ecx
    jb .Lcrc_table_entry
    .set CRC_TABLE_ENTRY_INSNS, 2 + 8 * 8 + 4

    /* The CRC, a byte at a time. */
    mov $0xffffffff, %eax
    mov $DATA_BASE, %esi
    mov $DATA_BASE + DATA_BYTES, %edi
.Lcrc_byte:
    movzbl (%rsi), %edx
    xor %al, %dl
    shr $8, %eax
    xor (%rbx, %rdx, 4), %eax
    inc %rsi
    cmp %rdi, %rsi
    jb .Lcrc_byte
    .set CRC_BYTE_INSNS, 7
    not %eax

    /* PUSH, 3 and the CALL before fill_xorshift, 2 before the table, 3 before the CRC,
     * NOT, MOV, POP, RET = 14. */
    mov $14 + FILL_XORSHIFT_INSNS + FILL_XORSHIFT_QWORD_INSNS * DATA_BYTES / 8 + CRC_TABLE_ENTRY_INSNS * 256 + CRC_BYTE_INSNS * DATA_BYTES, %rdx
    pop %rbx
    ret

/* memcpy_mov_kernel: copies the data to COPY_BASE with 8-byte MOVs; the copy's hash. */
memcpy_mov_kernel:
    mov $DATA_BASE, %esi
    mov $COPY_BASE, %edi
    xor %ecx, %ecx
.Lcopy_qword:
    mov (%rsi, %rcx), %rax
    mov %rax, (%rdi, %rcx)
    add $8, %rcx
    cmp $DATA_BYTES, %rcx
    jb .Lcopy_qword
    .set COPY_QWORD_INSNS, 5
    mov $COPY_BASE, %edi
    mov $DATA_BYTES / 8, %esi
    call hash_qwords
    /* 3 before the loop, 2 and the CALL before hash_qwords, MOV, RET = 8. */
    mov $8 + COPY_QWORD_INSNS * DATA_BYTES / 8 + HASH_QWORDS_INSNS + HASH_QWORDS_QWORD_INSNS * DATA_BYTES / 8, %rdx
    ret

/* memcpy_rep_kernel: copies the MOV copy to COPY2_BASE with REP MOVSQ; that copy's hash. */
memcpy_rep_kernel:
    mov $COPY_BASE, %esi
    mov $COPY2_BASE, %edi
    mov $DATA_BYTES / 8, %ecx
    rep movsq
    mov $COPY2_BASE, %edi
    mov $DATA_BYTES / 8, %esi
    call hash_qwords
    /* 4 up to REP MOVSQ (one instruction however many quadwords it moves), 2 and the CALL
     * before hash_qwords, MOV, RET = 9. */
    mov $9 + HASH_QWORDS_INSNS + HASH_QWORDS_QWORD_INSNS * DATA_BYTES / 8, %rdx
    ret

/* heapsort_kernel: sorts SORT_COUNT xorshift64 values at SORT_BASE; the sorted array's
 * hash. */
heapsort_kernel:
    mov $SORT_BASE, %edi
    mov $SORT_COUNT, %esi
    movabs $SORT_SEED, %rdx
    call fill_xorshift
    xor %r11d, %r11d                /* sift_down's instructions */
    mov $SORT_BASE, %edi
    mov $SORT_COUNT, %esi
    call heapsort
    mov $SORT_BASE, %edi
    mov $SORT_COUNT, %esi
    call hash_qwords
    /* 3 and the CALL before fill_xorshift, XOR, 2 and the CALL before heapsort, 2 and the
     * CALL before hash_qwords, LEA, RET = 13. */
    lea 13 + FILL_XORSHIFT_INSNS + FILL_XORSHIFT_QWORD_INSNS * SORT_COUNT + HEAPSORT_INSNS + HASH_QWORDS_INSNS + HASH_QWORDS_QWORD_INSNS * SORT_COUNT(%r11), %rdx
    ret

/*
 * heapsort(%rdi = array, %rsi = count, at least 2): sorts unsigned quadwords in place,
 * ascending. Adds sift_down's instructions to %r11; the rest of its own are
 * HEAPSORT_INSNS. Clobbers %rax, %rcx, %rdx, %rsi, %r8-%r10.
 */
heapsort:
    push %rbx
    mov %rsi, %rdx                  /* the heap's end */
    mov %rsi, %rbx
    shr $1, %rbx
.Lheap_build:                       /* sift down from count / 2 - 1 to 0 */
    dec %rbx
    mov %rbx, %rsi
    call sift_down
    test %rbx, %rbx
    jnz .Lheap_build
    .set HEAP_BUILD_INSNS, 5
.Lheap_sort_down:                   /* move the largest behind the shrinking heap */
    dec %rdx
    mov (%rdi), %rax
    mov (%rdi, %rdx, 8), %rcx
    mov %rcx, (%rdi)
    mov %rax, (%rdi, %rdx, 8)
    xor %esi, %esi
    call sift_down
    cmp $1, %rdx
    ja .Lheap_sort_down
    .set HEAP_SORT_DOWN_INSNS, 9
    pop %rbx
    ret
    /* PUSH, 3 MOV/SHR, POP, RET, and the loops (count / 2 and count - 1 times). */
    .set HEAPSORT_INSNS, 6 + HEAP_BUILD_INSNS * SORT_COUNT / 2 + HEAP_SORT_DOWN_INSNS * (SORT_COUNT - 1)

/*
 * sift_down(%rdi = array, %rsi = index, %rdx = heap end): moves the value at the index down
 * the max-heap until it is no smaller than its children. Each path adds its own
 * instructions to %r11 as it goes: a level where the value moves down costs the 14 up to
 * the compare (two children; 11 with one) plus the 4 that move it; the last level costs 14
 * or 11 (no move) or 4 (no children); the entry's ADD counts the load, itself and the
 * final store and RET. Clobbers %rax, %rcx, %rsi, %r8-%r10.
 */
sift_down:
    mov (%rdi, %rsi, 8), %r10       /* the value moving down */
    add $4, %r11
.Lsift_level:
    lea 1(%rsi, %rsi), %rcx         /* the left child */
    cmp %rdx, %rcx
    jae .Lsift_leaf
    mov (%rdi, %rcx, 8), %rax
    lea 1(%rcx), %r8                /* the right child */
    cmp %rdx, %r8
    jae .Lsift_one_child
    mov (%rdi, %r8, 8), %r9
    cmp %rax, %r9
    cmova %r9, %rax                 /* the larger child and its index */
    cmova %r8, %rcx
    add $14, %r11
.Lsift_compare:
    cmp %rax, %r10
    jae .Lsift_store
    mov %rax, (%rdi, %rsi, 8)
    mov %rcx, %rsi
    add $4, %r11
    jmp .Lsift_level
.Lsift_one_child:
    add $11, %r11
    jmp .Lsift_compare
.Lsift_leaf:
    add $4, %r11
.Lsift_store:
    mov %r10, (%rdi, %rsi, 8)
    ret

/* fill_xorshift(%rdi = destination, %rsi = quadwords, at least 1, %rdx = seed): writes the
 * xorshift64 (13, 7, 17) stream that follows the seed. Clobbers %rax, %rcx, %rsi, %rdi. */
fill_xorshift:
    mov %rdx, %rax
    lea (%rdi, %rsi, 8), %rsi
.Lfill_qword:
    mov %rax, %rcx
    shl $13, %rcx
    xor %rcx, %rax
    mov %rax, %rcx
    shr $7, %rcx
    xor %rcx, %rax
    mov %rax, %rcx
    shl $17, %rcx
    xor %rcx, %rax
    mov %rax, (%rdi)
    add $8, %rdi
    cmp %rsi, %rdi
    jb .Lfill_qword
    ret
    .set FILL_XORSHIFT_QWORD_INSNS, 13
    .set FILL_XORSHIFT_INSNS, 3

/* hash_qwords(%rdi = address, %rsi = quadwords, at least 1): h = rol(h, 5) ^ q over the
 * quadwords from h = 0, in %rax. Clobbers %rsi, %rdi. */
hash_qwords:
    xor %eax, %eax
    lea (%rdi, %rsi, 8), %rsi
.Lhash_qword:
    rol $5, %rax
    xor (%rdi), %rax
    add $8, %rdi
    cmp %rsi, %rdi
    jb .Lhash_qword
    ret
    .set HASH_QWORDS_QWORD_INSNS, 5
    .set HASH_QWORDS_INSNS, 3

    .section .note.GNU-stack, "", @progbits
