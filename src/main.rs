//! `modern-attention`: the book's main job.
//!
//! ```text
//! modern-attention            regenerate every table and figure, then render the book to HTML
//! modern-attention render     only write book/generated/ from the code and committed measurements
//! modern-attention check      fail if book/generated/ differs from what the code renders
//! modern-attention book       only render the book (installs mdbook and mdbook-katex if missing)
//! ```

mod tools;

use modern_attention::regenerate;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn render(root: &Path) -> Result<(), String> {
    let t = Instant::now();
    let artifacts = regenerate::render_all();
    let dir = root.join("book/generated");
    let names = regenerate::write_all(&dir, &artifacts)
        .map_err(|e| format!("writing {}: {e}", dir.display()))?;
    println!(
        "[render] {} files into book/generated/ in {:.2?}: {}",
        names.len(),
        t.elapsed(),
        names.join(", ")
    );
    Ok(())
}

fn check(root: &Path) -> Result<(), String> {
    let stale = regenerate::stale(&root.join("book/generated"), &regenerate::render_all())
        .map_err(|e| e.to_string())?;
    if stale.is_empty() {
        println!("[check] book/generated/ is what the code renders");
        Ok(())
    } else {
        Err(format!(
            "book/generated/ is stale (run `cargo run --release -- render`):\n  {}",
            stale.join("\n  ")
        ))
    }
}

fn run() -> Result<(), String> {
    let root = root();
    let cmd = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match cmd.as_str() {
        "all" => {
            render(&root)?;
            tools::build_book(&root)
        }
        "render" => render(&root),
        "check" => check(&root),
        "book" => tools::build_book(&root),
        "-h" | "--help" | "help" => {
            println!("usage: modern-attention [all|render|check|book]");
            Ok(())
        }
        other => Err(format!(
            "unknown command `{other}`; try `modern-attention help`"
        )),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
