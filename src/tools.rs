//! Finding (or installing) the book's tools and rendering the book.
//!
//! The book renders with mdbook 0.5.4 and the mdbook-katex 0.10.0 preprocessor (math to MathML at build
//! time, so pages need no network). If the versions on `PATH` are not these, they are installed with
//! `cargo install --locked` into `.tools/` in the repository (a few minutes, once).

use std::path::{Path, PathBuf};
use std::process::Command;

const MDBOOK: (&str, &str) = ("mdbook", "0.5.4");
const KATEX: (&str, &str) = ("mdbook-katex", "0.10.0");

fn version_of(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A directory holding both tools at the pinned versions: the one on `PATH`, or `.tools/bin`.
fn tool_dir(root: &Path) -> Result<Option<PathBuf>, String> {
    let local = root.join(".tools/bin");
    let ok = |dir: Option<&Path>| {
        [MDBOOK, KATEX].iter().all(|(name, ver)| {
            let prog = dir.map_or_else(|| PathBuf::from(name), |d| d.join(name));
            version_of(&prog).is_some_and(|v| v.ends_with(ver) || v.ends_with(&format!("v{ver}")))
        })
    };
    if ok(None) {
        return Ok(None); // both on PATH
    }
    if !ok(Some(&local)) {
        for (name, ver) in [MDBOOK, KATEX] {
            println!("[book] installing {name} {ver} into .tools/ (once; a few minutes)");
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.args(["install", name, "--version", ver, "--locked", "--root"])
                .arg(root.join(".tools"));
            if name == "mdbook" {
                c.args(["--no-default-features", "--features", "search"]);
            }
            let status = c
                .status()
                .map_err(|e| format!("running cargo install {name}: {e}"))?;
            if !status.success() {
                return Err(format!("cargo install {name} {ver} failed"));
            }
        }
    }
    Ok(Some(local))
}

/// Render the book to `target/book/`; fails on any error mdbook reports (a broken include among them).
pub fn build_book(root: &Path) -> Result<(), String> {
    let dir = tool_dir(root)?;
    let mdbook = dir
        .as_ref()
        .map_or_else(|| PathBuf::from("mdbook"), |d| d.join("mdbook"));
    let mut cmd = Command::new(&mdbook);
    cmd.arg("build").arg(root);
    if let Some(d) = &dir {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![d.clone()];
        paths.extend(std::env::split_paths(&path));
        cmd.env(
            "PATH",
            std::env::join_paths(paths).map_err(|e| e.to_string())?,
        );
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", mdbook.display()))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{log}");
    // mdbook-katex 0.10.0 warns that it was built against mdbook 0.5.3: harmless, and the only warning
    // accepted. Anything else (a broken include, a missing file, bad math) fails the build.
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .filter(|l| !l.contains("was built against mdbook"))
        .collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(format!(
            "mdbook build reported problems:\n{}",
            errors.join("\n")
        ));
    }
    println!(
        "[book] rendered: open {}",
        root.join("target/book/index.html").display()
    );
    Ok(())
}
