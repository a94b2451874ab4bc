//! `modern-attention`: the book's main job.
//!
//! ```text
//! modern-attention [--quick]  measure this machine (and PyTorch beside it, when importable), render every
//!                              table and figure, then the book to HTML (`--no-measure`: render only)
//! modern-attention render     only write book/generated/ from the code and committed measurements
//! modern-attention check      fail if book/generated/ differs from what the code renders
//! modern-attention book       only render the book (installs mdbook and mdbook-katex if missing)
//! modern-attention predict kind=flash hq=32 hkv=8 n=2048 d=128 dtype=f16 mask=causal machine=h100|cpu|gpu
//!                              [threads=1]
//!                              a variant's FLOPs, bytes, intensity, bound and time floor, before measuring
//!                              (threads=1: against one thread's measured roof)
//! modern-attention measure-cpu [--quick] [--only flash|decode|paged|memory] [--with-torch] [--peer FILE]...
//!                              check then time every CPU version on this machine; with --with-torch,
//!                              time PyTorch's CPU SDPA (bench/peers/torch_cpu_sdpa.py --serve) in
//!                              windows alternating with ours; write measurements/cpu-<name>.json
//! modern-attention measure-gpu [--quick] [--only flash|paged|race|dram] [--peer FILE] [--peer-decode FILE]
//!                              [--peer-check FILE] [--race FILE] [--dram FILE] [--out DIR] [--commit C]
//!                              [--date D]
//!                              check then time every GPU kernel version (lab 02) and the paged decode
//!                              (lab 03), merge PyTorch's records (bench/peers/torch_sdpa.py,
//!                              torch_decode.py, torch_check.py, torch_race.py, torch_decode_race.py)
//!                              and ncu's DRAM bytes, and
//!                              write measurements/gpu-<card>.json (`--only ...`: merged into the
//!                              committed file)
//! modern-attention gpu-probe sanitize | one VERSION N D [causal] | time VERSION,... N,... D [causal] [wK] [bB] [nocheck]
//!                              | save-check DIR | trace OUT COMMIT DATE | decode N [check] | serve
//!                              small checked runs for compute-sanitizer; one launch for ncu; timings of
//!                              one shape; saved inputs and outputs for the check against PyTorch's math
//!                              backend; v8's trace; lab 03's decode step, paged and contiguous;
//!                              `serve`: those commands read from stdin, one a line
//! modern-attention kernels [--json FILE] [--cubin DIR] [WORD...]
//!                              compile every kernel module the book builds whose name and defines
//!                              contain each WORD (e.g. `flash_fwd FA_VERSION=8`) with NVRTC for sm_90a,
//!                              no GPU needed, and print ptxas's registers, spills, shared memory and
//!                              machine-code size a kernel, and its warnings (`--json`: also write them,
//!                              as measurements/ptxas/sm_90a.json is, for Lab 02's Table 02.8)
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

/// The checkout's commit, as measurement files record it.
fn git_commit(root: &Path) -> String {
    output_of(
        "git",
        &[
            "-C",
            &root.to_string_lossy(),
            "rev-parse",
            "--short=12",
            "HEAD",
        ],
    )
}

/// Do two records time the same implementation on the same configuration?
fn same_config(
    a: &modern_attention::measure::Record,
    b: &modern_attention::measure::Record,
) -> bool {
    (&a.implementation, &a.dtype, a.b, a.hq, a.nq, a.d, &a.mask)
        == (&b.implementation, &b.dtype, b.b, b.hq, b.nq, b.d, &b.mask)
}

