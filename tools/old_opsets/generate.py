#!/usr/bin/env python3
"""Writes small old-opset (7–12) ONNX models with inputs and ONNX Runtime's outputs.

Each case is a model in the OLD opset exactly as an old exporter wrote it (attribute forms,
Softmax's 2-D coercion, BatchNormalization's `spatial`, Upsample, Resize-10, Dropout's mask, ...),
plus element-type cases (float16/bfloat16 weights, int32/uint8/float16 inputs and outputs),
so tests/old_opsets.rs checks kiln's upgrade at import against ONNX Runtime on the old model
itself, not against a converted one.

    /tmp/venv/bin/python tools/old_opsets/generate.py --out tests/old_opsets/data

writes OUT/<case>/model.onnx + input_N.pb + output_N.pb, and OUT/manifest.txt: one line per
case, `run CASE [tol=T]` (kiln must match ONNX Runtime), `refuse CASE TEXT` (kiln must refuse the
model with an error containing TEXT) or `either CASE TEXT` (one or the other: for what another
change is adding to kiln). Deterministic: seeded inputs, pinned
packages (tools/old_opsets/requirements.txt).
"""
from __future__ import annotations

import argparse
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def case(name, opset, nodes, inputs, outputs, inits=(), refuse=None, mask_kept=False, either=None, tol=None):
    """`mask_kept`: output 1 is a Dropout mask that the ONNX spec and reference fill with "kept"
    (ones/true) at inference, where ONNX Runtime's opset 7-11 Dropout (its IdentityOp) writes
    zeros; the expected mask is written as ones of ONNX Runtime's type, and kiln follows the spec."""
    return dict(name=name, opset=opset, nodes=nodes, inputs=inputs, outputs=outputs, inits=list(inits), refuse=refuse,
                mask_kept=mask_kept, either=either, tol=tol)


def vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def cases():
    rng = np.random.default_rng(0)
    x234 = vi("x", [2, 3, 4])
    x2345 = vi("x", [2, 3, 4, 5])
    yield case("softmax_7_default_axis", 7, [helper.make_node("Softmax", ["x"], ["y"])], [x234], [vi("y", None)])
    yield case("softmax_11_axis0", 11, [helper.make_node("Softmax", ["x"], ["y"], axis=0)], [x234], [vi("y", None)])
    yield case("softmax_12_axis2_last", 12, [helper.make_node("Softmax", ["x"], ["y"], axis=2)], [x234], [vi("y", None)])
    yield case("softmax_11_negative_axis", 11, [helper.make_node("Softmax", ["x"], ["y"], axis=-2)], [x2345], [vi("y", None)])
    yield case("logsoftmax_9_axis1", 9, [helper.make_node("LogSoftmax", ["x"], ["y"], axis=1)], [x2345], [vi("y", None)])
    yield case("unsqueeze_11_attr", 11, [helper.make_node("Unsqueeze", ["x"], ["y"], axes=[0, -1])], [x234], [vi("y", None)])
    yield case("squeeze_9_attr", 9, [helper.make_node("Squeeze", ["x"], ["y"], axes=[1])], [vi("x", [2, 1, 3])], [vi("y", None)])
    yield case("slice_9_attr", 9, [helper.make_node("Slice", ["x"], ["y"], starts=[1, 0], ends=[3, -1], axes=[2, 1])],
               [x234], [vi("y", None)])
    yield case("pad_10_attr_constant", 10, [helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 2, 0, 2, 1], value=1.5)],
               [x234], [vi("y", None)])
    yield case("pad_7_attr_reflect", 7, [helper.make_node("Pad", ["x"], ["y"], mode="reflect", pads=[0, 0, 1, 0, 0, 2])],
               [x234], [vi("y", None)])
    yield case("split_11_attr", 11, [helper.make_node("Split", ["x"], ["a", "b"], axis=2, split=[1, 3])],
               [x234], [vi("a", None), vi("b", None)])
    yield case("split_7_equal", 7, [helper.make_node("Split", ["x"], ["a", "b"], axis=2)],
               [x234], [vi("a", None), vi("b", None)])
    yield case("reducesum_12_attr", 12, [helper.make_node("ReduceSum", ["x"], ["y"], axes=[1], keepdims=0)],
               [x234], [vi("y", None)])
    yield case("reducemean_11_attr", 11, [helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1, 0])], [x234], [vi("y", None)])
    yield case("clip_10_attr", 10, [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.25)], [x234], [vi("y", None)])
    yield case("clip_7_min_only", 7, [helper.make_node("Clip", ["x"], ["y"], min=0.0)], [x234], [vi("y", None)])
    yield case("clip_11_inputs", 11, [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [x234], [vi("y", None)],
               [init("lo", np.float32(-0.3)), init("hi", np.float32(0.6))])
    c = 3
    bn_inits = [init("s", rng.uniform(0.5, 1.5, c).astype(np.float32)), init("b", rng.normal(size=c).astype(np.float32)),
                init("m", rng.normal(size=c).astype(np.float32)), init("v", rng.uniform(0.5, 2, c).astype(np.float32))]
    yield case("batchnorm_7_spatial", 7, [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                                           epsilon=1e-3, spatial=1)], [x2345], [vi("y", None)], bn_inits)
    shape = (3, 4, 5)
    bn0 = [init("s", rng.uniform(0.5, 1.5, shape).astype(np.float32)), init("b", rng.normal(size=shape).astype(np.float32)),
           init("m", rng.normal(size=shape).astype(np.float32)), init("v", rng.uniform(0.5, 2, shape).astype(np.float32))]
    yield case("batchnorm_7_per_activation", 7, [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                                                  spatial=0)], [x2345], [vi("y", None)], bn0)
    # Before opset 14, BatchNormalization with more than one output is training mode (the schema's
    # "output case #1"): batch statistics. kiln computes it only on constants (a weight), and refuses
    # it on run-time data.
    yield case("batchnorm_9_training_outputs_refused", 9,
               [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv", "", ""])],
               [x2345], [vi("y", None), vi("rm", None), vi("rv", None)], bn_inits, refuse="training")
    w_init = init("w", rng.normal(size=(4, 3, 2, 2)).astype(np.float32))
    for opset, bn in [
        (9, helper.make_node("BatchNormalization", ["w", "s", "b", "m", "v"], ["wn", "rm", "rv", "", ""], momentum=0.8)),
        (15, helper.make_node("BatchNormalization", ["w", "s", "b", "m", "v"], ["wn", "rm", "rv"], training_mode=1)),
    ]:
        yield case(f"batchnorm_{opset}_training_on_a_weight", opset,
                   [bn, helper.make_node("Add", ["x", "wn"], ["y"])],
                   [vi("x", [4, 3, 2, 2])], [vi("y", None), vi("rm", None), vi("rv", None)], bn_inits + [w_init])
    yield case("dropout_7_mask", 7, [helper.make_node("Dropout", ["x"], ["y", "mask"], ratio=0.3)], [x234],
               [vi("y", None), vi("mask", None)], mask_kept=True)
    yield case("dropout_10_mask", 10, [helper.make_node("Dropout", ["x"], ["y", "mask"], ratio=0.3)], [x234],
               [vi("y", None), vi("mask", None, TensorProto.BOOL)], mask_kept=True)
    yield case("dropout_12_ratio_input", 12, [helper.make_node("Dropout", ["x", "r"], ["y"], seed=3)], [x234],
               [vi("y", None)], [init("r", np.float32(0.2))])
    yield case("dropout_13_not_training", 13, [helper.make_node("Dropout", ["x", "r", "t"], ["y", "mask"])], [x234],
               [vi("y", None), vi("mask", None, TensorProto.BOOL)], [init("r", np.float32(0.2)), init("t", np.bool_(False))])
    x4 = vi("x", [1, 2, 3, 4])
    yield case("upsample_7_nearest", 7, [helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 3.0])],
               [x4], [vi("y", None)])
    yield case("upsample_9_nearest_fractional", 9, [helper.make_node("Upsample", ["x", "sc"], ["y"], mode="nearest")],
               [x4], [vi("y", None)], [init("sc", np.array([1, 1, 1.5, 2.5], np.float32))])
    # Linear Resize is being added to kiln's IR separately: until it lands kiln refuses this naming
    # "linear"; after, it must match ONNX Runtime (`either`).
    yield case("upsample_9_linear", 9, [helper.make_node("Upsample", ["x", "sc"], ["y"], mode="linear")],
               [x4], [vi("y", None)], [init("sc", np.array([1, 1, 2, 2], np.float32))], either="linear")
    yield case("resize_10_linear", 10, [helper.make_node("Resize", ["x", "sc"], ["y"], mode="linear")],
               [x4], [vi("y", None)], [init("sc", np.array([1, 1, 2, 1.5], np.float32))], either="linear")
    # Element types (opset 17): float16/bfloat16 weights, narrow integer and float16 inputs and
    # outputs. kiln widens them when reading (float16 -> f32, int32/uint8 -> int64) and computes in
    # f32; ONNX Runtime computes float16 ops in float16, so those cases allow float16's rounding.
    rng16 = np.random.default_rng(16)
    w16 = rng16.normal(size=(4, 3)).astype(np.float16)
    yield case("types_float16_weight_cast", 17,
               [helper.make_node("Cast", ["w"], ["wf"], to=F), helper.make_node("MatMul", ["x", "wf"], ["y"])],
               [vi("x", [2, 4])], [vi("y", None)], [init("w", w16)])
    wb = helper.make_tensor("w", TensorProto.BFLOAT16, [4, 3],
                            np.frombuffer(rng16.normal(size=(4, 3)).astype(np.float32).tobytes(), np.uint32)
                            .__rshift__(16).astype(np.uint16).tobytes(), raw=True)
    yield case("types_bfloat16_weight_cast", 17,
               [helper.make_node("Cast", ["w"], ["wf"], to=F), helper.make_node("MatMul", ["x", "wf"], ["y"])],
               [vi("x", [2, 4])], [vi("y", None)], [wb])
    yield case("types_int32_input", 17,
               [helper.make_node("Cast", ["x"], ["xf"], to=F), helper.make_node("Mul", ["xf", "k"], ["y"]),
                helper.make_node("Add", ["x", "x"], ["y2"])],
               [vi("x", [2, 3], TensorProto.INT32)], [vi("y", None), vi("y2", None, TensorProto.INT32)],
               [init("k", np.float32(0.5))])
    yield case("types_uint8_image_input", 17,
               [helper.make_node("Cast", ["x"], ["xf"], to=F), helper.make_node("Div", ["xf", "k"], ["y"])],
               [vi("x", [1, 3, 2, 2], TensorProto.UINT8)], [vi("y", None)], [init("k", np.float32(255.0))])
    yield case("types_float16_input_output", 17,
               [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "b"], ["y"])],
               [vi("x", [2, 3], TensorProto.FLOAT16)], [vi("y", None, TensorProto.FLOAT16)],
               [init("b", rng16.normal(size=3).astype(np.float16))], tol=1e-3)
    yield case("resize_10_nearest_up", 10, [helper.make_node("Resize", ["x", "sc"], ["y"], mode="nearest")],
               [x4], [vi("y", None)], [init("sc", np.array([1, 1, 2, 1.5], np.float32))])
    yield case("resize_10_nearest_down", 10, [helper.make_node("Resize", ["x", "sc"], ["y"])],
               [vi("x", [1, 2, 5, 7])], [vi("y", None)], [init("sc", np.array([1, 1, 0.6, 0.5], np.float32))])
    # A small opset-9 CNN in the light models' style: weights made by ConstantOfShape from an int64
    # shape, Conv, BatchNormalization, Relu, Reshape, Gemm, Dropout, Softmax (coerced to 2-D).
    w = vi("x", [1, 3, 8, 8])
    nodes = [
        helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=helper.make_tensor("v", F, [1], [0.05])),
        helper.make_node("Conv", ["x", "w", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "s4", "b4", "m4", "v4"], ["bn"], epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Dropout", ["r"], ["d"], ratio=0.5),
        helper.make_node("Reshape", ["d", "flat"], ["f"]),
        helper.make_node("Gemm", ["f", "fcw", "fcb"], ["g"], transB=1),
        helper.make_node("Softmax", ["g"], ["y"]),
    ]
    inits = [init("wshape", np.array([4, 3, 3, 3], np.int64)), init("cb", rng.normal(size=4).astype(np.float32)),
             init("s4", rng.uniform(0.5, 1.5, 4).astype(np.float32)), init("b4", rng.normal(size=4).astype(np.float32)),
             init("m4", rng.normal(size=4).astype(np.float32) * 0.1), init("v4", rng.uniform(0.5, 2, 4).astype(np.float32)),
             init("flat", np.array([1, -1], np.int64)), init("fcw", rng.normal(size=(10, 64)).astype(np.float32) * 0.1),
             init("fcb", rng.normal(size=10).astype(np.float32))]
    yield case("small_cnn_9", 9, nodes, [w], [vi("y", None)], inits)


