#!/usr/bin/env python3
"""Regenerate the committed tiny example model and its reference output.

    .cache/venv/bin/python models/example/make_example.py

Writes, next to this script:
    tiny_cnn.onnx          Conv3x3(3->8)+BatchNorm+ReLU, MaxPool, Conv3x3(8->16)+ReLU,
                           GlobalAveragePool, Flatten, Gemm(16->10), Softmax; opset 17;
                           input "input" float32 [1,3,32,32], output "output" float32 [1,10]
    input.npy              float32 [1,3,32,32], seed 0
    expected_output.npy    onnxruntime output for input.npy (float32 [1,10])

Unlike the zoo this is small enough to commit, so runtime tests have a real model
without building anything.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
SEED = 0

warnings.filterwarnings("ignore", category=DeprecationWarning)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.conv2(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return torch.softmax(self.fc(x), dim=1)


def main() -> None:
    torch.manual_seed(SEED)
    model = TinyCNN()
    # Non-trivial BN parameters and running stats: with the defaults (0/1) a runtime
    # that skipped or mis-wired BatchNormalization would still match.
    with torch.no_grad():
        bn = model.bn1
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.2)
        bn.running_mean.normal_(0.0, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        # Sharpen the logits so the softmax output is far from uniform.
        model.fc.weight.mul_(4.0)
    model.eval()

    x = np.random.default_rng(SEED).standard_normal((1, 3, 32, 32), dtype=np.float32)
    onnx_path = HERE / "tiny_cnn.onnx"
    torch.onnx.export(
        model,
        (torch.from_numpy(x),),
        str(onnx_path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        # Constant folding would fuse BatchNormalization into the Conv weights; keep it
        # as a separate op so the example exercises it.
        do_constant_folding=False,
    )
    m = onnx.load(str(onnx_path))
    onnx.checker.check_model(m)
    ops = [n.op_type for n in m.graph.node]
    assert "BatchNormalization" in ops, ops

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(["output"], {"input": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(y - ref).max() < 1e-5, np.abs(y - ref).max()
    assert y.std() > 1e-2, f"softmax output too flat: {y}"

    np.save(HERE / "input.npy", x)
    np.save(HERE / "expected_output.npy", y)
    print(f"{onnx_path.name}: {onnx_path.stat().st_size} bytes, ops {ops}")
    print(f"expected_output: {y.ravel().round(4).tolist()}")


if __name__ == "__main__":
    main()
