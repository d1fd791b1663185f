"""MeanVC DiT (ASLP-lab/MeanVC; seed-models.md §3): one mean-flow step x = ε − u(ε, t=1, r=0).

The flow times t and r are inputs ([1, 1, 1]; the goldens use the one-step t = 1, r = 0), embedded
in the graph as MeanVC does (F5-TTS's sinusoidal embedding: Mul by constant frequencies, then Sin and
Cos, at run time). Token positions are fixed, so the RoPE cos/sin tables are constants. The
interleaved rotate_half of x_transformers is a fixed signed permutation, applied as a MatMul by a
constant.

`meanvc_dit`: tokens [cache chunk; noisy chunks] at positions 0.., chunk attention mask.
`meanvc_dit_kv`: one streaming step — [cache chunk; noisy chunk] plus a KV cache of earlier chunks
as explicit inputs (keys post-qk-norm, pre-RoPE), at absolute stream positions; it also returns the
new cache entries of the clean (cache) chunk.
"""

import math

import numpy as np

from .. import nn
from ..graph import Graph
from ..model import Model
from ..params import Params
from ..rng import normal
from .common import emit_mha

MEL, BN, SPK, FREQ = 80, 256, 256, 256
NEG = -1e9


class Cfg:
    def __init__(self, bench=False, kv=False):
        self.kv = kv
        if bench:
            self.dim, self.depth, self.heads, self.dh, self.chunk = 512, 4, 2, 64, 20
            self.t_noisy, self.tp, self.kv_chunks = 100, 100, 0
        else:
            self.dim, self.depth, self.heads, self.dh, self.chunk = 64, 2, 2, 16, 4
            self.t_noisy, self.tp, self.kv_chunks = 24, 8, 0
        if kv:
            self.t_noisy, self.kv_chunks = self.chunk, 2
        self.ff = 2 * self.dim
        self.inner = self.heads * self.dh
        self.mrte_layers, self.mrte_heads, self.mrte_ff = 2, 4, 512
        self.t_cache = self.chunk
        self.l_cur = self.t_cache + self.t_noisy  # tokens processed by the DiT blocks
        self.l_kv = self.kv_chunks * self.chunk
        # Absolute position of the first KV-cache token (streaming step); 0 for the full model.
        self.pos0 = 40 if kv else 0
        self.max_back = 5  # chunks a query may look back


def _sinusoid_freqs(dim=FREQ, scale=1000.0):
    """s·f of F5-TTS's SinusPositionEmbedding, f = exp(−ln(10⁴)·i/(half−1))."""
    half = dim // 2
    return scale * np.exp(np.arange(half) * -(math.log(10000.0) / (half - 1)))


def _sinusoid(value, dim=FREQ, scale=1000.0):
    """F5-TTS SinusPositionEmbedding: [sin(s·v·f), cos(s·v·f)]."""
    a = value * _sinusoid_freqs(dim, scale)
    return np.concatenate([np.sin(a), np.cos(a)])


def _positions(c):
    return c.pos0 + np.arange(c.l_kv + c.l_cur)  # [kv cache; cache chunk; noisy chunk(s)]


def _rope_angles(c):
    inv = 1.0 / (10000.0 ** (np.arange(0, c.dh, 2) / c.dh))
    ang = _positions(c)[:, None] * inv[None, :]
    return np.repeat(ang, 2, axis=1)  # interleaved: each frequency covers a (2i, 2i+1) pair


def _chunk_allowed(c):
    """[queries, keys] bool: 0 ≤ chunk(q) − chunk(k) ≤ 5, chunk index = ⌊pos/chunk⌋."""
    pos = _positions(c)
    ch = pos // c.chunk
    diff = ch[c.l_kv :, None] - ch[None, :]
    return (diff >= 0) & (diff <= c.max_back)


