# Sourced by the bench scripts: tsc_rate prints the host's TSC rate in MHz and where it came
# from ("<mhz> <source>"): $TSC_MHZ if set, else the kernel's refined or detected calibration
# from dmesg, else /proc/cpuinfo's "cpu MHz" (approximate), else "0 unknown". Guests on every
# backend read the host's TSC, so this one rate turns all their tick counts into seconds.
tsc_rate() {
    if [[ -n ${TSC_MHZ:-} ]]; then
        echo "$TSC_MHZ TSC_MHZ"
        return
    fi
    local mhz
    mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Refined TSC clocksource calibration: \([0-9.]*\) MHz.*/\1/p' | tail -1)
    if [[ -n $mhz ]]; then
        echo "$mhz dmesg(refined)"
        return
    fi
    mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Detected \([0-9.]*\) MHz processor.*/\1/p' | tail -1)
    if [[ -n $mhz ]]; then
        echo "$mhz dmesg"
        return
    fi
    mhz=$(sed -n 's/^cpu MHz[[:space:]]*: \([0-9.]*\)$/\1/p' /proc/cpuinfo | head -1)
    if [[ -n $mhz ]]; then
        echo "$mhz /proc/cpuinfo(approximate)"
        return
    fi
    echo "0 unknown"
}
