//! Issue 12's elementwise ops through the library: each op on ±0, ±inf, NaN, tiny, huge and a
//! dense grid of ordinary values, the JIT at -O0 and -O2 with 1 and 2 threads against the
//! reference interpreter; bool tensors end to end (inputs, And/Or/Xor/Not, Where, Equal, outputs);
//! and the ops fusing into one generated kernel.

use kiln::{Backend, OptLevel, Options, Tensor, TensorData};

/// Loads `text` as a .kir model written to a scratch file.
fn load(name: &str, text: &str) -> kiln::Model {
    let dir = std::env::temp_dir().join(format!("kiln-ew-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.kir"));
    std::fs::write(&path, text).unwrap();
    kiln::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The values every f32 op sees: specials, then a grid over [−12, 12] (step 1/8, so exact
/// halves for Round and integers for Floor/Ceil), then large arguments. 20 + 193 + 16 = 229
/// values: 57 vectors of 4 and a scalar tail of 1.
fn values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-39,
        -1e-39,
        1e-30,
        -1e-30,
        1e-7,
        -1e-7,
        1e30,
        -1e30,
        3e38,
        -3e38,
        0.5,
        -0.5,
        1.0,
        -1.0,
        0.999_999_9,
    ];
    v.extend((-96..=96).map(|i| i as f32 / 8.0));
    v.extend([
        20.0, -20.0, 50.0, -50.0, 88.5, -88.5, 89.4, -89.4, 100.0, 1000.0, -1000.0, 4096.5, 1e4, -3.0e4, 1e5, 1.5,
    ]);
    v
}

/// Runs `text` on the interpreter and the JIT at -O0/-O2 × 1/2 threads with `inputs`; f32 outputs
/// within `abs + rel·|want|` (NaN where the reference is NaN, infinities equal), others equal.
fn check(name: &str, text: &str, inputs: &[(String, Tensor)], abs: f32, rel: f32) -> Vec<(String, Tensor)> {
    let interp = Options { backend: Backend::Interp, opt_level: OptLevel::O0, ..Default::default() };
    let want = kiln::compile(load(name, text), &interp).unwrap().run(inputs).unwrap();
    for opt_level in [OptLevel::O0, OptLevel::O2] {
        for threads in [1, 2] {
            let options = Options { backend: Backend::Jit, opt_level, threads: Some(threads), ..Default::default() };
            let compiled = kiln::compile(load(name, text), &options).unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = compiled.run(inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
            for ((n, g), (_, w)) in got.iter().zip(&want) {
                assert_eq!(g.ty(), w.ty(), "{name} {n}");
                let (TensorData::F32(g), TensorData::F32(w)) = (g.data(), w.data()) else {
                    assert_eq!(g, w, "{name} {n} at {opt_level:?}, {threads} threads");
                    continue;
                };
                let x = inputs[0].1.as_f32();
                for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
                    let ok = if b.is_nan() { a.is_nan() } else { a == b || (a - b).abs() <= abs + rel * b.abs() };
                    let at = x.and_then(|x| x.get(i)).map(|x| format!(" (x = {x:e})")).unwrap_or_default();
                    assert!(ok, "{name} {n}[{i}]{at} at {opt_level:?}, {threads} threads: got {a:e}, want {b:e}");
                }
            }
        }
    }
    want
}

fn unary_text(op: &str, attrs: &str, out: &str, n: usize) -> String {
    format!("kir 1\ngraph g\ninput x: f32[{n}]\nnode n = {op}(x){attrs} -> y: {out}[{n}]\noutput y\n")
}

