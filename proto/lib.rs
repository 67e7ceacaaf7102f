//! Messages that the `confidence_resolver` crate does not define, generated from `proto/`:
//! the guest ABI's envelope and control messages (docs/wire-format.md, at the crate root) and the CDN
//! payload (`admin::ClientResolverState`, docs/wire-format.md, "Resolver state"). Shared by the guest, the host and
//! the state builder, so every side agrees on one definition.

#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/confidence.wasm.rs"));

/// The remote materialization store's requests and results (docs/wire-format.md, "Remote materialization store messages").
pub mod store {
    include!(concat!(env!("OUT_DIR"), "/confidence.store.v1.rs"));
}

/// JSON ↔ `google.protobuf.Struct` (evaluation contexts, variant values).
#[cfg(feature = "json")]
pub mod json;

/// `confidence.flags.admin.v1` messages outside the crate.
pub mod admin {
    include!(concat!(env!("OUT_DIR"), "/confidence.flags.admin.v1.rs"));
}
