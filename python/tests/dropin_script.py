"""A script written for onnxruntime, used unchanged with kiln by test_kiln.py (which makes
`import onnxruntime` give `kiln`): runs MODEL on the inputs in INPUT_DIR (NAME.npy for each input)
and saves the outputs to OUT.npz."""

import os
import sys

import numpy as np
import onnxruntime as ort

model_path, input_dir, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
feed = {}
for arg in session.get_inputs():
    x = np.load(os.path.join(input_dir, arg.name + ".npy"))
    assert x.dtype == dtypes[arg.type] and list(x.shape) == arg.shape, (arg, x.dtype, x.shape)
    feed[arg.name] = x
names = [o.name for o in session.get_outputs()]
outputs = session.run(names, feed)
np.savez(out_path, **dict(zip(names, outputs)))
