#!/usr/bin/env python3
"""Summarise the output directory of bench/cuda/run.sh into summary.json and summary.md.

    python3 bench/cuda/summarize.py OUTDIR [--peak-gbps 3350] [--peak-gflops 67000]

Reads what is there and says "not run" (or why a step failed) for what is not:
steps.tsv, gpu.log, the Go test logs, magc_phase1.json, magc_scm3b.json,
torch_eager.json, torch_compile.json, san_<tool>_<target>.log, train_tiny/summary.json.
Standard library only: the GPU machine may have nothing else.
"""

import argparse
import json
import math
import os
import re
import statistics
import sys

SAN_TOOLS = ("memcheck", "racecheck", "synccheck")
SAN_TARGETS = (("tiny_full", "tiny, full"), ("tiny_qlora", "tiny, QLoRA"), ("phase1", "phase1, 1x64"),
               ("tiny_bf16", "tiny, bf16 storage"))
TEST_STEPS = (("cuda_test", "runtime/cuda tests (MAGC_REQUIRE_CUDA=1)"),
              ("golden_cuda", "golden checks on CUDA (fused patterns, tiny and phase1 steps)"),
              ("runtime_cuda", "runtime tests on CUDA"),
              ("golden_half_cuda", "per-kernel checks in f16 and bf16 on CUDA (patterns, tiny)"),
              ("torch_check", "phase1_torch.py --check (scan, MoE, tiny train)"))


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def read_json(path):
    """The object in path, None when absent; a dict with "_error" when unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"_error": f"{os.path.basename(path)}: {e}"}


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def read_steps(out):
    """steps.tsv as {step: row}; a step run again later replaces the earlier row."""
    steps = {}
    text = read_text(os.path.join(out, "steps.tsv"))
    if not text:
        return steps
    lines = text.splitlines()
    head = lines[0].split("\t")
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) >= 2:
            steps[cols[0]] = dict(zip(head, cols))
    return steps


def why_missing(steps, name):
    """Why a step's result is absent, in a few words."""
    s = steps.get(name)
    if s is None:
        return "not run"
    st = s.get("status")
    if st == "timeout":
        return f"timed out after {s.get('seconds')} s (see {s.get('log')})"
    if st == "fail":
        return f"failed, exit {s.get('rc')} (see {s.get('log')})"
    if st == "skip":
        return "not run: " + s.get("command", "skipped")
    return f"ran, but wrote no result (see {s.get('log')})"


def gpu_name(out):
    text = read_text(os.path.join(out, "gpu.log")) or ""
    m = re.search(r"^GPU \d+: (.+?)(?: \(UUID.*)?$", text, re.M)
    return m.group(1).strip() if m else None


def go_test_result(text):
    """Counts of a `go test -v` log: top-level tests and subtests."""
    r = {"passed": 0, "failed": 0, "skipped": 0, "sub_passed": 0, "sub_failed": 0, "failures": []}
    for m in re.finditer(r"^(\s*)--- (PASS|FAIL|SKIP): (\S+)", text, re.M):
        sub = bool(m.group(1)) or "/" in m.group(3)
        kind = m.group(2)
        if kind == "PASS":
            r["sub_passed" if sub else "passed"] += 1
        elif kind == "FAIL":
            r["sub_failed" if sub else "failed"] += 1
            r["failures"].append(m.group(3))
        elif not sub:
            r["skipped"] += 1
    r["failures"] = r["failures"][:20]
    final = re.findall(r"^(PASS|FAIL)$", text, re.M)
    r["result"] = final[-1] if final else None
    return r


def sanitizer_errors(text):
    """Errors from a compute-sanitizer log: the last ERROR SUMMARY (and racecheck's
    hazard line, whose warnings are kept apart), or None when it printed none."""
    errs = re.findall(r"ERROR SUMMARY:\s*(\d+) errors?", text)
    race = re.findall(r"RACECHECK SUMMARY:\s*(\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)",
                      text)
    if not errs and not race:
        return None
    r = {"errors": int(errs[-1]) if errs else int(race[-1][1])}
    if race:
        r["race_errors"], r["race_warnings"] = int(race[-1][1]), int(race[-1][2])
    return r


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------

