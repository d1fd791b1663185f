//! Every `ErrorKind` from a real trigger through the facade: a missing file and an unknown format
//! (I/O), a bad model (model), an op kiln does not implement (unsupported op), a wrong input
//! (input), the memory cap at load (weights, or the file itself) and at compile (resource limit);
//! and `source()`.

use kiln::{ErrorKind, Options, Tensor};
use std::error::Error as _;
use std::path::{Path, PathBuf};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-error-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_missing_file_and_an_unknown_format_are_io_errors() {
    for name in ["nope.json", "nope.onnx", "nope.kir"] {
        let err = kiln::load(models().join(name)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{name}: {err}");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
    let txt = scratch("model.txt");
    std::fs::write(&txt, "hello").unwrap();
    let err = kiln::load(&txt).unwrap_err();
    assert_eq!((err.kind(), err.to_string().contains("unknown model format")), (ErrorKind::Io, true), "{err}");
}

#[test]
fn a_bad_model_is_a_model_error_with_its_messages_unchanged() {
    let path = scratch("bad.json");
    std::fs::write(&path, r#"{"format": "kiln", "version": 1, "nodes": [}"#).unwrap();
    let err = kiln::load(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Model);
    assert!(err.to_string().starts_with(&path.display().to_string()), "{err}");
    assert!(err.source().is_none());
}

/// Protobuf wire format, enough for a one-node ONNX model.
fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3 | 2) as u8];
    let mut len = bytes.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(bytes);
    out
}

fn varint_field(number: u32, value: u8) -> Vec<u8> {
    vec![(number << 3) as u8, value]
}

fn float_vector(name: &str) -> Vec<u8> {
    // ValueInfoProto { name, type: TypeProto { tensor_type { elem_type: FLOAT, shape { dim { 4 } } } } }
    let shape = field(2, &field(1, &varint_field(1, 4)));
    let tensor = [varint_field(1, 1), shape].concat();
    [field(1, name.as_bytes()), field(2, &field(1, &tensor))].concat()
}

#[test]
fn an_op_kiln_does_not_implement_is_an_unsupported_op_error() {
    let node = [field(1, b"x"), field(2, b"y"), field(3, b"uniq"), field(4, b"Unique")].concat();
    let graph =
        [field(1, &node), field(2, b"g"), field(11, &float_vector("x")), field(12, &float_vector("y"))].concat();
    let opset = varint_field(2, 17);
    let model = [varint_field(1, 8), field(7, &graph), field(8, &opset)].concat();
    let path = scratch("unique.onnx");
    std::fs::write(&path, model).unwrap();
    let err = kiln::load(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedOp, "{err}");
    assert!(err.to_string().contains("Unique ×1 (nodes 'uniq')"), "{err}");
}

#[test]
fn wrong_inputs_are_input_errors_on_both_engines() {
    for backend in [kiln::Backend::Interp, kiln::Backend::Jit] {
        let compiled = kiln::compile(
            kiln::load(models().join("mlp_bn.json")).unwrap(),
            &Options { backend, ..Options::default() },
        )
        .unwrap();
        let x = Tensor::from_f32([4, 16], vec![0.0; 64]).unwrap();
        let err = compiled.run(&[("x".to_string(), x)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Input);
        assert_eq!(err.to_string(), "input 'x': expected f32[8,16] but was given f32[4,16]");
        let err = compiled.run(&[]).unwrap_err();
        assert_eq!(
            (err.kind(), err.to_string()),
            (ErrorKind::Input, "input 'x': is missing (expected f32[8,16])".into())
        );
    }
    let err = kiln::read_tensor_file(&models().join("no_such_input.npy")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Input, "{err}");
    assert_eq!(kiln::parse_memory_size("lots").unwrap_err().kind(), ErrorKind::Input);
}

#[test]
fn the_memory_cap_is_a_resource_limit_at_load_and_at_compile() {
    // Load: the JSON reader's weight budget (the file is 18 KiB, its safetensors 32 KiB).
    let load = kiln::LoadOptions { memory_cap: Some(20_000), ..Default::default() };
    let err = kiln::load_with(models().join("graph_transformer.json"), &load).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceLimit, "{err}");
    assert!(err.to_string().contains("memory cap"), "{err}");
    // Load: a model file larger than the cap, in every format (issue 15: it was an I/O error).
    for name in ["graph_transformer.json", "mlp_bn.onnx", "graph_transformer.kir", "graph_transformer.kiln"] {
        let path = scratch(name);
        std::fs::write(&path, vec![b' '; 4096]).unwrap();
        let load = kiln::LoadOptions { memory_cap: Some(1000), ..Default::default() };
        let err = kiln::load_with(&path, &load).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceLimit, "{name}: {err}");
        assert!(err.to_string().contains("more than the 1000 B kiln reads"), "{name}: {err}");
    }
    // Compile: the JIT's arena and the interpreter's peak.
    for backend in [kiln::Backend::Interp, kiln::Backend::Jit] {
        let options = Options { backend, memory_cap: 1024, ..Options::default() };
        let Err(err) = kiln::compile(kiln::load(models().join("mlp_bn.json")).unwrap(), &options) else {
            panic!("compiled under a 1 KiB cap");
        };
        assert_eq!(err.kind(), ErrorKind::ResourceLimit, "{err}");
        assert!(err.to_string().contains("above the memory cap"), "{err}");
    }
}

#[test]
fn an_error_made_from_another_keeps_it_as_its_source() {
    let path = scratch("latin1.kir");
    std::fs::write(&path, b"graph \xe9").unwrap();
    let err = kiln::load(&path).unwrap_err();
    assert!(err.to_string().ends_with("cannot read: the file is not UTF-8 text"), "{err}");
    let source = err.source().expect("the UTF-8 error");
    assert!(source.to_string().contains("utf-8"), "{source}");
    // Kinds and sources survive `within` and compare by kind and messages only.
    let moved = err.clone().within("outer");
    assert_eq!(moved.kind(), err.kind());
    assert!(moved.source().is_some());
    assert_ne!(err, err.clone().with_kind(ErrorKind::Input));
}
