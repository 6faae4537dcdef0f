"""The results file: <out>/<UTC date>-<device>-<commit>.md and its .json twin (the same data),
rewritten after every stage so that a run cut short leaves what it did."""

import collections
import hashlib
import json
import os
import re

from .proc import REPO
from .pytest_run import OUTCOMES


def tree_fingerprint(repo=REPO):
    """sha1 (12 hex digits) of the sources: memops/, csrc/, tests/, benchmarks/, tools/ (their .py, C++
    and CUDA files), setup.py, pyproject.toml; names and contents. It tells two "-dirty" trees apart, and stands in for the
    commit where there is no git."""
    digest = hashlib.sha1()
    exts = (".py", ".cpp", ".cu", ".cuh", ".h", ".hpp", ".toml")
    paths = [os.path.join(repo, f) for f in ("setup.py", "pyproject.toml")]
    for top in ("memops", "csrc", "tests", "benchmarks", "tools"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(repo, top)):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "results", ".pytest_cache"))
            paths += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(exts)]
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        digest.update(os.path.relpath(path, repo).encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:12]


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", (text or "unknown").lower()).strip("-") or "unknown"


def results_stem(out_dir, date, device, commit, fingerprint):
    """<UTC date>-<device slug>-<commit>, with -2, -3, ... if that .md is already there."""
    tag = commit if commit != "unknown" else f"nogit-{fingerprint[:8]}"
    stem = f"{date}-{slug(device)}-{slug(tag)}"
    candidate, n = stem, 1
    while os.path.exists(os.path.join(out_dir, candidate + ".md")):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


# ---------------------------------------------------------------------------------------------------
# Markdown


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header, rows):
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines())


SHORT = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP", "xfailed": "XFAIL", "xpassed": "XPASS"}


def render_markdown(result):
    """The human-readable results file (the .json twin has the same data)."""
    env, suite = result.get("environment") or {}, result.get("suite") or {}
    out = [f"# memops GPU suite: {env.get('device_name', 'no GPU')}, {suite.get('started_utc', '?')}", ""]
    if suite.get("finished_utc") is None:
        out += ["**Incomplete: the suite was still running (or was killed) when this was written.**", ""]
    build = result.get("build_info") or {}
    facts = [
        ("commit", f"{result.get('commit')} (source tree sha1 {result.get('tree_sha1')})"),
        ("device", f"{env.get('device_name', '-')}, compute capability {env.get('capability', '-')}, "
                   f"{env.get('total_memory_gib', '-')} GiB, {env.get('sm_count', '-')} SMs"
                   + (f" ({env.get('device_count')} GPUs, the first used)" if (env.get("device_count") or 1) > 1 else "")),
        ("driver", f"{env.get('driver', '-')} (CUDA driver API {env.get('driver_cuda_version', '-')})"
                   + (f"; nvidia-smi: {env['nvidia_smi']}" if env.get("nvidia_smi") else "")),
        ("torch", f"{env.get('torch', '-')} (CUDA {env.get('torch_cuda') or '-'})"),
        ("CUDA toolkit", f"nvcc {env.get('nvcc') or '-'} ({env.get('cuda_home') or 'no CUDA_HOME'})"),
        ("triton", env.get("triton") or f"- ({env.get('triton_error', 'not installed')})"),
        ("python", f"{env.get('python', '-')}, {env.get('cpu_count', '-')} CPUs, {env.get('platform', '-')}"),
        ("build tools", f"ninja {'yes' if env.get('ninja') else 'NO (serial build)'}, pip {env.get('pip') or '-'}, "
                        f"setuptools {env.get('setuptools') or '-'}, pytest {env.get('pytest') or '-'}"),
        ("memops build", json.dumps(build) if build else "-"),
        ("memops backends on cuda", ", ".join(result.get("backends_cuda") or []) or "-"),
        ("suite", f"{suite.get('elapsed_s', '?')} s of a {suite.get('budget_s', '?')} s budget; "
                  f"options: {suite.get('argv_text', '')}"),
    ]
    out += [markdown_table(["", ""], facts), ""]
    out += _stages_section(result) + _tests_section(result.get("tests")) + _bench_section(result)
    return "\n".join(out) + "\n"


def _stages_section(result):
    out = []
    stages = result.get("stages") or {}
    if stages:
        out += ["## Stages", "", markdown_table(["stage", "status", "seconds", "command / note"], [
            [name, s.get("status", "?"), s.get("seconds", ""), s.get("note") or s.get("command") or ""]
            for name, s in stages.items()]), ""]

    errors = result.get("errors") or []
    out += ["## Stage errors", ""]
    out += [f"- {_cell(e)}" for e in errors] if errors else ["none"]
    out.append("")

    for name, s in stages.items():
        if s.get("compiler_errors"):
            out += [f"### {name}: the first errors in its log", "", "```", *s["compiler_errors"], "```", ""]
        if s.get("tail") and s.get("status") not in ("ok", "skipped"):
            out += [f"<details><summary>{name}: the last lines of its output</summary>", "", "```",
                    *(line.replace("```", "'``") for line in s["tail"]), "```", "", "</details>", ""]
    return out


