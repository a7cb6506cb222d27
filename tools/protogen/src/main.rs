//! Regenerates `src/onnx/proto.rs` from the vendored `proto/onnx.proto`.
//!
//! Kept out of the workspace so that building `infer` never needs protoc or protox:
//! the generated code is checked in. Run `scripts/regen_onnx_proto.sh` after bumping the proto.
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (proto, out) = match args.as_slice() {
        [_, proto, out] => (proto, out),
        _ => return Err("usage: protogen PROTO OUT_DIR".into()),
    };
    let dir = Path::new(proto).parent().ok_or("proto path has no parent")?;
    let fds = protox::compile([proto], [dir])?;
    let mut cfg = prost_build::Config::new();
    cfg.out_dir(out);
    // Initializer payloads stay slices of the memory-mapped model file (zero-copy).
    cfg.bytes([".onnx.TensorProto.raw_data"]);
    cfg.compile_fds(fds)?;
    Ok(())
}