def build(c):
    graph = helper.make_graph(c["nodes"], c["name"], c["inputs"], c["outputs"], c["inits"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", c["opset"])], producer_name="kiln-old-opsets")
    model.ir_version = 7
    # ONNX Runtime validates the model when it loads it (output shapes are left to its inference).
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    manifest = ["# Generated by tools/old_opsets/generate.py (onnx %s, onnxruntime %s)." % (onnx.__version__, ort.__version__)]
    for seed, c in enumerate(cases()):
        model = build(c)
        d = os.path.join(args.out, c["name"])
        os.makedirs(d)
        onnx.save(model, os.path.join(d, "model.onnx"))
        rng = np.random.default_rng(1000 + seed)
        feeds = {}
        for j, i in enumerate(c["inputs"]):
            shape = [dim.dim_value for dim in i.type.tensor_type.shape.dim]
            elem = i.type.tensor_type.elem_type
            if elem in (TensorProto.INT32, TensorProto.UINT8):
                feeds[i.name] = rng.integers(0, 256, size=shape).astype(onnx.helper.tensor_dtype_to_np_dtype(elem))
            else:
                feeds[i.name] = rng.normal(size=shape).astype(onnx.helper.tensor_dtype_to_np_dtype(elem))
            with open(os.path.join(d, f"input_{j}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(feeds[i.name], i.name).SerializeToString())
        if c["refuse"] is None:
            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            outs = sess.run(None, feeds)
            if c["mask_kept"]:
                outs[1] = np.ones_like(outs[1])
            for j, (o, value) in enumerate(zip(c["outputs"], outs)):
                with open(os.path.join(d, f"output_{j}.pb"), "wb") as f:
                    f.write(numpy_helper.from_array(np.asarray(value), o.name).SerializeToString())
            if c["either"] is not None:
                manifest.append(f"either {c['name']} {c['either']}")
            elif c["tol"] is not None:
                manifest.append(f"run {c['name']} tol={c['tol']}")
            else:
                manifest.append(f"run {c['name']}")
        else:
            manifest.append(f"refuse {c['name']} {c['refuse']}")
    with open(os.path.join(args.out, "manifest.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
