/*
 * traps.s: the IDT for the 32 exception vectors. #PF (14) goes to a handler that
 * records the fault and resumes at the address PF_GUARDED (umbra.inc) set beforehand;
 * every other exception, and a #PF nobody expected, prints what happened and ends the
 * run with EXIT_FATAL, so a firmware bug stops the run instead of hanging it.
 */
    .include "umbra.inc"

    .set EXCEPTION_VECTORS, 32
    .set GATE_SIZE, 16
    .set GATE_INTERRUPT64, 0x8e00   /* present, DPL 0, 64-bit interrupt gate, IST 0 */
    .set STUB_SIZE, 16
    /* Vectors for which the CPU pushes an error code: 8, 10-14, 17, 21, 29, 30. */
    .set VECTORS_WITH_ERROR_CODE, 0x60227d00
    .set VECTOR_PF, 14

/* ---------------------------------------------------------------- RAM */

    .bss
    .balign GATE_SIZE
idt:
    .skip EXCEPTION_VECTORS * GATE_SIZE

    .balign 8
    /* Where the #PF handler resumes; 0 when no fault is expected. */
    .global pf_recovery_rip
pf_recovery_rip:
    .skip 8
    /* CR2 and the error code of the last expected #PF. */
    .global pf_cr2
pf_cr2:
    .skip 8
    .global pf_error_code
pf_error_code:
    .skip 8
    /* The RIP of the last expected #PF: the faulting instruction. */
    .global pf_rip
pf_rip:
    .skip 8

/* ---------------------------------------------------------------- ROM data */

    .section .rodata
idt_descriptor:
    .word EXCEPTION_VECTORS * GATE_SIZE - 1
    .quad idt

unexpected_exception_message:
    .asciz "unexpected exception "
error_code_label:
    .asciz ", error code "
rip_label:
    .asciz ", rip "
cr2_label:
    .asciz ", cr2 "

/* ---------------------------------------------------------------- code */

    .text
    .code64

/* idt_init: fills the IDT and loads it. Clobbers %rax, %rcx, %rdx, %rdi. */
    .global idt_init
idt_init:
    lea exception_stubs(%rip), %rax
    mov $idt, %edi
    xor %ecx, %ecx
.Lfill_gate:
    mov %rax, %rdx
    cmp $VECTOR_PF, %ecx
    jne .Lwrite_gate
    lea page_fault_handler(%rip), %rdx
.Lwrite_gate:
    mov %dx, (%rdi)                 /* offset 15:0 */
    movw $SEL_CODE64, 2(%rdi)
    movw $GATE_INTERRUPT64, 4(%rdi)
    shr $16, %rdx
    mov %dx, 6(%rdi)                /* offset 31:16 */
    shr $16, %rdx
    mov %edx, 8(%rdi)               /* offset 63:32 */
    movl $0, 12(%rdi)
    add $STUB_SIZE, %rax
    add $GATE_SIZE, %rdi
    inc %ecx
    cmp $EXCEPTION_VECTORS, %ecx
    jb .Lfill_gate
    lidt idt_descriptor(%rip)
    ret

/*
 * The #PF handler. It leaves the fault behind by rewriting the saved RIP to the recovery
 * address and returning with IRETQ, so every register is as it was at the fault.
 */
page_fault_handler:
    push %rax
    mov 16(%rsp), %rax              /* the saved RIP, above %rax and the error code */
    mov %rax, pf_rip
    mov pf_recovery_rip, %rax
    test %rax, %rax
    jz .Lunexpected_page_fault
    mov %rax, 16(%rsp)              /* the saved RIP, above %rax and the error code */
    movq $0, pf_recovery_rip        /* a second fault before the next guard is a bug */
    mov %cr2, %rax
    mov %rax, pf_cr2
    mov 8(%rsp), %rax
    mov %rax, pf_error_code
    pop %rax
    add $8, %rsp                    /* the error code */
    iretq
.Lunexpected_page_fault:
    pop %rax
    pushq $VECTOR_PF
    jmp unexpected_exception

/*
 * One stub per vector, STUB_SIZE bytes apart (idt_init relies on that; .org fails the
 * assembly if a stub outgrows its slot). Each leaves the same frame for
 * unexpected_exception: the vector, an error code (0 where the CPU pushes none), then
 * the CPU's RIP, CS, RFLAGS, RSP, SS.
 */
    .balign STUB_SIZE
exception_stubs:
    .set vector, 0
    .rept EXCEPTION_VECTORS
    .org exception_stubs + vector * STUB_SIZE
    .if ((VECTORS_WITH_ERROR_CODE >> vector) & 1) == 0
    pushq $0
    .endif
    pushq $vector
    jmp unexpected_exception
    .set vector, vector + 1
    .endr
    .org exception_stubs + EXCEPTION_VECTORS * STUB_SIZE

/* Prints "umbra <image>: unexpected exception V, error code E, rip R, cr2 C" and ends the
 * run with EXIT_FATAL. */
unexpected_exception:
    lea unexpected_exception_message(%rip), %rdi
    call print_prefixed
    mov (%rsp), %rdi
    call print_hex
    lea error_code_label(%rip), %rdi
    call puts
    mov 8(%rsp), %rdi
    call print_hex
    lea rip_label(%rip), %rdi
    call puts
    mov 16(%rsp), %rdi
    call print_hex
    lea cr2_label(%rip), %rdi
    call puts
    mov %cr2, %rdi
    call print_hex
    mov $'\n', %edi
    call putc
    mov $EXIT_FATAL, %edi
    jmp exit

    .section .note.GNU-stack, "", @progbits
