//! The one place Rust errors become JS errors. Every error the addon throws or rejects with is
//! an `Error` whose `code` is one of [`Code::ALL`] (the README's "Error codes" table lists
//! them; `__test__/errors.test.mjs` checks both against each other). JS branches on `code`,
//! never on the message.

use confidence_host::engine::EngineError;
use confidence_host::guest::GuestError;
use confidence_host::log_upload::UploadError;
use confidence_host::remote_store::StoreError;
use confidence_host::resolver_host::HostError;
use confidence_host::state_sync::ConfigError;
use confidence_testkit::DescriptionError;
use napi::bindgen_prelude::{Env, JsError, Status};

/// Stable codes on `err.code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// An option (or a test-kit input) that can never work; the message starts with its name.
    InvalidOption,
    /// `wasmPath` is not a resolver module with Confidence's guest ABI.
    InvalidModule,
    /// The evaluation context cannot be sent faithfully.
    InvalidContext,
    /// No state is loaded yet (or none arrived within the initialize timeout).
    NotReady,
    /// The resolver refused the request (unknown client secret, bad resolve token, ...).
    ResolverError,
    /// The resolver failed inside (a trap or a caught panic); it was replaced and serves on.
    ResolverCrashed,
    /// A bounded operation ran out of time (the final flush at close).
    Timeout,
    UploadFailed,
    StoreFailed,
}

impl Code {
    pub const ALL: [Code; 9] = [
        Code::InvalidOption,
        Code::InvalidModule,
        Code::InvalidContext,
        Code::NotReady,
        Code::ResolverError,
        Code::ResolverCrashed,
        Code::Timeout,
        Code::UploadFailed,
        Code::StoreFailed,
    ];
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        match self {
            Code::InvalidOption => "INVALID_OPTION",
            Code::InvalidModule => "INVALID_MODULE",
            Code::InvalidContext => "INVALID_CONTEXT",
            Code::NotReady => "NOT_READY",
            Code::ResolverError => "RESOLVER_ERROR",
            Code::ResolverCrashed => "RESOLVER_CRASHED",
            Code::Timeout => "TIMEOUT",
            Code::UploadFailed => "UPLOAD_FAILED",
            Code::StoreFailed => "STORE_FAILED",
        }
    }
}

/// Everything that can fail at the boundary, typed until it becomes a JS error.
#[derive(Debug, thiserror::Error)]
pub enum BoundaryError {
    /// A binding-level option problem, named by its JS option.
    #[error("{option}: {message}")]
    Option { option: String, message: String },
    #[error("wasmPath: {0}")]
    Module(String),
    #[error("invalid evaluation context: {0}")]
    Context(#[from] serde_json::Error),
    #[error("{}", host_message(.0))]
    Host(#[from] HostError),
    #[error("{}", mask_secrets(&.0.to_string()))]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Description(DescriptionError),
    #[error("not a flag log batch: {0}")]
    FlagLogs(prost::DecodeError),
    /// The resolver answered something the binding cannot use.
    #[error("{0}")]
    Internal(String),
}

/// Host errors that can only come from an option say which one, as the JS provider does.
fn host_message(e: &HostError) -> String {
    let option = match e {
        HostError::Sync(ConfigError::EmptySecret) => Some("flagClientSecret"),
        HostError::Sync(
            ConfigError::InvalidBaseUrl { .. }
            | ConfigError::InsecureBaseUrl { .. }
            | ConfigError::UnsupportedScheme { .. },
        ) => Some("cdnBaseUrl"),
        HostError::ApiBaseUrl(_) => Some("apiBaseUrl"),
        HostError::InitialState(_) => Some("initialState"),
        _ => None,
    };
    match option {
        Some(option) => format!("{option}: {e}"),
        None => e.to_string(),
    }
}

/// The resolver's own texts echo the first and last characters of client secrets
/// (`requested=mkj...2YF, available=[...]`): the boundary keeps the words and drops the echoes.
fn mask_secrets(text: &str) -> String {
    let mut out = text.to_string();
    for (marker, end) in [("requested=", &[',', ' ', ')'][..]), ("available=[", &[']'][..])] {
        if let Some(at) = out.find(marker) {
            let from = at + marker.len();
            let to = out[from..].find(end).map_or(out.len(), |i| from + i);
            out.replace_range(from..to, "***");
        }
    }
    out
}

impl BoundaryError {
    pub fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        BoundaryError::Option { option: option.into(), message: message.into() }
    }

    pub fn code(&self) -> Code {
        match self {
            BoundaryError::Option { .. } | BoundaryError::Description(_) | BoundaryError::FlagLogs(_) => {
                Code::InvalidOption
            }
            BoundaryError::Module(_) => Code::InvalidModule,
            BoundaryError::Context(_) => Code::InvalidContext,
            BoundaryError::Host(HostError::NotReady(_)) => Code::NotReady,
            BoundaryError::Host(_) => Code::InvalidOption,
            BoundaryError::Engine(e) => match e {
                EngineError::NotReady | EngineError::Closed => Code::NotReady,
                EngineError::Resolver(_) => Code::ResolverError,
                EngineError::Crashed(_) => Code::ResolverCrashed,
                EngineError::Instance(_) => Code::InvalidModule,
            },
            BoundaryError::Upload(UploadError::Timeout) => Code::Timeout,
            BoundaryError::Upload(_) => Code::UploadFailed,
            BoundaryError::Store(_) => Code::StoreFailed,
            BoundaryError::Internal(_) => Code::ResolverError,
        }
    }
}

impl From<GuestError> for BoundaryError {
    fn from(e: GuestError) -> Self {
        BoundaryError::Module(e.to_string())
    }
}

impl From<BoundaryError> for napi::Error<Code> {
    fn from(e: BoundaryError) -> Self {
        napi::Error::new(e.code(), e.to_string())
    }
}

/// The return type of synchronous exports: napi throws the error with its code.
pub type Result<T> = std::result::Result<T, napi::Error<Code>>;

/// A rejection that keeps its code: the JS error object is built on the JS thread and handed
/// to napi by reference (napi's own async errors only carry its statuses).
pub fn reject(env: &Env, e: BoundaryError) -> napi::Error {
    napi::Error::from(JsError::from(napi::Error::from(e)).into_unknown(*env))
}

/// For a constructor, which napi lets fail only with its own statuses: the coded error is
/// thrown first, then reported as the pending exception.
pub fn throw(env: &Env, e: BoundaryError) -> napi::Error {
    let message = e.to_string();
    match env.throw_error(&message, Some(e.code().as_ref())) {
        Ok(()) => napi::Error::new(Status::PendingException, message),
        Err(failed) => failed,
    }
}
