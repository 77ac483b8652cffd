/*
 * bench-ctxsw.s: address-space switches, the MMU's hardest everyday load. SPACES address
 * spaces share the kernel's mappings (PML4 slot 0, the boot identity map) and each maps its
 * own PAGES pages at DATA_VA (slot 1). A switch writes CR3 and then touches every page of the
 * new space: it reads the page's counter and writes it back incremented. Three variants:
 *   - cr3: plain CR3 writes (every switch flushes the non-global TLB);
 *   - cr3-wp-toggle: as cr3, but each write goes through a read-only alias of the page with
 *     CR0.WP cleared around it (WP=0, the store, WP=1: the pattern grsecurity's kernels use to
 *     write read-only data), so a switch also toggles WP 2 * PAGES times;
 *   - cr3-pcid-noflush: CR4.PCIDE = 1, each space with its own PCID, CR3 written with bit 63
 *     set so the new PCID's TLB entries stay. Only if CPUID.1:ECX[17] advertises PCID; else
 *     it prints "pcid: not supported, skipped" (Umbra's interpreter does not advertise it yet).
 * Each variant first runs WARMUP_SWITCHES switches to warm the TLB and the shadow pages, then
 * SWITCHES timed with RDTSC, and prints
 *   bench <variant>: <switches> switches, <ticks> tsc ticks
 * (decimal), then checks that every page's counter saw every switch into its space
 * (checks.s's format; a wrong count means a switch reached another space's pages). The exit
 * status is the number of failed checks.
 *
 * Variants (build.rs): SWITCHES sets the timed count (a multiple of SPACES); WARMUP_ONLY runs
 * the warm-up switches alone and prints no bench lines, so that what a backend counts during
 * the timed switches (`umbra run --stats`) is the full image's counts less this one's.
 *
 * Everything runs at CPL 0 (MOV to CR3 is privileged), so on hosts whose KVM is PVM all of it
 * runs in KVM's instruction emulator, far slower than the other backends.
 *
 * Memory: space s's tables and pages at SPACES_PHYS + s * SPACE_STRIDE: its PML4, PDPT, PD and
 * PT, then its PAGES pages. DATA_VA + p * 4 KiB maps page p read-write, DATA_VA + (PAGES + p)
 * * 4 KiB read-only.
 */
    .include "umbra.inc"
    IMAGE_STRINGS bench-ctxsw

    .set SPACES, 8
    .set PAGES, 16
.ifndef SWITCHES
    .set SWITCHES, 100000
.endif
    .set WARMUP_SWITCHES, 4 * SPACES
.if SWITCHES % SPACES
    .error "SWITCHES must be a multiple of SPACES"
.endif
.ifdef WARMUP_ONLY
    .set TIMED_SWITCHES, 0
.else
    .set TIMED_SWITCHES, SWITCHES
.endif
    /* What each page's counter holds after a variant. */
    .set EXPECTED_COUNT, (WARMUP_SWITCHES + TIMED_SWITCHES) / SPACES

    .set DATA_VA, 0x0000008000000000      /* PML4 slot 1 */
    .set READ_ONLY_ALIAS, PAGES * PAGE_SIZE
    .set SPACES_PHYS, 0x1000000
    .set SPACE_PML4, 0
    .set SPACE_PDPT, 0x1000
    .set SPACE_PD, 0x2000
    .set SPACE_PT, 0x3000
    .set SPACE_PAGES, 0x4000
    .set SPACE_STRIDE, SPACE_PAGES + PAGES * PAGE_SIZE
    .set SPACE_TABLES, 4

    .set CR4_PCIDE, 1 << 17
    .set CR3_NOFLUSH, 1 << 63

/* One variant in the `variants` table. */
    .set VARIANT_NAME, 0
    .set VARIANT_LABEL, 8
    .set VARIANT_PASS, 16                   /* the routine that makes the switches */
    .set VARIANT_PCID, 24                   /* non-zero: needs PCID */
    .set VARIANT_SIZE, 32

/* ---------------------------------------------------------------- RAM */

    .bss
    .balign 8
space_cr3:                                  /* what each switch writes to CR3 */
    .skip SPACES * 8

/* ---------------------------------------------------------------- ROM data */

    .section .rodata
    .balign 8
variants:
    .quad cr3_name, cr3_label, pass_plain, 0
    .quad wp_toggle_name, wp_toggle_label, pass_wp_toggle, 0
    .quad pcid_name, pcid_label, pass_plain, 1
variants_end:

cr3_name:
    .asciz "cr3"
cr3_label:
    .asciz "cr3: pages with a wrong count"
wp_toggle_name:
    .asciz "cr3-wp-toggle"
wp_toggle_label:
    .asciz "cr3-wp-toggle: pages with a wrong count"
pcid_name:
    .asciz "cr3-pcid-noflush"
pcid_label:
    .asciz "cr3-pcid-noflush: pages with a wrong count"
setup_spaces:
    .asciz "address spaces of "