def _make_params(P, c):
    d = c.dim
    for e in ("t_emb", "r_emb"):
        P.linear(f"{e}.l1", FREQ, d)
        P.linear(f"{e}.l2", d, d)
    P.linear("mrte.spk", SPK, SPK, bias=False)
    for i in range(c.mrte_layers):
        p = f"mrte.l{i}"
        P.linear(f"{p}.attn.q", BN, BN)
        P.linear(f"{p}.attn.k", MEL + SPK, BN)
        P.linear(f"{p}.attn.v", MEL, BN)
        P.linear(f"{p}.attn.o", BN, BN)
        P.norm_affine(f"{p}.ln1", BN)
        P.linear(f"{p}.ff1", BN, c.mrte_ff)
        P.linear(f"{p}.ff2", c.mrte_ff, BN)
        P.norm_affine(f"{p}.ln2", BN)
    P.linear("in_emb", MEL + BN + SPK, d)
    P.linear("cache_emb", MEL, d)
    for i in range(c.depth):
        p = f"b{i}"
        # adaLN-Zero is zero-initialised for training; a trained model's modulation is not zero, and
        # zero gates would make the blocks vanish, so these are small random values.
        P.linear(f"{p}.ada", d, 6 * d, gain=0.5, bias_std=0.1)
        for w in "qkv":
            P.linear(f"{p}.attn.{w}", d, c.inner)
        P.normal(f"{p}.q_norm.weight", [c.dh], 0.1, 1.0)
        P.normal(f"{p}.k_norm.weight", [c.dh], 0.1, 1.0)
        P.linear(f"{p}.attn.o", c.inner, d)
        P.linear(f"{p}.ff1", d, c.ff)
        P.linear(f"{p}.ff2", c.ff, d)
    P.linear("norm_out.ada", d, 2 * d, gain=0.5, bias_std=0.1)
    P.linear("proj_out", d, MEL)


# --- numpy golden ----------------------------------------------------------------------------------


def _reference(W, x, c):
    d, H, dh = c.dim, c.heads, c.dh

    def lin(v, p, bias=True):
        return v @ W[p + ".weight"] + (W[p + ".bias"] if bias else 0.0)

    def embedder(e, value):
        return lin(nn.silu(lin(_sinusoid(value), f"{e}.l1")), f"{e}.l2")

    t, r = float(x["t"].reshape(-1)[0]), float(x["r"].reshape(-1)[0])
    cond = embedder("t_emb", t) + embedder("r_emb", r)  # [d]

    # Timbre encoder (MRTE): queries = content, keys = [prompt; spk projection], values = prompt.
    spk = x["spk"][0]
    prompt = x["prompt"][0]
    kin = np.concatenate([prompt, np.tile(spk @ W["mrte.spk.weight"], (c.tp, 1))], axis=1)
    h = x["bn"][0]
    for i in range(c.mrte_layers):
        p = f"mrte.l{i}"
        a = nn.mha(lin(h, f"{p}.attn.q"), lin(kin, f"{p}.attn.k"), lin(prompt, f"{p}.attn.v"), c.mrte_heads)
        h = nn.layer_norm(h + lin(a, f"{p}.attn.o"), W[f"{p}.ln1.weight"], W[f"{p}.ln1.bias"])
        f = lin(nn.relu(lin(h, f"{p}.ff1")), f"{p}.ff2")
        h = nn.layer_norm(h + f, W[f"{p}.ln2.weight"], W[f"{p}.ln2.bias"])
    timbre = h

    noise = x["noise"][0]
    xin = np.concatenate([noise, timbre, np.tile(spk, (c.t_noisy, 1))], axis=1)
    tokens = np.concatenate([lin(x["cache"][0], "cache_emb"), lin(xin, "in_emb")], axis=0)  # [L, d]

    ang = _rope_angles(c)
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(v, rows):  # v [H, n, dh]; x_transformers interleaved rotate_half
        rot = np.empty_like(v)
        rot[..., 0::2] = -v[..., 1::2]
        rot[..., 1::2] = v[..., 0::2]
        return v * cos[rows] + rot * sin[rows]

    allowed = _chunk_allowed(c)
    kv_rows = np.arange(c.l_kv)
    cur_rows = np.arange(c.l_kv, c.l_kv + c.l_cur)
    new_cache = {}
    for i in range(c.depth):
        p = f"b{i}"
        m = lin(nn.silu(cond), f"{p}.ada")
        sh1, sc1, g1, sh2, sc2, g2 = np.split(m, 6)
        n = nn.layer_norm(tokens, eps=1e-6) * (1 + sc1) + sh1
        heads = lambda v: v.reshape(-1, H, dh).transpose(1, 0, 2)
        q = nn.rms_norm(heads(lin(n, f"{p}.attn.q")), W[f"{p}.q_norm.weight"], 1e-6)
        k = nn.rms_norm(heads(lin(n, f"{p}.attn.k")), W[f"{p}.k_norm.weight"], 1e-6)
        v = heads(lin(n, f"{p}.attn.v"))
        if c.kv:
            new_cache[f"k_new.{p}"] = k[None, :, : c.t_cache]
            new_cache[f"v_new.{p}"] = v[None, :, : c.t_cache]
            k_all = np.concatenate([rope(x[f"k_cache.{p}"][0], kv_rows), rope(k, cur_rows)], axis=1)
            v_all = np.concatenate([x[f"v_cache.{p}"][0], v], axis=1)
        else:
            k_all, v_all = rope(k, cur_rows), v
        q = rope(q, cur_rows)
        s = q @ k_all.transpose(0, 2, 1) / math.sqrt(dh)
        s = np.where(allowed[None], s, -np.inf)
        a = (nn.softmax(s) @ v_all).transpose(1, 0, 2).reshape(-1, H * dh)
        tokens = tokens + g1 * lin(a, f"{p}.attn.o")
        n = nn.layer_norm(tokens, eps=1e-6) * (1 + sc2) + sh2
        tokens = tokens + g2 * lin(nn.gelu_tanh(lin(n, f"{p}.ff1")), f"{p}.ff2")
    scale, shift = np.split(lin(nn.silu(cond), "norm_out.ada"), 2)  # AdaLayerNormZero_Final order
    out = nn.layer_norm(tokens[c.t_cache :], eps=1e-6) * (1 + scale) + shift
    u = lin(out, "proj_out")
    res = {"sample": (noise - u)[None]}  # one mean-flow step from t=1 to r=0
    res.update(new_cache)
    return res


