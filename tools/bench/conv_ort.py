#!/usr/bin/env python3
"""Convolution and pooling kernels: kiln against ONNX Runtime on the same ONNX files.

    /tmp/venv/bin/python tools/bench/conv_ort.py --kiln target/rel/release/kiln [--base OLD_KILN]
        [--threads 1 2] [--iters 200] [--only dw3x3 maxpool]

Writes each single-op model (seeded weights) to a temp folder, then for each thread count times
ONNX Runtime in-process (median of --iters runs after warm-up; intra-op threads = T, sequential
execution) and `kiln bench --json` (median), and prints one Markdown table row per model:
median ms of each system and kiln ÷ ORT. --base adds a column for an older kiln binary. --min adds
each system's fastest run and the ratio of those (on a loaded machine the minimum is the least
disturbed estimate; the medians stay the table's figures).
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


def conv(name, x, m, k, stride=1, pad=0, group=1, dil=1, relu6=False):
    """A Conv with bias; `relu6`: followed by Clip(0, 6) (MobileNet v2's activation, which kiln fuses
    into the conv as its epilogue)."""
    n, c, h, w = x
    rng = np.random.default_rng(1)
    wt = rng.uniform(-0.5, 0.5, (m, c // group, k, k)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, (m,)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["c" if relu6 else "y"], kernel_shape=[k, k],
                            strides=[stride, stride], pads=[pad] * 4, group=group, dilations=[dil, dil])
    inits = [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")]
    if relu6:
        clip = helper.make_node("Clip", ["c", "lo", "hi"], ["y"])
        inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
        node = [node, clip]
    return name, node, x, inits


def conv_res(name, x, m, stride=1, relu=True):
    """ResNet's last 1×1 of a block: a Conv with bias, + a residual input `r` of the output's shape,
    then Relu (kiln applies both as the conv stores its tiles)."""
    n, c, h, w = x
    name, node, x, inits = conv(name, x, m, 1, stride=stride)
    node.output[0] = "c"
    nodes = [node, helper.make_node("Add", ["c", "r"], ["s" if relu else "y"])]
    if relu:
        nodes.append(helper.make_node("Relu", ["s"], ["y"]))
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    return name, nodes, x, inits, {"r": (n, m, oh, ow)}


def dw_clip(name, x, k, stride=1):
    """MobileNet v2's depthwise step: a depthwise k×k conv (pad k/2) with bias, then Clip(0, 6)."""
    n, c, h, w = x
    name, node, x, inits = conv(name, x, c, k, stride=stride, pad=k // 2, group=c)
    node.output[0] = "t"
    lo, hi = numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")
    return name, [node, helper.make_node("Clip", ["t", "lo", "hi"], ["y"])], x, inits + [lo, hi]


def dw_act(name, x, k, stride=1, act="silu"):
    """EfficientNet's and MobileNet v3's depthwise steps: a depthwise k×k conv (pad k/2) with bias
    (a folded BatchNorm), then SiLU (Sigmoid and Mul), HardSwish or Relu."""
    n, c, h, w = x
    name, node, x, inits = conv(name, x, c, k, stride=stride, pad=k // 2, group=c)
    node.output[0] = "t"
    if act == "silu":
        tail = [helper.make_node("Sigmoid", ["t"], ["s"]), helper.make_node("Mul", ["t", "s"], ["y"])]
    elif act == "hardswish":
        tail = [helper.make_node("HardSwish", ["t"], ["y"])]
    else:
        tail = [helper.make_node("Relu", ["t"], ["y"])]
    return name, [node] + tail, x, inits


def pool(name, op, x, k, stride, pad, **attrs):
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, **attrs)
    return name, node, x, []


def global_pool(name, op, x):
    return name, helper.make_node(op, ["x"], ["y"]), x, []


CASES = [
    conv("dw3x3_64x56", (1, 64, 56, 56), 64, 3, pad=1, group=64),
    conv("dw7x7_64x56", (1, 64, 56, 56), 64, 7, pad=3, group=64),
    conv("dw3x3s2_96x112", (1, 96, 112, 112), 96, 3, stride=2, pad=1, group=96),
    conv("dw7x7_96x56", (1, 96, 56, 56), 96, 7, pad=3, group=96),
    pool("maxpool3x3s2_64x112", "MaxPool", (1, 64, 112, 112), 3, 2, 1),
    pool("maxpool2x2s2_64x56", "MaxPool", (1, 64, 56, 56), 2, 2, 0),
    pool("avgpool3x3s1_64x56", "AveragePool", (1, 64, 56, 56), 3, 1, 1, count_include_pad=0),
    pool("avgpool2x2s2_64x56", "AveragePool", (1, 64, 56, 56), 2, 2, 0, count_include_pad=0),
    pool("avgpool2x2s2cip_64x56", "AveragePool", (1, 64, 56, 56), 2, 2, 0, count_include_pad=1),
    pool("avgpool3x3s2cip_64x56", "AveragePool", (1, 64, 56, 56), 3, 2, 1, count_include_pad=1),
    global_pool("gap_512x7", "GlobalAveragePool", (1, 512, 7, 7)),
    global_pool("gap_1280x7", "GlobalAveragePool", (1, 1280, 7, 7)),
    # MobileNet v2 (224²)'s depthwise steps with their ReLU6: features.1, .2, .3, .14.
    dw_clip("dw3x3clip_32x112", (1, 32, 112, 112), 3),
    dw_clip("dw3x3s2clip_96x112", (1, 96, 112, 112), 3, stride=2),
    dw_clip("dw3x3clip_144x56", (1, 144, 56, 56), 3),
    dw_clip("dw3x3clip_576x14", (1, 576, 14, 14), 3),
    conv("conv1x1_256to64x56", (1, 256, 56, 56), 64, 1),
    conv("conv3x3_64x56", (1, 64, 56, 56), 64, 3, pad=1),
    conv("stem7x7s2_3x224", (1, 3, 224, 224), 64, 7, stride=2, pad=3),
    # Session 9 (issue 13): mobilenet_v2's small-K 1x1 expansions and stem, resnet50's small planes.
    conv("mnv2_1x1_16to96x112_relu6", (1, 16, 112, 112), 96, 1, relu6=True),
    conv("mnv2_1x1_24to144x56_relu6", (1, 24, 56, 56), 144, 1, relu6=True),
    conv("mnv2_stem3x3s2_3x224_relu6", (1, 3, 224, 224), 32, 3, stride=2, pad=1, relu6=True),
    conv("mnv2_1x1_320to1280x7_relu6", (1, 320, 7, 7), 1280, 1, relu6=True),
    conv("r50_3x3_256x14", (1, 256, 14, 14), 256, 3, pad=1),
    conv("r50_3x3_512x7", (1, 512, 7, 7), 512, 3, pad=1),
    conv("r50_1x1s2_1024to2048x14", (1, 1024, 14, 14), 2048, 1, stride=2),
    # Session 10 (issue 13): the stride-2 1x1 downsamples (the compact copy), the 1x1s on 7^2, and
    # the residual Add + Relu applied as the conv stores.
    conv("r50_1x1s2_256to512x56", (1, 256, 56, 56), 512, 1, stride=2),
    conv("r50_1x1_512to2048x7", (1, 512, 7, 7), 2048, 1),
    conv_res("r50_1x1res_64to256x56", (1, 64, 56, 56), 256),
    conv_res("r50_1x1res_256to1024x14", (1, 256, 14, 14), 1024),
    conv_res("r50_1x1res_512to2048x7", (1, 512, 7, 7), 2048),
    conv_res("r50_1x1s2res_256to512x56", (1, 256, 56, 56), 512, stride=2),
    # Session 12 (issue 13): efficientnet_b0's (96² input) depthwise steps with their SiLU, and
    # mobilenet_v3_small's (224²) with HardSwish or Relu.
    dw_act("effb0_dw3x3silu_32x48", (1, 32, 48, 48), 3),
    dw_act("effb0_dw3x3s2silu_96x48", (1, 96, 48, 48), 3, stride=2),
    dw_act("effb0_dw3x3silu_144x24", (1, 144, 24, 24), 3),
    dw_act("effb0_dw5x5s2silu_144x24", (1, 144, 24, 24), 5, stride=2),
    dw_act("effb0_dw5x5silu_240x12", (1, 240, 12, 12), 5),
    dw_act("effb0_dw5x5silu_672x6", (1, 672, 6, 6), 5),
    dw_act("mnv3s_dw3x3s2relu_16x112", (1, 16, 112, 112), 3, stride=2, act="relu"),
    dw_act("mnv3s_dw5x5s2hswish_96x28", (1, 96, 28, 28), 5, stride=2, act="hardswish"),
    dw_act("mnv3s_dw5x5hswish_240x14", (1, 240, 14, 14), 5, act="hardswish"),
]


def write(folder, case):
    name, node, x, inits = case[:4]
    extra = case[4] if len(case) > 4 else {}
    xi = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x))]
    xi += [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in extra.items()]
    yi = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(node if isinstance(node, list) else [node], name, xi, [yi], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m = onnx.shape_inference.infer_shapes(m)
    path = os.path.join(folder, name + ".onnx")
    onnx.save(m, path)
    return path, x


def time_ort(path, x, threads, iters):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    feed = {i.name: rng.uniform(-1, 1, i.shape).astype(np.float32) for i in s.get_inputs()}
    for _ in range(10):
        s.run(None, feed)
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        s.run(None, feed)
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t), min(t)