setup_switches:
    .asciz " pages, "
setup_warmup:
    .asciz " switches per variant after "
setup_end:
    .asciz " to warm up\n"
pcid_skipped:
    .asciz "pcid: not supported, skipped\n"
bench_prefix:
    .asciz "bench "
switches_infix:
    .asciz ": "
switches_suffix:
    .asciz " switches, "
ticks_suffix:
    .asciz " tsc ticks\n"

    .text
    .code64

/* image_main: builds the spaces, runs each variant; returns the number of failed checks. */
    .global image_main
image_main:
    push %rbx
    call build_spaces
    call print_setup
    lea variants(%rip), %rbx
.Lnext_variant:
    cmpq $0, VARIANT_PCID(%rbx)
    je .Lrun_variant
    call pcid_supported
    test %eax, %eax
    jnz .Lrun_variant
    lea pcid_skipped(%rip), %rdi
    call puts
    jmp .Lvariant_done
.Lrun_variant:
    mov %rbx, %rdi
    call run_variant
.Lvariant_done:
    add $VARIANT_SIZE, %rbx
    lea variants_end(%rip), %rax
    cmp %rax, %rbx
    jb .Lnext_variant
    pop %rbx
    jmp report_checks

/* print_setup: "umbra bench-ctxsw: 8 address spaces of 16 pages, N switches per variant after
 * W to warm up". Clobbers %rax, %rcx, %rdx, %rdi. */
print_setup:
    lea image_prefix(%rip), %rdi
    call puts
    mov $SPACES, %edi
    call print_dec
    mov $' ', %edi
    call putc
    lea setup_spaces(%rip), %rdi
    call puts
    mov $PAGES, %edi
    call print_dec
    lea setup_switches(%rip), %rdi
    call puts
    mov $TIMED_SWITCHES, %edi
    call print_dec
    lea setup_warmup(%rip), %rdi
    call puts
    mov $WARMUP_SWITCHES, %edi
    call print_dec
    lea setup_end(%rip), %rdi
    jmp puts

/* pcid_supported: %eax non-zero if CPUID.1:ECX[17] advertises PCID. Clobbers %rcx, %rdx. */
pcid_supported:
    push %rbx
    mov $1, %eax
    cpuid
    mov %ecx, %eax
    shr $17, %eax
    and $1, %eax
    pop %rbx
    ret

/*
 * build_spaces: every space's tables (zeroed with a plain store loop: on PVM hosts KVM's
 * instruction emulator runs this) and mappings. Clobbers %rax, %rcx, %rdx, %rsi, %rdi.
 */
build_spaces:
    mov $SPACES_PHYS, %esi                  /* the space */
.Lbuild_space:
    xor %ecx, %ecx
.Lzero_tables:
    movq $0, (%rsi, %rcx, 8)
    inc %ecx
    cmp $SPACE_TABLES * PAGE_SIZE / 8, %ecx
    jb .Lzero_tables
    mov boot_pml4, %rax                     /* the kernel's mappings */
    mov %rax, SPACE_PML4(%rsi)
    lea SPACE_PDPT + PTE_P + PTE_RW(%rsi), %rax
    mov %rax, SPACE_PML4 + 8(%rsi)          /* slot 1: DATA_VA */
    lea SPACE_PD + PTE_P + PTE_RW(%rsi), %rax
    mov %rax, SPACE_PDPT(%rsi)
    lea SPACE_PT + PTE_P + PTE_RW(%rsi), %rax
    mov %rax, SPACE_PD(%rsi)
    xor %ecx, %ecx                          /* the page */
    lea SPACE_PAGES(%rsi), %rdx
.Lmap_page:
    lea PTE_P + PTE_RW(%rdx), %rax
    mov %rax, SPACE_PT(%rsi, %rcx, 8)
    lea PTE_P(%rdx), %rax
    mov %rax, SPACE_PT + PAGES * 8(%rsi, %rcx, 8)
    add $PAGE_SIZE, %rdx
    inc %ecx
    cmp $PAGES, %ecx
    jb .Lmap_page
    add $SPACE_STRIDE, %esi
    cmp $SPACES_PHYS + SPACES * SPACE_STRIDE, %esi
    jb .Lbuild_space
    ret

/*
 * run_variant(%rdi = variant): zeroes the counters, sets space_cr3 (and CR4.PCIDE for the
 * PCID variant), runs the warm-up and the timed switches, prints the bench line, returns to
 * the boot address space and checks the counters. Clobbers %rax, %rcx, %rdx, %rsi, %rdi,
 * %r8-%r11.
 */
run_variant:
    push %rbx
    push %r12
    mov %rdi, %rbx
    call zero_counters
    xor %ecx, %ecx
    mov $SPACES_PHYS, %eax
.Lspace_cr3:
    mov %rax, %rdx
    cmpq $0, VARIANT_PCID(%rbx)
    je .Lstore_cr3
    /* PCID s + 1 (PCID 0 stays the boot space's), and keep that PCID's TLB entries. */
    lea 1(%rdx, %rcx), %rdx
    bts $63, %rdx
