//! Segments: who a rule applies to (targeting) and which share of them (bitset).

use confidence_resolver::proto::confidence::flags::admin::v1::{segment, Segment};
use confidence_resolver::proto::confidence::flags::types::v1::{Expression, Targeting};
use confidence_resolver::proto::google::r#type::Decimal;

use crate::bitset::Bitset;
use crate::names::segment_name;
use crate::targeting::{attr, AttrRule, Criterion};

/// Builds one `Segment` plus its bitset entry.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentBuilder {
    name: String,
    criteria: Vec<(String, Criterion)>,
    expression: Option<Expression>,
    targeting: bool,
    proportion: Option<String>,
    exclusivity_tags: Vec<String>,
    exclusive_to: Vec<String>,
    bitset: Bitset,
}

impl SegmentBuilder {
    /// A segment `segments/<id>` that matches everyone (no targeting, no bitset).
    pub fn new(id: &str) -> Self {
        SegmentBuilder {
            name: segment_name(id),
            criteria: Vec::new(),
            expression: None,
            targeting: false,
            proportion: Some("1".to_string()),
            exclusivity_tags: Vec::new(),
            exclusive_to: Vec::new(),
            bitset: Bitset::Absent,
        }
    }

    /// The full name, `segments/<id>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a named criterion; the expression decides how criteria combine.
    pub fn criterion(mut self, id: impl Into<String>, c: Criterion) -> Self {
        self.criteria.push((id.into(), c));
        self.targeting = true;
        self
    }

    /// Shorthand for an attribute criterion.
    pub fn attribute(self, id: impl Into<String>, path: &str, rule: impl Into<AttrRule>) -> Self {
        self.criterion(id, attr(path, rule))
    }

    /// The targeting expression. Without one, a targeting message is still emitted when criteria
    /// exist, and the resolver then matches everyone.
    pub fn expression(mut self, e: Expression) -> Self {
        self.expression = Some(e);
        self.targeting = true;
        self
    }

    /// Emits an empty `Targeting` message (no criteria, no expression) instead of none.
    pub fn empty_targeting(mut self) -> Self {
        self.targeting = true;
        self
    }

    /// The allocation proportion as a decimal string, e.g. `"0.5"`. Informational: the
    /// resolver allocates through the bitset only.
    pub fn proportion(mut self, decimal: impl Into<String>) -> Self {
        self.proportion = Some(decimal.into());
        self
    }

    /// Leaves `allocation.proportion` absent.
    pub fn no_proportion(mut self) -> Self {
        self.proportion = None;
        self
    }

    /// Exclusivity tags of the allocation (metadata).
    pub fn exclusivity_tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.exclusivity_tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Tags this segment is exclusive to (metadata).
    pub fn exclusive_to<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.exclusive_to = tags.into_iter().map(Into::into).collect();
        self
    }

    /// How the segment's allocation is shipped.
    pub fn bitset(mut self, b: Bitset) -> Self {
        self.bitset = b;
        self
    }

    /// The current bitset choice.
    pub fn bitset_ref(&self) -> &Bitset {
        &self.bitset
    }

    /// The `Segment` message (its `bitset_allocation` stays empty, as in CDN states).
    pub fn to_proto(&self) -> Segment {
        let targeting = self.targeting.then(|| Targeting {
            criteria: self.criteria.iter().map(|(id, c)| (id.clone(), c.to_proto())).collect(),
            expression: self.expression.clone(),
        });
        Segment {
            name: self.name.clone(),
            targeting,
            allocation: Some(segment::Allocation {
                proportion: self.proportion.clone().map(|value| Decimal { value }),
                exclusivity_tags: self.exclusivity_tags.clone(),
                exclusive_to: self.exclusive_to.clone(),
            }),
            state: segment::State::Allocated as i32,
            ..Default::default()
        }
    }
}
