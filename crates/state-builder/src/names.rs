//! Resource-name helpers: builders accept short ids (`"beta"`) or full names
//! (`"segments/beta"`), so call sites stay short without hiding the wire format.

fn with_prefix(prefix: &str, id: &str) -> String {
    if id.starts_with(prefix) {
        id.to_string()
    } else {
        format!("{prefix}{id}")
    }
}

/// `flags/<id>`.
pub fn flag_name(id: &str) -> String {
    with_prefix("flags/", id)
}

/// `segments/<id>`.
pub fn segment_name(id: &str) -> String {
    with_prefix("segments/", id)
}

/// `clients/<id>`.
pub fn client_name(id: &str) -> String {
    with_prefix("clients/", id)
}

/// `clients/<client>/clientCredentials/<id>`.
pub fn credential_name(client: &str, id: &str) -> String {
    let client = client_name(client);
    with_prefix(&format!("{client}/clientCredentials/"), id)
}

/// `flags/<flag>/variants/<id>`.
pub fn variant_name(flag: &str, id: &str) -> String {
    let flag = flag_name(flag);
    with_prefix(&format!("{flag}/variants/"), id)
}

/// `flags/<flag>/rules/<id>`.
pub fn rule_name(flag: &str, id: &str) -> String {
    let flag = flag_name(flag);
    with_prefix(&format!("{flag}/rules/"), id)
}

/// The short id of a full name (`flags/a` → `a`), or the input when it has no `/`.
pub fn short_id(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}
