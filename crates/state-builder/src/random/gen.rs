//! Random states: clients, segments (with targeting and bitsets) and flags (with schemas,
//! variants and rules), recording in a [`ContextModel`] what contexts should exercise.

use confidence_resolver::proto::confidence::flags::types::v1::{
    flag_schema::{SchemaType, StructFlagSchema},
    Expression, FlagSchema,
};
use confidence_resolver::proto::google::{Struct, Value};

use super::attrs::{RuleGen, ATTRIBUTES};
use super::context::{unit_pool, ContextModel};
use super::Options;
use crate::bitset::Bitset;
use crate::bloom::BloomFilter;
use crate::flag::{AssignmentKind, FlagBuilder, FlagState, Materialization, RuleBuilder};
use crate::rng::Rng;
use crate::schema::{s_bool, s_double, s_int, s_list, s_string, struct_schema};
use crate::segment::SegmentBuilder;
use crate::state::{BuiltState, ClientBuilder, CredentialBuilder, StateBuilder};
use crate::targeting::{expr, in_materialized, Criterion};
use crate::value::{obj, v_bool, v_list, v_null, v_num, v_obj, v_str};

const ENVS: &[&str] = &["environments/prod", "environments/staging", "environments/dev"];
const RULE_ENVS: &[&str] = &["environments/prod", "environments/staging", "environments/dev", "environments/qa"];
const CLIENT_IDS: &[&str] = &["web", "ios", "android", "backend", "tv", "kiosk"];
const WORDS: &[&str] = &["alpha", "beta", "gamma", "delta", "omega", "pilot", "launch", "promo", "ux", "pricing"];
const VARIANT_IDS: &[&str] = &["control", "treatment", "on", "off", "blue", "green", "v3"];
const FIELD_NAMES: &[&str] =
    &["enabled", "color", "size", "ratio", "title", "config", "items", "limit", "theme", "count"];
const SELECTORS: &[(&str, u64)] =
    &[("", 55), ("targeting_key", 5), ("visitor_id", 12), ("user.id", 12), ("user.profile.key", 8), ("device.id", 8)];

/// Builds one random state and the model of contexts that exercise it.
pub struct StateGen<'a> {
    rng: &'a mut Rng,
    opts: &'a Options,
    model: ContextModel,
    account: String,
    clients: Vec<String>,
    segments: Vec<String>,
    materialized: Vec<String>,
}

impl<'a> StateGen<'a> {
    pub fn new(rng: &'a mut Rng, opts: &'a Options) -> Self {
        let model = ContextModel { units: unit_pool(), request_errors: opts.request_errors, ..Default::default() };
        StateGen {
            rng,
            opts,
            model,
            account: String::new(),
            clients: Vec::new(),
            segments: Vec::new(),
            materialized: Vec::new(),
        }
    }

    pub fn generate(mut self) -> (BuiltState, ContextModel) {
        self.account = match self.rng.below(4) {
            0 => "acme".to_string(),
            1 => "confidence-test".to_string(),
            2 => "demo-account".to_string(),
            _ => format!("acct-{:04x}", self.rng.below(0x10000)),
        };
        let mut b = StateBuilder::new(self.account.clone());
        for c in self.clients() {
            b = b.client(c);
        }
        if self.opts.bloom_filters {
            for i in 0..2 {
                let name = format!("materializedSegments/bloom-{i}");
                let units = self.rng.subset(&self.model.units, 10);
                b = b.bloom_filter(BloomFilter::from_units(&name, &units, 0.01));
                self.materialized.push(name);
            }
        }
        if self.opts.materializations {
            self.materialized.push("materializedSegments/in-store".into());
            if self.opts.bloom_filters {
                // Dropped by the resolver (unknown strategy), so lookups go to the store.
                let name = "materializedSegments/bad-strategy".to_string();
                b = b.bloom_filter(BloomFilter::from_units(&name, ["alice"], 0.01).with_strategy(0));
                self.materialized.push(name);
            }
        }
        self.segments = (0..self.opts.segments.max(1)).map(|i| format!("s{i}-{}", self.rng.pick(WORDS))).collect();
        for i in 0..self.segments.len() {
            let s = self.segment(i, &self.segments[i].clone());
            b = b.segment(s);
        }
        if self.opts.edge_cases && self.rng.chance(0.2) {
            // A later duplicate replaces the earlier segment of the same name.
            let i = self.rng.index(self.segments.len());
            let s = self.segment(i, &self.segments[i].clone());
            b = b.segment(s);
        }
        for i in 0..self.opts.flags {
            let id = format!("f{i}-{}", self.rng.pick(WORDS));
            b = b.flag(self.flag(&id));
            if self.opts.edge_cases && self.rng.chance(0.04) {
                b = b.flag(self.flag(&id));
            }
        }
        self.model.selectors.sort();
        self.model.selectors.dedup();
        (b.build(), self.model)
    }

