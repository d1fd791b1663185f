"""Normalization-paper models (seed-models.md §5–§7, §9): Pre-LN, Unified Normalization, PowerNorm,
LayerNorm Scaling, EvoNorm, SELU and Region Normalization.

Each model is two independent pieces of code: `_ref_*` (plain numpy from the papers' formulas, the
golden) and `_emit_*` (the kiln/ONNX graph)."""

import math

import numpy as np

from .. import nn
from ..graph import Graph
from ..model import Model
from ..params import Params
from ..rng import normal
from .common import attn_params, emit_mha

NEG = -1e9  # additive mask value: exp underflows to exactly 0 in f32


def _mha_ref(W, p, xq, xkv, heads, mask=None, bias=True):
    def lin(x, which):
        y = x @ W[f"{p}.{which}.weight"]
        return y + W[f"{p}.{which}.bias"] if bias else y

    a = nn.mha(lin(xq, "q"), lin(xkv, "k"), lin(xkv, "v"), heads, mask)
    return lin(a, "o")


# --- prelm_transformer: a plain Pre-LN encoder (target of the LN → RMSNorm conversion) ------------


def prelm_transformer(bench=False):
    name = "prelm_transformer_bench" if bench else "prelm_transformer"
    d, heads, layers, t, vocab, ncls = (256, 4, 4, 256, 100, 16) if bench else (256, 4, 4, 64, 100, 16)
    # 3.2 M parameters even at the small size: declared with seeded `init`, not committed.
    P = Params(seed=1000, inline_init=True)
    P.normal("embed", [vocab, d], 1.0)
    P.normal("pos", [t, d], 0.5)
    for i in range(layers):
        P.norm_affine(f"l{i}.ln1", d)
        attn_params(P, f"l{i}.attn", d)
        P.norm_affine(f"l{i}.ln2", d)
        P.linear(f"l{i}.ff1", d, 4 * d)
        P.linear(f"l{i}.ff2", 4 * d, d)
    P.norm_affine("ln_f", d)
    P.linear("head", d, ncls)

    g = Graph(name, P)
    tok = g.input("tokens", [1, t], "i64")
    h = g.op("Gather", ["embed", tok], axis=0, name="tok_embed")
    h = g.op("Add", [h, "pos"], name="add_pos")
    for i in range(layers):
        with g.scope(f"l{i}"):
            n = g.op("LayerNormalization", [h, f"l{i}.ln1.weight", f"l{i}.ln1.bias"], axis=-1, epsilon=1e-5, name="ln1")
            h = g.op("Add", [h, emit_mha(g, n, n, f"l{i}.attn", heads, t, t, d)], name="res1")
            n = g.op("LayerNormalization", [h, f"l{i}.ln2.weight", f"l{i}.ln2.bias"], axis=-1, epsilon=1e-5, name="ln2")
            f = g.op("Gelu", [g.linear(n, f"l{i}.ff1.weight", f"l{i}.ff1.bias", name="ff1")], name="gelu")
            h = g.op("Add", [h, g.linear(f, f"l{i}.ff2.weight", f"l{i}.ff2.bias", name="ff2")], name="res2")
    h = g.op("LayerNormalization", [h, "ln_f.weight", "ln_f.bias"], axis=-1, epsilon=1e-5, name="ln_f")
    g.output(g.linear(h, "head.weight", "head.bias", name="logits"))

    def ref(W, x):
        h = W["embed"][x["tokens"][0]] + W["pos"]
        for i in range(layers):
            n = nn.layer_norm(h, W[f"l{i}.ln1.weight"], W[f"l{i}.ln1.bias"])
            h = h + _mha_ref(W, f"l{i}.attn", n, n, heads)
            n = nn.layer_norm(h, W[f"l{i}.ln2.weight"], W[f"l{i}.ln2.bias"])
            f = nn.gelu(n @ W[f"l{i}.ff1.weight"] + W[f"l{i}.ff1.bias"])
            h = h + f @ W[f"l{i}.ff2.weight"] + W[f"l{i}.ff2.bias"]
        h = nn.layer_norm(h, W["ln_f.weight"], W["ln_f.bias"])
        return {"logits": (h @ W["head.weight"] + W["head.bias"])[None]}

    if bench:
        return Model(name, g)
    tokens = (np.arange(t, dtype=np.int64) * 37 + 11) % vocab
    return Model(name, g, {"tokens": tokens[None]}, ref)


