#!/usr/bin/env python3
"""Issue 12's reductions, index and data-movement ops (and the decompositions the ONNX reader
makes: ReduceL1/SumSquare/LogSum/LogSumExp, Trilu, OneHot, MVN) against ONNX Runtime, with the
hostile values the node tests lack: ±inf and large rows in ReduceLogSumExp, NaN and ties in
ArgMax/ArgMin/TopK, negative and out-of-range OneHot indices, duplicate scatter indices with every
reduction. Each model runs on kiln's interpreter, the JIT at -O0 (1 and 2 threads) and at -O2;
floats must agree within 1e-3·max(1, |ref|), NaN with NaN, infinities exactly, integers exactly.

    cargo build && /tmp/venv/bin/python tools/ort_data_ops/check.py   # KILN=path/to/kiln to override
"""
import numpy as np, onnx, onnxruntime as ort, subprocess, os, sys, tempfile
from onnx import helper as h, TensorProto as T, numpy_helper as nh
KILN = os.environ.get("KILN", os.path.join(os.path.dirname(__file__), "../../target/debug/kiln"))
OUT = tempfile.mkdtemp(prefix="kiln_ort_data_ops_")
FAILED = []
rng = np.random.default_rng(0)
def tt(a): return T.FLOAT if a.dtype == np.float32 else T.INT64
def case(name, nodes, inputs, outs, inits=(), opset=18):
    ins = [h.make_tensor_value_info(k, tt(v), v.shape) for k, v in inputs.items()]
    g = h.make_graph(nodes, name, ins, [h.make_empty_tensor_value_info(o) for o in outs], initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=8)
    m = onnx.shape_inference.infer_shapes(m)
    d = f"{OUT}/{name}"; os.makedirs(d, exist_ok=True)
    onnx.save(m, f"{d}/model.onnx")
    want = ort.InferenceSession(m.SerializeToString()).run(None, inputs)
    args = []
    for k, v in inputs.items():
        np.save(f"{d}/{k}.npy", v); args += ["--input", f"{k}={d}/{k}.npy"]
    worst = 0.0
    for mode in (["--backend", "interp"], ["-O0", "--threads", "1"], ["-O0", "--threads", "2"], ["-O2", "--threads", "2"]):
        od = f"{d}/out"; subprocess.run(["rm", "-rf", od])
        r = subprocess.run([KILN, "run", f"{d}/model.onnx", *args, *mode, "--output-dir", od], capture_output=True, text=True)
        if r.returncode != 0:
            FAILED.append(name); print(f"{name} {mode}: FAILED {r.stderr.strip()[:300]}"); return
        for o, w in zip(outs, want):
            got = np.load(f"{od}/{o}.npy")
            if got.shape != w.shape or got.dtype != w.dtype:
                FAILED.append(name); print(f"{name} {mode} {o}: shape/dtype {got.shape} {got.dtype} vs {w.shape} {w.dtype}"); return
            if w.dtype.kind == 'f':
                same_nan = np.array_equal(np.isnan(got), np.isnan(w))
                fin = np.isfinite(w)
                infs_ok = np.array_equal(got[~fin & ~np.isnan(w)], w[~fin & ~np.isnan(w)])
                err = np.max(np.abs(got[fin] - w[fin]) / np.maximum(1, np.abs(w[fin])), initial=0.0)
                if not (same_nan and infs_ok) or err > 1e-3:
                    FAILED.append(name); print(f"{name} {mode} {o}: MISMATCH err {err} nan {same_nan} inf {infs_ok}\n got {got.ravel()[:12]}\n want {w.ravel()[:12]}"); return
                worst = max(worst, err)
            elif not np.array_equal(got, w):
                FAILED.append(name); print(f"{name} {mode} {o}: MISMATCH\n got {got.ravel()[:12]}\n want {w.ravel()[:12]}"); return
    print(f"{name}: ok (max rel err {worst:.2e})")

x = (rng.standard_normal((3, 4, 5)) * 3).astype(np.float32)
big = x * 40; big[0, 0, :] = -np.inf; big[1, 1, 1] = np.inf
ax = nh.from_array(np.array([1, -1], np.int64), "axes")
for kd in (0, 1):
    for red in ("ReduceLogSumExp", "ReduceLogSum", "ReduceL1", "ReduceSumSquare", "ReduceMin", "ReduceProd"):
        inp = np.abs(x) + 0.1 if red == "ReduceLogSum" else (big if red == "ReduceLogSumExp" else x)
        if red == "ReduceProd": inp = (rng.random((3, 4, 5)) + 0.5).astype(np.float32)
        case(f"{red}_kd{kd}", [h.make_node(red, ["x", "axes"], ["y"], keepdims=kd)], {"x": inp}, ["y"], [ax])
        case(f"{red}_all_kd{kd}", [h.make_node(red, ["x"], ["y"], keepdims=kd)], {"x": inp}, ["y"])