def time_kiln(binary, path, threads, iters):
    out = subprocess.run([binary, "bench", path, "--iters", str(iters), "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["median_ms"], r["min_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--base")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--min", action="store_true", help="add min-of-runs columns")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        head = "| model | threads | ORT ms | kiln ms | kiln ÷ ORT |"
        if a.base:
            head += " before ms | before ÷ ORT |"
        if a.min:
            head += " ORT min | kiln min | min ÷ ORT |" + (" before min | before min ÷ ORT |" if a.base else "")
        print(head)
        print("|" + "---|" * head.count(" |"))
        for case in CASES:
            if a.only and case[0] not in a.only:
                continue
            path, x = write(d, case)
            for t in a.threads:
                o, omin = time_ort(path, x, t, a.iters)
                k, kmin = time_kiln(a.kiln, path, t, a.iters)
                row = f"| {case[0]} | {t} | {o:.4f} | {k:.4f} | {k / o:.2f} |"
                if a.base:
                    b, bmin = time_kiln(a.base, path, t, a.iters)
                    row += f" {b:.4f} | {b / o:.2f} |"
                if a.min:
                    row += f" {omin:.4f} | {kmin:.4f} | {kmin / omin:.2f} |"
                    if a.base:
                        row += f" {bmin:.4f} | {bmin / omin:.2f} |"
                print(row, flush=True)


if __name__ == "__main__":
    main()
