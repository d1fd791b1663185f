"""StableNormal's one-step YOSO normal estimator (Stable-X/StableNormal; seed-models.md §2).

    (down_res, mid_res) = ControlNet(z_image, t, ctx)          # UNet-encoder copy + 1×1 zero-convs
    x0 = UNet(z_noise, t, ctx, skips + down_res, mid + mid_res)  # used directly as x0
    n = VAE.decode(x0 / 0.18215);  out = n / max(‖n‖₂ over channels, 1e-6)

diffusers-style blocks at a small config. t = 401 is fixed: its sinusoidal features are a constant
weight (kiln has no Sin/Cos); the time-embedding MLP stays in the graph for kiln to constant-fold.
"""

import math

import numpy as np

from .. import nn
from ..graph import Graph
from ..model import Model
from ..params import Params
from ..rng import normal
from .common import emit_mha

T_FIXED = 401
VAE_SCALE = 0.18215


class Cfg:
    def __init__(self, bench):
        if bench:
            self.latent, self.ch, self.groups, self.heads, self.ctx_len, self.ctx_dim = 32, (64, 128), 32, 2, 16, 64
            self.vae_ch = (32, 64, 128)
        else:
            self.latent, self.ch, self.groups, self.heads, self.ctx_len, self.ctx_dim = 16, (32, 64), 8, 2, 8, 32
            self.vae_ch = (16, 32, 64)
        self.temb = 4 * self.ch[0]


# --- parameters ------------------------------------------------------------------------------------


def _resnet_params(P, p, cin, cout, temb):
    P.norm_affine(p + ".norm1", cin)
    P.conv(p + ".conv1", cin, cout, 3)
    if temb:
        P.linear(p + ".temb", temb, cout, gain=0.5)
    P.norm_affine(p + ".norm2", cout)
    P.conv(p + ".conv2", cout, cout, 3, gain=0.7)
    if cin != cout:
        P.conv(p + ".shortcut", cin, cout, 1)


def _transformer_params(P, p, c, ctx_dim):
    P.norm_affine(p + ".norm", c)
    P.linear(p + ".proj_in", c, c)
    for k in ("ln1", "ln2", "ln3"):
        P.norm_affine(f"{p}.{k}", c)
    for a, kv_dim in (("attn1", c), ("attn2", ctx_dim)):
        P.linear(f"{p}.{a}.q", c, c, bias=False)
        P.linear(f"{p}.{a}.k", kv_dim, c, bias=False)
        P.linear(f"{p}.{a}.v", kv_dim, c, bias=False)
        P.linear(f"{p}.{a}.o", c, c)
    P.linear(p + ".ff.geglu", c, 8 * c)
    P.linear(p + ".ff.out", 4 * c, c)
    P.linear(p + ".proj_out", c, c, gain=0.5)


def _encoder_params(P, p, c):
    """conv_in, time MLP, CrossAttnDown(ch0) + Down(ch1), cross-attention mid block."""
    c0, c1 = c.ch
    P.conv(p + ".conv_in", 4, c0, 3)
    P.linear(p + ".time.l1", c0, c.temb)
    P.linear(p + ".time.l2", c.temb, c.temb)
    _resnet_params(P, p + ".down0.res", c0, c0, c.temb)
    _transformer_params(P, p + ".down0.attn", c0, c.ctx_dim)
    P.conv(p + ".down0.downsample", c0, c0, 3)
    _resnet_params(P, p + ".down1.res", c0, c1, c.temb)
    _resnet_params(P, p + ".mid.res0", c1, c1, c.temb)
    _transformer_params(P, p + ".mid.attn", c1, c.ctx_dim)
    _resnet_params(P, p + ".mid.res1", c1, c1, c.temb)


def _skip_channels(c):
    c0, c1 = c.ch
    return [c0, c0, c0, c1]  # conv_in, down0 (res+attn), down0 downsample, down1


