//! Writing a [`Report`] as JSON, CSV, Markdown or a self-contained HTML page with SVG charts.

use super::{Report, Total};
use std::fmt::Write as _;

/// A format a report is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// Pretty JSON of the whole report.
    Json,
    /// One CSV table: `section,key,count,usd,amount,detail`.
    Csv,
    /// Markdown tables.
    Markdown,
    /// A single HTML page with tables and charts.
    Html,
}

impl ReportFormat {
    /// Parses `json`, `csv`, `md` or `html`.
    pub fn parse(text: &str) -> Option<ReportFormat> {
        match text {
            "json" => Some(ReportFormat::Json),
            "csv" => Some(ReportFormat::Csv),
            "md" => Some(ReportFormat::Markdown),
            "html" => Some(ReportFormat::Html),
            _ => None,
        }
    }

    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Json => "json",
            ReportFormat::Csv => "csv",
            ReportFormat::Markdown => "md",
            ReportFormat::Html => "html",
        }
    }
}

/// The report in `format`.
pub fn render(report: &Report, format: ReportFormat) -> String {
    match format {
        ReportFormat::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        ReportFormat::Csv => csv(report),
        ReportFormat::Markdown => markdown(report),
        ReportFormat::Html => html(report),
    }
}

/// Quotes a CSV field when it needs it (RFC 4180).
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn totals_sections(r: &Report) -> [(&'static str, &[Total]); 6] {
    [
        ("department", &r.totals.departments),
        ("agent", &r.totals.agents),
        ("wallet", &r.totals.wallets),
        ("chain", &r.totals.chains),
        ("asset", &r.totals.assets),
        ("x402 host", &r.x402_hosts),
    ]
}

fn period(r: &Report) -> String {
    format!("{} to {}", r.from.to_rfc3339(), r.to.to_rfc3339())
}

fn csv(r: &Report) -> String {
    let mut out = String::from("section,key,count,usd,amount,detail\n");
    let mut row = |cols: [&str; 6]| {
        out.push_str(&cols.map(csv_field).join(","));
        out.push('\n');
    };
    row(["period", &r.org, "", "", "", &period(r)]);
    for (verdict, n) in &r.decisions {
        row(["decisions", verdict.as_str(), &n.to_string(), "", "", ""]);
    }
    row(["total_org", &r.totals.org.key, &r.totals.org.count.to_string(), &r.totals.org.usd.to_string(), "", ""]);
    for (section, totals) in totals_sections(r) {
        for t in totals {
            let section = format!("total_{section}");
            let amount = t.amount.map(|a| a.to_string()).unwrap_or_default();
            row([&section, &t.key, &t.count.to_string(), &t.usd.to_string(), &amount, ""]);
        }
    }
    for c in &r.reconciliation {
        let amounts = c.amounts.iter().map(|(a, v)| format!("{v} {a}")).collect::<Vec<_>>().join("; ");
        row(["reconciliation", c.class.as_str(), &c.count.to_string(), &c.usd.to_string(), &amounts, ""]);
    }
    for e in &r.exceptions {
        let key = e.tx_hash.as_deref().or(e.decision_id.as_deref()).unwrap_or("");
        row(["exception", e.class.as_str(), "", "", "", &format!("{key}: {}", e.evidence)]);
    }
    for i in &r.inflows {
        row(["inflow", &i.wallet, "", "", &inflow_amount(i), &inflow_words(i)]);
    }
    for a in &r.authorizations {
        let usd = a.usd.map(|u| u.to_string()).unwrap_or_default();
        let amount = format!("{} {}", a.amount.normalize(), a.asset);
        row(["authorization", &a.wallet, "", &usd, &amount, &authorization_words(a)]);
    }
    for d in &r.daily {
        row(["daily", &format!("{} {}", d.day, d.agent), "", &d.usd.to_string(), "", ""]);
    }
    for l in &r.limits {
        let key = format!("{} {} {} {} {}", l.agent, l.wallet, l.policy, l.rule, l.window);
        row(["limit", &key, "", "", &format!("{} of {} {}", l.used, l.limit, l.unit), &format!("{}%", l.percent)]);
    }
    out
}

fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Reconciliation report — {}\n\nPeriod: {}  \nGenerated: {}\n",
        r.org,
        period(r),
        r.generated_at.to_rfc3339()
    );
    if let Some((seq, hash)) = &r.audit_head {
        let _ = writeln!(out, "Audit log head: entry {seq}, hash `{hash}`\n");
    }
    let _ = writeln!(out, "## Spend\n\nOrganisation: {} spends, {} USD\n", r.totals.org.count, r.totals.org.usd);
    for (section, totals) in totals_sections(r) {
        let _ = writeln!(out, "| {section} | spends | USD | amount |\n|---|---:|---:|---:|");
        for t in totals {
            let amount = t.amount.map(|a| a.to_string()).unwrap_or_default();
            let _ = writeln!(out, "| {} | {} | {} | {amount} |", t.key, t.count, t.usd);
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Decisions\n\n| verdict | count |\n|---|---:|");
    for (v, n) in &r.decisions {
        let _ = writeln!(out, "| {} | {n} |", v.as_str());
    }
    let _ = writeln!(out, "\n## Reconciliation\n\n| class | count | USD | amounts |\n|---|---:|---:|---|");
    for c in &r.reconciliation {
        let amounts = c.amounts.iter().map(|(a, v)| format!("{v} {a}")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(out, "| {} | {} | {} | {amounts} |", c.class, c.count, c.usd);
    }
    let _ = writeln!(out, "\n## Exceptions\n");
    if r.exceptions.is_empty() {
        out.push_str("None.\n");
    }
    for e in &r.exceptions {
        let _ = writeln!(
            out,
            "- **{}** {} {}: {}",
            e.class,
            e.wallet.as_deref().unwrap_or(""),
            e.decision_id.as_deref().map(|d| format!("(decision {d})")).unwrap_or_default(),
            e.evidence.replace('|', "\\|")
        );
    }
    let _ = writeln!(out, "\n## Inflows\n");
    if r.inflows.is_empty() {
        out.push_str("None.\n");
    }
    for i in &r.inflows {
        let _ = writeln!(out, "- {} ← {}: {}", i.wallet, inflow_amount(i), inflow_words(i).replace('|', "\\|"));
    }
    let _ = writeln!(out, "\n## Authorizations (external wallets and x402 payments)\n");
    if r.authorizations.is_empty() {
        out.push_str("None.\n");
    }
    for a in &r.authorizations {
        let _ = writeln!(
            out,
            "- {} {} {}: {}",
            a.wallet,
            a.amount.normalize(),
            a.asset,
            authorization_words(a).replace('|', "\\|")
        );
    }
    let _ = writeln!(out, "\n## Spend per agent per day\n\n| day | agent | USD |\n|---|---|---:|");
    for d in &r.daily {
        let _ = writeln!(out, "| {} | {} | {} |", d.day, d.agent, d.usd);
    }
    let _ = writeln!(out, "\n## Limit utilisation\n\n| agent | wallet | policy | rule | window | used | limit | % |\n|---|---|---|---|---|---:|---:|---:|");
    for l in &r.limits {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} {} | {} |",
            l.agent, l.wallet, l.policy, l.rule, l.window, l.used, l.limit, l.unit, l.percent
        );
    }
    out
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const PALETTE: &[&str] = &["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

/// Grouped bars: spend per agent (colour) per day (group).
fn daily_chart(r: &Report) -> String {
    let days: Vec<_> = {
        let mut d: Vec<_> = r.daily.iter().map(|d| d.day).collect();
        d.dedup();
        d
    };
    let agents: Vec<&str> = {
        let mut a: Vec<&str> = r.daily.iter().map(|d| d.agent.as_str()).collect();
        a.sort_unstable();
        a.dedup();
        a
    };
    if days.is_empty() {
        return "<p>No spend in this period.</p>".into();
    }
    // Pixels, not money: a float is fine here.
    let px = |usd: crate::usd::Usd| rust_decimal::prelude::ToPrimitive::to_f64(&usd.0).unwrap_or(0.0);
    let value =
        |day, agent: &str| r.daily.iter().find(|d| d.day == day && d.agent == agent).map(|d| px(d.usd)).unwrap_or(0.0);
    let max = r.daily.iter().map(|d| px(d.usd)).fold(0.0, f64::max).max(1.0);
    let (bar, gap, height, left, top) = (22.0, 24.0, 220.0, 70.0, 20.0);
    let group = bar * agents.len() as f64 + gap;
    let width = left + group * days.len() as f64 + 20.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"Spend per agent per day\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">",
        w = width.max(360.0),
        h = height + top + 60.0
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = top + height - height * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{width}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">${v:.0}</text>",
            left - 6.0,
            y + 4.0
        );
    }
    for (di, day) in days.iter().enumerate() {
        let x0 = left + group * di as f64 + gap / 2.0;
        for (ai, agent) in agents.iter().enumerate() {
            let v = value(*day, agent);
            let h = height * v / max;
            let _ = write!(
                svg,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{h}\" fill=\"{}\"><title>{} {}: ${v:.2}</title></rect>",
                x0 + bar * ai as f64,
                top + height - h,
                bar - 2.0,
                PALETTE[ai % PALETTE.len()],
                esc(agent),
                day
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{day}</text>",
            x0 + bar * agents.len() as f64 / 2.0,
            top + height + 16.0
        );
    }
    for (ai, agent) in agents.iter().enumerate() {
        let x = left + 140.0 * ai as f64;
        let y = top + height + 36.0;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            y - 10.0,
            PALETTE[ai % PALETTE.len()],
            x + 16.0,
            y,
            esc(agent)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars: each limit's utilisation in percent.
fn limits_chart(r: &Report) -> String {
    if r.limits.is_empty() {
        return "<p>No limits apply.</p>".into();
    }
    let (row, label, bar_width) = (24.0, 380.0, 300.0);
    let height = row * r.limits.len() as f64 + 10.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"Limit utilisation\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\">",
        w = label + bar_width + 70.0
    );
    for (i, l) in r.limits.iter().enumerate() {
        let y = 5.0 + row * i as f64;
        let pct = l.percent.clamp(0.0, 100.0);
        let colour = if l.percent >= 100.0 {
            "#dc2626"
        } else if l.percent >= 80.0 {
            "#ea580c"
        } else {
            "#16a34a"
        };
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{} · {} {} {}</text>\
             <rect x=\"{label}\" y=\"{y}\" width=\"{bar_width}\" height=\"{}\" fill=\"#eee\"/>\
             <rect x=\"{label}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{colour}\"><title>{} of {} {}</title></rect>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\">{}%</text>",
            label - 8.0,
            y + 14.0,
            esc(&l.agent),
            esc(&l.policy),
            esc(&l.rule),
            esc(&l.window),
            row - 6.0,
            bar_width * pct / 100.0,
            row - 6.0,
            esc(&l.used),
            esc(&l.limit),
            esc(&l.unit),
            label + bar_width + 6.0,
            y + 14.0,
            l.percent
        );
    }
    svg.push_str("</svg>");
    svg
}

fn table(out: &mut String, head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    out.push_str("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(&c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

fn html(r: &Report) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>spendguard report — {org}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#111;background:#fff}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#f3f4f6}}.bad{{color:#b91c1c}}</style></head><body>\
         <h1>Reconciliation report — {org}</h1><p>Period: {period}<br>Generated: {gen}</p>",
        org = esc(&r.org),
        period = esc(&period(r)),
        gen = r.generated_at.to_rfc3339()
    );
    if let Some((seq, hash)) = &r.audit_head {
        let _ = write!(out, "<p>Audit log head: entry {seq}, hash <code>{}</code></p>", esc(hash));
    }
    let _ = write!(out, "<h2>Spend</h2><p>Organisation: {} spends, {} USD</p>", r.totals.org.count, r.totals.org.usd);
    let _ = write!(out, "<h2>Spend per agent per day</h2>{}", daily_chart(r));
    let _ = write!(out, "<h2>Limit utilisation</h2>{}", limits_chart(r));
    for (section, totals) in totals_sections(r) {
        let _ = write!(out, "<h3>By {section}</h3>");
        table(
            &mut out,
            &[section, "spends", "USD", "amount"],
            totals.iter().map(|t| {
                let amount = t.amount.map(|a| a.to_string()).unwrap_or_default();
                vec![t.key.clone(), t.count.to_string(), t.usd.to_string(), amount]
            }),
        );
    }
    out.push_str("<h2>Decisions</h2>");
    table(
        &mut out,
        &["verdict", "count"],
        r.decisions.iter().map(|(v, n)| vec![v.as_str().to_string(), n.to_string()]),
    );
    out.push_str("<h2>Reconciliation</h2>");
    table(
        &mut out,
        &["class", "count", "USD", "amounts"],
        r.reconciliation.iter().map(|c| {
            let amounts = c.amounts.iter().map(|(a, v)| format!("{v} {a}")).collect::<Vec<_>>().join(", ");
            vec![c.class.to_string(), c.count.to_string(), c.usd.to_string(), amounts]
        }),
    );
    out.push_str("<h2 class=\"bad\">Exceptions</h2>");
    if r.exceptions.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        table(
            &mut out,
            &["class", "at", "wallet", "decision", "evidence"],
            r.exceptions.iter().map(|e| {
                vec![
                    e.class.to_string(),
                    e.at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    e.wallet.clone().unwrap_or_default(),
                    e.decision_id.clone().unwrap_or_default(),
                    e.evidence.clone(),
                ]
            }),
        );
    }
    out.push_str("<h2>Inflows</h2>");
    if r.inflows.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        table(
            &mut out,
            &["at", "wallet", "amount", "from, balances, transaction"],
            r.inflows.iter().map(|i| vec![i.seen_at.to_rfc3339(), i.wallet.clone(), inflow_amount(i), inflow_words(i)]),
        );
    }
    out.push_str("<h2>Authorizations (external wallets and x402 payments)</h2>");
    if r.authorizations.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        table(
            &mut out,
            &["issued", "wallet", "amount", "state, agent, recipient, decision"],
            r.authorizations.iter().map(|a| {
                vec![
                    a.issued_at.to_rfc3339(),
                    a.wallet.clone(),
                    format!("{} {}", a.amount.normalize(), a.asset),
                    authorization_words(a),
                ]
            }),
        );
    }
    out.push_str("</body></html>\n");
    out
}

