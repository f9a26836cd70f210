//! Client actor: one per MQTT client, holding its session (EMQX's channel process).
//!
//! Supervised by: `session_sup` (a dynamic supervisor), restart type temporary. A crash is
//! logged and counted and the client is disconnected; it is never restarted with a half-valid
//! socket. The cleanup that a crash skips (`post_stop` does not run after a panic) happens in the
//! `Drop` of [`ClientState`].
//! Receives: decoded packet batches and connection events from its socket task
//! ([`crate::connection`]); deliveries from publishers (through [`ClientLink::deliver`], which
//! bounds the mailbox); takeover requests from the client actor that inherits its client id;
//! timer ticks it scheduled itself; kicks (server shutdown, admin).
//! Owns: the protocol [`Channel`] with the session, the link other actors reach it by, and the
//! shared buffer to its socket task.
//!
//! The actor outlives its connection when the session has an expiry: it then queues messages
//! (bounded) until the client comes back, the session expires, or another connection takes it
//! over.
//!
//! Takeover runs between the two actors that own a client id one after the other: the newcomer
//! asks the old owner for the session (`TakeoverBegin`), puts its subscriptions in the route table
//! under its own link, then collects what reached the old owner meanwhile (`TakeoverEnd`). The
//! old owner then forwards whatever still arrives (a publisher may have looked the route up just
//! before it changed) and drains its mailbox before it stops, so no message is lost on the way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beamq_protocol::session::{
    Accepted, Channel, Delivery, Dispatcher, DropReason, Effect, Message, SessionState, Violation,
};
use beamq_protocol::{ByteString, Connect, DecodeError, LastWill, Packet, ReasonCode, topic};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::broker::{Broker, CALL_TIMEOUT, FAULT_CLIENT_TOPIC, FAULT_ROUTER_TOPIC, Fanout};
use crate::connection::Conn;
use crate::link::{ClientHandle, ClientLink};
use crate::router::RouterMsg;
use beamq_supervisors::probe::{self, Counted, Describe, Probed, Registration, Summary};

/// Stop reason of a client actor whose session ended the way the protocol says (disconnect,
/// expiry, takeover, kick): a normal exit for the supervisor, which only warns about others.
const NORMAL: &str = "normal";

/// The longest a single timer sleeps; longer waits re-arm themselves (tokio timers reach about
/// two years, session expiry up to 136).
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);

/// Why the socket task reports the connection gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The peer closed the socket, or reading/writing failed.
    Closed,
    /// Nothing arrived within 1.5 × keep alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
    /// The peer accepted no bytes for `broker.send_timeout` while we had some to write.
    SendTimeout,
}

/// Timers the actor sets for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// The Will Delay Interval has passed [MQTT-3.1.3-9].
    WillDelay,
    /// The Session Expiry Interval has passed.
    SessionExpiry,
    /// A takeover was begun and never finished.
    TakeoverTimeout,
}

/// Messages of a client actor.
#[derive(Debug)]
pub enum ClientMsg {
    /// Packets decoded from the socket, in order, and the decode error that ended the batch.
    Inbound {
        /// The packets.
        packets: Vec<Packet>,
        /// Set when the stream held a malformed frame after them.
        error: Option<DecodeError>,
    },
    /// Messages for this client (sent through [`ClientLink::deliver`] only).
    Deliver(Vec<Delivery>),
    /// The socket's write backlog fell below its low watermark.
    Writable,
    /// The socket task reports the connection gone or idle too long.
    ConnectionLost(LostReason),
    /// A new connection with this client id starts: close ours and hand over the session
    /// (`None` when the newcomer asked for a clean start). Deliveries arriving from now on are
    /// kept for [`ClientMsg::TakeoverEnd`].
    TakeoverBegin {
        /// The newcomer's Clean Start.
        clean_start: bool,
        /// Gets the session.
        reply: RpcReplyPort<Option<Box<SessionState>>>,
    },
    /// The newcomer's subscriptions are in place: hand over what arrived meanwhile, forward
    /// what still arrives, and stop once the mailbox is empty.
    TakeoverEnd {
        /// The new owner.
        successor: ClientHandle,
        /// Gets the deliveries that arrived after `TakeoverBegin`.
        reply: RpcReplyPort<Vec<Delivery>>,
    },
    /// After `TakeoverBegin`, for a newcomer on another node: hand over what arrived
    /// meanwhile, give up the routes and the client id, and stop. (A local newcomer uses
    /// `TakeoverEnd`, which also forwards what still arrives.)
    HandoffEnd {
        /// Gets the deliveries that arrived after `TakeoverBegin`.
        reply: RpcReplyPort<Vec<Delivery>>,
    },
    /// Inspection: the actor describes itself (admin `clients show`, `subscriptions show`).
    Inspect(RpcReplyPort<ClientInfo>),
    /// The same, as `actor show` asks every actor.
    Describe(RpcReplyPort<Summary>),
    /// A timer set by this actor; stale epochs are ignored.
    Timer {
        /// Epoch when set.
        epoch: u64,
        /// Which timer.
        kind: TimerKind,
    },
    /// Disconnect the client with `reason` (v5 DISCONNECT); end the session too if asked
    /// (server shutdown).
    Kick {
        /// Reason code sent to v5 clients.
        reason: ReasonCode,
        /// End the session as well.
        end_session: bool,
    },
}

