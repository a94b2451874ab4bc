//! The main job's renderers: every table (and later figure) the book includes from `book/generated/`.
//!
//! Each artifact is a pure function of the crate's code and the committed measurements, so rendering
//! twice gives the same bytes; a test re-renders everything and fails if `book/generated/` differs.

pub mod figures;
pub mod lab00;
pub mod lab01;
pub mod lab02;
pub mod lab03;
pub mod lab04;
pub mod roofline_fig;
pub mod targets;
pub mod theory00;
pub mod theory02;

use std::fs;
use std::io;
use std::path::Path;

/// One generated file: its name under `book/generated/` and its full contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// File name, e.g. `t00_intensity.md`.
    pub name: &'static str,
    /// The file's contents.
    pub contents: String,
}

/// Every artifact the book includes, in a fixed order, from the code and the committed measurements
/// (`measurements/*.json` in the repository).
pub fn render_all() -> Vec<Artifact> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
    let mut files =
        crate::measure::load_all(&dir).unwrap_or_else(|e| panic!("unreadable measurements: {e}"));
    cpu_files_first(&mut files);
    let mut out = theory00::render();
    out.extend(lab00::render());
    out.extend(theory02::render());
    out.extend(lab01::render(&files));
    out.extend(lab02::render(&files));
    let traces = crate::measure::trace::load_all(&dir.join("traces"))
        .unwrap_or_else(|e| panic!("unreadable traces: {e}"));
    out.extend(lab02::render_trace(&traces));
    let ptxas = crate::measure::ptxas::load_all(&dir.join("ptxas"))
        .unwrap_or_else(|e| panic!("unreadable ptxas reports: {e}"));
    out.push(lab02::render_ptxas(&ptxas));
    out.extend(lab03::render(&files));
    out.extend(lab04::render(&files));
    out.extend(roofline_fig::render(&files));
    out.extend(targets::render(&files));
    out
}

/// The CPU files first, the most recently measured first (then by file name), so a reader's fresh
/// measurement is the one the book's single-machine tables and figures show; the GPU files after them
/// in their loaded order. The order depends on the files only, never on the machine rendering them, so
/// every machine renders the same book from the same files.
fn cpu_files_first(files: &mut [(String, crate::measure::MeasurementFile)]) {
    files.sort_by(|(na, a), (nb, b)| {
        let (ca, cb) = (a.machine.kind == "cpu", b.machine.kind == "cpu");
        match (ca, cb) {
            (true, true) => b
                .generated
                .date
                .cmp(&a.generated.date)
                .then_with(|| na.cmp(nb)),
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            (false, false) => std::cmp::Ordering::Equal,
        }
    });
}

/// Write every artifact into `dir`, creating it if needed. Returns the names written.
pub fn write_all(dir: &Path, artifacts: &[Artifact]) -> io::Result<Vec<&'static str>> {
    fs::create_dir_all(dir)?;
    for a in artifacts {
        fs::write(dir.join(a.name), &a.contents)?;
    }
    Ok(artifacts.iter().map(|a| a.name).collect())
}

/// Compare `dir` against freshly rendered artifacts: the names of files that are missing or differ,
/// and of `.md`/`.svg` files in `dir` that nothing renders any more.
pub fn stale(dir: &Path, artifacts: &[Artifact]) -> io::Result<Vec<String>> {
    let mut bad = Vec::new();
    for a in artifacts {
        match fs::read_to_string(dir.join(a.name)) {
            Ok(s) if s == a.contents => {}
            Ok(_) => bad.push(format!("{} differs from what the code renders", a.name)),
            Err(_) => bad.push(format!("{} is missing", a.name)),
        }
    }
    if dir.exists() {
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !artifacts.iter().any(|a| a.name == name) {
                bad.push(format!("{name} is not rendered by anything"));
            }
        }
    }
    Ok(bad)
}

