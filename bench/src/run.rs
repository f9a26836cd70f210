//! Running a load: publishers and subscribers (traffic), or connections held idle (conn).
//!
//! Every client is a tokio task on its own socket. Publishers write many messages per write (a
//! batch of `--batch`, or what the rate allows by now); subscribers read up to 64 KiB at a time
//! and answer every QoS 1 message of a read with one write of PUBACKs. A run has fixed phases,
//! each bounded in time: connect, warm-up (not measured), the measured window, a drain that
//! waits for messages still on their way (for at most `--drain`), then disconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use beamq_protocol::{BytesMut, QoS};
use bytes::Buf;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::net::{self, Client, Target};
use crate::stats::{self, Counters, Latency, ProcSample, Snapshot};
use crate::wire::{self, Frame, PublishTemplate};

/// How messages are published.
#[derive(Debug, Clone)]
pub struct Load {
    /// QoS of publishes and subscriptions (0 or 1).
    pub qos: QoS,
    /// Payload bytes (at least 12: the timestamp and publisher index).
    pub size: usize,
    /// Messages per second per publisher; 0 = as fast as the broker takes them.
    pub rate: f64,
    /// QoS 1 messages a publisher keeps unacknowledged.
    pub inflight: usize,
    /// Most messages per write.
    pub batch: usize,
    /// Messages per publisher not yet received by every subscriber (0 = no limit).
    pub window: u64,
}

/// One publisher.
#[derive(Debug, Clone)]
pub struct PubSpec {
    /// Client identifier.
    pub client_id: String,
    /// Topic it publishes to.
    pub topic: String,
    /// Indices of the subscribers that receive its messages (empty: not known here, no
    /// end-to-end window).
    pub receivers: Vec<usize>,
}

/// One subscriber.
#[derive(Debug, Clone)]
pub struct SubSpec {
    /// Client identifier.
    pub client_id: String,
    /// Filter it subscribes to.
    pub filter: String,
}

/// A traffic run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Subscribers, connected and subscribed first.
    pub subs: Vec<SubSpec>,
    /// Publishers.
    pub pubs: Vec<PubSpec>,
    /// How they publish.
    pub load: Load,
    /// Subscribers that receive each message, when the plan knows (for the loss check).
    pub fanout: Option<u64>,
}

/// Phase lengths.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Unmeasured time after connecting.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Most time to wait for messages still on their way after publishing stops.
    pub drain: Duration,
}

/// What a run shares between its tasks and the progress line.
#[derive(Debug)]
pub struct Shared {
    /// Counters.
    pub counters: Counters,
    /// True during the measured window (latency is recorded only then).
    pub measuring: AtomicBool,
    /// True once the run is stopping: lost connections are then expected.
    pub stopping: AtomicBool,
    /// Broker process to sample, if given.
    pub broker_pid: Option<u32>,
    /// Print a progress line every second.
    pub progress: bool,
    /// Deliveries per publisher, for the end-to-end window (empty without one).
    pub tracks: Vec<Track>,
}

/// What subscribers received from one publisher.
#[derive(Debug, Default)]
pub struct Track {
    /// Messages received, by subscriber index.
    pub delivered: Vec<AtomicU64>,
    /// Woken when `delivered` grows.
    pub notify: Notify,
}

impl Track {
    /// A track for a run with `subscribers` subscribers.
    pub fn new(subscribers: usize) -> Self {
        Track {
            delivered: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
            notify: Notify::new(),
        }
    }
}

/// What a traffic run measured.
#[derive(Debug, Clone)]
pub struct TrafficResult {
    /// Counters at the end.
    pub totals: Snapshot,
    /// Counters at the start and end of the measured window.
    pub window: (Snapshot, Snapshot),
    /// Length of the window as it happened.
    pub window_len: Duration,
    /// Publish-to-receive latency during the window.
    pub latency: Latency,
    /// Own CPU time during the window.
    pub own_cpu: Duration,
    /// Broker samples at the start and end of the window, and after the drain.
    pub broker: Option<(ProcSample, ProcSample)>,
    /// Messages subscribers should have received (QoS 1 and a known fan-out): acknowledged
    /// publishes times the fan-out.
    pub expected: Option<u64>,
}