#[test]
fn unary_ops_match_the_interpreter_on_special_and_ordinary_values() {
    let xs = values();
    let n = xs.len();
    // Sin/Cos/Tan within their accurate range, |x| ≤ 2^17 (1e30 → 1e5, 3e38 → −1e5).
    let trig_xs: Vec<f32> =
        xs.iter().map(|&x| if x.abs() > 131_072.0 && x.is_finite() { 1e5f32.copysign(x) } else { x }).collect();
    let trig_inputs = vec![("x".to_string(), Tensor::from_f32([n], trig_xs).unwrap())];
    let inputs = vec![("x".to_string(), Tensor::from_f32([n], xs).unwrap())];
    // (op, attributes, output type, relative tolerance). Transcendentals: the vmath bounds
    // (math_tests.rs) plus the f64 reference's rounding, with margin; exact ops: 0.
    let cases: &[(&str, &str, &str, f32)] = &[
        ("Sin", "", "f32", 4e-6),
        ("Cos", "", "f32", 4e-6),
        ("Tan", "", "f32", 4e-6),
        ("Asin", "", "f32", 1e-6),
        ("Acos", "", "f32", 1e-6),
        ("Atan", "", "f32", 1e-6),
        ("Sinh", "", "f32", 1e-6),
        ("Cosh", "", "f32", 1e-6),
        ("Asinh", "", "f32", 1e-6),
        ("Acosh", "", "f32", 1e-6),
        ("Atanh", "", "f32", 1e-6),
        ("Floor", "", "f32", 0.0),
        ("Ceil", "", "f32", 0.0),
        ("Round", "", "f32", 0.0),
        ("Sign", "", "f32", 0.0),
        ("Softplus", "", "f32", 1e-6),
        ("Softsign", "", "f32", 1e-6),
        ("Mish", "", "f32", 1e-6),
        ("HardSwish", "", "f32", 1e-6),
        ("HardSigmoid", "", "f32", 1e-6),
        ("HardSigmoid", " {alpha=0.5, beta=0.25}", "f32", 1e-6),
        ("Elu", "", "f32", 1e-6),
        ("Elu", " {alpha=0.5}", "f32", 1e-6),
        ("Celu", "", "f32", 1e-6),
        ("Celu", " {alpha=2.0}", "f32", 1e-6),
        ("ThresholdedRelu", "", "f32", 0.0),
        ("ThresholdedRelu", " {alpha=-0.5}", "f32", 0.0),
        ("Shrink", "", "f32", 0.0),
        ("Shrink", " {bias=1.5, lambd=1.0}", "f32", 1e-7),
        ("IsNaN", "", "bool", 0.0),
        ("IsInf", "", "bool", 0.0),
        ("IsInf", " {detect_positive=0}", "bool", 0.0),
        ("IsInf", " {detect_negative=0}", "bool", 0.0),
    ];
    for &(op, attrs, out, rel) in cases {
        // Near-zero results of cancelling functions (sin near a multiple of π, expm1 near 0) are
        // held to an absolute 1e-6 besides: that is f32 resolution at the argument's scale.
        let abs = if rel > 0.0 { 1e-6 } else { 0.0 };
        let inputs = if matches!(op, "Sin" | "Cos" | "Tan") { &trig_inputs } else { &inputs };
        check(&format!("{op}{}", attrs.len()), &unary_text(op, attrs, out, n), inputs, abs, rel);
    }
    // Beyond the accurate range (|x| > 2^17, math_tests::trig_sweeps) sin and cos stay within
    // [−1, 1] and ±inf gives NaN, but the value is not that of the exactly reduced argument.
    let options = Options { backend: Backend::Jit, threads: Some(1), ..Default::default() };
    let huge = vec![1e30f32, -1e30, 3e38, 1e6, 16_777_217.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    let huge_in = vec![("x".to_string(), Tensor::from_f32([8], huge).unwrap())];
    for op in ["Sin", "Cos"] {
        let compiled = kiln::compile(load(op, &unary_text(op, "", "f32", 8)), &options).unwrap();
        let y = compiled.run(&huge_in).unwrap().remove(0).1;
        let y = y.as_f32().unwrap();
        assert!(y[..5].iter().all(|v| v.abs() <= 1.0), "{op}: {y:?}");
        assert!(y[5..].iter().all(|v| v.is_nan()), "{op}: {y:?}");
    }
}

#[test]
fn binary_ops_match_the_interpreter() {
    let xs = values();
    let n = xs.len();
    // y: the values rotated, so every pair class (special × ordinary) occurs.
    let mut ys = xs.clone();
    ys.rotate_left(7);
    let inputs = vec![
        ("x".to_string(), Tensor::from_f32([n], xs).unwrap()),
        ("y".to_string(), Tensor::from_f32([n], ys).unwrap()),
    ];
    for (op, attrs, out) in [
        ("Greater", "", "bool"),
        ("GreaterOrEqual", "", "bool"),
        ("LessOrEqual", "", "bool"),
        ("Mod", " {fmod=1}", "f32"),
        ("Mod", "", "f32"),
        ("PRelu", "", "f32"),
    ] {
        let text = format!(
            "kir 1\ngraph g\ninput x: f32[{n}]\ninput y: f32[{n}]\nnode n = {op}(x, y){attrs} -> z: {out}[{n}]\noutput z\n"
        );
        check(op, &text, &inputs, 0.0, 0.0);
    }
    // PRelu with a per-channel slope [C, 1, 1] against NCHW.
    let x: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| (i as f32 - 60.0) / 7.0).collect();
    let inputs = vec![
        ("x".to_string(), Tensor::from_f32([2, 3, 4, 5], x).unwrap()),
        ("s".to_string(), Tensor::from_f32([3, 1, 1], vec![0.1, -2.0, 0.0]).unwrap()),
    ];
    let text = "kir 1\ngraph g\ninput x: f32[2,3,4,5]\ninput s: f32[3,1,1]\nnode n = PRelu(x, s) -> z: f32[2,3,4,5]\noutput z\n";
    check("prelu_channels", text, &inputs, 0.0, 0.0);
}