// Local only: client actors and their peers are never remotable (DESIGN §10), so the
// message needs no serialization even with ractor's `cluster` feature on.
impl ractor::Message for ClientMsg {}

impl Describe for ClientMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        ClientMsg::Describe(reply)
    }
}

/// What the socket task hands over when it starts the actor.
#[derive(Debug)]
pub struct ClientArgs {
    /// Broker context.
    pub broker: Arc<Broker>,
    /// The CONNECT.
    pub connect: Box<Connect>,
    /// The decision on it.
    pub accepted: Accepted,
    /// The socket buffer.
    pub conn: Arc<Conn>,
    /// The connection's tracing span.
    pub span: tracing::Span,
}

/// What a client actor reports about itself.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Client identifier.
    pub client_id: String,
    /// Peer address while connected.
    pub peer: Option<String>,
    /// Protocol version.
    pub version: String,
    /// Keep Alive in force, seconds.
    pub keep_alive: u16,
    /// Session Expiry Interval, seconds (`u32::MAX` = never).
    pub session_expiry: u32,
    /// Subscriptions: filter, granted QoS, No Local, Retain As Published, Retain Handling,
    /// Subscription Identifier.
    pub subscriptions: Vec<(String, u8, bool, bool, u8, Option<u32>)>,
    /// QoS 1/2 messages in flight to the client.
    pub inflight: usize,
    /// Messages held for the client (in flight, queued, retained page).
    pub pending: usize,
    /// Deliveries waiting in the mailbox.
    pub mailbox: usize,
    /// Drops by reason.
    pub drops: ClientDrops,
}

/// Per-client drop counters, by reason (the broker-wide ones are in [`crate::metrics`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientDrops {
    /// Queue full.
    pub queue_full: u64,
    /// Expired.
    pub expired: u64,
    /// Larger than the client's Maximum Packet Size.
    pub too_large: u64,
    /// QoS 0 not queued.
    pub qos0_not_queued: u64,
}

/// Where a takeover of this actor's client id stands.
#[derive(Debug)]
enum Takeover {
    /// None under way.
    None,
    /// The session went to the newcomer, whose subscriptions are not in place yet: deliveries
    /// are kept for it; `filters` are the routes still pointing here, removed if the newcomer
    /// never finishes.
    Handing {
        buffered: Vec<Delivery>,
        filters: Vec<ByteString>,
    },
    /// The newcomer asked for a clean start: this session ended.
    Discarded,
    /// The newcomer has everything: late deliveries go on to it until the mailbox is empty.
    Forwarding { successor: ClientHandle },
}

/// State of a client actor.
pub struct ClientState {
    broker: Arc<Broker>,
    link: ClientHandle,
    channel: Channel,
    conn: Option<Arc<Conn>>,
    span: tracing::Span,
    effects: Vec<Effect>,
    fanout: Fanout,
    /// Bumped whenever the timers set so far stop applying.
    epoch: u64,
    /// Timer tasks of the current epoch, aborted when it ends.
    timers: Vec<JoinHandle<()>>,
    pending_will: Option<LastWill>,
    will_due: Option<Instant>,
    expiry_due: Option<Instant>,
    takeover: Takeover,
    drops: ClientDrops,
    /// True once the session's accounting is done (will, registry, shared redelivery,
    /// `sessions` gauge), or the session moved to another actor.
    session_ended: bool,
    /// True once this session's subscriptions left the route table (or moved).
    routes_removed: bool,
    sent_seen: u64,
    high_watermark: usize,
    /// Removes the link's probe from the registry however the actor ends.
    _registration: Registration,
}

impl std::fmt::Debug for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientState")
            .field("client_id", &self.link.client_id)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

/// The client actor.
#[derive(Debug, Clone, Copy)]
pub struct ClientActor;

impl Actor for ClientActor {
    type Msg = ClientMsg;
    type State = ClientState;
    type Arguments = ClientArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ClientMsg>,
        args: ClientArgs,
    ) -> Result<ClientState, ActorProcessingErr> {
        let span = args.span.clone();
        Box::pin(start(myself, args)).instrument(span).await
    }

    async fn handle(
        &self,
        myself: ActorRef<ClientMsg>,
        msg: ClientMsg,
        state: &mut ClientState,
    ) -> Result<(), ActorProcessingErr> {
        let span = state.span.clone();
        state.handle(myself, msg).instrument(span).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ClientMsg>,
        state: &mut ClientState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped from outside (node shutdown, admin) without ending the session first.
        let span = state.span.clone();
        Box::pin(state.end_session()).instrument(span).await;
        Ok(())
    }
}

