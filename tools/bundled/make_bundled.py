"""Writes the two models bundled with kiln's spine: models/mlp_bn.json and
models/transformer_block.json. Weights use the format's seeded initializers, so the files stay small
and need no weight files. Run from the repository root: python3 tools/bundled/make_bundled.py
(only the standard library is needed)."""
import json
import math
from pathlib import Path


class Model:
    def __init__(self, name):
        self.doc = {"format": "kiln", "version": 1, "name": name, "inputs": [], "outputs": [],
                    "weights": [], "nodes": []}
        self.seed = 100

    def input(self, name, shape):
        self.doc["inputs"].append({"name": name, "dtype": "f32", "shape": shape})
        return name

    def weight(self, name, shape, init=None, data=None):
        entry = {"name": name, "dtype": "f32", "shape": shape}
        if data is not None:
            entry["data"] = data
        else:
            kind, params = init
            if kind in ("normal", "uniform"):
                self.seed += 1
                params = dict(params, seed=self.seed)
            entry["init"] = {kind: params}
        self.doc["weights"].append(entry)
        return name

    def node(self, name, op, inputs, attributes=None, outputs=None):
        outputs = outputs or [name]
        entry = {"name": name, "op": op, "inputs": inputs, "outputs": outputs}
        if attributes:
            entry["attributes"] = attributes
        self.doc["nodes"].append(entry)
        return outputs[0]

    def write(self, path):
        # One weight or node per line: readable in review, small in diffs.
        lines = ["{"]
        items = list(self.doc.items())
        for i, (key, value) in enumerate(items):
            comma = "," if i + 1 < len(items) else ""
            if isinstance(value, list) and value and isinstance(value[0], dict):
                body = ",\n".join("  " + json.dumps(v) for v in value)
                lines.append(f" {json.dumps(key)}: [\n{body}\n ]{comma}")
            else:
                lines.append(f" {json.dumps(key)}: {json.dumps(value)}{comma}")
        lines.append("}")
        Path(path).write_text("\n".join(lines) + "\n")


def linear(m, prefix, x, fan_in, fan_out):
    """x·Wᵀ + b as ONNX Gemm with transB=1 (the PyTorch Linear layout)."""
    w = m.weight(f"{prefix}.weight", [fan_out, fan_in], ("normal", {"std": 1 / math.sqrt(fan_in)}))
    b = m.weight(f"{prefix}.bias", [fan_out], ("normal", {"std": 0.1}))
    return m.node(prefix, "Gemm", [x, w, b], {"transB": 1})


def batch_norm(m, prefix, x, channels):
    scale = m.weight(f"{prefix}.scale", [channels], ("uniform", {"low": 0.5, "high": 1.5}))
    bias = m.weight(f"{prefix}.bias", [channels], ("normal", {"std": 0.1}))
    mean = m.weight(f"{prefix}.running_mean", [channels], ("normal", {"std": 0.2}))
    var = m.weight(f"{prefix}.running_var", [channels], ("uniform", {"low": 0.5, "high": 2.0}))
    return m.node(prefix, "BatchNormalization", [x, scale, bias, mean, var], {"epsilon": 1e-5})


def mlp_bn():
    m = Model("mlp_bn")
    h = m.input("x", [8, 16])
    for i, (fan_in, fan_out) in enumerate([(16, 32), (32, 32)]):
        h = linear(m, f"fc{i}", h, fan_in, fan_out)
        h = batch_norm(m, f"bn{i}", h, fan_out)
        h = m.node(f"relu{i}", "Relu", [h])
    m.node("head", "Gemm", [h, m.weight("head.weight", [10, 32], ("normal", {"std": 1 / math.sqrt(32)})),
                            m.weight("head.bias", [10], ("zeros", {}))], {"transB": 1}, outputs=["y"])
    m.doc["outputs"] = ["y"]
    return m


def transformer_block(tokens=16, dim=32, heads=4):
    """One Pre-LN encoder block with a final LayerNorm: x + Attn(LN(x)), then + FFN(LN(·)), LN."""
    m = Model("transformer_block")
    d_head = dim // heads
    x = m.input("x", [1, tokens, dim])

    def layer_norm(prefix, h):
        g = m.weight(f"{prefix}.weight", [dim], ("uniform", {"low": 0.8, "high": 1.2}))
        b = m.weight(f"{prefix}.bias", [dim], ("normal", {"std": 0.05}))
        return m.node(prefix, "LayerNormalization", [h, g, b], {"axis": -1, "epsilon": 1e-5})

    def proj(prefix, h, fan_in, fan_out):
        w = m.weight(f"{prefix}.weight", [fan_in, fan_out], ("normal", {"std": 1 / math.sqrt(fan_in)}))
        b = m.weight(f"{prefix}.bias", [fan_out], ("normal", {"std": 0.02}))
        mm = m.node(f"{prefix}.matmul", "MatMul", [h, w])
        return m.node(prefix, "Add", [mm, b])

    h = layer_norm("ln1", x)
    q, k, v = (proj(f"attn.{n}", h, dim, dim) for n in "qkv")
    split = lambda name, t, perm: m.node(name + ".heads", "Transpose", [
        m.node(name + ".split", "Reshape", [t], {"shape": [1, tokens, heads, d_head]})], {"perm": perm})
    qh = split("attn.q", q, [0, 2, 1, 3])
    kt = split("attn.k", k, [0, 2, 3, 1])
    vh = split("attn.v", v, [0, 2, 1, 3])
    scores = m.node("attn.scores", "MatMul", [qh, kt])
    scale = m.weight("attn.scale", [], data=[1 / math.sqrt(d_head)])
    probs = m.node("attn.softmax", "Softmax", [m.node("attn.scaled", "Mul", [scores, scale])], {"axis": -1})
    ctx = m.node("attn.context", "MatMul", [probs, vh])
    ctx = m.node("attn.merge", "Reshape", [m.node("attn.unheads", "Transpose", [ctx], {"perm": [0, 2, 1, 3]})],
                 {"shape": [1, tokens, dim]})
    x1 = m.node("residual1", "Add", [x, proj("attn.out", ctx, dim, dim)])
    f = proj("ffn.up", layer_norm("ln2", x1), dim, 4 * dim)
    f = m.node("ffn.gelu", "Gelu", [f])
    x2 = m.node("residual2", "Add", [x1, proj("ffn.down", f, 4 * dim, dim)])
    m.node("ln_final", "LayerNormalization", [x2, m.weight("ln_final.weight", [dim], ("ones", {})),
                                              m.weight("ln_final.bias", [dim], ("zeros", {}))], outputs=["y"])
    m.doc["outputs"] = ["y"]
    return m


if __name__ == "__main__":
    mlp_bn().write("models/mlp_bn.json")
    transformer_block().write("models/transformer_block.json")
