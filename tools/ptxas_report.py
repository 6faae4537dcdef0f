"""Summarise `nvcc -Xptxas -v` output: one line per kernel with its registers, spills and shared memory.

    python tools/ptxas_report.py build/nvcc_check/ptxas_sm90.log
"""

import re
import subprocess
import sys


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
        return out.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names


def main(path):
    rows, name, spill = [], None, ""
    for line in open(path):
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            spill = f"stack {m.group(1)} B, spills {m.group(2)}/{m.group(3)} B"
            continue
        m = re.search(r"Used (\d+) registers(.*)", line)
        if m and name:
            smem = re.search(r"(\d+) bytes smem", m.group(2))
            rows.append((name, int(m.group(1)), spill, smem.group(1) if smem else "0"))
            name, spill = None, ""
    if not rows:
        print("(no kernels)")
        return
    pretty = demangle([r[0] for r in rows])
    width = min(110, max(len(p) for p in pretty))
    spilled = 0
    for p, (_, regs, sp, smem) in sorted(zip(pretty, rows)):
        spilled += "spills 0/0" not in sp
        print(f"  {p[:width]:<{width}}  {regs:>3} regs  {sp}  smem {smem} B")
    print(f"  {len(rows)} kernels, {spilled} with spills")


if __name__ == "__main__":
    main(sys.argv[1])