def _make_params(P, c):
    c0, c1 = c.ch
    _encoder_params(P, "unet", c)
    _encoder_params(P, "cn", c)
    for i, ch in enumerate(_skip_channels(c)):
        P.conv(f"cn.zero{i}", ch, ch, 1, gain=0.5)
    P.conv("cn.zero_mid", c1, c1, 1, gain=0.5)
    # Up path: UpBlock2D(ch1) with two resnets and an upsampler, CrossAttnUp(ch0) with two
    # resnet+transformer pairs; the skips are consumed last-in first-out.
    skips = _skip_channels(c)
    _resnet_params(P, "unet.up0.res0", c1 + skips[3], c1, c.temb)
    _resnet_params(P, "unet.up0.res1", c1 + skips[2], c1, c.temb)
    P.conv("unet.up0.upsample", c1, c1, 3)
    _resnet_params(P, "unet.up1.res0", c1 + skips[1], c0, c.temb)
    _transformer_params(P, "unet.up1.attn0", c0, c.ctx_dim)
    _resnet_params(P, "unet.up1.res1", c0 + skips[0], c0, c.temb)
    _transformer_params(P, "unet.up1.attn1", c0, c.ctx_dim)
    P.norm_affine("unet.norm_out", c0)
    P.conv("unet.conv_out", c0, 4, 3)
    # Tiny VAE decoder.
    v0, v1, v2 = c.vae_ch
    P.conv("vae.post_quant", 4, 4, 1)
    P.conv("vae.conv_in", 4, v2, 3)
    _resnet_params(P, "vae.mid.res0", v2, v2, None)
    P.norm_affine("vae.mid.attn.norm", v2)
    for w in "qkv":
        P.linear(f"vae.mid.attn.{w}", v2, v2)
    P.linear("vae.mid.attn.o", v2, v2, gain=0.5)
    _resnet_params(P, "vae.mid.res1", v2, v2, None)
    _resnet_params(P, "vae.up0.res", v2, v2, None)
    P.conv("vae.up0.upsample", v2, v2, 3)
    _resnet_params(P, "vae.up1.res", v2, v1, None)
    P.conv("vae.up1.upsample", v1, v1, 3)
    _resnet_params(P, "vae.up2.res", v1, v0, None)
    P.norm_affine("vae.norm_out", v0)
    P.conv("vae.conv_out", v0, 3, 3)
    # Decoded normals face the camera on the whole (+z); this also keeps ‖n‖ away from 0, where the
    # per-pixel L2 normalisation would amplify f32 rounding beyond the 1e-4 comparison tolerance.
    P.calibrate("vae.conv_out.bias", np.array([0.1, -0.1, 2.0]))


def _timestep_features(dim):
    """diffusers Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0) at t = 401."""
    half = dim // 2
    f = np.exp(-math.log(10000.0) * np.arange(half) / half)
    a = T_FIXED * f
    return np.concatenate([np.cos(a), np.sin(a)])


# --- numpy golden ----------------------------------------------------------------------------------


