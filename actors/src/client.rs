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

use std::sync::Arc;
use std::time::{Duration, Instant};

use beamq_protocol::session::{
    Accepted, Channel, Delivery, Dispatcher, Effect, Message, SessionState, Violation,
};
use beamq_protocol::{ByteString, Connect, DecodeError, LastWill, Packet, ReasonCode, topic};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;

use crate::broker::{Broker, CALL_TIMEOUT, FAULT_CLIENT_TOPIC, FAULT_ROUTER_TOPIC, Fanout};
use crate::connection::Conn;
use crate::link::{ClientHandle, ClientLink};
use crate::router::RouterMsg;

/// Stop reason of a client actor whose session ended the way the protocol says (disconnect,
/// expiry, takeover, kick): a normal exit for the supervisor, which only warns about others.
const NORMAL: &str = "normal";

/// Why the socket task reports the connection gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The peer closed the socket, or reading/writing failed.
    Closed,
    /// Nothing arrived within 1.5 × keep alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
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
    /// The newcomer's subscriptions are in place: hand over what arrived meanwhile, then stop.
    TakeoverEnd {
        /// Gets the deliveries that arrived after `TakeoverBegin`.
        reply: RpcReplyPort<Vec<Delivery>>,
    },
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

/// State of a client actor.
pub struct ClientState {
    broker: Arc<Broker>,
    link: ClientHandle,
    channel: Channel,
    conn: Option<Arc<Conn>>,
    span: tracing::Span,
    effects: Vec<Effect>,
    fanout: Fanout,
    epoch: u64,
    pending_will: Option<LastWill>,
    /// `Some` between TakeoverBegin and TakeoverEnd.
    handoff: Option<Vec<Delivery>>,
    drops: ClientDrops,
    /// True once the session's cleanup ran (or the session moved to another actor).
    finished: bool,
    sent_seen: u64,
    high_watermark: usize,
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
        start(myself, args).instrument(span).await
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
        state.end_session().instrument(span).await;
        Ok(())
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
    let clean_start = connect.clean_start;
    let previous = broker.register(&link).await?;

    let mut taken: Option<Box<SessionState>> = None;
    if let Some(old) = &previous {
        broker.metrics.takeovers.inc();
        let res = old
            .actor
            .call(
                |reply| ClientMsg::TakeoverBegin { clean_start, reply },
                Some(CALL_TIMEOUT),
            )
            .await;
        match res {
            Ok(CallResult::Success(s)) => taken = s,
            // The previous owner is gone (crashed, expired meanwhile) or stuck: its session is
            // lost and this one starts clean.
            _ => {
                tracing::warn!(client_id = %link.client_id, "previous session owner did not hand over");
                old.actor.kill();
            }
        }
    }
    if let Some(session) = &taken {
        let subs = session
            .subscriptions
            .iter()
            .map(|(f, s)| (f.clone(), *s))
            .collect::<Vec<_>>();
        if !subs.is_empty() {
            broker.subscribe(&link, subs).await?;
        }
    }
    let mut buffered = Vec::new();
    if let Some(old) = &previous {
        if let Ok(CallResult::Success(b)) = old
            .actor
            .call(|reply| ClientMsg::TakeoverEnd { reply }, Some(CALL_TIMEOUT))
            .await
        {
            buffered = b;
        }
    }

