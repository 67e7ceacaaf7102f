//! The provider's host, with no napi in it: a resolver engine (the crate linked in, or a guest
//! in wasmtime) kept fresh from Confidence's CDN, its logs uploaded in the background. The
//! addon (`src/` at the repository root) is a thin binding over [`resolver_host::ResolverHost`].

pub mod crypto;
pub mod engine;
pub mod guest;
pub mod http;
pub mod log_upload;
pub mod metrics;
pub mod notices;
pub mod remote_store;
pub mod resolve_token;
pub mod resolver_host;
pub mod snapshot;
pub mod state_sync;

/// Version of the pinned `confidence_resolver` crate that defines our resolution semantics.
pub const RESOLVER_CRATE_VERSION: &str = "0.26.1";
