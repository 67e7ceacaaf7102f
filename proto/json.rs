//! JSON ↔ `google.protobuf.Struct`, the one conversion between what JS hands over (an
//! evaluation context serialised with `JSON.stringify`) and what the resolver reads.
//!
//! JSON numbers become doubles (protobuf's `Value` has no integers); anything `JSON.stringify`
//! can produce converts, so the JS side decides how Dates, bigints and cycles are treated.
//! One serde visitor builds `Value`s, from JSON text (the evaluation path: no intermediate
//! `serde_json::Value` tree) or from an already parsed `serde_json::Value`.

use std::collections::BTreeMap;
use std::fmt;

use confidence_resolver::proto::google::{value::Kind, Struct, Value};
use prost_types::ListValue;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

/// Parses a JSON text straight into a `Struct`; anything but an object is an empty struct.
pub fn struct_from_json(text: &str) -> Result<Struct, serde_json::Error> {
    let Converted(value) = serde_json::from_str(text)?;
    Ok(into_struct(value))
}

pub fn to_value(j: &Json) -> Value {
    // Deserializing from a parsed `serde_json::Value` cannot fail.
    Converted::deserialize(j).map(|c| c.0).unwrap_or_default()
}

/// An object's fields; anything but an object is an empty struct.
pub fn to_struct(j: &Json) -> Struct {
    into_struct(to_value(j))
}

fn into_struct(value: Value) -> Struct {
    match value.kind {
        Some(Kind::StructValue(s)) => s,
        _ => Struct::default(),
    }
}

/// A protobuf `Value` built by serde from any JSON source.
struct Converted(Value);

impl<'de> Deserialize<'de> for Converted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

fn kind(k: Kind) -> Converted {
    Converted(Value { kind: Some(k) })
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Converted;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Converted, E> {
        Ok(kind(Kind::NullValue(0)))
    }
    fn visit_none<E>(self) -> Result<Converted, E> {
        Ok(kind(Kind::NullValue(0)))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Converted, E> {
        Ok(kind(Kind::BoolValue(b)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Converted, E> {
        Ok(kind(Kind::NumberValue(n as f64)))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Converted, E> {
        Ok(kind(Kind::NumberValue(n as f64)))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Converted, E> {
        Ok(kind(Kind::NumberValue(n)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Converted, E> {
        Ok(kind(Kind::StringValue(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Converted, E> {
        Ok(kind(Kind::StringValue(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Converted, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Converted(v)) = seq.next_element()? {
            values.push(v);
        }
        Ok(kind(Kind::ListValue(ListValue { values })))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Converted, A::Error> {
        // As in `serde_json::Value`: a repeated key keeps its last value.
        let mut fields = BTreeMap::new();
        while let Some((k, Converted(v))) = map.next_entry::<String, Converted>()? {
            fields.insert(k, v);
        }
        Ok(kind(Kind::StructValue(Struct { fields })))
    }
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

    #[test]
    fn text_and_parsed_json_convert_alike() {
        let text = r#"{"s":"x","n":-42,"u":18446744073709551615,"f":1.5,"b":false,"z":null,"l":[1,"a",[]],"o":{"d":{}},"s":"last"}"#;
        let parsed: Json = serde_json::from_str(text).unwrap();
        let direct = struct_from_json(text).unwrap();
        assert_eq!(direct, to_struct(&parsed));
        assert_eq!(from_struct(&direct)["s"], serde_json::json!("last"), "a repeated key keeps its last value");
        assert_eq!(struct_from_json("[1]").unwrap(), Struct::default());
        assert!(struct_from_json("{").is_err());
    }
}