    let session_present = taken.is_some();
    let session = taken
        .map(|b| *b)
        .unwrap_or_else(|| SessionState::new(accepted.session_expiry));
    if !session_present {
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
        pending_will: None,
        handoff: None,
        drops: ClientDrops::default(),
        finished: false,
        sent_seen: 0,
        high_watermark,
    };
    let now = Instant::now();
    state.refresh_budget();
    state
        .channel
        .start(&accepted, session_present, now, &mut state.effects);
    for d in buffered {
        state.channel.deliver(d, now, &mut state.effects);
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

/// The publish path as seen from the channel: route through the broker into this actor's
/// fanout, which is flushed once per inbound batch.
struct Dispatch<'a> {
    broker: &'a Broker,
    fanout: &'a mut Fanout,
}

impl Dispatcher for Dispatch<'_> {
    fn authorize_publish(&mut self, topic: &str) -> bool {
        // `$SYS` is the broker's own namespace: clients read it, they do not write it (a
        // retained client PUBLISH there would impersonate the broker's statistics).
        let allowed = !(topic == "$SYS" || topic.starts_with("$SYS/"));
        if !allowed {
            self.broker.metrics.publishes_denied.inc();
            tracing::info!(topic, "PUBLISH to $SYS refused");
        }
        allowed
    }

    fn dispatch(&mut self, message: Arc<Message>) -> usize {
        self.broker.metrics.messages_received.inc();
        if self.broker.config.debug.fault_injection {
            fault_injection(self.broker, &message.topic);
        }
        self.broker.route(message, self.fanout)
    }
}

fn fault_injection(broker: &Broker, topic: &str) {
    if topic == FAULT_CLIENT_TOPIC {
        panic!("fault injection: client actor crashed on request");
    }
    if topic == FAULT_ROUTER_TOPIC {
        if let Some(router) = broker.routers().into_iter().flatten().next() {
            let _ = router.cast(RouterMsg::Crash);
        }
    }
}

impl ClientState {
    async fn handle(&mut self, myself: ActorRef<ClientMsg>, msg: ClientMsg) {
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
                self.channel.drain(Instant::now(), &mut self.effects);
                self.count_drops();
                self.flush_out();
            }
            ClientMsg::ConnectionLost(reason) => {
                if self.conn.is_some() {
                    if reason == LostReason::KeepAliveTimeout {
                        self.broker.metrics.keepalive_timeouts.inc();
                        tracing::info!("keep alive timeout");
                        self.channel
                            .write_disconnect(ReasonCode::KeepAliveTimeout, None);
                        self.flush_out();
                    }
                    self.connection_closed(&myself, true, "connection lost")
                        .await;
                }
            }
            ClientMsg::TakeoverBegin { clean_start, reply } => {
                self.on_takeover_begin(&myself, clean_start, reply).await;
            }
            ClientMsg::TakeoverEnd { reply } => {
                // By now the session has moved (or was discarded and cleaned up).
                let _ = reply.send(self.handoff.take().unwrap_or_default());
                myself.stop(Some(NORMAL.into()));
            }
            ClientMsg::Timer { epoch, kind } => {
                if epoch == self.epoch {
                    self.on_timer(&myself, kind).await;
                }
            }
            ClientMsg::Kick {
                reason,
                end_session,
            } => {
                if self.conn.is_some() {
                    self.channel.write_disconnect(reason, None);
                    self.flush_out();
                    self.connection_closed(&myself, true, "kicked").await;
                }
                if end_session && !self.finished {
                    self.end_session().await;
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
        for packet in packets {
            let mut dispatch = Dispatch {
                broker: &self.broker,
                fanout: &mut self.fanout,
            };
            let res = self
                .channel
                .handle(packet, now, &mut dispatch, &mut self.effects);
            if let Err(v) = res {
                self.violation(myself, v).await;
                return;
            }
            if !self.effects.is_empty() {
                self.fanout.flush(&self.broker.metrics);
                self.run_effects(myself, now).await;
                if self.conn.is_none() {
                    return;
                }
            }
        }
        self.fanout.flush(&self.broker.metrics);
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
            self.violation(myself, v).await;
            return;
        }
        self.flush_out();
    }

    /// A rule was broken: DISCONNECT with the reason for v5 [MQTT-4.13.1-1], then close. The
    /// will is published: this is not a normal disconnection.
    async fn violation(&mut self, myself: &ActorRef<ClientMsg>, v: Violation) {
        self.fanout.flush(&self.broker.metrics);
        if v.reason == ReasonCode::ProtocolError {
            self.broker.metrics.protocol_errors.inc();
        }
        tracing::info!(reason = %v.reason, detail = v.detail, "closing connection");
        self.channel.write_disconnect(v.reason, Some(v.detail));
        self.flush_out();
        self.connection_closed(myself, true, "protocol violation")
            .await;
    }

