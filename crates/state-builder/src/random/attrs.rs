//! Attribute criteria for random segments, and the context values ("hints") that hit or
//! narrowly miss them. Each attribute path has one fixed kind so that contexts can be kept free
//! of request-level errors unless those are asked for.

use confidence_resolver::proto::google::{Timestamp, Value};

use crate::rng::Rng;
use crate::targeting::{
    all, any, eq, one_of, range, t_bool, t_list, t_none, t_num, t_str, t_ts, t_version, AttrRule, Bound, Op, TValue,
};
use crate::time::{format_date, format_rfc3339, utc};
use crate::value::{v_bool, v_list, v_null, v_num, v_obj, v_str};

/// What kind of data the context carries at an attribute path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Str,
    Num,
    Bool,
    Timestamp,
    Version,
    StrList,
    NumList,
    /// A targeting-key-like path; its value comes from the unit pool.
    Key,
}

impl Kind {
    /// Whether a non-numeric string at this path could fail the whole request.
    pub fn numeric(self) -> bool {
        matches!(self, Kind::Num | Kind::NumList)
    }
}

/// The attribute paths random segments target.
pub const ATTRIBUTES: &[(&str, Kind)] = &[
    ("country", Kind::Str),
    ("plan", Kind::Str),
    ("user.email", Kind::Str),
    ("device.os.name", Kind::Str),
    ("locale", Kind::Str),
    ("user.age", Kind::Num),
    ("build", Kind::Num),
    ("score", Kind::Num),
    ("user.premium", Kind::Bool),
    ("beta", Kind::Bool),
    ("user.created_at", Kind::Timestamp),
    ("last_seen", Kind::Timestamp),
    ("app.version", Kind::Version),
    ("os_version", Kind::Version),
    ("tags", Kind::StrList),
    ("lucky_numbers", Kind::NumList),
    ("targeting_key", Kind::Key),
    ("visitor_id", Kind::Key),
];

fn str_seeds(path: &str) -> &'static [&'static str] {
    match path {
        "country" => &["DK", "NO", "SE", "US", "se", "Ä", ""],
        "plan" => &["enterprise", "free", "pro", "pro-trial", "null"],
        "user.email" => &["alice@example.com", "bob@test.org", "carol@example.com"],
        "device.os.name" => &["Android", "Android TV", "iOS", "iPadOS", "a,b"],
        "locale" => &["en-GB", "en-US", "sv-SE", "sv\tSE"],
        _ => &["alpha", "beta", "betamax", "gamma", "x-beta", "BETA", ""],
    }
}

/// Sorted, so that picking two indices in order gives a non-empty range.
const NUMS: &[f64] = &[
    -1.25,
    -1.0,
    0.0,
    1e-7,
    0.30000000000000004,
    0.5,
    1.0,
    3.25,
    17.0,
    18.0,
    21.0,
    65.0,
    99.0,
    100.0,
    250.0,
    1000.0,
    1e21,
];

/// Strings every `f64` parser accepts (they may reach numeric rules).
pub const NUMERIC_STRINGS: &[&str] =
    &["21", "21.0", "+21", "2.1e1", "-0", ".5", "5.", "1e3", "inf", "-infinity", "NaN", "18", "17.999"];

/// Strings that fail number parsing (a whole-request error when they reach a numeric rule).
pub const NON_NUMERIC_STRINGS: &[&str] = &["21 ", "abc", "", "0x10", "1_000", "1,5"];

const VERSIONS: &[&str] = &[
    "0.9.9",
    "1.0",
    "1.0.1",
    "1.0.1000",
    "1.2",
    "1.2.0",
    "1.2.3",
    "1.2.3.4",
    "1.10.0",
    "2.0.0",
    "2.0.0-rc1",
    "3",
    "10.0.0",
    "v1.2",
    "1.2.3+build",
    "01.02",
    "12345678901.0",
    "garbage",
    "",
];

/// Timestamp shapes the resolver must reject (they become "null").
const BAD_TIMESTAMPS: &[&str] = &[
    "15/01/2024",
    "2024-01-15 10:30",
    "2024-01-15T10:30:00-0200",
    "2024-01-15T10:30:00+02",
    "2024-01-15T10:30:00z",
    "2024-01-15t10:30:00Z",
    "2024-02-30",
    "2024-01-15T10:30:00,5Z",
    " 2024-01-15",
];

