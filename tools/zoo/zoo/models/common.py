"""Graph-emission pieces shared by several families (the numpy side has its own, in zoo.nn)."""


def emit_mha(g, xq, xkv, p, heads, tq, tk, d, bias=True, mask=None, name="attn", xv=None):
    """Multi-head attention on [1, T, ·] tensors with projections p.q/k/v/o (weights [in, out]) to
    width d. `mask` is an additive [.., tq, tk] bias (0 allowed, large negative blocked); `xv`
    defaults to `xkv`."""
    dh = d // heads
    xv = xkv if xv is None else xv
    with g.scope(name):
        def proj(x, which):
            return g.linear(x, f"{p}.{which}.weight", f"{p}.{which}.bias" if bias else None, name=which)

        q = g.op("Reshape", [proj(xq, "q")], shape=[1, tq, heads, dh], name="q_heads")
        q = g.op("Transpose", [q], perm=[0, 2, 1, 3], name="q_t")
        k = g.op("Reshape", [proj(xkv, "k")], shape=[1, tk, heads, dh], name="k_heads")
        k = g.op("Transpose", [k], perm=[0, 2, 3, 1], name="k_t")
        v = g.op("Reshape", [proj(xv, "v")], shape=[1, tk, heads, dh], name="v_heads")
        v = g.op("Transpose", [v], perm=[0, 2, 1, 3], name="v_t")
        s = g.op("MatMul", [q, k], name="scores")
        s = g.op("Mul", [s, g.scalar(dh**-0.5)], name="scaled")
        if mask is not None:
            s = g.op("Add", [s, mask], name="masked")
        a = g.op("Softmax", [s], axis=-1, name="probs")
        o = g.op("MatMul", [a, v], name="mix")
        o = g.op("Transpose", [o], perm=[0, 2, 1, 3], name="merge_t")
        o = g.op("Reshape", [o], shape=[1, tq, d], name="merge")
        return proj(o, "o")


def attn_params(P, p, d, bias=True):
    for which in "qkvo":
        P.linear(f"{p}.{which}", d, d, bias=bias)
