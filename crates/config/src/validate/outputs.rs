//! `[[alert]]` channels and scheduled `[[report]]`s.

use super::{env_name_ok, Checker};
use crate::locate::KeyPath;
use crate::raw::{RawAlert, RawReport};
use crate::{AlertConfig, ReportConfig, REPORT_FORMATS};
use spendguard_core::EventKind;
use std::collections::HashSet;
use std::str::FromStr;

pub(super) fn alerts(c: &mut Checker, raw: &[RawAlert], root: &KeyPath) -> Vec<AlertConfig> {
    let mut alert_ids = HashSet::new();
    let mut alerts = vec![];
    for (i, a) in raw.iter().enumerate() {
        let p = root.key("alert").index(i);
        if !c.unique(&mut alert_ids, &a.id, p.key("id"), "alert") {
            continue;
        }
        if !env_name_ok(&a.url_env) {
            c.err(p.key("url_env"), format!("{:?} is not an environment variable name (A-Z, 0-9, _)", a.url_env));
        }
        let mut events = vec![];
        for (j, e) in a.events.iter().enumerate() {
            match EventKind::parse(e).filter(|k| k.alertable()) {
                Some(kind) => events.push(kind),
                None => {
                    let known: Vec<&str> =
                        EventKind::ALL.iter().filter(|k| k.alertable()).map(|k| k.as_str()).collect();
                    c.err(p.key("events").index(j), format!("{e:?} is not an event: one of {}", known.join(", ")));
                }
            }
        }
        alerts.push(AlertConfig { id: a.id.clone(), kind: a.kind, url_env: a.url_env.clone(), events });
    }
    alerts
}

pub(super) fn reports(c: &mut Checker, raw: &[RawReport], root: &KeyPath) -> Vec<ReportConfig> {
    let mut report_ids = HashSet::new();
    let mut reports = vec![];
    for (i, r) in raw.iter().enumerate() {
        let p = root.key("report").index(i);
        if !c.unique(&mut report_ids, &r.id, p.key("id"), "report") {
            continue;
        }
        let schedule = match cron::Schedule::from_str(&r.schedule) {
            Ok(s) => s,
            Err(e) => {
                // The cron crate's message is several lines with a caret; its last line says why.
                let why = e.to_string();
                let why = why.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid").trim().to_string();
                c.err(
                    p.key("schedule"),
                    format!("{:?} is not a cron expression (sec min hour day month weekday): {why}", r.schedule),
                );
                continue;
            }
        };
        if r.formats.is_empty() {
            c.err(p.key("formats"), format!("needs at least one of {}", REPORT_FORMATS.join(", ")));
        }
        for (j, f) in r.formats.iter().enumerate() {
            if !REPORT_FORMATS.contains(&f.as_str()) {
                c.err(
                    p.key("formats").index(j),
                    format!("{f:?} is not a format: one of {}", REPORT_FORMATS.join(", ")),
                );
            }
        }
        reports.push(ReportConfig { id: r.id.clone(), schedule, formats: r.formats.clone() });
    }
    reports
}