.Lstore_cr3:
    mov %rdx, space_cr3(, %rcx, 8)
    add $SPACE_STRIDE, %eax
    inc %ecx
    cmp $SPACES, %ecx
    jb .Lspace_cr3
    cmpq $0, VARIANT_PCID(%rbx)
    je .Lwarm_up
    mov %cr4, %rax                          /* CR3's PCID is 0 here, as PCIDE=1 needs */
    or $CR4_PCIDE, %eax
    mov %rax, %cr4
.Lwarm_up:
    mov $WARMUP_SWITCHES, %edi
    call *VARIANT_PASS(%rbx)
.ifndef WARMUP_ONLY
    mov $SWITCHES, %edi
    call *VARIANT_PASS(%rbx)
    mov %rax, %r12
    lea bench_prefix(%rip), %rdi
    call puts
    mov VARIANT_NAME(%rbx), %rdi
    call puts
    lea switches_infix(%rip), %rdi
    call puts
    mov $SWITCHES, %edi
    call print_dec
    lea switches_suffix(%rip), %rdi
    call puts
    mov %r12, %rdi
    call print_dec
    lea ticks_suffix(%rip), %rdi
    call puts
.endif
    mov $boot_pml4, %eax                    /* PCID 0, everything flushed */
    mov %rax, %cr3
    mov %cr4, %rax
    and $~CR4_PCIDE, %eax
    mov %rax, %cr4
    call count_wrong_pages
    mov %rax, %rsi
    mov VARIANT_LABEL(%rbx), %rdi
    xor %edx, %edx
    call check_equal
    pop %r12
    pop %rbx
    ret

/* zero_counters: every page's counter (its first quadword) to 0, through the identity map.
 * Clobbers %rax, %rcx. */
zero_counters:
    mov $SPACES_PHYS + SPACE_PAGES, %eax
    xor %ecx, %ecx
.Lzero_counter:
    movq $0, (%rax)
    add $PAGE_SIZE, %rax
    inc %ecx
    cmp $PAGES, %ecx
    jb .Lzero_counter
    xor %ecx, %ecx
    add $SPACE_STRIDE - PAGES * PAGE_SIZE, %rax
    cmp $SPACES_PHYS + SPACES * SPACE_STRIDE, %rax
    jb .Lzero_counter
    ret

/* count_wrong_pages: the number of pages whose counter is not EXPECTED_COUNT, in %rax.
 * Clobbers %rcx, %rdx, %rsi. */
count_wrong_pages:
    xor %eax, %eax
    mov $SPACES_PHYS + SPACE_PAGES, %esi
    xor %ecx, %ecx
.Lcount_page:
    xor %edx, %edx
    cmpq $EXPECTED_COUNT, (%rsi)
    setne %dl
    add %rdx, %rax
    add $PAGE_SIZE, %rsi
    inc %ecx
    cmp $PAGES, %ecx
    jb .Lcount_page
    xor %ecx, %ecx
    add $SPACE_STRIDE - PAGES * PAGE_SIZE, %rsi
    cmp $SPACES_PHYS + SPACES * SPACE_STRIDE, %rsi
    jb .Lcount_page
    ret

/*
 * The passes. pass_*(%edi = switches): that many switches, space after space from space 0,
 * each writing space_cr3[space] to CR3 and touching every page of the space; returns the
 * TSC ticks they took in %rax. Clobbers %rcx, %rdx, %rsi, %rdi, %r8-%r11.
 */

/* TIMED_PASS toggle_wp: a pass's body; with toggle_wp = 1 each store goes through the
 * read-only alias with CR0.WP = 0 (%r8: CR0 without WP, %r9: CR0 with it). */
.macro TIMED_PASS toggle_wp
    push %rbx
    mov %edi, %r11d                         /* the switches */
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %r10                          /* the start */
    xor %ebx, %ebx                          /* the switch */
.Lswitch\@:
    mov %ebx, %eax
    and $SPACES - 1, %eax
    mov space_cr3(, %rax, 8), %rax
    mov %rax, %cr3
    movabs $DATA_VA, %rsi
    mov $PAGES, %ecx
.Ltouch\@:
    mov (%rsi), %rax
    inc %rax
.if \toggle_wp
    mov %r8, %cr0
    mov %rax, READ_ONLY_ALIAS(%rsi)
    mov %r9, %cr0
.else
    mov %rax, (%rsi)
.endif
    add $PAGE_SIZE, %rsi
    dec %ecx
    jnz .Ltouch\@
    inc %ebx
    cmp %r11d, %ebx
    jb .Lswitch\@
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    sub %r10, %rax
    pop %rbx
    ret
.endm

pass_plain:
    TIMED_PASS 0

pass_wp_toggle:
    mov %cr0, %r9
    mov %r9, %r8
    and $~CR0_WP, %r8
    TIMED_PASS 1

    .section .note.GNU-stack, "", @progbits
