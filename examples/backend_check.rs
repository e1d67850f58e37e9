//! Checks every backend compiled into this binary against the golden tiny-AE fixture (and, when
//! present, the training-target fixtures: HOG, teachers-tiny, disc-tiny) and times MAETok-B-128
//! encode/decode. Used on GPU machines, where only prebuilt binaries run:
//! `backend_check --fixtures fixtures [--backends cuda,wgpu] [--batches 1,4,16]`.
//! Writes one JSON report to stdout; exits non-zero if any parity check fails.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::{backend::Backend, Distribution, Tensor};
use clap::Parser;
use maetok::backend::{run, Task};
use maetok_nn::testing::{errors, read_tensors, tensor};
use maetok_tokenizer::{load_with_args, ModelArgs, Tokenizer};
use rand::SeedableRng;
use serde_json::json;

#[derive(Parser, Clone)]
struct Cli {
    /// The fixtures folder (the repository's `fixtures/`) (needs tokenizer-ae-tiny/).
    #[arg(long)]
    fixtures: PathBuf,
    /// Backends to check (default: all compiled in).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// Batch sizes for the B-128 timing (empty: skip timing).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    batches: Vec<usize>,
    /// Timed repetitions per measurement (after one warm-up).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// CPU threads for every pool: rayon, matrixmultiply, OpenBLAS if built in (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

struct Check(Cli);

/// One parity line: `(name, ours, fixture, max_abs, rel)`.
fn check_line(name: &str, ours: Vec<f32>, want: &[f32], max_abs: f32, rel: f32) -> serde_json::Value {
    let (a, r) = errors(&ours, want);
    json!({"check": name, "max_abs": a, "rel": r, "pass": a <= max_abs || r <= rel})
}

/// HOG, the DINOv2/SigLIP teachers and the DINO discriminator against their fixtures (skipped
/// when a fixture folder is absent).
fn targets_parity<B: Backend>(fixtures: &std::path::Path, device: &B::Device) -> Result<Vec<serde_json::Value>> {
    use maetok_targets::disc::{load_dino_disc, DiscResize};
    use maetok_targets::{load_vit, HogGenerator, VitConfig};
    let mut out = Vec::new();
    let hog_dir = fixtures.join("hog");
    if hog_dir.is_dir() {
        let f = read_tensors(hog_dir.join("io.safetensors"));
        let y = HogGenerator::new().forward(tensor::<B, 4>(&f["quant256_input"], device))?;
        out.push(check_line("hog_quant256", to_vec(y), &f["quant256_hog"].1, 1e-5, 1e-5));
    }
    let t = fixtures.join("teachers-tiny");
    if t.is_dir() {
        let io = read_tensors(t.join("io.safetensors"));
        let x = tensor::<B, 4>(&io["input_imagenet"], device);
        let dino = maetok::targets::testing::teachers_tiny(&t, "dino", VitConfig::dinov2_large())?;
        let siglip = maetok::targets::testing::teachers_tiny(&t, "siglip", VitConfig::siglip_so400m())?;
        for (name, cfg, file, key) in [
            ("dino_features", dino, "dino_src_patch14.safetensors", "dino_features"),
            ("siglip_features", siglip, "siglip_src_patch14.safetensors", "siglip_features"),
        ] {
            let (m, _) = load_vit::<B>(t.join(file), &cfg, device)?;
            out.push(check_line(name, to_vec(m.forward_features(x.clone())?), &io[key].1, 1e-4, 1e-4));
        }
    }
    let d = fixtures.join("disc-tiny");
    if d.is_dir() {
        let io = read_tensors(d.join("io.safetensors"));
        let cfg = maetok::targets::testing::disc_tiny(&d)?;
        let heads = d.join("disc_heads.safetensors");
        let (mut disc, _) = load_dino_disc::<B>(d.join("dino_backbone.safetensors"), Some(heads.as_path()), &cfg, device)?;
        let x = tensor::<B, 4>(&io["input"], device);
        out.push(check_line(
            "disc_logits_eval",
            to_vec(disc.forward(x.clone(), DiscResize::Interpolate, false)?),
            &io["logits_eval"].1,
            1e-4,
            1e-4,
        ));
        out.push(check_line(
            "disc_logits_train",
            to_vec(disc.forward(x, DiscResize::Interpolate, true)?),
            &io["logits_train"].1,
            1e-4,
            1e-4,
        ));
    }
    Ok(out)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32")
}

impl Task for Check {
    type Output = serde_json::Value;
    fn run<B: Backend>(self, device: B::Device, name: &str) -> Result<serde_json::Value> {
        let cli = self.0;
        let dir = cli.fixtures.join("tokenizer-ae-tiny");
        let args = maetok::tokenizer::testing::fixture_args(&dir)?;
        eprintln!("{name}: loading the tiny fixture model");
        let (mut model, _) = load_with_args::<B>(&args, "tiny", dir.join("model.safetensors"), &device)?;
        let io = read_tensors(dir.join("io.safetensors"));
        let mut parity = Vec::new();
        let mut ok = true;
        for fused in [false, true] {
            eprintln!("{name}: parity, fused attention = {fused} (first use compiles kernels)");
            model.set_fused_attention(fused);
            let z = model.encode(tensor::<B, 4>(&io["input"], &device))?;
            let y = model.decode(tensor::<B, 3>(&io["latent"], &device))?;
            let (za, zr) = errors(&to_vec(z), &io["latent"].1);
            let (ya, yr) = errors(&to_vec(y), &io["output"].1);
            let pass = (za <= 1e-4 || zr <= 1e-4) && (ya <= 1e-4 || yr <= 1e-4);
            ok &= pass;
            parity.push(json!({"fused_attention": fused, "latent_max_abs": za, "latent_rel": zr, "output_max_abs": ya, "output_rel": yr, "pass": pass}));
            eprintln!("{name}: {}", parity.last().expect("pushed"));
        }
        eprintln!("{name}: training-target parity (HOG, teachers, discriminator)");
        let targets = targets_parity::<B>(&cli.fixtures, &device)?;
        for t in &targets {
            ok &= t["pass"].as_bool().unwrap_or(false);
            eprintln!("{name}: {t}");
        }
        let mut timing = Vec::new();
        if !cli.batches.is_empty() {
            B::seed(&device, 0);
            let cfg = ModelArgs::default().resolve("MAETok-B-128")?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let mut big = Tokenizer::<B>::new(&cfg, &mut rng, &device);
            for fused in [false, true] {
                big.set_fused_attention(fused);
                for &bs in &cli.batches {
                    eprintln!("{name}: B-128 fused={fused} batch {bs}: warm-up (compiles and autotunes kernels)");
                    let x = Tensor::<B, 4>::random([bs, 3, 256, 256], Distribution::Uniform(-1.0, 1.0), &device);
                    let z = big.encode(x.clone())?;
                    let _ = big.decode(z.clone())?;
                    let _ = B::sync(&device);
                    let t0 = Instant::now();
                    for _ in 0..cli.reps {
                        let _ = big.encode(x.clone())?;
                    }
                    let _ = B::sync(&device);
                    let enc = t0.elapsed().as_secs_f64() / cli.reps as f64;
                    let t0 = Instant::now();
                    for _ in 0..cli.reps {
                        let _ = big.decode(z.clone())?;
                    }
                    let _ = B::sync(&device);
                    let dec = t0.elapsed().as_secs_f64() / cli.reps as f64;
                    let f = bs as f64;
                    timing.push(json!({"fused_attention": fused, "batch": bs, "encode_s": enc, "decode_s": dec,
                        "encode_img_per_s": f / enc, "decode_img_per_s": f / dec,
                        "encode_gflops": 71.2 * f / enc, "decode_gflops": 71.3 * f / dec}));
                    eprintln!("{name} fused={fused} batch {bs}: encode {enc:.4} s, decode {dec:.4} s");
                }
            }
        }
        Ok(json!({"backend": name, "parity_pass": ok, "parity": parity, "targets_parity": targets, "b128_timing": timing}))
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    maetok::backend::configure_cpu(cli.threads)?;
    let tiny = cli.fixtures.join("tokenizer-ae-tiny");
    for f in ["config.json", "model.safetensors", "io.safetensors"] {
        if !tiny.join(f).is_file() {
            anyhow::bail!("{} is missing: --fixtures must point at the fixtures folder", tiny.join(f).display());
        }
    }
    let backends =
        if cli.backends.is_empty() { maetok::backend::available().iter().map(|s| s.to_string()).collect() } else { cli.backends.clone() };
    let mut reports = Vec::new();
    let mut all_ok = true;
    for b in backends {
        match run(&b, Check(cli.clone())) {
            Ok(r) => {
                all_ok &= r["parity_pass"].as_bool().unwrap_or(false);
                reports.push(r);
            }
            Err(e) => {
                all_ok = false;
                reports.push(json!({"backend": b, "error": e.to_string()}));
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&reports)?);
    if !all_ok {
        anyhow::bail!("a backend failed its parity check");
    }
    Ok(())
}