/// PyTorch's CPU SDPA as a timing server, if `$PYTHON` (or `python3`) imports torch.
fn torch_peer(root: &Path) -> Option<modern_attention::measure::cpu::TorchPeer> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = std::process::Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        println!("[measure] no PyTorch in `{python}`: timing ours only (set PYTHON to a Python with torch)");
        return None;
    }
    let script = root.join("bench/peers/torch_cpu_sdpa.py");
    let threads = rayon::current_num_threads();
    match modern_attention::measure::cpu::TorchPeer::start(&python, &script, threads) {
        Ok(p) => {
            println!(
                "[measure] PyTorch CPU SDPA timed beside ours, in alternating windows ({python})"
            );
            Some(p)
        }
        Err(e) => {
            println!("[measure] PyTorch peer did not start ({e}): timing ours only");
            None
        }
    }
}

fn measure_cpu(root: &Path, args: &[String]) -> Result<(), String> {
    use modern_attention::measure::{cpu, slug, Record};
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    if let Some(o) = only {
        if !cpu::SECTIONS.iter().any(|(name, _)| *name == o) {
            let names: Vec<&str> = cpu::SECTIONS.iter().map(|(n, _)| *n).collect();
            return Err(format!("--only takes one of {}", names.join(", ")));
        }
    }
    let peers: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--peer")
        .filter_map(|(i, _)| args.get(i + 1).cloned())
        .collect();
    // PyTorch in the same run: its timing windows alternate with ours on every compared configuration.
    let with_torch = args.iter().any(|a| a == "--with-torch");
    let with_torch = with_torch && only.is_none_or(|o| o == "flash");
    let mut torch = if with_torch { torch_peer(root) } else { None };
    let commit = git_commit(root);
    let date = output_of("date", &["-u", "+%Y-%m-%d"]);
    let rustc = output_of("rustc", &["--version"]);
    let t = Instant::now();
    // One bar over the run's steps (drawn on a terminal only; the log lines print above it).
    let bar = indicatif::ProgressBar::new(cpu::planned_steps(quick, only) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[measure] {elapsed_precise} [{bar:32}] {pos}/{len} {msg}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    let mut file = cpu::measure(
        quick,
        only,
        &commit,
        &date,
        &rustc,
        torch.as_mut(),
        &mut |line| {
            if bar.is_hidden() {
                println!("[measure] {line}"); // not a terminal: indicatif would drop the line
            } else {
                bar.println(format!("[measure] {line}"));
            }
        },
        &mut |label| {
            bar.set_message(label.to_string());
            bar.inc(1);
        },
    );
    bar.finish_and_clear();
    drop(torch);
    let mut merged: Vec<Record> = Vec::new();
    for p in &peers {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
        let recs: Vec<Record> = serde_json::from_str(&text).map_err(|e| format!("{p}: {e}"))?;
        println!("[measure] {} peer records from {p}", recs.len());
        for r in recs {
            // Of two records of one configuration, a checked one beats an unchecked one, then the faster.
            match merged.iter_mut().find(|m| same_config(m, &r)) {
                Some(m) if (r.checked, -r.ms) > (m.checked, -m.ms) => *m = r,
                Some(_) => {}
                None => merged.push(r),
            }
        }
    }
    // A configuration PyTorch was already timed on beside ours keeps that record.
    merged.retain(|r| !file.records.iter().any(|m| same_config(m, r)));
    file.records.extend(merged);
    let path = root
        .join("measurements")
        .join(format!("cpu-{}.json", slug(&file.machine.name)));
    // `--only`: keep the previous file (its machine, provenance and the other sections' records) and
    // replace that section's records, each marked with this run's commit and date.
    if let (Some(o), Ok(text)) = (only, std::fs::read_to_string(&path)) {
        if let Ok(mut old) =
            serde_json::from_str::<modern_attention::measure::MeasurementFile>(&text)
        {
            let (_, variants) = cpu::SECTIONS
                .iter()
                .find(|(n, _)| *n == o)
                .copied()
                .unwrap_or(("", &[]));
            old.records
                .retain(|r| !variants.contains(&r.variant.as_str()));
            println!(
                "[measure] --only {o}: kept {} records of other sections from the previous run",
                old.records.len()
            );
            for mut r in std::mem::take(&mut file.records) {
                r.measured = Some(format!("commit {commit}, {date}"));
                old.records.push(r);
            }
            // A file from before the one-thread roof was measured gets this run's.
            old.machine.peak_gflops_1t = old.machine.peak_gflops_1t.or(file.machine.peak_gflops_1t);
            old.machine.bandwidth_gbps_1t = old
                .machine
                .bandwidth_gbps_1t
                .or(file.machine.bandwidth_gbps_1t);
            old.machine.exp_per_s = old.machine.exp_per_s.or(file.machine.exp_per_s);
            // The read roof is the decode's: re-measured with the decode sections, kept otherwise (a
            // flash run beside PyTorch need not measure it undisturbed).
            if matches!(o, "decode" | "paged") {
                old.machine.read_gbps = file.machine.read_gbps.or(old.machine.read_gbps);
            }
            file = old;
        }
    }
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
    // No command, or only flags (`--quick`, `--no-measure`, `--only S`): the main job.
    let first = std::env::args().nth(1);
    let (cmd, skip) = match first.as_deref() {
        None => ("all".to_string(), 2),
        Some(a) if a.starts_with("--") && a != "--help" => ("all".to_string(), 1),
        Some(a) => (a.to_string(), 2),
    };
    match cmd.as_str() {
        "all" => {
            // Measure this machine (with PyTorch beside it when this Python has torch), then render
            // every table and figure from all committed measurements, then build the book.
            let mut args: Vec<String> = std::env::args().skip(skip).collect();
            let t = Instant::now();
            let measured = !args.iter().any(|a| a == "--no-measure");
            if measured {
                args.push("--with-torch".into());
                measure_cpu(&root, &args)?;
            }
            let t_measure = t.elapsed();
            render(&root)?;
            let t_render = t.elapsed() - t_measure;
            tools::build_book(&root)?;
            let t_book = t.elapsed() - t_measure - t_render;
            println!(
                "[done] {:.1?} in all: measure {}, render {:.1?}, book {:.1?}. Open {} \
                 (or `mdbook serve`); the measurements are in measurements/, the tables and figures in \
                 book/generated/.",
                t.elapsed(),
                if measured {
                    format!("{t_measure:.1?}")
                } else {
                    "skipped".into()
                },
                t_render,
                t_book,
                root.join("target/book/index.html").display()
            );
            Ok(())
        }
        "render" => render(&root),
        "check" => check(&root),
        "book" => tools::build_book(&root),
        "predict" => {
            use modern_attention::roofline::predict::{machine_ceilings, parse, report};
            let mut words: Vec<String> = std::env::args().skip(2).collect();
            // `threads=1`: judge a single-threaded kernel against one thread's measured roof (CPU).
            let one_thread = match words.iter().position(|w| w.starts_with("threads=")) {
                Some(i) => match words.remove(i).as_str() {
                    "threads=1" => true,
                    "threads=all" => false,
                    w => return Err(format!("cannot read `{w}`: threads=1 or threads=all")),
                },
                None => false,
            };
            let (variant, machine) = parse(&words).map_err(|e| e.to_string())?;
            let (mut exp_rate, mut cache, mut read_rate) = (None, None, None);
            // `cpu` / `gpu`: the first committed file of that kind; `gpu:h200`: the one whose card's
            // name contains `h200` (case-insensitive).
            let (kind, which) = machine
                .split_once(':')
                .map_or((machine.as_str(), None), |(k, w)| {
                    (k, Some(w.to_lowercase()))
                });
            let measured = match kind {
                "h100" if !one_thread && which.is_none() => None,
                kind @ ("cpu" | "gpu") => {
                    let files = modern_attention::measure::load_all(&root.join("measurements"))?;
                    let mut of_kind = files.iter().filter(|(_, f)| f.machine.kind == kind);
                    let (_, f) = match &which {
                        None => of_kind.next(),
                        Some(w) => of_kind.find(|(_, f)| f.machine.name.to_lowercase().contains(w)),
                    }
                    .ok_or_else(|| {
                        let names: Vec<&str> = files
                            .iter()
                            .filter(|(_, f)| f.machine.kind == kind)
                            .map(|(_, f)| f.machine.name.as_str())
                            .collect();
                        format!(
                            "no committed {kind} measurements match `{machine}` (committed: {}): run \
                             measure-{kind} first",
                            if names.is_empty() { "none".to_string() } else { names.join(", ") }
                        )
                    })?;
                    let m = &f.machine;
                    // One thread gets its share of the measured all-thread exponential rate.
                    let share = if one_thread {
                        f.generated.threads.max(1) as f64
                    } else {
                        1.0
                    };
                    exp_rate = m.exp_per_s.map(|r| r / share);
                    // The read roof (all threads only), as Table R.1 takes it: the fastest read measured.
                    read_rate = m
                        .read_gbps
                        .filter(|_| !one_thread)
                        .map(|_| modern_attention::regenerate::lab03::read_roof(f) * 1e9);
                    // A GPU's L2, shared by one query tile an SM (as in the datasheet ceilings).
                    cache = m.l2_bytes.map(|b| (b, m.cores));
                    if one_thread {
                        let (Some(p1), Some(b1)) = (m.peak_gflops_1t, m.bandwidth_gbps_1t) else {
                            return Err(format!(
                                "no one-thread roof measured for {}: run measure-cpu",
                                m.name
                            ));
                        };
                        let name = format!("{}, one thread", m.name);
                        Some((&*Box::leak(name.into_boxed_str()), p1, b1))
                    } else {
                        let name: &'static str = Box::leak(m.name.clone().into_boxed_str());
                        Some((name, m.peak_gflops, m.bandwidth_gbps))
                    }
                }
                "h100" => return Err("threads=1 needs a measured machine: machine=cpu".into()),
                other => {
                    return Err(format!(
                        "unknown machine `{other}`: h100, cpu, gpu or gpu:NAME (e.g. gpu:h200)"
                    ))
                }
            };
            let mut ceilings = machine_ceilings(measured);
            ceilings.exp_rate = ceilings.exp_rate.or(exp_rate);
            ceilings.read_bandwidth = read_rate;
            ceilings.cache = ceilings.cache.or(cache);
            print!("{}", report(&variant, &ceilings));
            Ok(())
        }
        "rss-probe" => {
            use modern_attention::minimodel::attention_flash::Version;
            let name = std::env::args().nth(2).unwrap_or_default();
            let n: usize = std::env::args()
                .nth(3)
                .and_then(|x| x.parse().ok())
                .unwrap_or(8192);
            let ver = Version::ALL
                .into_iter()
                .find(|v| v.name() == name)
                .ok_or_else(|| format!("unknown version `{name}`"))?;
            let (ms, rss, err) = modern_attention::measure::cpu::rss_probe(ver, n)?;
            println!("{ms} {rss} {err}");
            Ok(())
        }
        "measure-cpu" => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            measure_cpu(&root, &rest)
        }
        "measure-gpu" => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            let commit = git_commit(&root);
            gpu_cli::measure_gpu(&root, &rest, commit, output_of("rustc", &["--version"]))
        }
        "gpu-probe" => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            gpu_cli::probe(&rest)
        }
        "kernels" => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            let stamp = (git_commit(&root), output_of("date", &["-u", "+%Y-%m-%d"]));
            gpu_cli::kernels(&rest, stamp)
        }
        "-h" | "--help" | "help" => {
            println!(
                "usage: modern-attention [all|render|check|book|predict KEY=VALUE...|\
                 measure-cpu [--quick] [--with-torch] [--peer FILE]|\
                 measure-gpu [--quick] [--only flash|paged|race|dram] [--peer FILE] [--peer-decode FILE] \
                 [--peer-check FILE] [--race FILE] [--dram FILE] [--out DIR]|gpu-probe ...|\
                 kernels [--json FILE] [--cubin DIR] [WORD...]]"
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
