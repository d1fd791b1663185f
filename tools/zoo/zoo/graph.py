"""One graph description, two twins: the kiln JSON node list and a standard-ONNX model.

Model code calls `Graph.op(...)` with kiln op names and kiln attributes (static parameters such as
Reshape's shape are attributes, see docs/model-format.md). `to_kiln_json` writes them as they are;
`to_onnx` lowers each node to opset-18 ONNX: static parameters become constant initializer inputs,
and ops ONNX-18 lacks (Silu, Gelu, RMSNormalization, opset-21 GroupNormalization and the kiln-domain
norms) are expanded into standard ops. Attribute keys starting with `_` are hints for that lowering
(a tensor's rank, say) and are not written to the kiln JSON.

The graph is never evaluated here: goldens come from separate numpy code in zoo.models.
"""

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_OPSET = 18

_DTYPES = {"f32": TensorProto.FLOAT, "i64": TensorProto.INT64, "bool": TensorProto.BOOL}

# Ops whose kiln attributes are exactly ONNX-18 attributes.
_PASSTHROUGH = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Where", "Identity",
    "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Tanh", "Erf", "Sigmoid", "Relu", "Sin", "Cos",
    "LeakyRelu", "Selu", "MatMul", "Gemm", "Conv", "BatchNormalization", "LayerNormalization",
    "InstanceNormalization", "Softmax", "LogSoftmax", "Transpose", "Concat", "Gather", "Flatten",
}  # fmt: skip


class Graph:
    def __init__(self, name, params):
        self.name = name
        self.params = params
        self.inputs = []  # (name, dtype, shape)
        self.outputs = []
        self.nodes = []  # dict(name, op, inputs, outputs, attrs)
        self._names = set()
        self._scope = []
        self._count = {}

    # --- building -------------------------------------------------------------------------------

    def input(self, name, shape, dtype="f32"):
        self._claim(name)
        self.inputs.append((name, dtype, list(shape)))
        return name

    def scope(self, name):
        graph = self

        class _Scope:
            def __enter__(self):
                graph._scope.append(name)

            def __exit__(self, *exc):
                graph._scope.pop()

        return _Scope()

    def _claim(self, name):
        if name in self._names or name in self.params.arrays:
            raise ValueError(f"name {name} used twice")
        self._names.add(name)

    def _fresh(self, base):
        prefix = ".".join(self._scope + [base])
        while True:
            n = self._count.get(prefix, 0)
            self._count[prefix] = n + 1
            name = prefix if n == 0 else f"{prefix}_{n}"
            if name not in self._names and name not in self.params.arrays:
                return name

    def op(self, op, inputs, name=None, nout=1, **attrs):
        """Adds a node; returns its output name (or list of names when nout > 1)."""
        for i in inputs:
            if i not in self._names and i not in self.params.arrays:
                raise ValueError(f"{op}: unknown input {i}")
        name = self._fresh(name or op.lower())
        self._claim(name)
        outs = [name] if nout == 1 else [f"{name}.{k}" for k in range(nout)]
        for o in outs[1:] if nout == 1 else outs:
            self._claim(o)
        self.nodes.append({"name": name, "op": op, "inputs": list(inputs), "outputs": outs, "attrs": attrs})
        return outs[0] if nout == 1 else outs

    def output(self, *names):
        self.outputs.extend(names)

    def output_as(self, name, tensor):
        """Marks `tensor` as the graph output `name` (through an Identity node if it is named otherwise)."""
        if tensor != name:
            tensor = self.op("Identity", [tensor], name=name)
            assert tensor == name, f"{name} is taken"
        self.outputs.append(tensor)

    # convenience wrappers used across the models
    def linear(self, x, w, b=None, name="linear"):
        """x[..., in] @ W[in, out] + b (weights are stored input-major, so no transpose is needed)."""
        if b is None:
            return self.op("MatMul", [x, w], name=name)
        y = self.op("MatMul", [x, w], name=name + ".matmul")
        return self.op("Add", [y, b], name=name)

    def scalar(self, value):
        """A shared one-element f32 constant (shape [1], broadcasts against anything)."""
        name = "const." + _f32_text(value)
        if name not in self.params.arrays:
            self.params.data(name, np.array([value], dtype=np.float32))
        return name

    # --- kiln JSON ------------------------------------------------------------------------------

    def to_kiln_json(self, safetensors_file=None):
        used = set()
        for n in self.nodes:
            used.update(n["inputs"])
        used.update(self.outputs)
        weights = [self.params.entry(w) for w in self.params.arrays if w in used]
        doc = {"format": "kiln", "version": 1, "name": self.name}
        doc["inputs"] = [_input_entry(n, d, s) for n, d, s in self.inputs]
        doc["outputs"] = list(self.outputs)
        if safetensors_file is not None and any("safetensors" in w for w in weights):
            doc["safetensors"] = safetensors_file
        doc["weights"] = weights
        doc["nodes"] = [_node_entry(n) for n in self.nodes]
        return dumps(doc) + "\n"

    def used_weights(self):
        used = set()
        for n in self.nodes:
            used.update(n["inputs"])
        used.update(self.outputs)
        return [w for w in self.params.arrays if w in used]

    # --- ONNX -----------------------------------------------------------------------------------

    def to_onnx(self, output_shapes=None):
        ctx = _OnnxCtx(self)
        for n in self.nodes:
            ctx.lower(n)
        inits = [numpy_helper.from_array(self.params.arrays[w], w) for w in self.used_weights()]
        inits += ctx.consts
        ins = [helper.make_tensor_value_info(n, _DTYPES[d], s) for n, d, s in self.inputs]
        outs = []
        for o in self.outputs:
            shape = None if output_shapes is None else list(output_shapes[o])
            outs.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, shape))
            if shape is None:
                outs[-1].type.tensor_type.ClearField("shape")
        graph = helper.make_graph(ctx.nodes, self.name, ins, outs, inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="kiln-zoo", ir_version=8
        )
        if output_shapes is None:
            # Benchmark models have no golden to read output shapes from: let ONNX infer them.
            inferred = onnx.shape_inference.infer_shapes(model)
            known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
            for o in model.graph.output:
                o.type.CopyFrom(known[o.name].type)
        return model


