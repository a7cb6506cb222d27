"""Time onnxruntime on one model, printing the same last line as `infer bench`.

    python benches/ort_bench.py MODEL.onnx INPUTS.npz --threads N --iters K --warmup W

Graph optimizations are on (ORT_ENABLE_ALL), intra-op threads = N, inter-op = 1.
"""
import argparse
import resource
import time

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("inputs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    feeds = dict(np.load(a.inputs))
    for _ in range(a.warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(max(1, a.iters)):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"load+plan: {load_ms:.1f} ms")
    print(f"peak RSS: {rss:.1f} MiB")
    print(f"median_ms={times[len(times) // 2]:.3f} min_ms={times[0]:.3f} max_ms={times[-1]:.3f}")


if __name__ == "__main__":
    main()
