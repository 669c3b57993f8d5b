//! The `spendguard` binary the end-to-end tests start, checked to be built from these very
//! sources (a shared target directory may hold one built from another checkout or an older
//! commit); the crash tests also need it built with the crash fail points.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

include!("../../tools/cli/fingerprint.rs");

/// The command that builds the binary the tests need.
pub const BUILD: &str = "cargo build --locked -p spendguard --features spendguard-node/fail-points";

/// The `spendguard` binary next to this test (or bench) binary; fails with the command to run
/// when it is missing or stale.
pub fn spendguard() -> PathBuf {
    checked().0
}

/// [`spendguard`], built with the crash fail points (`SPENDGUARD_FAILPOINT`).
pub fn spendguard_with_fail_points() -> PathBuf {
    let (bin, fail_points) = checked();
    assert!(fail_points, "{} has no crash fail points: rebuild it with `{BUILD}`", bin.display());
    bin
}

fn checked() -> (PathBuf, bool) {
    static CHECKED: OnceLock<Result<(PathBuf, bool), String>> = OnceLock::new();
    CHECKED.get_or_init(check).clone().unwrap_or_else(|why| panic!("{why}"))
}

fn check() -> Result<(PathBuf, bool), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().and_then(Path::parent).ok_or("no target dir")?;
    let bin = dir.join("spendguard");
    if !bin.exists() {
        return Err(format!("{} is missing: build it with `{BUILD}` (tools/dev/test.sh does)", bin.display()));
    }
    let out = std::process::Command::new(&bin).arg("build-info").output().map_err(|e| e.to_string())?;
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    let want = source_fingerprint(&crate::manifest_dir().join(".."));
    if !info.lines().any(|l| l == format!("sources {want}")) {
        return Err(format!(
            "{} was built from other sources than this checkout's ({}; these are {want}): rebuild it with `{BUILD}`",
            bin.display(),
            info.lines().next().unwrap_or("no build-info").trim()
        ));
    }
    Ok((bin, info.lines().any(|l| l == "fail-points yes")))
}