# --- un_transformer: pre-norm with Unified Normalization (inference form) -------------------------


def _norm_stats(P, p, d):
    P.norm_affine(p, d)
    P.uniform(p + ".running_var", [d], 0.5, 2.0)


def un_transformer():
    d, heads, layers, t = 64, 4, 2, 16
    P = Params(seed=2000, inline_init=False)
    for i in range(layers):
        _norm_stats(P, f"l{i}.un1", d)
        attn_params(P, f"l{i}.attn", d)
        _norm_stats(P, f"l{i}.un2", d)
        P.linear(f"l{i}.ff1", d, 4 * d)
        P.linear(f"l{i}.ff2", 4 * d, d)
    _norm_stats(P, "un_f", d)

    g = Graph("un_transformer", P)
    h = g.input("x", [1, t, d])

    def un(x, p, name):
        return g.op("UnifiedNorm", [x, p + ".weight", p + ".bias", p + ".running_var"], axis=-1, epsilon=1e-5, name=name)

    for i in range(layers):
        with g.scope(f"l{i}"):
            n = un(h, f"l{i}.un1", "un1")
            h = g.op("Add", [h, emit_mha(g, n, n, f"l{i}.attn", heads, t, t, d)], name="res1")
            n = un(h, f"l{i}.un2", "un2")
            f = g.op("Gelu", [g.linear(n, f"l{i}.ff1.weight", f"l{i}.ff1.bias", name="ff1")], name="gelu")
            h = g.op("Add", [h, g.linear(f, f"l{i}.ff2.weight", f"l{i}.ff2.bias", name="ff2")], name="res2")
    g.output(un(h, "un_f", "y"))

    def un_ref(W, x, p):
        return W[p + ".weight"] * x / np.sqrt(W[p + ".running_var"] + 1e-5) + W[p + ".bias"]

    def ref(W, x):
        h = x["x"][0]
        for i in range(layers):
            n = un_ref(W, h, f"l{i}.un1")
            h = h + _mha_ref(W, f"l{i}.attn", n, n, heads)
            n = un_ref(W, h, f"l{i}.un2")
            h = h + nn.gelu(n @ W[f"l{i}.ff1.weight"] + W[f"l{i}.ff1.bias"]) @ W[f"l{i}.ff2.weight"] + W[f"l{i}.ff2.bias"]
        return {"y": un_ref(W, h, "un_f")[None]}

    return Model("un_transformer", g, {"x": normal(1, t * d).reshape(1, t, d)}, ref)


# --- powernorm_transformer: post-norm with PowerNorm + GroupScaling (fairseq encoder layer) --------


def powernorm_transformer():
    d, heads, layers, t = 64, 4, 2, 16
    P = Params(seed=3000, inline_init=False)
    for i in range(layers):
        attn_params(P, f"l{i}.attn", d)
        P.norm_affine(f"l{i}.pn1", d)
        P.uniform(f"l{i}.pn1.running_phi", [d], 0.5, 2.0)
        P.linear(f"l{i}.ff1", d, 4 * d)
        P.linear(f"l{i}.ff2", 4 * d, d)
        P.norm_affine(f"l{i}.pn2", d)
        P.uniform(f"l{i}.pn2.running_phi", [d], 0.5, 2.0)

    g = Graph("powernorm_transformer", P)
    h = g.input("x", [1, t, d])

    def pn(x, p, name):
        ins = [x, p + ".weight", p + ".bias", p + ".running_phi"]
        return g.op("PowerNorm", ins, groups=heads, epsilon=1e-5, group_epsilon=1e-5, _rank=3, name=name)

    for i in range(layers):
        with g.scope(f"l{i}"):
            h = pn(g.op("Add", [h, emit_mha(g, h, h, f"l{i}.attn", heads, t, t, d)], name="res1"), f"l{i}.pn1", "pn1")
            f = g.op("Relu", [g.linear(h, f"l{i}.ff1.weight", f"l{i}.ff1.bias", name="ff1")], name="relu")
            h = g.op("Add", [h, g.linear(f, f"l{i}.ff2.weight", f"l{i}.ff2.bias", name="ff2")], name="res2")
            h = pn(h, f"l{i}.pn2", "pn2")
    g.output(g.op("Identity", [h], name="y"))

    def pn_ref(W, x, p):
        # GroupScaling1D (per token, groups = heads), then the eval-mode PowerNorm affine.
        xg = x.reshape(x.shape[0], heads, -1)
        gs = (xg / np.sqrt((xg * xg).mean(-1, keepdims=True) + 1e-5)).reshape(x.shape)
        return W[p + ".weight"] * gs / np.sqrt(W[p + ".running_phi"] + 1e-5) + W[p + ".bias"]

    def ref(W, x):
        h = x["x"][0]
        for i in range(layers):
            h = pn_ref(W, h + _mha_ref(W, f"l{i}.attn", h, h, heads), f"l{i}.pn1")
            f = nn.relu(h @ W[f"l{i}.ff1.weight"] + W[f"l{i}.ff1.bias"])
            h = pn_ref(W, h + f @ W[f"l{i}.ff2.weight"] + W[f"l{i}.ff2.bias"], f"l{i}.pn2")
        return {"y": h[None]}

    return Model("powernorm_transformer", g, {"x": normal(2, t * d).reshape(1, t, d)}, ref)