/// Undoes a start that did not finish (an error, or the actor killed while starting): the
/// registration and any routes already made under this actor's link would otherwise point at
/// an actor that never ran.
struct StartGuard {
    broker: Arc<Broker>,
    link: ClientHandle,
    filters: Vec<ByteString>,
    /// A session taken over from the previous owner is lost with this start.
    holds_session: bool,
    armed: bool,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.link.set_online(false);
        self.broker.unregister(&self.link);
        if self.holds_session {
            self.broker.metrics.sessions.dec();
        }
        spawn_unsubscribe(&self.broker, &self.link, std::mem::take(&mut self.filters));
    }
}

/// Registers the client, takes over a previous session if there is one, and sends CONNACK.
async fn start(
    myself: ActorRef<ClientMsg>,
    args: ClientArgs,
) -> Result<ClientState, ActorProcessingErr> {
    let ClientArgs {
        broker,
        connect,
        accepted,
        conn,
        span,
    } = args;
    let link = Arc::new(ClientLink::new(
        accepted.client_id.clone(),
        myself.clone(),
        broker.config.broker.max_mailbox,
    ));
    // Registered before anyone can reach the actor by its link or id, so no message goes
    // uncounted; dropped (unregistered) if the start fails.
    probe::register::<ClientMsg>(myself.get_id(), link.clone());
    let registration = Registration(myself.get_id());
    let clean_start = connect.clean_start;
    let previous = broker.register(&link).await?;
    let mut guard = StartGuard {
        broker: broker.clone(),
        link: link.clone(),
        filters: Vec::new(),
        holds_session: false,
        armed: true,
    };

    let mut taken: Option<Box<SessionState>> = None;
    if let Some(old) = &previous {
        broker.metrics.takeovers.inc();
        let res = old
            .actor
            .ask(
                |reply| ClientMsg::TakeoverBegin { clean_start, reply },
                CALL_TIMEOUT,
            )
            .await;
        match res {
            Ok(CallResult::Success(s)) => taken = s,
            // The previous owner is gone (crashed, expired meanwhile) or stuck: its session is
            // lost and this one starts clean. Killing it runs its crash cleanup.
            _ => {
                tracing::warn!(client_id = %link.client_id, "previous session owner did not hand over");
                old.actor.kill();
            }
        }
    }
    // No session from a local owner: it may be on another node. Asked even for a clean start,
    // so that an old connection there is closed [MQTT-3.1.4-3].
    let mut moved = Vec::new();
    let mut from_peer = false;
    if taken.is_none() {
        if let Some((session, owed)) =
            crate::cluster::bridge::take_session(&broker, &link, clean_start).await
        {
            taken = Some(Box::new(session));
            moved = owed;
            from_peer = true;
        }
    }
    if let Some(session) = &taken {
        guard.holds_session = !from_peer;
        let subs = session
            .subscriptions
            .iter()
            .map(|(f, s)| (f.clone(), *s))
            .collect::<Vec<_>>();
        if !subs.is_empty() {
            guard.filters = subs.iter().map(|(f, _)| f.clone()).collect();
            broker.subscribe(&link, subs).await?;
        }
    }
    let mut buffered = Vec::new();
    if let Some(old) = &previous {
        let res = old
            .actor
            .ask(
                |reply| ClientMsg::TakeoverEnd {
                    successor: link.clone(),
                    reply,
                },
                CALL_TIMEOUT,
            )
            .await;
        if let Ok(CallResult::Success(b)) = res {
            buffered = b;
        }
    }
    buffered.splice(0..0, moved);
    // Nothing below can fail: the start stands.
    guard.armed = false;

    let session_present = taken.is_some();
    let session = taken
        .map(|b| *b)
        .unwrap_or_else(|| SessionState::new(accepted.session_expiry));
    if !session_present || from_peer {
        // A session from another node is new to this node's count.
        broker.metrics.sessions.inc();
    }
    let channel = Channel::new(*connect, &accepted, broker.limits.clone(), session);
    let high_watermark =
        usize::try_from(broker.config.broker.write_buffer_high_watermark.0).unwrap_or(usize::MAX);
    let mut state = ClientState {
        broker: broker.clone(),
        link,
        channel,
        conn: Some(conn),
        span,
        effects: Vec::new(),
        fanout: Fanout::default(),
        epoch: 0,
        timers: Vec::new(),
        pending_will: None,
        will_due: None,
        expiry_due: None,
        takeover: Takeover::None,
        drops: ClientDrops::default(),
        session_ended: false,
        routes_removed: false,
        sent_seen: 0,
        high_watermark,
        _registration: registration,
    };
    let now = Instant::now();
    state.refresh_budget();
    {
        let ClientState {
            broker,
            fanout,
            channel,
            effects,
            ..
        } = &mut state;
        let mut d = Dispatch { broker, fanout };
        channel.start(&accepted, session_present, now, &mut d, effects);
        for delivery in buffered {
            channel.deliver(delivery, now, &mut d, effects);
        }
    }
    state.count_drops();
    state.flush_out();
    broker.metrics.connections.inc();
    broker.metrics.connects.inc();
    tracing::info!(
        version = %state.channel.version(),
        clean_start,
        session_present,
        keep_alive = state.channel.keep_alive(),
        "client connected"
    );
    Ok(state)
}

