//! Flags: schema, variants, the clients they are enabled for, and ordered rules.

use confidence_resolver::proto::confidence::flags::admin::v1::{
    flag::{
        self,
        rule::{
            assignment::{Assignment as Kind, ClientDefaultAssignment, FallthroughAssignment, VariantAssignment},
            materialization_spec::MaterializationReadMode,
            Assignment, AssignmentSpec, BucketRange, MaterializationSpec,
        },
        Rule, Variant,
    },
    Flag,
};
use confidence_resolver::proto::confidence::flags::types::v1::{flag_schema::StructFlagSchema, FlagSchema};
use confidence_resolver::proto::google::Struct;

use crate::names::{client_name, flag_name, rule_name, segment_name, variant_name};

/// `Flag.State`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagState {
    Active,
    Archived,
    /// `STATE_UNSPECIFIED`: not resolved, like archived.
    Unspecified,
}

/// What an assignment hands out.
#[derive(Clone, Debug, PartialEq)]
pub enum AssignmentKind {
    /// A variant by short id (`"on"`) or full name (`flags/f/variants/on`).
    Variant(String),
    /// Record the rule and keep evaluating later rules.
    Fallthrough,
    /// Match with no variant: the client keeps its own default.
    ClientDefault,
    /// Nothing in the oneof (the rule is skipped).
    Unset,
}

/// `Flag.Rule.MaterializationSpec`: sticky assignments backed by a materialization store.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Materialization {
    pub write: String,
    pub read: String,
    /// `(materialization_must_match, segment_targeting_can_be_ignored)`; `None` leaves `mode`
    /// absent (same meaning as both false).
    pub mode: Option<(bool, bool)>,
}

impl Materialization {
    /// Reads and writes the same materialization (the usual sticky setup).
    pub fn sticky(name: impl Into<String>) -> Self {
        let name = name.into();
        Materialization { write: name.clone(), read: name, mode: None }
    }

    /// Only writes (records assignments, never reads them back).
    pub fn write_only(name: impl Into<String>) -> Self {
        Materialization { write: name.into(), ..Default::default() }
    }

    /// Sets the read mode flags.
    pub fn mode(mut self, must_match: bool, ignore_segment_targeting: bool) -> Self {
        self.mode = Some((must_match, ignore_segment_targeting));
        self
    }

