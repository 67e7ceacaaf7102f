//! Decoding one uploaded log batch (a serialized `WriteFlagLogsRequest`) into JSON. Resource
//! names stay as on the wire (`flags/<flag>`, `flags/<flag>/variants/<id>`, ...); optional
//! (`?`) fields are left out when empty on the wire; aggregate lists are sorted by name.
//!
//! ```text
//! {
//!   flagAssigned: [{                  // exposures, in the order they were logged
//!     resolveId: string
//!     client?: string, clientCredential?: string
//!     sdk?: { id?: string, customId?: string, version: string }
//!     flags: [{
//!       flag: string
//!       variant?: string, segment?: string   // when a variant was assigned
//!       reason?: string               // otherwise: NO_SEGMENT_MATCH, FLAG_ARCHIVED, ...
//!       targetingKey: string, targetingKeySelector?: string
//!       assignmentId?: string, rule?: string
//!       applyTime?: string            // RFC 3339
//!       fallthroughAssignments: [{ rule, assignmentId, targetingKey, targetingKeySelector? }]
//!     }]
//!   }]
//!   flagResolveInfo: [{ flag, variants: [{ variant?, count }],
//!                       rules: [{ rule, count, assignments: [{ assignmentId, count }] }] }]
//!   clientResolveInfo: [{ client, clientCredential,
//!                         schemas: [{ fields: { [path]: "STRING_KIND" | ... },
//!                                     semanticTypes: { [path]: "country" | "date" | ... } }] }]
//!   telemetry?: { resolverVersion, memoryBytes, sdk?, resolveLatency?: { count, sum },
//!                 resolveRate: [{ reason, count }] }
//! }
//! ```

use std::collections::BTreeMap;

use confidence_resolver::proto::confidence::flags::admin::v1::{
    client_resolve_info::EvaluationContextSchemaInstance, context_field_semantic_type, evaluation_context_schema_field,
    ClientResolveInfo, FlagResolveInfo,
};
use confidence_resolver::proto::confidence::flags::resolver::v1::events::{
    flag_assigned::{applied_flag, default_assignment::DefaultAssignmentReason, AppliedFlag},
    FallthroughAssignment, FlagAssigned,
};
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    sdk, ResolveReason, Sdk, SdkId, TelemetryData, WriteFlagLogsRequest,
};
use prost::Message;
use serde::Serialize;
use state_builder::time::format_rfc3339;

// ---------------------------------------------------------------------------------------------
// Logs

/// One batch, decoded (the JSON shape is in the module documentation).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagLogs {
    pub flag_assigned: Vec<Exposure>,
    pub flag_resolve_info: Vec<FlagResolveSummary>,
    pub client_resolve_info: Vec<ClientResolveSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySummary>,
}

