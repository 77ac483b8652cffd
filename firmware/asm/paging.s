/*
 * paging.s: a pool of zeroed 4 KiB frames and a routine that maps one page into a
 * 4-level page-table tree, taking the tables it needs from the pool.
 */
    .include "umbra.inc"

    .set FRAME_POOL_FRAMES, 64

    .section .frame_pool, "aw", @nobits
    .balign PAGE_SIZE
frame_pool:
    .skip FRAME_POOL_FRAMES * PAGE_SIZE
frame_pool_end:

    .bss
    .balign 8
frame_pool_next:
    .skip 8

    .section .rodata
frame_pool_exhausted_message:
    .asciz "the frame pool is exhausted\n"

    .text
    .code64

/* frame_pool_init: empties the pool. Clobbers nothing. */
    .global frame_pool_init
frame_pool_init:
    movq $frame_pool, frame_pool_next
    ret

/* alloc_frame: returns the physical (= identity-mapped) address of a zeroed 4 KiB frame
 * in %rax. Clobbers nothing else. */
    .global alloc_frame
alloc_frame:
    mov frame_pool_next, %rax
    cmp $frame_pool_end, %rax
    jae .Lexhausted
    addq $PAGE_SIZE, frame_pool_next
    push %rcx
    /* A plain store loop rather than REP STOSQ: on PVM hosts KVM's instruction emulator
     * runs this, and plain MOVs are its most travelled path. */
    xor %ecx, %ecx
.Lzero_frame:
    movq $0, (%rax,%rcx,8)
    inc %ecx
    cmp $PAGE_SIZE / 8, %ecx
    jb .Lzero_frame
    pop %rcx
    ret
.Lexhausted:
    lea frame_pool_exhausted_message(%rip), %rdi
    jmp fatal

/*
 * map_page(%rdi = PML4 address, %rsi = virtual address, %rdx = leaf entry (physical
 * address | flags, with PTE_PS for a 2 MiB page), %ecx = leaf level (PT_LEVEL_4K or
 * PT_LEVEL_2M)): writes the leaf entry, creating the missing intermediate tables from the
 * pool with P|RW (so the leaf alone decides writability). The walk must not run into an
 * existing large page. Clobbers %rax, %rcx, %rdi, %r8, %r9, %r10.
 */
    .global map_page
map_page:
    mov %ecx, %r10d                 /* the leaf level */
    mov $4, %r8d                    /* the level of the table at %rdi */
.Lwalk:
    lea (%r8, %r8, 8), %ecx
    add $3, %ecx                    /* the index's shift: 12 + 9 * (level - 1) */
    mov %rsi, %rax
    shr %cl, %rax
    and $PT_ENTRIES - 1, %eax
    lea (%rdi, %rax, 8), %r9        /* the entry for the address at this level */
    cmp %r10d, %r8d
    je .Lwrite_leaf
    mov (%r9), %rdi
    test $PTE_P, %edi
    jnz .Lnext_level
    call alloc_frame
    lea PTE_P + PTE_RW(%rax), %rdi
    mov %rdi, (%r9)
.Lnext_level:
    movabs $PTE_ADDR_MASK, %rax
    and %rax, %rdi
    dec %r8d
    jmp .Lwalk
.Lwrite_leaf:
    mov %rdx, (%r9)
    ret

    .section .note.GNU-stack, "", @progbits
