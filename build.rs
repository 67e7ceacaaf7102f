use std::path::Path;

/// The addon carries our resolver guest (`engine: 'wasm'` without a `wasmPath`), which
/// `npm run build` makes before the addon. A plain `cargo build` of a fresh clone has none
/// yet: it builds without one, and `engine: 'wasm'` then asks for a `wasmPath`.
fn main() {
    napi_build::setup();
    let guest = Path::new("wasm/confidence_resolver.wasm");
    println!("cargo::rerun-if-changed={}", guest.display());
    println!("cargo::rustc-check-cfg=cfg(bundled_guest)");
    if guest.exists() {
        println!("cargo::rustc-cfg=bundled_guest");
    }
}
