#!/usr/bin/env bash
# Boots Debian's kernel with the initramfs of bench/initramfs.sh on Umbra's emulator, Umbra's
# KVM backend, QEMU's TCG and QEMU on KVM, one after the other, with the same kernel, initramfs
# and command line, 1 vCPU and 512 MiB each, and prints one table: wall time (from starting the
# process) to the first line the guest's userspace prints and to the end of the run, the three
# in-guest workload times (cpu, sha256, fork-exec; the guest's own clock), and how the run
# ended; then the ratios Umbra-kvm / QEMU-KVM and Umbra-emu / QEMU-TCG.
#
#   bench/linux.sh                        # from the repository's root or anywhere in it
#   KERNEL=/boot/vmlinuz-X bench/linux.sh # another kernel (default: the newest /boot/vmlinuz-*)
#   ONLY="umbra-emu qemu-tcg" bench/linux.sh   # a subset of the four
#   UMBRA=path/to/umbra bench/linux.sh    # that binary, unbuilt (default: build and use
#                                         # $CARGO_TARGET_DIR/release/umbra)
#
# Each run has a time limit, in seconds, after which it is stopped and reported as timed out:
#   TIMEOUT_UMBRA_EMU (default 3600), TIMEOUT_UMBRA_KVM (600), TIMEOUT_QEMU_TCG (300),
#   TIMEOUT_QEMU_KVM (600).
# On a host whose KVM is PVM (KVM's software backend) both KVM runs are very slow or fail:
# the table says so as it is.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
umbra=${UMBRA:-$target_dir/release/umbra}
append="console=ttyS0 pci=off"
memory=512M

kernel=${KERNEL:-$(find /boot -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | sort | tail -n 1)}
if [[ -z $kernel || ! -r $kernel ]]; then
    echo "bench/linux.sh: no kernel in /boot (apt-get install linux-image-amd64) and KERNEL not set" >&2
    exit 2
fi
declare -A limit=(
    [umbra-emu]=${TIMEOUT_UMBRA_EMU:-3600}
    [umbra-kvm]=${TIMEOUT_UMBRA_KVM:-600}
    [qemu-tcg]=${TIMEOUT_QEMU_TCG:-300}
    [qemu-kvm]=${TIMEOUT_QEMU_KVM:-600}
)
for name in "${!limit[@]}"; do
    if [[ ! ${limit[$name]} =~ ^[1-9][0-9]*$ ]]; then
        echo "bench/linux.sh: the time limit for $name must be a positive number of seconds, not '${limit[$name]}'" >&2
        exit 2
    fi
done
only=${ONLY:-umbra-emu umbra-kvm qemu-tcg qemu-kvm}
for name in $only; do
    if [[ -z ${limit[$name]:-} ]]; then
        echo "bench/linux.sh: ONLY names umbra-emu, umbra-kvm, qemu-tcg or qemu-kvm, not '$name'" >&2
        exit 2
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
initrd=$work/initramfs.cpio
"$repo/bench/initramfs.sh" "$initrd"
if [[ -z ${UMBRA:-} ]]; then
    echo "building umbra (release)..." >&2
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p umbra
fi

