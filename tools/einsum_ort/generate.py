#!/usr/bin/env python3
"""Writes tests/einsum_ort/<case>/: a one-node float32 Einsum model, its inputs x0.npy, x1.npy, ...
and ONNX Runtime's output y.npy (the ONNX backend node tests of Einsum use float64, which kiln does
not read). Pinned like the zoo: pip install -r tools/zoo/requirements.txt

    python3 tools/einsum_ort/generate.py
"""
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

# The contractions exporters write, and the equation forms the importer handles.
CASES = [
    ("batched_matmul", "bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("attention_scores", "bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("attention_values", "bhqk,bhkd->bhqd", [(1, 2, 3, 5), (1, 2, 5, 4)]),
    ("outer", "i,j->ij", [(3,), (4,)]),
    ("transpose", "ij->ji", [(3, 4)]),
    ("row_sum", "ij->i", [(3, 4)]),
    ("implicit_output", "ij,jk", [(3, 4), (4, 2)]),
    ("ellipsis", "...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("bilinear", "bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("dot", "i,i->", [(5,), (5,)]),
]


def main():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "einsum_ort")
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(12)
    for name, equation, shapes in CASES:
        folder = os.path.join(root, name)
        os.makedirs(folder)
        names = [f"x{i}" for i in range(len(shapes))]
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)]
        node = helper.make_node("Einsum", names, ["y"], equation=equation)
        graph = helper.make_graph([node], name, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, os.path.join(folder, "model.onnx"))
        feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in zip(names, shapes)}
        for n, v in feeds.items():
            np.save(os.path.join(folder, f"{n}.npy"), v)
        (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        np.save(os.path.join(folder, "y.npy"), y)
        print(f"{name}: {equation} -> {list(y.shape)}")


if __name__ == "__main__":
    main()