# --- lns_transformer: Pre-RMSNorm (LLaMA-style, causal, SwiGLU) with LayerNorm Scaling 1/√ℓ --------


def lns_transformer():
    d, heads, layers, t, ff = 64, 4, 4, 16, 128
    P = Params(seed=4000, inline_init=False)
    P.normal("pos", [t, d], 0.5)
    for i in range(layers):
        P.normal(f"l{i}.norm1.weight", [d], 0.1, 1.0)
        attn_params(P, f"l{i}.attn", d, bias=False)
        P.normal(f"l{i}.norm2.weight", [d], 0.1, 1.0)
        P.linear(f"l{i}.gate", d, ff, bias=False)
        P.linear(f"l{i}.up", d, ff, bias=False)
        P.linear(f"l{i}.down", ff, d, bias=False)
    P.normal("norm_f.weight", [d], 0.1, 1.0)
    causal = np.where(np.arange(t)[None, :] <= np.arange(t)[:, None], 0.0, NEG).astype(np.float32)
    P.data("causal_mask", causal)

    g = Graph("lns_transformer", P)
    h = g.input("x", [1, t, d])
    h = g.op("Add", [h, "pos"], name="add_pos")
    for i in range(layers):
        ell = i + 1
        with g.scope(f"l{i}"):
            n = g.op("RMSNormalization", [h, f"l{i}.norm1.weight"], axis=-1, epsilon=1e-6, name="norm1")
            n = g.op("Mul", [n, g.scalar(1.0 / math.sqrt(ell))], name="lns1")
            a = emit_mha(g, n, n, f"l{i}.attn", heads, t, t, d, bias=False, mask="causal_mask")
            h = g.op("Add", [h, a], name="res1")
            n = g.op("RMSNormalization", [h, f"l{i}.norm2.weight"], axis=-1, epsilon=1e-6, name="norm2")
            n = g.op("Mul", [n, g.scalar(1.0 / math.sqrt(ell))], name="lns2")
            gate = g.op("Silu", [g.linear(n, f"l{i}.gate.weight", name="gate")], name="silu")
            f = g.op("Mul", [gate, g.linear(n, f"l{i}.up.weight", name="up")], name="glu")
            h = g.op("Add", [h, g.linear(f, f"l{i}.down.weight", name="down")], name="res2")
    g.output(g.op("RMSNormalization", [h, "norm_f.weight"], axis=-1, epsilon=1e-6, name="y"))

    def ref(W, x):
        h = x["x"][0] + W["pos"]
        mask = np.where(np.tril(np.ones((t, t))) > 0, 0.0, -np.inf)
        for i in range(layers):
            s = 1.0 / math.sqrt(i + 1)
            n = nn.rms_norm(h, W[f"l{i}.norm1.weight"], 1e-6) * s
            h = h + _mha_ref(W, f"l{i}.attn", n, n, heads, mask, bias=False)
            n = nn.rms_norm(h, W[f"l{i}.norm2.weight"], 1e-6) * s
            f = nn.silu(n @ W[f"l{i}.gate.weight"]) * (n @ W[f"l{i}.up.weight"])
            h = h + f @ W[f"l{i}.down.weight"]
        return {"y": nn.rms_norm(h, W["norm_f.weight"], 1e-6)[None]}

    return Model("lns_transformer", g, {"x": normal(3, t * d).reshape(1, t, d)}, ref)


