//! JSON ↔ `google.protobuf.Struct`, the one conversion between what JS hands over (an
//! evaluation context serialised with `JSON.stringify`) and what the resolver reads.
//!
//! JSON numbers become doubles (protobuf's `Value` has no integers); anything `JSON.stringify`
//! can produce converts, so the JS side decides how Dates, bigints and cycles are treated.

use std::collections::BTreeMap;

use confidence_resolver::proto::google::{value::Kind, Struct, Value};
use prost_types::ListValue;
use serde_json::Value as Json;

pub fn to_value(j: &Json) -> Value {
    let kind = match j {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(to_value).collect() }),
        Json::Object(_) => Kind::StructValue(to_struct(j)),
    };
    Value { kind: Some(kind) }
}

/// An object's fields; anything but an object is an empty struct.
pub fn to_struct(j: &Json) -> Struct {
    let mut fields = BTreeMap::new();
    if let Json::Object(o) = j {
        for (k, v) in o {
            fields.insert(k.clone(), to_value(v));
        }
    }
    Struct { fields }
}

/// Non-finite numbers have no JSON form and read back as `null`.
pub fn from_value(v: &Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map(Json::Number).unwrap_or(Json::Null),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

pub fn from_struct(s: &Struct) -> Json {
    Json::Object(s.fields.iter().map(|(k, v)| (k.clone(), from_value(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_json_type_with_numbers_as_doubles() {
        let j = serde_json::json!({"s": "x", "n": 42, "f": 1.5, "b": true, "z": null, "l": [1, "a"], "o": {"d": {}}});
        let back = from_struct(&to_struct(&j));
        assert_eq!(back["n"], serde_json::json!(42.0));
        assert_eq!(back["l"], serde_json::json!([1.0, "a"]));
        assert_eq!(back["o"], serde_json::json!({"d": {}}));
        assert_eq!(back["z"], Json::Null);
    }
}
