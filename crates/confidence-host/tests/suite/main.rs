//! The host's integration suites, one test binary (wasmtime links once). Each module drives
//! real parts: guests in wasmtime, the native engine, loopback servers.

mod common;
mod net_support;

mod bad_input;
mod differential;
mod engine_native;
mod engine_wasm;
mod guest_exports;
mod log_upload;
mod network;
mod oracle;
mod remote_store;
mod resolver_host;
mod snapshot;
mod state_intake;
mod state_sync;
mod testkit;
