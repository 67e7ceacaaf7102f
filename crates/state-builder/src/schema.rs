//! Flag value schemas (`FlagSchema`).
//!
//! The resolver uses a flag's schema to add `null` for fields a variant leaves out, so tests
//! need precise control over it: these helpers build each schema kind in one call.

use confidence_resolver::proto::confidence::flags::types::v1::{
    flag_schema::{
        BoolFlagSchema, DoubleFlagSchema, IntFlagSchema, ListFlagSchema, SchemaType, StringFlagSchema, StructFlagSchema,
    },
    FlagSchema,
};
use confidence_resolver::proto::google::{value::Kind, Struct, Value};

fn schema(t: SchemaType) -> FlagSchema {
    FlagSchema { schema_type: Some(t) }
}

/// A boolean field.
pub fn s_bool() -> FlagSchema {
    schema(SchemaType::BoolSchema(BoolFlagSchema {}))
}

/// An integer field (values are still doubles on the wire).
pub fn s_int() -> FlagSchema {
    schema(SchemaType::IntSchema(IntFlagSchema {}))
}

/// A floating-point field.
pub fn s_double() -> FlagSchema {
    schema(SchemaType::DoubleSchema(DoubleFlagSchema {}))
}

/// A string field.
pub fn s_string() -> FlagSchema {
    schema(SchemaType::StringSchema(StringFlagSchema {}))
}

/// A list whose elements follow `element`.
pub fn s_list(element: FlagSchema) -> FlagSchema {
    schema(SchemaType::ListSchema(Box::new(ListFlagSchema { element_schema: Some(Box::new(element)) })))
}

/// A nested object field.
pub fn s_struct<K: Into<String>>(fields: impl IntoIterator<Item = (K, FlagSchema)>) -> FlagSchema {
    schema(SchemaType::StructSchema(struct_schema(fields)))
}

/// A top-level flag schema (what `Flag.schema` holds).
pub fn struct_schema<K: Into<String>>(fields: impl IntoIterator<Item = (K, FlagSchema)>) -> StructFlagSchema {
    StructFlagSchema { schema: fields.into_iter().map(|(k, v)| (k.into(), v)).collect() }
}

/// Derives a schema from an example value: integral numbers become `int`, others `double`;
/// lists take the schema of their first element (empty lists default to string elements);
/// `null` fields are left out because no schema kind describes them.
pub fn infer_schema(value: &Struct) -> StructFlagSchema {
    StructFlagSchema {
        schema: value.fields.iter().filter_map(|(k, v)| infer_value(v).map(|s| (k.clone(), s))).collect(),
    }
}

fn infer_value(value: &Value) -> Option<FlagSchema> {
    match value.kind.as_ref()? {
        Kind::NullValue(_) => None,
        Kind::BoolValue(_) => Some(s_bool()),
        Kind::NumberValue(n) if n.fract() == 0.0 => Some(s_int()),
        Kind::NumberValue(_) => Some(s_double()),
        Kind::StringValue(_) => Some(s_string()),
        Kind::StructValue(s) => Some(schema(SchemaType::StructSchema(infer_schema(s)))),
        Kind::ListValue(l) => Some(s_list(l.values.first().and_then(infer_value).unwrap_or_else(s_string))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::*;

    #[test]
    fn infers_every_kind() {
        let v = obj([
            ("b", v_bool(true)),
            ("i", v_num(3)),
            ("d", v_num(0.5)),
            ("s", v_str("x")),
            ("o", v_obj([("c", v_str("red"))])),
            ("l", v_list([v_num(1.5)])),
            ("n", v_null()),
        ]);
        let expected = struct_schema([
            ("b", s_bool()),
            ("i", s_int()),
            ("d", s_double()),
            ("s", s_string()),
            ("o", s_struct([("c", s_string())])),
            ("l", s_list(s_double())),
        ]);
        assert_eq!(infer_schema(&v), expected);
    }
}