/// The rest of the broker as the channel sees it: publishing through this actor's fanout
/// (flushed once per inbound batch), authorization, and the retained store.
struct Dispatch<'a> {
    broker: &'a Broker,
    fanout: &'a mut Fanout,
}

impl Dispatcher for Dispatch<'_> {
    fn authorize_publish(&mut self, topic: &str) -> bool {
        self.broker.authorize_publish(topic)
    }

    fn dispatch(&mut self, message: Arc<Message>) -> usize {
        self.broker.metrics.messages_received.inc();
        if self.broker.config.debug.fault_injection {
            fault_injection(self.broker, &message.topic);
        }
        self.broker.route(message, self.fanout)
    }

    fn retained_page(
        &mut self,
        filter: &str,
        after: Option<&str>,
        watermark: u64,
        limit: usize,
    ) -> Vec<Arc<Message>> {
        self.broker
            .retained
            .page(filter, after, watermark, limit, Instant::now())
    }
}

fn fault_injection(broker: &Broker, topic: &str) {
    if topic == FAULT_CLIENT_TOPIC {
        panic!("fault injection: client actor crashed on request");
    }
    if topic == FAULT_ROUTER_TOPIC {
        if let Some(router) = broker.routers().into_iter().flatten().next() {
            let _ = router.send(RouterMsg::Crash);
        }
    }
}

/// Removes `filters` of `link` from the route table in the background: for cleanup paths that
/// cannot await (`Drop`). Entries that another actor has since taken are left alone.
fn spawn_unsubscribe(broker: &Arc<Broker>, link: &ClientHandle, filters: Vec<ByteString>) {
    if filters.is_empty() {
        return;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let broker = broker.clone();
        let link = link.clone();
        rt.spawn(async move {
            if let Err(e) = broker.unsubscribe(&link, filters).await {
                tracing::error!(error = %e, "could not remove the subscriptions of a departed client");
            }
        });
    }
}

impl ClientState {
    fn info(&self) -> ClientInfo {
        let session = &self.channel.session;
        let mut subscriptions: Vec<_> = session
            .subscriptions
            .iter()
            .map(|(f, s)| {
                let o = &s.options;
                (
                    f.to_string(),
                    o.qos as u8,
                    o.no_local,
                    o.retain_as_published,
                    o.retain_handling as u8,
                    s.id,
                )
            })
            .collect();
        subscriptions.sort();
        ClientInfo {
            client_id: self.link.client_id.to_string(),
            peer: self.conn.as_ref().map(|c| c.peer.to_string()),
            version: self.channel.version().to_string(),
            keep_alive: self.channel.keep_alive(),
            session_expiry: session.expiry_interval,
            subscriptions,
            inflight: session.inflight().len(),
            pending: session.pending_len(),
            mailbox: self.link.queued(),
            drops: self.drops,
        }
    }

    async fn handle(&mut self, myself: ActorRef<ClientMsg>, msg: ClientMsg) {
        self.link.probe().handled();
        let msg_kind_changes_queue = !matches!(msg, ClientMsg::Inspect(_) | ClientMsg::Describe(_));
        self.handle_msg(myself, msg).await;
        if msg_kind_changes_queue {
            // The gauges `sessions top` sorts by, kept without asking every actor.
            let session = &self.channel.session;
            self.link
                .set_pending(session.pending_len(), session.pending_bytes());
        }
    }

