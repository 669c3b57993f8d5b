//! Writing reports to files, once or on each `[[report]]`'s cron schedule.

use super::{render, ReportFormat, Reports};
use crate::error::{ServiceError, ServiceResult};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl Reports {
    /// Writes the report of `[from, to)` into `dir` in each format, as
    /// `{name}-{to:%Y%m%dT%H%M%SZ}.{ext}`; each file is written whole (a temporary file renamed
    /// into place), so a reader never sees half a report.
    pub async fn write_report(
        &self,
        name: &str,
        formats: &[ReportFormat],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        dir: &Path,
    ) -> ServiceResult<Vec<PathBuf>> {
        let report = self.report(from, to).await?;
        let io = |e: std::io::Error, what: &Path| {
            ServiceError::Invalid(format!("writing the report {}: {e}", what.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
        let mut written = vec![];
        for format in formats {
            let path = dir.join(format!("{name}-{}.{}", to.format("%Y%m%dT%H%M%SZ"), format.extension()));
            let tmp = path.with_extension(format!("{}.tmp", format.extension()));
            std::fs::write(&tmp, render(&report, *format)).map_err(|e| io(e, &tmp))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(e, &path))?;
            written.push(path);
        }
        Ok(written)
    }

    /// Runs every `[[report]]` on its cron schedule (in the server's timezone) until `shutdown`
    /// is cancelled: each run reports the period since the schedule's previous run and writes
    /// to `reports_dir`.
    pub async fn run_schedule(self: Arc<Self>, shutdown: CancellationToken) {
        let tz = self.config.server.timezone;
        let mut last_run: Option<DateTime<Utc>> = None;
        loop {
            // Never before the last run: a sleep that wakes a hair early must not run it twice.
            let now = last_run.map_or(self.clock.now(), |l| l.max(self.clock.now()));
            // The next run of each report, and the one after it (their gap is the period).
            let next = self
                .config
                .reports
                .iter()
                .filter_map(|r| {
                    let mut upcoming = r.schedule.after(&now.with_timezone(&tz));
                    let at = upcoming.next()?.with_timezone(&Utc);
                    let after = upcoming.next()?.with_timezone(&Utc);
                    Some((at, after - at, r))
                })
                .min_by_key(|(at, _, _)| *at);
            let Some((at, period, report)) = next else { return };
            let wait = (at - now).to_std().unwrap_or_default();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            last_run = Some(at);
            let formats: Vec<ReportFormat> = report.formats.iter().filter_map(|f| ReportFormat::parse(f)).collect();
            match self.write_report(&report.id, &formats, at - period, at, &self.config.server.reports_dir).await {
                Ok(paths) => tracing::info!(report = %report.id, files = paths.len(), "scheduled report written"),
                Err(e) => tracing::error!(report = %report.id, error = %e, "scheduled report failed"),
            }
        }
    }
}