/// A caption's sentence naming every run among `records` that failed its check (and so has no row or
/// cell in the table it captions), with its implementation, configuration and max error; empty when
/// all passed. A failed check is shown, never dropped silently.
pub fn failed_checks<'a>(records: impl Iterator<Item = &'a crate::measure::Record>) -> String {
    let mut failed: Vec<String> = Vec::new();
    for r in records.filter(|r| !r.checked) {
        let shape = if r.nq == 1 {
            format!("N={}", r.nk)
        } else {
            format!("N={} D={} {}", r.nq, r.d, r.mask)
        };
        let line = format!(
            "`{}` at {} {} (max error {:.2e})",
            r.implementation, r.dtype, shape, r.max_err
        );
        if !failed.contains(&line) {
            failed.push(line);
        }
    }
    if failed.is_empty() {
        String::new()
    } else {
        format!(
            " Failed the check, so left out (where a peer's run failed, its ratios are missing too): {}.",
            failed.join("; ")
        )
    }
}

/// [`failed_checks`] over one variant's records of `f`.
pub fn failed_in(f: &crate::measure::MeasurementFile, variant: &str) -> String {
    failed_checks(f.records.iter().filter(|r| r.variant == variant))
}

/// A markdown table from a header and rows.
pub fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n", header.join(" | "));
    s += &format!("|{}\n", "---|".repeat(header.len()));
    for r in rows {
        s += &format!("| {} |\n", r.join(" | "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(kind: &str, date: &str) -> crate::measure::MeasurementFile {
        serde_json::from_value(serde_json::json!({
            "machine": {"kind": kind, "name": "m", "cores": 2, "peak_gflops": 1.0, "bandwidth_gbps": 1.0},
            "generated": {"date": date, "commit": "c", "rustc": "r", "threads": 2},
            "records": []
        }))
        .expect("a minimal measurement file")
    }

    /// A failed check is named in the caption with its error (once, however many rounds repeat it),
    /// and a file whose runs all passed adds nothing.
    #[test]
    fn a_failed_check_is_named_not_dropped() {
        use crate::measure::Record;
        use crate::minimodel::shape::AttnShape;
        let s = AttnShape::new(1, 4, 4, 2048, 2048, 128).expect("shape");
        let ok = Record::new("flash", "ours/v3_tiled", "f16", &s, "causal").checked(true, 9.7e-4);
        let bad = Record::new("flash", "torch/cpu", "f16", &s, "causal").checked(false, 1.08e-3);
        assert_eq!(failed_checks([&ok, &ok].into_iter()), "");
        let note = failed_checks([&ok, &bad, &bad].into_iter());
        assert_eq!(
            note,
            " Failed the check, so left out (where a peer's run failed, its ratios are missing too): \
             `torch/cpu` at f16 N=2048 D=128 causal (max error 1.08e-3)."
        );
        let d = AttnShape::new(16, 32, 8, 1, 4096, 128).expect("decode shape");
        let nan = Record::new("paged_decode", "ours/gpu-paged", "f16", &d, "none")
            .checked(false, f64::NAN);
        assert!(failed_checks([&nan].into_iter())
            .contains("`ours/gpu-paged` at f16 N=4096 (max error NaN)"));
    }

    /// The newest CPU file leads whatever machine renders the book; GPU files keep their order.
    #[test]
    fn the_newest_cpu_file_leads_and_gpu_files_keep_their_order() {
        let mut files = vec![
            ("cpu-a.json".to_string(), file("cpu", "2026-11-28")),
            ("gpu-b.json".to_string(), file("gpu", "2026-11-30")),
            ("cpu-c.json".to_string(), file("cpu", "2026-11-29")),
            ("gpu-a.json".to_string(), file("gpu", "2026-11-01")),
            ("cpu-b.json".to_string(), file("cpu", "2026-11-29")),
        ];
        cpu_files_first(&mut files);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "cpu-b.json",
                "cpu-c.json",
                "cpu-a.json",
                "gpu-b.json",
                "gpu-a.json"
            ]
        );
    }
}