case("lse_noop", [h.make_node("ReduceLogSumExp", ["x"], ["y"], noop_with_empty_axes=1)], {"x": big}, ["y"])
xt = rng.integers(0, 3, (4, 6)).astype(np.float32); xt[0, 2] = np.nan; xt[2, :] = np.nan
for op in ("ArgMax", "ArgMin"):
    for last in (0, 1):
        case(f"{op}_last{last}", [h.make_node(op, ["x"], ["y"], axis=1, keepdims=0, select_last_index=last)], {"x": xt}, ["y"])
k = nh.from_array(np.array([3], np.int64), "k")
for lg in (0, 1):
    case(f"topk_l{lg}", [h.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, largest=lg)], {"x": xt}, ["v", "i"], [k])
case("topk_axis0_int", [h.make_node("TopK", ["x", "k"], ["v", "i"], axis=0)], {"x": rng.integers(-3, 3, (5, 3)).astype(np.int64)}, ["v", "i"], [k])
a = nh.from_array(np.array(1, np.int64), "a")
for ex in (0, 1):
    for rv in (0, 1):
        case(f"cumsum_e{ex}_r{rv}", [h.make_node("CumSum", ["x", "a"], ["y"], exclusive=ex, reverse=rv)], {"x": x}, ["y"], [a])
case("tile", [h.make_node("Tile", ["x", "r"], ["y"])], {"x": x}, ["y"], [nh.from_array(np.array([2, 1, 3], np.int64), "r")])
case("trilu_up_k", [h.make_node("Trilu", ["x", "kk"], ["y"], upper=1)], {"x": x}, ["y"], [nh.from_array(np.array(-1, np.int64), "kk")])
case("trilu_low", [h.make_node("Trilu", ["x"], ["y"], upper=0)], {"x": x}, ["y"])
idx = np.array([0, -1, 3, -5, 2, 9], np.int64)
case("onehot_runtime_values", [h.make_node("OneHot", ["i", "d", "v"], ["y"], axis=0)], {"i": idx, "v": np.array([-2.0, 5.0], np.float32)}, ["y"], [nh.from_array(np.array(4, np.int64), "d")])
case("onehot_const_values", [h.make_node("OneHot", ["i", "d", "v"], ["y"], axis=-1)], {"i": idx.reshape(2, 3)}, ["y"], [nh.from_array(np.array(4, np.int64), "d"), nh.from_array(np.array([0, 1], np.int64), "v")])
ge_i = rng.integers(-4, 4, (3, 2, 5)).astype(np.int64)
case("gather_elements", [h.make_node("GatherElements", ["x", "i"], ["y"], axis=1)], {"x": x, "i": ge_i}, ["y"])
for r in ("none", "add", "mul", "max", "min"):
    case(f"scatter_elements_{r}", [h.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1, reduction=r)], {"x": x, "i": ge_i, "u": rng.standard_normal((3, 2, 5)).astype(np.float32)}, ["y"])
    ni = np.array([[[0, 1], [2, -1]], [[-3, 0], [0, 1]]], np.int64)
    case(f"scatter_nd_{r}", [h.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction=r)], {"x": x, "i": ni, "u": rng.standard_normal((2, 2, 5)).astype(np.float32)}, ["y"])
case("gather_nd_b1", [h.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)], {"x": x, "i": rng.integers(-4, 4, (3, 2, 1)).astype(np.int64)}, ["y"])
case("gather_nd_b0", [h.make_node("GatherND", ["x", "i"], ["y"])], {"x": x, "i": np.array([[0, 1, 2], [-1, -1, -1]], np.int64)}, ["y"])
case("mvn", [h.make_node("MeanVarianceNormalization", ["x"], ["y"], axes=[0, 2])], {"x": x}, ["y"])

print(f"{len(FAILED)} failed: {FAILED}" if FAILED else "all agree with ONNX Runtime")
sys.exit(1 if FAILED else 0)