    async fn handle_msg(&mut self, myself: ActorRef<ClientMsg>, msg: ClientMsg) {
        match msg {
            ClientMsg::Inbound { packets, error } => {
                if let Some(conn) = &self.conn {
                    conn.batch_handled();
                    self.on_inbound(&myself, packets, error).await;
                }
            }
            ClientMsg::Deliver(batch) => {
                self.link.handled(batch.len());
                self.on_deliver(batch);
            }
            ClientMsg::Writable => {
                self.refresh_budget();
                self.drain();
                self.flush_out();
            }
            ClientMsg::ConnectionLost(reason) => {
                if self.conn.is_some() {
                    match reason {
                        LostReason::KeepAliveTimeout => {
                            self.broker.metrics.keepalive_timeouts.inc();
                            tracing::info!("keep alive timeout");
                            self.channel
                                .write_disconnect(ReasonCode::KeepAliveTimeout, None);
                            self.flush_out();
                        }
                        LostReason::SendTimeout => {
                            self.broker.metrics.send_timeouts.inc();
                            tracing::info!("client stopped reading: send timeout");
                        }
                        LostReason::Closed => {}
                    }
                    Box::pin(self.connection_closed(&myself, true, "connection lost")).await;
                }
            }
            ClientMsg::TakeoverBegin { clean_start, reply } => {
                Box::pin(self.on_takeover_begin(&myself, clean_start, reply)).await;
            }
            ClientMsg::TakeoverEnd { successor, reply } => {
                match std::mem::replace(&mut self.takeover, Takeover::Discarded) {
                    Takeover::Handing { buffered, .. } => {
                        let _ = reply.send(buffered);
                        // The successor's routes replaced ours; whatever still reaches this
                        // mailbox was routed before that and goes on to it.
                        self.routes_removed = true;
                        self.takeover = Takeover::Forwarding { successor };
                    }
                    // A discarded session has nothing for the successor: what still arrives
                    // was for the old subscriptions.
                    _ => {
                        let _ = reply.send(Vec::new());
                    }
                }
                self.cancel_timers();
                if myself.drain().is_err() {
                    myself.stop(Some(NORMAL.into()));
                }
            }
            ClientMsg::Inspect(reply) => {
                let _ = reply.send(self.info());
            }
            ClientMsg::Describe(reply) => {
                let i = self.info();
                let _ = reply.send(vec![
                    ("client id".into(), i.client_id),
                    ("peer".into(), i.peer.unwrap_or_else(|| "offline".into())),
                    ("version".into(), i.version),
                    ("subscriptions".into(), i.subscriptions.len().to_string()),
                    ("in flight".into(), i.inflight.to_string()),
                    ("pending".into(), i.pending.to_string()),
                    (
                        "pending bytes".into(),
                        self.channel.session.pending_bytes().to_string(),
                    ),
                    ("deliveries in mailbox".into(), i.mailbox.to_string()),
                ]);
            }
            ClientMsg::HandoffEnd { reply } => {
                let buffered = match &mut self.takeover {
                    Takeover::Handing { buffered, .. } => std::mem::take(buffered),
                    _ => Vec::new(),
                };
                let _ = reply.send(buffered);
                // The session lives on another node now: nothing here may keep routing to
                // this actor or claim the client id.
                self.abandon_handoff();
                self.broker.unregister(&self.link);
                self.cancel_timers();
                myself.stop(Some(NORMAL.into()));
            }
            ClientMsg::Timer { epoch, kind } => {
                if epoch == self.epoch {
                    Box::pin(self.on_timer(&myself, kind)).await;
                }
            }
            ClientMsg::Kick {
                reason,
                end_session,
            } => {
                if self.conn.is_some() {
                    self.channel.write_disconnect(reason, None);
                    self.flush_out();
                    Box::pin(self.connection_closed(&myself, true, "kicked")).await;
                }
                if end_session && !self.session_ended {
                    Box::pin(self.end_session()).await;
                    myself.stop(Some(NORMAL.into()));
                }
            }
        }
    }

    async fn on_inbound(
        &mut self,
        myself: &ActorRef<ClientMsg>,
        packets: Vec<Packet>,
        error: Option<DecodeError>,
    ) {
        let now = Instant::now();
        self.refresh_budget();
        let tracing = self.broker.tracer.is_active();
        for packet in packets {
            if tracing {
                let id = &self.link.client_id;
                self.broker
                    .tracer
                    .packet(id, crate::trace::Dir::In, &packet);
            }
            // Where this packet's answers start: an internal failure must not send a SUBACK
            // for a subscription that is not in place.
            let mark = self.channel.out.len();
            let res = {
                let mut d = Dispatch {
                    broker: &self.broker,
                    fanout: &mut self.fanout,
                };
                self.channel.handle(packet, now, &mut d, &mut self.effects)
            };
            if let Err(v) = res {
                Box::pin(self.violation(myself, v)).await;
                return;
            }
            if !self.effects.is_empty() {
                self.fanout.flush(&self.broker);
                Box::pin(self.run_effects(myself, now, mark)).await;
                if self.conn.is_none() {
                    return;
                }
            }
        }
        self.fanout.flush(&self.broker);
        if let Some(e) = error {
            // A decode error whose reason is Protocol Error (duplicate property, packet id 0,
            // ...) is counted once, as a protocol error, by `violation`.
            if e.reason_code() != ReasonCode::ProtocolError {
                self.broker.metrics.malformed_packets.inc();
            }
            let v = Violation {
                reason: e.reason_code(),
                detail: e.label(),
            };
            tracing::info!(error = %e, "undecodable packet");
            Box::pin(self.violation(myself, v)).await;
            return;
        }
        self.flush_out();
    }

    /// A rule was broken: DISCONNECT with the reason for v5 [MQTT-4.13.1-1], then close. The
    /// will is published: this is not a normal disconnection.
    async fn violation(&mut self, myself: &ActorRef<ClientMsg>, v: Violation) {
        self.fanout.flush(&self.broker);
        if v.reason == ReasonCode::ProtocolError {
            self.broker.metrics.protocol_errors.inc();
        }
        tracing::info!(reason = %v.reason, detail = v.detail, "closing connection");
        self.channel.write_disconnect(v.reason, Some(v.detail));
        self.flush_out();
        self.connection_closed(myself, true, "protocol violation")
            .await;
    }

