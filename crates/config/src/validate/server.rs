//! `[server]` and `[org]`.

use super::Checker;
use crate::locate::KeyPath;
use crate::raw::RawConfig;
use crate::ServerConfig;
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
    if raw.server.database.trim().is_empty() {
        c.err(sp.key("database"), "must name an SQLite file");
    }
    if raw.org.id.is_empty() {
        c.err(root.key("org").key("id"), "must not be empty");
    }
    ServerConfig {
        database: base_dir.join(&raw.server.database),
        listen,
        timezone: raw.server.timezone.map_or(Tz::UTC, |t| t.0),
        reports_dir: base_dir.join(raw.server.reports_dir.as_deref().unwrap_or("reports")),
    }
}