def num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def ranks(xs):
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(xs, ys):
    """Spearman's rank correlation (Pearson's r of the ranks); None when undefined."""
    if len(xs) < 3:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def kernel_rows(kernels, peak_gbps, peak_gflops):
    """Kernels by measured time, with share and fraction of peak filled in."""
    rows = []
    for k in kernels or []:
        if not isinstance(k, dict):
            continue
        ms = num(k.get("ms"))
        if ms is None:
            continue
        r = dict(k)
        r["ms"] = ms
        # GB/s and GFLOP/s from bytes and flops over the same time span as ms, if absent
        if num(r.get("gbps")) is None and num(k.get("bytes")) is not None and ms > 0:
            r["gbps"] = k["bytes"] / (ms * 1e-3) / 1e9
        if num(r.get("gflops")) is None and num(k.get("flops")) is not None and ms > 0:
            r["gflops"] = k["flops"] / (ms * 1e-3) / 1e9
        rows.append(r)
    total = sum(r["ms"] for r in rows)
    for r in rows:
        if num(r.get("share")) is None:
            r["share"] = r["ms"] / total if total > 0 else None
        r["gbps_of_peak"] = r["gbps"] / peak_gbps if num(r.get("gbps")) is not None else None
        r["gflops_of_peak"] = r["gflops"] / peak_gflops if num(r.get("gflops")) is not None else None
        p = num(r.get("predicted_ms"))
        r["measured_over_predicted"] = r["ms"] / p if p else None
    rows.sort(key=lambda r: -r["ms"])
    return rows


def prediction(rows):
    """How well predicted_ms ranks and sizes the measured kernel times."""
    pairs = [(r["ms"], r["predicted_ms"]) for r in rows
             if num(r.get("predicted_ms")) is not None and r["predicted_ms"] > 0 and r["ms"] > 0]
    if not pairs:
        return None
    meas, pred = [p[0] for p in pairs], [p[1] for p in pairs]
    top = sorted(pairs, reverse=True)[:10]
    return {
        "kernels": len(pairs),
        "spearman": spearman(meas, pred),
        "median_measured_over_predicted": statistics.median(m / p for m, p in pairs),
        "total_measured_over_predicted": sum(meas) / sum(pred),
        "top10_spearman": spearman([p[0] for p in top], [p[1] for p in top]),
    }


def speed_entry(d, steps, step):
    if d is None or "_error" in d:
        failed = steps.get(step, {}).get("status") in ("fail", "timeout", "skip")
        return {"status": d["_error"] if d and not failed else why_missing(steps, step)}
    e = {k: d.get(k) for k in ("model", "mode", "batch", "seq", "params", "first_step_s",
                               "step_s_median", "tokens_per_s", "gpu", "device", "peak_mem_gb")
         if d.get(k) is not None}
    e["status"] = "ok" if num(d.get("tokens_per_s")) else "no tokens_per_s in the result"
    return e


