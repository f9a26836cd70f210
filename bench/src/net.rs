//! Sockets: the file-descriptor limit, source addresses, and the MQTT handshake.
//!
//! One source address has about 28,000 ephemeral ports (32768-60999), and ports in TIME_WAIT
//! from an earlier round stay taken for a minute. Connections are spread over several loopback
//! source addresses, and `IP_BIND_ADDRESS_NO_PORT` lets the kernel pick the port at connect
//! time, where only the whole 4-tuple must be unique, instead of at bind time, where the port
//! alone must be free.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use beamq_protocol::{BytesMut, ProtocolVersion, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::wire::{self, Answer};

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The broker.
    pub addr: SocketAddr,
    /// Source addresses, used in turn.
    pub sources: Vec<IpAddr>,
    /// MQTT version.
    pub version: ProtocolVersion,
    /// Keep alive, seconds.
    pub keep_alive: u16,
    /// Username, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Time allowed for TCP connect plus CONNACK (and SUBACK).
    pub handshake_timeout: Duration,
}

/// A connected client, after CONNACK.
#[derive(Debug)]
pub struct Client {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read after CONNACK/SUBACK (frames that came in the same read).
    pub rbuf: BytesMut,
    /// The broker's Receive Maximum (v5), if it gave one.
    pub receive_maximum: Option<u16>,
}

/// Connects client number `index` as `client_id`, optionally subscribing to `filter`.
pub async fn connect(
    target: &Target,
    index: usize,
    client_id: &str,
    subscribe: Option<(&str, QoS)>,
) -> Result<Client, String> {
    tokio::time::timeout(
        target.handshake_timeout,
        handshake(target, index, client_id, subscribe),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
}

async fn handshake(
    target: &Target,
    index: usize,
    client_id: &str,
    subscribe: Option<(&str, QoS)>,
) -> Result<Client, String> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if !target.sources.is_empty() {
        let source = target.sources[index % target.sources.len()];
        bind_no_port(&socket);
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
    }
    let mut stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut out = BytesMut::with_capacity(128);
    wire::connect(
        &mut out,
        target.version,
        client_id,
        target.keep_alive,
        target.username.as_deref(),
        target.password.as_deref(),
    );
    if let Some((filter, qos)) = subscribe {
        // Pipelined: the broker handles SUBSCRIBE after CONNECT, in order.
        wire::subscribe(&mut out, target.version, filter, qos);
    }
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut rbuf = BytesMut::with_capacity(256);
    let receive_maximum = match read_answer(&mut stream, &mut rbuf, target.version).await? {
        Answer::Connack {
            reason,
            receive_maximum,
        } if !reason.is_error() => receive_maximum,
        Answer::Connack { reason, .. } => return Err(format!("CONNACK {reason}")),
        Answer::Suback(_) => return Err("SUBACK before CONNACK".into()),
        Answer::Other(name) => return Err(format!("expected CONNACK, got {name}")),
    };
    if subscribe.is_some() {
        match read_answer(&mut stream, &mut rbuf, target.version).await? {
            Answer::Suback(rc) if !rc.is_error() => {}
            Answer::Suback(rc) => return Err(format!("SUBACK {rc}")),
            Answer::Connack { .. } => return Err("a second CONNACK".into()),
            Answer::Other(name) => return Err(format!("expected SUBACK, got {name}")),
        }
    }
    Ok(Client {
        stream,
        rbuf,
        receive_maximum,
    })
}

async fn read_answer(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    version: ProtocolVersion,
) -> Result<Answer, String> {
    loop {
        if let Some(a) = wire::answer(rbuf, version)? {
            return Ok(a);
        }
        rbuf.reserve(256);
        match stream.read_buf(rbuf).await {
            Ok(0) => return Err("closed by the broker".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Lets the kernel choose the source port at connect time (see the module comment). Best
/// effort: without it, binding still works, with fewer ports.
fn bind_no_port(socket: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, an int option and its size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
