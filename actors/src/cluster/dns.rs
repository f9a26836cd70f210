//! DNS discovery of cluster members (`cluster.discovery = "dns"`), as EMQX's `dns` strategy:
//! the records of one name list the members' hosts, and every member is `{app}@{host}`.
//!
//! - `a`: A and AAAA records; a host is an address. Without `cluster.dns.server` this is the
//!   system's resolver (`getaddrinfo`, so the hosts file counts too).
//! - `srv`: SRV records; a host is the record's target, a name (in Kubernetes, the stable
//!   per-pod name of a headless service: `beamq-0.beamq-headless.ns.svc.cluster.local`). The
//!   record's port is not used: the cluster port follows from the node name, on every node
//!   alike.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::{DnsDiscoveryConfig, DnsRecordType};

/// The longest one discovery round may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The member names the records of `cfg.name` list now.
pub async fn members(cfg: &DnsDiscoveryConfig) -> Result<HashSet<String>, String> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, lookup(cfg)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
    }
}

async fn lookup(cfg: &DnsDiscoveryConfig) -> Result<HashSet<String>, String> {
    let server = cfg.server_addr()?;
    let member = |host: &str| format!("{}@{}", cfg.app, host.trim_end_matches('.'));
    match (cfg.record_type, server) {
        (DnsRecordType::A, None) => {
            let addrs = tokio::net::lookup_host((cfg.name.as_str(), 0))
                .await
                .map_err(|e| e.to_string())?;
            Ok(addrs.map(|a| member(&a.ip().to_string())).collect())
        }
        (DnsRecordType::A, Some(server)) => {
            let ips = resolver(Some(server))?
                .lookup_ip(cfg.name.as_str())
                .await
                .map_err(|e| e.to_string())?;
            Ok(ips.iter().map(|ip| member(&ip.to_string())).collect())
        }
        (DnsRecordType::Srv, server) => {
            let lookup = resolver(server)?
                .srv_lookup(cfg.name.as_str())
                .await
                .map_err(|e| e.to_string())?;
            Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(member(&srv.target.to_utf8())),
                    _ => None,
                })
                .collect())
        }
    }
}

/// A resolver asking `server`, or the system's configured servers.
fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    builder.build().map_err(|e| e.to_string())
}