/// Runs publishers and subscribers per `plan`.
pub async fn traffic(
    target: &Target,
    plan: &Plan,
    timing: Timing,
    shared: &Arc<Shared>,
) -> Result<TrafficResult, String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let qos = plan.load.qos;

    // Subscribers first, all subscribed before anyone publishes.
    let subs = connect_all(target, shared, &plan.subs, 0, |s| {
        (s.client_id.clone(), Some((s.filter.clone(), qos)))
    })
    .await?;
    let pubs = connect_all(target, shared, &plan.pubs, plan.subs.len(), |p| {
        (p.client_id.clone(), None)
    })
    .await?;

    let start = Instant::now();
    let window_start = start + timing.warmup;
    let window_end = window_start + timing.duration;
    let mut sub_tasks = Vec::new();
    for (index, client) in subs.into_iter().enumerate() {
        let shared = shared.clone();
        let stop = stop_rx.clone();
        let v5 = target.version.is_v5();
        let ka = target.keep_alive;
        sub_tasks.push(tokio::spawn(subscriber(
            client, index, v5, ka, shared, stop,
        )));
    }
    let finished = Arc::new(Semaphore::new(0));
    let mut pub_tasks = Vec::new();
    for (index, (client, spec)) in pubs.into_iter().zip(&plan.pubs).enumerate() {
        let template = PublishTemplate::new(&spec.topic, qos, target.version, plan.load.size);
        let window = (plan.load.window > 0 && !spec.receivers.is_empty()).then(|| Window {
            size: plan.load.window,
            receivers: spec.receivers.clone(),
            index,
        });
        let task = publisher(
            client,
            template,
            window,
            plan.load.clone(),
            target.clone(),
            window_end,
            timing.drain,
            shared.clone(),
            stop_rx.clone(),
            finished.clone(),
        );
        pub_tasks.push(tokio::spawn(task));
    }

    let mut ticker = Progress::new(shared, start);
    ticker.until(window_start).await;
    let snap0 = shared.counters.snapshot();
    let cpu0 = stats::own_cpu();
    let broker0 = shared.broker_pid.and_then(stats::proc_sample);
    shared.measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    ticker.until(window_end).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window_len = measured_from.elapsed();
    let snap1 = shared.counters.snapshot();
    let cpu1 = stats::own_cpu();
    let broker1 = shared.broker_pid.and_then(stats::proc_sample);

    // Publishers stop by themselves at the window's end and say so once their last
    // acknowledgements are in (or the drain time passed); they keep their connections open
    // until the stop signal, so the broker sees no disconnection while subscribers drain.
    let _ = tokio::time::timeout(
        timing.drain + Duration::from_secs(1),
        finished.acquire_many(plan.pubs.len() as u32),
    )
    .await;
    let acked = shared.counters.snapshot().acked;
    let expected = (qos == QoS::AtLeastOnce)
        .then_some(plan.fanout)
        .flatten()
        .map(|f| acked * f);
    drain(shared, expected, timing.drain).await;

    shared.stopping.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for t in pub_tasks {
        let _ = t.await;
    }
    let mut hist = stats::histogram();
    for t in sub_tasks {
        if let Ok(h) = t.await {
            let _ = hist.add(&h);
        }
    }
    Ok(TrafficResult {
        totals: shared.counters.snapshot(),
        window: (snap0, snap1),
        window_len,
        latency: Latency::of(&hist),
        own_cpu: cpu1.saturating_sub(cpu0),
        broker: broker0.zip(broker1),
        expected,
    })
}

/// Waits until subscribers have everything expected, or nothing arrived for half a second,
/// or `limit` passed.
async fn drain(shared: &Shared, expected: Option<u64>, limit: Duration) {
    let end = Instant::now() + limit;
    let mut last = shared.counters.snapshot().received;
    let mut quiet_since = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = shared.counters.snapshot().received;
        if expected.is_some_and(|e| now >= e) {
            return;
        }
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if expected.is_none() && quiet_since.elapsed() >= Duration::from_millis(500) {
            return;
        }
    }
}

