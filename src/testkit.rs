//! The test kit's exports (`confidence-openfeature-provider/testing`); the work is done by
//! `confidence_testkit`.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::errors::{BoundaryError, Result};

/// A resolver state from a JSON description of flags (a `TestStateDescription` of the
/// package's `/testing` entry), encoded as the CDN serves it unencrypted. Throws
/// `INVALID_OPTION` naming the path of the problem.
#[napi(catch_unwind)]
pub fn build_test_state(description_json: String) -> Result<Buffer> {
    let state = confidence_testkit::state_from_description(&description_json).map_err(BoundaryError::Description)?;
    Ok(state.encode_client_resolver_state().into())
}

/// The demo's state (`npm run demo`), encoded like `buildTestState`'s.
#[napi]
pub fn demo_state() -> Buffer {
    state_builder::demo_state().encode_client_resolver_state().into()
}

/// One uploaded log batch (a serialized `WriteFlagLogsRequest`) as JSON: the `FlagLogs` of the
/// package's `/testing` entry. Throws `INVALID_OPTION` for anything else.
#[napi(catch_unwind)]
pub fn decode_flag_logs(batch: Buffer) -> Result<String> {
    let logs = confidence_testkit::flag_logs(&batch).map_err(BoundaryError::FlagLogs)?;
    Ok(serde_json::to_string(&logs).map_err(|e| BoundaryError::Internal(e.to_string()))?)
}
