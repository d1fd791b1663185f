//! Compiles the vendored `proto/onnx.proto` into Rust types with protox (a pure-Rust protobuf
//! compiler, so no `protoc` binary is needed) and prost-build.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = match protox::compile(["onnx.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto/onnx.proto does not compile: {e}"),
    };
    // Weight bytes as `Bytes` slices of the file's buffer, not copies: a model is not held twice
    // while it is imported (issue 15).
    if let Err(e) = prost_build::Config::new().bytes([".onnx.TensorProto.raw_data"]).compile_fds(descriptors) {
        panic!("prost-build failed on proto/onnx.proto: {e}");
    }
}
