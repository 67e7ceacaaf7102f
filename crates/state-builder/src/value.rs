//! Small constructors for `google.protobuf.Struct` / `Value`.
//!
//! Variant values and evaluation contexts are `Struct`s; building them with raw prost types is
//! noisy, so these helpers read almost like JSON: `obj([("color", v_str("red"))])`.

use confidence_resolver::proto::google::{value::Kind, Struct, Value};
use prost_types::ListValue;

/// `null`.
pub fn v_null() -> Value {
    kind(Kind::NullValue(0))
}

/// A boolean.
pub fn v_bool(b: bool) -> Value {
    kind(Kind::BoolValue(b))
}

/// A number. Protobuf `Value` numbers are always doubles (integers included).
pub fn v_num(n: impl Into<f64>) -> Value {
    kind(Kind::NumberValue(n.into()))
}

/// A number from an `i64`; the conversion to `f64` may round beyond 2^53 (as JSON would).
pub fn v_int(n: i64) -> Value {
    kind(Kind::NumberValue(n as f64))
}

/// A string.
pub fn v_str(s: impl Into<String>) -> Value {
    kind(Kind::StringValue(s.into()))
}

/// A list.
pub fn v_list(items: impl IntoIterator<Item = Value>) -> Value {
    kind(Kind::ListValue(ListValue { values: items.into_iter().collect() }))
}

/// A nested object.
pub fn v_obj<K: Into<String>>(fields: impl IntoIterator<Item = (K, Value)>) -> Value {
    kind(Kind::StructValue(obj(fields)))
}

/// A `Value` with no kind set: legal on the wire and treated like `null` by the resolver.
pub fn v_unset() -> Value {
    Value { kind: None }
}

/// A top-level `Struct` (a variant value or an evaluation context).
pub fn obj<K: Into<String>>(fields: impl IntoIterator<Item = (K, Value)>) -> Struct {
    Struct { fields: fields.into_iter().map(|(k, v)| (k.into(), v)).collect() }
}

/// An empty `Struct` (`obj([])` cannot infer its key type).
pub fn empty_obj() -> Struct {
    Struct::default()
}

fn kind(k: Kind) -> Value {
    Value { kind: Some(k) }
}

/// Sets `value` at a dotted `path`, creating intermediate objects as needed.
///
/// Returns `false` (and changes nothing) when an intermediate field exists but is not an object:
/// contexts in tests are allowed to be contradictory, and the caller decides what that means.
pub fn set_path(target: &mut Struct, path: &str, value: Value) -> bool {
    let mut parts = path.split('.').peekable();
    let mut cur = target;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.fields.insert(part.to_string(), value);
            return true;
        }
        let entry = cur.fields.entry(part.to_string()).or_insert_with(|| kind(Kind::StructValue(Struct::default())));
        match &mut entry.kind {
            Some(Kind::StructValue(inner)) => cur = inner,
            _ => return false,
        }
    }
    false
}

/// Reads the value at a dotted `path` the way the resolver does (every non-final component must
/// be an object).
pub fn get_path<'a>(source: &'a Struct, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.').peekable();
    let mut cur = source;
    while let Some(part) = parts.next() {
        let v = cur.fields.get(part)?;
        if parts.peek().is_none() {
            return Some(v);
        }
        match &v.kind {
            Some(Kind::StructValue(inner)) => cur = inner,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_create_and_read_nested_objects() {
        let mut s = obj([("a", v_num(1))]);
        assert!(set_path(&mut s, "user.profile.id", v_str("u1")));
        assert!(set_path(&mut s, "user.country", v_str("SE")));
        assert_eq!(get_path(&s, "user.profile.id"), Some(&v_str("u1")));
        assert_eq!(get_path(&s, "user.country"), Some(&v_str("SE")));
        // `a` is a number, so it cannot hold children.
        assert!(!set_path(&mut s, "a.b", v_bool(true)));
        assert_eq!(get_path(&s, "a.b"), None);
    }
}
