#!/usr/bin/env bash
# Runs the bench-ctxsw firmware (CR3 switches among 8 address spaces, 16 pages touched after
# each) on Umbra's emulator (with its JIT, and on the interpreter alone), on Umbra's KVM backend
# and on QEMU's TCG, and prints per variant
# the switches per second (from the guest's TSC ticks at the host's TSC rate) and the
# emulator's ratio to QEMU; then the emulator's MMU counters (`umbra run --stats`): for the
# whole run, for the warm-up alone (the bench-ctxsw-warmup image), and their difference, what
# the timed switches cost after warm-up.
#
#   bench/ctxsw.sh                   # from the repository's root or anywhere in it
#   TSC_MHZ=2600 bench/ctxsw.sh      # when the host's TSC rate cannot be read
#
# All of it runs at CPL 0, so on a host whose KVM is PVM the KVM run goes through KVM's
# instruction emulator: expect it slow (about half a minute).
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/tsc_rate.sh
source "$repo/bench/tsc_rate.sh"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
umbra=$target_dir/release/umbra
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building umbra (release)..." >&2
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p umbra
rom=$work/bench-ctxsw.rom
"$umbra" firmware dump bench-ctxsw "$rom"
read -r tsc_mhz tsc_source < <(tsc_rate)

# run NAME EXPECTED_STATUS COMMAND...: keeps the serial output in $work/NAME.out and stderr
# in $work/NAME.err, and says whether every check passed.
failed=()
run() {
    local name=$1 expected_status=$2
    shift 2
    echo "running $name..." >&2
    local status=0
    "$@" >"$work/$name.out" 2>"$work/$name.err" || status=$?
    if [[ $status != "$expected_status" ]] || ! grep -q '^umbra bench-ctxsw: all [0-9]* checks passed$' "$work/$name.out"; then
        failed+=("$name")
    fi
}

# umbra-emu is the emulator as it runs by default, with its JIT; umbra-interp has it off.
backends=(umbra-emu umbra-interp)
run umbra-emu 0 "$umbra" run --firmware bench-ctxsw --accel emu --stats
run umbra-emu-warmup 0 "$umbra" run --firmware bench-ctxsw-warmup --accel emu --stats
run umbra-interp 0 "$umbra" run --firmware bench-ctxsw --accel emu --jit off
if [[ -r /dev/kvm && -w /dev/kvm ]]; then
    backends+=(umbra-kvm)
    run umbra-kvm 0 "$umbra" run --firmware bench-ctxsw --accel kvm
else
    echo "skipped umbra-kvm: /dev/kvm is not usable" >&2
fi
if command -v qemu-system-x86_64 >/dev/null; then
    # -cpu max: PCIDs. QEMU's isa-debug-exit exits with (status << 1) | 1.
    backends+=(qemu-tcg)
    run qemu-tcg 1 qemu-system-x86_64 -bios "$rom" -accel tcg -cpu max -m 128M -display none \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 -serial stdio -nodefaults -no-reboot
else
    echo "skipped qemu-tcg: qemu-system-x86_64 is not installed" >&2
fi

echo
sed -n 's/^umbra bench-ctxsw: \([0-9].*\)$/bench-ctxsw: \1/p' "$work/umbra-emu.out"
echo "TSC rate ${tsc_mhz} MHz (${tsc_source})"
echo

# switches/s of one backend's variant, or "-" where it did not run.
rate() {
    sed -n "s/^bench $2: \\([0-9]*\\) switches, \\([0-9]*\\) tsc ticks$/\\1 \\2/p" "$work/$1.out" |
        awk -v mhz="$tsc_mhz" '{ if (mhz > 0 && $2 > 0) printf "%.0f", $1 / ($2 / (mhz * 1e6)) } END { if (NR == 0) printf "-" }'
}
printf "%-18s" "switches/s"
for backend in "${backends[@]}"; do
    printf " %12s" "$backend"
done
printf " %14s\n" "emu / QEMU-TCG"
for variant in cr3 cr3-wp-toggle cr3-pcid-noflush; do
    printf "%-18s" "$variant"
    for backend in "${backends[@]}"; do
        printf " %12s" "$(rate "$backend" "$variant")"
    done
    emu=$(rate umbra-emu "$variant")
    tcg=-
    if [[ " ${backends[*]} " == *" qemu-tcg "* ]]; then
        tcg=$(rate qemu-tcg "$variant")
    fi
    if [[ $emu != - && $tcg != - && $tcg != 0 ]]; then
        printf " %13.2fx\n" "$(awk -v e="$emu" -v t="$tcg" 'BEGIN { print e / t }')"
    else
        printf " %14s\n" "-"
    fi
done
for backend in "${backends[@]}"; do
    if grep -q '^pcid: not supported, skipped$' "$work/$backend.out"; then
        echo "$backend: pcid not supported, cr3-pcid-noflush skipped"
    fi
done

# The emulator's counters: the `name value` lines --stats prints on stderr.
echo
echo "emu MMU counters (after warm-up = whole run - warm-up image)"
printf "%-22s %14s %14s %14s\n" counter "whole run" "warm-up" "after warm-up"
counters() {
    grep -E '^[a-z_]+ [0-9]+$' "$work/$1.err"
}
# shadow_pages_alive and tracked_frames are levels, not counts: they have no difference.
join -j 1 <(counters umbra-emu | sort) <(counters umbra-emu-warmup | sort) |
    awk '{
        after = ($1 == "shadow_pages_alive" || $1 == "tracked_frames") ? "-" : $2 - $3
        printf "%-22s %14d %14d %14s\n", $1, $2, $3, after
    }'

# What Umbra said about the backends it used (e.g. that this host's KVM is PVM).
echo
for backend in "${backends[@]}"; do
    grep -h '^umbra: accel' "$work/$backend.err" || true
done
if ((${#failed[@]} > 0)); then
    echo "some runs did not pass every check: ${failed[*]}" >&2
    for name in "${failed[@]}"; do
        tail -3 "$work/$name.out" "$work/$name.err" >&2
    done
    exit 1
fi