/// Connects every client of `specs` concurrently; fails the run if any cannot connect (the
/// figures of a scenario with missing clients would mean something else).
async fn connect_all<T>(
    target: &Target,
    shared: &Shared,
    specs: &[T],
    first_index: usize,
    what: impl Fn(&T) -> (String, Option<(String, QoS)>),
) -> Result<Vec<Client>, String> {
    let mut tasks = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let (id, sub) = what(spec);
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let sub = sub.as_ref().map(|(f, q)| (f.as_str(), *q));
            net::connect(&target, first_index + i, &id, sub)
                .await
                .map_err(|e| format!("client {id}: {e}"))
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => {
                Counters::add(&shared.counters.connected, 1);
                clients.push(c);
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("connect task failed: {e}")),
        }
    }
    Ok(clients)
}

async fn subscriber(
    client: Client,
    index: usize,
    v5: bool,
    keep_alive: u16,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Histogram<u64> {
    let Client {
        mut stream,
        mut rbuf,
        ..
    } = client;
    let mut hist = stats::histogram();
    let mut wbuf = BytesMut::new();
    let mut ping = Pinger::new(keep_alive);
    let mut from: Vec<u64> = vec![0; shared.tracks.len()];
    rbuf.reserve(64 * 1024);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            res = stream.read_buf(&mut rbuf) => match res {
                Ok(0) | Err(_) => {
                    lost(&shared);
                    return hist;
                }
                Ok(_) => {}
            },
            _ = ping.due() => ping.ping(&mut wbuf),
        }
        let now = wire::now_ns();
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let mut received = 0;
        let scanned = wire::scan(&rbuf, v5, |frame| {
            if let Frame::Publish {
                qos,
                packet_id,
                stamp,
            } = frame
            {
                received += 1;
                if qos > 0 {
                    wire::puback(&mut wbuf, packet_id);
                }
                if let Some((sent, publisher)) = stamp {
                    if measuring {
                        let _ = hist.record(now.saturating_sub(sent).max(1));
                    }
                    if let Some(n) = from.get_mut(publisher as usize) {
                        *n += 1;
                    }
                }
            }
        });
        let Ok(pos) = scanned else {
            lost(&shared);
            return hist;
        };
        rbuf.advance(pos);
        Counters::add(&shared.counters.received, received);
        for (track, n) in shared.tracks.iter().zip(&mut from) {
            if *n > 0 {
                if let Some(d) = track.delivered.get(index) {
                    d.fetch_add(*n, Ordering::Relaxed);
                }
                track.notify.notify_one();
                *n = 0;
            }
        }
        if !wbuf.is_empty() {
            if stream.write_all(&wbuf).await.is_err() {
                lost(&shared);
                return hist;
            }
            wbuf.clear();
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(64 * 1024);
        }
    }
    say_goodbye(&mut stream).await;
    hist
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    client: Client,
    template: PublishTemplate,
    e2e: Option<Window>,
    load: Load,
    target: Target,
    deadline: Instant,
    ack_wait: Duration,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    finished: Arc<Semaphore>,
) {
    let qos1 = load.qos == QoS::AtLeastOnce;
    let window = load
        .inflight
        .clamp(1, usize::from(client.receive_maximum.unwrap_or(u16::MAX)));
    let window_sem = Arc::new(Semaphore::new(window));
    let (rd, mut wr) = client.stream.into_split();
    let reader = tokio::spawn(publisher_reader(
        rd,
        client.rbuf,
        target.version.is_v5(),
        window_sem.clone(),
        shared.clone(),
        stop,
    ));
    let batch = load.batch.max(1);
    let mut wbuf = BytesMut::with_capacity(batch * template.frame_len());
    let start = Instant::now();
    let mut sent: u64 = 0;
    // Messages the window gave up waiting for (dropped by the broker, or very late).
    let mut written_off: u64 = 0;
    let mut packet_id: u16 = 0;
    let index = e2e.as_ref().map_or(0, |w| w.index as u32);
    let mut ping = Pinger::new(target.keep_alive);
    while Instant::now() < deadline {
        let mut n = batch;
        if load.rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * load.rate) as u64;
            if due <= sent {
                let next = start + Duration::from_secs_f64((sent + 1) as f64 / load.rate);
                tokio::time::sleep_until(next.min(deadline)).await;
                continue;
            }
            n = n.min((due - sent) as usize);
        }
        if let Some(w) = &e2e {
            match w.room(&shared, sent, &mut written_off, deadline).await {
                Some(room) => n = n.min(room),
                None => break,
            }
        }
        if qos1 {
            let got = tokio::time::timeout_at(deadline, window_sem.acquire()).await;
            match got {
                Ok(Ok(permit)) => permit.forget(),
                _ => break,
            }
            let more = window_sem.available_permits().min(n - 1);
            if more > 0
                && let Ok(p) = window_sem.try_acquire_many(more as u32)
            {
                p.forget();
            }
            n = 1 + more;
        }
        let ts = wire::now_ns();
        for _ in 0..n {
            packet_id = packet_id.checked_add(1).unwrap_or(1);
            template.write(&mut wbuf, packet_id, ts, index);
        }
        if ping.is_due() {
            ping.ping(&mut wbuf);
        }
        // A broker that stops reading must not hold the run past its end.
        match tokio::time::timeout_at(deadline + ack_wait, wr.write_all(&wbuf)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                lost(&shared);
                break;
            }
            Err(_) => break,
        }
        wbuf.clear();
        sent += n as u64;
        Counters::add(&shared.counters.published, n as u64);
    }
    if written_off > 0 {
        Counters::add(&shared.counters.window_stalls, written_off);
    }
    if qos1 {
        // Wait for the acknowledgements still due (the window refills as they come).
        let _ = tokio::time::timeout(ack_wait, window_sem.acquire_many(window as u32)).await;
    }
    finished.add_permits(1);
    // The reader ends with the run's stop signal; the write half stays open until then.
    let _ = reader.await;
    wbuf.clear();
    wire::disconnect(&mut wbuf);
    let _ = wr.write_all(&wbuf).await;
}

/// A publisher's end-to-end window.
#[derive(Debug)]
struct Window {
    size: u64,
    /// The subscribers that receive this publisher's messages: the slowest one counts.
    receivers: Vec<usize>,
    index: usize,
}

/// How long a publisher waits for its window to open before it writes the missing messages
/// off (a broker that drops QoS 0 messages would otherwise stop the run).
const WINDOW_STALL: Duration = Duration::from_millis(500);

impl Window {
    /// Messages the publisher may send now, waiting until there is room; `None` at the
    /// deadline.
    async fn room(
        &self,
        shared: &Shared,
        sent: u64,
        written_off: &mut u64,
        deadline: Instant,
    ) -> Option<usize> {
        let track = shared.tracks.get(self.index)?;
        loop {
            let notified = track.notify.notified();
            let delivered = self
                .receivers
                .iter()
                .filter_map(|&r| track.delivered.get(r))
                .map(|d| d.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0);
            let outstanding = sent.saturating_sub(*written_off).saturating_sub(delivered);
            if outstanding < self.size {
                return Some((self.size - outstanding) as usize);
            }
            let wait_until = (Instant::now() + WINDOW_STALL).min(deadline);
            if tokio::time::timeout_at(wait_until, notified).await.is_err() {
                if Instant::now() >= deadline {
                    return None;
                }
                *written_off += outstanding;
            }
        }
    }
}

async fn publisher_reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut rbuf: BytesMut,
    v5: bool,
    window: Arc<Semaphore>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut acked = 0;
        let mut refused = 0;
        let scanned = wire::scan(&rbuf, v5, |frame| match frame {
            Frame::Puback { ok: true, .. } => acked += 1,
            Frame::Puback { ok: false, .. } => refused += 1,
            _ => {}
        });
        let Ok(pos) = scanned else {
            lost(&shared);
            window.close();
            return;
        };
        rbuf.advance(pos);
        if acked + refused > 0 {
            Counters::add(&shared.counters.acked, acked);
            Counters::add(&shared.counters.ack_errors, refused);
            window.add_permits((acked + refused) as usize);
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(16 * 1024);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            res = rd.read_buf(&mut rbuf) => match res {
                Ok(0) | Err(_) => {
                    lost(&shared);
                    window.close();
                    return;
                }
                Ok(_) => {}
            },
        }
    }
}

fn lost(shared: &Shared) {
    if !shared.stopping.load(Ordering::Relaxed) {
        Counters::add(&shared.counters.conn_lost, 1);
    }
}

async fn say_goodbye(stream: &mut TcpStream) {
    let mut out = BytesMut::new();
    wire::disconnect(&mut out);
    let _ = stream.write_all(&out).await;
}

/// PINGREQ every half keep-alive, so a client that only receives is not taken for dead.
struct Pinger {
    every: Option<Duration>,
    next: Instant,
}

impl Pinger {
    fn new(keep_alive: u16) -> Self {
        let every = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 500));
        Pinger {
            every,
            next: Instant::now() + every.unwrap_or_default(),
        }
    }

    fn is_due(&self) -> bool {
        self.every.is_some() && Instant::now() >= self.next
    }

    async fn due(&self) {
        match self.every {
            Some(_) => tokio::time::sleep_until(self.next).await,
            None => std::future::pending().await,
        }
    }

    fn ping(&mut self, out: &mut BytesMut) {
        wire::pingreq(out);
        self.next = Instant::now() + self.every.unwrap_or_default();
    }
}

/// What a connection run measured.
#[derive(Debug, Clone)]
pub struct ConnResult {
    /// Counters at the end.
    pub totals: Snapshot,
    /// From the first connect to the last CONNACK (or failure).
    pub elapsed: Duration,
    /// TCP connect to CONNACK.
    pub latency: Latency,
    /// Broker before connecting and with every connection held.
    pub broker: Option<(ProcSample, ProcSample)>,
    /// Broker CPU seconds spent during the connect phase.
    pub broker_connect_cpu_s: Option<f64>,
    /// Own CPU time while connecting.
    pub own_cpu: Duration,
}

/// Opens `count` connections (at `rate` per second, 0 = as fast as they go, with at most
/// `concurrency` handshakes at once), holds them for `hold`, then closes them.
pub async fn conn(
    target: &Target,
    count: usize,
    rate: f64,
    concurrency: usize,
    hold: Duration,
    timeout: Duration,
    shared: &Arc<Shared>,
) -> ConnResult {
    let broker0 = shared.broker_pid.and_then(stats::proc_sample);
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let hist = Arc::new(parking::Lock::new(stats::histogram()));
    let start = Instant::now();
    let cpu0 = stats::own_cpu();
    let mut ticker = Progress::new(shared, start);
    let deadline = start + timeout;
    let mut holders: Vec<JoinHandle<()>> = Vec::with_capacity(count);
    let run_id = std::process::id();
    for i in 0..count {
        if rate > 0.0 {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            ticker.until(at).await;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = ticker.until(deadline) => break,
        };
        let Ok(permit) = permit else { break };
        let target = target.clone();
        let shared2 = shared.clone();
        let hist = hist.clone();
        let mut stop = stop_rx.clone();
        holders.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let id = format!("bench-conn-{run_id}-{i}");
            let client = net::connect(&target, i, &id, None).await;
            drop(permit);
            let Ok(client) = client else {
                Counters::add(&shared2.counters.connect_errors, 1);
                return;
            };
            hist.with(|h| {
                let _ = h.record((t0.elapsed().as_nanos() as u64).max(1));
            });
            Counters::add(&shared2.counters.connected, 1);
            hold_idle(client, target.keep_alive, &shared2, &mut stop).await;
        }));
    }
    // Wait for the last handshake.
    loop {
        let s = shared.counters.snapshot();
        if (s.connected + s.connect_errors) as usize >= holders.len() || Instant::now() >= deadline
        {
            break;
        }
        let next = Instant::now() + Duration::from_millis(10);
        ticker.until(next).await;
    }
    let elapsed = start.elapsed();
    let own_cpu = stats::own_cpu().saturating_sub(cpu0);
    let broker_connected = shared.broker_pid.and_then(stats::proc_sample);
    // Let the broker settle (allocations of connect handling freed) before sampling memory.
    ticker.until(Instant::now() + hold).await;
    let broker1 = shared.broker_pid.and_then(stats::proc_sample);
    shared.stopping.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    let latency = hist.with(|h| Latency::of(h));
    ConnResult {
        totals: shared.counters.snapshot(),
        elapsed,
        latency,
        broker: broker0.zip(broker1),
        broker_connect_cpu_s: broker0
            .zip(broker_connected)
            .map(|(a, b)| b.cpu_s - a.cpu_s),
        own_cpu,
    }
}

