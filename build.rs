//! Keeps the CUDA kernels in step with the crate: every `kernels/*.cu` and `kernels/*.cuh` is embedded
//! in the library as a string (`modern_attention::kernels::SOURCES`), compiled at run time by NVRTC on
//! a machine with a GPU, and a change to any of them rebuilds the crate.

use std::env;
use std::fs;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    let dir = Path::new("kernels");
    let mut entries: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cu") || n.ends_with(".cuh"))
            .collect(),
        Err(_) => Vec::new(),
    };
    entries.sort();
    let mut code = String::from("/// Every kernel source in `kernels/`: (file name, contents).\npub const SOURCES: &[(&str, &str)] = &[\n");
    for name in &entries {
        println!("cargo:rerun-if-changed=kernels/{name}");
        let path = fs::canonicalize(dir.join(name)).expect("kernel source readable");
        code += &format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        );
    }
    code += "];\n";
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernels.rs");
    fs::write(out, code).expect("OUT_DIR writable");
}
