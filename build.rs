//! Compiles actguard's own protobuf API (`proto/`) in pure Rust: protox parses the `.proto`
//! files, tonic-prost-build generates the code. No `protoc` is needed.
//!
//! It also writes descriptor sets for gRPC reflection: the admin API's, and, when the
//! `envoy-types` crate source is found in the Cargo registry, Envoy's ext_authz service's
//! (envoy-types ships the `.proto` files but no descriptors). Without it, reflection serves the
//! admin API only.

use std::error::Error;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let admin = protox::compile(["actguard/admin/v1/revocation.proto"], ["proto"])?;
    std::fs::write(
        out_dir.join("admin_descriptor.bin"),
        prost::Message::encode_to_vec(&admin),
    )?;
    tonic_prost_build::configure().compile_fds(admin)?;

    let envoy_descriptor = match envoy_proto_root() {
        Some(root) => {
            let includes = [
                "data-plane-api",
                "googleapis",
                "protoc-gen-validate",
                "xds",
                "cel-spec/proto",
            ]
            .map(|dir| root.join(dir));
            // Tests validate Envoy configurations against these same definitions.
            println!(
                "cargo:rustc-env=ACTGUARD_ENVOY_PROTO_INCLUDES={}",
                std::env::join_paths(&includes)?.to_string_lossy()
            );
            let set = protox::compile(["envoy/service/auth/v3/external_auth.proto"], includes)?;
            prost::Message::encode_to_vec(&set)
        }
        None => {
            println!("cargo:warning=envoy-types sources not found; ext_authz reflection disabled");
            Vec::new()
        }
    };
    std::fs::write(out_dir.join("envoy_descriptor.bin"), envoy_descriptor)?;
    Ok(())
}

/// `$CARGO_HOME/registry/src/*/envoy-types-<locked version>/proto`.
fn envoy_proto_root() -> Option<PathBuf> {
    let lock = std::fs::read_to_string("Cargo.lock").ok()?;
    let version = lock
        .split("[[package]]")
        .find(|package| package.contains("name = \"envoy-types\""))?
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))?
        .trim_end_matches('"')
        .to_owned();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    std::fs::read_dir(cargo_home.join("registry").join("src"))
        .ok()?
        .filter_map(Result::ok)
        .map(|index| {
            index
                .path()
                .join(format!("envoy-types-{version}"))
                .join("proto")
        })
        .find(|candidate| candidate.join("data-plane-api").is_dir())
}