/// Timestamp shapes the resolver accepts in the non-RFC branch.
const ODD_TIMESTAMPS: &[&str] = &[
    "2024-1-5",
    "+2024-01-15",
    "24-01-15",
    "2024-01-15T1:3:0",
    "2024-12-31T23:59:60Z",
    "2024-01-15T10:30:00.1234567891",
];

fn base_instants() -> Vec<Timestamp> {
    vec![
        utc(1970, 1, 1, 0, 0, 0),
        utc(1999, 12, 31, 23, 59, 59),
        utc(2020, 2, 29, 12, 0, 0),
        utc(2024, 1, 1, 0, 0, 0),
        utc(2024, 1, 15, 10, 30, 0),
        utc(2025, 6, 30, 23, 59, 59),
        utc(2033, 5, 18, 3, 33, 20),
    ]
}

/// Generates one rule for an attribute of `kind` at `path`, appending context values that
/// exercise it to `hints`.
pub struct RuleGen<'a> {
    pub rng: &'a mut Rng,
    pub edge_cases: bool,
    pub request_errors: bool,
    pub units: &'a [String],
}

impl RuleGen<'_> {
    pub fn rule(&mut self, path: &str, kind: Kind, hints: &mut Vec<Value>) -> AttrRule {
        if self.edge_cases && self.rng.chance(0.06) {
            return self.edge_rule(hints);
        }
        match kind {
            Kind::Str => self.str_rule(str_seeds(path), hints),
            Kind::Key => {
                let seeds: Vec<&str> = self.units.iter().map(String::as_str).collect();
                let mut ignored = Vec::new();
                self.str_rule(&seeds, &mut ignored)
            }
            Kind::Num => self.num_rule(hints),
            Kind::Bool => self.bool_rule(hints),
            Kind::Timestamp => self.ts_rule(hints),
            Kind::Version => self.version_rule(hints),
            Kind::StrList => self.str_list_rule(hints),
            Kind::NumList => self.num_list_rule(hints),
        }
    }

    fn edge_rule(&mut self, hints: &mut Vec<Value>) -> AttrRule {
        hints.push(v_null());
        hints.push(v_str("null"));
        match self.rng.below(11) {
            0 => AttrRule::Unset,
            1 => Op::EqWithoutValue.into(),
            2 => AttrRule::Any(None),
            3 => AttrRule::All(None),
            4 => AttrRule::Any(Some(Op::Unset)),
            5 => AttrRule::All(Some(Op::Unset)),
            6 => eq(t_none()).into(),
            7 => range(Bound::Unbounded, Bound::Unbounded).into(),
            8 => one_of([]).into(),
            9 => eq(t_str("null")).into(),
            _ => all(eq(t_str("null"))),
        }
    }

    /// Two values from a sorted list, in order, as range bounds of random inclusivity.
    fn bounds(&mut self, sorted: &[TValue]) -> Op {
        let a = self.rng.index(sorted.len());
        let b = self.rng.index(sorted.len());
        let (lo, hi) = if self.rng.chance(0.9) { (a.min(b), a.max(b)) } else { (a.max(b), a.min(b)) };
        let mut bound = |i: usize| -> Bound {
            let v = sorted.get(i).cloned().unwrap_or_else(t_none);
            match self.rng.below(5) {
                0 => Bound::Unbounded,
                1 | 2 => Bound::Inclusive(v),
                _ => Bound::Exclusive(v),
            }
        };
        let start = bound(lo);
        let end = bound(hi);
        range(start, end)
    }

    /// An inner op for `any`/`all`, or a top-level op, over string seeds.
    fn str_op(&mut self, seeds: &[&str], hints: &mut Vec<Value>) -> Op {
        let seed = self.rng.pick(seeds).to_string();
        hints.push(v_str(seed.clone()));
        let cut = self.rng.index(seed.len() + 1);
        let cut = (0..=cut).rev().find(|&c| seed.is_char_boundary(c)).unwrap_or(0);
        match self.rng.below(7) {
            0 | 1 => eq(t_str(seed.clone())),
            2 => {
                let set: Vec<TValue> = self
                    .rng
                    .subset(seeds, 3)
                    .into_iter()
                    .map(|s| {
                        hints.push(v_str(s));
                        t_str(s)
                    })
                    .collect();
                one_of(set)
            }
            3 => {
                let mut sorted: Vec<&str> = seeds.to_vec();
                sorted.sort_unstable();
                let values: Vec<TValue> = sorted.into_iter().map(t_str).collect();
                self.bounds(&values)
            }
            4 => {
                hints.push(v_str(format!("{}zz", &seed[..cut])));
                hints.push(v_str(format!("z{seed}")));
                Op::StartsWith(seed[..cut].to_string())
            }
            5 => {
                hints.push(v_str(format!("zz{}", &seed[cut..])));
                Op::EndsWith(seed[cut..].to_string())
            }
            _ => {
                let end = (cut..=seed.len()).find(|&c| c > cut && seed.is_char_boundary(c)).unwrap_or(seed.len());
                hints.push(v_str(format!("[{seed}]")));
                Op::Contains(seed[cut..end].to_string())
            }
        }
    }

    fn str_rule(&mut self, seeds: &[&str], hints: &mut Vec<Value>) -> AttrRule {
        for s in seeds {
            if self.rng.chance(0.3) {
                hints.push(v_str(s.to_uppercase()));
            }
        }
        match self.rng.below(20) {
            0..=10 => self.str_op(seeds, hints).into(),
            11..=12 => any(self.str_op(seeds, hints)),
            13..=14 => all(self.str_op(seeds, hints)),
            15 => {
                hints.extend([v_str("true"), v_str("TRUE"), v_str("True")]);
                eq(t_bool(true)).into()
            }
            16 => {
                let mut sorted = VERSIONS.to_vec();
                sorted.truncate(12);
                let values: Vec<TValue> = sorted.into_iter().map(t_version).collect();
                self.bounds(&values).into()
            }
            17 => {
                let values: Vec<TValue> = base_instants().into_iter().map(t_ts).collect();
                hints.push(v_str("2024-01-15"));
                self.bounds(&values).into()
            }
            18 if self.request_errors => {
                hints.push(v_str("21"));
                self.bounds(&NUMS.iter().map(|&n| t_num(n)).collect::<Vec<_>>()).into()
            }
            _ => {
                // A set that mixes kinds: only elements of the first element's kind can match.
                let seed = self.rng.pick(seeds);
                hints.push(v_str(seed));
                one_of([t_str(seed), t_num(1), t_bool(true), t_version(seed)]).into()
            }
        }
    }

    fn num_hints(&mut self, x: f64, hints: &mut Vec<Value>) {
        hints.push(v_num(x));
        hints.push(v_num(x + 1.0));
        hints.push(v_num(x - 0.5));
        hints.push(v_str(format!("{x}")));
        if self.rng.chance(0.3) {
            hints.push(v_str(self.rng.pick(NUMERIC_STRINGS)));
        }
    }

    fn num_op(&mut self, hints: &mut Vec<Value>) -> Op {
        let x = self.rng.pick(NUMS);
        self.num_hints(x, hints);
        match self.rng.below(5) {
            0 => eq(t_num(x)),
            1 => {
                let set: Vec<TValue> = self
                    .rng
                    .subset(NUMS, 3)
                    .into_iter()
                    .map(|n| {
                        hints.push(v_num(n));
                        t_num(n)
                    })
                    .collect();
                one_of(set)
            }
            _ => {
                let values: Vec<TValue> = NUMS.iter().map(|&n| t_num(n)).collect();
                let op = self.bounds(&values);
                if let Op::Range(s, e) = &op {
                    for b in [s, e] {
                        if let Bound::Inclusive(v) | Bound::Exclusive(v) = b {
                            if let Some(n) = num_of(v) {
                                hints.push(v_num(n));
                                hints.push(v_num(n - 1e-9));
                            }
                        }
                    }
                }
                op
            }
        }
    }

    fn num_rule(&mut self, hints: &mut Vec<Value>) -> AttrRule {
        hints.extend([v_num(f64::NAN), v_num(f64::INFINITY), v_num(-0.0), v_num(0.1 + 0.2)]);
        match self.rng.below(12) {
            0..=5 => self.num_op(hints).into(),
            6 => any(self.num_op(hints)),
            7 => all(self.num_op(hints)),
            8 | 9 => {
                // Compared as a string: the context number is formatted (shortest, no exponent).
                let x = self.rng.pick(NUMS);
                hints.push(v_num(x));
                eq(t_str(format!("{x}"))).into()
            }
            10 => {
                hints.push(v_str("21"));
                hints.push(v_num(21));
                Op::StartsWith("2".into()).into()
            }
            _ => {
                hints.push(v_str("true"));
                eq(t_bool(true)).into()
            }
        }
    }

    fn bool_rule(&mut self, hints: &mut Vec<Value>) -> AttrRule {
        hints.extend(["true", "TRUE", "True", "false", "FALSE", "1", " true"].map(v_str));
        hints.extend([v_bool(true), v_bool(false), v_num(1), v_num(0)]);
        let b = self.rng.chance(0.5);
        match self.rng.below(8) {
            0..=2 => eq(t_bool(b)).into(),
            3 => one_of([t_bool(b)]).into(),
            4 => eq(t_str(if b { "true" } else { "false" })).into(),
            5 => range(Bound::Inclusive(t_bool(false)), Bound::Unbounded).into(),
            6 => any(eq(t_bool(b))),
            _ => all(one_of([t_bool(true), t_bool(false)])),
        }
    }

    fn ts_hints(&mut self, ts: &Timestamp, hints: &mut Vec<Value>) {
        let shift = |d: i64| Timestamp { seconds: ts.seconds + d, nanos: ts.nanos };
        let rfc = format_rfc3339(ts);
        let naive = rfc.trim_end_matches('Z').to_string();
        hints.push(v_str(rfc.clone()));
        hints.push(v_str(format_rfc3339(&shift(-1))));
        hints.push(v_str(format_rfc3339(&shift(1))));
        hints.push(v_str(format_date(ts)));
        hints.push(v_str(naive.clone()));
        hints.push(v_str(rfc.replacen('T', " ", 1)));
        hints.push(v_str(format!("{}.5Z", &rfc[..19.min(rfc.len())])));
        // The same instant written with a +02:00 offset.
        let local = format_rfc3339(&shift(7200));
        hints.push(v_str(format!("{}+02:00", local.trim_end_matches('Z'))));
        hints.push(v_num(ts.seconds as f64));
        hints.push(v_num(ts.seconds as f64 - 1.0));
        hints.push(v_num(ts.seconds as f64 * 1000.0 + 123.0));
        hints.push(v_num(ts.seconds as f64 + 0.9));
        if self.rng.chance(0.5) {
            hints.push(v_str(self.rng.pick(BAD_TIMESTAMPS)));
            hints.push(v_str(self.rng.pick(ODD_TIMESTAMPS)));
            hints.push(v_num(1e20));
        }
    }

    fn ts_op(&mut self, hints: &mut Vec<Value>) -> Op {
        let mut instants = base_instants();
        if self.rng.chance(0.3) {
            let extra = Timestamp {
                seconds: self.rng.range(0, 2_000_000_000),
                nanos: if self.rng.chance(0.5) { 500_000_000 } else { 0 },
            };
            instants.push(extra);
            instants.sort_by_key(|t| (t.seconds, t.nanos));
        }
        let ts = self.rng.pick(&instants);
        self.ts_hints(&ts, hints);
        match self.rng.below(6) {
            0 => eq(t_ts(ts)),
            1 => one_of(self.rng.subset(&instants, 3).into_iter().map(t_ts)),
            _ => {
                let values: Vec<TValue> = instants.iter().cloned().map(t_ts).collect();
                let op = self.bounds(&values);
                if let Op::Range(s, e) = &op {
                    for b in [s, e] {
                        if let Bound::Inclusive(v) | Bound::Exclusive(v) = b {
                            if let Some(t) = ts_of(v) {
                                self.ts_hints(&t, hints);
                            }
                        }
                    }
                }
                op
            }
        }
    }

    fn ts_rule(&mut self, hints: &mut Vec<Value>) -> AttrRule {
        match self.rng.below(10) {
            0..=6 => self.ts_op(hints).into(),
            7 => any(self.ts_op(hints)),
            8 => all(self.ts_op(hints)),
            _ => {
                // Lexicographic comparison of the raw strings instead of instants.
                hints.push(v_str("2024-01-15"));
                range(Bound::Inclusive(t_str("2024")), Bound::Exclusive(t_str("2025"))).into()
            }
        }
    }

    fn version_op(&mut self, hints: &mut Vec<Value>) -> Op {
        for _ in 0..4 {
            hints.push(v_str(self.rng.pick(VERSIONS)));
        }
        hints.push(v_num(1.5));
        match self.rng.below(6) {
            0 => eq(t_version(self.rng.pick(VERSIONS))),
            1 => one_of(self.rng.subset(VERSIONS, 3).into_iter().map(t_version)),
            _ => {
                // Roughly ascending when parsed; junk entries stay possible.
                let values: Vec<TValue> = VERSIONS.iter().map(|v| t_version(*v)).collect();
                self.bounds(&values)
            }
        }
    }

    fn version_rule(&mut self, hints: &mut Vec<Value>) -> AttrRule {
        match self.rng.below(10) {
            0..=6 => self.version_op(hints).into(),
            7 => any(self.version_op(hints)),
            8 => all(self.version_op(hints)),
            _ => {
                hints.push(v_str("1.10.0"));
                range(Bound::Inclusive(t_str("1.2")), Bound::Unbounded).into()
            }
        }
    }

    fn str_list_rule(&mut self, hints: &mut Vec<Value>) -> AttrRule {
        let seeds = str_seeds("tags");
        for _ in 0..3 {
            let items: Vec<Value> = self.rng.subset(seeds, 3).into_iter().map(v_str).collect();
            hints.push(v_list(items));
        }
        hints.extend([
            v_list([]),
            v_list([v_str("a"), v_num(7)]),
            v_list([v_str("ab"), v_null()]),
            v_list([v_list([v_str("beta")])]),
            v_list([v_str("beta"), v_bool(true)]),
            v_list([v_obj([("x", v_str("beta"))])]),
            v_str("x-beta"),
            v_num(12),
        ]);
        match self.rng.below(10) {
            0..=2 => any(self.str_op(seeds, hints)),
            3..=5 => all(self.str_op(seeds, hints)),
            6 => eq(t_str(self.rng.pick(seeds))).into(),
            7 => Op::Contains("beta".into()).into(),
            8 => eq(t_list([t_str("beta")])).into(),
            _ => self.str_op(seeds, hints).into(),
        }
    }

    fn num_list_rule(&mut self, hints: &mut Vec<Value>) -> AttrRule {
        for _ in 0..3 {
            let items: Vec<Value> = self.rng.subset(NUMS, 4).into_iter().map(v_num).collect();
            hints.push(v_list(items));
        }
        hints.extend([
            v_list([]),
            v_list([v_null()]),
            v_list([v_list([v_num(1)])]),
            v_list([v_str("5"), v_num(6)]),
            v_list([v_bool(true)]),
            v_num(7),
            v_str("7"),
        ]);
        match self.rng.below(8) {
            0..=2 => any(self.num_op(hints)),
            3..=5 => all(self.num_op(hints)),
            _ => self.num_op(hints).into(),
        }
    }
}

fn num_of(v: &TValue) -> Option<f64> {
    use confidence_resolver::proto::confidence::flags::types::v1::targeting::value::Value as K;
    match v.value {
        Some(K::NumberValue(n)) => Some(n),
        _ => None,
    }
}

fn ts_of(v: &TValue) -> Option<Timestamp> {
    use confidence_resolver::proto::confidence::flags::types::v1::targeting::value::Value as K;
    match &v.value {
        Some(K::TimestampValue(t)) => Some(*t),
        _ => None,
    }
}