def summarize(out, peak_gbps, peak_gflops):
    steps = read_steps(out)
    s = {"outdir": out, "gpu": gpu_name(out),
         "peaks": {"gbps": peak_gbps, "gflops": peak_gflops}}

    # speed
    res = {name: read_json(os.path.join(out, name + ".json"))
           for name in ("magc_phase1", "magc_scm3b", "torch_eager", "torch_compile")}
    speed = {name: speed_entry(d, steps, name) for name, d in res.items()}
    magc = num(speed["magc_phase1"].get("tokens_per_s"))
    ratios = {}
    for name in ("torch_eager", "torch_compile"):
        t = num(speed[name].get("tokens_per_s"))
        ratios["magc_over_" + name] = magc / t if magc and t else None
        shape = (speed[name].get("batch"), speed[name].get("seq"))
        mshape = (speed["magc_phase1"].get("batch"), speed["magc_phase1"].get("seq"))
        if magc and t and shape != mshape:
            ratios[name + "_shape_differs"] = f"{shape} vs magc {mshape}"
    speed["ratios"] = ratios
    s["speed"] = speed
    if not s["gpu"]:
        s["gpu"] = next((speed[n].get("gpu") for n in ("torch_eager", "torch_compile")
                         if speed[n].get("gpu")), None)

    # kernels and prediction
    s["kernels"] = {}
    s["prediction"] = {}
    for name in ("magc_phase1", "magc_scm3b"):
        d = res[name]
        rows = kernel_rows(d.get("kernels") if isinstance(d, dict) else None, peak_gbps, peak_gflops)
        if rows:
            s["kernels"][name] = {"count": len(rows), "total_ms": sum(r["ms"] for r in rows),
                                  "top10": rows[:10]}
            s["prediction"][name] = prediction(rows)

    # sanitizer
    san = []
    for target, label in SAN_TARGETS:
        for tool in SAN_TOOLS:
            step = f"san_{tool}_{target}"
            e = {"target": label, "tool": tool, "step": step,
                 "status": steps.get(step, {}).get("status", "not run")}
            text = read_text(os.path.join(out, step + ".log"))
            found = sanitizer_errors(text) if text else None
            if found:
                e.update(found)
            else:
                e["errors"] = None
                e["note"] = why_missing(steps, step) if e["status"] != "pass" else "no ERROR SUMMARY"
            san.append(e)
    s["sanitizer"] = san
    ran = [e for e in san if e["errors"] is not None]
    s["sanitizer_clean"] = (all(e["errors"] == 0 and e["status"] == "pass" for e in san)
                            if len(ran) == len(san) else None)

    # checks
    checks = []
    for step, label in TEST_STEPS:
        e = {"step": step, "what": label, "status": steps.get(step, {}).get("status", "not run"),
             "seconds": steps.get(step, {}).get("seconds")}
        text = read_text(os.path.join(out, step + ".log"))
        if text and step != "torch_check":
            r = go_test_result(text)
            if r["result"] or r["passed"] or r["failed"]:
                e.update(r)
        if e["status"] == "not run" and step == "runtime_cuda":
            continue  # optional
        checks.append(e)
    s["checks"] = checks

    # tiny training
    tr = read_json(os.path.join(out, "train_tiny", "summary.json"))
    if isinstance(tr, dict) and "_error" not in tr:
        s["train_tiny"] = {k: tr.get(k) for k in ("steps", "tokens_per_s", "first_loss", "final_loss",
                                                  "eval_loss", "eval_accuracy", "seconds")}
        s["train_tiny"]["status"] = steps.get("train_tiny", {}).get("status", "?")
    else:
        s["train_tiny"] = {"status": tr["_error"] if tr else why_missing(steps, "train_tiny")}

    # precision (issue 16): phase1 by storage precision, same run
    prec = {}
    for p in ("f32", "bf16", "f16"):
        name = "magc_phase1_" + p
        d = read_json(os.path.join(out, name + ".json"))
        e = speed_entry(d, steps, name)
        if isinstance(d, dict) and "_error" not in d:
            e["arena_bytes"] = d.get("arena_bytes")
        prec[p] = e
    base = num(prec["f32"].get("tokens_per_s"))
    for p in ("bf16", "f16"):
        t = num(prec[p].get("tokens_per_s"))
        prec[p]["over_f32"] = t / base if t and base else None
    s["precision"] = prec
    tr = read_json(os.path.join(out, "train_tiny_bf16", "summary.json"))
    if isinstance(tr, dict) and "_error" not in tr:
        s["train_tiny_bf16"] = {k: tr.get(k) for k in ("steps", "tokens_per_s", "first_loss", "final_loss",
                                                       "eval_accuracy", "precision")}

    s["steps"] = steps
    return s


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

def f(x, fmt="{:,.0f}", none="–"):
    return fmt.format(x) if num(x) is not None else none


def pct(x):
    return f(x * 100 if num(x) is not None else None, "{:.1f}%")


