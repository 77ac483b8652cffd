/*
 * multiboot-test.s: a multiboot (version 1) kernel, ELF32 linked at 1 MiB by
 * multiboot.ld, for `umbra run --kernel` and `qemu-system-x86_64 -kernel`. It checks what
 * its boot loader and the machine tell it: the magic in EAX, the information structure's
 * flags, conventional and upper memory, the memory map against the RAM size QEMU's fw_cfg
 * reports, and fw_cfg's signature and CPU count; it prints its command line, its modules
 * (command line, size and byte sum of each) and each check, then exits through
 * isa-debug-exit with the number of failed checks.
 *
 * Only what both loaders give the same way is printed: Umbra's memory map and QEMU's
 * (SeaBIOS's) differ in the reserved ranges near the top of RAM, so the map is checked, not
 * printed. Runs in the 32-bit protected mode the loader leaves, without paging.
 */
    .include "umbra.inc"

.set MB_HEADER_MAGIC, 0x1badb002
.set MB_HEADER_FLAGS, 0x00000003    /* page-aligned modules, memory information */
.set MB_BOOT_MAGIC, 0x2badb002
.set MB_INFO_MEM, 1 << 0
.set MB_INFO_CMDLINE, 1 << 2
.set MB_INFO_MODS, 1 << 3
.set MB_INFO_MMAP, 1 << 6
.set MB_INFO_WANTED, MB_INFO_MEM | MB_INFO_CMDLINE | MB_INFO_MMAP
.set E820_RAM, 1
.set ONE_MIB, 0x100000
.set FW_CFG_SELECTOR, 0x510
.set FW_CFG_DATA, 0x511
.set FW_CFG_SIGNATURE, 0x0000
.set FW_CFG_RAM_SIZE, 0x0003
.set FW_CFG_NB_CPUS, 0x0005

    .section .multiboot, "a"
    .align 4
    .long MB_HEADER_MAGIC, MB_HEADER_FLAGS, -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

    .text
    .code32
    .global _start
_start:
    mov $stack_top, %esp
    mov %eax, %esi
    mov %ebx, %ebp
    mov $msg_banner, %edi
    call puts

    /* The magic. */
    cmp $MB_BOOT_MAGIC, %esi
    sete %al
    mov $msg_magic, %edi
    call check
    cmp $MB_BOOT_MAGIC, %esi
    jne done

    /* The information structure has memory sizes, a command line and a memory map. */
    mov (%ebp), %eax
    and $MB_INFO_WANTED, %eax
    cmp $MB_INFO_WANTED, %eax
    sete %al
    mov $msg_flags, %edi
    call check
    mov (%ebp), %eax
    and $MB_INFO_WANTED, %eax
    cmp $MB_INFO_WANTED, %eax
    jne done

    mov $msg_cmdline, %edi
    call puts
    mov 16(%ebp), %edi
    call puts
    mov $'\n', %al
    UART_PUTC

    /* The modules: each one's command line, size and byte sum. */
    testl $MB_INFO_MODS, (%ebp)
    jz 3f
    mov $msg_modules, %edi
    call puts
    mov 20(%ebp), %eax
    call print_dec
    mov $'\n', %al
    UART_PUTC
    mov 24(%ebp), %esi          /* the module list */
    mov 20(%ebp), %ebx          /* modules left */
1:  test %ebx, %ebx
    jz 3f
    mov $msg_module, %edi
    call puts
    mov 8(%esi), %edi
    call puts
    mov $msg_size, %edi
    call puts
    mov 4(%esi), %eax
    sub (%esi), %eax
    call print_dec
    mov $msg_sum, %edi
    call puts
    mov (%esi), %ecx
    xor %eax, %eax
2:  cmp 4(%esi), %ecx
    jae 4f
    movzbl (%ecx), %edx
    add %edx, %eax
    inc %ecx
    jmp 2b
4:  call print_dec
    mov $'\n', %al
    UART_PUTC
    add $16, %esi
    dec %ebx
    jmp 1b
3:

    /* fw_cfg: the signature, the CPU count, the RAM size (its low 32 bits in ram_size). */
    mov $FW_CFG_SIGNATURE, %eax
    call fw_cfg_select
    mov $msg_signature, %edi
    call puts
    mov $4, %ecx
1:  call fw_cfg_byte
    UART_PUTC
    loop 1b
    mov $'\n', %al
    UART_PUTC

    mov $FW_CFG_NB_CPUS, %eax
    call fw_cfg_select
    call fw_cfg_byte
    movzbl %al, %ebx
    call fw_cfg_byte
    movzbl %al, %eax
    shl $8, %eax
    or %eax, %ebx
    mov $msg_cpus, %edi
    call puts
    mov %ebx, %eax
    call print_dec
    mov $'\n', %al
    UART_PUTC

    mov $FW_CFG_RAM_SIZE, %eax
    call fw_cfg_select
    xor %ebx, %ebx
    mov $4, %ecx
