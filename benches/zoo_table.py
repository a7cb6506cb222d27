"""Side-by-side zoo latency: `infer bench` and onnxruntime, alternating in one run.

    .cache/venv/bin/python benches/zoo_table.py [--zoo DIR] [--threads 1,2] [--iters 20]
        [--repeat 3] [--models a,b] [--out BENCHMARKS.md]

For each model and thread count the two runtimes run back to back on the same inputs (the
model's first zoo case), so machine drift hits both alike, `--repeat` times in fresh
processes. Prints a markdown table (and writes it with --out): the medians over the rounds of
each runtime's median, load time and peak RSS, and the median of the rounds' infer/onnxruntime
ratios. Rounds, not just iterations: on a shared 2-core VM one process can run at half speed
throughout (its second vCPU slowed by the host), and a single round then decides the row.
"""
import statistics
import argparse
import math
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(out):
    vals = {}
    for line in out.splitlines():
        m = re.match(r"median_ms=([\d.]+) min_ms=([\d.]+) max_ms=([\d.]+)", line)
        if m:
            vals["median"] = float(m.group(1))
        m = re.match(r"load\+plan: ([\d.]+) ms", line)
        if m:
            vals["load"] = float(m.group(1))
        m = re.match(r"peak RSS: ([\d.]+) MiB", line)
        if m:
            vals["rss"] = float(m.group(1))
    return vals


# The benchmark shapes of record: MLP at batch 64, text models at 1x128, images at batch 1.
PREFERRED_CASES = ["b64", "b1_s128", "b1"]


def pick_case(cases):
    for c in PREFERRED_CASES:
        if c in cases:
            return c
    return sorted(cases)[0]


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return parse(p.stdout)


def combine(results):
    """Per value, the median over the rounds that have it; the first error if none does."""
    out = {}
    for key in ("median", "load", "rss"):
        vals = [r[key] for r in results if key in r]
        if vals:
            out[key] = statistics.median(vals)
    if "median" not in out:
        out["error"] = next((r["error"] for r in results if "error" in r), "failed")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default=os.path.join(ROOT, ".cache/zoo/current"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default="mlp,squeezenet1_1,mobilenet_v2,efficientnet_b0,resnet50,vit_b_16,minilm,bert_base,gpt2")
    ap.add_argument("--infer", default=os.path.join(ROOT, "target/release/infer"))
    ap.add_argument("--out")
    a = ap.parse_args()

    rows = []
    ratios = {}
    for name in a.models.split(","):
        mdir = os.path.join(a.zoo, name)
        case = pick_case(os.listdir(os.path.join(mdir, "cases")))
        inputs = os.path.join(mdir, "cases", case, "inputs.npz")
        model = os.path.join(mdir, "model.onnx")
        # Read the files once first: whichever runtime loads first would otherwise pay for
        # the disk and the other one find the page cache warm (infer runs first).
        for path in (model, inputs):
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
        for t in [int(x) for x in a.threads.split(",")]:
            common = ["--threads", str(t), "--iters", str(a.iters), "--warmup", str(a.warmup)]
            rounds = []
            for _ in range(max(a.repeat, 1)):
                ours = run([a.infer, "bench", model, inputs] + common)
                ort = run([sys.executable, os.path.join(ROOT, "benches/ort_bench.py"), model, inputs] + common)
                rounds.append((ours, ort))
            ours, ort = (combine([r[i] for r in rounds]) for i in (0, 1))
            paired = [o["median"] / r["median"] for o, r in rounds if "median" in o and "median" in r]
            ratio = statistics.median(paired) if paired else float("nan")
            if not math.isnan(ratio):
                ratios.setdefault(t, []).append(ratio)
            rows.append((name, case, t, ours, ort, ratio))
            fmt = lambda d, k: f"{d[k]:.2f}" if k in d else d.get("error", "-")[:60]
            print(f"{name:16} t={t} infer={fmt(ours, 'median')} ort={fmt(ort, 'median')} ratio={ratio:.2f}", file=sys.stderr)

    lines = [
        "| model | case | threads | infer median ms | onnxruntime median ms | infer/ort | infer load ms | ort load ms | infer RSS MiB | ort RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    f = lambda d, k: f"{d[k]:.2f}" if k in d else ("error: " + d["error"] if "error" in d else "-")
    for name, case, t, ours, ort, ratio in rows:
        lines.append(
            f"| {name} | {case} | {t} | {f(ours, 'median')} | {f(ort, 'median')} | {ratio:.2f} | "
            f"{f(ours, 'load')} | {f(ort, 'load')} | {f(ours, 'rss')} | {f(ort, 'rss')} |"
        )
    for t, rs in sorted(ratios.items()):
        gm = math.exp(sum(math.log(r) for r in rs) / len(rs))
        lines.append(f"\nGeometric mean infer/onnxruntime at {t} thread(s): {gm:.2f} over {len(rs)} models")
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write("# Zoo benchmark: infer vs onnxruntime\n\n")
            fh.write(f"Command: `{' '.join(sys.argv)}`\n\n")
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
