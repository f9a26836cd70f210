//! Registry actor: client id -> the client actor that owns the session (emqx_cm's role).
//!
//! Supervised by: `broker_sup` (one_for_one), restart type permanent.
//! Receives: `Register` from a client actor starting up (a call: the reply names the previous
//! owner, whose session the newcomer takes over or discards), `Unregister` from a client actor
//! whose session ended.
//! Owns: nothing but the right to write the [`SessionTable`], which lives in the broker context
//! so that a restarted registry finds every session where it was.
//!
//! Serializing registrations in one actor is what makes two connections racing for the same
//! client id end with exactly one owner: each gets the other's handle as its predecessor in a
//! single order, and the takeover protocol between client actors runs down that chain.

use std::collections::HashMap;
use std::sync::Arc;

use beamq_protocol::ByteString;
use beamq_supervisors::probe::{self, Describe, Probe, Registration, Summary};
use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::broker::Broker;
use crate::link::ClientHandle;

const SHARDS: usize = 16;

/// Sessions by client id, sharded to keep lookups from contending.
#[derive(Debug)]
pub struct SessionTable {
    shards: Vec<RwLock<HashMap<ByteString, ClientHandle, ahash::RandomState>>>,
    hasher: ahash::RandomState,
}

impl Default for SessionTable {
    fn default() -> Self {
        SessionTable {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl SessionTable {
    fn shard(&self, id: &str) -> &RwLock<HashMap<ByteString, ClientHandle, ahash::RandomState>> {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    /// The session owner of `client_id`.
    pub fn get(&self, client_id: &str) -> Option<ClientHandle> {
        self.shard(client_id).read().get(client_id).cloned()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// True when there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session owner (for listings and shutdown).
    pub fn all(&self) -> Vec<ClientHandle> {
        self.shards
            .iter()
            .flat_map(|s| s.read().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    fn insert(&self, client: &ClientHandle) -> Option<ClientHandle> {
        self.shard(&client.client_id)
            .write()
            .insert(client.client_id.clone(), client.clone())
    }

    /// Removes the entry only if `client` still owns it.
    pub fn remove_if_owner(&self, client: &ClientHandle) -> bool {
        let mut shard = self.shard(&client.client_id).write();
        let owner = shard
            .get(&client.client_id)
            .is_some_and(|c| Arc::ptr_eq(c, client));
        if owner {
            shard.remove(&client.client_id);
        }
        owner
    }
}

/// Messages of the registry.
#[derive(Debug)]
pub enum RegistryMsg {
    /// Make `client` the owner of its client id; reply with the previous owner.
    Register {
        /// The new owner.
        client: ClientHandle,
        /// Gets the previous owner, if any.
        reply: RpcReplyPort<Option<ClientHandle>>,
    },
    /// Drop `client`'s entry if it still owns it (its session ended).
    Unregister {
        /// The departing owner.
        client: ClientHandle,
    },
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Local only: client actors and their peers are never remotable (DESIGN §10), so the
// message needs no serialization even with ractor's `cluster` feature on.
impl ractor::Message for RegistryMsg {}

impl Describe for RegistryMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        RegistryMsg::Describe(reply)
    }
}

/// State of the registry.
#[derive(Debug)]
pub struct RegistryState {
    broker: Arc<Broker>,
    /// Registrations that replaced a previous owner (takeovers), in this incarnation.
    takeovers: u64,
    probe: Arc<Probe>,
    _registration: Registration,
}

/// The registry actor.
#[derive(Debug, Clone, Copy)]
pub struct Registry;

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = Arc<Broker>;

    async fn pre_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        broker: Arc<Broker>,
    ) -> Result<RegistryState, ActorProcessingErr> {
        let (probe, registration) = probe::start(&myself, "registry");
        broker.set_registry(Some(myself));
        Ok(RegistryState {
            broker,
            takeovers: 0,
            probe,
            _registration: registration,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RegistryMsg>,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        state.broker.set_registry(None);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        let broker = &state.broker;
        match msg {
            RegistryMsg::Describe(reply) => {
                let _ = reply.send(vec![
                    ("sessions".into(), broker.sessions.len().to_string()),
                    ("takeovers".into(), state.takeovers.to_string()),
                ]);
            }
            RegistryMsg::Register { client, reply } => {
                let previous = broker.sessions.insert(&client);
                state.takeovers += u64::from(previous.is_some());
                // The caller may have timed out; its session start then fails on its own.
                let _ = reply.send(previous);
            }
            RegistryMsg::Unregister { client } => {
                broker.sessions.remove_if_owner(&client);
            }
        }
        Ok(())
    }
}
