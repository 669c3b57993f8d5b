//! `[server]` and `[org]`.

use super::Checker;
use crate::locate::KeyPath;
use crate::raw::RawConfig;
use crate::{Database, ServerConfig};
use chrono_tz::Tz;
use std::net::SocketAddr;
use std::path::Path;

pub(super) fn server(c: &mut Checker, raw: &RawConfig, root: &KeyPath, base_dir: &Path) -> ServerConfig {
    let sp = root.key("server");
    let listen = match raw.server.listen.as_deref().unwrap_or("127.0.0.1:3100").parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            c.err(sp.key("listen"), "must be an address and port such as \"127.0.0.1:3100\"");
            SocketAddr::from(([127, 0, 0, 1], 3100))
        }
    };
    let text = raw.server.database.trim();
    let database = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        let host =
            text.split_once("://").map(|(_, rest)| rest.split('/').next().unwrap_or_default()).unwrap_or_default();
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if host.is_empty() || !text.split_once("://").is_some_and(|(_, rest)| rest.contains('/')) {
            c.err(
                sp.key("database"),
                "a PostgreSQL URL needs a host and a database: postgres://user@host:5432/spendguard",
            );
        }
        Database::Postgres(text.to_string())
    } else {
        if text.is_empty() {
            c.err(sp.key("database"), "must name an SQLite file or a postgres:// URL");
        }
        Database::Sqlite(base_dir.join(text))
    };
    if raw.server.authority_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        c.err(sp.key("authority_key"), "must name a file (created with a new key on first use)");
    }
    if raw.org.id.is_empty() {
        c.err(root.key("org").key("id"), "must not be empty");
    }
    let allowed_hosts = match &raw.server.allowed_hosts {
        Some(hosts) => {
            for (i, host) in hosts.iter().enumerate() {
                if let Err(why) = check_host(host) {
                    c.err(sp.key("allowed_hosts").index(i), why);
                }
            }
            hosts.clone()
        }
        None => default_hosts(listen),
    };
    let watcher_lease = raw.server.watcher_lease.map_or(chrono::TimeDelta::seconds(30), |d| d.0);
    if watcher_lease < chrono::TimeDelta::seconds(1) {
        c.err(sp.key("watcher_lease"), "must be at least 1s");
    }
    for ch in &raw.chain {
        let poll = ch.poll_interval.map_or(chrono::TimeDelta::seconds(1), |d| d.0);
        if watcher_lease < poll * 2 {
            c.err(
                sp.key("watcher_lease"),
                format!(
                    "must be at least twice chain {}'s poll_interval ({}s): the watcher renews its lease once a poll",
                    ch.id,
                    poll.num_seconds()
                ),
            );
        }
    }
    let allowed_origins = raw.server.allowed_origins.clone().unwrap_or_default();
    for (i, origin) in allowed_origins.iter().enumerate() {
        if let Err(why) = check_origin(origin) {
            c.err(sp.key("allowed_origins").index(i), why);
        }
    }
    ServerConfig {
        database,
        listen,
        timezone: raw.server.timezone.map_or(Tz::UTC, |t| t.0),
        reports_dir: base_dir.join(raw.server.reports_dir.as_deref().unwrap_or("reports")),
        allowed_hosts,
        allowed_origins,
        authority_key: base_dir.join(raw.server.authority_key.as_deref().unwrap_or("authority.key")),
        watcher_lease,
    }
}

/// The loopback names, and the listen address when it is a specific one.
fn default_hosts(listen: SocketAddr) -> Vec<String> {
    let mut hosts: Vec<String> = crate::LOOPBACK_HOSTS.map(String::from).to_vec();
    let ip = listen.ip().to_string();
    if !listen.ip().is_unspecified() && !hosts.contains(&ip) {
        hosts.push(ip);
    }
    hosts
}

/// A host name or IP, with an optional port: what a `Host` header carries.
fn check_host(host: &str) -> Result<(), &'static str> {
    let valid = !host.is_empty()
        && host.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | ':' | '[' | ']'));
    if valid {
        Ok(())
    } else {
        Err("must be a host name or IP address, optionally with a port, such as \"spendguard.internal\" or \"10.0.0.5:3100\"")
    }
}

/// `scheme://host[:port]`, as a browser sends in `Origin`.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    match rest {
        Some(authority) if check_host(authority).is_ok() => Ok(()),
        _ => Err("must be an origin such as \"https://console.example.com\" (scheme, host and optional port; no path)"),
    }
}