/// One `FlagAssigned` event: the exposures of one resolve (or one apply).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    pub resolve_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdk: Option<SdkInfo>,
    pub flags: Vec<ExposedFlag>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SdkInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    pub version: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposedFlag {
    pub flag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Why no variant was assigned (`DefaultAssignmentReason` name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub targeting_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targeting_key_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_time: Option<String>,
    pub fallthrough_assignments: Vec<Fallthrough>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fallthrough {
    pub rule: String,
    pub assignment_id: String,
    pub targeting_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targeting_key_selector: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagResolveSummary {
    pub flag: String,
    pub variants: Vec<VariantCount>,
    pub rules: Vec<RuleCount>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantCount {
    /// Absent for resolves that assigned no variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub count: i64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleCount {
    pub rule: String,
    pub count: i64,
    pub assignments: Vec<AssignmentCount>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentCount {
    pub assignment_id: String,
    pub count: i64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientResolveSummary {
    pub client: String,
    pub client_credential: String,
    pub schemas: Vec<ContextSchema>,
}

/// The shape of one evaluation context the client sent (flattened dot paths).
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ContextSchema {
    pub fields: BTreeMap<String, String>,
    pub semantic_types: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySummary {
    pub resolver_version: String,
    pub memory_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdk: Option<SdkInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_latency: Option<LatencySummary>,
    pub resolve_rate: Vec<ReasonCount>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub count: u32,
    /// Microseconds.
    pub sum: u32,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasonCount {
    /// `ResolveReason` name, e.g. `RESOLVE_REASON_MATCH`.
    pub reason: String,
    pub count: u32,
}

/// Decodes one serialized `WriteFlagLogsRequest`.
pub fn flag_logs(batch: &[u8]) -> std::result::Result<FlagLogs, prost::DecodeError> {
    let request = WriteFlagLogsRequest::decode(batch)?;
    let mut flag_resolve_info: Vec<_> = request.flag_resolve_info.into_iter().map(flag_summary).collect();
    flag_resolve_info.sort_by(|a, b| a.flag.cmp(&b.flag));
    let mut client_resolve_info: Vec<_> = request.client_resolve_info.into_iter().map(client_summary).collect();
    client_resolve_info.sort_by(|a, b| a.client_credential.cmp(&b.client_credential));
    Ok(FlagLogs {
        flag_assigned: request.flag_assigned.into_iter().map(exposure).collect(),
        flag_resolve_info,
        client_resolve_info,
        telemetry: request.telemetry_data.map(telemetry),
    })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn exposure(event: FlagAssigned) -> Exposure {
    let info = event.client_info.unwrap_or_default();
    Exposure {
        resolve_id: event.resolve_id,
        client: non_empty(info.client),
        client_credential: non_empty(info.client_credential),
        sdk: info.sdk.map(sdk_info),
        flags: event.flags.into_iter().map(exposed_flag).collect(),
    }
}

fn sdk_info(sdk: Sdk) -> SdkInfo {
    let (id, custom_id) = match sdk.sdk {
        Some(sdk::Sdk::Id(n)) => {
            (Some(SdkId::try_from(n).map_or_else(|_| n.to_string(), |id| id.as_str_name().into())), None)
        }
        Some(sdk::Sdk::CustomId(custom)) => (None, Some(custom)),
        None => (None, None),
    };
    SdkInfo { id, custom_id, version: sdk.version }
}

fn exposed_flag(f: AppliedFlag) -> ExposedFlag {
    let (variant, segment, reason) = match f.assignment {
        Some(applied_flag::Assignment::AssignmentInfo(a)) => (non_empty(a.variant), non_empty(a.segment), None),
        Some(applied_flag::Assignment::DefaultAssignment(d)) => {
            let name = DefaultAssignmentReason::try_from(d.reason)
                .map_or_else(|_| d.reason.to_string(), |r| r.as_str_name().to_string());
            (None, None, Some(name))
        }
        None => (None, None, None),
    };
    ExposedFlag {
        flag: f.flag,
        variant,
        segment,
        reason,
        targeting_key: f.targeting_key,
        targeting_key_selector: non_empty(f.targeting_key_selector),
        assignment_id: non_empty(f.assignment_id),
        rule: non_empty(f.rule),
        apply_time: f.apply_time.as_ref().map(format_rfc3339),
        fallthrough_assignments: f.fallthrough_assignments.into_iter().map(fallthrough).collect(),
    }
}

fn fallthrough(f: FallthroughAssignment) -> Fallthrough {
    Fallthrough {
        rule: f.rule,
        assignment_id: f.assignment_id,
        targeting_key: f.targeting_key,
        targeting_key_selector: non_empty(f.targeting_key_selector),
    }
}

fn flag_summary(info: FlagResolveInfo) -> FlagResolveSummary {
    let mut variants: Vec<_> = info
        .variant_resolve_info
        .into_iter()
        .map(|v| VariantCount { variant: non_empty(v.variant), count: v.count })
        .collect();
    variants.sort_by(|a, b| a.variant.cmp(&b.variant));
    let mut rules: Vec<_> = info
        .rule_resolve_info
        .into_iter()
        .map(|r| {
            let mut assignments: Vec<_> = r
                .assignment_resolve_info
                .into_iter()
                .map(|a| AssignmentCount { assignment_id: a.assignment_id, count: a.count })
                .collect();
            assignments.sort_by(|a, b| a.assignment_id.cmp(&b.assignment_id));
            RuleCount { rule: r.rule, count: r.count, assignments }
        })
        .collect();
    rules.sort_by(|a, b| a.rule.cmp(&b.rule));
    FlagResolveSummary { flag: info.flag, variants, rules }
}

fn client_summary(info: ClientResolveInfo) -> ClientResolveSummary {
    let mut schemas: Vec<_> = info.schema.into_iter().map(context_schema).collect();
    schemas.sort();
    ClientResolveSummary { client: info.client, client_credential: info.client_credential, schemas }
}

fn context_schema(s: EvaluationContextSchemaInstance) -> ContextSchema {
    use context_field_semantic_type::Type;
    let fields = s
        .schema
        .into_iter()
        .map(|(path, kind)| {
            let name = evaluation_context_schema_field::Kind::try_from(kind)
                .map_or_else(|_| kind.to_string(), |k| k.as_str_name().to_string());
            (path, name)
        })
        .collect();
    let semantic_types = s
        .semantic_types
        .into_iter()
        .map(|(path, t)| {
            let name = match t.r#type {
                Some(Type::Country(_)) => "country",
                Some(Type::EnumType(_)) => "enum",
                Some(Type::EntityReference(_)) => "entity",
                Some(Type::Version(_)) => "version",
                Some(Type::Date(_)) => "date",
                Some(Type::Timestamp(_)) => "timestamp",
                None => "unspecified",
            };
            (path, name.to_string())
        })
        .collect();
    ContextSchema { fields, semantic_types }
}

fn telemetry(t: TelemetryData) -> TelemetrySummary {
    TelemetrySummary {
        resolver_version: t.resolver_version,
        memory_bytes: t.memory_bytes,
        sdk: t.sdk.map(sdk_info),
        resolve_latency: t.resolve_latency.map(|l| LatencySummary { count: l.count, sum: l.sum }),
        resolve_rate: t
            .resolve_rate
            .into_iter()
            .map(|r| ReasonCount {
                reason: ResolveReason::try_from(r.reason)
                    .map_or_else(|_| r.reason.to_string(), |n| n.as_str_name().to_string()),
                count: r.count,
            })
            .collect(),
    }
}
