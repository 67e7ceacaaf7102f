//! Segment targeting: rule values, attribute rules, criteria and expressions.
//!
//! The resolver distinguishes several "absent" shapes (no rule, an `eq_rule` without a value,
//! an `any_rule` without an inner rule...) that behave differently, so the types here can express
//! each of them instead of only the well-formed cases.

use confidence_resolver::proto::confidence::flags::types::v1::{
    expression::{Expression as ExprKind, Operands},
    targeting::{
        self,
        criterion::{
            attribute_criterion::Rule as TopRule, AttributeCriterion, Criterion as CriterionKind,
            MaterializedSegmentCriterion, SegmentCriterion,
        },
        inner_rule::Rule as InnerKind,
        range_rule::{End, Start},
        value::Value as TKind,
        AllRule, AnyRule, ContainsRule, EndsWithRule, EqRule, InnerRule, RangeRule, SetRule, StartsWithRule,
    },
    Expression,
};
use confidence_resolver::proto::google::Timestamp;

use crate::names::segment_name;

/// A value inside a targeting rule (`confidence.flags.types.v1.Targeting.Value`).
pub type TValue = targeting::Value;

fn tv(k: TKind) -> TValue {
    TValue { value: Some(k) }
}

/// A boolean rule value.
pub fn t_bool(b: bool) -> TValue {
    tv(TKind::BoolValue(b))
}

/// A number rule value.
pub fn t_num(n: impl Into<f64>) -> TValue {
    tv(TKind::NumberValue(n.into()))
}

/// A string rule value.
pub fn t_str(s: impl Into<String>) -> TValue {
    tv(TKind::StringValue(s.into()))
}

/// A timestamp rule value.
pub fn t_ts(ts: Timestamp) -> TValue {
    tv(TKind::TimestampValue(ts))
}

/// A timestamp rule value from epoch seconds.
pub fn t_ts_secs(seconds: i64) -> TValue {
    t_ts(Timestamp { seconds, nanos: 0 })
}

/// A semantic-version rule value (kept verbatim; the resolver parses it only for ordering).
pub fn t_version(v: impl Into<String>) -> TValue {
    tv(TKind::VersionValue(targeting::SemanticVersion { version: v.into() }))
}

/// A list rule value.
pub fn t_list(items: impl IntoIterator<Item = TValue>) -> TValue {
    tv(TKind::ListValue(targeting::ListValue { values: items.into_iter().collect() }))
}

/// A rule value with no kind: it equals nothing the context can produce.
pub fn t_none() -> TValue {
    TValue { value: None }
}

/// One end of a range rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    Unbounded,
    Inclusive(TValue),
    Exclusive(TValue),
}

/// A single comparison: usable as an attribute rule or as the inner rule of `any`/`all`.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Eq(TValue),
    /// `eq_rule` whose `value` is absent (the resolver treats the rule as unrecognized).
    EqWithoutValue,
    Set(Vec<TValue>),
    Range(Bound, Bound),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    /// No rule in the oneof.
    Unset,
}

/// The rule of an attribute criterion.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrRule {
    /// No rule in the oneof.
    Unset,
    Op(Op),
    /// `any_rule`; `None` leaves its inner rule absent.
    Any(Option<Op>),
    /// `all_rule`; `None` leaves its inner rule absent.
    All(Option<Op>),
}

impl From<Op> for AttrRule {
    fn from(op: Op) -> Self {
        AttrRule::Op(op)
    }
}

/// `attribute == v` (for list contexts: some element equals `v`).
pub fn eq(v: TValue) -> Op {
    Op::Eq(v)
}

/// `attribute ∈ values`.
pub fn one_of(values: impl IntoIterator<Item = TValue>) -> Op {
    Op::Set(values.into_iter().collect())
}

/// A range with explicit bounds.
pub fn range(start: Bound, end: Bound) -> Op {
    Op::Range(start, end)
}

/// `attribute >= v`.
pub fn at_least(v: TValue) -> Op {
    Op::Range(Bound::Inclusive(v), Bound::Unbounded)
}

/// `attribute < v`.
pub fn below(v: TValue) -> Op {
    Op::Range(Bound::Unbounded, Bound::Exclusive(v))
}

/// `lo <= attribute < hi`.
pub fn between(lo: TValue, hi: TValue) -> Op {
    Op::Range(Bound::Inclusive(lo), Bound::Exclusive(hi))
}

/// String prefix test (strict: only string values can match).
pub fn starts_with(p: impl Into<String>) -> Op {
    Op::StartsWith(p.into())
}

/// String suffix test (strict).
pub fn ends_with(p: impl Into<String>) -> Op {
    Op::EndsWith(p.into())
}

/// Substring test (strict).
pub fn contains(p: impl Into<String>) -> Op {
    Op::Contains(p.into())
}

/// Some element of the context value satisfies `op`.
pub fn any(op: Op) -> AttrRule {
    AttrRule::Any(Some(op))
}

/// Every element of the context value satisfies `op` (true for an empty list).
pub fn all(op: Op) -> AttrRule {
    AttrRule::All(Some(op))
}

/// One named criterion of a segment's targeting.
#[derive(Clone, Debug, PartialEq)]
pub enum Criterion {
    /// No criterion in the oneof (evaluates to false).
    Unset,
    /// Compares the context value at a dotted path.
    Attribute { name: String, rule: AttrRule },
    /// Membership of another segment (full name `segments/<id>`).
    Segment(String),
    /// Membership of a materialized segment (answered by a bloom filter or the store).
    MaterializedSegment(String),
}

