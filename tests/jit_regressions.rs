//! Issue 11 regressions through the library, at -O0 and -O2 with 1 and 2 threads, each JIT run
//! compared with the reference interpreter on the same (seeded) inputs.

use kiln::{Backend, OptLevel, Options, Tensor, TensorData};

/// Loads `text` as a .kir model written to a scratch file.
fn load(name: &str, text: &str) -> kiln::Model {
    let dir = std::env::temp_dir().join(format!("kiln-jitreg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.kir"));
    std::fs::write(&path, text).unwrap();
    kiln::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs the model on the interpreter and on the JIT at -O0/-O2 × 1/2 threads; outputs within
/// `abs + rel·|want|` (NaN where the reference is NaN, infinities equal).
fn check(name: &str, text: &str, abs: f32, rel: f32) -> Vec<(String, Tensor)> {
    let model = load(name, text);
    let inputs = kiln::default_inputs(&model.graph).unwrap();
    let interp = Options { backend: Backend::Interp, opt_level: OptLevel::O0, ..Default::default() };
    let want = kiln::compile(model, &interp).unwrap().run(&inputs).unwrap();
    for opt_level in [OptLevel::O0, OptLevel::O2] {
        for threads in [1, 2] {
            let options = Options { backend: Backend::Jit, opt_level, threads: Some(threads), ..Default::default() };
            let got = kiln::compile(load(name, text), &options).unwrap().run(&inputs).unwrap();
            for ((n, g), (_, w)) in got.iter().zip(&want) {
                assert_eq!(g.ty(), w.ty(), "{name} {n}");
                let (TensorData::F32(g), TensorData::F32(w)) = (g.data(), w.data()) else { panic!("{name}: f32") };
                for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
                    let ok = if b.is_nan() { a.is_nan() } else { a == b || (a - b).abs() <= abs + rel * b.abs() };
                    assert!(ok, "{name} {n}[{i}] at {opt_level:?}, {threads} threads: got {a:e}, want {b:e}");
                }
            }
        }
    }
    want
}

/// `[a] @ [b] + bias`, then Relu: a GEMM epilogue candidate.
fn matmul_text(name: &str, a: &str, b: &str, out: &str, bias: &str) -> String {
    format!(
        "kir 1\ngraph {name}\ninput a: f32[{a}]\ninput b: f32[{b}]\ninput bias: f32[{bias}]\n\
         node mm = MatMul(a, b) -> h: f32[{out}]\nnode add = Add(h, bias) -> hb: f32[{out}]\n\
         node act = Relu(hb) -> y: f32[{out}]\noutput y\n"
    )
}

#[test]
fn issue11_matmul_1d_operands_with_epilogue_at_o0_and_o2() {
    let cases = [
        ("batched_by_vector", "2,4,6", "6", "2,4", "4"),
        ("vector_by_batched", "6", "2,6,4", "2,4", "4"),
        ("vector_by_vector", "6", "6", "", ""),
        ("broadcast_batch", "2,1,4,6", "3,6,5", "2,3,4,5", "5"),
        ("split_batched_by_vector", "2,512,512", "512", "2,512", "512"),
    ];
    for (name, a, b, out, bias) in cases {
        let k: f32 = a.rsplit(',').next().unwrap().parse().unwrap();
        check(name, &matmul_text(name, a, b, out, bias), 1e-6 * k, 1e-5);
    }
}

/// Resize with align_corners and scales: the JIT and the interpreter pick the same pixels, and
/// they are ONNX Runtime's (input 3, scale 2.5 → 7 outputs; o·2/6 floored: 0,0,0,1,1,1,2).
#[test]
fn issue11_resize_align_corners_with_scales_agrees_across_backends() {
    let text = "kir 1\ngraph rs\ninput x: f32[1,3]\n\
        node r = Resize(x) {coordinate_transformation_mode=\"align_corners\", nearest_mode=\"floor\", \
        scales=[1.0, 2.5]} -> y: f32[1,7]\noutput y\n";
    let want = check("resize_align_corners", text, 0.0, 0.0);
    let x = kiln::default_inputs(&load("resize_align_corners", text).graph).unwrap();
    let x = x[0].1.as_f32().unwrap();
    let pick = [0, 0, 0, 1, 1, 1, 2].map(|i| x[i]);
    assert_eq!(want[0].1.as_f32().unwrap(), pick);
}

/// Pow with special bases and exponents: the JIT follows C powf like the interpreter
/// (Pow(−inf, y) was NaN in the JIT).
#[test]
fn issue11_pow_special_values_agree_across_backends() {
    let text = "kir 1\ngraph pw\ninput x: f32[2]\ninput y: f32[2]\n\
        node p = Pow(x, y) -> z: f32[2]\noutput z\n";
    let specials = [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.0, -1.0, 2.0, -2.0, 0.5, 3.0, -3.0];
    let n = specials.len();
    let xs: Vec<f32> = specials.iter().flat_map(|&x| std::iter::repeat_n(x, n)).collect();
    let ys: Vec<f32> = (0..n).flat_map(|_| specials.iter().copied()).collect();
    let text = text.replace("[2]", &format!("[{}]", n * n));
    let inputs = vec![
        ("x".to_string(), Tensor::from_f32([n * n], xs.clone()).unwrap()),
        ("y".to_string(), Tensor::from_f32([n * n], ys.clone()).unwrap()),
    ];
    let interp = Options { backend: Backend::Interp, ..Default::default() };
    let want = kiln::compile(load("pow", &text), &interp).unwrap().run(&inputs).unwrap();
    for threads in [1, 2] {
        let jit =
            Options { backend: Backend::Jit, opt_level: OptLevel::O0, threads: Some(threads), ..Default::default() };
        let got = kiln::compile(load("pow", &text), &jit).unwrap().run(&inputs).unwrap();
        let (g, w) = (got[0].1.as_f32().unwrap(), want[0].1.as_f32().unwrap());
        for i in 0..n * n {
            // Special results (NaN, ±0, ±inf) bit-exact; finite ones within the JIT's pow
            // bound for |y·ln|x|| ≤ 3·ln 3 (2⁻²²·(2 + 3.3) < 2e-6).
            let (a, b) = (g[i], w[i]);
            let same = if b.is_nan() || b == 0.0 || b.is_infinite() {
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
            } else {
                (a - b).abs() <= 2e-6 * b.abs()
            };
            assert!(same, "pow({:e}, {:e}): JIT {a:e}, interpreter {b:e}", xs[i], ys[i]);
        }
    }
}