    fn clients(&mut self) -> Vec<ClientBuilder> {
        let n = self.opts.clients.clamp(1, CLIENT_IDS.len());
        let mut ids: Vec<String> = CLIENT_IDS.iter().take(n).map(|s| s.to_string()).collect();
        if self.opts.edge_cases && self.rng.chance(0.3) {
            // `clients/web` is a raw string prefix of `clients/web2/...`: the resolver's
            // prefix test pairs it with web2's credentials too.
            let prefix = format!("{}2", CLIENT_IDS[0]);
            ids.push(prefix);
        }
        let mut out = Vec::new();
        for id in ids {
            let mut c = ClientBuilder::new(&id);
            for j in 0..1 + self.rng.index(2) {
                let cred = if self.opts.edge_cases && self.rng.chance(0.05) {
                    CredentialBuilder::without_secret(&format!("k{j}"))
                } else {
                    let secret = format!("secret-{id}-{j}-{:08x}", self.rng.below(1 << 32));
                    CredentialBuilder::new(&format!("k{j}"), secret)
                };
                let envs = self.rng.subset(ENVS, 2);
                c = c.credential(cred.environments(envs));
            }
            self.clients.push(format!("clients/{id}"));
            out.push(c);
        }
        out
    }

    fn segment(&mut self, index: usize, id: &str) -> SegmentBuilder {
        let mut s = SegmentBuilder::new(id)
            .proportion(self.rng.pick(&["1", "0.5", "0.25", "0.123456789", "0"]))
            .exclusivity_tags(self.rng.subset(&["exp-a", "exp-b"], 2))
            .exclusive_to(self.rng.subset(&["exp-c"], 1));
        let r = self.rng.below(100);
        if r >= 15 {
            if self.opts.edge_cases && r < 18 {
                s = s.empty_targeting();
            } else {
                let n = 1 + self.rng.index(4);
                let ids: Vec<String> = (0..n).map(|j| format!("c{j}")).collect();
                for cid in &ids {
                    let c = self.criterion(index);
                    s = s.criterion(cid.clone(), c);
                }
                if !(self.opts.edge_cases && self.rng.chance(0.05)) {
                    s = s.expression(self.expression(&ids));
                }
            }
        }
        s.bitset(self.bitset())
    }

    fn criterion(&mut self, index: usize) -> Criterion {
        let r = self.rng.below(100);
        if (75..90).contains(&r) && (index > 0 || self.opts.edge_cases) {
            let target = if self.opts.edge_cases && (index == 0 || self.rng.chance(0.2)) {
                // Self-references, forward references (possible cycles) and missing segments.
                match self.rng.below(3) {
                    0 => self.segments.get(index).cloned().unwrap_or_default(),
                    1 => self.rng.pick(&self.segments),
                    _ => "ghost".to_string(),
                }
            } else {
                self.segments.get(self.rng.index(index)).cloned().unwrap_or_default()
            };
            return crate::targeting::in_segment(&target);
        }
        if (90..97).contains(&r) && !self.materialized.is_empty() {
            return in_materialized(self.rng.pick(&self.materialized));
        }
        if r >= 97 && self.opts.edge_cases {
            return Criterion::Unset;
        }
        let (path, kind) = self.rng.pick(ATTRIBUTES);
        let entry = self.model.attributes.entry(path.to_string()).or_insert_with(|| (kind, Vec::new()));
        let mut gen = RuleGen {
            rng: self.rng,
            edge_cases: self.opts.edge_cases,
            request_errors: self.opts.request_errors,
            units: &self.model.units,
        };
        let rule = gen.rule(path, kind, &mut entry.1);
        crate::targeting::attr(path, rule)
    }