# --- evonorm_convnet: EvoNorm-B0 and -S0 layers -----------------------------------------------------


def evonorm_convnet():
    P = Params(seed=5000, inline_init=False)
    P.conv("c1", 3, 16, 3)
    P.normal("b0.v", [16], 0.3, 1.0)
    P.norm_affine("b0", 16)
    P.uniform("b0.running_var", [16], 0.5, 2.0)
    P.conv("c2", 16, 32, 3)
    P.normal("s0a.v", [32], 0.3, 1.0)
    P.norm_affine("s0a", 32)
    P.conv("c3", 32, 32, 3)
    P.normal("s0b.v", [32], 0.3, 1.0)
    P.norm_affine("s0b", 32)
    P.linear("fc", 32, 10)

    g = Graph("evonorm_convnet", P)
    x = g.input("x", [1, 3, 16, 16])
    h = g.op("Conv", [x, "c1.weight", "c1.bias"], pads=[1, 1, 1, 1], name="c1")
    h = g.op("EvoNormB0", [h, "b0.v", "b0.weight", "b0.bias", "b0.running_var"], epsilon=1e-3, name="b0")
    h = g.op("Conv", [h, "c2.weight", "c2.bias"], pads=[1, 1, 1, 1], strides=[2, 2], name="c2")
    h = g.op("EvoNormS0", [h, "s0a.v", "s0a.weight", "s0a.bias"], groups=8, epsilon=1e-5, name="s0a")
    h = g.op("Conv", [h, "c3.weight", "c3.bias"], pads=[1, 1, 1, 1], name="c3")
    h = g.op("EvoNormS0", [h, "s0b.v", "s0b.weight", "s0b.bias"], groups=8, epsilon=1e-5, name="s0b")
    h = g.op("ReduceMean", [h], axes=[2, 3], keepdims=0, name="pool")
    g.output(g.linear(h, "fc.weight", "fc.bias", name="logits"))

    def c(v):
        return v.reshape(1, -1, 1, 1)

    def b0(W, x, p, eps=1e-3):  # timm EvoNorm2dB0, eval
        inst = np.sqrt(x.var(axis=(2, 3), keepdims=True) + eps)
        d = np.maximum(np.sqrt(c(W[p + ".running_var"]) + eps), c(W[p + ".v"]) * x + inst)
        return x / d * c(W[p + ".weight"]) + c(W[p + ".bias"])

    def s0(W, x, p, groups=8, eps=1e-5):  # timm EvoNorm2dS0
        n, ch, hh, ww = x.shape
        std = np.sqrt(x.reshape(n, groups, -1).var(-1) + eps)  # population variance per group
        std = np.repeat(std, ch // groups, axis=1).reshape(n, ch, 1, 1)
        return x * nn.sigmoid(c(W[p + ".v"]) * x) / std * c(W[p + ".weight"]) + c(W[p + ".bias"])

    def ref(W, x):
        h = b0(W, nn.conv2d(x["x"], W["c1.weight"], W["c1.bias"], pad=1), "b0")
        h = s0(W, nn.conv2d(h, W["c2.weight"], W["c2.bias"], stride=2, pad=1), "s0a")
        h = s0(W, nn.conv2d(h, W["c3.weight"], W["c3.bias"], pad=1), "s0b")
        return {"logits": h.mean(axis=(2, 3)) @ W["fc.weight"] + W["fc.bias"]}

    return Model("evonorm_convnet", g, {"x": normal(4, 3 * 256).reshape(1, 3, 16, 16)}, ref)


# --- selu_mlp: self-normalizing network, 8 SELU layers ---------------------------------------------


def selu_mlp():
    widths = [32] + [64] * 8
    P = Params(seed=6000, inline_init=False)
    for i in range(8):
        # Gemm layout [out, in] with transB=1, as PyTorch stores it; LeCun-normal init (std 1/√fan_in)
        # is what keeps a SELU network's activations at mean 0 / variance 1.
        P.normal(f"fc{i}.weight", [widths[i + 1], widths[i]], 1.0 / math.sqrt(widths[i]))
        P.normal(f"fc{i}.bias", [widths[i + 1]], 0.02)
    P.normal("head.weight", [10, 64], 1.0 / 8.0)
    P.normal("head.bias", [10], 0.02)

    g = Graph("selu_mlp", P)
    h = g.input("x", [16, 32])
    for i in range(8):
        h = g.op("Gemm", [h, f"fc{i}.weight", f"fc{i}.bias"], transB=1, name=f"fc{i}")
        h = g.op("Selu", [h], name=f"selu{i}")
    g.output(g.op("Gemm", [h, "head.weight", "head.bias"], transB=1, name="logits"))

    def ref(W, x):
        h = x["x"]
        for i in range(8):
            h = nn.selu(h @ W[f"fc{i}.weight"].T + W[f"fc{i}.bias"])
        return {"logits": h @ W["head.weight"].T + W["head.bias"]}

    return Model("selu_mlp", g, {"x": normal(5, 16 * 32).reshape(16, 32)}, ref)


# --- regionnorm_block: a residual block with RN-B and a mask input ----------------------------------


def regionnorm_block():
    cin, c, hw = 8, 16, 16
    P = Params(seed=7000, inline_init=False)
    P.conv("conv1", cin, c, 3)
    for r in ("rn1", "rn2"):
        for part in ("fg_gamma", "fg_beta", "bg_gamma", "bg_beta"):
            P.normal(f"{r}.{part}", [c], 0.2)
    P.conv("conv2", c, c, 3)
    P.conv("skip", cin, c, 1)

    g = Graph("regionnorm_block", P)
    x = g.input("x", [1, cin, hw, hw])
    m = g.input("mask", [1, 1, hw, hw])

    def rn(h, r):
        ins = [h, m, f"{r}.fg_gamma", f"{r}.fg_beta", f"{r}.bg_gamma", f"{r}.bg_beta"]
        return g.op("RegionNorm", ins, epsilon=1e-5, _shape=[1, c, hw, hw], name=r)

    h = g.op("Conv", [x, "conv1.weight", "conv1.bias"], pads=[1, 1, 1, 1], name="conv1")
    h = g.op("Relu", [rn(h, "rn1")], name="relu")
    h = g.op("Conv", [h, "conv2.weight", "conv2.bias"], pads=[1, 1, 1, 1], name="conv2")
    h = rn(h, "rn2")
    s = g.op("Conv", [x, "skip.weight", "skip.bias"], name="skip")
    g.output(g.op("Add", [h, s], name="y"))

    def rn_ref(W, x, mask, r, eps=1e-5):
        # geekyutao/RN RN_binarylabel + RN_B, written as the code computes it (batch-norm over the
        # region filled with its mean, rescaled by √(|r|/NHW)).
        def region(xr, mr):
            n, ch, hh, ww = xr.shape
            area = max(mr.sum(), 1.0)
            mu = (xr * mr).sum(axis=(0, 2, 3), keepdims=True) / area
            filled = xr * mr + (1 - mr) * mu
            var = ((filled - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)  # BN batch statistics
            return (filled - mu) / np.sqrt(var + eps) * np.sqrt(area / (n * hh * ww))

        rnx = region(x, mask) + region(x, 1 - mask)
        cc = lambda v: v.reshape(1, -1, 1, 1)
        fg = rnx * mask * (1 + cc(W[f"{r}.fg_gamma"])) + cc(W[f"{r}.fg_beta"])
        bg = rnx * (1 - mask) * (1 + cc(W[f"{r}.bg_gamma"])) + cc(W[f"{r}.bg_beta"])
        return fg + bg

    def ref(W, x):
        m = x["mask"]
        h = nn.relu(rn_ref(W, nn.conv2d(x["x"], W["conv1.weight"], W["conv1.bias"], pad=1), m, "rn1"))
        h = rn_ref(W, nn.conv2d(h, W["conv2.weight"], W["conv2.bias"], pad=1), m, "rn2")
        return {"y": h + nn.conv2d(x["x"], W["skip.weight"], W["skip.bias"])}

    mask = np.zeros((1, 1, hw, hw), np.float32)
    mask[..., 3:11, 5:14] = 1.0  # a 8×9 foreground rectangle (a hole to inpaint)
    mask[..., 12:15, 1:4] = 1.0
    return Model("regionnorm_block", g, {"x": normal(6, cin * hw * hw).reshape(1, cin, hw, hw), "mask": mask}, ref)


