//! Deterministic random states and matching evaluation contexts for differential testing.
//!
//! Breadth beats realism here: states mix every value type, criterion, operator, assignment
//! kind and bitset shape the resolver supports, and contexts throw hits, near misses, wrong
//! types, nulls and odd targeting keys at them. Everything derives from one seed.
//!
//! ```
//! use state_builder::random::{Generator, Options};
//!
//! let scenario = Generator::new(7).scenario();
//! let bytes = scenario.state.encode();
//! let requests = scenario.requests(1, 20);
//! assert!(!bytes.is_empty() && requests.len() == 20);
//! # let _ = Options::default();
//! ```

mod attrs;
mod context;
mod gen;

use confidence_resolver::proto::confidence::flags::resolver::v1::ResolveFlagsRequest;
use confidence_resolver::proto::google::Struct;

pub use crate::rng::Rng;
pub use attrs::{Kind, ATTRIBUTES};
pub use context::{unit_pool, ContextModel};

use crate::state::BuiltState;

/// What the generator may put in a state.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Number of flags.
    pub flags: usize,
    /// Number of segments.
    pub segments: usize,
    /// Number of clients (1..=6); each gets one or two credentials.
    pub clients: usize,
    /// Upper bound of rules per flag.
    pub max_rules: usize,
    /// Gzipped partial bitsets (otherwise only absent / full ones).
    pub partial_bitsets: bool,
    /// Legal but unusual shapes: unrecognized rules, cycles, missing references, gaps and
    /// overlaps in bucket ranges, negative bucket counts, duplicate names, empty schemas,
    /// client-name prefix collisions, credentials without secrets...
    pub edge_cases: bool,
    /// Inputs that make the whole request fail: non-numeric strings reaching numeric rules,
    /// unknown variants, zero bucket counts, unknown secrets. Off by default so every request
    /// has an answer to compare.
    pub request_errors: bool,
    /// Materialized-segment criteria answered by bloom filters (no store needed).
    pub bloom_filters: bool,
    /// Materialization specs on rules and store-backed materialized-segment criteria (need a
    /// materialization store, or resolve as MATERIALIZATION_NOT_SUPPORTED).
    pub materializations: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flags: 10,
            segments: 10,
            clients: 2,
            max_rules: 4,
            partial_bitsets: true,
            edge_cases: true,
            request_errors: false,
            bloom_filters: false,
            materializations: false,
        }
    }
}

/// Produces scenarios from a seed.
#[derive(Clone, Debug)]
pub struct Generator {
    rng: Rng,
    options: Options,
}

impl Generator {
    /// A generator with default [`Options`].
    pub fn new(seed: u64) -> Self {
        Self::with_options(seed, Options::default())
    }

    /// A generator with explicit options.
    pub fn with_options(seed: u64, options: Options) -> Self {
        Generator { rng: Rng::new(seed), options }
    }

    /// The next random state with its context model.
    pub fn scenario(&mut self) -> Scenario {
        let mut rng = self.rng.fork();
        let (state, model) = gen::StateGen::new(&mut rng, &self.options).generate();
        Scenario { secrets: state.secrets(), flags: state.flag_names(), state, model, options: self.options.clone() }
    }
}

/// A random state plus everything needed to query it.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The state (load with `state.encode()` and `state.account_id`).
    pub state: BuiltState,
    /// Every client secret in the state.
    pub secrets: Vec<String>,
    /// Every flag name in the state (archived ones included).
    pub flags: Vec<String>,
    /// The attribute paths, selectors and units contexts draw from.
    pub model: ContextModel,
    /// The options the state was generated with.
    pub options: Options,
}

impl Scenario {
    /// One evaluation context drawn with `rng`.
    pub fn context(&self, rng: &mut Rng) -> Struct {
        self.model.context(rng)
    }

    /// `n` contexts from `seed`.
    pub fn contexts(&self, seed: u64, n: usize) -> Vec<Struct> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| self.context(&mut rng)).collect()
    }

    /// One resolve request (secret, flag selection, context, apply) drawn with `rng`.
    pub fn request(&self, rng: &mut Rng) -> ResolveFlagsRequest {
        self.model.request(&self.secrets, &self.flags, rng)
    }

    /// `n` resolve requests from `seed`.
    pub fn requests(&self, seed: u64, n: usize) -> Vec<ResolveFlagsRequest> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| self.request(&mut rng)).collect()
    }
}

/// Shorthand for `Generator::new(seed).scenario()`.
pub fn scenario(seed: u64) -> Scenario {
    Generator::new(seed).scenario()
}
