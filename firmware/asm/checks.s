/*
 * checks.s: the one format every test image reports in, so tests can assert on lines:
 *   check <label> 0x<actual> ok
 *   check <label> 0x<actual> FAILED (expected 0x<expected>)
 *   umbra <image>: all <n> checks passed
 *   umbra <image>: <failed> of <n> checks failed
 */
    .include "umbra.inc"

    .bss
    .balign 8
checks_run:
    .skip 8
checks_failed:
    .skip 8

    .section .rodata
check_prefix:
    .asciz "check "
ok_suffix:
    .asciz " ok\n"
failed_infix:
    .asciz " FAILED (expected "
failed_suffix:
    .asciz ")\n"
all_passed_prefix:
    .asciz "all "
passed_suffix:
    .asciz " checks passed\n"
failed_of:
    .asciz " of "
failed_checks_suffix:
    .asciz " checks failed\n"

    .text
    .code64

/* check_equal(%rdi = label, %rsi = actual, %rdx = expected): prints the check's line and
 * counts it. Clobbers %rax, %rcx, %rdx, %rsi, %rdi. */
    .global check_equal
check_equal:
    push %rbx
    push %r12
    push %r13
    mov %rdi, %rbx
    mov %rsi, %r12
    mov %rdx, %r13
    incq checks_run
    lea check_prefix(%rip), %rdi
    call puts
    mov %rbx, %rdi
    call puts
    mov $' ', %edi
    call putc
    mov %r12, %rdi
    call print_hex
    cmp %r12, %r13
    jne .Lmismatch
    lea ok_suffix(%rip), %rdi
    call puts
    jmp .Lchecked
.Lmismatch:
    incq checks_failed
    lea failed_infix(%rip), %rdi
    call puts
    mov %r13, %rdi
    call print_hex
    lea failed_suffix(%rip), %rdi
    call puts
.Lchecked:
    pop %r13
    pop %r12
    pop %rbx
    ret

/* report_checks: prints the summary line and returns the number of failed checks in
 * %rax, which is the image's exit status. Clobbers %rcx, %rdx, %rsi, %rdi. */
    .global report_checks
report_checks:
    cmpq $0, checks_failed
    jne .Lsome_failed
    lea all_passed_prefix(%rip), %rdi
    call print_prefixed
    mov checks_run, %rdi
    call print_dec
    lea passed_suffix(%rip), %rdi
    call puts
    xor %eax, %eax
    ret
.Lsome_failed:
    lea image_prefix(%rip), %rdi
    call puts
    mov checks_failed, %rdi
    call print_dec
    lea failed_of(%rip), %rdi
    call puts
    mov checks_run, %rdi
    call print_dec
    lea failed_checks_suffix(%rip), %rdi
    call puts
    mov checks_failed, %rax
    ret

    .section .note.GNU-stack, "", @progbits