# --- graph emission --------------------------------------------------------------------------------


def _emit(g, c):
    P = g.params
    d, H, dh, L = c.dim, c.heads, c.dh, c.l_cur
    noise = g.input("noise", [1, c.t_noisy, MEL])
    bn = g.input("bn", [1, c.t_noisy, BN])
    spk = g.input("spk", [1, SPK])
    prompt = g.input("prompt", [1, c.tp, MEL])
    cache = g.input("cache", [1, c.t_cache, MEL])
    t_in = g.input("t", [1, 1, 1])
    r_in = g.input("r", [1, 1, 1])
    if c.kv:
        kv_in = {}
        for i in range(c.depth):
            kv_in[i] = (g.input(f"k_cache.b{i}", [1, H, c.l_kv, dh]), g.input(f"v_cache.b{i}", [1, H, c.l_kv, dh]))

    # Constants of the sinusoidal time embedding and of the fixed positions.
    P.data("time_freqs", _sinusoid_freqs().reshape(1, 1, FREQ // 2))
    ang = _rope_angles(c)
    P.data("rope.cos", np.cos(ang).reshape(1, 1, -1, dh))
    P.data("rope.sin", np.sin(ang).reshape(1, 1, -1, dh))
    rot = np.zeros((dh, dh), np.float32)  # v @ rot = interleaved rotate_half(v)
    for i in range(dh // 2):
        rot[2 * i + 1, 2 * i] = -1.0
        rot[2 * i, 2 * i + 1] = 1.0
    P.data("rope.rotate_half", rot)
    P.data("chunk_mask", np.where(_chunk_allowed(c), 0.0, NEG).astype(np.float32))

    def emb(e, time):
        with g.scope(e):
            a = g.op("Mul", [time, "time_freqs"], name="angle")
            freq = g.op("Concat", [g.op("Sin", [a], name="sin"), g.op("Cos", [a], name="cos")], axis=-1, name="sinusoid")
            h = g.op("Silu", [g.linear(freq, f"{e}.l1.weight", f"{e}.l1.bias", name="l1")], name="silu")
            return g.linear(h, f"{e}.l2.weight", f"{e}.l2.bias", name="l2")

    cond = g.op("Add", [emb("t_emb", t_in), emb("r_emb", r_in)], name="cond")  # [1, 1, d]
    cond_act = g.op("Silu", [cond], name="cond_silu")

    with g.scope("mrte"):
        spk3 = g.op("Unsqueeze", [spk], axes=[1], name="spk3")
        sp = g.linear(spk3, "mrte.spk.weight", name="spk_proj")
        kin = g.op("Concat", [prompt, g.op("Expand", [sp], shape=[1, c.tp, SPK], name="spk_tile")], axis=-1, name="kin")
        h = bn
        for i in range(c.mrte_layers):
            p = f"mrte.l{i}"
            with g.scope(f"l{i}"):
                a = emit_mha(g, h, kin, f"{p}.attn", c.mrte_heads, c.t_noisy, c.tp, BN, xv=prompt)
                h = g.op("LayerNormalization", [g.op("Add", [h, a], name="res1"), f"{p}.ln1.weight", f"{p}.ln1.bias"], axis=-1, epsilon=1e-5, name="ln1")
                f = g.op("Relu", [g.linear(h, f"{p}.ff1.weight", f"{p}.ff1.bias", name="ff1")], name="relu")
                f = g.linear(f, f"{p}.ff2.weight", f"{p}.ff2.bias", name="ff2")
                h = g.op("LayerNormalization", [g.op("Add", [h, f], name="res2"), f"{p}.ln2.weight", f"{p}.ln2.bias"], axis=-1, epsilon=1e-5, name="ln2")
    spk_t = g.op("Expand", [spk3], shape=[1, c.t_noisy, SPK], name="spk_tile")
    xin = g.op("Concat", [noise, h, spk_t], axis=-1, name="x_cat")
    tokens = g.op("Concat", [g.linear(cache, "cache_emb.weight", "cache_emb.bias", name="cache_emb"), g.linear(xin, "in_emb.weight", "in_emb.bias", name="in_emb")], axis=1, name="tokens")

    n_kv = c.l_kv
    cos_cur = g.op("Slice", ["rope.cos"], starts=[n_kv], ends=[n_kv + L], axes=[2], name="cos_cur")
    sin_cur = g.op("Slice", ["rope.sin"], starts=[n_kv], ends=[n_kv + L], axes=[2], name="sin_cur")
    if c.kv:
        cos_kv = g.op("Slice", ["rope.cos"], starts=[0], ends=[n_kv], axes=[2], name="cos_kv")
        sin_kv = g.op("Slice", ["rope.sin"], starts=[0], ends=[n_kv], axes=[2], name="sin_kv")

    def rope(v, cos, sin, name):
        r = g.op("MatMul", [v, "rope.rotate_half"], name=name + ".rot")
        return g.op("Add", [g.op("Mul", [v, cos], name=name + ".cos"), g.op("Mul", [r, sin], name=name + ".sin")], name=name)

    def modulate(v, shift, scale, name):
        n = g.op("LayerNormalization", [v, "ones_d"], axis=-1, epsilon=1e-6, name=name + ".ln")
        s1 = g.op("Add", [scale, g.scalar(1.0)], name=name + ".scale1")
        return g.op("Add", [g.op("Mul", [n, s1], name=name + ".mul"), shift], name=name)

    # LN without affine = LayerNormalization with a unit scale and no bias.
    P.constant("ones_d", [d], 1.0)
    outputs_new = []
    for i in range(c.depth):
        p = f"b{i}"
        with g.scope(p):
            m = g.linear(cond_act, f"{p}.ada.weight", f"{p}.ada.bias", name="ada")
            sh1, sc1, g1, sh2, sc2, g2 = g.op("Split", [m], axis=-1, split=[d] * 6, nout=6, name="ada_split")
            n = modulate(tokens, sh1, sc1, "mod1")

            def heads(v, name):
                v = g.op("Reshape", [v], shape=[1, L, H, dh], name=name + ".heads")
                return g.op("Transpose", [v], perm=[0, 2, 1, 3], name=name + ".t")

            q = heads(g.linear(n, f"{p}.attn.q.weight", f"{p}.attn.q.bias", name="q"), "q")
            k = heads(g.linear(n, f"{p}.attn.k.weight", f"{p}.attn.k.bias", name="k"), "k")
            v = heads(g.linear(n, f"{p}.attn.v.weight", f"{p}.attn.v.bias", name="v"), "v")
            q = g.op("RMSNormalization", [q, f"{p}.q_norm.weight"], axis=-1, epsilon=1e-6, name="q_norm")
            k = g.op("RMSNormalization", [k, f"{p}.k_norm.weight"], axis=-1, epsilon=1e-6, name="k_norm")
            if c.kv:
                outputs_new.append((f"k_new.{p}", g.op("Slice", [k], starts=[0], ends=[c.t_cache], axes=[2], name="k_clean")))
                outputs_new.append((f"v_new.{p}", g.op("Slice", [v], starts=[0], ends=[c.t_cache], axes=[2], name="v_clean")))
            q = rope(q, cos_cur, sin_cur, "q_rope")
            k = rope(k, cos_cur, sin_cur, "k_rope")
            if c.kv:
                kc, vc = kv_in[i]
                k = g.op("Concat", [rope(kc, cos_kv, sin_kv, "kc_rope"), k], axis=2, name="k_all")
                v = g.op("Concat", [vc, v], axis=2, name="v_all")
            kt = g.op("Transpose", [k], perm=[0, 1, 3, 2], name="k_T")
            s = g.op("Mul", [g.op("MatMul", [q, kt], name="qk"), g.scalar(1 / math.sqrt(dh))], name="scores")
            s = g.op("Add", [s, "chunk_mask"], name="masked")
            a = g.op("MatMul", [g.op("Softmax", [s], axis=-1, name="probs"), v], name="mix")
            a = g.op("Reshape", [g.op("Transpose", [a], perm=[0, 2, 1, 3], name="merge_t")], shape=[1, L, H * dh], name="merge")
            a = g.linear(a, f"{p}.attn.o.weight", f"{p}.attn.o.bias", name="o")
            tokens = g.op("Add", [tokens, g.op("Mul", [g1, a], name="gate1")], name="res1")
            n = modulate(tokens, sh2, sc2, "mod2")
            f = g.op("Gelu", [g.linear(n, f"{p}.ff1.weight", f"{p}.ff1.bias", name="ff1")], approximate="tanh", name="gelu")
            f = g.linear(f, f"{p}.ff2.weight", f"{p}.ff2.bias", name="ff2")
            tokens = g.op("Add", [tokens, g.op("Mul", [g2, f], name="gate2")], name="res2")
    m = g.linear(cond_act, "norm_out.ada.weight", "norm_out.ada.bias", name="norm_out.ada")
    scale, shift = g.op("Split", [m], axis=-1, split=[d, d], nout=2, name="norm_out.split")
    last = g.op("Slice", [tokens], starts=[c.t_cache], ends=[L], axes=[1], name="noisy_tokens")
    u = g.linear(modulate(last, shift, scale, "norm_out"), "proj_out.weight", "proj_out.bias", name="u")
    g.output(g.op("Sub", [noise, u], name="sample"))
    for name, t in outputs_new:
        g.output_as(name, t)


def meanvc_dit(kv=False, bench=False):
    c = Cfg(bench=bench, kv=kv)
    name = "meanvc_dit" + ("_kv" if kv else "") + ("_bench" if bench else "")
    P = Params(seed=20000 + 100 * kv, inline_init=bench)
    _make_params(P, c)
    g = Graph(name, P)
    _emit(g, c)
    if bench:
        return Model(name, g)
    x = {
        "noise": normal(1, c.t_noisy * MEL).reshape(1, c.t_noisy, MEL),
        "bn": normal(2, c.t_noisy * BN).reshape(1, c.t_noisy, BN),
        "spk": normal(3, SPK).reshape(1, SPK),
        "prompt": np.tanh(normal(4, c.tp * MEL)).reshape(1, c.tp, MEL),  # mels live in [−1, 1]
        "cache": np.tanh(normal(5, c.t_cache * MEL)).reshape(1, c.t_cache, MEL),
        # One mean-flow step: from t = 1 (noise) to r = 0.
        "t": np.ones((1, 1, 1), np.float32),
        "r": np.zeros((1, 1, 1), np.float32),
    }
    if kv:
        for i in range(c.depth):
            x[f"k_cache.b{i}"] = normal(10 + 2 * i, c.heads * c.l_kv * c.dh).reshape(1, c.heads, c.l_kv, c.dh)
            x[f"v_cache.b{i}"] = normal(11 + 2 * i, c.heads * c.l_kv * c.dh, std=0.5).reshape(1, c.heads, c.l_kv, c.dh)
    return Model(name, g, x, lambda W, xx: _reference(W, xx, c))
