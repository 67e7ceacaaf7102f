//! Generates the messages the resolver crate does not define. `PROTOC` and
//! `CONFIDENCE_RESOLVER_PROTOS` come from `.cargo/config.toml`, which `node scripts/setup.mjs`
//! writes (no system protoc needed).
use std::path::PathBuf;

const FILES: [&str; 3] = [
    "confidence/wasm/messages.proto",
    "confidence/flags/admin/v1/client_resolver_state.proto",
    "confidence/store/v1/materialization_store.proto",
];

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let files: Vec<PathBuf> = FILES.iter().map(|f| here.join(f)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!("cargo:rerun-if-env-changed=CONFIDENCE_RESOLVER_PROTOS");
    let crate_protos = std::env::var("CONFIDENCE_RESOLVER_PROTOS").unwrap_or_else(|_| {
        panic!("CONFIDENCE_RESOLVER_PROTOS is not set: run `node scripts/setup.mjs` (npm install does)")
    });
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        // The same vendored binary `scripts/setup.mjs` points the resolver crate at.
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path().expect("vendored protoc"));
    }
    config
        // `Sdk` is the resolver crate's own type: reuse it, never regenerate it.
        .extern_path(".confidence.flags.resolver.v1", "::confidence_resolver::proto::confidence::flags::resolver::v1")
        .compile_protos(&files, &[here, PathBuf::from(crate_protos)])
        .expect("compiling proto/");
}
