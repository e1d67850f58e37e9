//! The tokenizer training run end to end on a tiny config: outputs, resume by re-running, a
//! run folder of another config, unreadable and missing training images, the recipe yaml.

use burn::backend::{Autodiff, NdArray};
use maetok::quickstart::{tiny_model_args, tiny_train_config, QuickstartArgs};
use maetok::tokenizer_recipe::TokenizerRecipe;
use maetok::train_tokenizer::{run_on, TrainData, TrainTokenizerArgs};
use maetok_tokenizer::{load_pretrained, VitSize};
use maetok_train::data::Layout;
use maetok_train::tokenizer::StepLog;

type A = Autodiff<NdArray<f32>>;

fn args(out: &std::path::Path, steps: u64, data: TrainData) -> TrainTokenizerArgs {
    let q = QuickstartArgs { steps: 10, batch_size: 4, image_size: 32, ..QuickstartArgs::default() };
    let small = VitSize { width: 32, depth: 1, heads: 2 };
    let model = tiny_model_args(32).with_encoder_size(small).with_decoder_size(small).with_aux_decoder_size(small);
    TrainTokenizerArgs {
        out: out.to_path_buf(),
        model,
        origin: "tiny".into(),
        train: tiny_train_config(&q),
        data,
        steps,
        checkpoint_every: 2,
        keep_checkpoints: 2,
        preview_every: 2,
        lpips: None,
        dino_teacher: None,
        clip_teacher: None,
        disc_trunk: None,
        init_from: None,
        progress: false,
        devices: vec![0],
        world: maetok_train::parallel::World::local(1),
    }
}

/// The facade crate's tests run unoptimised, where Burn's autodiff graph of a training step
/// needs more than a test thread's 2 MiB of stack. One training test at a time: the tests compare
/// runs weight for weight, and parameter initialisation draws from Burn's process-wide RNG, which
/// the loss networks of a concurrently running test (built outside `maetok_train::seeded`) also
/// draw from; two tests interleaving there gave one of them other initial weights (a CI flake).
fn with_big_stack(f: impl FnOnce() + Send + 'static) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::Builder::new().stack_size(256 << 20).spawn(f).unwrap().join().unwrap();
}

fn log(out: &std::path::Path) -> Vec<StepLog> {
    std::fs::read_to_string(out.join("log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_run_writes_its_outputs_and_resumes_when_rerun() {
    with_big_stack(a_run_writes_its_outputs_and_resumes_when_rerun_body);
}

fn a_run_writes_its_outputs_and_resumes_when_rerun_body() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let device = Default::default();
    let procedural = TrainData::Procedural { len: 64, seed: 0 };
    let s = run_on::<A>(&args(&out, 3, procedural.clone()), &device).unwrap();
    assert_eq!((s.resumed_from_step, s.steps), (0, 3));
    // A kill after step 3's checkpoint but with a log line of a step 4 that was never saved.
    let mut l = log(&out);
    let mut ghost = l[2].clone();
    ghost.step = 4;
    l.push(ghost);
    let text: String = l.iter().map(|l| serde_json::to_string(l).unwrap() + "\n").collect();
    std::fs::write(out.join("log.jsonl"), text).unwrap();
    // ... and burn-train's metric file of that step too.
    let rec_file = out.join("metrics/train/epoch-1/rec.log");
    let mut rec = std::fs::read_to_string(&rec_file).unwrap();
    assert_eq!(rec.lines().count(), 3, "one value per step");
    rec += "999\n";
    std::fs::write(&rec_file, rec).unwrap();

    let s = run_on::<A>(&args(&out, 5, procedural.clone()), &device).unwrap();
    assert_eq!((s.resumed_from_step, s.steps), (3, 5));
    let steps: Vec<u64> = log(&out).iter().map(|l| l.step).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5]);
    // The dashboard's files (64 images, batch 4: one epoch) hold what the log holds.
    let logged: Vec<f64> = log(&out).iter().map(|l| l.rec).collect();
    assert_eq!(maetok_train::dashboard::read_metric(&out, 1, "rec").unwrap(), logged);
    let lr: Vec<f64> = log(&out).iter().map(|l| l.lr).collect();
    assert_eq!(maetok_train::dashboard::read_metric(&out, 1, "lr").unwrap(), lr);
    assert_eq!(maetok_train::dashboard::read_metric(&out, 1, "aux hog").unwrap().len(), 5);
    assert!(log(&out).iter().all(|l| l.mask_ratio.is_some() && l.aux.contains_key("hog")));
    for f in ["loss.svg", "summary.json", "previews/step-0000002.png", "previews/step-0000005.png", "model/config.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let preview = image::open(out.join("previews/step-0000005.png")).unwrap();
    assert!(preview.height() >= 2 * 128, "previews are enlarged");
    load_pretrained::<NdArray<f32>>(out.join("model"), &device).unwrap();

    // The same folder with another model config is refused, naming both.
    let mut other = args(&out, 6, procedural);
    other.model.num_latent_tokens = 8;
    let e = run_on::<A>(&other, &device).unwrap_err().to_string();
    assert!(e.contains("another model config") && e.contains("tiny"), "{e}");
}

