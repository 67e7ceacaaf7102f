//! The native options: one declaration per option, saying its JS type and where it lands in
//! the host's [`HostConfig`]. The macro makes both the napi object (`NativeOptions` in
//! `index.d.ts`) and the code that lays it over `HostConfig::new`'s defaults, so adding an
//! option is one entry here (and one in the TypeScript table, `js/src/options.ts`).

use std::time::Duration;

use confidence_host::resolver_host::HostConfig;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::errors::BoundaryError;

/// Milliseconds from JS; zero is raised to 1 ms (a zero bound would never let a request start).
fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v.max(1)))
}

// Docs in the invocation are `#[doc = "…"]` attributes: napi reads them as plain string
// literals, and `///` inside a macro call would reach it as raw strings.
macro_rules! native_options {
    (
        $(#[doc = $sdoc:tt])* $secret:ident: String;
        $( $(#[doc = $doc:tt])* $name:ident: $ty:ty $(=> |$config:ident, $value:ident| $apply:block)? ; )*
    ) => {
        /// Options of the native resolver; the TypeScript provider validates and documents them.
        #[napi(object)]
        pub struct NativeOptions {
            $(#[doc = $sdoc])* pub $secret: String,
            $( $(#[doc = $doc])* pub $name: Option<$ty>, )*
        }

        impl NativeOptions {
            /// The host's configuration: `HostConfig::new`'s defaults, with every option given
            /// laid over them. Options without a place here (`engine`, `wasmPath`) choose the
            /// engine instead.
            pub fn host_config(self) -> Result<HostConfig, BoundaryError> {
                let mut host = HostConfig::new(&self.$secret);
                $($(
                    if let Some($value) = self.$name {
                        let $config = &mut host;
                        $apply
                    }
                )?)*
                host.sync.net = std::mem::take(&mut host.sync.net).with_env(|name| std::env::var(name).ok());
                host.sync.net.validate().map_err(|e| BoundaryError::Host(e.into()))?;
                Ok(host)
            }
        }
    };
}

native_options! {
    flag_client_secret: String;
    #[doc = " `\"native\"` (the crate linked into the addon) or `\"wasm\"` (a guest module run by"]
    #[doc = " wasmtime). Default: `wasm` when `wasmPath` is given, else `native`."]
    engine: String;
    #[doc = " A resolver module for the `wasm` engine; without one it runs the guest built into the addon."]
    wasm_path: String;
    #[doc = " 64 hex characters: fetch the encrypted state and decrypt it."]
    encryption_key: String => |c, v| {
        let key = v.parse().map_err(|e: confidence_host::crypto::CryptoError| {
            BoundaryError::option("encryptionKey", e.to_string())
        })?;
        c.sync.encryption_key = Some(key);
    };
    cdn_base_url: String => |c, v| { c.sync.cdn_base_url = v; };
    api_base_url: String => |c, v| { c.upload.api_base_url = v; };
    state_update_interval_ms: u32 => |c, v| { c.state_update_interval = ms(v); };
    flush_interval_ms: u32 => |c, v| { c.flush_interval = ms(v); };
    #[doc = " A `ClientResolverState` as the CDN serves it (encrypted when a key is given), or the"]
    #[doc = " content of a snapshot file."]
    initial_state: Buffer => |c, v| { c.initial_state = Some(v.to_vec()); };
    #[doc = " The last-known-good snapshot file: written after every applied download, served when"]
    #[doc = " the CDN cannot be reached within the initialize timeout."]
    snapshot_path: String => |c, v| { c.snapshot_path = Some(v).filter(|p| !p.is_empty()).map(Into::into); };
    offline: bool => |c, v| { c.offline = v; };
    #[doc = " Fetch states but never upload logs, exposures or telemetry."]
    disable_log_upload: bool => |c, v| { c.disable_log_upload = v; };
    #[doc = " Bound of one HTTP request (state fetch or log upload); default 10 s for states and 5 s"]
    #[doc = " for uploads (docs/state-cdn.md, docs/log-upload.md)."]
    request_timeout_ms: u32 => |c, v| {
        c.sync.request_timeout = ms(v);
        c.upload.request_timeout = ms(v);
    };
    #[doc = " Bound on establishing a connection (default 5 s)."]
    connect_timeout_ms: u32 => |c, v| { c.sync.net.connect_timeout = ms(v); };
    #[doc = " Bound on each wait for response data (default: none beyond `requestTimeoutMs`)."]
    read_timeout_ms: u32 => |c, v| { c.sync.net.read_timeout = Some(ms(v)); };
    #[doc = " Proxy for every request (`http://[user:pass@]host:port`); else `HTTPS_PROXY` /"]
    #[doc = " `HTTP_PROXY` apply to non-loopback targets. `NO_PROXY` is honoured either way."]
    proxy: String => |c, v| { c.sync.net.proxy = Some(v).filter(|p| !p.trim().is_empty()); };
    #[doc = " PEM certificates to trust besides the system roots (and `NODE_EXTRA_CA_CERTS`)."]
    ca_certificates: Vec<String> => |c, v| { c.sync.net.extra_ca_pem = v; };
    #[doc = " A product token sent before ours in `User-Agent`."]
    user_agent: String => |c, v| { c.sync.net.user_agent_prefix = Some(v); };
    enable_apply_dedup: bool => |c, v| { c.enable_apply_dedup = v; };
    disable_exposure_collection: bool => |c, v| { c.disable_exposure_collection = v; };
    sdk_version: String => |c, v| { c.sdk_version = v; };
}