/// Where an authorization stands, for whom and to whom; an open one is exposure.
fn authorization_words(a: &crate::overview::AuthorizationItem) -> String {
    let usd = a.usd.map(|u| format!(" (${})", spendguard_core::money::fmt_usd(u))).unwrap_or_default();
    let state = match a.state {
        spendguard_store::AuthorizationState::Open => {
            format!("OPEN until {} — the agent may still pay it", a.expires_at.to_rfc3339())
        }
        other => format!("{other}: {}", a.ended_by.as_deref().unwrap_or("")),
    };
    let what = match &a.resource {
        Some(url) => format!("x402 payment for {url}, "),
        None => String::new(),
    };
    format!("{what}{state}; agent {} to {}{usd}, decision {}", a.agent, a.recipient, a.decision_id)
}

/// `250 eth-local:USDC`, or the base units of an unknown token.
fn inflow_amount(i: &spendguard_store::RecordedInflow) -> String {
    spendguard_core::reconcile::describe_amount(i.amount, i.asset.as_deref(), i.token.as_deref())
}

/// Sender, balances around it, transaction, and whether it was expected.
fn inflow_words(i: &spendguard_store::RecordedInflow) -> String {
    let balances = match (i.balance_before, i.balance_after) {
        (Some(b), Some(a)) => format!(", balance {} → {}", b.normalize(), a.normalize()),
        _ => String::new(),
    };
    let flag = if i.expected { "" } else { " — UNEXPECTED (sender not in refill_from)" };
    format!("from {}{balances}, tx {} at block {} on {}{flag}", i.sender, i.tx_hash, i.block, i.chain)
}
