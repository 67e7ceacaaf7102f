//! The remote materialization store's two routes (docs/remote-store.md): variants written by clients
//! and read back, and materialized-segment membership seeded by tests.

use std::collections::{HashMap, HashSet};

use confidence_proto::store::{
    read_op, read_result, InclusionData, ReadOperationsRequest, ReadOperationsResult, ReadResult, VariantData,
    WriteOperationsRequest,
};
use prost::Message;

pub const READ_PATH: &str = "/v1/materialization:readMaterializedOperations";
pub const WRITE_PATH: &str = "/v1/materialization:writeMaterializedOperations";

/// `(materialization, unit, rule)` → variant, and `(materialization, unit)` memberships.
#[derive(Debug, Default)]
pub struct Store {
    variants: HashMap<(String, String, String), String>,
    included: HashSet<(String, String)>,
}

impl Store {
    pub fn include(&mut self, materialization: &str, unit: &str) {
        self.included.insert((materialization.to_string(), unit.to_string()));
    }

    /// Stored variants as `(materialization, unit, rule, variant)`, sorted.
    pub fn variants(&self) -> Vec<(String, String, String, String)> {
        let mut rows: Vec<_> =
            self.variants.iter().map(|((m, u, r), v)| (m.clone(), u.clone(), r.clone(), v.clone())).collect();
        rows.sort();
        rows
    }

    /// Status and body for a POST to `path`; 400 when the body is not the expected message.
    pub fn answer(&mut self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        match path {
            READ_PATH => match ReadOperationsRequest::decode(body) {
                Ok(request) => (200, self.read(request).encode_to_vec()),
                Err(e) => (400, format!("not a ReadOperationsRequest: {e}\n").into_bytes()),
            },
            WRITE_PATH => match WriteOperationsRequest::decode(body) {
                Ok(request) => {
                    for op in request.store_variant_op {
                        self.variants.insert((op.materialization, op.unit, op.rule), op.variant);
                    }
                    (200, Vec::new())
                }
                Err(e) => (400, format!("not a WriteOperationsRequest: {e}\n").into_bytes()),
            },
            _ => (404, b"no such store route\n".to_vec()),
        }
    }

    fn read(&self, request: ReadOperationsRequest) -> ReadOperationsResult {
        let results = request
            .ops
            .into_iter()
            .filter_map(|op| op.op)
            .map(|op| match op {
                read_op::Op::VariantReadOp(q) => {
                    let key = (q.materialization.clone(), q.unit.clone(), q.rule.clone());
                    let variant = self.variants.get(&key).cloned().unwrap_or_default();
                    read_result::Result::VariantResult(VariantData {
                        unit: q.unit,
                        materialization: q.materialization,
                        rule: q.rule,
                        variant,
                    })
                }
                read_op::Op::InclusionReadOp(q) => {
                    let is_included = self.included.contains(&(q.materialization.clone(), q.unit.clone()));
                    read_result::Result::InclusionResult(InclusionData {
                        unit: q.unit,
                        materialization: q.materialization,
                        is_included,
                    })
                }
            })
            .map(|result| ReadResult { result: Some(result) })
            .collect();
        ReadOperationsResult { results }
    }
}
