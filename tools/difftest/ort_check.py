#!/usr/bin/env python3
"""Cross-checks differential-tester cases against ONNX Runtime.

    cargo run -p kiln-difftest -- --dump --graphs 2000 --seed 0 --out /tmp/cases
    python tools/difftest/ort_check.py /tmp/cases/seed-*

Each case folder holds model.json (kiln JSON), input<i>.npy (in the model's input order) and
expected/<output>.npy (kiln's interpreter). The model is converted to ONNX opset 18 by the zoo's
writer (tools/zoo/zoo/graph.py, the same lowering as the zoo's ONNX twins), run on ONNX Runtime's
CPU provider with graph optimizations off and one thread, and compared with the interpreter:
|ort - kiln| <= 1e-4 * max(1, max|kiln|) + 1e-3 * |kiln| (difftest's -O0 tolerance; ORT computes in
f32 like kiln's JIT), NaN equal to NaN, infinities equal to themselves, integers and bools exact.
As in difftest, f32 values are not compared when an input, weight or output holds a finite value
of magnitude >= 1e18.

Cases the writer cannot express (kiln-domain MaskedSoftmax and Attention, Resize with sizes, norms
over other than the last axis, ...) and models ONNX Runtime refuses are counted as skipped, with the
reason. Exit status 1 if any case disagrees.
"""

import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "zoo"))

from onnx import TensorProto, helper  # noqa: E402
from zoo.graph import Graph  # noqa: E402
from zoo.params import Params  # noqa: E402

ATOL, RTOL, HUGE = 1e-4, 1e-3, 1e18
NP = {"f32": np.float32, "i64": np.int64, "bool": np.bool_}
ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
             np.dtype(np.bool_): TensorProto.BOOL}  # fmt: skip


def weight_array(w):
    dtype = NP[w.get("dtype", "f32")]
    data = [float(v) if isinstance(v, str) else v for v in w["data"]]
    return np.array(data, dtype=dtype).reshape(w["shape"])


def to_onnx(doc, expected):
    params = Params(0, True)
    g = Graph(doc["name"], params)
    for w in doc["weights"]:
        # Not params.data: np.ascontiguousarray makes a scalar weight [1].
        params.arrays[w["name"]] = weight_array(w)
        params.specs[w["name"]] = {"data": True}
    for i in doc["inputs"]:
        g.input(i["name"], i["shape"], i.get("dtype", "f32"))
    for n in doc["nodes"]:
        g.nodes.append({"name": n["name"], "op": n["op"], "inputs": n["inputs"], "outputs": n["outputs"],
                        "attrs": dict(n.get("attributes", {}))})  # fmt: skip
    g.outputs = list(doc["outputs"])
    model = g.to_onnx({o: expected[o].shape for o in g.outputs})
    # The zoo's writer passes only keepdims to reductions.
    noop = {n["name"] for n in doc["nodes"] if n["op"].startswith("Reduce") and n.get("attributes", {}).get("noop_with_empty_axes")}
    for node in model.graph.node:
        if node.name in noop:
            node.attribute.append(helper.make_attribute("noop_with_empty_axes", 1))
    for o in model.graph.output:
        o.type.tensor_type.elem_type = ONNX_TYPE[expected[o.name].dtype]
    return model


def huge(arrays):
    return any(a.dtype == np.float32 and np.any(np.isfinite(a) & (np.abs(a) >= HUGE)) for a in arrays)


def compare(got, want, skip_f32, casts_to_i64=False):
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"
    if want.dtype != np.float32:
        g, w = got.reshape(-1), want.reshape(-1)
        differ = g != w
        if casts_to_i64 and g.dtype == np.int64:
            # A Cast of NaN, ±inf or an out-of-range float to i64 is undefined in ONNX: ONNX
            # Runtime gives INT64_MIN (x86's "integer indefinite"), kiln saturates (docs/ops.md).
            differ &= g != np.iinfo(np.int64).min
        bad = np.flatnonzero(differ)
    elif skip_f32:
        return None
    else:
        g, w = got.reshape(-1).astype(np.float64), want.reshape(-1).astype(np.float64)
        finite = np.isfinite(w)
        scale = max(1.0, float(np.abs(w[finite]).max()) if finite.any() else 1.0)
        with np.errstate(invalid="ignore"):
            ok = np.where(np.isnan(w), np.isnan(g),
                          np.where(np.isinf(w) | ~np.isfinite(g), g == w, np.abs(g - w) <= ATOL * scale + RTOL * np.abs(w)))  # fmt: skip
        bad = np.flatnonzero(~ok)
    if len(bad) == 0:
        return None
    i = bad[0]
    return f"{len(bad)} of {want.size} differ; element {i}: ort {got.reshape(-1)[i]}, kiln {want.reshape(-1)[i]}"


def check(folder, ort, opts):
    doc = json.load(open(os.path.join(folder, "model.json")))
    inputs = {i["name"]: np.load(os.path.join(folder, f"input{k}.npy")) for k, i in enumerate(doc["inputs"])}
    expected = {o: np.load(os.path.join(folder, "expected", f"{o}.npy")) for o in doc["outputs"]}
    if any(n["op"] == "GroupNormalization" for n in doc["nodes"]):
        # The zoo's writer lowers GroupNormalization for rank-4 inputs only, and a case does not
        # record the ranks of its intermediates.
        return "skip", "no ONNX form: GroupNormalization (the zoo writer needs rank 4)"
    try:
        model = to_onnx(doc, expected)
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except (NotImplementedError, AssertionError, KeyError) as e:
        return "skip", f"no ONNX form: {type(e).__name__} {e}"
    except Exception as e:  # ONNX Runtime refuses the model
        return "skip", f"onnxruntime refuses: {str(e).splitlines()[0][:160]}"
    try:
        got = sess.run(None, inputs)
    except Exception as e:
        return "error", f"onnxruntime fails: {str(e).splitlines()[0][:200]}"
    skip_f32 = huge(list(inputs.values()) + [weight_array(w) for w in doc["weights"]] + list(expected.values()))
    for name, g in zip(doc["outputs"], got):
        # i64 Pow can overflow too (undefined in ONNX): ONNX Runtime computes it in double and
        # converts, giving INT64_MIN; kiln wraps. Both get the same exemption.
        casts = any(
            (n["op"] == "Cast" and n.get("attributes", {}).get("to") in ("i64", "int64", 7)) or n["op"] == "Pow"
            for n in doc["nodes"]
        )
        why = compare(np.asarray(g), expected[name], skip_f32, casts)
        if why:
            ops = " ".join(n["op"] for n in doc["nodes"])
            return "differ", f"output {name}: {why} [{ops}]"
    return "ok", ""


def main():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    counts, reasons = collections.Counter(), collections.Counter()
    for folder in sys.argv[1:]:
        status, why = check(folder, ort, opts)
        counts[status] += 1
        if status == "skip":
            reasons[why.split(":")[0] + ": " + why.split(":")[1][:60]] += 1
        elif status != "ok":
            print(f"{status.upper()} {folder}: {why}")
    for why, n in reasons.most_common(12):
        print(f"  skipped {n}: {why}")
    print(f"ort_check: {sum(counts.values())} cases: {counts['ok']} agree, {counts['differ']} differ, "
          f"{counts['error']} ORT errors, {counts['skip']} skipped")  # fmt: skip
    return 1 if counts["differ"] or counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
