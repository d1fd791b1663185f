//! ONNX `Attention` (opset 23+) decomposed into kiln primitives, since kiln has no fused attention
//! op yet: heads split (3-D inputs), KV cache concatenated, KV heads repeated for grouped-query
//! attention, `softmax(scale·QKᵀ [softcapped] + bias)·V` with the bias built from the mask and
//! `is_causal`, heads merged back. The optimizer is expected to recognise this pattern.
//!
//! Rows whose every key the mask hides are 0, as in the ONNX reference. Not supported (clear
//! errors): `nonpad_kv_seqlen`, sliding windows (opset 25), Q/K head sizes that differ.

use super::import::Ctx;
use super::lower::{Lowered, input};
use super::proto::NodeProto;
use kiln_ir::{Attr, Attrs, BinaryOp, DType, Op, PadMode, ReduceKind, Tensor, UnaryOp};

struct Names<'a> {
    node: &'a str,
}

impl Names<'_> {
    fn t(&self, what: &str) -> String {
        format!("{}/{what}", self.node)
    }
}

fn take_int(attrs: &mut Attrs, key: &str) -> Result<Option<i64>, String> {
    match attrs.remove(key) {
        None => Ok(None),
        Some(Attr::Int(v)) => Ok(Some(v)),
        Some(other) => Err(format!("Attention's '{key}' must be an int, got {other}")),
    }
}

fn take_float(attrs: &mut Attrs, key: &str) -> Result<Option<f32>, String> {
    match attrs.remove(key) {
        None => Ok(None),
        Some(Attr::Float(v)) => Ok(Some(v)),
        Some(Attr::Int(v)) => Ok(Some(v as f32)),
        Some(other) => Err(format!("Attention's '{key}' must be a float, got {other}")),
    }
}

