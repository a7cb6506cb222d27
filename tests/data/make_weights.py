"""Generates the weights-file samples that `tests/weights.rs` reads, with their expected contents.

Usage: python tests/data/make_weights.py OUT_DIR   (torch, safetensors, transformers, numpy)

Writes into OUT_DIR:
  * PyTorch files of one state_dict (every dtype, a 0-d and an empty tensor, a sliced and a
    transposed view, tensors sharing one storage, a Parameter) and of a nested training
    checkpoint, in zip and legacy containers and pickle protocols 2 and 4;
  * a safetensors file of every dtype, and tiny Hugging Face folders (model.safetensors,
    pytorch_model.bin, and safetensors shards with their index);
  * hostile files that must be refused without running anything: a pickle calling
    `os.system` (its command would create OUT_DIR/pwned.txt), `builtins.eval`, a set, full
    `torch.save(model)` pickles, and a zip whose entry names climb out with `..`;
  * expected.json: for each readable file, every tensor (key, dtype, shape, little-endian
    bytes in hex, in file order) and the non-tensor leaves; for each hostile file, the
    substrings its error must contain.

Expected values come from the tensors as built here (or, for the Hugging Face folders, as
read back by torch/safetensors), never from the reader under test.
"""

import collections
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
expected = {"files": {}, "errors": {}}

# Every dtype the reader supports, with values that exercise the extremes of integer types.
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "uint16": torch.uint16,
    "uint32": torch.uint32,
    "uint64": torch.uint64,
}
NUMPY_UNSIGNED = {"uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64}


def sample_of(name, dtype, gen):
    """A 2x3 tensor of `dtype` holding its extreme values where it has them."""
    if dtype.is_floating_point:
        return (torch.randn(2, 3, generator=gen, dtype=torch.float64) * 100).to(dtype)
    if dtype == torch.bool:
        return torch.tensor([[True, False, True], [False, False, True]])
    if name in NUMPY_UNSIGNED:  # torch cannot build these from Python ints beyond int64
        t = NUMPY_UNSIGNED[name]
        info = np.iinfo(t)
        return torch.from_numpy(np.array([[0, 1, 7], [info.max, info.max - 1, 42]], dtype=t))
    info = torch.iinfo(dtype)
    return torch.tensor([[info.min, -1, 0], [1, info.max, 42]], dtype=dtype)


def hex_bytes(t):
    """Little-endian bytes of `t` in row-major order."""
    flat = t.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(torch.uint8).numpy().tobytes().hex()


def flatten(obj, prefix, tensors, metadata):
    """Mirrors the reader's flattening: dict keys and list indices joined with '.'."""
    if isinstance(obj, torch.Tensor):
        tensors.append(
            {
                "key": prefix,
                "dtype": str(obj.dtype).removeprefix("torch."),
                "shape": list(obj.shape),
                "hex": hex_bytes(obj),
            }
        )
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors, metadata)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(v, f"{prefix}.{i}" if prefix else str(i), tensors, metadata)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        metadata.append([prefix, obj])
    else:
        raise TypeError(f"{prefix}: {type(obj)}")


def expect(file, fmt, obj):
    tensors, metadata = [], []
    flatten(obj, "", tensors, metadata)
    expected["files"][file] = {"format": fmt, "tensors": tensors, "metadata": metadata}


def save_torch(name, obj):
    """`name` in zip and legacy containers, pickle protocols 2 and 4."""
    for container, zip_ in (("zip", True), ("legacy", False)):
        for protocol in (2, 4):
            file = f"{name}_{container}_p{protocol}.pt"
            torch.save(
                obj,
                os.path.join(OUT, file),
                pickle_protocol=protocol,
                _use_new_zipfile_serialization=zip_,
            )
            expect(file, f"torch-{container}", obj)


gen = torch.Generator().manual_seed(0)

# --- A state_dict with every dtype and every kind of view --------------------------------
state = collections.OrderedDict()
for name, dtype in DTYPES.items():
    state[f"dtype.{name}"] = sample_of(name, dtype, gen)
state["scalar"] = torch.tensor(3.5)
state["empty"] = torch.zeros(0, 3)
base = torch.randn(4, 5, generator=gen)
state["sliced"] = base[1:3, 2:]  # storage offset 7, strides (5, 1): not contiguous
state["transposed"] = base.t()  # strides (1, 5)
state["shared.base"] = base
state["shared.row"] = base[2]  # contiguous view at storage offset 10
state["param"] = torch.nn.Parameter(torch.randn(3, generator=gen))
save_torch("state", state)

# --- A nested training checkpoint ---------------------------------------------------------
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
model(torch.randn(5, 4)).sum().backward()
opt.step()
checkpoint = {
    "model": model.state_dict(),
    "optimizer": opt.state_dict(),
    "epoch": 3,
    "best_loss": 0.25,
    "note": "tiny",
}
save_torch("checkpoint", checkpoint)

