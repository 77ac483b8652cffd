#!/usr/bin/env bash
# Runs the bench-compute firmware on Umbra's emulator, on Umbra's KVM backend and on QEMU's
# TCG, and prints one table: wall time, the workload's guest TSC ticks, guest MIPS (the
# instructions the firmware counts over the ticks at the host's TSC rate), whether every
# checksum matched, then the emulator's ratios to the others.
#
#   bench/compute.sh                 # from the repository's root or anywhere in it
#   RUNS=3 bench/compute.sh          # keep each backend's fastest of 3 runs (by guest ticks)
#   TSC_MHZ=2600 bench/compute.sh    # when the host's TSC rate cannot be read
#
# Wall time includes starting the process and booting; the in-guest ticks cover only the
# kernels, and all three backends read the host's TSC, so the ticks are the fair comparison.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
umbra=$target_dir/release/umbra
runs=${RUNS:-1}
if [[ ! $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "bench/compute.sh: RUNS must be a positive number, not '$runs'" >&2
    exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building umbra (release)..." >&2
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p umbra
rom=$work/bench-compute.rom
"$umbra" firmware dump bench-compute "$rom"

# shellcheck source=bench/tsc_rate.sh
source "$repo/bench/tsc_rate.sh"
read -r tsc_mhz tsc_source < <(tsc_rate)

# run NAME EXPECTED_STATUS COMMAND...: runs one backend $runs times and appends a row for
# its fastest run to $work/rows (name, wall seconds, total ticks, total instructions,
# checksums ok), whose serial output it keeps in $work/NAME.out and stderr in $work/NAME.err.
# A run whose checks did not all pass is the one kept, so that a failure is never hidden.
run() {
    local name=$1 expected_status=$2
    shift 2
    local attempt best_row=
    for ((attempt = 1; attempt <= runs; attempt++)); do
        echo "running $name ($attempt of $runs)..." >&2
        local start end status=0
        start=$EPOCHREALTIME
        "$@" >"$work/run.out" 2>"$work/run.err" || status=$?
        end=$EPOCHREALTIME
        local total ticks=- instructions=- ok=no
        total=$(sed -n 's/^bench total: \([0-9]*\) tsc ticks, \([0-9]*\) instructions$/\1 \2/p' "$work/run.out")
        if [[ -n $total ]]; then
            read -r ticks instructions <<<"$total"
        fi
        if [[ $status == "$expected_status" ]] && grep -q '^umbra bench-compute: all 5 checks passed$' "$work/run.out"; then
            ok=yes
        fi
        # Runs before this one all passed (a failure ends the loop): keep the fastest.
        local best_ticks=
        if [[ -n $best_row ]]; then
            read -r _ _ best_ticks _ _ <<<"$best_row"
        fi
        if [[ -z $best_row || $ok == no ]] ||
            awk -v t="$ticks" -v b="$best_ticks" 'BEGIN { exit !(t < b) }'; then
            best_row="$name $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }') $ticks $instructions $ok"
            mv "$work/run.out" "$work/$name.out"
            mv "$work/run.err" "$work/$name.err"
        fi
        if [[ $ok == no ]]; then
            break
        fi
    done
    echo "$best_row" >>"$work/rows"
}

: >"$work/rows"
run umbra-jit 0 "$umbra" run --firmware "$rom" --accel emu
run umbra-interp 0 "$umbra" run --firmware "$rom" --accel emu --jit off
if [[ -r /dev/kvm && -w /dev/kvm ]]; then
    run umbra-kvm 0 "$umbra" run --firmware "$rom" --accel kvm
else
    echo "skipped umbra-kvm: /dev/kvm is not usable" >&2
fi
if command -v qemu-system-x86_64 >/dev/null; then
    # QEMU's isa-debug-exit exits with (status << 1) | 1: 1 when every checksum matched.
    run qemu-tcg 1 qemu-system-x86_64 -bios "$rom" -accel tcg -m 128M -display none \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 -serial stdio -nodefaults -no-reboot
else
    echo "skipped qemu-tcg: qemu-system-x86_64 is not installed" >&2
fi

echo
echo "bench-compute: sieve below 2^20, CRC-32 of 4 MiB, 4 MiB memcpy (MOV loop, REP MOVSQ), heapsort of 2^16"
echo "TSC rate ${tsc_mhz} MHz (${tsc_source})"
echo
awk -v mhz="$tsc_mhz" '
    {
        name[NR] = $1; wall[NR] = $2; ticks[NR] = $3; insns[NR] = $4; ok[NR] = $5
        if ($1 == "umbra-jit") emu = $3
        if ($1 == "umbra-interp") interp = $3
        if ($1 == "umbra-kvm") kvm = $3
        if ($1 == "qemu-tcg") tcg = $3
    }
    END {
        printf "%-12s %9s %15s %10s %10s %9s\n", "backend", "wall s", "guest ticks", "guest s", "MIPS", "checksums"
        for (i = 1; i <= NR; i++) {
            if (ticks[i] == "-" || mhz == 0) {
                printf "%-12s %9s %15s %10s %10s %9s\n", name[i], wall[i], ticks[i], "-", "-", ok[i]
                continue
            }
            seconds = ticks[i] / (mhz * 1e6)
            printf "%-12s %9s %15s %10.4f %10.1f %9s\n", name[i], wall[i], ticks[i], seconds, insns[i] / seconds / 1e6, ok[i]
        }
        print ""
        # Speed ratios: guest ticks of the other backend over those of the JIT.
        if (emu != "" && emu != "-" && interp != "" && interp != "-")
            printf "JIT speed / interpreter: %.2fx\n", interp / emu
        if (emu != "" && emu != "-" && tcg != "" && tcg != "-")
            printf "JIT speed / QEMU-TCG:    %.2fx\n", tcg / emu
        if (emu != "" && emu != "-" && kvm != "" && kvm != "-")
            printf "JIT speed / KVM:         %.2fx\n", kvm / emu
    }' "$work/rows"

# Per kernel, in millions of guest ticks: where each backend spends its time.
mapfile -t backends < <(cut -d' ' -f1 "$work/rows")
echo
printf "%-18s" "kernel (Mticks)"
for backend in "${backends[@]}"; do
    printf " %12s" "$backend"
done
echo
for kernel in sieve crc32 memcpy-mov memcpy-rep-movsq heapsort; do
    printf "%-18s" "$kernel"
    for backend in "${backends[@]}"; do
        ticks=$(sed -n "s/^bench $kernel: \\([0-9]*\\) tsc ticks.*/\\1/p" "$work/$backend.out")
        if [[ -n $ticks ]]; then
            printf " %12.1f" "$(awk -v t="$ticks" 'BEGIN { print t / 1e6 }')"
        else
            printf " %12s" "-"
        fi
    done
    echo
done

# What Umbra said about the backends it used (e.g. that this host's KVM is PVM).
echo
for backend in "${backends[@]}"; do
    grep -h '^umbra: accel' "$work/$backend.err" || true
done
failed=$(awk '$5 != "yes"' "$work/rows")
if [[ -n $failed ]]; then
    echo "some backends did not pass every check:" >&2
    echo "$failed" >&2
    exit 1
fi