    fn leaf(&mut self, id: &str) -> Expression {
        if self.rng.chance(0.2) {
            expr::not(expr::id(id))
        } else {
            expr::id(id)
        }
    }

    fn expression(&mut self, ids: &[String]) -> Expression {
        let mut ops: Vec<Expression> = ids.iter().map(|id| self.leaf(id)).collect();
        if self.opts.edge_cases && self.rng.chance(0.08) {
            ops.push(match self.rng.below(4) {
                0 => expr::id("missing"),
                1 => expr::unset(),
                2 => expr::and([]),
                _ => expr::or([]),
            });
        }
        let and_top = self.rng.chance(0.5);
        if ops.len() >= 3 && self.rng.chance(0.4) {
            let b = ops.pop().unwrap_or_else(expr::unset);
            let a = ops.pop().unwrap_or_else(expr::unset);
            ops.push(if and_top { expr::or([a, b]) } else { expr::and([a, b]) });
        }
        let e = if ops.len() == 1 && self.rng.chance(0.8) {
            ops.pop().unwrap_or_else(expr::unset)
        } else if and_top {
            expr::and(ops)
        } else {
            expr::or(ops)
        };
        if self.rng.chance(0.1) {
            expr::not(e)
        } else {
            e
        }
    }

    fn bitset(&mut self) -> Bitset {
        let r = self.rng.below(100);
        if r < 50 || (r >= 65 && !self.opts.partial_bitsets) {
            return Bitset::Absent;
        }
        if r < 65 {
            return Bitset::Full;
        }
        match self.rng.below(8) {
            0 => Bitset::fraction(0.05 + self.rng.unit() * 0.9),
            1 => {
                let a = self.rng.below(1_000_000) as u32;
                let b = self.rng.below(1_000_000) as u32;
                let c = self.rng.below(1_000_000) as u32;
                Bitset::from_ranges([a.min(b)..a.max(b), c..c.saturating_add(50_000)])
            }
            2 => {
                let m = 2 + self.rng.below(3) as u32;
                Bitset::from_fn(|i| i % m == 0)
            }
            3 => {
                let units = self.rng.subset(&self.model.units, 12);
                Bitset::for_units(&self.account, &units)
            }
            4 => Bitset::from_fn(|_| true),
            5 if self.opts.edge_cases => {
                let len = if self.rng.chance(0.3) { 0 } else { self.rng.below(4000) as u32 };
                Bitset::from_fn_len(len, |i| i % 2 == 0)
            }
            _ => {
                // Random runs of set and clear bits: positions are hashes anyway, so runs
                // allocate as randomly as single bits while keeping the gzip small.
                let mut runs = self.rng.fork();
                let mut left = 0u64;
                let mut on = false;
                Bitset::from_fn(move |_| {
                    if left == 0 {
                        left = 1 + runs.below(20_000);
                        on = !on;
                    }
                    left -= 1;
                    on
                })
            }
        }
    }

    fn schema_field(&mut self, depth: u32) -> FlagSchema {
        match self.rng.below(if depth < 2 { 6 } else { 4 }) {
            0 => s_bool(),
            1 => s_int(),
            2 => s_double(),
            3 => s_string(),
            4 => {
                let n = 1 + self.rng.index(3);
                let fields: Vec<(String, FlagSchema)> = self
                    .rng
                    .subset(FIELD_NAMES, n)
                    .into_iter()
                    .map(|name| (name.to_string(), self.schema_field(depth + 1)))
                    .collect();
                FlagSchema { schema_type: Some(SchemaType::StructSchema(struct_schema(fields))) }
            }
            _ => s_list(self.schema_field(depth + 1)),
        }
    }

