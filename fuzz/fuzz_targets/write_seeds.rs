//! Writes each target's seed corpus: `write_seeds <out>` fills `<out>/<target>/seed-<n>`.
//! (A libFuzzer binary too, so that it links with the coverage instrumentation: run with
//! `-runs=0` after setting `MAETOK_FUZZ_SEEDS`.)
#![no_main]
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {
    let Some(out) = std::env::var_os("MAETOK_FUZZ_SEEDS") else { return };
    let out = std::path::PathBuf::from(out);
    for (name, _) in maetok_fuzz::TARGETS {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).expect("seed folder");
        for (i, s) in maetok_fuzz::seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).expect("seed");
        }
    }
});
