//! The HTML reconciliation report, opened in a real browser (headless Chromium): its charts
//! must actually draw.

use serde_json::json;
use spendguard_service::report::{render, ReportFormat};
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use std::path::{Path, PathBuf};

/// Debian's `chromium`, or `$SPENDGUARD_CHROMIUM`.
fn chromium() -> PathBuf {
    let path = std::env::var_os("SPENDGUARD_CHROMIUM").map_or_else(|| PathBuf::from("chromium"), PathBuf::from);
    let found = std::process::Command::new(&path).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{} is missing: install Debian's chromium (apt-get install chromium; tools/dev/deps.sh does) or set SPENDGUARD_CHROMIUM",
        path.display()
    );
    path
}

/// Screenshots `page` at 1200×1800 and decodes the PNG into (width, height, RGB pixels).
fn screenshot(page: &Path, dir: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let shot = dir.join("report.png");
    let profile = dir.join("chromium-profile");
    let o = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&o.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let pixels = buf[..info.buffer_size()].chunks(step).map(|p| [p[0], p[1], p[2]]).collect();
    (info.width, info.height, pixels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_draws_its_charts_in_chromium() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let buyer = McpAgent::connect(&node.services, "buyer").await;
    let saver = McpAgent::connect(&node.services, "saver").await;
    let pay = |amount: &str| json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" });
    for (agent, amount) in [(&buyer, "5"), (&buyer, "50"), (&saver, "60")] {
        let r = agent.call("spend", pay(amount)).await;
        assert_eq!(r.data["status"], "executed", "{}", r.text);
    }
    let now = chrono::Utc::now();
    let report = node
        .services
        .reports
        .report(now - chrono::TimeDelta::days(1), now + chrono::TimeDelta::hours(1))
        .await
        .unwrap();
    assert_eq!(report.totals.org.usd.to_string(), "115.00");
    // One bar per agent and day: two today, unless the run crossed midnight (UTC) between spends.
    let days: std::collections::BTreeSet<(chrono::NaiveDate, String)> = {
        use spendguard_store::DecisionStore as _;
        let decisions = node.ledger().decisions(None).await.unwrap();
        decisions.iter().map(|d| (d.created_at.date_naive(), d.agent.clone())).collect()
    };
    assert_eq!(days.iter().map(|(_, a)| a.as_str()).collect::<std::collections::BTreeSet<_>>().len(), 2);
    assert_eq!(report.daily.len(), days.len(), "one bar per agent per day: {:?}", report.daily);
    let saver_daily = report.limits.iter().find(|l| l.agent == "saver" && l.policy == "saver-daily").unwrap();
    assert_eq!(saver_daily.percent, 60.0);

    let html = render(&report, ReportFormat::Html);
    assert_eq!(html.matches("<svg").count(), 2, "two charts");
    let page = org.dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    let (width, height, pixels) = screenshot(&page, org.dir.path());
    assert_eq!((width, height), (1200, 1800));
    let distinct: std::collections::HashSet<[u8; 3]> = pixels.iter().copied().collect();
    assert!(distinct.len() > 20, "a blank page has a handful of colours, this one {}", distinct.len());
    // The first agent's bars (#2563eb) and the limit bars (green under 80 %) are on screen.
    let count = |rgb: [u8; 3]| pixels.iter().filter(|p| **p == rgb).count();
    assert!(count([0x25, 0x63, 0xeb]) > 200, "no spend-per-day bars drawn");
    assert!(count([0x16, 0xa3, 0x4a]) > 200, "no limit utilisation bars drawn");
}
