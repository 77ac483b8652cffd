/*
 * console.s: what the firmware tells the outside world, in 64-bit mode: text on the
 * UART, numbers in hex and decimal, and the exit status through isa-debug-exit.
 */
    .include "umbra.inc"

    .text
    .code64

/* putc(%dil): sends one byte to the UART. Clobbers %rax, %rdx. */
    .global putc
putc:
    mov %edi, %eax
    UART_PUTC
    ret

/* puts(%rdi): sends a NUL-terminated string to the UART. Clobbers %rax, %rdx, %rdi. */
    .global puts
    DEFINE_PUTS puts, %rdi

/* print_hex(%rdi): prints "0x" and the value's hex digits, without leading zeros.
 * Clobbers %rax, %rcx, %rdx, %rdi. */
    .global print_hex
print_hex:
    push %rbx
    mov %rdi, %rbx
    mov $'0', %edi
    call putc
    mov $'x', %edi
    call putc
    /* %ecx: the shift that brings the highest non-zero nibble (or nibble 0) down. */
    mov $60, %ecx
.Lskip_zero_nibble:
    mov %rbx, %rax
    shr %cl, %rax
    test $0xf, %al
    jnz .Lprint_nibble
    sub $4, %ecx
    jnz .Lskip_zero_nibble
.Lprint_nibble:
    mov %rbx, %rax
    shr %cl, %rax
    and $0xf, %eax
    add $'0', %eax
    cmp $'9', %eax
    jbe .Ldigit
    add $'a' - '9' - 1, %eax
.Ldigit:
    mov %eax, %edi
    call putc
    sub $4, %ecx
    jns .Lprint_nibble
    pop %rbx
    ret

/* print_dec(%rdi): prints an unsigned value in decimal. Clobbers %rax, %rcx, %rdx, %rdi. */
    .global print_dec
print_dec:
    mov %rdi, %rax
    xor %edx, %edx
    mov $10, %ecx
    div %rcx
    push %rdx                       /* the last digit, printed after the ones before it */
    test %rax, %rax
    jz .Llast_digit
    mov %rax, %rdi
    call print_dec
.Llast_digit:
    pop %rdi
    add $'0', %edi
    call putc
    ret

/* print_prefixed(%rdi): prints "umbra <image>: " and then the string at %rdi.
 * Clobbers %rax, %rdx, %rdi. */
    .global print_prefixed
print_prefixed:
    push %rdi
    lea image_prefix(%rip), %rdi
    call puts
    pop %rdi
    jmp puts

/* exit(%edi): ends the run with that status. Does not return. */
    .global exit
exit:
    mov %edi, %eax
    DEBUG_EXIT_EAX

/* fatal(%rdi): prints "umbra <image>: " and the message at %rdi, then ends the run with
 * EXIT_FATAL. Does not return. */
    .global fatal
fatal:
    call print_prefixed
    mov $EXIT_FATAL, %edi
    jmp exit

    .section .note.GNU-stack, "", @progbits
