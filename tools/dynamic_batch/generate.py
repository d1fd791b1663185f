"""Writes models/onnx/dynamic_batch.onnx, a small MLP whose batch dimension is the named dynamic
dimension N (input x: float32[N,3,4]), and tests/dynamic_batch/x_B.npy with ONNX Runtime's output
y_B.npy for B in 1, 4 and 32, which tests check kiln::Session against.

Run: /tmp/venv/bin/python tools/dynamic_batch/generate.py  (numpy, onnx, onnxruntime)
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
rng = np.random.default_rng(15)
w1 = rng.standard_normal((12, 16)).astype(np.float32) * 0.4
b1 = rng.standard_normal(16).astype(np.float32) * 0.1
w2 = rng.standard_normal((16, 5)).astype(np.float32) * 0.4
b2 = rng.standard_normal(5).astype(np.float32) * 0.1
nodes = [
    helper.make_node("Flatten", ["x"], ["flat"], name="flatten", axis=1),
    helper.make_node("MatMul", ["flat", "w1"], ["h0"], name="fc1"),
    helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
    helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
    helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="fc2"),
    helper.make_node("Add", ["h3", "b2"], ["h4"], name="fc2_bias"),
    helper.make_node("Softmax", ["h4"], ["y"], name="softmax", axis=-1),
]
graph = helper.make_graph(
    nodes,
    "dynamic_batch",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
    [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln tools/dynamic_batch")
model.ir_version = 8
onnx.checker.check_model(model)
path = os.path.join(ROOT, "models", "onnx", "dynamic_batch.onnx")
onnx.save(model, path)

session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
out_dir = os.path.join(ROOT, "tests", "dynamic_batch")
os.makedirs(out_dir, exist_ok=True)
for batch in (1, 4, 32):
    x = rng.standard_normal((batch, 3, 4)).astype(np.float32)
    (y,) = session.run(["y"], {"x": x})
    np.save(os.path.join(out_dir, f"x_{batch}.npy"), x)
    np.save(os.path.join(out_dir, f"y_{batch}.npy"), y)
print("wrote", path, "and", out_dir)
