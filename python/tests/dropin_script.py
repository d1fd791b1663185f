"""A script written for onnxruntime, used unchanged with kiln by test_kiln.py (which makes
`import onnxruntime` give `kiln`): runs MODEL on seeded inputs and saves the outputs to OUT.npz."""

import sys

import numpy as np
import onnxruntime as ort

model_path, out_path = sys.argv[1], sys.argv[2]
session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
feed = {}
for arg in session.get_inputs():
    dtype = dtypes[arg.type]
    if dtype is np.float32:
        feed[arg.name] = rng.standard_normal(arg.shape).astype(np.float32)
    else:
        feed[arg.name] = np.zeros(arg.shape, dtype)
names = [o.name for o in session.get_outputs()]
outputs = session.run(names, feed)
np.savez(out_path, **dict(zip(names, outputs)))