1:  call fw_cfg_byte
    movzbl %al, %eax
    ror $8, %ebx
    or %eax, %ebx
    loop 1b
    ror $8, %ebx
    mov %ebx, ram_size
    mov $msg_ram, %edi
    call puts
    mov %ebx, %eax
    shr $20, %eax
    call print_dec
    mov $msg_mib, %edi
    call puts

    /* Conventional memory: between 600 and 640 KiB. */
    mov 4(%ebp), %eax
    cmp $600, %eax
    setae %bl
    cmp $640, %eax
    setbe %al
    and %bl, %al
    mov $msg_mem_lower, %edi
    call check

    /* Upper memory: from 1 MiB to within the last MiB of RAM. */
    mov 8(%ebp), %eax
    shl $10, %eax
    add $ONE_MIB, %eax
    call within_last_mib
    mov $msg_mem_upper, %edi
    call check

    /* The memory map: RAM from 0 past 0x9f000, and RAM from 1 MiB to within the last MiB. */
    mov 48(%ebp), %esi          /* the first entry */
    mov 44(%ebp), %ecx
    add %esi, %ecx              /* the end of the map */
    xor %ebx, %ebx              /* bit 0: conventional RAM seen; bit 1: RAM at 1 MiB */
next_entry:
    cmp %ecx, %esi
    jae map_done
    cmpl $E820_RAM, 20(%esi)
    jne 2f
    cmpl $0, 8(%esi)            /* bases and lengths below 4 GiB only */
    jne 2f
    cmpl $0, 16(%esi)
    jne 2f
    mov 12(%esi), %eax          /* the length */
    cmpl $0, 4(%esi)
    jne 1f
    cmp $0x9f000, %eax
    jb 2f
    or $1, %ebx
    jmp 2f
1:  cmpl $ONE_MIB, 4(%esi)
    jne 2f
    add $ONE_MIB, %eax
    push %ecx
    call within_last_mib
    pop %ecx
    test %al, %al
    jz 2f
    or $2, %ebx
2:  mov (%esi), %eax            /* the entry's size, which excludes the size field */
    lea 4(%esi, %eax), %esi
    jmp next_entry
map_done:
    mov %ebx, %eax
    and $1, %eax
    mov $msg_map_low, %edi
    call check
    shr $1, %ebx
    mov %ebx, %eax
    mov $msg_map_high, %edi
    call check

done:
    mov $msg_failures, %edi
    call puts
    mov failures, %eax
    call print_dec
    mov $'\n', %al
    UART_PUTC
    mov failures, %eax
    DEBUG_EXIT_EAX

/* check(%al: passed, %edi: name): prints "check <name> ok" or "... FAILED" and counts
 * failures. Clobbers %eax, %edx, %edi. */
check:
    push %eax
    push %edi
    mov $msg_check, %edi
    call puts
    pop %edi
    call puts
    pop %eax
    mov $msg_ok, %edi
    test %al, %al
    jnz 1f
    incl failures
    mov $msg_failed, %edi
1:  jmp puts

/* within_last_mib(%eax: an end address): %al = 1 if ram_size - 1 MiB < %eax <= ram_size.
 * Clobbers %edx. */
within_last_mib:
    mov ram_size, %edx
    cmp %edx, %eax
    ja 1f
    sub $ONE_MIB, %edx
    cmp %edx, %eax
    jbe 1f
    mov $1, %al
    ret
1:  xor %eax, %eax
    ret

/* fw_cfg_select(%ax): selects an fw_cfg item. Clobbers %dx. */
fw_cfg_select:
    mov $FW_CFG_SELECTOR, %dx
    out %ax, %dx
    ret

/* fw_cfg_byte: the selected item's next byte in %al. Clobbers %dx. */
fw_cfg_byte:
    mov $FW_CFG_DATA, %dx
    in %dx, %al
    ret

/* print_dec(%eax): prints an unsigned value in decimal. Clobbers %eax, %ecx, %edx. */
print_dec:
    push %ebx
    mov $10, %ebx
    xor %ecx, %ecx
1:  xor %edx, %edx
    div %ebx
    push %edx
    inc %ecx
    test %eax, %eax
    jnz 1b
2:  pop %eax
    add $'0', %al
    UART_PUTC
    loop 2b
    pop %ebx
    ret

/* puts(%edi): sends a NUL-terminated string to the UART. Clobbers %eax, %edx, %edi. */
    DEFINE_PUTS puts, %edi

    .section .rodata
msg_banner:     .asciz "multiboot-test: entered in 32-bit protected mode\n"
msg_cmdline:    .asciz "multiboot-test: command line: "
msg_modules:    .asciz "multiboot-test: modules: "
msg_module:     .asciz "multiboot-test: module: "
msg_size:       .asciz ", "
msg_sum:        .asciz " bytes, byte sum "
msg_signature:  .asciz "multiboot-test: fw_cfg signature: "
msg_cpus:       .asciz "multiboot-test: fw_cfg CPUs: "
msg_ram:        .asciz "multiboot-test: fw_cfg RAM size: "
msg_mib:        .asciz " MiB\n"
msg_check:      .asciz "check "
msg_magic:      .asciz "EAX holds the boot loader's magic"
msg_flags:      .asciz "the information has memory sizes, a command line and a memory map"
msg_mem_lower:  .asciz "mem_lower is 600 to 640 KiB"
msg_mem_upper:  .asciz "mem_upper ends within the last MiB of fw_cfg's RAM size"
msg_map_low:    .asciz "the memory map has RAM from 0 to 636 KiB or more"
msg_map_high:   .asciz "the memory map has RAM from 1 MiB to within the last MiB of RAM"
msg_ok:         .asciz " ok\n"
msg_failed:     .asciz " FAILED\n"
msg_failures:   .asciz "multiboot-test: failed checks: "

    .data
    .align 4
failures:       .long 0
ram_size:       .long 0

    .bss
    .align 16
    .skip 4096
stack_top:
