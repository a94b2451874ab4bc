//! `modern-attention`: the book's main job.
//!
//! ```text
//! modern-attention            regenerate every table and figure, then render the book to HTML
//! modern-attention render     only write book/generated/ from the code and committed measurements
//! modern-attention check      fail if book/generated/ differs from what the code renders
//! modern-attention book       only render the book (installs mdbook and mdbook-katex if missing)
//! modern-attention measure-cpu [--quick] [--peer FILE]
//!                              check then time every CPU version on this machine, merge the peer's
//!                              records (bench/peers/torch_cpu_sdpa.py) and write measurements/cpu-<name>.json
//! modern-attention measure-gpu [--quick] [--peer FILE] [--dram FILE] [--out DIR] [--commit C] [--date D]
//!                              check then time every GPU kernel version (lab 02), merge PyTorch SDPA's
//!                              records (bench/peers/torch_sdpa.py) and ncu's DRAM bytes, and write
//!                              measurements/gpu-<card>.json
//! modern-attention gpu-probe sanitize | one VERSION N D [causal]
//!                              small checked runs for compute-sanitizer; one launch for ncu
//! ```

mod gpu_cli;
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

fn output_of(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn measure_cpu(root: &Path, args: &[String]) -> Result<(), String> {
    use modern_attention::measure::{cpu, slug, Record};
    let quick = args.iter().any(|a| a == "--quick");
    let peer = args
        .iter()
        .position(|a| a == "--peer")
        .and_then(|i| args.get(i + 1));
    let commit = output_of(
        "git",
        &[
            "-C",
            &root.to_string_lossy(),
            "rev-parse",
            "--short=12",
            "HEAD",
        ],
    );
    let date = output_of("date", &["-u", "+%Y-%m-%d"]);
    let rustc = output_of("rustc", &["--version"]);
    let t = Instant::now();
    let mut file = cpu::measure(quick, &commit, &date, &rustc, &mut |line| {
        println!("[measure] {line}")
    });
    if let Some(p) = peer {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
        let recs: Vec<Record> = serde_json::from_str(&text).map_err(|e| format!("{p}: {e}"))?;
        println!("[measure] merged {} peer records from {p}", recs.len());
        file.records.extend(recs);
    }
    let path = root
        .join("measurements")
        .join(format!("cpu-{}.json", slug(&file.machine.name)));
    let json = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "[measure] {} records in {:.1?} -> {}",
        file.records.len(),
        t.elapsed(),
        path.display()
    );
    Ok(())
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
        "measure-cpu" => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            measure_cpu(&root, &rest)
        }
        "measure-gpu" => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            let commit = output_of(
                "git",
                &[
                    "-C",
                    &root.to_string_lossy(),
                    "rev-parse",
                    "--short=12",
                    "HEAD",
                ],
            );
            gpu_cli::measure_gpu(&root, &rest, commit, output_of("rustc", &["--version"]))
        }
        "gpu-probe" => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            gpu_cli::probe(&rest)
        }
        "-h" | "--help" | "help" => {
            println!(
                "usage: modern-attention [all|render|check|book|measure-cpu [--quick] [--peer FILE]|\
                 measure-gpu [--quick] [--peer FILE] [--dram FILE] [--out DIR]|gpu-probe ...]"
            );
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
