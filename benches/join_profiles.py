"""Joins `infer bench --profile` and `benches/ort_profile.py` outputs node by node, in graph
order, to show where infer loses against onnxruntime layer by layer.

    infer bench M.onnx IN.npz --threads 1 --iters 200 --profile 1000 > ours.txt
    python benches/ort_profile.py M.onnx IN.npz --threads 1 --iters 200 --top 1000 > ort.txt
    python benches/join_profiles.py M.onnx ours.txt ort.txt [--min-diff 0.01]

onnxruntime names fused and layout-converted nodes after an output (`..._output_0_nchwc`);
such a name is mapped to the ONNX node that produces the output, then back through
activations (Relu, Clip, ...) to the Conv or Gemm they were fused into. Its layout
conversions (ReorderInput/ReorderOutput) and anything else unmatched are totalled apart.
A Conv whose output (after its activation) only feeds a Concat is counted in that Concat's
row on both sides: infer runs such convolutions inside the Concat's step (`ConcatConvs`).
"""
import argparse
import re

import onnx

FUSED_INTO_PRODUCER = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Mul", "Add"}
LINE = re.compile(r"^\s*([0-9.]+) ms\s+(\S+)\s+(.*?)\s*$")


def node_times(path, strip_shapes):
    times = {}
    started = False
    for line in open(path):
        if line.startswith("slowest nodes"):
            started = True
            continue
        m = LINE.match(line) if started else None
        if not m:
            continue
        rest = m.group(3)
        name = rest.split()[0] if strip_shapes else rest
        if name.startswith("fused "):
            name = name[len("fused ") :]
        times[name] = times.get(name, 0.0) + float(m.group(1))
    return times


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("ours")
    p.add_argument("ort")
    p.add_argument("--min-diff", type=float, default=0.0)
    a = p.parse_args()
    graph = onnx.load(a.model, load_external_data=False).graph
    order = {n.name: i for i, n in enumerate(graph.node)}
    by_name = {n.name: n for n in graph.node}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def sole_reader(node):
        readers = consumers.get(node.output[0], []) if node.output else []
        return readers[0] if len(readers) == 1 else None

    def concat_taking(node):
        # Forward through the activations fused into a Conv to a Concat reading it alone.
        if node.op_type != "Conv":
            return None
        reader = sole_reader(node)
        while reader is not None and reader.op_type in FUSED_INTO_PRODUCER:
            reader = sole_reader(reader)
        return reader if reader is not None and reader.op_type == "Concat" else None

    def onnx_node(ort_name):
        if ort_name in by_name:
            node = by_name[ort_name]
        else:
            out = ort_name
            for suffix in ("_nchwc", "_reorder"):
                out = out.removesuffix(suffix)
            node = producer.get(out)
            if node is None:
                return None
        # Back through activations and adds fused into the layer that feeds them.
        while node.op_type in FUSED_INTO_PRODUCER and node.input and node.input[0] in producer:
            node = producer[node.input[0]]
        concat = concat_taking(node)
        return (concat or node).name

    ours = node_times(a.ours, strip_shapes=True)
    ort_raw = node_times(a.ort, strip_shapes=False)
    ort, unmatched = {}, {}
    for name, ms in ort_raw.items():
        target = onnx_node(name)
        if target is None:
            unmatched[name] = ms
        else:
            ort[target] = ort.get(target, 0.0) + ms
    # Our fused steps are named after their first node; fold our activations likewise.
    ours_joined = {}
    for name, ms in ours.items():
        target = onnx_node(name) or name
        ours_joined[target] = ours_joined.get(target, 0.0) + ms
    names = sorted(set(ours_joined) | set(ort), key=lambda n: order.get(n, 1 << 30))
    print(f"{'infer':>8} {'ort':>8} {'diff':>8}  node")
    for n in names:
        o, r = ours_joined.get(n, 0.0), ort.get(n, 0.0)
        if abs(o - r) >= a.min_diff:
            op = by_name[n].op_type if n in by_name else "?"
            print(f"{o:8.3f} {r:8.3f} {o - r:+8.3f}  {op:12s} {n}")
    print(f"{sum(ours_joined.values()):8.3f} {sum(ort.values()):8.3f}  matched total")
    print(f"{'':8} {sum(unmatched.values()):8.3f}  onnxruntime, unmatched nodes:")
    for n, ms in sorted(unmatched.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{'':8} {ms:8.3f}  {n}")


if __name__ == "__main__":
    main()