def _input_entry(name, dtype, shape):
    e = {"name": name}
    if dtype != "f32":
        e["dtype"] = dtype
    e["shape"] = shape
    return e


def _node_entry(n):
    e = {"name": n["name"], "op": n["op"], "inputs": n["inputs"], "outputs": n["outputs"]}
    attrs = {k: v for k, v in n["attrs"].items() if not k.startswith("_")}
    if attrs:
        e["attributes"] = attrs
    return e


# --- deterministic JSON: one weight / node per line, floats as the shortest f32 text -------------


def _f32_text(v):
    v = np.float32(v)
    if not np.isfinite(v):
        raise ValueError("non-finite float in a model file")
    s = np.format_float_positional(v, unique=True, trim="0")
    if len(s) > 14:
        s = np.format_float_scientific(v, unique=True, trim="0")
    if s.endswith("."):
        s += "0"
    return s


def _scalar(v):
    if isinstance(v, bool) or isinstance(v, np.bool_):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _f32_text(v)
    if isinstance(v, str):
        import json

        return json.dumps(v, ensure_ascii=False)
    if v is None:
        return "null"
    raise TypeError(type(v))


def _flat(v):
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {_flat(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_flat(x) for x in v) + "]"
    return _scalar(v)


def dumps(doc):
    lines = ["{"]
    items = list(doc.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        if isinstance(v, list) and v and isinstance(v[0], dict):
            lines.append(f"  {_scalar(k)}: [")
            for j, x in enumerate(v):
                lines.append("    " + _flat(x) + ("," if j + 1 < len(v) else ""))
            lines.append("  ]" + comma)
        else:
            lines.append(f"  {_scalar(k)}: {_flat(v)}{comma}")
    lines.append("}")
    return "\n".join(lines)


# --- lowering to ONNX opset 18 -------------------------------------------------------------------


class _OnnxCtx:
    def __init__(self, graph):
        self.g = graph
        self.nodes = []
        self.consts = []
        self._n = 0

    def tmp(self, base):
        self._n += 1
        return f"_onnx.{base}.{self._n}"

    def const(self, array, base="c"):
        name = self.tmp(base)
        self.consts.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def i64(self, values):
        return self.const(np.array(values, dtype=np.int64), "i64")

    def f32(self, value):
        return self.const(np.array(value, dtype=np.float32), "f32")

    def add(self, op, inputs, outputs=None, name=None, **attrs):
        outputs = outputs or [self.tmp(op.lower())]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name or self.tmp(op), **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def lower(self, n):
        op, ins, outs, a = n["op"], n["inputs"], n["outputs"], dict(n["attrs"])
        hints = {k: a.pop(k) for k in list(a) if k.startswith("_")}
        name = n["name"]
        if op in _PASSTHROUGH:
            self.add(op, ins, outs, name, **a)
        elif op == "Cast":
            self.add("Cast", ins, outs, name, to=_DTYPES[a["to"]])
        elif op == "Silu":
            s = self.add("Sigmoid", ins)
            self.add("Mul", [ins[0], s], outs, name)
        elif op == "Gelu":
            x = ins[0]
            if a.get("approximate", "none") == "tanh":
                x3 = self.add("Mul", [self.add("Mul", [x, x]), x])
                inner = self.add("Add", [x, self.add("Mul", [x3, self.f32(0.044715)])])
                t = self.add("Tanh", [self.add("Mul", [inner, self.f32(math.sqrt(2.0 / math.pi))])])
            else:
                t = self.add("Erf", [self.add("Mul", [x, self.f32(1.0 / math.sqrt(2.0))])])
            half_x = self.add("Mul", [x, self.f32(0.5)])
            self.add("Mul", [half_x, self.add("Add", [t, self.f32(1.0)])], outs, name)
        elif op == "Clip":
            lo = self.f32(a["min"]) if "min" in a else ""
            hi = self.f32(a["max"]) if "max" in a else ""
            self.add("Clip", [ins[0], lo, hi], outs, name)
        elif op == "Pad":
            self.add(
                "Pad",
                [ins[0], self.i64(a["pads"]), self.f32(a.get("value", 0.0))],
                outs,
                name,
                mode=a.get("mode", "constant"),
            )
        elif op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2"):
            extra = [self.i64(a["axes"])] if "axes" in a else []
            self.add(op, ins + extra, outs, name, keepdims=a.get("keepdims", 1))
        elif op == "Reshape":
            self.add("Reshape", [ins[0], self.i64(a["shape"])], outs, name, allowzero=a.get("allowzero", 0))
        elif op == "Expand":
            self.add("Expand", [ins[0], self.i64(a["shape"])], outs, name)
        elif op in ("Unsqueeze", "Squeeze"):
            extra = [self.i64(a["axes"])] if "axes" in a else []
            self.add(op, ins + extra, outs, name)
        elif op == "Slice":
            extra = [self.i64(a["starts"]), self.i64(a["ends"])]
            if "axes" in a or "steps" in a:
                extra.append(self.i64(a["axes"]) if "axes" in a else "")
            if "steps" in a:
                extra.append(self.i64(a["steps"]))
            self.add("Slice", ins + extra, outs, name)
        elif op == "Split":
            if "split" in a:
                self.add("Split", [ins[0], self.i64(a["split"])], outs, name, axis=a.get("axis", 0))
            else:
                self.add("Split", ins, outs, name, axis=a.get("axis", 0), num_outputs=a["num_outputs"])
        elif op == "Resize":
            assert "scales" in a, "only Resize with scales is used by the zoo"
            scales = self.const(np.array(a["scales"], dtype=np.float32), "scales")
            # The zoo itself only uses nearest; the differential tester's cases (ort_check.py) also
            # write linear/cubic Resize, whose attributes must reach ONNX Runtime too.
            roi = self.const(np.array(a["roi"], dtype=np.float32), "roi") if "roi" in a else ""
            extra = {k: a[k] for k in ("cubic_coeff_a", "exclude_outside", "extrapolation_value") if k in a}
            self.add(
                "Resize",
                [ins[0], roi, scales],
                outs,
                name,
                mode=a.get("mode", "nearest"),
                coordinate_transformation_mode=a.get("coordinate_transformation_mode", "half_pixel"),
                nearest_mode=a.get("nearest_mode", "round_prefer_floor"),
                **extra,
            )
        elif op == "RMSNormalization":
            assert a.get("axis", -1) == -1
            x, scale = ins
            ms = self.add("ReduceMean", [self.add("Mul", [x, x]), self.i64([-1])], keepdims=1)
            inv = self.add("Reciprocal", [self.add("Sqrt", [self.add("Add", [ms, self.f32(a.get("epsilon", 1e-5))])])])
            self.add("Mul", [self.add("Mul", [x, inv]), scale], outs, name)
        elif op == "GroupNormalization":
            self._group_norm(ins, outs, name, a, hints)
        elif op == "UnifiedNorm":
            assert a.get("axis", -1) == -1
            x, scale, bias, rv = ins
            k = self._affine_scale(scale, rv, a.get("epsilon", 1e-5))
            self.add("Add", [self.add("Mul", [x, k]), bias], outs, name)
        elif op == "PowerNorm":
            self._power_norm(ins, outs, name, a, hints)
        elif op == "EvoNormS0":
            self._evonorm_s0(ins, outs, name, a)
        elif op == "EvoNormB0":
            self._evonorm_b0(ins, outs, name, a)
        elif op == "RegionNorm":
            self._region_norm(ins, outs, name, a, hints)
        else:
            raise NotImplementedError(f"no ONNX lowering for {op}")

    def _affine_scale(self, scale, var, eps):
        """scale / √(var + eps)."""
        return self.add("Div", [scale, self.add("Sqrt", [self.add("Add", [var, self.f32(eps)])])])

    def _chan(self, v):
        """A per-channel [C] vector as [C, 1, 1] for NCHW broadcasting."""
        return self.add("Unsqueeze", [v, self.i64([1, 2])])

    def _group_norm(self, ins, outs, name, a, hints):
        # Opset-21 semantics (per-channel affine), which opset 18's GroupNormalization lacks:
        # instance-normalise [N, G, rest] then apply the per-channel affine.
        x, scale, bias = ins
        g = a["num_groups"]
        assert hints.get("_rank", 4) == 4
        xr = self.add("Reshape", [x, self.i64([0, g, -1])])
        ones, zeros = self.f32(np.ones(g)), self.f32(np.zeros(g))
        xn = self.add("InstanceNormalization", [xr, ones, zeros], epsilon=a.get("epsilon", 1e-5))
        xb = self.add("Reshape", [xn, self.add("Shape", [x])])
        self.add("Add", [self.add("Mul", [xb, self._chan(scale)]), self._chan(bias)], outs, name)

    def _power_norm(self, ins, outs, name, a, hints):
        x, scale, bias, phi = ins
        groups = a.get("groups", 1)
        rank = hints["_rank"]
        c = self.g.params.arrays[scale].shape[0]
        xr = self.add("Reshape", [x, self.i64([0] * (rank - 1) + [groups, c // groups])])
        m2 = self.add("ReduceMean", [self.add("Mul", [xr, xr]), self.i64([-1])], keepdims=1)
        gs = self.add("Div", [xr, self.add("Sqrt", [self.add("Add", [m2, self.f32(a.get("group_epsilon", 1e-5))])])])
        gs = self.add("Reshape", [gs, self.i64([0] * (rank - 1) + [c])])
        k = self._affine_scale(scale, phi, a.get("epsilon", 1e-5))
        self.add("Add", [self.add("Mul", [gs, k]), bias], outs, name)

    def _evonorm_s0(self, ins, outs, name, a):
        x, v, gamma, beta = ins
        groups = a.get("groups", 32)
        num = self.add("Mul", [x, self.add("Sigmoid", [self.add("Mul", [x, self._chan(v)])])])
        xr = self.add("Reshape", [x, self.i64([0, groups, -1])])
        mean = self.add("ReduceMean", [xr, self.i64([2])], keepdims=1)
        d = self.add("Sub", [xr, mean])
        var = self.add("ReduceMean", [self.add("Mul", [d, d]), self.i64([2])], keepdims=1)
        std = self.add("Sqrt", [self.add("Add", [var, self.f32(a.get("epsilon", 1e-5))])])
        numr = self.add("Reshape", [num, self.i64([0, groups, -1])])
        y = self.add("Reshape", [self.add("Div", [numr, std]), self.add("Shape", [x])])
        self.add("Add", [self.add("Mul", [y, self._chan(gamma)]), self._chan(beta)], outs, name)

    def _evonorm_b0(self, ins, outs, name, a):
        x, v, gamma, beta, rv = ins
        eps = self.f32(a.get("epsilon", 1e-3))
        mean = self.add("ReduceMean", [x, self.i64([2, 3])], keepdims=1)
        d = self.add("Sub", [x, mean])
        var = self.add("ReduceMean", [self.add("Mul", [d, d]), self.i64([2, 3])], keepdims=1)
        inst = self.add("Sqrt", [self.add("Add", [var, eps])])
        running = self._chan(self.add("Sqrt", [self.add("Add", [rv, eps])]))
        den = self.add("Max", [running, self.add("Add", [self.add("Mul", [x, self._chan(v)]), inst])])
        y = self.add("Div", [x, den])
        self.add("Add", [self.add("Mul", [y, self._chan(gamma)]), self._chan(beta)], outs, name)

    def _region_norm(self, ins, outs, name, a, hints):
        # RN-B as geekyutao/RN computes it: per region r, (x − μ_r)/√(σ²_r + ε·NHW/|r|) inside r.
        x, mask, gf, bf, gb, bb = ins
        n, _, h, w = hints["_shape"]
        eps = a.get("epsilon", 1e-5)
        one = self.f32(1.0)
        total = self.f32(float(n * h * w))
        acc = None
        for m, gamma, beta in ((mask, gf, bf), (self.add("Sub", [one, mask]), gb, bb)):
            axes = self.i64([0, 2, 3])
            area = self.add("Max", [self.add("ReduceSum", [m, axes], keepdims=1), one])
            mu = self.add("Div", [self.add("ReduceSum", [self.add("Mul", [x, m]), axes], keepdims=1), area])
            dm = self.add("Mul", [self.add("Sub", [x, mu]), m])
            var = self.add("Div", [self.add("ReduceSum", [self.add("Mul", [dm, dm]), axes], keepdims=1), area])
            eps_r = self.add("Div", [self.add("Mul", [self.f32(eps), total]), area])
            rn = self.add("Div", [dm, self.add("Sqrt", [self.add("Add", [var, eps_r])])])
            term = self.add("Add", [self.add("Mul", [rn, self._chan(self.add("Add", [gamma, one]))]), self._chan(beta)])
            acc = term if acc is None else self.add("Add", [acc, term], outs, name)


def check_onnx(model):
    onnx.checker.check_model(model, full_check=True)
