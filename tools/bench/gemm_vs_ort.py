#!/usr/bin/env python3
"""kiln's packed GEMM beside ONNX Runtime on the same ONNX files, one thread count at a time.

    /tmp/venv/bin/python tools/bench/gemm_vs_ort.py --kiln target/rel/release/kiln --threads 1 2

Models (weights as initializers, so kiln packs them at compile time): MatMul 512x512x512,
MatMul 128x768x3072 (BERT-base's FFN up-projection at seq 128) and a BERT-base-like encoder layer
(seq 128, hidden 768, 12 heads, FFN 3072, erf GELU, post-LayerNorm). Each round runs kiln
(`kiln bench --json`, its median) and ONNX Runtime (median of --iters timed runs after a warm-up,
intra-op threads = the thread count) in alternating order; the table shows the median over rounds.
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


def rnd(shape, seed, scale=0.05):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def matmul_model(m, k, n):
    w = numpy_helper.from_array(rnd([k, n], 1), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        f"matmul_{m}x{k}x{n}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [w],
    )
    return g, {"x": rnd([m, k], 2, 1.0)}


def bert_layer(s=128, d=768, h=12, f=3072):
    dh = d // h
    inits, nodes = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    init("wqkv", rnd([d, 3 * d], 1))
    init("bqkv", rnd([3 * d], 2))
    init("wo", rnd([d, d], 3))
    init("bo", rnd([d], 4))
    init("w1", rnd([d, f], 5))
    init("b1", rnd([f], 6))
    init("w2", rnd([f, d], 7))
    init("b2", rnd([d], 8))
    for i in (1, 2):
        init(f"g{i}", np.ones([d], np.float32))
        init(f"be{i}", np.zeros([d], np.float32))
    init("shape_heads", np.array([s, 3, h, dh], np.int64))
    init("shape_out", np.array([s, d], np.int64))
    init("scale", np.array(1.0 / np.sqrt(dh), np.float32))
    init("sqrt2", np.array(np.sqrt(2.0), np.float32))
    init("one", np.array(1.0, np.float32))
    init("half", np.array(0.5, np.float32))
    qkv = node("Add", [node("MatMul", ["x", "wqkv"], "qkv0"), "bqkv"], "qkv")
    heads = node("Transpose", [node("Reshape", [qkv, "shape_heads"], "qkv_r")], "qkv_t", perm=[1, 2, 0, 3])
    q, k, v = (node("Gather", [heads, init(f"i{j}", np.array(j, np.int64))], n, axis=0) for j, n in enumerate("qkv"))
    kt = node("Transpose", [k], "kt", perm=[0, 2, 1])
    scores = node("Mul", [node("MatMul", [q, kt], "qk"), "scale"], "scores")
    probs = node("Softmax", [scores], "probs", axis=-1)
    ctx = node("MatMul", [probs, v], "ctx")
    ctx = node("Reshape", [node("Transpose", [ctx], "ctx_t", perm=[1, 0, 2]), "shape_out"], "ctx_r")
    attn = node("Add", [node("MatMul", [ctx, "wo"], "o0"), "bo"], "o")
    h1 = node("LayerNormalization", [node("Add", ["x", attn], "r1"), "g1", "be1"], "h1", axis=-1, epsilon=1e-5)
    u = node("Add", [node("MatMul", [h1, "w1"], "u0"), "b1"], "u")
    erf = node("Erf", [node("Div", [u, "sqrt2"], "u_s")], "u_erf")
    gelu = node("Mul", [node("Mul", [u, "half"], "u_h"), node("Add", [erf, "one"], "u_e1")], "gelu")
    ffn = node("Add", [node("MatMul", [gelu, "w2"], "f0"), "b2"], "ffn")
    node("LayerNormalization", [node("Add", [h1, ffn], "r2"), "g2", "be2"], "y", axis=-1, epsilon=1e-5)
    g = helper.make_graph(
        nodes,
        "bert_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [s, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [s, d])],
        inits,
    )
    return g, {"x": rnd([s, d], 9, 1.0)}


def ort_median(path, feeds, threads, iters):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def kiln_median(kiln, path, npy, threads, iters):
    out = subprocess.run(
        [kiln, "bench", path, "--input", f"x={npy}", "--iters", str(iters), "--threads", str(threads), "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rec = json.loads(out.strip().splitlines()[-1])
    return rec["median_ms"], rec.get("isa", "?")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="gemm_vs_ort_")
    models = {
        "matmul_512x512x512": matmul_model(512, 512, 512),
        "matmul_128x768x3072": matmul_model(128, 768, 3072),
        "bert_layer_s128": bert_layer(),
    }
    print(f"{'model':24} {'thr':>3} {'kiln ms':>9} {'ORT ms':>9} {'kiln/ORT':>8}  isa")
    for name, (graph, feeds) in models.items():
        path = os.path.join(tmp, name + ".onnx")
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        npy = os.path.join(tmp, name + "_x.npy")
        np.save(npy, feeds["x"])
        for threads in args.threads:
            ks, os_ = [], []
            isa = "?"
            for r in range(args.rounds):
                order = [0, 1] if r % 2 == 0 else [1, 0]
                for which in order:
                    if which == 0:
                        t, isa = kiln_median(args.kiln, path, npy, threads, args.iters)
                        ks.append(t)
                    else:
                        os_.append(ort_median(path, feeds, threads, args.iters))
            k, o = statistics.median(ks), statistics.median(os_)
            print(f"{name:24} {threads:>3} {k:9.3f} {o:9.3f} {k / o:8.2f}  {isa}", flush=True)


if __name__ == "__main__":
    main()