def _reference(W, x, c):
    G = c.groups

    def conv(v, p, stride=1):
        w = W[p + ".weight"]
        return nn.conv2d(v, w, W[p + ".bias"], stride=stride, pad=w.shape[-1] // 2)

    def lin(v, p, bias=True):
        return v @ W[p + ".weight"] + (W[p + ".bias"] if bias and (p + ".bias") in W else 0.0)

    def gn(v, p, eps):
        return nn.group_norm(v, G, W[p + ".weight"], W[p + ".bias"], eps)

    def resnet(v, p, temb_act, eps=1e-5):
        h = conv(nn.silu(gn(v, p + ".norm1", eps)), p + ".conv1")
        if temb_act is not None:
            h = h + lin(temb_act, p + ".temb").reshape(1, -1, 1, 1)
        h = conv(nn.silu(gn(h, p + ".norm2", eps)), p + ".conv2")
        sc = conv(v, p + ".shortcut") if (p + ".shortcut.weight") in W else v
        return sc + h

    def attention(q_in, kv_in, p, heads):
        return lin(nn.mha(lin(q_in, p + ".q"), lin(kv_in, p + ".k"), lin(kv_in, p + ".v"), heads), p + ".o")

    def transformer(v, p, ctx):
        b, ch, hh, ww = v.shape
        t = gn(v, p + ".norm", 1e-6).reshape(ch, hh * ww).T
        t = lin(t, p + ".proj_in")
        n = nn.layer_norm(t, W[p + ".ln1.weight"], W[p + ".ln1.bias"])
        t = t + attention(n, n, p + ".attn1", c.heads)
        n = nn.layer_norm(t, W[p + ".ln2.weight"], W[p + ".ln2.bias"])
        t = t + attention(n, ctx, p + ".attn2", c.heads)
        n = nn.layer_norm(t, W[p + ".ln3.weight"], W[p + ".ln3.bias"])
        hidden, gate = np.split(lin(n, p + ".ff.geglu"), 2, axis=-1)
        t = t + lin(hidden * nn.gelu(gate), p + ".ff.out")
        t = lin(t, p + ".proj_out")
        return t.T.reshape(v.shape) + v

    def time_emb(p):
        e = lin(nn.silu(lin(_timestep_features(c.ch[0]), p + ".time.l1")), p + ".time.l2")
        return nn.silu(e)

    ctx = x["context"][0]

    def encoder(sample, p):
        temb = time_emb(p)
        h = conv(sample, p + ".conv_in")
        skips = [h]
        h = transformer(resnet(h, p + ".down0.res", temb), p + ".down0.attn", ctx)
        skips.append(h)
        h = conv(h, p + ".down0.downsample", stride=2)
        skips.append(h)
        h = resnet(h, p + ".down1.res", temb)
        skips.append(h)
        return skips, h, temb

    def mid(h, p, temb):
        h = resnet(h, p + ".mid.res0", temb)
        h = transformer(h, p + ".mid.attn", ctx)
        return resnet(h, p + ".mid.res1", temb)

    # ControlNet on the image latent.
    cskips, ch, ctemb = encoder(x["image_latent"], "cn")
    down_res = [conv(s, f"cn.zero{i}") for i, s in enumerate(cskips)]
    mid_res = conv(mid(ch, "cn", ctemb), "cn.zero_mid")
    # UNet on the noise, with the ControlNet residuals.
    skips, h, temb = encoder(x["noise"], "unet")
    skips = [s + r for s, r in zip(skips, down_res)]
    h = mid(h, "unet", temb) + mid_res
    h = resnet(np.concatenate([h, skips.pop()], axis=1), "unet.up0.res0", temb)
    h = resnet(np.concatenate([h, skips.pop()], axis=1), "unet.up0.res1", temb)
    h = conv(nn.upsample_nearest2x(h), "unet.up0.upsample")
    h = transformer(resnet(np.concatenate([h, skips.pop()], axis=1), "unet.up1.res0", temb), "unet.up1.attn0", ctx)
    h = transformer(resnet(np.concatenate([h, skips.pop()], axis=1), "unet.up1.res1", temb), "unet.up1.attn1", ctx)
    x0 = conv(nn.silu(gn(h, "unet.norm_out", 1e-5)), "unet.conv_out")

    # VAE decoder.
    z = conv(x0 / VAE_SCALE, "vae.post_quant")
    h = conv(z, "vae.conv_in")
    h = resnet(h, "vae.mid.res0", None, 1e-6)
    b, chn, hh, ww = h.shape
    t = gn(h, "vae.mid.attn.norm", 1e-6).reshape(chn, hh * ww).T
    a = nn.mha(lin(t, "vae.mid.attn.q"), lin(t, "vae.mid.attn.k"), lin(t, "vae.mid.attn.v"), 1)
    h = h + lin(a, "vae.mid.attn.o").T.reshape(h.shape)
    h = resnet(h, "vae.mid.res1", None, 1e-6)
    h = conv(nn.upsample_nearest2x(resnet(h, "vae.up0.res", None, 1e-6)), "vae.up0.upsample")
    h = conv(nn.upsample_nearest2x(resnet(h, "vae.up1.res", None, 1e-6)), "vae.up1.upsample")
    h = resnet(h, "vae.up2.res", None, 1e-6)
    n = conv(nn.silu(gn(h, "vae.norm_out", 1e-6)), "vae.conv_out")
    norm = np.sqrt((n * n).sum(axis=1, keepdims=True))
    return {"normal": n / np.maximum(norm, 1e-6)}


# --- graph emission --------------------------------------------------------------------------------


def _emit(g, c):
    P = g.params
    G = c.groups

    def conv(v, p, stride=1, name=None):
        k = P.arrays[p + ".weight"].shape[-1]
        pad = k // 2
        return g.op("Conv", [v, p + ".weight", p + ".bias"], strides=[stride, stride], pads=[pad] * 4, name=name or p.rsplit(".", 1)[-1])

    def gn(v, p, eps, name):
        return g.op("GroupNormalization", [v, p + ".weight", p + ".bias"], num_groups=G, epsilon=eps, name=name)

    def lin(v, p, name, bias=True):
        return g.linear(v, p + ".weight", p + ".bias" if bias else None, name=name)

    def silu(v, name):
        return g.op("Silu", [v], name=name)

    def resnet(v, p, temb_act, eps=1e-5):
        with g.scope(p.split(".", 1)[1]):
            h = conv(silu(gn(v, p + ".norm1", eps, "norm1"), "act1"), p + ".conv1")
            if temb_act is not None:
                t = g.op("Unsqueeze", [lin(temb_act, p + ".temb", "temb")], axes=[2, 3], name="temb4")
                h = g.op("Add", [h, t], name="add_temb")
            h = conv(silu(gn(h, p + ".norm2", eps, "norm2"), "act2"), p + ".conv2")
            sc = conv(v, p + ".shortcut") if (p + ".shortcut.weight") in P.arrays else v
            return g.op("Add", [sc, h], name="out")

    def to_tokens(v, ch, hw, name):
        return g.op("Transpose", [g.op("Reshape", [v], shape=[1, ch, hw * hw], name=name + ".flat")], perm=[0, 2, 1], name=name)

    def to_map(t, ch, hw, name):
        return g.op("Reshape", [g.op("Transpose", [t], perm=[0, 2, 1], name=name + ".t")], shape=[1, ch, hw, hw], name=name)

    def attention(q_in, kv_in, p, heads, tq, tk, ch, name):
        return _mha_nobias_qkv(g, q_in, kv_in, p, heads, tq, tk, ch, name)

    def transformer(v, p, ch, hw):
        with g.scope(p.split(".", 1)[1]):
            t = to_tokens(gn(v, p + ".norm", 1e-6, "norm"), ch, hw, "tokens")
            t = lin(t, p + ".proj_in", "proj_in")
            L = hw * hw
            n = g.op("LayerNormalization", [t, p + ".ln1.weight", p + ".ln1.bias"], axis=-1, epsilon=1e-5, name="ln1")
            t = g.op("Add", [t, attention(n, n, p + ".attn1", c.heads, L, L, ch, "attn1")], name="res1")
            n = g.op("LayerNormalization", [t, p + ".ln2.weight", p + ".ln2.bias"], axis=-1, epsilon=1e-5, name="ln2")
            t = g.op("Add", [t, attention(n, ctx, p + ".attn2", c.heads, L, c.ctx_len, ch, "attn2")], name="res2")
            n = g.op("LayerNormalization", [t, p + ".ln3.weight", p + ".ln3.bias"], axis=-1, epsilon=1e-5, name="ln3")
            hidden, gate = g.op("Split", [lin(n, p + ".ff.geglu", "geglu")], axis=-1, split=[4 * ch, 4 * ch], nout=2, name="geglu_split")
            f = g.op("Mul", [hidden, g.op("Gelu", [gate], name="gelu")], name="geglu_mul")
            t = g.op("Add", [t, lin(f, p + ".ff.out", "ff_out")], name="res3")
            t = lin(t, p + ".proj_out", "proj_out")
            return g.op("Add", [to_map(t, ch, hw, "map"), v], name="out")

    c0, c1 = c.ch
    hw0, hw1 = c.latent, c.latent // 2
    image_latent = g.input("image_latent", [1, 4, hw0, hw0])
    noise = g.input("noise", [1, 4, hw0, hw0])
    ctx = g.input("context", [1, c.ctx_len, c.ctx_dim])
    P.data("t_features", _timestep_features(c0).reshape(1, c0))

    def encoder(sample, p):
        with g.scope(p):
            e = silu(lin("t_features", p + ".time.l1", "time.l1"), "time.act")
            temb = silu(lin(e, p + ".time.l2", "time.l2"), "temb_act")
            h = conv(sample, p + ".conv_in")
            skips = [h]
            h = transformer(resnet(h, p + ".down0.res", temb), p + ".down0.attn", c0, hw0)
            skips.append(h)
            h = conv(h, p + ".down0.downsample", stride=2)
            skips.append(h)
            h = resnet(h, p + ".down1.res", temb)
            skips.append(h)
            return skips, h, temb

    def mid(h, p, temb):
        with g.scope(p):
            h = resnet(h, p + ".mid.res0", temb)
            h = transformer(h, p + ".mid.attn", c1, hw1)
            return resnet(h, p + ".mid.res1", temb)

    cskips, ch, ctemb = encoder(image_latent, "cn")
    with g.scope("cn"):
        down_res = [conv(s, f"cn.zero{i}", name=f"zero{i}") for i, s in enumerate(cskips)]
        mid_res = conv(mid(ch, "cn", ctemb), "cn.zero_mid", name="zero_mid")
    skips, h, temb = encoder(noise, "unet")
    with g.scope("unet"):
        skips = [g.op("Add", [s, r], name=f"skip{i}") for i, (s, r) in enumerate(zip(skips, down_res))]
        h = g.op("Add", [mid(h, "unet", temb), mid_res], name="mid_plus")
        cat = lambda a, b, name: g.op("Concat", [a, b], axis=1, name=name)
        h = resnet(cat(h, skips.pop(), "up0.cat0"), "unet.up0.res0", temb)
        h = resnet(cat(h, skips.pop(), "up0.cat1"), "unet.up0.res1", temb)
        h = g.op("Resize", [h], scales=[1.0, 1.0, 2.0, 2.0], coordinate_transformation_mode="asymmetric", nearest_mode="floor", name="up0.resize")
        h = conv(h, "unet.up0.upsample", name="up0.upsample")
        h = transformer(resnet(cat(h, skips.pop(), "up1.cat0"), "unet.up1.res0", temb), "unet.up1.attn0", c0, hw0)
        h = transformer(resnet(cat(h, skips.pop(), "up1.cat1"), "unet.up1.res1", temb), "unet.up1.attn1", c0, hw0)
        x0 = conv(silu(gn(h, "unet.norm_out", 1e-5, "norm_out"), "act_out"), "unet.conv_out")

    v0, v1, v2 = c.vae_ch
    with g.scope("vae"):
        z = conv(g.op("Mul", [x0, g.scalar(1.0 / VAE_SCALE)], name="unscale"), "vae.post_quant")
        h = conv(z, "vae.conv_in")
        h = resnet(h, "vae.mid.res0", None, 1e-6)
        t = to_tokens(gn(h, "vae.mid.attn.norm", 1e-6, "mid.attn.norm"), v2, hw0, "mid.attn.tokens")
        a = emit_vae_attention(g, t, hw0 * hw0, v2)
        h = g.op("Add", [h, to_map(a, v2, hw0, "mid.attn.map")], name="mid.attn.out")
        h = resnet(h, "vae.mid.res1", None, 1e-6)
        for k, (p, up) in enumerate((("vae.up0", True), ("vae.up1", True), ("vae.up2", False))):
            h = resnet(h, p + ".res", None, 1e-6)
            if up:
                h = g.op("Resize", [h], scales=[1.0, 1.0, 2.0, 2.0], coordinate_transformation_mode="asymmetric", nearest_mode="floor", name=f"up{k}.resize")
                h = conv(h, p + ".upsample", name=f"up{k}.upsample")
        n = conv(silu(gn(h, "vae.norm_out", 1e-6, "norm_out"), "act_out"), "vae.conv_out")
    norm = g.op("ReduceL2", [n], axes=[1], keepdims=1, name="pixel_norm")
    norm = g.op("Max", [norm, g.scalar(1e-6)], name="pixel_norm_clamped")
    g.output(g.op("Div", [n, norm], name="normal"))


def emit_vae_attention(g, t, L, ch):
    """Single-head spatial self-attention with biased q/k/v/o projections."""
    return emit_mha(g, t, t, "vae.mid.attn", 1, L, L, ch, name="mid.attn")


def _mha_nobias_qkv(g, xq, xkv, p, heads, tq, tk, d, name):
    """diffusers Attention: q/k/v without bias, output projection with bias."""
    dh = d // heads
    with g.scope(name):
        def heads_of(v, n, which, perm):
            v = g.op("Reshape", [g.linear(v, f"{p}.{which}.weight", name=which)], shape=[1, n, heads, dh], name=which + "_heads")
            return g.op("Transpose", [v], perm=perm, name=which + "_t")

        q = heads_of(xq, tq, "q", [0, 2, 1, 3])
        k = heads_of(xkv, tk, "k", [0, 2, 3, 1])
        v = heads_of(xkv, tk, "v", [0, 2, 1, 3])
        s = g.op("Mul", [g.op("MatMul", [q, k], name="scores"), g.scalar(dh**-0.5)], name="scaled")
        o = g.op("MatMul", [g.op("Softmax", [s], axis=-1, name="probs"), v], name="mix")
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 2, 1, 3], name="merge_t")], shape=[1, tq, d], name="merge")
        return g.linear(o, f"{p}.o.weight", f"{p}.o.bias", name="o")


def stablenormal_yoso(bench=False):
    c = Cfg(bench)
    name = "stablenormal_yoso_bench" if bench else "stablenormal_yoso"
    P = Params(seed=40000, inline_init=bench)
    _make_params(P, c)
    g = Graph(name, P)
    _emit(g, c)
    if bench:
        return Model(name, g)
    n = 4 * c.latent * c.latent
    x = {
        "image_latent": normal(1, n).reshape(1, 4, c.latent, c.latent),
        "noise": normal(2, n).reshape(1, 4, c.latent, c.latent),
        "context": normal(3, c.ctx_len * c.ctx_dim).reshape(1, c.ctx_len, c.ctx_dim),
    }
    return Model(name, g, x, lambda W, xx: _reference(W, xx, c))
