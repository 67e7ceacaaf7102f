//! The Node addon: the only JS boundary. Rust errors become JS errors here and nowhere else.

pub mod crypto;
pub mod engine;
pub mod guest;
pub mod log_upload;
pub mod resolver_host;
pub mod state_sync;

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Version of the pinned `confidence_resolver` crate that defines our resolution semantics.
#[napi]
pub fn resolver_crate_version() -> &'static str {
    "0.26.1"
}

/// Compiles and validates a resolver module: resolves when `wasm` has Confidence's guest ABI,
/// throws a readable error otherwise (not wasm, missing exports, unknown imports).
#[napi]
pub fn validate_resolver_module(wasm: Buffer) -> Result<Vec<String>> {
    let module = guest::GuestModule::new(&wasm).map_err(|e| Error::new(Status::InvalidArg, e.to_string()))?;
    Ok(guest::Export::ALL.into_iter().filter(|e| module.has_export(*e)).map(|e| e.name().to_string()).collect())
}
