//! Builds valid Confidence resolver states (`confidence.flags.admin.v1.ResolverState`) for
//! tests, the demo and the test kit.
//!
//! Hand-written protobuf literals for flags and segments are long and easy to get subtly
//! wrong (resource names, bucket ranges, gzipped bitsets, bloom filter layout); the builders here
//! get those details right once, and [`random`] turns them into many varied states and contexts
//! for differential testing.
//!
//! ```
//! use state_builder::*;
//!
//! let state = StateBuilder::new("acme")
//!     .client(ClientBuilder::new("web").secret("s3cret"))
//!     .segment(
//!         SegmentBuilder::new("swedes")
//!             .attribute("c", "country", eq(t_str("SE")))
//!             .expression(expr::id("c")),
//!     )
//!     .segment(SegmentBuilder::new("everyone"))
//!     .flag(
//!         FlagBuilder::new("banner")
//!             .field("on", s_bool())
//!             .variant("on", obj([("on", v_bool(true))]))
//!             .variant("off", obj([("on", v_bool(false))]))
//!             .client("web")
//!             .rule(RuleBuilder::full("se", "swedes", "on"))
//!             .rule(RuleBuilder::split("rest", "everyone", [("on", 50), ("off", 50)])),
//!     )
//!     .build();
//! let bytes = state.encode();
//! assert!(!bytes.is_empty());
//! ```

pub mod bitset;
pub mod bloom;
pub mod demo;
pub mod flag;
pub mod hash;
pub mod names;
#[cfg(feature = "random")]
pub mod random;
pub mod rng;
pub mod schema;
pub mod segment;
pub mod state;
pub mod targeting;
pub mod time;
pub mod value;

pub use bitset::Bitset;
pub use bloom::BloomFilter;
pub use confidence_proto::admin::ClientResolverState;
pub use demo::demo_state;
pub use flag::{AssignmentKind, FlagBuilder, FlagState, Materialization, RuleBuilder};
pub use schema::{infer_schema, s_bool, s_double, s_int, s_list, s_string, s_struct, struct_schema};
pub use segment::SegmentBuilder;
pub use state::{BuiltState, ClientBuilder, CredentialBuilder, StateBuilder};
pub use targeting::{
    all, any, at_least, attr, below, between, contains, ends_with, eq, expr, in_materialized, in_segment, one_of,
    range, starts_with, t_bool, t_list, t_none, t_num, t_str, t_ts, t_ts_secs, t_version, AttrRule, Bound, Criterion,
    Op, TValue,
};
pub use value::{empty_obj, obj, v_bool, v_int, v_list, v_null, v_num, v_obj, v_str, v_unset};

/// Re-exported so users need not depend on the resolver crate for the message types.
pub use confidence_resolver::proto::confidence::flags::admin::v1::resolver_state::LogDestination;