/// An attribute criterion over the dotted context path `name`.
pub fn attr(name: impl Into<String>, rule: impl Into<AttrRule>) -> Criterion {
    Criterion::Attribute { name: name.into(), rule: rule.into() }
}

/// A criterion matching members of segment `id` (`segments/` is added when missing).
pub fn in_segment(id: &str) -> Criterion {
    Criterion::Segment(segment_name(id))
}

/// A criterion matching members of the materialized segment `name` (used verbatim).
pub fn in_materialized(name: impl Into<String>) -> Criterion {
    Criterion::MaterializedSegment(name.into())
}

impl Bound {
    fn start(self) -> Option<Start> {
        match self {
            Bound::Unbounded => None,
            Bound::Inclusive(v) => Some(Start::StartInclusive(v)),
            Bound::Exclusive(v) => Some(Start::StartExclusive(v)),
        }
    }

    fn end(self) -> Option<End> {
        match self {
            Bound::Unbounded => None,
            Bound::Inclusive(v) => Some(End::EndInclusive(v)),
            Bound::Exclusive(v) => Some(End::EndExclusive(v)),
        }
    }
}

fn range_rule(start: Bound, end: Bound) -> RangeRule {
    RangeRule { start: start.start(), end: end.end() }
}

impl Op {
    /// The oneof member used at the top level of an attribute criterion.
    pub fn to_top(&self) -> Option<TopRule> {
        Some(match self.clone() {
            Op::Eq(v) => TopRule::EqRule(EqRule { value: Some(v) }),
            Op::EqWithoutValue => TopRule::EqRule(EqRule { value: None }),
            Op::Set(values) => TopRule::SetRule(SetRule { values }),
            Op::Range(s, e) => TopRule::RangeRule(range_rule(s, e)),
            Op::StartsWith(value) => TopRule::StartsWithRule(StartsWithRule { value }),
            Op::EndsWith(value) => TopRule::EndsWithRule(EndsWithRule { value }),
            Op::Contains(value) => TopRule::ContainsRule(ContainsRule { value }),
            Op::Unset => return None,
        })
    }

    /// The `InnerRule` used inside `any_rule` / `all_rule`.
    pub fn to_inner(&self) -> InnerRule {
        let rule = match self.clone() {
            Op::Eq(v) => Some(InnerKind::EqRule(EqRule { value: Some(v) })),
            Op::EqWithoutValue => Some(InnerKind::EqRule(EqRule { value: None })),
            Op::Set(values) => Some(InnerKind::SetRule(SetRule { values })),
            Op::Range(s, e) => Some(InnerKind::RangeRule(range_rule(s, e))),
            Op::StartsWith(value) => Some(InnerKind::StartsWithRule(StartsWithRule { value })),
            Op::EndsWith(value) => Some(InnerKind::EndsWithRule(EndsWithRule { value })),
            Op::Contains(value) => Some(InnerKind::ContainsRule(ContainsRule { value })),
            Op::Unset => None,
        };
        InnerRule { rule }
    }
}

impl AttrRule {
    fn to_proto(&self) -> Option<TopRule> {
        match self {
            AttrRule::Unset => None,
            AttrRule::Op(op) => op.to_top(),
            AttrRule::Any(inner) => Some(TopRule::AnyRule(AnyRule { rule: inner.as_ref().map(Op::to_inner) })),
            AttrRule::All(inner) => Some(TopRule::AllRule(AllRule { rule: inner.as_ref().map(Op::to_inner) })),
        }
    }
}

impl Criterion {
    /// The protobuf criterion.
    pub fn to_proto(&self) -> targeting::Criterion {
        let criterion = match self {
            Criterion::Unset => None,
            Criterion::Attribute { name, rule } => Some(CriterionKind::Attribute(AttributeCriterion {
                attribute_name: name.clone(),
                rule: rule.to_proto(),
            })),
            Criterion::Segment(segment) => Some(CriterionKind::Segment(SegmentCriterion { segment: segment.clone() })),
            Criterion::MaterializedSegment(name) => {
                Some(CriterionKind::MaterializedSegment(MaterializedSegmentCriterion {
                    materialized_segment: name.clone(),
                }))
            }
        };
        targeting::Criterion { criterion }
    }
}

/// Expression constructors (`ref`, `not`, `and`, `or`) over criterion ids.
pub mod expr {
    use super::*;

    /// The criterion with this id (an unknown id evaluates to false).
    pub fn id(criterion_id: impl Into<String>) -> Expression {
        Expression { expression: Some(ExprKind::Ref(criterion_id.into())) }
    }

    /// Negation.
    pub fn not(e: Expression) -> Expression {
        Expression { expression: Some(ExprKind::Not(Box::new(e))) }
    }

    /// Conjunction (empty = true).
    pub fn and(operands: impl IntoIterator<Item = Expression>) -> Expression {
        Expression { expression: Some(ExprKind::And(Operands { operands: operands.into_iter().collect() })) }
    }

    /// Disjunction (empty = false).
    pub fn or(operands: impl IntoIterator<Item = Expression>) -> Expression {
        Expression { expression: Some(ExprKind::Or(Operands { operands: operands.into_iter().collect() })) }
    }

    /// An expression with nothing in its oneof (evaluates to false).
    pub fn unset() -> Expression {
        Expression { expression: None }
    }
}
