//! The test kit's Rust half: resolver states compiled from plain JSON descriptions of flags,
//! and uploaded log batches decoded into JSON a test can assert on. The addon exposes both to
//! the package's `/testing` entry.
//!
//! A description is compiled through `state_builder` into an ordinary state, so the real
//! resolver (targeting, bucketing, logs) answers it: users test their code against Confidence's
//! semantics without an account.

pub mod description;
pub mod flag_logs;

pub use description::{state_from_description, DescriptionError};
pub use flag_logs::{flag_logs, FlagLogs};

/// Secret of the test client when the description names none.
pub const DEFAULT_CLIENT_SECRET: &str = "test-client-secret";
/// Account of the state when the description names none.
pub const DEFAULT_ACCOUNT: &str = "test-account";
/// The one client every described flag is served to (`clients/<id>`).
pub const TEST_CLIENT: &str = "test-client";