def _tests_section(tests):
    out = ["## Tests", ""]
    if not tests:
        return out + ["not run", ""]
    c = tests.get("counts") or {}
    out += [f"`{tests.get('command', '')}`", "",
            "**" + ", ".join(f"{c.get(o, 0)} {o}" for o in OUTCOMES if c.get(o) or o in ("passed", "failed", "error"))
            + f"** of {c.get('total', 0)} (from the {tests.get('source', '?')}; pytest"
              f"{chr(39) + 's last session' if (tests.get('sessions') or 1) > 1 else ''} says: "
              f"{tests.get('summary_line') or '-'}; exit code {tests.get('returncode')})", ""]
    if tests.get("restarts"):
        out += ["pytest was started again without the tests done: " + "; ".join(tests["restarts"]) + ".", ""]
    if tests.get("running"):
        out += [f"Killed while running: {', '.join('`' + r + '`' for r in tests['running'])}", ""]
    bad = [t for t in tests.get("tests", []) if t["outcome"] in ("failed", "error", "xpassed")]
    if bad:
        out += [f"### Failures and errors ({len(bad)})", ""]
        for t in bad:
            out.append(f"- **{SHORT[t['outcome']]}** `{t['id']}`")
            if t.get("message"):
                out += ["", _indent(t["message"], "      "), ""]
        out.append("")
        groups = collections.Counter((t["message"] or "").splitlines()[0][:200] if t["message"] else "(no message)"
                                     for t in bad)
        if len(groups) < len(bad):
            out += ["### Failures grouped by the first line of their message", "",
                    markdown_table(["tests", "message"], [[n, m] for m, n in groups.most_common()]), ""]
    skips = collections.Counter((t["message"] or "").splitlines()[0][:200] if t["message"] else "(no reason)"
                                for t in tests.get("tests", []) if t["outcome"] == "skipped")
    if skips:
        out += ["### Skips by reason", "", markdown_table(["tests", "reason"], [[n, m] for m, n in skips.most_common()]), ""]
    listing = tests.get("tests", [])
    if listing:
        out += ["### Every test", "", f"<details><summary>{len(listing)} tests</summary>", "", "```"]
        out += [f"{SHORT.get(t['outcome'], t['outcome']):5} {t['id']}" for t in listing]
        out += ["```", "", "</details>", ""]
    return out


def _bench_section(result):
    bench = result.get("bench")
    out = ["## Benchmarks", ""]
    if not bench:
        return out + ["not run", ""]
    sizes = bench.get("sizes") or {}
    out += [f"`{result.get('bench_command', 'bench_ops.py')}`", "",
            f"device {bench.get('device')}, {bench.get('dtype')}, {bench.get('min_run_time')} s per measurement "
            f"(median); backends {', '.join(bench.get('backends') or [])}; "
            + "; ".join(f"{n}: " + ",".join(f"{k}={v}" for k, v in d.items()) for n, d in sizes.items())
            + f"; {bench.get('elapsed_s')} s, of which torch.compile {bench.get('compile_s_total')} s"
            + ("" if bench.get("complete") else " (**incomplete**: the run was cut short)"), ""]
    table = bench.get("table")
    if table and table.get("rows"):
        out += [markdown_table(table["header"], table["rows"]), ""]
    for line in bench.get("summary") or []:
        out.append(f"- {line}")
    out += ["", "Targets: " + "; ".join(bench.get("targets") or []) + " (reported, never asserted)."
            + (" MB: the byte model's traffic of one call (benchmarks/_ops_sizes.py, traffic_bytes); GB/s = MB / median; "
               "of copy = GB/s / the copy bandwidth measured in the same run." if bench.get("bandwidth") else ""), ""]
    row_problems = [(r, e) for r in bench.get("rows") or [] for e in (r.get("errors") or []) + (r.get("notes") or [])]
    if row_problems or bench.get("errors"):
        out += ["### Benchmark errors and notes", ""]
        out += [f"- {_cell(e)}" for e in bench.get("errors") or []]
        out += [f"- {r['op']} {r['size']} {r['pass']}: {_cell(e)}" for r, e in row_problems]
        out.append("")
    return out


def write_results(result, out_dir, stem):
    """Write <out_dir>/<stem>.md and .json (each replaced whole). Returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext, text in ((".json", json.dumps(result, indent=1, default=str)), (".md", render_markdown(result))):
        path = os.path.join(out_dir, stem + ext)
        with open(path + ".part", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".part", path)
        paths.append(path)
    return paths
