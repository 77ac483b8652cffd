/*
 * demo.s: Umbra's built-in default guest. After boot.s has brought the CPU from reset to
 * long mode, it checks three things about paging and reports each in checks.s's format:
 *   - CR3 switches: three address spaces map one virtual address to three frames;
 *   - CR0.WP: a supervisor write to a read-only page succeeds with WP=0 and faults with
 *     WP=1 (CR2 = the address, error code P|W);
 *   - a 2 MiB page: data written through it is seen through the identity map, and back.
 * Exit status: the number of failed checks.
 *
 * Built with --defsym FORCE_FAIL=1 it is demo-fail, whose space 2 holds a wrong marker,
 * so exactly one check fails.
 */
    .include "umbra.inc"
    IMAGE_STRINGS demo

    .set SPACE_COUNT, 3
    /* Test mappings live in PML4 slot 128, which the boot identity map (slot 0) leaves
     * empty. */
    .set SPACES_VA, 0x0000400000000000
    .set READ_ONLY_VA, 0x0000400000001000
    .set LARGE_VA, 0x0000400000200000
    .set LARGE_PHYS, 0x400000       /* 4 MiB: free RAM, 2 MiB aligned */
    .set LARGE_PROBE_HIGH, 0x1ffff8 /* the last quadword of the 2 MiB page */
    .set LARGE_PROBE_LOW, 0x1230
    .set READ_ONLY_MARKER, 0x5a5a
    .set LARGE_MARKER_VIA_VIRTUAL, 0x2000c0de
    .set LARGE_MARKER_VIA_PHYSICAL, 0x2000f00d

    .bss
    .balign 8
space_roots:
    .skip SPACE_COUNT * 8

    .section .rodata
    .balign 8
space_markers:
    .quad 0x1111, 0x2222, 0x3333
space_labels:
    .quad space_1_label, space_2_label, space_3_label
space_1_label:
    .asciz "cr3 switch: space 1 reads"
space_2_label:
    .asciz "cr3 switch: space 2 reads"
space_3_label:
    .asciz "cr3 switch: space 3 reads"
wp0_label:
    .asciz "cr0.wp=0: write to read-only page stores"
wp1_cr2_label:
    .asciz "cr0.wp=1: write to read-only page faults with cr2"
wp1_error_code_label:
    .asciz "cr0.wp=1: page fault error code"
large_virtual_write_label:
    .asciz "2 MiB page: virtual write, physical read gives"
large_physical_write_label:
    .asciz "2 MiB page: physical write, virtual read gives"

    .text
    .code64

/* image_main: runs the checks; returns the number that failed. */
    .global image_main
image_main:
    call check_address_spaces
    call check_write_protect
    call check_large_page
    jmp report_checks

/* Three PML4s share the boot identity map (slot 0, which holds this code, its data and
 * the UART's view of RAM) and each maps SPACES_VA to its own frame holding its marker. */
check_address_spaces:
    push %rbx
    push %r12
    xor %ebx, %ebx
.Lbuild_space:
    call alloc_frame
    mov %rax, %r12                  /* the space's PML4 */
    mov %rax, space_roots(, %rbx, 8)
    mov boot_pml4, %rax
    mov %rax, (%r12)
    call alloc_frame                /* the frame SPACES_VA maps to in this space */
    lea space_markers(%rip), %rdx
    mov (%rdx, %rbx, 8), %rdx
    mov %rdx, (%rax)
.ifdef FORCE_FAIL
    cmp $1, %ebx
    jne .Lmarker_written
    incq (%rax)                     /* demo-fail: space 2 gets a wrong marker */
.Lmarker_written:
.endif
    lea PTE_P + PTE_RW(%rax), %rdx
    mov %r12, %rdi
    movabs $SPACES_VA, %rsi
    mov $PT_LEVEL_4K, %ecx
    call map_page
    inc %ebx
    cmp $SPACE_COUNT, %ebx
    jb .Lbuild_space

    xor %ebx, %ebx
    movabs $SPACES_VA, %r12
.Lcheck_space:
    mov space_roots(, %rbx, 8), %rax
    mov %rax, %cr3
    xor %esi, %esi
    PF_GUARDED mov (%r12), %rsi
    lea space_markers(%rip), %rdx
    mov (%rdx, %rbx, 8), %rdx
    lea space_labels(%rip), %rdi
    mov (%rdi, %rbx, 8), %rdi
    call check_equal
    inc %ebx
    cmp $SPACE_COUNT, %ebx
    jb .Lcheck_space

    mov $boot_pml4, %eax
    mov %rax, %cr3
    pop %r12
    pop %rbx
    ret

/* The fault comes from a real store to a read-only page, never from INT n: KVM's
 * instruction emulator does not implement INT n, and a real access is what the check is
 * about anyway. */
check_write_protect:
    push %rbx
    call alloc_frame
    lea PTE_P(%rax), %rdx           /* present, supervisor, read-only (R/W=0) */
    mov $boot_pml4, %edi
    movabs $READ_ONLY_VA, %rsi
    mov $PT_LEVEL_4K, %ecx
    call map_page
    movabs $READ_ONLY_VA, %rbx

    mov %cr0, %rax
    and $~CR0_WP, %rax
    mov %rax, %cr0
    PF_GUARDED movq $READ_ONLY_MARKER, (%rbx)
    lea wp0_label(%rip), %rdi
    mov (%rbx), %rsi
    mov $READ_ONLY_MARKER, %edx
    call check_equal

    mov %cr0, %rax
    or $CR0_WP, %rax
    mov %rax, %cr0
    PF_GUARDED movq $0, (%rbx)
    lea wp1_cr2_label(%rip), %rdi
    mov pf_cr2, %rsi
    mov %rbx, %rdx
    call check_equal
    lea wp1_error_code_label(%rip), %rdi
    mov pf_error_code, %rsi
    mov $PF_ERR_P + PF_ERR_W, %edx
    call check_equal
    pop %rbx
    ret

/* LARGE_VA maps LARGE_PHYS with one PDE (PS=1); RAM is identity-mapped, so LARGE_PHYS is
 * also its own virtual address. */
check_large_page:
    push %rbx
    mov $boot_pml4, %edi
    movabs $LARGE_VA, %rsi
    mov $LARGE_PHYS + PTE_P + PTE_RW + PTE_PS, %edx
    mov $PT_LEVEL_2M, %ecx
    call map_page

    movabs $LARGE_VA + LARGE_PROBE_HIGH, %rbx
    PF_GUARDED movq $LARGE_MARKER_VIA_VIRTUAL, (%rbx)
    lea large_virtual_write_label(%rip), %rdi
    mov LARGE_PHYS + LARGE_PROBE_HIGH, %rsi
    mov $LARGE_MARKER_VIA_VIRTUAL, %edx
    call check_equal

    movq $LARGE_MARKER_VIA_PHYSICAL, LARGE_PHYS + LARGE_PROBE_LOW
    movabs $LARGE_VA + LARGE_PROBE_LOW, %rbx
    xor %esi, %esi
    PF_GUARDED mov (%rbx), %rsi
    lea large_physical_write_label(%rip), %rdi
    mov $LARGE_MARKER_VIA_PHYSICAL, %edx
    call check_equal
    pop %rbx
    ret

    .section .note.GNU-stack, "", @progbits