/// Mod of f32 (fmod = 1, C's fmod; fmod = 0, floor-mod) is exact in the JIT for quotients below
/// 2²⁴: compared bit for bit with the interpreter (Rust's `%`) over a sweep of magnitudes and signs.
#[test]
fn float_mod_is_exact() {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut s = 0x1234_5678_u32;
    for _ in 0..4001 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let a = ((s & 0xffff) as f32 - 32768.0) * 2f32.powi((s >> 16) as i32 % 12 - 4);
        let b = (((s >> 8) & 0xff) as f32 - 127.5) / 16.0;
        xs.push(a);
        ys.push(b);
    }
    let n = xs.len();
    let inputs = vec![
        ("x".to_string(), Tensor::from_f32([n], xs).unwrap()),
        ("y".to_string(), Tensor::from_f32([n], ys).unwrap()),
    ];
    for fmod in [1, 0] {
        let text = format!(
            "kir 1\ngraph g\ninput x: f32[{n}]\ninput y: f32[{n}]\nnode n = Mod(x, y) {{fmod={fmod}}} -> z: f32[{n}]\noutput z\n"
        );
        check(&format!("fmod_sweep{fmod}"), &text, &inputs, 0.0, 0.0);
    }
}

/// A zero remainder keeps the sign C's fmod gives it (the dividend's; floor-mod: the divisor's):
/// fmod(−2.1, −2.1) is −0, and its reciprocal −∞. The value sweep above compares with `==`, which
/// cannot see the sign of a zero; this compares bits. Found by the differential tester
/// (Mod then Reciprocal, seed 40058581).
#[test]
fn float_mod_zero_results_keep_their_sign() {
    let xs = vec![-2.1f32, 2.1, -4.2, 4.2, -0.0, 0.0, -6.0, 6.0];
    let ys = vec![-2.1f32, -2.1, 2.1, 2.1, 3.0, -3.0, -3.0, 3.0];
    let n = xs.len();
    let inputs = vec![
        ("x".to_string(), Tensor::from_f32([n], xs).unwrap()),
        ("y".to_string(), Tensor::from_f32([n], ys).unwrap()),
    ];
    for fmod in [1, 0] {
        let name = format!("fmod_zero{fmod}");
        let text = format!(
            "kir 1\ngraph g\ninput x: f32[{n}]\ninput y: f32[{n}]\nnode n = Mod(x, y) {{fmod={fmod}}} -> z: f32[{n}]\nnode r = Reciprocal(z) -> w: f32[{n}]\noutput w\n"
        );
        let interp = Options { backend: Backend::Interp, opt_level: OptLevel::O0, ..Default::default() };
        let want = kiln::compile(load(&name, &text), &interp).unwrap().run(&inputs).unwrap();
        let want: Vec<u32> = want[0].1.as_f32().unwrap().iter().map(|v| v.to_bits()).collect();
        for opt_level in [OptLevel::O0, OptLevel::O2] {
            let options = Options { backend: Backend::Jit, opt_level, threads: Some(1), ..Default::default() };
            let got = kiln::compile(load(&name, &text), &options).unwrap().run(&inputs).unwrap();
            let got: Vec<u32> = got[0].1.as_f32().unwrap().iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{name} at {opt_level:?} (bits of 1/(x mod y))");
        }
    }
}

