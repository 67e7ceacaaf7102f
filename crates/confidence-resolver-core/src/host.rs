//! The crate's `Host`. Its functions are static, yet each [`Core`] has its own clock and
//! loggers: every operation that can call back into the host first points a thread-local at
//! its core and state ([`enter`]), and the callbacks read it. Several cores in one process
//! therefore never share logs.

use std::cell::Cell;
use std::sync::Arc;

use confidence_resolver::proto::confidence::flags::resolver::v1::Sdk;
use confidence_resolver::proto::google::{Struct, Timestamp};
use confidence_resolver::{Client, FlagToApply, Host, ResolvedValue, ResolverState};

use crate::Core;

/// Who the callbacks on this thread are for.
struct Scope<'a> {
    core: &'a Core,
    state: &'a Arc<ResolverState>,
}

thread_local! {
    /// A `*const Scope`, non-null only while [`enter`] runs on this thread.
    static CURRENT: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
}

/// Puts the previous scope back, also when `f` unwinds.
struct Restore(*const ());

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Runs `f` with the crate's callbacks going to `core`, for a resolver built on `state`.
pub(crate) fn enter<R>(core: &Core, state: &Arc<ResolverState>, f: impl FnOnce() -> R) -> R {
    let scope = Scope { core, state };
    let previous = CURRENT.with(|c| c.replace(&scope as *const Scope<'_> as *const ()));
    let _restore = Restore(previous);
    f()
}

/// `None` outside [`enter`]: the crate only calls back from inside the operations that set it.
#[allow(unsafe_code)] // the crate's `Host` callbacks are static functions: the scope rides a thread-local
fn with_scope<R>(f: impl FnOnce(&Scope<'_>) -> R) -> Option<R> {
    let current = CURRENT.with(|c| c.get());
    if current.is_null() {
        return None;
    }
    // SAFETY: `current` is only non-null while the `enter` frame that owns the `Scope` (and
    // the borrows inside it) is live on this thread's stack, and `f` cannot outlive this call.
    Some(f(unsafe { &*(current as *const Scope<'_>) }))
}

pub struct CoreHost;

impl Host for CoreHost {
    fn current_time() -> Timestamp {
        with_scope(|s| s.core.now()).unwrap_or_default()
    }

    fn log_resolve(resolve_id: &str, evaluation_context: &Struct, values: &[ResolvedValue<'_>], client: &Client) {
        with_scope(|s| s.core.log_resolve(s.state, resolve_id, evaluation_context, values, client));
    }

    fn log_assign(resolve_id: &str, assigned_flags: &[FlagToApply<'_>], client: &Client, sdk: &Option<Sdk>) {
        with_scope(|s| s.core.log_assign(resolve_id, assigned_flags, client, sdk));
    }

    // Tokens never leave the host process, so they are not encrypted (docs/resolver.md, "Resolve token, apply and dedup").
    fn encrypt_resolve_token(token: &[u8], _key: &[u8]) -> Result<Vec<u8>, String> {
        Ok(token.to_vec())
    }

    fn decrypt_resolve_token(token: &[u8], _key: &[u8]) -> Result<Vec<u8>, String> {
        Ok(token.to_vec())
    }
}
