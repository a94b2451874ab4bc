//! Every `{{#include file:anchor}}` in the book names a file that exists and an anchor it defines
//! (mdbook silently includes nothing for an unknown anchor), and every chapter opens with its Resumen.

use std::fs;
use std::path::{Path, PathBuf};

fn chapters(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.ends_with("generated") {
            chapters(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") && !p.ends_with("SUMMARY.md") {
            out.push(p);
        }
    }
}

#[test]
fn includes_resolve_to_real_anchors() {
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("book");
    let mut files = Vec::new();
    chapters(&book, &mut files);
    let mut problems = Vec::new();
    let mut count = 0;
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        for (pos, _) in text.match_indices("{{#include ") {
            let rest = &text[pos + "{{#include ".len()..];
            let Some(end) = rest.find("}}") else {
                problems.push(format!("{}: unterminated include", f.display()));
                continue;
            };
            let spec = rest[..end].trim();
            let (path, anchor) = match spec.split_once(':') {
                Some((p, a)) => (p, Some(a)),
                None => (spec, None),
            };
            let target = f.parent().unwrap().join(path);
            count += 1;
            match fs::read_to_string(&target) {
                Err(_) => problems.push(format!("{}: {path} does not exist", f.display())),
                Ok(src) => {
                    if let Some(a) = anchor.filter(|a| !a.chars().next().unwrap().is_ascii_digit())
                    {
                        let has = |tag: &str| {
                            src.lines().any(|l| {
                                l.trim_start().starts_with("//")
                                    && l.contains(&format!("{tag}: {a}"))
                                    && l.trim_end().ends_with(a)
                            })
                        };
                        if !has("ANCHOR") || !has("ANCHOR_END") {
                            problems.push(format!("{}: {path} has no anchor `{a}`", f.display()));
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!("{count} includes checked in {} chapters", files.len());
    assert!(
        count >= files.len(),
        "every chapter includes code or tables, yet {count} were found"
    );
}

#[test]
fn every_chapter_opens_with_a_resumen() {
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("book");
    for dir in ["theory", "lab"] {
        for e in fs::read_dir(book.join(dir)).unwrap() {
            let p = e.unwrap().path();
            let text = fs::read_to_string(&p).unwrap();
            let head: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(2)
                .collect();
            assert!(
                head.first().is_some_and(|l| l.starts_with("# ")),
                "{}: no title",
                p.display()
            );
            assert!(
                head.get(1).is_some_and(|l| l.starts_with("> **Resumen.**")),
                "{}: the line under the title must be the Spanish `> **Resumen.**`",
                p.display()
            );
        }
    }
}
