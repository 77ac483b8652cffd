/*
 * echo.s: the serial console's loop-back. Prints one line saying it is ready, then sends
 * back every byte the UART receives, as it comes, polling the line status register (with
 * plain IN instructions only, which KVM's instruction emulator runs as well); a
 * Ctrl-D (0x04) ends the run with status 0 after a closing line. It never halts: on a
 * terminal Umbra's Ctrl-A x is the other way out.
 */
    .include "umbra.inc"
    IMAGE_STRINGS echo

    .set UART_RBR, 0x3f8                /* receive buffer register */
    .set UART_LSR_DR, 0x01              /* LSR bit 0: a received byte waits in RBR */
    .set END_OF_INPUT, 0x04             /* Ctrl-D */

    .section .rodata
ready_line:
    .asciz "umbra echo: ready; what you type comes back, Ctrl-D ends\n"
end_line:
    .asciz "\numbra echo: end of input\n"

    .text
    .code64

/* image_main: echoes until Ctrl-D; returns 0. */
    .global image_main
image_main:
    lea ready_line(%rip), %rdi
    call puts
.Lwait:
    mov $UART_LSR, %dx
    in %dx, %al
    test $UART_LSR_DR, %al
    jz .Lwait
    mov $UART_RBR, %dx
    in %dx, %al
    cmp $END_OF_INPUT, %al
    je .Lend
    movzbl %al, %edi
    call putc
    jmp .Lwait
.Lend:
    lea end_line(%rip), %rdi
    call puts
    xor %eax, %eax
    ret

    .section .note.GNU-stack, "", @progbits
