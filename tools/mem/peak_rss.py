#!/usr/bin/env python3
"""Peak resident memory of kiln and ONNX Runtime on one generated MLP (issue 15: weights held once).

Writes an MLP of Gemm+Relu layers (float32 weights as raw_data, ~134 MB at the default widths) to
a scratch folder, then runs, each as its own process under /usr/bin/time -v:
  - `kiln run MODEL` (one compile and one run at batch 1), and
  - onnxruntime: load the same file into an InferenceSession and run it once,
and prints each one's maximum resident set size next to the weight bytes.

  /tmp/venv/bin/python tools/mem/peak_rss.py --kiln target/release/kiln
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_mlp(path, widths, seed=0, trans_b=False):
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        w = (rng.standard_normal((k, n), dtype=np.float32) / np.sqrt(k)).astype(np.float32)
        if trans_b:  # as torch.nn.Linear exports: W[n][k], Gemm transB=1
            w = np.ascontiguousarray(w.T)
        b = np.zeros(n, np.float32)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(b, f"fc{i}.bias")]
        h = f"h{i}"
        nodes.append(
            helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [h], name=f"fc{i}", transB=int(trans_b))
        )
        if i + 2 < len(widths):
            a = f"a{i}"
            nodes.append(helper.make_node("Relu", [h], [a], name=f"relu{i}"))
            h = a
        x = h
    graph = helper.make_graph(
        nodes,
        "big_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, widths[0]])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, widths[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return sum(t.nbytes for t in (numpy_helper.to_array(i) for i in inits))


ORT = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.ones((1, int(sys.argv[2])), np.float32)
s.run(None, {"x": x})
"""

BASELINE = "import numpy, onnxruntime"


def peak_kib(cmd):
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{cmd} failed:\n{r.stderr}")
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kiln", default="target/release/kiln")
    p.add_argument("--widths", default="2048,4096,4096,2048")
    p.add_argument("--threads", default="1")
    p.add_argument("--trans-b", action="store_true", help="weights as torch.nn.Linear exports them (Gemm transB=1)")
    args = p.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big_mlp.onnx")
        weights = make_mlp(path, widths, trans_b=args.trans_b)
        mb = 1 << 20
        print(f"model: MLP {widths}, weights {weights / mb:.1f} MiB, file {os.path.getsize(path) / mb:.1f} MiB")
        kiln = peak_kib([args.kiln, "run", path, "--threads", args.threads]) * 1024
        kiln_empty = peak_kib([args.kiln, "--version"]) * 1024
        ort = peak_kib([sys.executable, "-c", ORT, path, str(widths[0])]) * 1024
        ort_empty = peak_kib([sys.executable, "-c", BASELINE]) * 1024
        print(f"kiln run:        peak RSS {kiln / mb:7.1f} MiB  ({kiln / weights:.2f}x weights; process alone {kiln_empty / mb:.1f} MiB)")
        print(f"onnxruntime run: peak RSS {ort / mb:7.1f} MiB  ({ort / weights:.2f}x weights; python+numpy+ort imported {ort_empty / mb:.1f} MiB)")


if __name__ == "__main__":
    main()
