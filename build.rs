//! Compiles the protos with protox (no system protoc) and writes the descriptor sets that
//! server reflection serves: posture's own, and Envoy's ext_authz API (whose Rust types come
//! from the envoy-types crate, which ships no descriptor set).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files =
        ["types", "compliance", "targeting", "inventory", "admin"].map(|f| format!("proto/posture/v1/{f}.proto"));
    let fds = protox::compile(&files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("posture_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    let envoy = protox::compile(["envoy/service/auth/v3/external_auth.proto"], ["proto/third_party"])?;
    std::fs::write(out.join("ext_authz_descriptor.bin"), prost::Message::encode_to_vec(&envoy))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