def markdown(s):
    L = []
    gpu = s["gpu"] or "unknown GPU"
    L.append(f"# magc on {gpu}\n")

    sp = s["speed"]
    L.append("## phase1 full training step, fp32 (TF32 off)\n")
    L.append("| | batch × seq | tokens/s | step (median) | first step | magc ÷ this |")
    L.append("|---|---|---:|---:|---:|---:|")
    names = (("magc_phase1", "magc"), ("torch_eager", "PyTorch eager"), ("torch_compile", "torch.compile"))
    for key, label in names:
        e = sp[key]
        if e["status"] != "ok":
            L.append(f"| {label} | | {e['status']} | | | |")
            continue
        ratio = "1.00" if key == "magc_phase1" else f(sp["ratios"].get("magc_over_" + key), "{:.2f}")
        L.append(f"| {label} | {e.get('batch')} × {e.get('seq')} | {f(e.get('tokens_per_s'))} | "
                 f"{f(e.get('step_s_median'), '{:.4f} s')} | {f(e.get('first_step_s'), '{:.1f} s')} | "
                 f"{ratio} |")
    for k, v in sp["ratios"].items():
        if k.endswith("_shape_differs"):
            L.append(f"\nNote: {k[:-len('_shape_differs')]} ran another shape: {v}.")
    L.append("")

    e = sp["magc_scm3b"]
    L.append("## scm3b QLoRA step (`--batch max --remat auto`)\n")
    if e["status"] == "ok":
        L.append(f"batch {e.get('batch')} × {e.get('seq')}: **{f(e.get('tokens_per_s'))} tokens/s**, "
                 f"step {f(e.get('step_s_median'), '{:.3f} s')}, first step "
                 f"{f(e.get('first_step_s'), '{:.1f} s')}.\n")
    else:
        L.append(e["status"] + "\n")

    pk = s["peaks"]
    L.append("## phase1: the 10 kernels with the most GPU time\n")
    kp = s["kernels"].get("magc_phase1")
    if not kp:
        L.append(sp["magc_phase1"]["status"] if sp["magc_phase1"]["status"] != "ok"
                 else "the result has no kernel profile (run with --profile)")
        L.append("")
    else:
        L.append(f"Of {kp['count']} kernels, {f(kp['total_ms'], '{:.2f}')} ms in all. "
                 f"Peaks: {pk['gbps']:,.0f} GB/s, {pk['gflops']:,.0f} GFLOP/s (fp32).\n")
        L.append("| # | kernel | calls | ms | share | GB/s | of peak | GFLOP/s | of peak | predicted ms | measured ÷ predicted |")
        L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for i, r in enumerate(kp["top10"], 1):
            L.append(f"| {i} | `{r.get('name', '?')}` | {f(r.get('calls'))} | {f(r['ms'], '{:.3f}')} | "
                     f"{pct(r.get('share'))} | {f(r.get('gbps'), '{:,.1f}')} | {pct(r.get('gbps_of_peak'))} | "
                     f"{f(r.get('gflops'), '{:,.1f}')} | {pct(r.get('gflops_of_peak'))} | "
                     f"{f(r.get('predicted_ms'), '{:.3f}')} | {f(r.get('measured_over_predicted'), '{:.2f}')} |")
        L.append("")

    L.append("## Cost model against the measured kernel times\n")
    if not any(s["prediction"].values()):
        L.append("not run (no kernel profile with predicted_ms)\n")
    else:
        L.append("| model | kernels | Spearman ρ (all) | ρ (top 10) | median measured ÷ predicted | total measured ÷ predicted |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for name, p in s["prediction"].items():
            if p:
                L.append(f"| {name[5:]} | {p['kernels']} | {f(p['spearman'], '{:.2f}')} | "
                         f"{f(p['top10_spearman'], '{:.2f}')} | "
                         f"{f(p['median_measured_over_predicted'], '{:.2f}')} | "
                         f"{f(p['total_measured_over_predicted'], '{:.2f}')} |")
        L.append("")

    L.append("## compute-sanitizer (errors)\n")
    L.append("| step | " + " | ".join(SAN_TOOLS) + " |")
    L.append("|---|" + "---|" * len(SAN_TOOLS))
    by = {(e["target"], e["tool"]): e for e in s["sanitizer"]}
    for _, label in SAN_TARGETS:
        cells = []
        for tool in SAN_TOOLS:
            e = by[(label, tool)]
            if e["errors"] is None:
                cells.append(e.get("note", "not run"))
            else:
                c = f"{e['errors']}"
                if "race_warnings" in e and e["race_warnings"]:
                    c += f" ({e['race_warnings']} warnings)"
                if e["status"] != "pass" and e["errors"] == 0:
                    c += f" (step {e['status']})"
                cells.append(c)
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    clean = s["sanitizer_clean"]
    L.append("\n" + ("All clean." if clean else "Not all clean." if clean is False
                     else "Not all sanitizer runs have a result.") + "\n")

    L.append("## Checks\n")
    L.append("| check | result | tests passed | failed | seconds |")
    L.append("|---|---|---:|---:|---:|")
    for e in s["checks"]:
        res = {"pass": "pass", "fail": "**FAIL**", "timeout": "**timeout**"}.get(e["status"], e["status"])
        passed = failed = ""
        if "passed" in e:
            passed = f"{e['passed']}" + (f" (+{e['sub_passed']} subtests)" if e["sub_passed"] else "")
            failed = f"{e['failed']}" + (f" (+{e['sub_failed']} subtests)" if e["sub_failed"] else "")
            if e["failures"]:
                failed += ": " + ", ".join(e["failures"][:5])
        L.append(f"| {e['what']} | {res} | {passed} | {failed} | {e.get('seconds') or ''} |")
    L.append("")

    t = s["train_tiny"]
    L.append("## Tiny model trained on CUDA (`magc run --train --device cuda`)\n")
    if "eval_accuracy" in t or "final_loss" in t:
        L.append(f"{t['status']}: {t.get('steps')} steps, loss {f(t.get('first_loss'), '{:.3f}')} → "
                 f"{f(t.get('final_loss'), '{:.3f}')}, eval accuracy {f(t.get('eval_accuracy'), '{:.3f}')}, "
                 f"{f(t.get('tokens_per_s'))} tokens/s.\n")
    else:
        L.append(t["status"] + "\n")

    if any(e.get("status") != "not run" for e in s["precision"].values()):
        L.append("## phase1 training step by storage precision (`--precision`)\n")
        L.append("| precision | tokens/s | step (median, s) | arena | ÷ f32 |")
        L.append("|---|---:|---:|---:|---:|")
        for p, e in s["precision"].items():
            ratio = f(e.get("over_f32"), "{:.2f}×") if p != "f32" else ""
            arena = f((e.get("arena_bytes") or 0) / 1e9, "{:.2f} GB") if e.get("arena_bytes") else "–"
            L.append(f"| {p} | {f(e.get('tokens_per_s'))} | {f(e.get('step_s_median'), '{:.4f}')} | {arena} | {ratio} |")
        L.append("")
    if s.get("train_tiny_bf16"):
        t = s["train_tiny_bf16"]
        L.append(f"tiny trained in bf16 on CUDA: loss {f(t.get('first_loss'), '{:.3f}')} → {f(t.get('final_loss'), '{:.3f}')}, "
                 f"eval accuracy {f(t.get('eval_accuracy'), '{:.3f}')}.\n")

    if s["steps"]:
        L.append("## Steps\n")
        L.append("| step | status | seconds |")
        L.append("|---|---|---:|")
        for name, r in s["steps"].items():
            L.append(f"| {name} | {r.get('status')} | {r.get('seconds')} |")
        L.append("")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--peak-gbps", type=float, default=3350, help="memory bandwidth peak (H100 SXM)")
    ap.add_argument("--peak-gflops", type=float, default=67000, help="fp32 peak (H100 SXM)")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.outdir):
        print(f"summarize.py: no directory {args.outdir}", file=sys.stderr)
        return 2
    s = summarize(os.path.abspath(args.outdir), args.peak_gbps, args.peak_gflops)
    with open(os.path.join(args.outdir, "summary.json"), "w") as fh:
        json.dump(s, fh, indent=1)
        fh.write("\n")
    md = markdown(s)
    with open(os.path.join(args.outdir, "summary.md"), "w") as fh:
        fh.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
