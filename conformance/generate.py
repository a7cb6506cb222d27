"""Writes the ONNX backend conformance cases shipped inside the `onnx` package to a folder.

    python conformance/generate.py --out DIR

Layout (the one `backend-test-tools generate-data` and the onnx backend runner use):

    DIR/<suite>/<case>/model.onnx
    DIR/<suite>/<case>/test_data_set_N/input_K.pb, output_K.pb

Suites:
- node: every case of `onnx.backend.test.case.node.collect_testcases(None)` (one operator per
  model, plus the `*_expanded` cases that run an operator's function body instead);
- simple, pytorch-converted, pytorch-operator: copied from `onnx/backend/test/data/`;
- light: the `onnx/backend/test/data/light/*.onnx` models, with the input the onnx runner
  feeds them (arange(n)/n in the input's shape) and the stored expected output. Their weights
  are constants, so the output is close to uniform: these mostly check load, plan and run.

DIR/cases.json lists every case: suite, name, the operator under test (`op`, node suite only),
every op type in the model (`op_types`), tolerances, and `core` with the reasons a case is not.
Core cases exclude training ops, random ops (incl. Dropout in training mode), string /
sequence / optional / map values and the exotic dtypes (float8*, int4/uint4, int2/uint2,
float4, bfloat16), none of which this runtime aims to support.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.backend.test.case.model as model_cases
import onnx.backend.test.case.node as node_cases
from onnx import ModelProto, TensorProto, TypeProto, numpy_helper

DATA_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data"
COPIED_SUITES = ("simple", "pytorch-converted", "pytorch-operator")

TRAINING_OPS = {"Adagrad", "Adam", "Momentum", "Gradient"}
TRAINING_DOMAIN = "ai.onnx.preview.training"
RANDOM_OPS = {
    "Bernoulli",
    "Multinomial",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
}
# Ops whose values are sequences or optionals even where the graph's inputs and outputs are
# plain tensors.
SEQUENCE_OPTIONAL_OPS = {
    "ConcatFromSequence",
    "Optional",
    "OptionalGetElement",
    "OptionalHasElement",
    "SequenceAt",
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceErase",
    "SequenceInsert",
    "SequenceLength",
    "SequenceMap",
    "SplitToSequence",
}
_T = TensorProto
EXOTIC_DTYPES = {
    _T.STRING: "string",
    _T.BFLOAT16: "bfloat16",
    _T.FLOAT8E4M3FN: "float8",
    _T.FLOAT8E4M3FNUZ: "float8",
    _T.FLOAT8E5M2: "float8",
    _T.FLOAT8E5M2FNUZ: "float8",
    _T.FLOAT8E8M0: "float8",
    _T.INT4: "int4",
    _T.UINT4: "int4",
    _T.INT2: "int2",
    _T.UINT2: "int2",
    _T.FLOAT4E2M1: "float4",
    _T.COMPLEX64: "complex",
    _T.COMPLEX128: "complex",
}


# ---------------------------------------------------------------------------------------------
# Core classification


def walk_graphs(graph: onnx.GraphProto):
    """The graph and every subgraph held in node attributes (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from walk_graphs(attr.g)
            for g in attr.graphs:
                yield from walk_graphs(g)


def type_reasons(tp: TypeProto) -> set[str]:
    """Why a declared value type is outside core (empty when it is a plain supported tensor)."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        name = EXOTIC_DTYPES.get(tp.tensor_type.elem_type)
        return {name} if name else set()
    if kind == "sparse_tensor_type":
        return {"sparse tensor"}
    if kind in ("sequence_type", "optional_type", "map_type"):
        return {kind.removesuffix("_type")}
    return set()


def noncore_reasons(model: ModelProto, feeds: dict[str, object]) -> list[str]:
    """Why a case is not core; `feeds` maps graph input names to their test values."""
    reasons: set[str] = set()
    for graph in walk_graphs(model.graph):
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            reasons |= type_reasons(vi.type)
        tensors = list(graph.initializer)
        for node in graph.node:
            tensors += [a.t for a in node.attribute if a.HasField("t")]
            tensors += [t for a in node.attribute for t in a.tensors]
            if node.domain == TRAINING_DOMAIN or node.op_type in TRAINING_OPS:
                reasons.add("training op")
            if node.op_type in RANDOM_OPS:
                reasons.add("random op")
            if node.op_type in SEQUENCE_OPTIONAL_OPS:
                reasons.add("sequence/optional op")
            if node.op_type == "Dropout" and dropout_in_training(node, feeds):
                reasons.add("random op")
        for t in tensors:
            if t.data_type in EXOTIC_DTYPES:
                reasons.add(EXOTIC_DTYPES[t.data_type])
    return sorted(reasons)


def dropout_in_training(node: onnx.NodeProto, feeds: dict[str, object]) -> bool:
    """Dropout-12+ draws a random mask when its optional `training_mode` input is true."""
    if len(node.input) < 3 or not node.input[2]:
        return False
    value = feeds.get(node.input[2])
    if value is None:
        return True  # computed in the graph: assume the worst
    if isinstance(value, TensorProto):
        value = numpy_helper.to_array(value)
    return bool(np.asarray(value).any())


def op_types(model: ModelProto) -> list[str]:
    """Every op type in the model (subgraphs included), domain-qualified outside ai.onnx."""
    found = set()
    for graph in walk_graphs(model.graph):
        for node in graph.node:
            domain = "" if node.domain in ("", "ai.onnx") else node.domain + "."
            found.add(domain + node.op_type)
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# Writing cases


def value_proto(value: object, vi: onnx.ValueInfoProto) -> bytes:
    """Serializes one test value the way `backend-test-tools generate-data` does."""
    tp = vi.type
    if tp.HasField("map_type"):
        return numpy_helper.from_dict(value, vi.name).SerializeToString()
    if tp.HasField("sequence_type"):
        return numpy_helper.from_list(value, vi.name).SerializeToString()
    if tp.HasField("optional_type"):
        return numpy_helper.from_optional(value, vi.name).SerializeToString()
    if isinstance(value, TensorProto):
        return value.SerializeToString()
    return numpy_helper.from_array(value, vi.name).SerializeToString()


def graph_inputs(model: ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds: old exporters also list the initializers among them."""
    initializers = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in initializers]


