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
    inspect(dir.join("spendguard"), &source_fingerprint(&crate::manifest_dir().join("..")))
}

/// Checks that `bin` exists and was built from sources with fingerprint `want`; says whether it
/// has the fail points.
fn inspect(bin: PathBuf, want: &str) -> Result<(PathBuf, bool), String> {
    if !bin.exists() {
        return Err(format!("{} is missing: build it with `{BUILD}` (tools/dev/test.sh does)", bin.display()));
    }
    let out = std::process::Command::new(&bin).arg("build-info").output().map_err(|e| e.to_string())?;
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    if !info.lines().any(|l| l == format!("sources {want}")) {
        return Err(format!(
            "{} was built from other sources than this checkout's ({}; these are {want}): rebuild it with `{BUILD}`",
            bin.display(),
            info.lines().next().unwrap_or("no build-info").trim()
        ));
    }
    Ok((bin, info.lines().any(|l| l == "fail-points yes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary that reports `sources` and `fail_points` as `spendguard build-info` would.
    fn fake(dir: &Path, sources: &str, fail_points: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("spendguard");
        std::fs::write(&bin, format!("#!/bin/sh\necho sources {sources}\necho fail-points {fail_points}\n")).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    #[test]
    fn a_missing_or_stale_binary_is_refused_with_the_command_that_builds_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = inspect(dir.path().join("spendguard"), "abc").unwrap_err();
        assert!(missing.contains("is missing") && missing.contains(BUILD), "{missing}");
        let stale = inspect(fake(dir.path(), "0000000000000000", "yes"), "abc").unwrap_err();
        assert!(stale.contains("built from other sources") && stale.contains(BUILD), "{stale}");
        assert!(!inspect(fake(dir.path(), "abc", "no"), "abc").unwrap().1);
        assert!(inspect(fake(dir.path(), "abc", "yes"), "abc").unwrap().1);
    }

    #[test]
    fn the_binary_the_tests_use_is_built_from_these_sources() {
        // What every end-to-end test relies on; here it fails first, and alone, when stale.
        assert!(spendguard().exists());
    }
}