/// `train_tokenizer --devices ndarray:0,ndarray:1`: two CPU peers log what one device logs (the
/// global batch's losses), the leader writes the outputs once, and re-running resumes on the
/// two peers.
#[test]
fn two_cpu_peers_train_log_and_resume_like_one_device() {
    with_big_stack(|| {
        let dir = tempfile::tempdir().unwrap();
        let procedural = TrainData::Procedural { len: 64, seed: 0 };
        let one = dir.path().join("one");
        run_on::<A>(&args(&one, 3, procedural.clone()), &Default::default()).unwrap();
        let two = dir.path().join("two");
        let peers = |steps| {
            let mut a = args(&two, steps, procedural.clone());
            (a.devices, a.world) = (vec![0, 1], maetok_train::parallel::World::local(2));
            a
        };
        let s = maetok::train_tokenizer::train_tokenizer(peers(2), "ndarray").unwrap();
        assert_eq!((s.resumed_from_step, s.steps), (0, 2));
        assert!(s.checkpoint.ends_with("step-0000002"), "{}", s.checkpoint);
        let s = maetok::train_tokenizer::train_tokenizer(peers(3), "ndarray").unwrap();
        assert_eq!((s.resumed_from_step, s.steps), (2, 3));
        let (l1, l2) = (log(&one), log(&two));
        assert_eq!(l2.iter().map(|l| l.step).collect::<Vec<_>>(), [1, 2, 3]);
        for (a, b) in l1.iter().zip(&l2) {
            assert_eq!(a.mask_ratio, b.mask_ratio);
            assert!((a.rec - b.rec).abs() <= 1e-5 * a.rec.abs().max(1e-3), "step {}: rec {} vs {}", a.step, a.rec, b.rec);
            assert!((a.total - b.total).abs() <= 1e-5 * a.total.abs().max(1e-3), "step {}: total {} vs {}", a.step, a.total, b.total);
        }
        load_pretrained::<NdArray<f32>>(two.join("model"), &Default::default()).unwrap();
        // Devices and peers that disagree (library callers; the CLI derives both from one flag).
        let mut mismatched = peers(4);
        mismatched.devices = vec![0];
        let e = maetok::train_tokenizer::train_tokenizer(mismatched, "ndarray").unwrap_err().to_string();
        assert!(e.contains("1 devices given for 2 peers"), "{e}");
        // A global batch that does not split over the peers is refused before any work.
        let mut odd = peers(4);
        odd.train.batch_size = 3;
        odd.out = dir.path().join("odd");
        let e = maetok::train_tokenizer::train_tokenizer(odd, "ndarray").unwrap_err().to_string();
        assert!(e.contains("batch of 3") && e.contains("2 peers"), "{e}");
    });
}

#[test]
fn unreadable_images_are_skipped_and_an_empty_folder_refused() {
    with_big_stack(unreadable_images_are_skipped_and_an_empty_folder_refused_body);
}

fn unreadable_images_are_skipped_and_an_empty_folder_refused_body() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (c, n) in [("a", 3), ("b", 3)] {
        std::fs::create_dir_all(data.join(c)).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(48, 40, |x, y| image::Rgb([(x * 5) as u8, (y * 6) as u8, (i * 70) as u8]));
            img.save(data.join(c).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(data.join("b/broken.jpg"), b"\xff\xd8\xff\xe0 truncated").unwrap();
    let device = Default::default();
    let folder = TrainData::Folder { path: data.clone(), layout: Layout::ImageFolder };
    let s = run_on::<A>(&args(&dir.path().join("run"), 2, folder), &device).unwrap();
    assert_eq!(s.skipped_images.len(), 1);
    assert!(s.skipped_images[0].ends_with("broken.jpg"));

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("class")).unwrap();
    let e = run_on::<A>(&args(&dir.path().join("run2"), 2, TrainData::Folder { path: empty, layout: Layout::ImageFolder }), &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("class") && e.contains("no PNG or JPEG"), "{e}");
}

#[test]
fn the_shipped_recipes_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["configs/maetok-b-64.yaml", "configs/tiny-cpu.yaml", "configs/tiny-softvq-cpu.yaml"] {
        let r = TokenizerRecipe::from_file(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e:#}"));
        r.model.resolve(f).unwrap();
    }
}

/// The tiny SoftVQ recipe trains through the same run (entropy loss logged) and exports a
/// SoftVQ-VAE folder.
#[test]
fn the_tiny_softvq_recipe_trains_and_exports_a_softvq_folder() {
    with_big_stack(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let recipe = TokenizerRecipe::from_file(root.join("configs/tiny-softvq-cpu.yaml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let (mut train, _) = recipe.train_config(64).unwrap();
        train.batch_size = 4;
        let mut a = args(&out, 2, TrainData::Procedural { len: 64, seed: 0 });
        a.model = recipe.model.clone();
        a.origin = "tiny-softvq-cpu.yaml".into();
        a.train = train;
        let s = run_on::<A>(&a, &Default::default()).unwrap();
        assert_eq!(s.steps, 2);
        assert!(log(&out).iter().all(|l| l.aux["entropy"].is_finite() && !l.aux.contains_key("hog")));
        let (model, _) = load_pretrained::<NdArray<f32>>(out.join("model"), &Default::default()).unwrap();
        let q = model.quantizer.expect("the export is a SoftVQ-VAE");
        assert_eq!((q.config.codebooks, q.config.size), (recipe.model.num_codebooks, recipe.model.codebook_size));
    });
}
