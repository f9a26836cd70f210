//! The socket side of a client: one tokio task per connection, not an actor.
//!
//! DESIGN §4 step 1: the task owns the socket, reads and decodes frames in batches and hands
//! each batch to the client actor in one message; it writes what the actor encoded, many packets
//! per write. Keeping I/O out of the actor means a handler never blocks on a socket: a slow
//! reader fills a write buffer whose size the actor sees (and stops adding to), and the actor
//! can always be told to stop.
//!
//! Before the actor exists the task reads CONNECT under the connect timeout and decides on it,
//! so a socket that never says CONNECT, or is refused, costs no actor.
//!
//! Back-pressure: at most [`MAX_BATCHES_IN_FLIGHT`] decoded batches wait in the actor's mailbox;
//! beyond that the task stops reading, and TCP pushes back on the client.
//!
//! Direct writes: on plain TCP the actor writes encoded bytes to the socket itself when nothing
//! waits in the task's buffer (a non-blocking `try_write`, never a wait); only what the socket
//! does not take at once goes through the task. That saves a task wake-up per delivery, which
//! at low rates is most of the latency (a wake-up often moves the work to the other worker).
//! Order is kept because the actor writes directly only when no byte of its is still pending.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use beamq_protocol::codec;
use beamq_protocol::session::{self, Accepted, Refused};
use beamq_protocol::{BytesMut, Connect, DecodeError, Packet, ProtocolVersion, ReasonCode};
use beamq_supervisors::probe::Held;
use parking_lot::Mutex;
use ractor::Actor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use crate::broker::Broker;
use crate::client::{ClientActor, ClientArgs, ClientMsg, LostReason};
use crate::metrics::Counter;

/// Decoded batches that may wait in a client's mailbox before the task stops reading.
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// Most packets handed over in one batch.
const MAX_BATCH: usize = 256;
/// Read buffer bounds: small while idle (memory per connection), larger under load.
const READ_BUF_MIN: usize = 512;
const READ_BUF_MAX: usize = 64 * 1024;

const OPEN: u8 = 0;
const CLOSE_AFTER_FLUSH: u8 = 1;
const ABORT: u8 = 2;

/// A byte stream a client connects over. Transports that can be written from any thread
/// without waiting (plain TCP) offer a direct writer to the client actor.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The read side once the connection is established.
    type Reader: ReadBytes + AsyncRead + Unpin + Send;
    /// The write side once the connection is established.
    type Writer: AsyncWrite + Unpin + Send;
    /// The socket the actor may `try_write` to directly, if this transport has one.
    fn direct_writer(&self) -> Option<Arc<TcpStream>>;
    /// Splits into halves the socket task can read and write at once.
    fn into_split(self) -> (Self::Reader, Self::Writer);
}

/// Reading into a `BytesMut`'s spare capacity. The generic `AsyncReadExt::read_buf` hands the
/// stream a fresh uninitialised `ReadBuf` each call, which a safe `poll_read` has to zero first
/// (up to the 64 KB read buffer per read); TCP reads straight into the spare capacity instead.
pub trait ReadBytes {
    /// Reads at least one byte into `buf`'s spare capacity (0: end of stream). Cancel-safe.
    fn read_bytes(
        &mut self,
        buf: &mut BytesMut,
    ) -> impl std::future::Future<Output = io::Result<usize>> + Send;
}

/// A TCP stream shared between its socket task (reads, queued writes) and its client actor
/// (direct writes). Everything goes through `&TcpStream` (readiness + `try_*`), which tokio
/// allows from several tasks at once.
#[derive(Debug, Clone)]
pub struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream) -> SharedTcp {
        SharedTcp(Arc::new(stream))
    }
}

impl Transport for SharedTcp {
    type Reader = SharedTcp;
    type Writer = SharedTcp;

    fn direct_writer(&self) -> Option<Arc<TcpStream>> {
        Some(self.0.clone())
    }

    fn into_split(self) -> (SharedTcp, SharedTcp) {
        (self.clone(), self)
    }
}