    fn to_proto(&self) -> MaterializationSpec {
        MaterializationSpec {
            write_materialization: self.write.clone(),
            read_materialization: self.read.clone(),
            mode: self.mode.map(|(m, i)| MaterializationReadMode {
                materialization_must_match: m,
                segment_targeting_can_be_ignored: i,
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct AssignmentDef {
    id: String,
    kind: AssignmentKind,
    ranges: Vec<(i32, i32)>,
}

/// One rule of a flag. Names of the rule and its variants are completed by the owning flag.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleBuilder {
    id: String,
    segment: String,
    enabled: bool,
    selector: String,
    environments: Vec<String>,
    bucket_count: i32,
    assignments: Vec<AssignmentDef>,
    has_spec: bool,
    materialization: Option<Materialization>,
}

impl RuleBuilder {
    /// An enabled rule `<id>` on `segment` (short id or `segments/<id>`) with 100 buckets and
    /// no assignments yet.
    pub fn new(id: &str, segment: &str) -> Self {
        RuleBuilder {
            id: id.to_string(),
            segment: segment_name(segment),
            enabled: true,
            selector: String::new(),
            environments: Vec::new(),
            bucket_count: 100,
            assignments: Vec::new(),
            has_spec: true,
            materialization: None,
        }
    }

    /// Everyone in the segment gets `variant` (a full rollout needs no targeting key).
    pub fn full(id: &str, segment: &str, variant: &str) -> Self {
        Self::new(id, segment).bucket_count(1).variant(format!("{id}-all"), variant, [(0, 1)])
    }

    /// Splits the segment by weight: `[("on", 50), ("off", 50)]` uses 100 buckets.
    pub fn split<S: AsRef<str>>(id: &str, segment: &str, weights: impl IntoIterator<Item = (S, i32)>) -> Self {
        let mut rule = Self::new(id, segment);
        let mut lower = 0;
        for (i, (variant, w)) in weights.into_iter().enumerate() {
            let upper = lower + w;
            rule = rule.variant(format!("{id}-{i}"), variant.as_ref(), [(lower, upper)]);
            lower = upper;
        }
        rule.bucket_count(lower)
    }

    /// The id as given; the wire name is `flags/<flag>/rules/<id>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Disables the rule (it is skipped).
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// Sets `enabled`.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Reads the unit from this dotted context path instead of `targeting_key`.
    pub fn selector(mut self, path: impl Into<String>) -> Self {
        self.selector = path.into();
        self
    }

    /// Restricts the rule to credentials holding one of these environments (exact strings).
    pub fn environments<S: Into<String>>(mut self, envs: impl IntoIterator<Item = S>) -> Self {
        self.environments = envs.into_iter().map(Into::into).collect();
        self
    }

    /// Number of buckets units hash into.
    pub fn bucket_count(mut self, n: i32) -> Self {
        self.bucket_count = n;
        self
    }

    /// Adds an assignment of any kind over half-open bucket ranges `[lower, upper)`.
    pub fn assignment(
        mut self,
        assignment_id: impl Into<String>,
        kind: AssignmentKind,
        ranges: impl IntoIterator<Item = (i32, i32)>,
    ) -> Self {
        self.assignments.push(AssignmentDef { id: assignment_id.into(), kind, ranges: ranges.into_iter().collect() });
        self
    }

    /// Adds a variant assignment.
    pub fn variant(
        self,
        assignment_id: impl Into<String>,
        variant: &str,
        ranges: impl IntoIterator<Item = (i32, i32)>,
    ) -> Self {
        self.assignment(assignment_id, AssignmentKind::Variant(variant.to_string()), ranges)
    }

    /// Adds a fallthrough assignment.
    pub fn fallthrough(self, assignment_id: impl Into<String>, ranges: impl IntoIterator<Item = (i32, i32)>) -> Self {
        self.assignment(assignment_id, AssignmentKind::Fallthrough, ranges)
    }

    /// Adds a client-default assignment.
    pub fn client_default(
        self,
        assignment_id: impl Into<String>,
        ranges: impl IntoIterator<Item = (i32, i32)>,
    ) -> Self {
        self.assignment(assignment_id, AssignmentKind::ClientDefault, ranges)
    }

    /// Leaves `assignment_spec` absent (the resolver skips such rules).
    pub fn without_assignment_spec(mut self) -> Self {
        self.has_spec = false;
        self
    }

    /// Attaches a materialization spec (needs a store at resolve time).
    pub fn materialization(mut self, m: Materialization) -> Self {
        self.materialization = Some(m);
        self
    }

    fn to_proto(&self, flag: &str) -> Rule {
        let assignment_spec = self.has_spec.then(|| AssignmentSpec {
            bucket_count: self.bucket_count,
            assignments: self
                .assignments
                .iter()
                .map(|a| Assignment {
                    assignment_id: a.id.clone(),
                    bucket_ranges: a.ranges.iter().map(|&(lower, upper)| BucketRange { lower, upper }).collect(),
                    assignment: match &a.kind {
                        AssignmentKind::Variant(v) => {
                            Some(Kind::Variant(VariantAssignment { variant: variant_name(flag, v) }))
                        }
                        AssignmentKind::Fallthrough => Some(Kind::Fallthrough(FallthroughAssignment {})),
                        AssignmentKind::ClientDefault => Some(Kind::ClientDefault(ClientDefaultAssignment {})),
                        AssignmentKind::Unset => None,
                    },
                })
                .collect(),
        });
        Rule {
            name: rule_name(flag, &self.id),
            segment: self.segment.clone(),
            targeting_key_selector: self.selector.clone(),
            enabled: self.enabled,
            environments: self.environments.clone(),
            assignment_spec,
            materialization_spec: self.materialization.as_ref().map(Materialization::to_proto),
            ..Default::default()
        }
    }
}

/// Builds one `Flag`.
#[derive(Clone, Debug, PartialEq)]
pub struct FlagBuilder {
    name: String,
    schema: Option<StructFlagSchema>,
    variants: Vec<(String, Option<Struct>)>,
    state: FlagState,
    clients: Vec<String>,
    rules: Vec<RuleBuilder>,
    description: String,
}

impl FlagBuilder {
    /// An active flag `flags/<id>` with no schema, variants, clients or rules.
    pub fn new(id: &str) -> Self {
        FlagBuilder {
            name: flag_name(id),
            schema: None,
            variants: Vec::new(),
            state: FlagState::Active,
            clients: Vec::new(),
            rules: Vec::new(),
            description: String::new(),
        }
    }

    /// The full name, `flags/<id>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the whole schema.
    pub fn schema(mut self, schema: StructFlagSchema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Adds one top-level schema field (creating the schema if needed).
    pub fn field(mut self, name: impl Into<String>, schema: FlagSchema) -> Self {
        self.schema.get_or_insert_with(StructFlagSchema::default).schema.insert(name.into(), schema);
        self
    }

    /// Adds a variant `flags/<flag>/variants/<id>` with its value.
    pub fn variant(mut self, id: &str, value: Struct) -> Self {
        self.variants.push((variant_name(&self.name, id), Some(value)));
        self
    }

    /// Adds a variant whose `value` is absent on the wire.
    pub fn variant_without_value(mut self, id: &str) -> Self {
        self.variants.push((variant_name(&self.name, id), None));
        self
    }

    /// Sets the lifecycle state.
    pub fn state(mut self, s: FlagState) -> Self {
        self.state = s;
        self
    }

    /// Marks the flag archived (it disappears from resolves).
    pub fn archived(self) -> Self {
        self.state(FlagState::Archived)
    }

    /// Enables the flag for a client (short id or `clients/<id>`).
    pub fn client(mut self, id: &str) -> Self {
        self.clients.push(client_name(id));
        self
    }

    /// Enables the flag for several clients.
    pub fn clients<S: AsRef<str>>(mut self, ids: impl IntoIterator<Item = S>) -> Self {
        self.clients.extend(ids.into_iter().map(|id| client_name(id.as_ref())));
        self
    }

    /// Appends a rule; rules are evaluated in insertion order.
    pub fn rule(mut self, rule: RuleBuilder) -> Self {
        self.rules.push(rule);
        self
    }

    /// A human description (metadata).
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// The `Flag` message.
    pub fn to_proto(&self) -> Flag {
        Flag {
            name: self.name.clone(),
            description: self.description.clone(),
            schema: self.schema.clone(),
            variants: self
                .variants
                .iter()
                .map(|(name, value)| Variant { name: name.clone(), value: value.clone(), ..Default::default() })
                .collect(),
            state: match self.state {
                FlagState::Active => flag::State::Active,
                FlagState::Archived => flag::State::Archived,
                FlagState::Unspecified => flag::State::Unspecified,
            } as i32,
            rules: self.rules.iter().map(|r| r.to_proto(&self.name)).collect(),
            clients: self.clients.clone(),
            ..Default::default()
        }
    }
}