#[test]
fn int64_comparisons_and_mod_match_the_interpreter() {
    let a: Vec<i64> = vec![7, -7, 7, -7, 0, i64::MIN, i64::MAX, 5, -1, 3];
    let b: Vec<i64> = vec![3, 3, -3, -3, 5, -1, 2, 5, 7, -4];
    let n = a.len();
    let inputs = vec![
        ("a".to_string(), Tensor::from_i64([n], a).unwrap()),
        ("b".to_string(), Tensor::from_i64([n], b).unwrap()),
    ];
    for (op, attrs, out) in [
        ("Greater", "", "bool"),
        ("GreaterOrEqual", "", "bool"),
        ("LessOrEqual", "", "bool"),
        ("Equal", "", "bool"),
        ("Mod", "", "i64"),
        ("Mod", " {fmod=1}", "i64"),
    ] {
        let text = format!(
            "kir 1\ngraph g\ninput a: i64[{n}]\ninput b: i64[{n}]\nnode n = {op}(a, b){attrs} -> z: {out}[{n}]\noutput z\n"
        );
        let got = check(&format!("{op}_i64{}", attrs.len()), &text, &inputs, 0.0, 0.0);
        if op == "Mod" {
            let want: &[i64] =
                if attrs.is_empty() { &[1, 2, -2, -1, 0, 0, 1, 0, 6, -1] } else { &[1, -1, 1, -1, 0, 0, 1, 0, -1, 3] };
            assert_eq!(got[0].1.as_i64().unwrap(), want, "{op}{attrs}");
        }
    }
    // Mod by zero is an error in both engines, never a trap.
    let inputs = vec![
        ("a".to_string(), Tensor::from_i64([2], vec![1, 2]).unwrap()),
        ("b".to_string(), Tensor::from_i64([2], vec![1, 0]).unwrap()),
    ];
    let text = "kir 1\ngraph g\ninput a: i64[2]\ninput b: i64[2]\nnode n = Mod(a, b) -> z: i64[2]\noutput z\n";
    for backend in [Backend::Interp, Backend::Jit] {
        let options = Options { backend, ..Default::default() };
        let err = kiln::compile(load("mod_zero", text), &options).unwrap().run(&inputs).unwrap_err();
        assert!(err.to_string().contains("Mod by zero"), "{backend:?}: {err}");
    }
}