pub(crate) fn lower(ctx: &Ctx, name: &str, node: &NodeProto, mut attrs: Attrs) -> Result<Lowered, String> {
    let is_causal = take_int(&mut attrs, "is_causal")?.unwrap_or(0) != 0;
    let q_heads_attr = take_int(&mut attrs, "q_num_heads")?;
    let kv_heads_attr = take_int(&mut attrs, "kv_num_heads")?;
    let qk_mode = take_int(&mut attrs, "qk_matmul_output_mode")?.unwrap_or(0);
    let scale_attr = take_float(&mut attrs, "scale")?;
    let softcap = take_float(&mut attrs, "softcap")?.unwrap_or(0.0);
    // kiln computes in f32 throughout, which is what every softmax_precision asks for or exceeds.
    take_int(&mut attrs, "softmax_precision")?;
    for key in ["left_window_size", "right_window_size"] {
        if let Some(v) = take_int(&mut attrs, key)?
            && v != -1
        {
            return Err(format!("Attention with {key} = {v} (sliding window) is not supported"));
        }
    }
    if let Some(extra) = attrs.keys().next() {
        return Err(format!("Attention has no attribute '{extra}'"));
    }
    if input(node, 6).is_some() {
        return Err("Attention's nonpad_kv_seqlen input is not supported".into());
    }
    if !(0..=3).contains(&qk_mode) {
        return Err(format!("Attention's qk_matmul_output_mode must be 0 to 3, got {qk_mode}"));
    }
    let shape = |i: usize, what: &str| -> Result<Vec<usize>, String> {
        let n = input(node, i).ok_or_else(|| format!("Attention needs its {what} input"))?;
        let ty = ctx.ty(n).ok_or_else(|| format!("the shape of the {what} ('{n}') is not known at load time"))?;
        if ty.dtype != DType::F32 && i != 3 {
            return Err(format!("Attention's {what} must be float, got {}", ty.dtype));
        }
        Ok(ty.shape.clone())
    };
    let (q_shape, k_shape, v_shape) = (shape(0, "Q")?, shape(1, "K")?, shape(2, "V")?);
    let rank = q_shape.len();
    if k_shape.len() != rank || v_shape.len() != rank || !(rank == 3 || rank == 4) {
        return Err(format!(
            "Attention's Q, K and V must all be 3-D or all 4-D, got {q_shape:?}, {k_shape:?}, {v_shape:?}"
        ));
    }
    let n = Names { node: name };
    let mut l = Lowered::default();
    let (q_in, k_in, v_in) =
        (input(node, 0).unwrap_or_default(), input(node, 1).unwrap_or_default(), input(node, 2).unwrap_or_default());
    let batch = q_shape[0];

    // Bring Q, K, V to [batch, heads, seq, head_size].
    let (q, k, v, q_heads, kv_heads, head_q, head_v, seq_q, seq_k_new);
    if rank == 3 {
        let positive = |v: Option<i64>, what: &str| -> Result<usize, String> {
            v.and_then(|h| usize::try_from(h).ok())
                .filter(|&h| h > 0)
                .ok_or_else(|| format!("3-D Attention needs a positive '{what}'"))
        };
        q_heads = positive(q_heads_attr, "q_num_heads")?;
        kv_heads = positive(kv_heads_attr, "kv_num_heads")?;
        if q_shape[2] % q_heads != 0 || k_shape[2] % kv_heads != 0 || v_shape[2] % kv_heads != 0 {
            return Err("Attention's hidden sizes must be divisible by the head counts".into());
        }
        head_q = q_shape[2] / q_heads;
        head_v = v_shape[2] / kv_heads;
        if k_shape[2] / kv_heads != head_q {
            return Err("Attention's Q and K head sizes differ".into());
        }
        seq_q = q_shape[1];
        seq_k_new = k_shape[1];
        let mut split = |x: &str, tag: &str, seq: usize, heads: usize, size: usize| -> String {
            let r = n.t(&format!("{tag}_heads"));
            let shape = vec![batch as i64, seq as i64, heads as i64, size as i64];
            l.push(
                n.t(&format!("reshape_{tag}")),
                Op::Reshape { shape, allowzero: false },
                vec![x.into()],
                vec![r.clone()],
            );
            let t = n.t(tag);
            l.push(
                n.t(&format!("transpose_{tag}")),
                Op::Transpose { perm: Some(vec![0, 2, 1, 3]) },
                vec![r],
                vec![t.clone()],
            );
            t
        };
        q = split(q_in, "q", seq_q, q_heads, head_q);
        k = split(k_in, "k", seq_k_new, kv_heads, head_q);
        v = split(v_in, "v", seq_k_new, kv_heads, head_v);
    } else {
        if q_heads_attr.is_some() || kv_heads_attr.is_some() {
            return Err(
                "4-D Attention takes its head counts from the shapes; q_num_heads/kv_num_heads must not be given"
                    .into(),
            );
        }
        (q_heads, kv_heads, head_q, head_v, seq_q, seq_k_new) =
            (q_shape[1], k_shape[1], q_shape[3], v_shape[3], q_shape[2], k_shape[2]);
        if k_shape[3] != head_q {
            return Err("Attention's Q and K head sizes differ".into());
        }
        (q, k, v) = (q_in.to_string(), k_in.to_string(), v_in.to_string());
    }
    if kv_heads == 0 || q_heads % kv_heads != 0 {
        return Err(format!("Attention's q heads ({q_heads}) must be a multiple of its kv heads ({kv_heads})"));
    }

    // KV cache.
    let outputs: Vec<&str> = node.output.iter().map(String::as_str).collect();
    let output = |i: usize| outputs.get(i).copied().filter(|s| !s.is_empty());
    let mut past_len = 0;
    let mut with_past = |l: &mut Lowered, x: String, index: usize, tag: &str| -> Result<String, String> {
        let present_name = output(index - 3).map(str::to_string);
        let result = match input(node, index) {
            Some(past) => {
                let p = shape(index, tag)?;
                if p.len() != 4 {
                    return Err(format!("Attention's {tag} must be 4-D, got {p:?}"));
                }
                past_len = p[2];
                let out = present_name.clone().unwrap_or_else(|| n.t(&format!("present_{tag}")));
                l.push(n.t(&format!("concat_{tag}")), Op::Concat { axis: 2 }, vec![past.into(), x], vec![out.clone()]);
                return Ok(out);
            }
            None => x,
        };
        if let Some(out) = present_name {
            l.push(n.t(&format!("present_{tag}")), Op::Identity, vec![result.clone()], vec![out.clone()]);
            return Ok(out);
        }
        Ok(result)
    };
    if input(node, 4).is_some() != input(node, 5).is_some() {
        return Err("Attention's past_key and past_value must be given together".into());
    }
    let k = with_past(&mut l, k, 4, "past_key")?;
    let v = with_past(&mut l, v, 5, "past_value")?;
    let seq_k = past_len + seq_k_new;

    // Grouped-query attention: repeat each KV head q_heads/kv_heads times (np.repeat on axis 1).
    let mut repeat = |x: String, tag: &str, size: usize| -> String {
        if q_heads == kv_heads {
            return x;
        }
        let reps = q_heads / kv_heads;
        let u = n.t(&format!("{tag}_unsq"));
        l.push(n.t(&format!("unsqueeze_{tag}")), Op::Unsqueeze { axes: vec![2] }, vec![x], vec![u.clone()]);
        let e = n.t(&format!("{tag}_rep"));
        let shape = [batch, kv_heads, reps, seq_k, size].map(|d| d as i64).to_vec();
        l.push(n.t(&format!("expand_{tag}")), Op::Expand { shape }, vec![u], vec![e.clone()]);
        let r = n.t(&format!("{tag}_grouped"));
        let shape = [batch, q_heads, seq_k, size].map(|d| d as i64).to_vec();
        l.push(
            n.t(&format!("reshape_{tag}_grouped")),
            Op::Reshape { shape, allowzero: false },
            vec![e],
            vec![r.clone()],
        );
        r
    };
    let k = repeat(k, "k", head_q);
    let v = repeat(v, "v", head_v);

    // Scores.
    let kt = n.t("kT");
    l.push(n.t("transpose_kT"), Op::Transpose { perm: Some(vec![0, 1, 3, 2]) }, vec![k], vec![kt.clone()]);
    let qk = n.t("qk");
    l.push(n.t("matmul_qk"), Op::MatMul, vec![q, kt], vec![qk.clone()]);
    let scale = scale_attr.unwrap_or(1.0 / (head_q as f32).sqrt());
    l.consts.push((n.t("scale"), Tensor::scalar_f32(scale)));
    let mut scores = n.t("scores");
    l.push(n.t("mul_scale"), Op::Binary(BinaryOp::Mul), vec![qk, n.t("scale")], vec![scores.clone()]);
    if softcap > 0.0 {
        l.consts.push((n.t("softcap"), Tensor::scalar_f32(softcap)));
        l.push(n.t("div_softcap"), Op::Binary(BinaryOp::Div), vec![scores, n.t("softcap")], vec![n.t("capped_in")]);
        l.push(n.t("tanh_softcap"), Op::Unary(UnaryOp::Tanh), vec![n.t("capped_in")], vec![n.t("capped_tanh")]);
        l.push(
            n.t("mul_softcap"),
            Op::Binary(BinaryOp::Mul),
            vec![n.t("capped_tanh"), n.t("softcap")],
            vec![n.t("capped")],
        );
        scores = n.t("capped");
    }
    let raw_scores = scores.clone();

    // Additive bias from the mask and causality.
    let mut bias: Option<String> = None;
    if let Some(mask) = input(node, 3) {
        let mt =
            ctx.ty(mask).ok_or_else(|| format!("the shape of the attn_mask ('{mask}') is not known at load time"))?;
        let mut m = mask.to_string();
        if mt.dtype == DType::Bool {
            l.consts.push((n.t("zero"), Tensor::scalar_f32(0.0)));
            l.consts.push((n.t("neg_inf"), Tensor::scalar_f32(f32::NEG_INFINITY)));
            l.push(n.t("mask_to_bias"), Op::Where, vec![m, n.t("zero"), n.t("neg_inf")], vec![n.t("mask_bias")]);
            m = n.t("mask_bias");
        } else if mt.dtype != DType::F32 {
            return Err(format!("Attention's attn_mask must be bool or float, got {}", mt.dtype));
        }
        let last = *mt.shape.last().ok_or("Attention's attn_mask must have at least one axis")?;
        if last < seq_k {
            // A mask shorter than the keys is padded with "masked" (ONNX semantics).
            let r = mt.shape.len();
            let mut pads = vec![0i64; 2 * r];
            pads[2 * r - 1] = (seq_k - last) as i64;
            let op = Op::Pad { mode: PadMode::Constant, pads, value: f32::NEG_INFINITY };
            l.push(n.t("pad_mask"), op, vec![m], vec![n.t("mask_padded")]);
            m = n.t("mask_padded");
        }
        bias = Some(m);
    }
    if is_causal {
        // 64 Mi entries (256 MiB), enough for 8k×8k; larger masks should be a kiln op, not a weight.
        if seq_q.saturating_mul(seq_k) > 1 << 26 {
            return Err(format!("a causal mask of {seq_q}×{seq_k} is too large"));
        }
        // Query i (after `past_len` cached positions) sees key j iff j ≤ i + past_len.
        let mut data = Vec::with_capacity(seq_q * seq_k);
        for i in 0..seq_q {
            for j in 0..seq_k {
                data.push(if j <= i + past_len { 0.0 } else { f32::NEG_INFINITY });
            }
        }
        l.consts.push((n.t("causal"), Tensor::from_f32([seq_q, seq_k], data)?));
        bias = Some(match bias {
            None => n.t("causal"),
            Some(m) => {
                l.push(n.t("add_causal"), Op::Binary(BinaryOp::Add), vec![m, n.t("causal")], vec![n.t("bias")]);
                n.t("bias")
            }
        });
    }
    // Only a user mask can hide every key of a row (the causal mask always leaves key 0).
    let user_bias = if input(node, 3).is_some() { bias.clone() } else { None };
    let biased = match bias {
        None => scores,
        Some(b) => {
            l.push(n.t("add_bias"), Op::Binary(BinaryOp::Add), vec![scores, b], vec![n.t("biased")]);
            n.t("biased")
        }
    };
    let mut probs = n.t("probs");
    l.push(n.t("softmax"), Op::Softmax { axis: -1 }, vec![biased.clone()], vec![probs.clone()]);
    if let Some(mask_bias) = &user_bias {
        // A row whose every key the mask hides is all −∞: softmax gives NaN there, ONNX gives 0.
        let reduce =
            Op::Reduce { kind: ReduceKind::Max, axes: Some(vec![-1]), keepdims: true, noop_with_empty_axes: false };
        l.push(n.t("row_max"), reduce, vec![mask_bias.clone()], vec![n.t("bias_row_max")]);
        l.consts.push((n.t("row_neg_inf"), Tensor::scalar_f32(f32::NEG_INFINITY)));
        l.consts.push((n.t("row_zero"), Tensor::scalar_f32(0.0)));
        l.push(
            n.t("row_masked"),
            Op::Binary(BinaryOp::Equal),
            vec![n.t("bias_row_max"), n.t("row_neg_inf")],
            vec![n.t("row_all_masked")],
        );
        l.push(
            n.t("zero_masked_rows"),
            Op::Where,
            vec![n.t("row_all_masked"), n.t("row_zero"), probs],
            vec![n.t("probs_safe")],
        );
        probs = n.t("probs_safe");
    }
    if let Some(out) = output(3) {
        let src = match qk_mode {
            0 | 1 => raw_scores,
            2 => biased,
            _ => probs.clone(),
        };
        l.push(n.t("qk_output"), Op::Identity, vec![src], vec![out.to_string()]);
    }
    let y = output(0).ok_or("Attention needs its Y output")?.to_string();
    if rank == 4 {
        l.push(name.to_string(), Op::MatMul, vec![probs, v], vec![y]);
    } else {
        l.push(n.t("matmul_v"), Op::MatMul, vec![probs, v], vec![n.t("y_heads")]);
        l.push(
            n.t("transpose_y"),
            Op::Transpose { perm: Some(vec![0, 2, 1, 3]) },
            vec![n.t("y_heads")],
            vec![n.t("y_t")],
        );
        let shape = [batch, seq_q, q_heads * head_v].map(|d| d as i64).to_vec();
        l.push(name.to_string(), Op::Reshape { shape, allowzero: false }, vec![n.t("y_t")], vec![y]);
    }
    Ok(l)
}
