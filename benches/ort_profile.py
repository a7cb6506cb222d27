"""onnxruntime's kernel time per operator type and its slowest nodes, in the shape of
`infer bench --profile`, to find where infer loses against it layer by layer.

    python benches/ort_profile.py MODEL.onnx INPUTS.npz --threads N --iters K [--top T]

Graph optimizations are on (ORT_ENABLE_ALL), as in `ort_bench.py`; node times are medians over
the timed runs. onnxruntime names fused and layout-converted nodes after their outputs (e.g.
`.../Clip_output_0_nchwc` for a Conv with its Clip on the NCHWc path), and it counts a fused
activation inside the Conv. The profile is written to a temporary directory and removed.
"""
import argparse
import collections
import json
import os
import statistics
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("inputs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()

    feeds = dict(np.load(a.inputs))
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
        for _ in range(a.warmup + a.iters):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)

    times = collections.defaultdict(list)
    op_of = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            times[name].append(e["dur"] / 1e3)
            op_of[name] = e["args"].get("op_name", "?")
    # The warm-up runs come first in each node's list.
    node_ms = {n: statistics.median(v[a.warmup :] or v) for n, v in times.items()}
    by_op = collections.Counter()
    for n, ms in node_ms.items():
        by_op[op_of[n]] += ms
    total = sum(node_ms.values())
    print(f"onnxruntime {ort.__version__}, threads: {a.threads}")
    print("kernel time per run by op type:")
    for op, ms in by_op.most_common():
        print(f"  {op:30s} {ms:8.3f}  {100 * ms / total:5.1f}%")
    print(f"  {'all kernels':30s} {total:8.3f}")
    print("slowest nodes (kernel time per run):")
    for n, ms in sorted(node_ms.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"  {ms:8.3f} ms  {op_of[n]:20s} {n}")


if __name__ == "__main__":
    main()
