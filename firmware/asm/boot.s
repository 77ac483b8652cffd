/*
 * boot.s: from the x86 reset vector to 64-bit long mode, then into the image.
 *
 * Where the code runs: the ROM is linked at 0xffff0000 and every instruction runs from
 * those linked addresses; the 0xf0000 alias of the ROM is never used. At reset CS has
 * selector 0xf000 but base 0xffff0000, so the real-mode code below runs at its linked
 * address with IP = address - 0xffff0000 and reaches its ROM data through %cs. Protected
 * mode uses flat 4 GiB segments, and long mode identity-maps the ROM's 2 MiB page, so the
 * same addresses stay valid throughout.
 *
 * RAM data (stack, page tables, IDT, variables) lives below 0xa0000, in the NOLOAD
 * sections laid out by rom.ld. The stack sits below 64 KiB so real mode can use it.
 */
    .include "umbra.inc"

    .set BOOT_MAGIC, 0x21626d75     /* "umb!": this boot has got past the reset vector */
    .set STACK_SIZE, 0x4000

/* ---------------------------------------------------------------- RAM */

    /* Not zeroed at boot: the marker must survive a reset, the stack is in use. */
    .section .noinit, "aw", @nobits
    .balign 8
boot_marker:
    .skip 8
    .balign PAGE_SIZE
stack_bottom:
    .skip STACK_SIZE
    .global stack_top
stack_top:

    /* The boot address space: low 1 GiB (all of RAM) and the ROM's 2 MiB page. */
    .bss
    .balign PAGE_SIZE
    .global boot_pml4
boot_pml4:
    .skip PAGE_SIZE
boot_pdpt:
    .skip PAGE_SIZE
boot_pd_low:                        /* 0 - 1 GiB, 2 MiB pages */
    .skip PAGE_SIZE
boot_pd_rom:                        /* 3 - 4 GiB, only its last entry (the ROM) is set */
    .skip PAGE_SIZE

/* ---------------------------------------------------------------- ROM data */

    .section .rodata
    /* Every descriptor has its accessed bit preset: the CPU would otherwise write it back
     * into the GDT when a segment register is loaded, and the GDT is in read-only ROM. */
    .balign 8
gdt:
    .quad 0                         /* null */
    .quad 0x00cf9b000000ffff        /* 0x08: 32-bit code, flat 4 GiB */
    .quad 0x00cf93000000ffff        /* 0x10: data, flat 4 GiB */
    .quad 0x00af9b000000ffff        /* 0x18: 64-bit code */
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt

reset_message:
    .asciz "umbra: the machine was reset while the firmware ran (a triple fault?)\n"

/* ---------------------------------------------------------------- real mode */

    .text
    .code16
    .global real_mode_start
real_mode_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $stack_top, %sp

    /* A triple fault resets the CPU but keeps RAM: report it and stop instead of running
     * the same fault again forever. */
    cmpl $BOOT_MAGIC, boot_marker
    je .Lreset_during_run
    movl $BOOT_MAGIC, boot_marker

    mov $image_banner_real - ROM_BASE, %di
    call puts16

    /* lgdtl: a 16-bit lgdt would load only 24 bits of the GDT's base. */
    lgdtl %cs:gdt_descriptor - ROM_BASE
    mov %cr0, %eax
    or $CR0_PE, %eax
    mov %eax, %cr0
    ljmpl $SEL_CODE32, $protected_mode_start

.Lreset_during_run:
    mov $reset_message - ROM_BASE, %di
    call puts16
    mov $EXIT_FATAL, %eax
    DEBUG_EXIT_EAX

    DEFINE_PUTS puts16, %di, %cs:

/* ---------------------------------------------------------------- protected mode */

    .code32
    .global protected_mode_start
protected_mode_start:
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %fs
    mov %eax, %gs
    mov %eax, %ss
    mov $stack_top, %esp

    mov $image_banner_protected, %edi
    call puts32

    /* Zero .bss with a plain store loop rather than REP STOSL: on PVM hosts KVM's
     * instruction emulator runs this, and plain MOVs are its most travelled path. */
    mov $bss_start, %edi
.Lzero_bss:
    movl $0, (%edi)
    add $4, %edi
    cmp $bss_end, %edi
    jb .Lzero_bss

    /* Page-table entries are 64 bits; .bss is zero, so writing the low halves is enough. */
    movl $boot_pdpt + PTE_P + PTE_RW, boot_pml4
    movl $boot_pd_low + PTE_P + PTE_RW, boot_pdpt
    movl $boot_pd_rom + PTE_P + PTE_RW, boot_pdpt + 3 * 8
    /* The ROM's page is read-only, so with CR0.WP=1 a stray write to it faults. */
    movl $ROM_LARGE_PAGE + PTE_P + PTE_PS, boot_pd_rom + (PT_ENTRIES - 1) * 8

    mov $boot_pd_low, %edi
    mov $PTE_P + PTE_RW + PTE_PS, %eax
    mov $PT_ENTRIES, %ecx
.Lfill_pd_low:
    mov %eax, (%edi)
    add $LARGE_PAGE_SIZE, %eax
    add $8, %edi
    loop .Lfill_pd_low

    mov $CR4_PAE, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME + EFER_NXE, %eax
    wrmsr
    mov %cr0, %eax
    or $CR0_PG + CR0_WP, %eax
    mov %eax, %cr0
    ljmp $SEL_CODE64, $long_mode_start

    DEFINE_PUTS puts32, %edi

/* ---------------------------------------------------------------- long mode */

    .code64
    .global long_mode_start
long_mode_start:
    mov $stack_top, %esp
    lea image_banner_long(%rip), %rdi
    call puts
    call idt_init
    call frame_pool_init
    call image_main
    mov %eax, %edi
    jmp exit

/* ---------------------------------------------------------------- reset vector */

    /* rom.ld places this at 0xfffffff0, where the CPU starts: CS base 0xffff0000, IP
     * 0xfff0. A near jump keeps CS as it is. */
    .section .reset_vector, "ax"
    .code16
    .global reset_vector
reset_vector:
    jmp real_mode_start

    .section .note.GNU-stack, "", @progbits
