#!/usr/bin/env python3
"""Attention alone: kiln against ONNX Runtime on the same ONNX files (issue 13, session 11).

    PY tools/bench/attention_ort.py --kiln target/release/kiln [--base OLD_KILN] [--threads 1 2]
        [--iters 200] [--rounds 3] [--only bert vit]

Each case is one attention as exporters write it: S = (Q·Kᵀ)·scale (+ mask), Softmax over the
keys, S·V, with K transposed in the graph (which kiln reads through strides), written to a temp
folder with seeded inputs. For each thread count the systems are timed in turn for --rounds rounds
(ORT in-process, median and fastest of --iters runs after warm-up, intra-op threads = T,
sequential; kiln through `kiln bench --json`, median and min_ms), and one Markdown row per case
gives the median over rounds of each system's medians, each system's fastest run over all rounds,
and kiln ÷ ORT of both.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# name: (heads, lq, lk, d, dv, mask, split) — the shapes of the models of issue 13. `split`: Q, K
# and V given as [1, L, heads, d] and split into heads by Transposes (as BERT/GPT-2 exports do),
# else given as [1, heads, L, d] with only K transposed.
CASES = {
    "bert_base_128": (12, 128, 128, 64, 64, True, False),
    "bert_base_128_split": (12, 128, 128, 64, 64, True, True),
    "gpt2_64_split": (12, 64, 64, 64, 64, True, True),
    "vit_base_197": (12, 197, 197, 64, 64, False, False),
    "yoso_unet_1024x32": (2, 1024, 1024, 32, 32, False, False),
    "yoso_vae_1024x128": (1, 1024, 1024, 128, 128, False, False),
    "heads8_128x16": (8, 128, 128, 16, 16, False, False),
}


def write(folder, name, heads, lq, lk, d, dv, mask, split):
    f = TensorProto.FLOAT
    if split:
        ins = [
            helper.make_tensor_value_info("q", f, [1, lq, heads, d]),
            helper.make_tensor_value_info("k", f, [1, lk, heads, d]),
            helper.make_tensor_value_info("v", f, [1, lk, heads, dv]),
        ]
        nodes = [
            helper.make_node("Transpose", ["q"], ["qh"], perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),
            helper.make_node("Transpose", ["v"], ["vh"], perm=[0, 2, 1, 3]),
        ]
        q, v = "qh", "vh"
    else:
        ins = [
            helper.make_tensor_value_info("q", f, [1, heads, lq, d]),
            helper.make_tensor_value_info("k", f, [1, heads, lk, d]),
            helper.make_tensor_value_info("v", f, [1, heads, lk, dv]),
        ]
        nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2])]
        q, v = "q", "v"
    nodes += [
        helper.make_node("MatMul", [q, "kt"], ["s0"]),
        helper.make_node("Mul", ["s0", "scale"], ["s1"]),
    ]
    inits = [numpy_helper.from_array(np.float32(1 / np.sqrt(d)), "scale")]
    last = "s1"
    if mask:
        ins.append(helper.make_tensor_value_info("mask", f, [1, 1, 1, lk]))
        nodes.append(helper.make_node("Add", ["s1", "mask"], ["s2"]))
        last = "s2"
    nodes += [helper.make_node("Softmax", [last], ["p"], axis=-1), helper.make_node("MatMul", ["p", v], ["y"])]
    yi = helper.make_tensor_value_info("y", f, None)
    g = helper.make_graph(nodes, name, ins, [yi], initializer=inits)
    m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    path = os.path.join(folder, name + ".onnx")
    onnx.save(m, path)
    rng = np.random.default_rng(2)
    feed = {i.name: rng.uniform(-1, 1, [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in ins}
    if mask:
        feed["mask"] = np.where(rng.uniform(size=feed["mask"].shape) < 0.2, -1e4, 0).astype(np.float32)
    args = []
    for k, v in feed.items():
        p = os.path.join(folder, f"{name}_{k}.npy")
        np.save(p, v)
        args += ["--input", f"{k}={p}"]
    return path, feed, args


def time_ort(path, feed, threads, iters):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for _ in range(10):
        s.run(None, feed)
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        s.run(None, feed)
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t), min(t)


def time_kiln(binary, path, args, threads, iters):
    out = subprocess.run([binary, "bench", path, *args, "--iters", str(iters), "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["median_ms"], r["min_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--base")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    systems = [("ORT", None)] + ([("base", a.base)] if a.base else []) + [("kiln", a.kiln)]
    head = " | ".join(f"{s} med / min ms" for s, _ in systems)
    ratios = " | ".join(f"{s} ÷ ORT (med / min)" for s, _ in systems[1:])
    print(f"| case | threads | {head} | {ratios} |")
    print("|---|---:|" + "---:|" * (2 * len(systems) - 1))
    with tempfile.TemporaryDirectory() as folder:
        for name, shape in CASES.items():
            if a.only and not any(o in name for o in a.only):
                continue
            path, feed, args = write(folder, name, *shape)
            for t in a.threads:
                res = {s: [] for s, _ in systems}
                for _ in range(a.rounds):
                    for s, b in systems:
                        res[s].append(time_ort(path, feed, t, a.iters) if b is None
                                      else time_kiln(b, path, args, t, a.iters))
                med = {s: statistics.median(x[0] for x in v) for s, v in res.items()}
                mn = {s: min(x[1] for x in v) for s, v in res.items()}
                cells = " | ".join(f"{med[s]:.3f} / {mn[s]:.3f}" for s, _ in systems)
                rs = " | ".join(f"{med[s] / med['ORT']:.2f} / {mn[s] / mn['ORT']:.2f}" for s, _ in systems[1:])
                print(f"| {name} [{shape[0]}×{shape[1]}×{shape[2]}, d {shape[3]}] | {t} | {cells} | {rs} |", flush=True)


if __name__ == "__main__":
    main()