    async fn run_effects(&mut self, myself: &ActorRef<ClientMsg>, now: Instant, mark: usize) {
        let mut effects = std::mem::take(&mut self.effects);
        let mut i = 0;
        while i < effects.len() {
            match &effects[i] {
                Effect::Subscribe { .. } => {
                    let mut subs = Vec::new();
                    while let Some(Effect::Subscribe {
                        filter,
                        subscription,
                    }) = effects.get(i)
                    {
                        subs.push((filter.clone(), *subscription));
                        i += 1;
                    }
                    if let Err(e) = self.broker.subscribe(&self.link, subs).await {
                        self.internal_failure(myself, e.to_string(), mark).await;
                        return;
                    }
                    continue;
                }
                Effect::Unsubscribe { .. } => {
                    let mut filters = Vec::new();
                    while let Some(Effect::Unsubscribe { filter }) = effects.get(i) {
                        filters.push(filter.clone());
                        i += 1;
                    }
                    if let Err(e) = self.broker.unsubscribe(&self.link, filters).await {
                        self.internal_failure(myself, e.to_string(), mark).await;
                        return;
                    }
                    continue;
                }
                Effect::SendRetained {
                    filter,
                    subscription,
                } => {
                    // Read the watermark now that the route is in place: what was stored before
                    // comes from the store, what comes after arrives live.
                    let watermark = self.broker.retained.watermark();
                    let inner = topic::split_shared(filter).map_or(&**filter, |s| s.filter);
                    let inner = filter.slice_ref(inner);
                    let mut more = Vec::new();
                    let mut d = Dispatch {
                        broker: &self.broker,
                        fanout: &mut self.fanout,
                    };
                    self.channel.push_retained(
                        inner,
                        *subscription,
                        watermark,
                        now,
                        &mut d,
                        &mut more,
                    );
                    effects.extend(more);
                }
                Effect::Dropped(reason) => self.count_drop(*reason),
                Effect::ClientDisconnect {
                    publish_will,
                    reason,
                } => {
                    tracing::info!(reason = %reason, "client disconnected");
                    let publish_will = *publish_will;
                    self.connection_closed(myself, publish_will, "client disconnect")
                        .await;
                }
            }
            i += 1;
        }
        effects.clear();
        // Keep the allocation for the next packet.
        if self.effects.is_empty() {
            self.effects = effects;
        }
    }

    async fn internal_failure(&mut self, myself: &ActorRef<ClientMsg>, error: String, mark: usize) {
        tracing::error!(%error, "subscription change failed; closing the connection");
        self.channel.out.truncate(mark);
        self.channel
            .write_disconnect(ReasonCode::ImplementationSpecificError, None);
        self.flush_out();
        self.connection_closed(myself, true, "internal failure")
            .await;
    }

    fn on_deliver(&mut self, batch: Vec<Delivery>) {
        match &mut self.takeover {
            Takeover::Handing { buffered, .. } => {
                buffered.extend(batch);
                return;
            }
            Takeover::Forwarding { successor } => {
                let successor = successor.clone();
                self.broker.deliver_to(&successor, batch);
                return;
            }
            Takeover::Discarded | Takeover::None => {}
        }
        if self.session_ended {
            // Routed here before this session's routes were removed: shared-subscription
            // messages still go to another member [MQTT-4.8.2 in 5.0]; the rest was this
            // session's and ended with it.
            self.broker.redeliver_shared(batch, &self.link);
            return;
        }
        let now = Instant::now();
        self.refresh_budget();
        if self.broker.tracer.is_active() {
            for d in &batch {
                let m = &d.message;
                let qos = d.qos as u8;
                let id = &self.link.client_id;
                self.broker
                    .tracer
                    .delivery(id, &m.topic, qos, m.payload.len());
            }
        }
        {
            let mut d = Dispatch {
                broker: &self.broker,
                fanout: &mut self.fanout,
            };
            for delivery in batch {
                self.channel
                    .deliver(delivery, now, &mut d, &mut self.effects);
            }
        }
        self.count_drops();
        self.flush_out();
    }

    /// The connection ended (by either side). Publishes or schedules the will, then ends the
    /// session or waits for its expiry.
    async fn connection_closed(
        &mut self,
        myself: &ActorRef<ClientMsg>,
        publish_will: bool,
        why: &'static str,
    ) {
        let Some(conn) = self.conn.take() else { return };
        conn.close();
        self.channel.disconnected();
        self.link.set_online(false);
        self.broker.metrics.connections.dec();
        self.cancel_timers();
        let will = self.channel.take_will();
        let expiry = self.channel.session.expiry_interval;
        tracing::debug!(why, expiry, "connection closed");
        if let Some(will) = will.filter(|_| publish_will) {
            let delay = if self.channel.version().is_v5() {
                will.properties.will_delay_interval.unwrap_or(0)
            } else {
                0
            };
            if delay == 0 || expiry == 0 {
                self.publish_will(will);
            } else {
                self.pending_will = Some(will);
                self.will_due = Some(Instant::now() + secs(delay.min(expiry)));
                self.schedule(myself, TimerKind::WillDelay, secs(delay.min(expiry)));
            }
        }
        match expiry {
            0 => {
                self.end_session().await;
                myself.stop(Some(NORMAL.into()));
            }
            u32::MAX => {}
            s => {
                self.expiry_due = Some(Instant::now() + secs(s));
                self.schedule(myself, TimerKind::SessionExpiry, secs(s));
            }
        }
    }