    async fn run_effects(&mut self, myself: &ActorRef<ClientMsg>, now: Instant) {
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
                        self.internal_failure(myself, e.to_string()).await;
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
                        self.internal_failure(myself, e.to_string()).await;
                        return;
                    }
                    continue;
                }
                Effect::SendRetained {
                    filter,
                    subscription,
                } => {
                    let inner = topic::split_shared(filter).map_or(&**filter, |s| s.filter);
                    let found = self.broker.retained.matching(inner, now);
                    let deliveries = found.into_iter().map(|message| Delivery {
                        qos: message.qos.min(subscription.options.qos),
                        // [MQTT-3.3.1-8] retained messages sent for a new subscription carry
                        // RETAIN 1.
                        retain: true,
                        subscription_ids: subscription.id.into_iter().collect(),
                        share: None,
                        message,
                    });
                    let mut more = Vec::new();
                    self.channel.push_retained(deliveries, now, &mut more);
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

    async fn internal_failure(&mut self, myself: &ActorRef<ClientMsg>, error: String) {
        tracing::error!(%error, "subscription change failed; closing the connection");
        self.channel
            .write_disconnect(ReasonCode::ImplementationSpecificError, None);
        self.flush_out();
        self.connection_closed(myself, true, "internal failure")
            .await;
    }

    fn on_deliver(&mut self, batch: Vec<Delivery>) {
        if let Some(buffer) = &mut self.handoff {
            buffer.extend(batch);
            return;
        }
        if self.finished {
            return;
        }
        let now = Instant::now();
        self.refresh_budget();
        for d in batch {
            self.channel.deliver(d, now, &mut self.effects);
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
        self.epoch += 1;
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
                self.schedule(myself, TimerKind::WillDelay, delay.min(expiry));
            }
        }
        match expiry {
            0 => {
                self.end_session().await;
                myself.stop(Some(NORMAL.into()));
            }
            u32::MAX => {}
            secs => self.schedule(myself, TimerKind::SessionExpiry, secs),
        }
    }

    async fn on_takeover_begin(
        &mut self,
        myself: &ActorRef<ClientMsg>,
        clean_start: bool,
        reply: RpcReplyPort<Option<Box<SessionState>>>,
    ) {
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
        self.epoch += 1;
        if let Some(will) = self.pending_will.take() {
            // A will waiting for its delay: the session ends now (clean start) and the will
            // goes, or the session continues and the will is cancelled [MQTT-3.1.3-9].
            if clean_start {
                self.publish_will(will);
            }
        }
        // Safety net: if the newcomer dies before TakeoverEnd, do not linger forever.
        self.schedule(
            myself,
            TimerKind::TakeoverTimeout,
            (CALL_TIMEOUT.as_secs() * 3) as u32,
        );
        if clean_start {
            // The newcomer starts a new session; this one ends here, and what still arrives
            // for it is dropped.
            let _ = reply.send(None);
            self.end_session().await;
        } else {
            let session = std::mem::take(&mut self.channel.session);
            let _ = reply.send(Some(Box::new(session)));
            self.handoff = Some(Vec::new());
            // The session now belongs to the newcomer: nothing of it is ours to clean up.
            self.finished = true;
        }
    }

    async fn on_timer(&mut self, myself: &ActorRef<ClientMsg>, kind: TimerKind) {
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
                if self.handoff.is_some() {
                    tracing::warn!("takeover never completed; stopping");
                    self.end_session().await;
                    myself.stop(Some(NORMAL.into()));
                }
            }
        }
    }

    fn schedule(&self, myself: &ActorRef<ClientMsg>, kind: TimerKind, secs: u32) {
        // tokio timers reach about two years; a longer wait is re-armed by nobody and simply
        // means "practically never".
        let secs = u64::from(secs).min(365 * 24 * 3600);
        let epoch = self.epoch;
        myself.send_after(Duration::from_secs(secs), move || ClientMsg::Timer {
            epoch,
            kind,
        });
    }

    fn publish_will(&mut self, will: LastWill) {
        let message = Message::from_will(will, self.link.client_id.clone(), Instant::now());
        tracing::debug!(topic = %message.topic, "publishing will");
        self.broker.metrics.wills_published.inc();
        self.broker.publish(Arc::new(message));
    }

    /// Ends the session: the pending will goes out, subscriptions leave the route table,
    /// shared-subscription messages it still held go to other members, and the client id is
    /// released. Idempotent.
    async fn end_session(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(conn) = self.conn.take() {
            conn.close();
            self.broker.metrics.connections.dec();
        }
        if let Some(will) = self
            .pending_will
            .take()
            .or_else(|| self.channel.take_will())
        {
            self.publish_will(will);
        }
        let filters: Vec<ByteString> = self.channel.session.subscriptions.keys().cloned().collect();
        if !filters.is_empty() {
            if let Err(e) = self.broker.unsubscribe(&self.link, filters).await {
                tracing::error!(error = %e, "could not remove subscriptions of an ended session");
            }
        }
        let undelivered = self.channel.session.take_undelivered();
        if !undelivered.is_empty() {
            self.broker.redeliver_shared(undelivered, &self.link);
        }
        self.broker.unregister(&self.link);
        self.broker.metrics.sessions.dec();
    }

    fn refresh_budget(&mut self) {
        let pending = self.conn.as_ref().map_or(0, |c| c.pending());
        self.channel
            .set_write_budget(self.high_watermark.saturating_sub(pending));
    }

    /// Moves encoded packets to the socket task and adjusts the write budget.
    fn flush_out(&mut self) {
        let sent = self.channel.sent_publishes();
        self.broker.metrics.messages_sent.add(sent - self.sent_seen);
        self.sent_seen = sent;
        let Some(conn) = &self.conn else {
            self.channel.out.clear();
            return;
        };
        let pending = conn.push(&mut self.channel.out);
        let budget = self.high_watermark.saturating_sub(pending);
        self.channel.set_write_budget(budget);
        if budget == 0 {
            conn.want_writable();
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

    fn count_drop(&mut self, reason: beamq_protocol::session::DropReason) {
        use beamq_protocol::session::DropReason;
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

impl Drop for ClientState {
    /// The crash path: a panic skipped the orderly cleanup. Disconnect the client, publish the
    /// will (the connection ended abnormally), and free what the session held in shared
    /// tables. Everything here is synchronous or spawned: `Drop` cannot await.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.broker.metrics.client_crashes.inc();
        tracing::error!(client_id = %self.link.client_id, "client actor crashed; cleaning up");
        if let Some(conn) = self.conn.take() {
            conn.abort();
            self.broker.metrics.connections.dec();
        }
        if let Some(will) = self
            .pending_will
            .take()
            .or_else(|| self.channel.take_will())
        {
            let message = Message::from_will(will, self.link.client_id.clone(), Instant::now());
            self.broker.metrics.wills_published.inc();
            self.broker.publish(Arc::new(message));
        }
        let undelivered = self.channel.session.take_undelivered();
        if !undelivered.is_empty() {
            self.broker.redeliver_shared(undelivered, &self.link);
        }
        self.broker.unregister(&self.link);
        self.broker.metrics.sessions.dec();
        let filters: Vec<ByteString> = self.channel.session.subscriptions.keys().cloned().collect();
        if !filters.is_empty() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let broker = self.broker.clone();
                let link = self.link.clone();
                rt.spawn(async move {
                    if let Err(e) = broker.unsubscribe(&link, filters).await {
                        tracing::error!(error = %e, "could not remove subscriptions of a crashed client");
                    }
                });
            }
        }
    }
}
