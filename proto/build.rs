//! Generates the `voca.v1` messages and services into OUT_DIR, together with
//! the encoded file descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "voca/v1/gateway.proto",
        "voca/v1/pool.proto",
        "voca/v1/registry.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("voca_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    Ok(())
}