    async fn on_takeover_begin(
        &mut self,
        myself: &ActorRef<ClientMsg>,
        clean_start: bool,
        reply: RpcReplyPort<Option<Box<SessionState>>>,
    ) {
        if self.session_ended {
            // The session went to another owner already (another node took it and this actor
            // has not stopped yet) or ended: there is nothing to hand over, and handing over
            // the empty remains would pass for a present session.
            let _ = reply.send(None);
            return;
        }
        if self.conn.is_some() {
            // [MQTT-3.1.4-3] the existing connection is closed; v5 is told why.
            self.channel
                .write_disconnect(ReasonCode::SessionTakenOver, None);
            self.flush_out();
            if let Some(conn) = self.conn.take() {
                conn.close();
            }
            self.channel.disconnected();
            self.link.set_online(false);
            self.broker.metrics.connections.dec();
            // The connection was closed by the server, not by DISCONNECT, so the will stands.
            // With the session continuing, a delayed will is cancelled by the new connection
            // [MQTT-3.1.3-9]; an immediate one goes now.
            if let Some(will) = self.channel.take_will() {
                let delayed = self.channel.version().is_v5()
                    && will.properties.will_delay_interval.unwrap_or(0) > 0;
                if clean_start || !delayed {
                    self.publish_will(will);
                }
            }
        }
        self.cancel_timers();
        if let Some(will) = self.pending_will.take() {
            // A will waiting for its delay: the session ends now (clean start) and the will
            // goes, or the session continues and the will is cancelled [MQTT-3.1.3-9].
            if clean_start {
                self.publish_will(will);
            }
        }
        // Safety net: if the newcomer never finishes, do not linger (or hold routes) forever.
        self.schedule(myself, TimerKind::TakeoverTimeout, CALL_TIMEOUT * 3);
        if clean_start {
            // The newcomer starts a new session; this one ends here.
            let _ = reply.send(None);
            self.end_session().await;
            self.takeover = Takeover::Discarded;
        } else {
            let filters = self.channel.session.subscriptions.keys().cloned().collect();
            let session = std::mem::take(&mut self.channel.session);
            let _ = reply.send(Some(Box::new(session)));
            // The session now belongs to the newcomer: its accounting is no longer ours.
            self.session_ended = true;
            self.takeover = Takeover::Handing {
                buffered: Vec::new(),
                filters,
            };
        }
    }

    async fn on_timer(&mut self, myself: &ActorRef<ClientMsg>, kind: TimerKind) {
        let now = Instant::now();
        let due = match kind {
            TimerKind::WillDelay => self.will_due,
            TimerKind::SessionExpiry => self.expiry_due,
            TimerKind::TakeoverTimeout => None,
        };
        if let Some(due) = due.filter(|&due| due > now) {
            // A long wait is slept in steps of MAX_TIMER.
            self.schedule(myself, kind, due - now);
            return;
        }
        match kind {
            TimerKind::WillDelay => {
                if let Some(will) = self.pending_will.take() {
                    self.publish_will(will);
                }
            }
            TimerKind::SessionExpiry => {
                if self.conn.is_none() {
                    self.broker.metrics.sessions_expired.inc();
                    tracing::info!("session expired");
                    self.end_session().await;
                    myself.stop(Some(NORMAL.into()));
                }
            }
            TimerKind::TakeoverTimeout => {
                tracing::warn!("takeover never completed; stopping");
                self.abandon_handoff();
                myself.stop(Some(NORMAL.into()));
            }
        }
    }

    /// The newcomer never finished taking the session: it is lost. Routes still pointing here
    /// are removed (entries the newcomer made are left alone), shared-subscription messages held
    /// for it go to other members.
    fn abandon_handoff(&mut self) {
        if let Takeover::Handing { buffered, filters } =
            std::mem::replace(&mut self.takeover, Takeover::None)
        {
            self.broker.metrics.sessions.dec();
            self.broker.redeliver_shared(buffered, &self.link);
            spawn_unsubscribe(&self.broker, &self.link, filters);
            self.routes_removed = true;
        }
    }

    fn schedule(&mut self, myself: &ActorRef<ClientMsg>, kind: TimerKind, after: Duration) {
        let epoch = self.epoch;
        let handle = myself.counted_after(after.min(MAX_TIMER), move || ClientMsg::Timer {
            epoch,
            kind,
        });
        self.timers.push(handle);
    }

    /// Ends the current epoch: timers set so far no longer fire (their tasks, which hold a
    /// reference to this actor, are gone at once rather than when they would have fired).
    fn cancel_timers(&mut self) {
        self.epoch += 1;
        for t in self.timers.drain(..) {
            t.abort();
        }
    }

    fn publish_will(&mut self, will: LastWill) {
        if !self.broker.authorize_publish(&will.topic) {
            return;
        }
        let message = Message::from_will(will, self.link.client_id.clone(), Instant::now());
        tracing::debug!(topic = %message.topic, "publishing will");
        self.broker.metrics.wills_published.inc();
        self.broker.publish(Arc::new(message));
    }

