//! The book never shows a number its code and data do not produce: re-render every generated table and
//! figure and compare with what is committed under `book/generated/`.

use modern_attention::regenerate::{render_all, stale};
use std::path::Path;

#[test]
fn book_generated_is_fresh() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("book/generated");
    let bad = stale(&dir, &render_all()).unwrap();
    assert!(
        bad.is_empty(),
        "book/generated/ is stale; run `cargo run --release -- render` and commit:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(render_all(), render_all());
}
