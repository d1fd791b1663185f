#!/usr/bin/env python3
"""Generates the ONNX backend node tests for every op kiln imports.

The `onnx` wheel does not ship the node test data, only the code that makes it
(onnx.backend.test.case.node); this script runs that code for the op types kiln
claims and writes each case, as onnx's own `backend-test-tools generate-data`
does, to OUT/<case>/model.onnx + OUT/<case>/test_data_set_0/{input,output}_N.pb.
The "_expanded" variants (the op written out as its function body) are included.

    pip install -r tools/onnx_node/requirements.txt
    python3 tools/onnx_node/generate.py --out /tmp/onnx_node_all --cases tests/onnx_node/cases.txt
    # classify with the Rust runner (KILN_ONNX_NODE_SURVEY), write tests/onnx_node/allowlist.txt, then
    python3 tools/onnx_node/generate.py --out tests/onnx_node/data --only-allowlisted tests/onnx_node/allowlist.txt

`--cases` writes the list of every generated case name: the Rust test checks that
the allowlist names each one (run, or skip with a reason).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import warnings

import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node as node_cases

# The default-domain op types kiln imports: keep in sync with ONNX_OPS in
# frontends/src/onnx/lower.rs (the Rust test checks cases.txt against the allowlist). The load-time
# ops (Shape, Range, ...) are not listed: their own tests feed them run-time inputs, which kiln
# cannot evaluate; they are exercised by the "_expanded" cases instead.
KILN_OPS = {
    "Abs", "Add", "Attention", "BatchNormalization", "Cast", "CastLike", "Clip", "Concat", "Constant", "Conv",
    "Div", "Dropout", "Equal", "Erf", "Exp", "Expand", "Flatten", "Gather", "Gelu", "Gemm", "Greater", "GroupNormalization",
    "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Less", "Log", "LogSoftmax",
    "MatMul", "Max", "Min", "Mul", "Neg", "Pad", "Pow", "RMSNormalization", "Reciprocal", "ReduceL2",
    "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "Selu", "Sigmoid", "Slice",
    "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Swish", "Tanh", "Transpose", "Unsqueeze", "Upsample", "Where",
}

# Issue 12: reductions, index and data-movement ops (frontends/src/onnx/data_ops.rs, its own OPS list).
KILN_OPS |= {
    "ArgMax", "ArgMin", "CumSum", "GatherElements", "GatherND", "MeanVarianceNormalization", "OneHot", "ReduceL1",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceMin", "ReduceProd", "ReduceSumSquare", "Scatter", "ScatterElements",
    "ScatterND", "Tile", "TopK", "Trilu",
}

# Spatial ops (frontends/src/onnx/spatial.rs).
KILN_OPS |= {
    "AveragePool", "ConvTranspose", "DepthToSpace", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "LRN",
    "LpPool", "MaxPool", "SpaceToDepth",
}
# Elementwise ops of issue 12.
KILN_OPS |= {
    "Acos", "Acosh", "And", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Celu", "Cos", "Cosh", "Einsum", "Elu",
    "Floor", "GreaterOrEqual", "HardSigmoid", "HardSwish", "IsInf", "IsNaN", "LessOrEqual", "Mean", "Mish",
    "Mod", "Not", "Or", "PRelu", "Round", "Shrink", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Tan",
    "ThresholdedRelu", "Xor",
}

EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


def write_tensor(path: str, value, info: onnx.ValueInfoProto) -> None:
    # As onnx's own generate-data: sequences and optionals have their own protos.
    if info.type.HasField("sequence_type"):
        proto = numpy_helper.from_list(value, info.name)
    elif info.type.HasField("optional_type"):
        proto = numpy_helper.from_optional(value, info.name)
    elif isinstance(value, onnx.TensorProto):
        proto = onnx.TensorProto()
        proto.CopyFrom(value)
        proto.name = proto.name or info.name
    else:
        proto = numpy_helper.from_array(value, info.name)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def write_case(case, out_dir: str) -> None:
    case_dir = os.path.join(out_dir, case.name)
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    data_dir = os.path.join(case_dir, "test_data_set_0")
    os.makedirs(data_dir)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    inputs, outputs = case.data_sets[0]
    graph = case.model.graph
    for j, value in enumerate(inputs):
        write_tensor(os.path.join(data_dir, f"input_{j}.pb"), value, graph.input[j])
    for j, value in enumerate(outputs):
        write_tensor(os.path.join(data_dir, f"output_{j}.pb"), value, graph.output[j])


def claimed_cases():
    cases = node_cases.collect_testcases()
    # The op a case tests is that of its one-node (unexpanded) model.
    op_of = {c.name: c.model.graph.node[0].op_type for c in cases if not EXPANDED.search(c.name)}
    for c in cases:
        base = EXPANDED.sub("", c.name)
        if op_of.get(base) in KILN_OPS:
            yield c


def main() -> int:
    warnings.simplefilter("ignore")  # numpy overflow warnings from unrelated ops' case code
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory to write the cases into")
    parser.add_argument("--cases", help="write the names of all claimed cases to this file")
    parser.add_argument("--only-allowlisted", metavar="ALLOWLIST", help="write only the cases this allowlist runs")
    args = parser.parse_args()

    wanted = None
    if args.only_allowlisted:
        wanted = set()
        with open(args.only_allowlisted) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "run":
                    wanted.add(parts[1])
    cases = sorted(claimed_cases(), key=lambda c: c.name)
    if args.cases:
        with open(args.cases, "w") as f:
            f.write(f"# Every ONNX backend node test case of an op kiln imports (onnx {onnx.__version__}).\n")
            f.write("# Generated by tools/onnx_node/generate.py; the allowlist must name each one.\n")
            for c in cases:
                f.write(c.name + "\n")
    if wanted is not None:
        if os.path.exists(args.out):
            shutil.rmtree(args.out)
        missing = wanted - {c.name for c in cases}
        if missing:
            print(f"allowlisted cases onnx does not generate: {sorted(missing)}", file=sys.stderr)
            return 1
    os.makedirs(args.out, exist_ok=True)
    n = 0
    for c in cases:
        if wanted is None or c.name in wanted:
            write_case(c, args.out)
            n += 1
    print(f"wrote {n} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
