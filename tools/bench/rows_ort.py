#!/usr/bin/env python3
"""ONNX Runtime's time for issue 13's row and elementwise shapes, to set beside kiln's criterion
group `s5_*` (codegen/benches/kernels.rs): Softmax [256, 4096] and [8, 2^20], LayerNormalization
[4096, 768], Exp and Gelu (erf) on 2^20 floats (Gelu also on bell-shaped data), and a numpy copy of the same bytes.

ORT runs with its output bound once (io_binding), so neither side allocates per run (kiln's bench
times the plan steps alone). Median of `--reps` timed runs after warm-up, intra-op threads as given.

    /tmp/venv/bin/python tools/bench/rows_ort.py --threads 1
"""

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def model(op, shape, attrs=None, inits=(), opset=20):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    names = ["x"] + [i.name for i in inits]
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    g = helper.make_graph([node], op, [x], [y], initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m.SerializeToString()


def data(n, seed):
    # The same generator as the criterion bench's data().
    i = np.arange(n, dtype=np.uint64)
    v = ((i * np.uint64(2654435761) + np.uint64(seed)) & np.uint64(0xFFFFFFFF)) >> np.uint64(8)
    return (v.astype(np.float64) / 16777216.0 - 0.5).astype(np.float32)


def bell(n):
    # ≈ N(0, 1), the criterion bench's bell_at(): the four 16-bit quarters of splitmix64(i).
    z = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    q = [((z >> np.uint64(16 * k)) & np.uint64(0xFFFF)).astype(np.float64) / 65536.0 - 0.5 for k in range(4)]
    return (sum(q).astype(np.float32) * np.float32(np.sqrt(3))).astype(np.float32)


def time_ort(blob, x, threads, reps):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    y = np.empty_like(x)
    b = s.io_binding()
    b.bind_cpu_input("x", x)
    b.bind_output("y", "cpu", 0, np.float32, list(y.shape), y.ctypes.data)
    for _ in range(5):
        s.run_with_iobinding(b)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        s.run_with_iobinding(b)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def time_copy(x, reps):
    y = np.empty_like(x)
    for _ in range(3):
        np.copyto(y, x)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(y, x)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=50)
    a = ap.parse_args()
    d = 768
    g = helper.make_tensor("g", TensorProto.FLOAT, [d], (1.0 + data(d, 6)).tolist())
    bt = helper.make_tensor("b", TensorProto.FLOAT, [d], data(d, 7).tolist())
    cases = [
        ("softmax_256x4096", model("Softmax", [256, 4096], {"axis": -1}), data(256 * 4096, 3).reshape(256, 4096) * 20),
        ("softmax_8x1m", model("Softmax", [8, 1 << 20], {"axis": -1}), data(8 << 20, 3).reshape(8, 1 << 20) * 20),
        (
            "layernorm_4096x768",
            model("LayerNormalization", [4096, d], {"axis": -1, "epsilon": 1e-5}, [g, bt]),
            data(4096 * d, 5).reshape(4096, d),
        ),
        ("exp_1m", model("Exp", [1 << 20]), data(1 << 20, 4) * 8),
        ("gelu_erf_1m", model("Gelu", [1 << 20]), data(1 << 20, 4) * 8),
        # ≈ N(0, 1), as the criterion group s5_gelu_erf_1m_bell.
        ("gelu_erf_1m_bell", model("Gelu", [1 << 20]), bell(1 << 20)),
    ]
    print(f"onnxruntime {ort.__version__}, {a.threads} thread(s), median of {a.reps}")
    for name, blob, x in cases:
        x = np.ascontiguousarray(x, dtype=np.float32)
        t = time_ort(blob, x, a.threads, a.reps)
        c = time_copy(x, a.reps)
        print(f"{name:22s} ort {t * 1e3:8.3f} ms   numpy copy {c * 1e3:8.3f} ms   ort/copy {t / c:5.2f}")


if __name__ == "__main__":
    main()