# --- safetensors of every dtype -----------------------------------------------------------
st = {name: sample_of(name, dtype, gen) for name, dtype in DTYPES.items()}
st["scalar"] = torch.tensor(-2.0)
st["empty"] = torch.zeros(2, 0)
st_meta = {"format": "pt", "note": "all dtypes"}
save_file(st, os.path.join(OUT, "all_dtypes.safetensors"), metadata=st_meta)


def expect_safetensors(file):
    """Tensors in data-offset order, as read back by the safetensors package."""
    path = os.path.join(OUT, file)
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = header.pop("__metadata__", {})
    order = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in order}
    expect(file, "safetensors", tensors)
    expected["files"][file]["metadata"] = [[k, v] for k, v in meta.items()]


expect_safetensors("all_dtypes.safetensors")

# --- Tiny Hugging Face folders ------------------------------------------------------------
from transformers import BertConfig, BertModel  # noqa: E402  (slow import, only needed here)

torch.manual_seed(0)
bert = BertModel(
    BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
)
bert.save_pretrained(os.path.join(OUT, "hf_bert_safetensors"))
expect_safetensors("hf_bert_safetensors/model.safetensors")
bert.save_pretrained(os.path.join(OUT, "hf_bert_sharded"), max_shard_size="2KB")
with open(os.path.join(OUT, "hf_bert_sharded", "model.safetensors.index.json")) as f:
    shards = sorted(set(json.load(f)["weight_map"].values()))
for shard in shards:
    expect_safetensors(f"hf_bert_sharded/{shard}")

# transformers 5 always writes safetensors; the legacy layout it used to write is a zip
# torch.save of the state_dict beside config.json.
bin_dir = os.path.join(OUT, "hf_bert_bin")
os.makedirs(bin_dir, exist_ok=True)
bert.config.to_json_file(os.path.join(bin_dir, "config.json"))
torch.save(bert.state_dict(), os.path.join(bin_dir, "pytorch_model.bin"))
expect("hf_bert_bin/pytorch_model.bin", "torch-zip", bert.state_dict())


# A folder loads as its files' tensors, one file after the other.
expected["folders"] = {
    "hf_bert_safetensors": ["hf_bert_safetensors/model.safetensors"],
    "hf_bert_bin": ["hf_bert_bin/pytorch_model.bin"],
    "hf_bert_sharded": [f"hf_bert_sharded/{s}" for s in shards],
}
assert len(shards) > 1


# --- Hostile files: each must fail with an error naming the culprit, running nothing ------
def hostile(file, *must_contain):
    expected["errors"][file] = list(must_contain)


class System:
    def __reduce__(self):
        return (os.system, (f"echo pwned > {os.path.join(OUT, 'pwned.txt')}",))


class Eval:
    def __reduce__(self):
        return (eval, ("print('pwned')",))


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


torch.save({"x": torch.ones(2), "evil": System()}, os.path.join(OUT, "hostile_system_zip.pt"))
torch.save(
    {"evil": System()},
    os.path.join(OUT, "hostile_system_legacy.pt"),
    _use_new_zipfile_serialization=False,
)
hostile("hostile_system_zip.pt", "posix.system", "state_dict")
hostile("hostile_system_legacy.pt", "posix.system")
with open(os.path.join(OUT, "hostile_system_raw.pkl"), "wb") as f:
    pickle.dump(System(), f, protocol=4)
hostile("hostile_system_raw.pkl", "posix.system")
torch.save({"evil": Eval()}, os.path.join(OUT, "hostile_eval.pt"), pickle_protocol=4)
hostile("hostile_eval.pt", "builtins.eval")
torch.save({"s": {1, 2}}, os.path.join(OUT, "hostile_set.pt"))
hostile("hostile_set.pt", "__builtin__.set")  # protocol 2 spells builtins so
torch.save(TinyNet(), os.path.join(OUT, "full_model_user.pt"))
hostile("full_model_user.pt", "__main__.TinyNet", "state_dict")
torch.save(torch.nn.Linear(2, 2), os.path.join(OUT, "full_model_linear.pt"))
hostile("full_model_linear.pt", "torch.nn.modules.linear.Linear", "state_dict")

# A zip whose entries climb out of the archive folder.
with zipfile.ZipFile(os.path.join(OUT, "state_zip_p2.pt")) as src, zipfile.ZipFile(
    os.path.join(OUT, "hostile_dotdot.pt"), "w"
) as dst:
    for info in src.infolist():
        name = info.filename.replace("/data/", "/../../data/")
        dst.writestr(name, src.read(info.filename))
hostile("hostile_dotdot.pt", "..")

# A truncated zip: the central directory at the end is gone.
with open(os.path.join(OUT, "state_zip_p2.pt"), "rb") as f:
    whole = f.read()
with open(os.path.join(OUT, "hostile_truncated.pt"), "wb") as f:
    f.write(whole[: len(whole) // 2])
hostile("hostile_truncated.pt", "zip")

with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
print(OUT)
