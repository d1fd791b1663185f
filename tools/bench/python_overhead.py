"""Per-call cost of `session.run` from Python, kiln vs onnxruntime (issue 15).

    python tools/bench/python_overhead.py [--threads 1] [--out DIR]

Four ONNX models, each run through `kiln.InferenceSession` and `onnxruntime.InferenceSession` with
the same inputs: `add_1` (one Add on one float: the call itself, i.e. the per-call overhead),
`graph_transformer` (the zoo's tiny model, models/onnx/), `mlp_4x2048` (a large model: four
2048x2048 MatMul+Relu layers, 64 MiB of weights, batch 1) and `relu_4m` (one Relu on 16 MiB in and
16 MiB out: what per-call copies of inputs or outputs would cost). Each: 20 warm-up calls, then timed
calls in rounds; prints the median and p10 per call in microseconds and the kiln/onnxruntime ratio.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np


def make_models(out):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    os.makedirs(out, exist_ok=True)

    def save(name, nodes, inputs, outputs, inits):
        graph = helper.make_graph(nodes, name, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = os.path.join(out, name + ".onnx")
        onnx.save(model, path)
        return path

    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    add = save("add_1", [helper.make_node("Add", ["x", "one"], ["y"])], [vi("x", [1])], [vi("y", [1])],
               [("one", np.ones(1, np.float32))])
    rng = np.random.default_rng(2048)
    nodes, inits, prev = [], [], "x"
    for i in range(4):
        w = (rng.standard_normal((2048, 2048)) / np.sqrt(2048)).astype(np.float32)
        inits.append((f"w{i}", w))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}" if i < 3 else "y"]))
        prev = f"r{i}"
    mlp = save("mlp_4x2048", nodes, [vi("x", [1, 2048])], [vi("y", [1, 2048])], inits)
    # Large inputs and outputs, little compute: what a copy of either per call would cost.
    relu = save("relu_4m", [helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1024, 4096])], [vi("y", [1024, 4096])], [])
    return [("add_1", add), ("graph_transformer", None), ("mlp_4x2048", mlp), ("relu_4m", relu)]


def feeds_for(session, repo, name):
    feed = {}
    for arg in session.get_inputs():
        path = os.path.join(repo, "models", name, "inputs", arg.name + ".npy")
        if os.path.exists(path):
            feed[arg.name] = np.load(path)
        else:
            feed[arg.name] = np.random.default_rng(0).standard_normal(arg.shape).astype(np.float32)
    return feed


def time_calls(session, feed, calls):
    for _ in range(20):
        session.run(None, feed)
    samples = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        session.run(None, feed)
        samples.append((time.perf_counter_ns() - t) / 1e3)
    samples.sort()
    return statistics.median(samples), samples[len(samples) // 10]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join("target", "bench-overhead"))
    args = p.parse_args()
    import kiln
    import onnxruntime as ort

    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    models = make_models(args.out)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    print(f"python {sys.version.split()[0]}, onnxruntime {ort.__version__}, kiln {kiln.__version__}, threads {args.threads}")
    print(f"{'model':20} {'kiln median':>12} {'ort median':>12} {'kiln p10':>10} {'ort p10':>10} {'kiln/ort':>9}")
    for name, path in models:
        path = path or os.path.join(repo, "models", "onnx", name + ".onnx")
        calls = 300 if name in ("mlp_4x2048", "relu_4m") else 3000
        ks = kiln.InferenceSession(path, threads=args.threads)
        os_ = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = feeds_for(os_, repo, name)
        a, b = ks.run(None, feed), os_.run(None, feed)
        for x, y in zip(a, b):
            assert np.allclose(x, y, rtol=1e-3, atol=1e-3), name
        # Alternate to spread machine-load drift over both.
        km, kp, om, op = [], [], [], []
        for _ in range(3):
            m, q = time_calls(ks, feed, calls // 3)
            km.append(m), kp.append(q)
            m, q = time_calls(os_, feed, calls // 3)
            om.append(m), op.append(q)
        k, o = statistics.median(km), statistics.median(om)
        print(f"{name:20} {k:10.1f}us {o:10.1f}us {min(kp):8.1f}us {min(op):8.1f}us {k / o:9.2f}")


if __name__ == "__main__":
    main()
