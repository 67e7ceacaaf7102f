//! `materializationStore: 'CONFIDENCE_REMOTE_STORE'`: sticky assignments and materialized
//! segments kept by Confidence (docs/remote-store.md). Reads happen while an evaluation waits, so
//! they are bounded tightly: 3 attempts of 0.5 s from 100 ms backoff, then the evaluation
//! falls back to its default value (docs/resolver.md, "Provider behaviour"). Writes are fire-and-forget for the caller.

use bytes::Bytes;
use confidence_proto::store::{
    read_op, read_result, InclusionReadOp, ReadOp, ReadOperationsRequest, ReadOperationsResult, VariantData,
    VariantReadOp, WriteOperationsRequest,
};
use confidence_resolver::proto::confidence::flags::resolver::v1::MaterializationRecord;
use prost::Message;
use reqwest::header::HeaderValue;
use std::time::Duration;

use crate::http::{self, NetConfig, PostError, RetryPolicy};

pub const READ_PATH: &str = "/v1/materialization:readMaterializedOperations";
pub const WRITE_PATH: &str = "/v1/materialization:writeMaterializedOperations";

/// docs/remote-store.md: 3 attempts, 100 ms base backoff, 0.5 s per attempt.
pub const POLICY: RetryPolicy = RetryPolicy {
    attempts: 3,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_millis(400),
    timeout: Duration::from_millis(500),
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("materialization store request failed: {0}")]
    Request(#[from] PostError),
    #[error("materialization store answer cannot be decoded: {0}")]
    Decode(String),
    #[error("invalid API base URL for the materialization store: {0}")]
    BaseUrl(String),
    #[error(transparent)]
    Net(#[from] crate::http::NetError),
    #[error("the client secret is not a valid header value")]
    Secret,
    #[error("the provider is offline: the remote materialization store is not reachable")]
    Offline,
}

/// A client of the two store endpoints under one API base URL.
pub struct RemoteStore {
    client: reqwest::Client,
    read_url: String,
    write_url: String,
    authorization: HeaderValue,
    policy: RetryPolicy,
}

impl RemoteStore {
    /// Messages never contain the secret.
    pub fn new(api_base_url: &str, client_secret: &str, net: &NetConfig) -> Result<Self, StoreError> {
        let base = reqwest::Url::parse(api_base_url).map_err(|e| StoreError::BaseUrl(e.to_string()))?;
        let client = http::client(&base, net)?;
        let authorization =
            HeaderValue::from_str(&format!("ClientSecret {client_secret}")).map_err(|_| StoreError::Secret)?;
        let root = api_base_url.trim_end_matches('/');
        Ok(RemoteStore {
            client,
            read_url: format!("{root}{READ_PATH}"),
            write_url: format!("{root}{WRITE_PATH}"),
            authorization,
            policy: POLICY,
        })
    }

    /// Replaces the retry policy (tests).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The records found for the resolver's `queries`, negatives left out (what a resume
    /// expects). No request when there is nothing to ask.
    pub async fn read(&self, queries: &[MaterializationRecord]) -> Result<Vec<MaterializationRecord>, StoreError> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let body = Bytes::from(read_request(queries).encode_to_vec());
        let answer =
            http::post_protobuf(&self.client, &self.read_url, &self.authorization, body, &self.policy, || {}).await?;
        let result = ReadOperationsResult::decode(answer).map_err(|e| StoreError::Decode(e.to_string()))?;
        Ok(found_records(result))
    }

    /// Stores the resolver's assignments to write.
    pub async fn write(&self, records: &[MaterializationRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let body = Bytes::from(write_request(records).encode_to_vec());
        http::post_protobuf(&self.client, &self.write_url, &self.authorization, body, &self.policy, || {}).await?;
        Ok(())
    }
}

/// The resolver's read queries (`rule` empty = segment inclusion) as store operations.
pub fn read_request(queries: &[MaterializationRecord]) -> ReadOperationsRequest {
    let ops = queries
        .iter()
        .map(|q| {
            let op = if q.rule.is_empty() {
                read_op::Op::InclusionReadOp(InclusionReadOp {
                    unit: q.unit.clone(),
                    materialization: q.materialization.clone(),
                })
            } else {
                read_op::Op::VariantReadOp(VariantReadOp {
                    unit: q.unit.clone(),
                    materialization: q.materialization.clone(),
                    rule: q.rule.clone(),
                })
            };
            ReadOp { op: Some(op) }
        })
        .collect();
    ReadOperationsRequest { ops }
}

/// Store results as resolver records: a stored variant, or an inclusion as a record with empty
/// rule and variant. Negatives are left out (absence means "none").
pub fn found_records(result: ReadOperationsResult) -> Vec<MaterializationRecord> {
    result
        .results
        .into_iter()
        .filter_map(|r| match r.result? {
            read_result::Result::VariantResult(v) if !v.variant.is_empty() => Some(MaterializationRecord {
                unit: v.unit,
                materialization: v.materialization,
                rule: v.rule,
                variant: v.variant,
            }),
            read_result::Result::InclusionResult(i) if i.is_included => Some(MaterializationRecord {
                unit: i.unit,
                materialization: i.materialization,
                rule: String::new(),
                variant: String::new(),
            }),
            _ => None,
        })
        .collect()
}

pub fn write_request(records: &[MaterializationRecord]) -> WriteOperationsRequest {
    WriteOperationsRequest {
        store_variant_op: records
            .iter()
            .map(|r| VariantData {
                unit: r.unit.clone(),
                materialization: r.materialization.clone(),
                rule: r.rule.clone(),
                variant: r.variant.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confidence_proto::store::{InclusionData, ReadResult};

    fn record(unit: &str, materialization: &str, rule: &str, variant: &str) -> MaterializationRecord {
        MaterializationRecord {
            unit: unit.into(),
            materialization: materialization.into(),
            rule: rule.into(),
            variant: variant.into(),
        }
    }

    #[test]
    fn queries_map_to_variant_and_inclusion_ops() {
        let request = read_request(&[record("u", "m", "r", ""), record("u", "seg", "", "")]);
        let ops: Vec<_> = request.ops.into_iter().map(|o| o.op.unwrap()).collect();
        assert_eq!(
            ops,
            [
                read_op::Op::VariantReadOp(VariantReadOp {
                    unit: "u".into(),
                    materialization: "m".into(),
                    rule: "r".into()
                }),
                read_op::Op::InclusionReadOp(InclusionReadOp { unit: "u".into(), materialization: "seg".into() }),
            ]
        );
        // ReadOperationsRequest.ops is field 3 (docs/wire-format.md, "Remote materialization store messages").
        assert_eq!(read_request(&[record("u", "s", "", "")]).encode_to_vec()[0], (3 << 3) | 2);
    }

    #[test]
    fn results_keep_only_what_was_found() {
        let result = ReadOperationsResult {
            results: vec![
                ReadResult {
                    result: Some(read_result::Result::VariantResult(VariantData {
                        unit: "u".into(),
                        materialization: "m".into(),
                        rule: "r".into(),
                        variant: "v".into(),
                    })),
                },
                ReadResult {
                    result: Some(read_result::Result::VariantResult(VariantData {
                        unit: "u2".into(),
                        materialization: "m".into(),
                        rule: "r".into(),
                        variant: String::new(),
                    })),
                },
                ReadResult {
                    result: Some(read_result::Result::InclusionResult(InclusionData {
                        unit: "u".into(),
                        materialization: "in".into(),
                        is_included: true,
                    })),
                },
                ReadResult {
                    result: Some(read_result::Result::InclusionResult(InclusionData {
                        unit: "u".into(),
                        materialization: "out".into(),
                        is_included: false,
                    })),
                },
                ReadResult { result: None },
            ],
        };
        assert_eq!(found_records(result), [record("u", "m", "r", "v"), record("u", "in", "", "")]);
    }

    #[test]
    fn writes_carry_every_field() {
        let request = write_request(&[record("u", "m", "r", "v")]);
        assert_eq!(
            request.store_variant_op,
            [VariantData { unit: "u".into(), materialization: "m".into(), rule: "r".into(), variant: "v".into() }]
        );
    }
}
