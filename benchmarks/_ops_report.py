"""What bench_ops.py writes: the printed table and its summary, the CSV rows (benchmarks/README.md
lists the columns) and the JSON document."""

import json
import os
import sys

import harness
from _ops_sizes import ratio, target_criterion, targets_for

CSV_FIELDS = harness.ENV_FIELDS + [
    "op", "size", "shape", "dtype", "pass", "backend", "median_us",
    "speedup_vs_eager", "speedup_vs_compiled", "compile_s",
]
GPU_CSV_FIELDS = CSV_FIELDS + ["bytes", "gbps", "copy_gbps", "bandwidth_fraction"]


def _fmt_us(x):
    return "-" if x is None else f"{x:,.1f}"


def _fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def _fmt_gbps(x):
    return "-" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def table_of(rows, contenders, backends, bandwidth):
    """(header, rows, right-aligned column indices) of the printed table."""
    single = len(backends) == 1
    header = ["op", "size", "pass"] + [f"{c} us" for c in contenders]
    for b in backends:
        header += [f"eager/{b}", f"compiled/{b}"]
    if bandwidth:
        header.append("MB")
        for b in backends:
            header += [f"GB/s {b}", f"of copy {b}"]
    right = set(range(3, len(header)))
    header.append("check")
    criteria = {r["targets"][b]["criterion"] for r in rows for b in backends if b in r.get("targets", {})}
    if single and len(criteria) == 1:
        header.append(f"target: {criteria.pop()}")
    else:
        header += [f"target {b}" for b in backends]
    table = []
    for r in rows:
        m = r["medians_us"]
        line = [r["op"], r["size"], r["pass"]] + [_fmt_us(m.get(c)) for c in contenders]
        for b in backends:
            line += [_fmt_ratio(ratio(m.get("eager"), m.get(b))), _fmt_ratio(ratio(m.get("compiled"), m.get(b)))]
        if bandwidth:
            mb = r["bytes"] / 1e6
            line.append(f"{mb:,.1f}" if mb >= 1 else f"{mb:.2g}")
            for b in backends:
                gbps, frac = r["gbps"].get(b), r["bandwidth_fraction"].get(b)
                line += [_fmt_gbps(gbps), "-" if frac is None else f"{frac:.2f}"]
        line.append(r["status"])
        line += [r["targets"][b]["text"] if b in r.get("targets", {}) else "" for b in backends]
        table.append(line)
    return header, table, right


def summary_of(rows, backends, device_type, copy):
    """Lines: per target and backend, how many rows meet it and which do not; the skipped rows."""
    lines = []
    if copy is not None and copy.get("gbps"):
        lines.append(f"copy bandwidth: {_fmt_gbps(copy['gbps'])} GB/s ({copy['tensor_bytes'] / 2**20:,.0f} MiB copy_, "
                     f"read + written, median {copy['median_us']:,.1f} us)")
    for target in targets_for(device_type):
        criterion = target_criterion(target)
        for b in backends:
            checked = [r for r in rows if b in r.get("targets", {}) and r["targets"][b]["criterion"] == criterion]
            if not checked:
                continue
            met = [r for r in checked if r["targets"][b]["met"] is True]
            missed = [f"{r['op']} {r['pass']} {r['targets'][b]['text']}" for r in checked
                      if r["targets"][b]["met"] is not True]
            small = sorted({r["op"] for r in checked if r["bytes"] < 64e6})
            lines.append(f"target {b}: {criterion}: met by {len(met)} of {len(checked)}"
                         + (f"; not met: {'; '.join(missed)}" if missed else "")
                         + (f" ({', '.join(small)} move{'s' * (len(small) == 1)} under 64 MB a call at this size: "
                            "launch latency, not bandwidth, bounds them)" if "bandwidth" in target and small else ""))
    skipped = [r for r in rows if r["status"] == "SKIPPED"]
    if skipped:
        lines.append(f"{len(skipped)} row(s) not run: {skipped[0].get('skipped') or ''}")
    return lines


def csv_rows(records, env_columns, contenders, gpu_csv, copy):
    """One CSV row per timed contender of each record, in run order."""
    copy_gbps = copy["gbps"] if copy else None
    rows = []
    for r in records:
        medians = r["medians_us"]
        eager, compiled = medians.get("eager"), medians.get("compiled")
        for name in contenders:
            if medians.get(name) is None:
                continue
            speedup_eager, speedup_compiled = ratio(eager, medians[name]), ratio(compiled, medians[name])
            row = {
                **env_columns, "op": r["op"], "size": r["size"], "shape": r["shape"], "dtype": r["dtype"],
                "pass": r["pass"], "backend": name, "median_us": f"{medians[name]:.3f}",
                "speedup_vs_eager": "" if speedup_eager is None else f"{speedup_eager:.4f}",
                "speedup_vs_compiled": "" if speedup_compiled is None else f"{speedup_compiled:.4f}",
                "compile_s": f"{r['compile_s']:.2f}" if name == "compiled" and r["compile_s"] is not None else "",
            }
            if gpu_csv:
                fraction = r["bandwidth_fraction"].get(name)
                row.update(bytes=r["bytes"], gbps=f"{r['gbps'][name]:.2f}",
                           copy_gbps="" if copy_gbps is None else f"{copy_gbps:.2f}",
                           bandwidth_fraction="" if fraction is None else f"{fraction:.4f}")
            rows.append(row)
    return rows


def fill_doc(doc, records, plan, copy, elapsed_s, compile_total):
    """The JSON document's rows (in table order), table and summary."""
    ordered = sorted(records, key=lambda r: r["_order"])
    doc["rows"] = [{k: v for k, v in r.items() if k != "_order"} for r in ordered]
    header, table, _ = table_of(doc["rows"], plan.contenders, plan.backends, plan.bandwidth)
    doc["table"] = {"header": header, "rows": table}
    doc["summary"] = summary_of(doc["rows"], plan.backends, plan.device.type, copy)
    doc["elapsed_s"] = round(elapsed_s, 2)
    doc["compile_s_total"] = round(compile_total, 2)


def write_json(path, doc):
    """Write doc to path atomically (a reader never sees half a file); a failure is a warning."""
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".part"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        os.replace(tmp, path)
    except Exception as e:
        print(f"bench_ops: warning: could not write {path}: {type(e).__name__}: {' '.join(str(e).split())[:300]}",
              file=sys.stderr)