    /// What ending a session owes the rest of the broker, on a normal end and after a crash
    /// alike: the will (pending or not yet due) goes out, shared-subscription messages it held
    /// go to other members, the client id is released, and the session is no longer counted.
    fn release_session(&mut self) {
        if let Some(will) = self
            .pending_will
            .take()
            .or_else(|| self.channel.take_will())
        {
            self.publish_will(will);
        }
        let undelivered = self.channel.session.take_undelivered();
        if !undelivered.is_empty() {
            self.broker.redeliver_shared(undelivered, &self.link);
        }
        self.broker.unregister(&self.link);
        self.broker.metrics.sessions.dec();
    }

    /// Ends the session: the pending will goes out, shared-subscription messages it still held
    /// go to other members, the client id is released, and the subscriptions leave the route
    /// table. Idempotent. Everything that cannot wait is done before the one await, so a kill
    /// during it leaves only the route removal to `Drop`.
    async fn end_session(&mut self) {
        if self.session_ended {
            return;
        }
        self.session_ended = true;
        self.cancel_timers();
        if let Some(conn) = self.conn.take() {
            conn.close();
            self.broker.metrics.connections.dec();
        }
        self.link.set_online(false);
        self.release_session();
        if !self.routes_removed {
            let filters: Vec<ByteString> =
                self.channel.session.subscriptions.keys().cloned().collect();
            if !filters.is_empty() {
                if let Err(e) = self.broker.unsubscribe(&self.link, filters).await {
                    tracing::error!(error = %e, "could not remove subscriptions of an ended session");
                }
            }
            self.routes_removed = true;
        }
    }

    fn refresh_budget(&mut self) {
        let pending = self.conn.as_ref().map_or(0, |c| c.pending());
        self.channel
            .set_write_budget(self.high_watermark.saturating_sub(pending));
    }

    /// Lets the channel send what waits, as far as window and budget allow.
    fn drain(&mut self) {
        {
            let mut d = Dispatch {
                broker: &self.broker,
                fanout: &mut self.fanout,
            };
            self.channel
                .drain(Instant::now(), &mut d, &mut self.effects);
        }
        self.count_drops();
    }

    /// Moves encoded packets to the socket task and adjusts the write budget. While the socket
    /// keeps up and messages wait, it goes on sending them: the budget measured before a batch
    /// may have been used up while the socket task wrote, and nothing else would wake the queue
    /// of a client that sends no acknowledgements (QoS 0).
    fn flush_out(&mut self) {
        loop {
            let sent = self.channel.sent_publishes();
            self.broker.metrics.messages_sent.add(sent - self.sent_seen);
            self.sent_seen = sent;
            let Some(conn) = &self.conn else {
                self.channel.out.clear();
                return;
            };
            let pending = conn.push(&mut self.channel.out, &self.broker.metrics.bytes_sent);
            let budget = self.high_watermark.saturating_sub(pending);
            self.channel.set_write_budget(budget);
            if budget == 0 {
                conn.want_writable();
                return;
            }
            if !self.channel.has_backlog() {
                return;
            }
            self.drain();
            if self.channel.out.is_empty() {
                // Nothing could go: the window is full; acknowledgements will drain it.
                return;
            }
        }
    }

    /// Counts the drops the channel reported (delivering and draining report nothing else).
    fn count_drops(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        for e in effects.drain(..) {
            if let Effect::Dropped(r) = e {
                self.count_drop(r);
            }
        }
        self.effects = effects;
    }

    fn count_drop(&mut self, reason: DropReason) {
        self.broker.metrics.dropped.count(reason);
        match reason {
            DropReason::QueueFull => self.drops.queue_full += 1,
            DropReason::Expired => self.drops.expired += 1,
            DropReason::TooLarge => self.drops.too_large += 1,
            DropReason::Qos0NotQueued => self.drops.qos0_not_queued += 1,
        }
        tracing::trace!(reason = reason.label(), "message dropped");
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

impl Drop for ClientState {
    /// The crash path: a panic or a kill skipped the orderly cleanup. Disconnect the client,
    /// publish the will (the connection ended abnormally), and free what the session held in
    /// shared tables. Everything here is synchronous or spawned: `Drop` cannot await.
    fn drop(&mut self) {
        for t in self.timers.drain(..) {
            t.abort();
        }
        self.link.set_online(false);
        if let Some(conn) = self.conn.take() {
            conn.abort();
            self.broker.metrics.connections.dec();
        }
        self.abandon_handoff();
        if !self.session_ended {
            self.session_ended = true;
            self.broker.metrics.client_crashes.inc();
            tracing::error!(client_id = %self.link.client_id, "client actor crashed; cleaning up");
            self.release_session();
        }
        if !self.routes_removed {
            self.routes_removed = true;
            let filters = self.channel.session.subscriptions.keys().cloned().collect();
            spawn_unsubscribe(&self.broker, &self.link, filters);
        }
    }
}