def write_data_set(data_dir: Path, model: ModelProto, inputs, outputs) -> None:
    data_dir.mkdir(parents=True)
    for k, (value, vi) in enumerate(zip(inputs, graph_inputs(model), strict=True)):
        (data_dir / f"input_{k}.pb").write_bytes(value_proto(value, vi))
    for k, (value, vi) in enumerate(zip(outputs, model.graph.output, strict=True)):
        (data_dir / f"output_{k}.pb").write_bytes(value_proto(value, vi))


def entry(suite: str, name: str, model: ModelProto, feeds: dict, rtol: float, atol: float,
          op: str | None = None) -> dict:
    reasons = noncore_reasons(model, feeds)
    return {
        "suite": suite,
        "name": name,
        "op": op,
        "op_types": op_types(model),
        "rtol": rtol,
        "atol": atol,
        "core": not reasons,
        "not_core": reasons,
    }


def node_suite(out: Path) -> list[dict]:
    with warnings.catch_warnings():
        # Some generators overflow on purpose (Cast tests) and numpy warns about it.
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    # An `X_expanded[_verN]` case runs the function body of the op tested by case `X`.
    tested = {c.name: c.model.graph.node[0].op_type for c in cases if "_expanded" not in c.name}
    entries = []
    for case in cases:
        assert case.model is not None and case.data_sets is not None
        case_dir = out / "node" / case.name
        case_dir.mkdir(parents=True)
        (case_dir / "model.onnx").write_bytes(case.model.SerializeToString())
        for i, (inputs, outputs) in enumerate(case.data_sets):
            write_data_set(case_dir / f"test_data_set_{i}", case.model, inputs, outputs)
        feeds = {vi.name: v for vi, v in zip(graph_inputs(case.model), case.data_sets[0][0])}
        op = tested[case.name.split("_expanded")[0]]
        entries.append(entry("node", case.name, case.model, feeds, case.rtol, case.atol, op))
    return entries


def link_or_copy(src: Path | str, dst: Path | str) -> None:
    """Hard-links when possible (same filesystem), else copies: the data files never change."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copied_suite(out: Path, suite: str) -> list[dict]:
    entries = []
    for case_src in sorted((DATA_DIR / suite).iterdir()):
        if not (case_src / "model.onnx").is_file():
            continue
        shutil.copytree(case_src, out / suite / case_src.name, copy_function=link_or_copy)
        model = onnx.load(case_src / "model.onnx")
        data = {}
        json_path = case_src / "data.json"
        if json_path.is_file():
            data = json.loads(json_path.read_text())
        feeds = {}
        for k, vi in enumerate(graph_inputs(model)):
            pb = case_src / "test_data_set_0" / f"input_{k}.pb"
            if vi.type.HasField("tensor_type") and pb.is_file():
                feeds[vi.name] = onnx.load_tensor(pb)
        rtol, atol = data.get("rtol", 1e-3), data.get("atol", 1e-7)
        entries.append(entry(suite, case_src.name, model, feeds, rtol, atol))
    return entries


def light_suite(out: Path) -> list[dict]:
    """The runner's local fallback for the `real` models: light weights and a fixed input."""
    entries = []
    for case in model_cases.collect_testcases():
        if case.kind != "real" or not (case.url or "").startswith("onnx/backend/test/data/light/"):
            continue
        src = DATA_DIR / "light" / f"light_{case.model_name}.onnx"
        model = onnx.load(src)
        case_dir = out / "light" / case.name
        case_dir.mkdir(parents=True)
        link_or_copy(src, case_dir / "model.onnx")
        feeds = {vi.name: dummy_input(vi) for vi in graph_inputs(model)}
        expected = onnx.load_tensor(DATA_DIR / "light" / f"light_{case.model_name}_output_0.pb")
        write_data_set(case_dir / "test_data_set_0", model, list(feeds.values()), [expected])
        entries.append(entry("light", case.name, model, feeds, case.rtol, case.atol))
    return entries


def dummy_input(vi: onnx.ValueInfoProto) -> np.ndarray:
    """Mirrors onnx.backend.test.runner.Runner.generate_dummy_data(random=False)."""
    dims = vi.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (replaced if it exists)"
    )
    args = parser.parse_args()
    out: Path = args.out
    # Write next to the target and rename at the end, so an interrupted run never leaves a
    # half-written folder that looks complete.
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    entries = node_suite(tmp)
    for suite in COPIED_SUITES:
        entries += copied_suite(tmp, suite)
    entries += light_suite(tmp)
    (tmp / "cases.json").write_text(
        json.dumps({"onnx_version": onnx.__version__, "cases": entries}, indent=1) + "\n"
    )

    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    core = sum(e["core"] for e in entries)
    print(f"[conformance] {len(entries)} cases ({core} core) in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