impl ReadBytes for SharedTcp {
    async fn read_bytes(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.0.readable().await?;
            match self.0.try_read_buf(buf) {
                // Stale readiness: try_read_buf cleared it; wait for the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Used before the connection is established and while closing, with small buffers;
        // the established connection reads through `ReadBytes`, which does not zero.
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match self.0.try_read(unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale (another reader, or a spurious event); try_read cleared
                // it, so the next poll registers for the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// The actor's side of the write path, behind one lock: bytes for the socket task, and the
/// socket while direct writes are allowed.
#[derive(Debug)]
struct Out {
    buf: BytesMut,
    direct: Option<Arc<TcpStream>>,
    /// When the actor last wrote directly.
    last_direct: Option<Instant>,
}

/// Least time between two direct writes. Under load, writing from the actor would cost a
/// syscall per actor message and the actor (a single subscriber's, say) is the serial part:
/// fan-out and fan-in throughput halved when every push was written directly. Through the
/// socket task, pushes that pile up while it waits for its turn go out in one write. At low
/// rates, where the saved wake-up is most of the latency, pushes are further apart than this.
const DIRECT_WRITE_GAP: Duration = Duration::from_micros(500);

/// What the client actor and the socket task share.
#[derive(Debug)]
pub struct Conn {
    /// Peer address.
    pub peer: SocketAddr,
    out: Mutex<Out>,
    pending: AtomicUsize,
    notify: Notify,
    state: AtomicU8,
    batches: AtomicUsize,
    want_writable: AtomicBool,
    low_watermark: usize,
    hard_limit: usize,
}

impl Conn {
    fn new(peer: SocketAddr, high_watermark: usize, direct: Option<Arc<TcpStream>>) -> Conn {
        Conn {
            peer,
            out: Mutex::new(Out {
                buf: BytesMut::new(),
                direct,
                last_direct: None,
            }),
            pending: AtomicUsize::new(0),
            notify: Notify::new(),
            state: AtomicU8::new(OPEN),
            batches: AtomicUsize::new(0),
            want_writable: AtomicBool::new(false),
            low_watermark: high_watermark / 2,
            hard_limit: high_watermark.saturating_mul(2),
        }
    }

    /// Writes encoded bytes (taking them out of `data`): straight to the socket when the
    /// transport allows it and nothing of ours waits to be written, the rest through the
    /// socket task. Counts directly written bytes in `sent`; returns the bytes now waiting.
    pub fn push(&self, data: &mut BytesMut, sent: &Counter) -> usize {
        if data.is_empty() {
            return self.pending();
        }
        let n = {
            let mut out = self.out.lock();
            // pending == 0 means the task holds none of our bytes (it subtracts only after
            // writing them), so writing now cannot overtake anything.
            let direct = out.direct.is_some()
                && out.buf.is_empty()
                && self.pending() == 0
                && self.state.load(Ordering::Acquire) == OPEN
                && out
                    .last_direct
                    .is_none_or(|at| at.elapsed() >= DIRECT_WRITE_GAP);
            if direct {
                out.last_direct = Some(Instant::now());
            }
            // An error is left for the socket task to meet on its next write or read.
            if let Some(tcp) = out.direct.as_ref().filter(|_| direct)
                && let Ok(n) = tcp.try_write(data)
            {
                sent.add(n as u64);
                if n == data.len() {
                    // Keeps the buffer's capacity for the next batch.
                    data.clear();
                    return 0;
                }
                let _ = data.split_to(n);
            }
            let n = data.len();
            if out.buf.is_empty() {
                // Swap instead of copying: the common case is one batch at a time.
                std::mem::swap(&mut out.buf, data);
            } else {
                out.buf.extend_from_slice(data);
                data.clear();
            }
            n
        };
        let pending = self.pending.fetch_add(n, Ordering::AcqRel) + n;
        self.notify.notify_one();
        pending
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Asks for a `Writable` message once the backlog has halved. The socket task checks the
    /// request on every turn of its loop, so a request made after its last write is not lost.
    pub fn want_writable(&self) {
        self.want_writable.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Closes the connection after writing what is queued (bounded by the flush timeout).
    pub fn close(&self) {
        let _ = self.state.compare_exchange(
            OPEN,
            CLOSE_AFTER_FLUSH,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.notify.notify_one();
    }

    /// Closes the connection at once, dropping anything unwritten.
    pub fn abort(&self) {
        self.state.store(ABORT, Ordering::Release);
        self.notify.notify_one();
    }

    /// True once the actor asked for the connection to close.
    pub fn is_closing(&self) -> bool {
        self.state.load(Ordering::Acquire) != OPEN
    }

    /// Called by the actor for each inbound batch it took from its mailbox.
    pub fn batch_handled(&self) {
        if self.batches.fetch_sub(1, Ordering::AcqRel) == MAX_BATCHES_IN_FLIGHT {
            self.notify.notify_one();
        }
    }
}

/// Serves one accepted socket until it closes.
pub async fn serve<S: Transport>(stream: S, peer: SocketAddr, broker: Arc<Broker>) {
    let span = tracing::info_span!("conn", %peer, client_id = tracing::field::Empty);
    serve_inner(stream, peer, broker, span.clone())
        .instrument(span)
        .await;
}

async fn serve_inner<S: Transport>(
    mut stream: S,
    peer: SocketAddr,
    broker: Arc<Broker>,
    span: tracing::Span,
) {
    let max_packet = broker.limits.max_packet_size;
    let connect_timeout = broker
        .config
        .mqtt
        .connect_timeout
        .get()
        .unwrap_or(Duration::from_secs(15));
    let mut rbuf = BytesMut::with_capacity(READ_BUF_MIN);

    // ---- CONNECT ----
    let first = tokio::time::timeout(
        connect_timeout,
        read_connect(&mut stream, &mut rbuf, max_packet, &broker),
    )
    .await;
    let connect = match first {
        Err(_) => {
            broker.metrics.connect_timeouts.inc();
            tracing::debug!("no CONNECT within the connect timeout");
            return;
        }
        Ok(Err(e)) => {
            refuse_undecodable(&mut stream, &e, &broker).await;
            Box::pin(close_gracefully(stream)).await;
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(connect))) => connect,
    };
    let version = connect.protocol;

    let decision = if broker.is_shutting_down() {
        Err(Refused {
            reason: ReasonCode::ServerUnavailable,
            send_connack: true,
        })
    } else if broker.metrics.connections.get() as usize >= broker.config.mqtt.max_clients
        || (broker.metrics.sessions.get() as usize >= broker.config.mqtt.max_sessions
            && (connect.client_id.is_empty() || broker.sessions.get(&connect.client_id).is_none()))
    {
        broker.metrics.connections_over_limit.inc();
        Err(Refused {
            reason: ReasonCode::QuotaExceeded,
            send_connack: true,
        })
    } else {
        session::connect::accept(&connect, &broker.limits, || broker.assign_client_id())
    };
    let accepted = match decision {
        Ok(a) => a,
        Err(refused) => {
            broker.metrics.connects_refused.inc();
            tracing::info!(reason = %refused.reason, "CONNECT refused");
            if refused.send_connack {
                let mut out = BytesMut::new();
                let _ = codec::encode(&Packet::Connack(refused.to_connack()), version, &mut out);
                let _ = stream.write_all(&out).await;
            }
            Box::pin(close_gracefully(stream)).await;
            return;
        }
    };
    span.record("client_id", tracing::field::display(&accepted.client_id));

    let high_watermark =
        usize::try_from(broker.config.broker.write_buffer_high_watermark.0).unwrap_or(usize::MAX);
    let conn = Arc::new(Conn::new(peer, high_watermark, stream.direct_writer()));
    let _direct = DirectGuard(&conn);
    let keep_alive = accepted.keep_alive;
    let Some(actor) = Box::pin(start_client(
        &broker,
        connect,
        accepted,
        conn.clone(),
        span.clone(),
    ))
    .await
    else {
        // The actor could not start (registry down, or a bug): say so to the client.
        let mut out = BytesMut::new();
        let connack = Refused {
            reason: ReasonCode::ServerUnavailable,
            send_connack: true,
        }
        .to_connack();
        let _ = codec::encode(&Packet::Connack(connack), version, &mut out);
        let _ = stream.write_all(&out).await;
        Box::pin(close_gracefully(stream)).await;
        return;
    };

    let mut guard = LostGuard {
        actor: actor.clone(),
        reason: Some(LostReason::Closed),
    };
    let reason = pump(stream, rbuf, &conn, &actor, &broker, version, keep_alive).await;
    guard.reason = reason;
}

/// Tells the actor that the socket is gone, however the task ends (even by panic), unless the
/// actor itself closed it.
struct LostGuard {
    actor: Held<ClientMsg>,
    reason: Option<LostReason>,
}

impl Drop for LostGuard {
    fn drop(&mut self) {
        if let Some(reason) = self.reason.take() {
            let _ = self.actor.send(ClientMsg::ConnectionLost(reason));
        }
    }
}

async fn read_connect<S>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max_packet: u32,
    broker: &Broker,
) -> Result<Option<Box<Connect>>, DecodeError>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(c) = codec::decode_connect(rbuf, max_packet)? {
            return Ok(Some(Box::new(c)));
        }
        if rbuf.capacity() - rbuf.len() < READ_BUF_MIN {
            rbuf.reserve(rbuf.capacity().max(READ_BUF_MIN));
        }
        match stream.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => broker.metrics.bytes_received.add(n as u64),
        }
    }
}

/// Answers a first packet that could not be decoded: an unsupported protocol level gets
/// CONNACK return code 1 / 0x84 [MQTT-3.1.2-2]; anything else is closed without CONNACK
/// [MQTT-3.1.4-1].
async fn refuse_undecodable<S>(stream: &mut S, e: &DecodeError, broker: &Broker)
where
    S: AsyncWrite + Unpin,
{
    broker.metrics.connects_refused.inc();
    match e {
        DecodeError::UnsupportedProtocolLevel(level) => {
            tracing::info!(level, "unsupported protocol level");
            // The client's version is unknown; the 3.1.1 layout (4 bytes, return code 1) is
            // what 3.x clients expect and what v5 clients read as 0x84's older twin.
            let out: &[u8] = if *level >= 5 {
                &[0x20, 0x03, 0x00, 0x84, 0x00]
            } else {
                &[0x20, 0x02, 0x00, 0x01]
            };
            let _ = stream.write_all(out).await;
        }
        other => {
            // Counted like the same error after CONNECT: once, by its kind.
            if other.reason_code() == ReasonCode::ProtocolError {
                broker.metrics.protocol_errors.inc();
            } else {
                broker.metrics.malformed_packets.inc();
            }
            tracing::info!(error = %other, "bad CONNECT, closing without CONNACK");
        }
    }
}

async fn start_client(
    broker: &Arc<Broker>,
    connect: Box<Connect>,
    accepted: Accepted,
    conn: Arc<Conn>,
    span: tracing::Span,
) -> Option<Held<ClientMsg>> {
    let sup = broker.session_sup()?;
    let args = ClientArgs {
        broker: broker.clone(),
        connect,
        accepted,
        conn,
        span,
    };
    match Actor::spawn_linked(None, ClientActor, args, sup).await {
        // Its probe is registered by now (in pre_start): held for every batch to come.
        Ok((actor, _)) => Some(Held::new(actor)),
        Err(e) => {
            tracing::error!(error = %e, "client actor failed to start");
            None
        }
    }
}

/// The read/write loop. Returns the reason to report to the actor, or `None` when the actor
/// closed the connection itself.
async fn pump<S: Transport>(
    stream: S,
    mut rbuf: BytesMut,
    conn: &Conn,
    actor: &Held<ClientMsg>,
    broker: &Broker,
    version: ProtocolVersion,
    keep_alive: u16,
) -> Option<LostReason> {
    let (mut rd, mut wr) = stream.into_split();
    let max_packet = broker.limits.max_packet_size;
    // [MQTT-3.1.2-24] one and a half times the keep alive.
    let idle_limit = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
    let mut deadline = idle_limit.map(|d| Instant::now() + d);
    let mut wbuf = BytesMut::new();
    let mut reading = true;
    let flush_timeout = broker
        .config
        .broker
        .close_flush_timeout
        .get()
        .unwrap_or(Duration::from_secs(5));
    let mut close_by: Option<Instant> = None;
    // Frames that arrived in the same read as the CONNECT are handed over at once: nothing
    // else would wake the loop for them if the client now waits for an answer (or closes).
    let mut more_frames = !rbuf.is_empty();
    let send_timeout = broker
        .config
        .broker
        .send_timeout
        .get()
        .unwrap_or(Duration::from_secs(15));
    // When the socket last accepted bytes (or bytes started waiting): a client that accepts
    // none for `send_timeout` is gone or not reading, and is disconnected.
    let mut write_progress = Instant::now();
    // Reading stopped for back-pressure (not the client's doing): keep alive restarts after.
    let mut held_back = false;

    // Anything the actor wrote while starting (CONNACK, resent messages).
    take_output(conn, &mut wbuf);

    loop {
        match conn.state.load(Ordering::Acquire) {
            ABORT => return None,
            CLOSE_AFTER_FLUSH => {
                reading = false;
                take_output(conn, &mut wbuf);
                let deadline = *close_by.get_or_insert_with(|| Instant::now() + flush_timeout);
                if wbuf.is_empty() {
                    Box::pin(linger(&mut rd, &mut wr, deadline)).await;
                    return None;
                }
            }
            _ => {}
        }
        if wbuf.is_empty() {
            take_output(conn, &mut wbuf);
            write_progress = Instant::now();
        }
        // The actor asked for a wake-up once the backlog is low; it may already be (the write
        // that brought it down happened before the request).
        if conn.pending() <= conn.low_watermark && conn.want_writable.swap(false, Ordering::AcqRel)
        {
            let _ = actor.send(ClientMsg::Writable);
        }
        // Stop reading while the actor is behind (batches in its mailbox) or while our answers
        // pile up unread: a client that sends without reading cannot grow either without bound.
        let can_read = reading
            && conn.batches.load(Ordering::Acquire) < MAX_BATCHES_IN_FLIGHT
            && conn.pending() < conn.hard_limit;
        if reading && !can_read {
            held_back = true;
        } else if can_read && held_back {
            // Packets may have waited in the socket meanwhile: that is not the client's idleness.
            held_back = false;
            deadline = idle_limit.map(|d| Instant::now() + d);
        }
        if can_read && more_frames {
            // The last batch stopped at MAX_BATCH with frames left over: hand them over
            // before reading more.
            more_frames = false;
            if !hand_over(
                &mut rbuf,
                conn,
                actor,
                version,
                max_packet,
                &mut reading,
                &mut more_frames,
            ) {
                return None;
            }
            deadline = idle_limit.map(|d| Instant::now() + d);
            continue;
        }
        if can_read && rbuf.capacity() - rbuf.len() < READ_BUF_MIN {
            let grow = rbuf.capacity().clamp(READ_BUF_MIN, READ_BUF_MAX);
            rbuf.reserve(grow);
        }

        tokio::select! {
            biased;
            _ = conn.notify.notified() => {}
            res = wr.write(&wbuf), if !wbuf.is_empty() => match res {
                Ok(0) | Err(_) => return Some(LostReason::Closed),
                Ok(n) => {
                    let _ = wbuf.split_to(n);
                    write_progress = Instant::now();
                    broker.metrics.bytes_sent.add(n as u64);
                    conn.pending.fetch_sub(n, Ordering::AcqRel);
                }
            },
            res = rd.read_bytes(&mut rbuf), if can_read => match res {
                Ok(0) | Err(_) => return Some(LostReason::Closed),
                Ok(n) => {
                    broker.metrics.bytes_received.add(n as u64);
                    let before = rbuf.len();
                    if !hand_over(&mut rbuf, conn, actor, version, max_packet, &mut reading, &mut more_frames) {
                        return None;
                    }
                    if rbuf.len() != before {
                        // At least one whole packet arrived [MQTT-3.1.2-24].
                        deadline = idle_limit.map(|d| Instant::now() + d);
                    }
                    if rbuf.is_empty() && rbuf.capacity() > 4 * READ_BUF_MIN {
                        // Give the memory back once a burst is over.
                        rbuf = BytesMut::with_capacity(READ_BUF_MIN);
                    }
                }
            },
            _ = tokio::time::sleep_until(write_progress + send_timeout), if !wbuf.is_empty() && close_by.is_none() => {
                return Some(LostReason::SendTimeout);
            }
            _ = sleep_until_opt(deadline), if deadline.is_some() && can_read => {
                // Stop reading but keep writing: the actor answers with DISCONNECT 0x8D (v5)
                // and closes the connection itself.
                if actor.send(ClientMsg::ConnectionLost(LostReason::KeepAliveTimeout)).is_err() {
                    return None;
                }
                reading = false;
                deadline = None;
                close_by = Some(Instant::now() + flush_timeout);
            }
            _ = sleep_until_opt(close_by), if close_by.is_some() => return None,
        }
    }
}

/// [`linger`] on a whole stream, with a short deadline: used when refusing a connection.
async fn close_gracefully<S>(stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    linger(&mut rd, &mut wr, Instant::now() + Duration::from_secs(2)).await;
}

/// Closes gracefully: half-close our side, then read and discard until the client closes its
/// side or the deadline passes. Closing a socket with unread input makes the kernel send RST,
/// which can destroy our last packets (the DISCONNECT with its reason code) before the client
/// reads them, and makes a client that is still writing (PUBRELs, say) fail with a broken pipe.
async fn linger<R, W>(rd: &mut R, wr: &mut W, deadline: Instant)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout_at(deadline, wr.shutdown()).await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout_at(deadline, async {
        loop {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

fn take_output(conn: &Conn, wbuf: &mut BytesMut) {
    let mut out = conn.out.lock();
    if out.buf.is_empty() {
        return;
    }
    if wbuf.is_empty() {
        std::mem::swap(wbuf, &mut out.buf);
    } else {
        wbuf.extend_from_slice(&out.buf);
        out.buf.clear();
    }
}

/// Ends direct writes when the socket task ends, however it ends: the actor may outlive the
/// socket, which must close now, not when the actor drops its `Conn`.
struct DirectGuard<'a>(&'a Conn);

impl Drop for DirectGuard<'_> {
    fn drop(&mut self) {
        self.0.out.lock().direct = None;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Decodes the complete frames in `rbuf` (up to [`MAX_BATCH`]) and sends them to the actor as
/// one message. Sets `more` when frames were left for the next batch and clears `reading` after
/// a decode error (the stream cannot be trusted past a bad frame). False when the actor is gone.
fn hand_over(
    rbuf: &mut BytesMut,
    conn: &Conn,
    actor: &Held<ClientMsg>,
    version: ProtocolVersion,
    max_packet: u32,
    reading: &mut bool,
    more: &mut bool,
) -> bool {
    let mut packets = Vec::new();
    let mut error = None;
    loop {
        if packets.len() == MAX_BATCH {
            *more = true;
            break;
        }
        match codec::decode(rbuf, version, max_packet) {
            Ok(Some(p)) => packets.push(p),
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                *reading = false;
                break;
            }
        }
    }
    if packets.is_empty() && error.is_none() {
        return true;
    }
    conn.batches.fetch_add(1, Ordering::AcqRel);
    actor.send(ClientMsg::Inbound { packets, error }).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (SharedTcp, TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        (SharedTcp::new(server), client, peer)
    }

    async fn read_exact(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        buf
    }

    #[tokio::test]
    async fn writes_directly_only_when_nothing_waits_and_the_connection_is_open() {
        let (tcp, mut client, peer) = pair().await;
        let conn = Conn::new(peer, 1024, tcp.direct_writer());
        let sent = Counter::default();

        // Nothing pending: straight to the socket, the buffer kept for reuse.
        let mut data = BytesMut::from(&b"hello"[..]);
        assert_eq!(conn.push(&mut data, &sent), 0);
        assert!(data.is_empty());
        assert_eq!(sent.get(), 5);
        assert_eq!(read_exact(&mut client, 5).await, b"hello");

        // Right after a direct write the next push goes through the task, where pushes that
        // come fast coalesce into one write.
        let mut data = BytesMut::from(&b"again"[..]);
        assert_eq!(conn.push(&mut data, &sent), 5);
        assert_eq!(sent.get(), 5);
        let mut wbuf = BytesMut::new();
        take_output(&conn, &mut wbuf);
        assert_eq!(&wbuf[..], b"again");
        conn.pending.store(0, Ordering::Release);
        tokio::time::sleep(DIRECT_WRITE_GAP * 2).await;

        // Bytes of ours wait in the socket task: later ones queue behind them, never overtake.
        conn.pending.store(3, Ordering::Release);
        let mut data = BytesMut::from(&b"world"[..]);
        assert_eq!(conn.push(&mut data, &sent), 8);
        assert_eq!(sent.get(), 5);
        let mut wbuf = BytesMut::new();
        take_output(&conn, &mut wbuf);
        assert_eq!(&wbuf[..], b"world");

        // Nothing waits and the gap has passed: direct again.
        conn.pending.store(0, Ordering::Release);
        let mut data = BytesMut::from(&b"later"[..]);
        assert_eq!(conn.push(&mut data, &sent), 0);
        assert_eq!(sent.get(), 10);
        assert_eq!(read_exact(&mut client, 5).await, b"later");
        tokio::time::sleep(DIRECT_WRITE_GAP * 2).await;

        // Closing: everything goes through the task, which flushes and then closes.
        conn.pending.store(0, Ordering::Release);
        conn.close();
        let mut data = BytesMut::from(&b"bye"[..]);
        assert_eq!(conn.push(&mut data, &sent), 3);
        assert_eq!(sent.get(), 10);
    }

    #[tokio::test]
    async fn the_socket_closes_when_its_task_ends_although_the_actor_keeps_its_conn() {
        let (tcp, mut client, peer) = pair().await;
        let conn = Conn::new(peer, 1024, tcp.direct_writer());
        {
            let _guard = DirectGuard(&conn);
            drop(tcp);
        }
        // The guard dropped the last handle to the socket: the client sees end of stream,
        // and what the actor pushes now waits for a task that is gone instead of being written.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(n, 0);
        let sent = Counter::default();
        let mut data = BytesMut::from(&b"late"[..]);
        assert_eq!(conn.push(&mut data, &sent), 4);
        assert_eq!(sent.get(), 0);
    }

    #[tokio::test]
    async fn shared_tcp_reads_writes_and_half_closes() {
        let (mut tcp, mut client, _) = pair().await;
        tcp.write_all(b"ping").await.expect("write");
        assert_eq!(read_exact(&mut client, 4).await, b"ping");
        client.write_all(b"pong").await.expect("write");
        let mut buf = [0u8; 4];
        tcp.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"pong");
        // The established connection's read path: into spare capacity, appended.
        let (mut rd, mut wr) = tcp.into_split();
        client.write_all(b"more").await.expect("write");
        let mut bytes = BytesMut::from(&b"x"[..]);
        bytes.reserve(64);
        while bytes.len() < 5 {
            let n = rd.read_bytes(&mut bytes).await.expect("read");
            assert!(n > 0);
        }
        assert_eq!(&bytes[..], b"xmore");
        wr.shutdown().await.expect("shutdown");
        let mut rest = [0u8; 1];
        assert_eq!(client.read(&mut rest).await.expect("read"), 0);
    }
}