    fn schema(&mut self) -> Option<StructFlagSchema> {
        let r = self.rng.below(100);
        if r < 8 {
            return None;
        }
        if r < 12 && self.opts.edge_cases {
            return Some(StructFlagSchema::default());
        }
        let n = 1 + self.rng.index(4);
        let names = self.rng.subset(FIELD_NAMES, n);
        Some(struct_schema(names.into_iter().map(|name| (name.to_string(), self.schema_field(0))).collect::<Vec<_>>()))
    }

    fn value_for(&mut self, schema: &FlagSchema) -> Value {
        match &schema.schema_type {
            Some(SchemaType::BoolSchema(_)) => v_bool(self.rng.chance(0.5)),
            Some(SchemaType::IntSchema(_)) => v_num(self.rng.range(-100, 1000) as f64),
            Some(SchemaType::DoubleSchema(_)) => v_num(self.rng.unit() * 10.0 - 2.0),
            Some(SchemaType::StringSchema(_)) => v_str(self.rng.pick(WORDS)),
            Some(SchemaType::StructSchema(s)) => v_obj(self.struct_for(s).fields),
            Some(SchemaType::ListSchema(l)) => {
                let n = self.rng.index(4);
                let elem = l.element_schema.as_deref().cloned().unwrap_or_default();
                v_list((0..n).map(|_| self.value_for(&elem)).collect::<Vec<_>>())
            }
            None => v_null(),
        }
    }

    fn struct_for(&mut self, schema: &StructFlagSchema) -> Struct {
        let mut out = Struct::default();
        for (name, field) in &schema.schema {
            let v = match self.rng.below(100) {
                0..=84 => self.value_for(field),
                85..=94 => continue, // left out: the resolver fills in null
                _ => v_str("type-mismatch"),
            };
            out.fields.insert(name.clone(), v);
        }
        if self.rng.chance(0.1) {
            out.fields.insert("unlisted".into(), v_num(7));
        }
        out
    }

    fn flag(&mut self, id: &str) -> FlagBuilder {
        let schema = self.schema();
        let mut f = FlagBuilder::new(id);
        if let Some(s) = &schema {
            f = f.schema(s.clone());
        }
        let variant_ids = self.rng.subset(VARIANT_IDS, 4);
        let variant_ids = if variant_ids.is_empty() { vec!["on"] } else { variant_ids };
        for v in &variant_ids {
            if self.opts.edge_cases && self.rng.chance(0.03) {
                f = f.variant_without_value(v);
                continue;
            }
            let value = match &schema {
                Some(s) => self.struct_for(s),
                None => obj([("value", v_str(self.rng.pick(WORDS)))]),
            };
            f = f.variant(v, value);
        }
        let r = self.rng.below(100);
        f = f.state(if r < 10 {
            FlagState::Archived
        } else if r < 12 && self.opts.edge_cases {
            FlagState::Unspecified
        } else {
            FlagState::Active
        });
        let clients = self.rng.subset(&self.clients, self.clients.len());
        f = f.clients(clients);
        if self.opts.edge_cases && self.rng.chance(0.05) {
            f = f.client("ghost");
        }
        let rules = self.rng.index(self.opts.max_rules + 1);
        for r in 0..rules {
            f = f.rule(self.rule(r, &variant_ids));
        }
        f
    }

    fn assignment_kind(&mut self, variants: &[&str]) -> AssignmentKind {
        match self.rng.below(100) {
            0..=69 => AssignmentKind::Variant(self.rng.pick(variants).to_string()),
            70..=81 => AssignmentKind::Fallthrough,
            82..=93 => AssignmentKind::ClientDefault,
            94..=96 if self.opts.edge_cases => AssignmentKind::Unset,
            _ if self.opts.request_errors => AssignmentKind::Variant("ghost-variant".into()),
            _ => AssignmentKind::Variant(self.rng.pick(variants).to_string()),
        }
    }

