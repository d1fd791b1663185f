"""GDWCT (WonwoongCho/GDWCT; seed-models.md §4) at inference: content encoder with eval-mode
InstanceNorm (running statistics, i.e. a per-channel affine, emitted as BatchNormalization), style
encoder with GroupNorm, group-wise WCT blocks and a GroupNorm(1) decoder ending in tanh."""

import numpy as np

from .. import nn
from ..graph import Graph
from ..model import Model
from ..params import Params
from ..rng import normal


class Cfg:
    def __init__(self, bench):
        if bench:
            self.size, self.conv_dim, self.groups, self.mlp, self.res = 128, 32, 8, 128, 4
        else:
            self.size, self.conv_dim, self.groups, self.mlp, self.res = 64, 16, 4, 64, 2
        self.c = 4 * self.conv_dim  # content/style width after two stride-2 convs
        self.n = self.c // self.groups
        self.alpha = 1.0 if bench else 0.9


def _wct_names(c):
    return ["wct0"] + [f"dec.res{i}.wct" for i in range(c.res)]


def _make_params(P, c):
    cd, C = c.conv_dim, c.c
    # Content encoder.
    P.conv("enc.c0", 3, cd, 7)
    P.conv("enc.c1", cd, 2 * cd, 4)
    P.conv("enc.c2", 2 * cd, C, 4)
    in_layers = ["enc.c0.in", "enc.c1.in", "enc.c2.in"]
    for i in range(c.res):
        P.conv(f"enc.res{i}.a", C, C, 3)
        P.conv(f"enc.res{i}.b", C, C, 3)
        in_layers += [f"enc.res{i}.a.in", f"enc.res{i}.b.in"]
    for p in in_layers:
        ch = P.arrays[p[:-3] + ".weight"].shape[0]
        P.norm_affine(p, ch)
        P.constant(p + ".running_mean", [ch], 0.0)  # calibrated below
        P.constant(p + ".running_var", [ch], 1.0)
    # Style encoder.
    P.conv("sty.c0", 3, cd, 7)
    chans = [cd, 2 * cd, C, C, C]
    for i in range(4):
        P.conv(f"sty.c{i + 1}", chans[i], chans[i + 1], 4)
        P.norm_affine(f"sty.c{i + 1}.gn", chans[i + 1])
    # WCT modules: MLP_CT (per group) and MLP_mu.
    for w in _wct_names(c):
        P.linear(f"{w}.ct0", c.n, c.mlp)
        for k in range(1, 4):
            P.linear(f"{w}.ct{k}", c.mlp, c.mlp)
        # Column norms of S set the coloring gain; 1/√n keeps them ≈ 1 so WCTs do not compound.
        P.linear(f"{w}.ct4", c.mlp, c.n * c.n, gain=c.n**-0.5)
        for k in range(3):
            P.linear(f"{w}.mu{k}", C, C, gain=0.5 if k == 2 else 1.0)
    for i in range(c.res):
        P.conv(f"dec.res{i}.a", C, C, 3, gain=0.7)
        P.conv(f"dec.res{i}.b", C, C, 3, gain=0.7)
    P.conv("dec.up0", C, C // 2, 5)
    P.norm_affine("dec.up0.gn", C // 2)
    P.conv("dec.up1", C // 2, C // 4, 5)
    P.norm_affine("dec.up1.gn", C // 4)
    P.conv("dec.out", C // 4, 3, 7, gain=0.7)
    return in_layers


# --- numpy golden ----------------------------------------------------------------------------------


def _reference(W, x, c, calib=None):
    def conv(v, p, k, stride=1):
        return nn.conv2d(nn.reflect_pad(v, k // 2 if stride == 1 else 1), W[p + ".weight"], W[p + ".bias"], stride)

    def inorm(v, p):
        # InstanceNorm2d(affine, track_running_stats) in eval mode: running statistics.
        if calib is not None:
            _calibrate(calib, W, v, p)
        return nn.batch_norm_eval(v, W[p + ".weight"], W[p + ".bias"], W[p + ".running_mean"], W[p + ".running_var"])

    def gn(v, p, groups):
        return nn.group_norm(v, groups, W[p + ".weight"], W[p + ".bias"])

    def lin(v, p):
        return v @ W[p + ".weight"] + W[p + ".bias"]

    # Content encoder.
    h = nn.relu(inorm(conv(x["content"], "enc.c0", 7), "enc.c0.in"))
    h = nn.relu(inorm(conv(h, "enc.c1", 4, 2), "enc.c1.in"))
    h = nn.relu(inorm(conv(h, "enc.c2", 4, 2), "enc.c2.in"))
    for i in range(c.res):
        r = nn.relu(inorm(conv(h, f"enc.res{i}.a", 3), f"enc.res{i}.a.in"))
        h = h + inorm(conv(r, f"enc.res{i}.b", 3), f"enc.res{i}.b.in")
    # Style encoder.
    s = nn.relu(conv(x["style"], "sty.c0", 7))
    for i in range(1, 5):
        s = nn.relu(gn(conv(s, f"sty.c{i}", 4, 2), f"sty.c{i}.gn", c.groups))
    s = s.mean(axis=(2, 3))  # [1, C]

    def wct(cf, w):
        B, C, H, Wd = cf.shape
        t = s.reshape(B * c.groups, c.n)
        t = nn.leaky_relu(lin(t, f"{w}.ct0"))
        for k in range(1, 4):
            t = nn.leaky_relu(lin(t, f"{w}.ct{k}"))
        S = lin(t, f"{w}.ct4").reshape(B, c.groups, c.n, c.n)
        D = np.sqrt((S**2).sum(axis=2, keepdims=True))  # column norms
        U = S / D
        X = S @ U.transpose(0, 1, 3, 2)
        blockdiag = np.zeros((B, C, C))
        for gi in range(c.groups):
            sl = slice(gi * c.n, (gi + 1) * c.n)
            blockdiag[:, sl, sl] = X[:, gi]
        mu = nn.leaky_relu(lin(s, f"{w}.mu0"))
        mu = nn.leaky_relu(lin(mu, f"{w}.mu1"))
        mu = lin(mu, f"{w}.mu2").reshape(B, C, 1, 1)
        centered = cf - cf.mean(axis=(0, 2, 3), keepdims=True)  # whitening at inference = centering
        colored = (blockdiag @ centered.reshape(B, C, H * Wd)).reshape(cf.shape)
        return c.alpha * (colored + mu) + (1 - c.alpha) * cf

    h = wct(h, "wct0")
    for i in range(c.res):
        r = nn.relu(conv(h, f"dec.res{i}.a", 3))
        h = wct(h + conv(r, f"dec.res{i}.b", 3), f"dec.res{i}.wct")
    h = nn.relu(gn(conv(nn.upsample_nearest2x(h), "dec.up0", 5), "dec.up0.gn", 1))
    h = nn.relu(gn(conv(nn.upsample_nearest2x(h), "dec.up1", 5), "dec.up1.gn", 1))
    return {"image": np.tanh(conv(h, "dec.out", 7))}


def _calibrate(P, W, v, p):
    """Running statistics as training leaves them: per-channel mean/var of this input, perturbed."""
    ch = v.shape[1]
    seed = 900 + len(p) * 31 + sum(map(ord, p))
    mean = v.mean(axis=(0, 2, 3)) + 0.1 * v.std(axis=(0, 2, 3)) * normal(seed, ch)
    var = v.var(axis=(0, 2, 3)) * np.exp(0.2 * normal(seed + 1, ch))
    for key, val in ((".running_mean", mean), (".running_var", var)):
        P.calibrate(p + key, val)
        W[p + key] = P.arrays[p + key].astype(np.float64)


# --- graph emission --------------------------------------------------------------------------------


def _emit(g, c):
    C = c.c

    def conv(v, p, k, stride=1, name=None):
        pad = k // 2 if stride == 1 else 1
        name = name or p.split(".", 1)[1]
        v = g.op("Pad", [v], mode="reflect", pads=[0, 0, pad, pad, 0, 0, pad, pad], name=name + ".pad")
        return g.op("Conv", [v, p + ".weight", p + ".bias"], strides=[stride, stride], name=name)

    def inorm(v, p):
        ins = [v, p + ".weight", p + ".bias", p + ".running_mean", p + ".running_var"]
        return g.op("BatchNormalization", ins, epsilon=1e-5, name=p.split(".", 1)[1])

    def gn(v, p, groups):
        return g.op("GroupNormalization", [v, p + ".weight", p + ".bias"], num_groups=groups, epsilon=1e-5, name=p.split(".", 1)[1])

    relu = lambda v, name: g.op("Relu", [v], name=name)
    lrelu = lambda v, name: g.op("LeakyRelu", [v], alpha=0.01, name=name)

    content = g.input("content", [1, 3, c.size, c.size])
    style = g.input("style", [1, 3, c.size, c.size])
    with g.scope("enc"):
        h = relu(inorm(conv(content, "enc.c0", 7), "enc.c0.in"), "c0.relu")
        h = relu(inorm(conv(h, "enc.c1", 4, 2), "enc.c1.in"), "c1.relu")
        h = relu(inorm(conv(h, "enc.c2", 4, 2), "enc.c2.in"), "c2.relu")
        for i in range(c.res):
            r = relu(inorm(conv(h, f"enc.res{i}.a", 3), f"enc.res{i}.a.in"), f"res{i}.relu")
            h = g.op("Add", [h, inorm(conv(r, f"enc.res{i}.b", 3), f"enc.res{i}.b.in")], name=f"res{i}")
    with g.scope("sty"):
        s = relu(conv(style, "sty.c0", 7), "c0.relu")
        for i in range(1, 5):
            s = relu(gn(conv(s, f"sty.c{i}", 4, 2), f"sty.c{i}.gn", c.groups), f"c{i}.relu")
        s = g.op("ReduceMean", [s], axes=[2, 3], keepdims=0, name="pool")  # [1, C]
        s_groups = g.op("Reshape", [s], shape=[c.groups, c.n], name="groups")

    def wct(cf, w, hw):
        with g.scope(w):
            t = lrelu(g.linear(s_groups, f"{w}.ct0.weight", f"{w}.ct0.bias", name="ct0"), "ct0.act")
            for k in range(1, 4):
                t = lrelu(g.linear(t, f"{w}.ct{k}.weight", f"{w}.ct{k}.bias", name=f"ct{k}"), f"ct{k}.act")
            S = g.op("Reshape", [g.linear(t, f"{w}.ct4.weight", f"{w}.ct4.bias", name="ct4")], shape=[1, c.groups, c.n, c.n], name="S")
            D = g.op("ReduceL2", [S], axes=[2], keepdims=1, name="D")
            U = g.op("Div", [S, D], name="U")
            X = g.op("MatMul", [S, g.op("Transpose", [U], perm=[0, 1, 3, 2], name="U_T")], name="X")  # [1, G, n, n]
            mu = lrelu(g.linear(s, f"{w}.mu0.weight", f"{w}.mu0.bias", name="mu0"), "mu0.act")
            mu = lrelu(g.linear(mu, f"{w}.mu1.weight", f"{w}.mu1.bias", name="mu1"), "mu1.act")
            mu = g.op("Reshape", [g.linear(mu, f"{w}.mu2.weight", f"{w}.mu2.bias", name="mu2")], shape=[1, C, 1, 1], name="mu")
            mean = g.op("ReduceMean", [cf], axes=[0, 2, 3], keepdims=1, name="mean")
            cen = g.op("Reshape", [g.op("Sub", [cf, mean], name="center")], shape=[1, c.groups, c.n, hw * hw], name="center_groups")
            col = g.op("Reshape", [g.op("MatMul", [X, cen], name="color")], shape=[1, C, hw, hw], name="colored")
            out = g.op("Mul", [g.op("Add", [col, mu], name="add_mu"), g.scalar(c.alpha)], name="alpha")
            if c.alpha == 1.0:
                return out
            keep = g.op("Mul", [cf, g.scalar(1.0 - c.alpha)], name="keep")
            return g.op("Add", [out, keep], name="blend")

    hw = c.size // 4
    h = wct(h, "wct0", hw)
    with g.scope("dec"):
        for i in range(c.res):
            r = relu(conv(h, f"dec.res{i}.a", 3), f"res{i}.relu")
            h = wct(g.op("Add", [h, conv(r, f"dec.res{i}.b", 3)], name=f"res{i}"), f"dec.res{i}.wct", hw)
        for k in range(2):
            u = g.op("Resize", [h], scales=[1.0, 1.0, 2.0, 2.0], coordinate_transformation_mode="asymmetric", nearest_mode="floor", name=f"up{k}.resize")
            h = relu(gn(conv(u, f"dec.up{k}", 5), f"dec.up{k}.gn", 1), f"up{k}.relu")
        out = conv(h, "dec.out", 7)
    g.output(g.op("Tanh", [out], name="image"))


def gdwct(bench=False):
    c = Cfg(bench)
    name = "gdwct_bench" if bench else "gdwct"
    P = Params(seed=30000, inline_init=bench)
    _make_params(P, c)
    g = Graph(name, P)
    _emit(g, c)
    hw = c.size * c.size * 3
    if bench:
        # Calibrate on what `kiln run` feeds: inputs 0 and 1 are normal streams 0 and 1.
        x = {"content": normal(0, hw), "style": normal(1, hw)}
    else:
        # Smooth-ish images in [−1, 1] (a sum of low-frequency patterns), not white noise.
        yy, xx = np.mgrid[0 : c.size, 0 : c.size] / c.size
        img = lambda a, b, ph: np.stack([np.sin(2 * np.pi * (a * xx + b * yy) + ph + k) for k in range(3)])
        x = {
            "content": np.clip(img(1.0, 2.0, 0.3) * 0.7 + 0.3 * normal(1, hw).reshape(3, c.size, c.size), -1, 1),
            "style": np.clip(img(3.0, -1.0, 1.1) * 0.8 + 0.2 * normal(2, hw).reshape(3, c.size, c.size), -1, 1),
        }
    x = {k: v.reshape(1, 3, c.size, c.size).astype(np.float32) for k, v in x.items()}
    W = {k: a.astype(np.float64) for k, a in P.arrays.items()}
    _reference(W, {k: v.astype(np.float64) for k, v in x.items()}, c, calib=P)
    if bench:
        return Model(name, g)
    return Model(name, g, x, lambda W, xx: _reference(W, xx, c))
