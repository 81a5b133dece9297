//! Compiles `proto/waveguide/v1/*.proto` with protox (a protobuf compiler in Rust, so no system
//! `protoc` is needed), writes the Rust code with tonic-prost-build and keeps the encoded file
//! descriptor set for gRPC reflection.

use std::error::Error;
use std::path::PathBuf;

use protox::prost::Message as _;

const INCLUDE_DIR: &str = "proto";
const FILES: &[&str] = &[
    "waveguide/v1/common.proto",
    "waveguide/v1/module.proto",
    "waveguide/v1/entity.proto",
    "waveguide/v1/pipeline.proto",
    "waveguide/v1/signaling.proto",
    "waveguide/v1/events.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={INCLUDE_DIR}");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR")?);

    let descriptors = protox::compile(FILES, [INCLUDE_DIR])?;
    std::fs::write(
        out_dir.join("waveguide_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
