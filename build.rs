//! Generates the gRPC code and the descriptor set for server reflection from `proto/`,
//! with a vendored `protoc` so no system install is needed.

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
    // sqlx::migrate! embeds these; a new or changed migration must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    let well_known = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Generated types that carry tokens or secrets get a hand-written Debug (see src/grpc.rs).
    config.skip_debug([
        "tokenmint.v1.IssueTokenRequest",
        "tokenmint.v1.IssueTokenResponse",
        "tokenmint.v1.IntrospectTokenRequest",
        "tokenmint.v1.RevokeTokenRequest",
        "tokenmint.v1.RegisterClientResponse",
    ]);
    let includes = [PathBuf::from("proto"), well_known];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("tokenmint_descriptor.bin"))
        .compile_with_config(config, &protos.map(PathBuf::from), &includes)?;
    Ok(())
}