async fn hold_idle(
    client: Client,
    keep_alive: u16,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
) {
    let Client { mut stream, .. } = client;
    let mut ping = Pinger::new(keep_alive);
    let mut sink = [0u8; 64];
    let mut out = BytesMut::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            res = stream.read(&mut sink) => match res {
                // PINGRESP and nothing else is expected; a close is a loss.
                Ok(0) | Err(_) => {
                    lost(shared);
                    return;
                }
                Ok(_) => {}
            },
            _ = ping.due() => {
                ping.ping(&mut out);
                if stream.write_all(&out).await.is_err() {
                    lost(shared);
                    return;
                }
                out.clear();
            }
        }
    }
    say_goodbye(&mut stream).await;
}

/// The live progress line (stderr, once a second) while waiting for the next phase.
struct Progress<'a> {
    shared: &'a Shared,
    start: Instant,
    next: Instant,
    last: Snapshot,
    last_cpu: Duration,
    last_broker: Option<ProcSample>,
}

impl<'a> Progress<'a> {
    fn new(shared: &'a Shared, start: Instant) -> Self {
        Progress {
            shared,
            start,
            next: start + Duration::from_secs(1),
            last: Snapshot::default(),
            last_cpu: stats::own_cpu(),
            last_broker: shared.broker_pid.and_then(stats::proc_sample),
        }
    }

    /// Sleeps until `at`, printing progress on the way.
    async fn until(&mut self, at: Instant) {
        loop {
            if self.next > at {
                tokio::time::sleep_until(at).await;
                return;
            }
            tokio::time::sleep_until(self.next).await;
            self.print();
            self.next += Duration::from_secs(1);
        }
    }

    fn print(&mut self) {
        let s = self.shared.counters.snapshot();
        let cpu = stats::own_cpu();
        let broker = self.shared.broker_pid.and_then(stats::proc_sample);
        if self.shared.progress {
            let d = |a: u64, b: u64| a.saturating_sub(b);
            let own = (cpu.saturating_sub(self.last_cpu)).as_secs_f64() * 100.0;
            let broker_cpu = match (broker, self.last_broker) {
                (Some(b), Some(a)) => format!(
                    " broker cpu {:.0}% rss {} MiB",
                    (b.cpu_s - a.cpu_s) * 100.0,
                    b.rss_kib / 1024
                ),
                _ => String::new(),
            };
            eprintln!(
                "[{:>4}s] conn {} (+{}/s) pub {}/s ack {}/s recv {}/s errors {} | own cpu {:.0}%{}",
                self.start.elapsed().as_secs(),
                s.connected,
                d(s.connected, self.last.connected),
                d(s.published, self.last.published),
                d(s.acked, self.last.acked),
                d(s.received, self.last.received),
                s.errors(),
                own,
                broker_cpu,
            );
        }
        self.last = s;
        self.last_cpu = cpu;
        self.last_broker = broker;
    }
}

/// A lock for the connect-latency histogram: recorded once per connection, so contention is
/// no concern; std's mutex is enough.
mod parking {
    use std::sync::Mutex;

    /// A mutex whose poisoning is ignored (a panicking recorder leaves a valid histogram).
    #[derive(Debug)]
    pub struct Lock<T>(Mutex<T>);

    impl<T> Lock<T> {
        pub fn new(v: T) -> Self {
            Lock(Mutex::new(v))
        }

        pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
            let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut g)
        }
    }
}
