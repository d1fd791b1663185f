//! Compiles the vendored `proto/onnx.proto` into Rust types with protox (a pure-Rust protobuf
//! compiler, so no `protoc` binary is needed) and prost-build.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = match protox::compile(["onnx.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto/onnx.proto does not compile: {e}"),
    };
    if let Err(e) = prost_build::Config::new().compile_fds(descriptors) {
        panic!("prost-build failed on proto/onnx.proto: {e}");
    }
}
