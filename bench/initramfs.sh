#!/usr/bin/env bash
# Builds the Linux guest of the tests and of bench/linux.sh: a newc initramfs, gzip'd when
# OUTPUT ends in .gz, holding Debian's static busybox (package busybox-static) and an /init
# that
#
#   - mounts proc, sys and devtmpfs and prints "umbra-init: userspace reached, <the kernel's version>";
#   - runs three workloads and prints each one's time, measured in the guest from
#     /proc/uptime (10 ms steps):
#       "umbra-init: cpu <seconds> s"       an awk loop of arithmetic, string and array work;
#       "umbra-init: sha256 <seconds> s"    sha256sum of 32 MiB of zeros piped from dd;
#       "umbra-init: fork-exec <seconds> s" 200 runs of /bin/true, each a fork and an exec
#                                           (a new address space: CR3 switches);
#   - prints "umbra-init: done" and powers off (poweroff -f). On a machine without ACPI, such
#     as Umbra's, Linux cannot power off and halts instead ("reboot: System halted", a HLT
#     with interrupts disabled), which ends Umbra's run just as well.
#
# Two words on the kernel command line change that: with "umbra.quick" /init skips the
# workloads (the tests, which only boot, use it); with "umbra.shell" it opens an interactive
# shell on the console before "done" (exit leaves it and powers off).
#
#   bench/initramfs.sh OUTPUT              # e.g. bench/initramfs.sh /tmp/initramfs.cpio.gz
#   BUSYBOX=/path/to/busybox bench/initramfs.sh OUTPUT
#
# An uncompressed archive (OUTPUT not ending in .gz) spares the kernel the gunzip, which
# takes minutes where KVM's instruction emulator runs the guest's kernel code (PVM).
#
# Needs cpio, gzip and readelf (binutils).
set -euo pipefail

if [[ $# != 1 ]]; then
    echo "usage: bench/initramfs.sh OUTPUT" >&2
    exit 2
fi
output=$1
busybox=${BUSYBOX:-/bin/busybox}
if [[ ! -x $busybox ]]; then
    echo "bench/initramfs.sh: no $busybox (apt-get install busybox-static)" >&2
    exit 2
fi
if readelf -l "$busybox" | grep -q 'Requesting program interpreter'; then
    echo "bench/initramfs.sh: $busybox is dynamically linked; the initramfs has no libc (apt-get install busybox-static)" >&2
    exit 2
fi
for tool in cpio gzip; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench/initramfs.sh: $tool is not installed" >&2
        exit 2
    fi
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev"
cp "$busybox" "$root/bin/busybox"
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "umbra-init: userspace reached, $(cat /proc/version)"

# now: the uptime in seconds, to 10 ms.
now() { read -r up _ </proc/uptime; echo "$up"; }
# report NAME START: prints NAME's time since START.
report() { awk -v n="$1" -v a="$2" -v b="$(now)" 'BEGIN { printf "umbra-init: %s %.2f s\n", n, b - a }'; }

# workloads: the three timed workloads.
workloads() {
    start=$(now)
    awk 'BEGIN {
        s = 0
        for (i = 0; i < 200000; i++) { s = (s * 31 + i % 97) % 1000003; a[i % 512] = s }
        for (k in a) s += length(sprintf("%x", a[k]))
        print "umbra-init: cpu checksum " s
    }'
    report cpu "$start"

    start=$(now)
    dd if=/dev/zero bs=1M count=32 2>/dev/null | sha256sum | sed 's/ .*//; s/^/umbra-init: sha256 /'
    report sha256 "$start"

    start=$(now)
    i=0
    while [ $i -lt 200 ]; do
        /bin/true
        i=$((i + 1))
    done
    report fork-exec "$start"
}

grep -q 'umbra\.quick' /proc/cmdline || workloads

if grep -q 'umbra\.shell' /proc/cmdline; then
    echo "umbra-init: shell (exit to power off)"
    setsid cttyhack sh
fi
echo "umbra-init: done"
poweroff -f
EOF
chmod +x "$root/init" "$root/bin/busybox"
archive() { (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet); }
if [[ $output == *.gz ]]; then
    archive | gzip -9 >"$output"
else
    archive >"$output"
fi
