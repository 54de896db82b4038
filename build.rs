//! Generates the gRPC services and the descriptor set for server reflection from `proto/`,
//! with a vendored `protoc` so no system install is needed. The messages themselves are
//! `tokenmint-proto`'s (crates/proto), shared with the libraries and the tests.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/tokenmint/v1/token.proto",
        "proto/tokenmint/v1/key.proto",
        "proto/tokenmint/v1/revocation.proto",
        "proto/tokenmint/v1/admin.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let well_known = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    let includes = [PathBuf::from("proto"), well_known];
    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".tokenmint.v1", "::tokenmint_proto::v1")
        .file_descriptor_set_path(out_dir.join("tokenmint_descriptor.bin"))
        .compile_with_config(config, &protos.map(PathBuf::from), &includes)?;
    Ok(())
}
