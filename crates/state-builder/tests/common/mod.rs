//! Shared test plumbing: loading built states into the resolver crate and resolving natively.

#![allow(dead_code)]

use bytes::Bytes;
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState as ResolverStatePb;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    ResolveFlagsRequest, ResolveFlagsResponse, ResolveProcessRequest, ResolvedFlag, Sdk,
};
use confidence_resolver::proto::google::{Struct, Timestamp};
use confidence_resolver::{Client, FlagToApply, Host, ResolvedValue, ResolverState};
use prost::Message;
use state_builder::BuiltState;

/// A host with a fixed clock that drops all logs.
pub struct TestHost;

impl Host for TestHost {
    fn current_time() -> Timestamp {
        Timestamp { seconds: 1_705_314_600, nanos: 0 }
    }

    fn log_resolve(_: &str, _: &Struct, _: &[ResolvedValue<'_>], _: &Client) {}

    fn log_assign(_: &str, _: &[FlagToApply<'_>], _: &Client, _: &Option<Sdk>) {}
}

/// Decodes the encoded state (as a host would receive it) and loads it.
pub fn load(state: &BuiltState) -> ResolverState {
    let pb = ResolverStatePb::decode(state.encode().as_slice()).expect("state decodes");
    ResolverState::from_proto(pb, &state.account_id, None).unwrap_or_else(|e| panic!("state loads: {e:?}"))
}

/// Resolves a request without a materialization store.
pub fn resolve(state: &ResolverState, req: ResolveFlagsRequest) -> Result<ResolveFlagsResponse, String> {
    let key = Bytes::from_static(&[0; 16]);
    let ctx = req.evaluation_context.clone().unwrap_or_default();
    let resolver = state.get_resolver::<TestHost>(&req.client_secret, ctx, &key)?;
    let out = resolver.resolve_flags(ResolveProcessRequest::without_materializations(req))?;
    out.into_resolved().map(|(response, _)| response).ok_or_else(|| "suspended".to_string())
}

/// Resolves every flag visible to `secret` for `ctx`.
pub fn resolve_all(state: &ResolverState, secret: &str, ctx: Struct) -> Vec<ResolvedFlag> {
    resolve(
        state,
        ResolveFlagsRequest {
            flags: vec![],
            evaluation_context: Some(ctx),
            client_secret: secret.to_string(),
            apply: false,
            sdk: None,
        },
    )
    .expect("resolves")
    .resolved_flags
}

/// The resolved entry for `flag` (short or full name), if present.
pub fn find<'a>(flags: &'a [ResolvedFlag], flag: &str) -> Option<&'a ResolvedFlag> {
    let name = state_builder::names::flag_name(flag);
    flags.iter().find(|f| f.flag == name)
}
