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
    out.extend(lab03::render(&files));
    out.extend(lab04::render(&files));
    out.extend(roofline_fig::render(&files));
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
