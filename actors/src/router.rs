//! Router actor: the only writer of the route table for its share of the filters.
//!
//! Supervised by: `router_sup` (one_for_one), restart type permanent.
//! Receives: `Subscribe` and `Unsubscribe` calls from client actors (the reply means the
//! change is in place, so a SUBACK or UNSUBACK can go out), `Crash` from the fault-injection
//! hook.
//! Owns: nothing that a restart could lose. The table is in the broker context; a router that
//! comes back re-registers itself in its slot and carries on.
//!
//! Filters are spread over the routers by a fixed hash, so that all changes to one filter are
//! serialized through one mailbox. That makes the router the place that knows when a filter
//! gains its first direct subscriber or loses its last one (or a shared group its first or
//! last member), which it tells the cluster bridge
//! (the node's route announcement, DESIGN §5). Publishes never pass through a router: they
//! read the table directly.

use std::sync::Arc;

use beamq_protocol::ByteString;
use beamq_protocol::session::Subscription;
use beamq_supervisors::probe::{self, Describe, Probe, Registration, Summary};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::broker::Broker;
use crate::link::ClientHandle;
use crate::route_table::RouteEntry;

/// Messages of a router.
#[derive(Debug)]
pub enum RouterMsg {
    /// Add or replace `client`'s subscriptions; reply once they are in the table.
    Subscribe {
        /// The subscriber.
        client: ClientHandle,
        /// Filters (possibly `$share/...`) and options.
        subs: Vec<(ByteString, Subscription)>,
        /// Answered when done.
        reply: RpcReplyPort<()>,
    },
    /// Remove `client`'s subscriptions (only entries that still belong to this client actor).
    Unsubscribe {
        /// The subscriber.
        client: ClientHandle,
        /// Filters as subscribed.
        filters: Vec<ByteString>,
        /// Answered when done.
        reply: RpcReplyPort<()>,
    },
    /// Test-only: panic, to show the supervisor restarting a router (`debug.fault_injection`).
    Crash,
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Local only: client actors and their peers are never remotable (DESIGN §10), so the
// message needs no serialization even with ractor's `cluster` feature on.
impl ractor::Message for RouterMsg {}

impl Describe for RouterMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        RouterMsg::Describe(reply)
    }
}

/// Arguments: which slot this router fills, and the broker.
#[derive(Debug, Clone)]
pub struct RouterArgs {
    /// Index among the routers.
    pub index: usize,
    /// The broker context.
    pub broker: Arc<Broker>,
}

/// State of a router.
#[derive(Debug)]
pub struct RouterState {
    index: usize,
    broker: Arc<Broker>,
    /// Filters added and removed by this incarnation.
    added: u64,
    removed: u64,
    probe: Arc<Probe>,
    _registration: Registration,
}

/// The router actor.
#[derive(Debug, Clone, Copy)]
pub struct Router;

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<RouterState, ActorProcessingErr> {
        let (probe, registration) = probe::start(&myself, "router");
        args.broker.set_router(args.index, Some(myself));
        Ok(RouterState {
            index: args.index,
            broker: args.broker,
            added: 0,
            removed: 0,
            probe,
            _registration: registration,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RouterMsg>,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        state.broker.set_router(state.index, None);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        let routes = &state.broker.routes;
        match msg {
            RouterMsg::Describe(reply) => {
                let _ = reply.send(vec![
                    ("slot".into(), state.index.to_string()),
                    ("subscriptions added".into(), state.added.to_string()),
                    ("subscriptions removed".into(), state.removed.to_string()),
                ]);
            }
            RouterMsg::Subscribe {
                client,
                subs,
                reply,
            } => {
                for (filter, subscription) in subs {
                    state.added += 1;
                    // All changes to one filter pass through this router, so the check and
                    // the insert cannot be split by another change to the same filter.
                    let first = !routes.has_route(&filter);
                    routes.insert(
                        &filter,
                        RouteEntry {
                            client: client.clone(),
                            subscription,
                        },
                    );
                    if first && routes.has_route(&filter) {
                        state.broker.cluster.announce(&filter, true);
                    }
                }
                let _ = reply.send(());
            }
            RouterMsg::Unsubscribe {
                client,
                filters,
                reply,
            } => {
                for filter in &filters {
                    let removed = routes.remove(filter, &client);
                    state.removed += u64::from(removed);
                    if removed && !routes.has_route(filter) {
                        state.broker.cluster.announce(filter, false);
                    }
                }
                let _ = reply.send(());
            }
            RouterMsg::Crash => {
                tracing::warn!(router = state.index, "fault injection: router panics");
                panic!("fault injection: router {} crashed on request", state.index);
            }
        }
        Ok(())
    }
}
