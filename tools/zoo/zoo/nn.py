"""Plain numpy building blocks for the golden forward passes, in float64.

Written from the papers' formulas and the PyTorch layer definitions, not from kiln's op set: the
goldens must not share code (or mistakes) with the graph emission in zoo.graph.
"""

import math

import numpy as np


def layer_norm(x, gamma=None, beta=None, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def rms_norm(x, gamma, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * gamma


def batch_norm_eval(x, gamma, beta, mean, var, eps=1e-5):
    """BatchNorm at inference; channels on axis 1."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    r = lambda v: v.reshape(shape)
    return (x - r(mean)) / np.sqrt(r(var) + eps) * r(gamma) + r(beta)


def group_norm(x, groups, gamma, beta, eps=1e-5):
    n, c = x.shape[:2]
    xr = x.reshape(n, groups, -1)
    mu = xr.mean(-1, keepdims=True)
    var = ((xr - mu) ** 2).mean(-1, keepdims=True)
    y = ((xr - mu) / np.sqrt(var + eps)).reshape(x.shape)
    return y * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def relu(x):
    return np.maximum(x, 0.0)


def leaky_relu(x, slope=0.01):
    return np.where(x > 0, x, slope * x)


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu(x):
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(np.minimum(x, 0.0)) - 1.0))


def conv2d(x, w, b=None, stride=1, pad=0):
    """Cross-correlation like torch.nn.functional.conv2d; x [N,C,H,W], w [M,C,kh,kw], zero padding."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    cols = np.empty((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
    y = np.einsum("nckluv,mckl->nmuv", cols, w, optimize=True)
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y


def reflect_pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")


def upsample_nearest2x(x):
    return x.repeat(2, axis=2).repeat(2, axis=3)


def mha(q, k, v, heads, mask_bias=None):
    """Scaled dot-product attention; q [Tq, D], k/v [Tk, D] split into `heads` heads."""
    tq, d = q.shape
    tk = k.shape[0]
    dh = d // heads
    qh = q.reshape(tq, heads, dh).transpose(1, 0, 2)
    kh = k.reshape(tk, heads, dh).transpose(1, 0, 2)
    vh = v.reshape(tk, heads, -1).transpose(1, 0, 2)
    s = qh @ kh.transpose(0, 2, 1) / math.sqrt(dh)
    if mask_bias is not None:
        s = s + mask_bias
    a = softmax(s, -1) @ vh
    return a.transpose(1, 0, 2).reshape(tq, -1)