    fn rule(&mut self, index: usize, variants: &[&str]) -> RuleBuilder {
        let segment = if self.rng.chance(0.95) { self.rng.pick(&self.segments) } else { "ghost".to_string() };
        let mut rule = RuleBuilder::new(&format!("r{index}"), &segment).enabled(self.rng.chance(0.92));
        let mut pick = self.rng.below(SELECTORS.iter().map(|s| s.1).sum());
        let mut selector = "";
        for (s, w) in SELECTORS {
            if pick < *w {
                selector = s;
                break;
            }
            pick -= w;
        }
        if !selector.is_empty() {
            rule = rule.selector(selector);
            if selector != "targeting_key" {
                self.model.selectors.push(selector.to_string());
            }
        }
        if self.rng.chance(0.2) {
            let mut envs = self.rng.subset(RULE_ENVS, 2);
            if envs.is_empty() {
                envs.push("environments/prod");
            }
            rule = rule.environments(envs);
        }
        if self.opts.materializations && self.rng.chance(0.25) {
            let m = match self.rng.below(4) {
                0 => Materialization::sticky("mat-a"),
                1 => Materialization::write_only("mat-b"),
                2 => Materialization::sticky("mat-a").mode(true, false),
                _ => Materialization::sticky("mat-b").mode(false, true),
            };
            rule = rule.materialization(m);
        }
        if self.rng.chance(0.04) {
            return rule.without_assignment_spec();
        }
        if self.rng.chance(0.3) {
            let bc = if self.opts.edge_cases && self.rng.chance(0.05) { 0 } else { self.rng.pick(&[1, 2, 100, 1000]) };
            let kind = self.assignment_kind(variants);
            return rule.bucket_count(bc).assignment(format!("a{index}"), kind, [(0, bc)]);
        }
        if self.opts.edge_cases && self.rng.chance(0.04) {
            // A negative count becomes a huge unsigned modulus; buckets then wrap as i32.
            let a = self.assignment_kind(variants);
            let b = self.assignment_kind(variants);
            return rule.bucket_count(-7).assignment(format!("a{index}n"), a, [(i32::MIN, 0)]).assignment(
                format!("a{index}p"),
                b,
                [(0, i32::MAX)],
            );
        }
        let bc: i32 = if self.opts.request_errors && self.rng.chance(0.03) {
            0
        } else {
            self.rng.pick(&[2, 3, 10, 100, 1000, 10_000, 1_000_000])
        };
        let mut cuts: Vec<i32> =
            (0..self.rng.index(4)).map(|_| self.rng.range(1, i64::from(bc.max(2))) as i32).collect();
        cuts.push(0);
        cuts.push(bc);
        cuts.sort_unstable();
        cuts.dedup();
        let n_assign = 1 + self.rng.index(3);
        let mut ranges: Vec<Vec<(i32, i32)>> = vec![Vec::new(); n_assign];
        for w in cuts.windows(2) {
            if self.opts.edge_cases && self.rng.chance(0.1) {
                continue; // a gap: units hashing here skip the rule
            }
            let a = self.rng.index(n_assign);
            if let Some(r) = ranges.get_mut(a) {
                r.push((w[0], w[1]));
            }
        }
        if self.opts.edge_cases && self.rng.chance(0.1) && bc > 1 {
            // Overlap: the earlier assignment wins.
            let last = n_assign - 1;
            if let Some(r) = ranges.get_mut(last) {
                r.push((0, bc / 2));
            }
        }
        rule = rule.bucket_count(bc);
        for (a, rs) in ranges.into_iter().enumerate() {
            let id =
                if self.opts.edge_cases && self.rng.chance(0.05) { String::new() } else { format!("a{index}-{a}") };
            let kind = self.assignment_kind(variants);
            rule = rule.assignment(id, kind, rs);
        }
        rule
    }
}
