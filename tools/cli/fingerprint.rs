// The fingerprint of the sources a `spendguard` binary is built from. Included by this crate's
// build script (baked into the binary) and by the end-to-end tests' harness (computed from the
// checkout the tests run in), so a test never runs a stale binary built from other sources.

/// What the binary is built from, relative to the workspace root.
const SOURCE_ROOTS: &[&str] = &["Cargo.toml", "Cargo.lock", "crates", "tools/cli", "tools/mcp", "watchers"];

/// FNV-1a (64 bit) over the relative path and contents of every `.rs` and `Cargo.toml` file
/// under [`SOURCE_ROOTS`], in path order; hex.
fn source_fingerprint(workspace: &std::path::Path) -> String {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") || path.file_name().is_some_and(|n| n == "Cargo.toml") {
                out.push(path);
            }
        }
    }
    let mut files = vec![];
    for root in SOURCE_ROOTS {
        let path = workspace.join(root);
        if path.is_dir() {
            walk(&path, &mut files);
        } else {
            files.push(path);
        }
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for file in files {
        let relative = file.strip_prefix(workspace).unwrap_or(&file);
        eat(relative.to_string_lossy().replace('\\', "/").as_bytes());
        eat(&std::fs::read(&file).unwrap_or_default());
    }
    format!("{hash:016x}")
}