# run NAME COMMAND...: runs one backend under its time limit, keeping its serial output with
# each line's arrival time (seconds since the start) in $work/NAME.out, its stderr in
# $work/NAME.err, and a row in $work/rows: name, seconds to the first marker and to the end,
# the three workload times, and how it ended.
run() {
    local name=$1
    shift
    local seconds=${limit[$name]}
    echo "running $name (at most $seconds s)..." >&2
    local start status
    start=$EPOCHREALTIME
    {
        status=0
        timeout -k 10 "$seconds" "$@" </dev/null 2>"$work/$name.err" || status=$?
        echo "$status" >"$work/$name.status"
    } |
        while IFS= read -r line; do
            printf '%s %s\n' "$(awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.2f", n - s }')" "$line"
        done >"$work/$name.out"
    status=$(<"$work/$name.status")
    local wall
    wall=$(awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.2f", n - s }')
    local marker cpu sha fork
    marker=$(awk '/umbra-init: userspace reached/ { print $1; exit }' "$work/$name.out")
    cpu=$(sed -n 's/^[0-9.]* umbra-init: cpu \([0-9.]*\) s.*/\1/p' "$work/$name.out")
    sha=$(sed -n 's/^[0-9.]* umbra-init: sha256 \([0-9.]*\) s.*/\1/p' "$work/$name.out")
    fork=$(sed -n 's/^[0-9.]* umbra-init: fork-exec \([0-9.]*\) s.*/\1/p' "$work/$name.out")
    local end
    if [[ $status == 124 || $status == 137 ]]; then
        end="timed out after $seconds s"
    elif grep -q 'umbra-init: done' "$work/$name.out"; then
        end="done, exit status $status"
    else
        # The last thing the run said: Umbra's summary line or QEMU's error.
        end="failed, exit status $status: $(grep -v '^\s*$' "$work/$name.err" | tail -n 1)"
    fi
    if [[ $status == 124 || $status == 137 ]]; then
        wall=-
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${marker:--}" "$wall" "${cpu:--}" \
        "${sha:--}" "${fork:--}" "$end" >>"$work/rows"
}

: >"$work/rows"
common_umbra=(-m "$memory" -kernel "$kernel" -initrd "$initrd" -append "$append")
common_qemu=(-m "$memory" -smp 1 -kernel "$kernel" -initrd "$initrd" -append "$append"
    -display none -nodefaults -serial stdio -no-reboot)
for name in $only; do
    case $name in
    umbra-emu) run "$name" "$umbra" run --accel emu "${common_umbra[@]}" ;;
    umbra-kvm) run "$name" "$umbra" run --accel kvm "${common_umbra[@]}" ;;
    qemu-tcg) run "$name" qemu-system-x86_64 -accel tcg "${common_qemu[@]}" ;;
    qemu-kvm) run "$name" qemu-system-x86_64 -accel kvm "${common_qemu[@]}" ;;
    esac
done

echo
echo "Linux boot: $kernel, uncompressed initramfs from bench/initramfs.sh, -append \"$append\", 1 vCPU, $memory"
echo "times in seconds: wall from process start to the first userspace line (marker) and to the"
echo "end (exit); cpu, sha256 and fork-exec as the guest measured them"
echo
awk -F'\t' '
    {
        name[NR] = $1
        for (c = 2; c <= 6; c++) value[$1, c] = $c
        printf "%-10s %8s %8s %7s %7s %9s  %s\n", $1, $2, $3, $4, $5, $6, $7
    }
    function ratio(label, a, b,    c, line) {
        line = sprintf("%-22s", label)
        for (c = 2; c <= 6; c++) {
            if (value[a, c] != "" && value[a, c] != "-" && value[b, c] != "" && value[b, c] != "-" && value[b, c] > 0) {
                line = line sprintf(" %s %.2fx", column[c], value[a, c] / value[b, c])
            } else {
                line = line sprintf(" %s n/a", column[c])
            }
        }
        print line
    }
    BEGIN {
        printf "%-10s %8s %8s %7s %7s %9s  %s\n", "run", "marker", "exit", "cpu", "sha256", "fork-exec", "end"
        column[2] = "marker"; column[3] = "exit"; column[4] = "cpu"; column[5] = "sha256"; column[6] = "fork-exec"
    }
    END {
        print ""
        ratio("Umbra-kvm / QEMU-KVM:", "umbra-kvm", "qemu-kvm")
        ratio("Umbra-emu / QEMU-TCG:", "umbra-emu", "qemu-tcg")
    }' "$work/rows"
echo
grep -h '^umbra: accel' "$work"/*.err 2>/dev/null || true
