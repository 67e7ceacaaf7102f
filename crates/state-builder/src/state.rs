//! The whole resolver state: account, clients and credentials, flags, segments, bitsets and
//! bloom filters, plus the CDN envelope (`ClientResolverState`) it is served in.

use confidence_proto::admin::ClientResolverState;
use confidence_resolver::proto::confidence::flags::admin::v1::{
    resolver_state::{LogDestination, Region},
    ResolverState,
};
use confidence_resolver::proto::confidence::iam::v1::{
    client_credential::{ClientSecret, Credential},
    Client, ClientCredential,
};
use prost::Message;

use crate::bloom::BloomFilter;
use crate::flag::FlagBuilder;
use crate::names::{client_name, credential_name};
use crate::segment::SegmentBuilder;

/// One credential of a client.
#[derive(Clone, Debug, PartialEq)]
pub struct CredentialBuilder {
    id: String,
    secret: Option<String>,
    environments: Vec<String>,
}

impl CredentialBuilder {
    /// A credential `<id>` authenticating with `secret`.
    pub fn new(id: &str, secret: impl Into<String>) -> Self {
        CredentialBuilder { id: id.to_string(), secret: Some(secret.into()), environments: Vec::new() }
    }

    /// A credential with no secret in its oneof (the resolver ignores it).
    pub fn without_secret(id: &str) -> Self {
        CredentialBuilder { id: id.to_string(), secret: None, environments: Vec::new() }
    }

    /// Environments bound to the credential (exact strings matched against rule environments).
    pub fn environments<S: Into<String>>(mut self, envs: impl IntoIterator<Item = S>) -> Self {
        self.environments = envs.into_iter().map(Into::into).collect();
        self
    }
}

/// A client and its credentials.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientBuilder {
    id: String,
    display_name: String,
    credentials: Vec<CredentialBuilder>,
}

impl ClientBuilder {
    /// A client `clients/<id>` with no credentials yet.
    pub fn new(id: &str) -> Self {
        ClientBuilder { id: id.to_string(), display_name: id.to_string(), credentials: Vec::new() }
    }

    /// Adds a credential.
    pub fn credential(mut self, c: CredentialBuilder) -> Self {
        self.credentials.push(c);
        self
    }

    /// Shorthand: a credential named `<client>-key` holding `secret`.
    pub fn secret(self, secret: impl Into<String>) -> Self {
        let id = format!("{}-key", crate::names::short_id(&self.id));
        self.credential(CredentialBuilder::new(&id, secret))
    }

    /// Display name (metadata).
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = name.into();
        self
    }
}

/// Builds a complete state.
#[derive(Clone, Debug, PartialEq)]
pub struct StateBuilder {
    account_id: String,
    clients: Vec<ClientBuilder>,
    flags: Vec<FlagBuilder>,
    segments: Vec<SegmentBuilder>,
    bloom_filters: Vec<BloomFilter>,
    region: Region,
    log_destinations: Vec<LogDestination>,
}

impl StateBuilder {
    /// An empty state for `account_id` (without the `accounts/` prefix).
    pub fn new(account_id: impl Into<String>) -> Self {
        StateBuilder {
            account_id: account_id.into(),
            clients: Vec::new(),
            flags: Vec::new(),
            segments: Vec::new(),
            bloom_filters: Vec::new(),
            region: Region::Eu,
            log_destinations: Vec::new(),
        }
    }

    /// Adds a client.
    pub fn client(mut self, c: ClientBuilder) -> Self {
        self.clients.push(c);
        self
    }

    /// Adds a flag.
    pub fn flag(mut self, f: FlagBuilder) -> Self {
        self.flags.push(f);
        self
    }

    /// Adds a segment (and its bitset entry, if any).
    pub fn segment(mut self, s: SegmentBuilder) -> Self {
        self.segments.push(s);
        self
    }

    /// Adds a bloom filter answering a materialized segment.
    pub fn bloom_filter(mut self, b: BloomFilter) -> Self {
        self.bloom_filters.push(b);
        self
    }

    /// The region (metadata, unused by resolution).
    pub fn region(mut self, r: Region) -> Self {
        self.region = r;
        self
    }

    /// Log destinations written into the CDN envelope.
    pub fn log_destinations(mut self, d: impl IntoIterator<Item = LogDestination>) -> Self {
        self.log_destinations = d.into_iter().collect();
        self
    }

    /// Assembles the state. Bitsets are emitted in segment order after all segments.
    pub fn build(&self) -> BuiltState {
        let mut clients = Vec::new();
        let mut credentials = Vec::new();
        for c in &self.clients {
            clients.push(Client {
                name: client_name(&c.id),
                display_name: c.display_name.clone(),
                ..Default::default()
            });
            for cred in &c.credentials {
                credentials.push(ClientCredential {
                    name: credential_name(&c.id, &cred.id),
                    display_name: cred.id.clone(),
                    credential: cred
                        .secret
                        .as_ref()
                        .map(|secret| Credential::ClientSecret(ClientSecret { secret: secret.clone() })),
                    environments: cred.environments.clone(),
                    ..Default::default()
                });
            }
        }
        let proto = ResolverState {
            flags: self.flags.iter().map(FlagBuilder::to_proto).collect(),
            segments_no_bitsets: self.segments.iter().map(SegmentBuilder::to_proto).collect(),
            bitsets: self.segments.iter().filter_map(|s| s.bitset_ref().to_packed(s.name())).collect(),
            clients,
            client_credentials: credentials,
            region: self.region as i32,
            bloom_filters: self.bloom_filters.iter().map(BloomFilter::to_proto).collect(),
        };
        BuiltState { proto, account_id: self.account_id.clone(), log_destinations: self.log_destinations.clone() }
    }
}

/// A finished state with its account, ready to encode or load.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltState {
    /// The `ResolverState` message; edit it directly for shapes the builders do not cover.
    pub proto: ResolverState,
    /// Account id (no `accounts/` prefix), passed to the resolver next to the state.
    pub account_id: String,
    /// Log destinations for the CDN envelope.
    pub log_destinations: Vec<LogDestination>,
}

impl BuiltState {
    /// The serialized `ResolverState`.
    pub fn encode(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// The CDN envelope around the serialized state.
    pub fn client_resolver_state(&self) -> ClientResolverState {
        ClientResolverState {
            state: self.encode(),
            account: self.account_id.clone(),
            log_destinations: self.log_destinations.iter().map(|d| *d as i32).collect(),
        }
    }

    /// The serialized CDN envelope, byte-for-byte what a CDN would serve (unencrypted).
    pub fn encode_client_resolver_state(&self) -> Vec<u8> {
        self.client_resolver_state().encode_to_vec()
    }

    /// Every client secret in the state, in state order.
    pub fn secrets(&self) -> Vec<String> {
        self.proto
            .client_credentials
            .iter()
            .filter_map(|c| c.credential.as_ref().map(|Credential::ClientSecret(s)| s.secret.clone()))
            .collect()
    }

    /// Names of all flags, in state order.
    pub fn flag_names(&self) -> Vec<String> {
        self.proto.flags.iter().map(|f| f.name.clone()).collect()
    }
}