/// An attention-mask computation as transformers exports write it, with bool inputs and a bool
/// output: Not, And, Or, Xor, Equal on bools, Where choosing bools and floats.
#[test]
fn bool_tensors_end_to_end() {
    let text = "kir 1\ngraph g\ninput a: bool[2,1,5]\ninput b: bool[1,3,5]\ninput x: f32[2,3,5]\n\
        node na = Not(a) -> na_: bool[2,1,5]\n\
        node and = And(na_, b) -> and_: bool[2,3,5]\n\
        node or = Or(a, b) -> or_: bool[2,3,5]\n\
        node xor = Xor(and_, or_) -> xor_: bool[2,3,5]\n\
        node eq = Equal(xor_, a) -> eq_: bool[2,3,5]\n\
        node pick = Where(eq_, and_, or_) -> m: bool[2,3,5]\n\
        node w = Where(m, x, x) -> wx: f32[2,3,5]\n\
        node lim = GreaterOrEqual(wx, x) -> ge: bool[2,3,5]\n\
        node both = And(ge, m) -> mask: bool[2,3,5]\n\
        output mask\noutput wx\n";
    let a = vec![true, false, true, true, false, false, true, false, false, true];
    let b = vec![true, true, false, false, true, false, true, false, true, false, false, false, true, true, false];
    let x: Vec<f32> = (0..30).map(|i| i as f32 - 15.0).collect();
    let inputs = vec![
        ("a".to_string(), Tensor::from_bool([2, 1, 5], a.clone()).unwrap()),
        ("b".to_string(), Tensor::from_bool([1, 3, 5], b.clone()).unwrap()),
        ("x".to_string(), Tensor::from_f32([2, 3, 5], x).unwrap()),
    ];
    let got = check("bool_chain", text, &inputs, 0.0, 0.0);
    // The mask by hand: and = ¬a∧b, or = a∨b, xor, eq = (xor == a), m = eq ? and : or.
    let mask = got[0].1.as_bool().unwrap();
    for n in 0..2 {
        for h in 0..3 {
            for w in 0..5 {
                let (a, b) = (a[n * 5 + w], b[h * 5 + w]);
                let (and, or) = (!a && b, a || b);
                let m = if (and ^ or) == a { and } else { or };
                assert_eq!(mask[(n * 3 + h) * 5 + w], m, "[{n},{h},{w}]");
            }
        }
    }
}

/// A chain of the new elementwise ops compiles to one generated kernel (they fuse), and so does a
/// rotary-table computation (Sin/Cos of positions × frequencies, broadcast).
#[test]
fn new_elementwise_ops_fuse_into_one_kernel() {
    let text = "kir 1\ngraph g\ninput x: f32[4,33]\ninput f: f32[33]\n\
        node m = Mul(x, f) -> a: f32[4,33]\n\
        node s = Sin(a) -> b: f32[4,33]\n\
        node c = Cos(a) -> c_: f32[4,33]\n\
        node sp = Softplus(b) -> d: f32[4,33]\n\
        node hs = HardSwish(c_) -> e: f32[4,33]\n\
        node r = Round(d) -> g_: f32[4,33]\n\
        node ge = GreaterOrEqual(e, g_) -> h: bool[4,33]\n\
        node nt = Not(h) -> i: bool[4,33]\n\
        node wh = Where(i, e, d) -> y: f32[4,33]\n\
        output y\n";
    let x: Vec<f32> = (0..4 * 33).map(|i| i as f32 * 0.37 - 20.0).collect();
    let f: Vec<f32> = (0..33).map(|i| 10000f32.powf(-(i as f32) / 33.0)).collect();
    let inputs = vec![
        ("x".to_string(), Tensor::from_f32([4, 33], x).unwrap()),
        ("f".to_string(), Tensor::from_f32([33], f).unwrap()),
    ];
    check("fused_chain", text, &inputs, 1e-6, 4e-6);
    let options = Options { backend: Backend::Jit, opt_level: OptLevel::O0, threads: Some(1), ..Default::default() };
    let compiled = kiln::compile(load("fused_chain", text), &options).unwrap();
    let (_, steps) = compiled.run_profiled(&inputs).unwrap();
    let kernels: Vec<&str> = steps.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(kernels.len(), 1, "one fused kernel, got {kernels:?}");
}
