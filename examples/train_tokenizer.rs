//! Train a MAETok tokenizer from a recipe yaml (the reference's `configs/maetok-b-64.yaml` is read
//! as it is; `configs/tiny-cpu.yaml` is a small CPU run), or fine-tune its decoder:
//!
//! ```text
//! cargo run --release --example train_tokenizer -- --config configs/tiny-cpu.yaml --out runs/tiny
//! cargo run --release --example train_tokenizer -- --config configs/maetok-b-64.yaml \
//!     --data-path /data/imagenet --layout imagenet --out runs/maetok-b-64 --backend cuda \
//!     --lpips-vgg vgg16-397923af.pth --lpips-lin vgg.pth --disc-trunk dino_deitsmall16_pretrain.pth \
//!     --dino-teacher dinov2-large/model.safetensors --clip-teacher siglip/open_clip_pytorch_model.bin
//! # 8 GPUs of one machine (each peer takes 1/8 of the global batch); several machines: add
//! # --num-nodes N --node-rank R --coordinator HOST:PORT on each
//! cargo run --release --features cuda --example train_tokenizer -- --config configs/maetok-b-64.yaml \
//!     --devices cuda:0,cuda:1,cuda:2,cuda:3,cuda:4,cuda:5,cuda:6,cuda:7 --out runs/maetok-b-64 ...
//! # stage 2: the decoder alone, encoder frozen, no masking
//! cargo run --release --example train_tokenizer -- --config configs/maetok-b-64.yaml --stage decoder-finetune \
//!     --init-from runs/maetok-b-64/model --out runs/maetok-b-64-dec ...
//! ```
//! Re-running the same command resumes where it stopped.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;
use maetok::parallel_cli::ParallelFlags;
use maetok::tokenizer_recipe::TokenizerRecipe;
use maetok::train::data::{ImageFolder, Layout};
use maetok::train::tokenizer::Stage;
use maetok::train_tokenizer::{train_tokenizer, TrainData, TrainTokenizerArgs};

#[derive(Parser)]
struct Cli {
    /// Recipe yaml (the reference trainer's keys).
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Training images (overrides the yaml's data_path); without either, the built-in
    /// procedural shapes.
    #[arg(long)]
    data_path: Option<PathBuf>,
    /// imagefolder | imagenet (`<path>/train/<wnid>/`) | tiny-imagenet
    #[arg(long, default_value = "imagefolder")]
    layout: String,
    /// Number of procedural images when no data path is given.
    #[arg(long, default_value_t = 100_000)]
    procedural: usize,
    /// Overrides: global batch size, image size, epochs, total steps.
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    image_size: Option<usize>,
    #[arg(long)]
    epochs: Option<u64>,
    #[arg(long)]
    steps: Option<u64>,
    /// Switch the auxiliary decoders on or off (`true`/`false`).
    #[arg(long)]
    aux_hog: Option<bool>,
    #[arg(long)]
    aux_dino: Option<bool>,
    #[arg(long)]
    aux_clip: Option<bool>,
    /// full | decoder-finetune
    #[arg(long, default_value = "full")]
    stage: String,
    /// Initial autoencoder (a model folder or model.safetensors), e.g. stage 1's `model/`.
    #[arg(long)]
    init_from: Option<PathBuf>,
    #[arg(long)]
    lpips_vgg: Option<PathBuf>,
    #[arg(long)]
    lpips_lin: Option<PathBuf>,
    #[arg(long)]
    dino_teacher: Option<PathBuf>,
    #[arg(long)]
    clip_teacher: Option<PathBuf>,
    /// DINO ViT-S/16 weights for the discriminator (without: no GAN loss).
    #[arg(long)]
    disc_trunk: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    keep_checkpoints: usize,
    /// ndarray | flex | wgpu | cuda (flex, wgpu and cuda need the cargo feature of that name);
    /// default ndarray, or the backend of --devices.
    #[arg(long)]
    backend: Option<String>,
    #[command(flatten)]
    parallel: ParallelFlags,
    /// CPU threads for every pool: rayon, matrixmultiply, OpenBLAS if built in (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    maetok::backend::configure_cpu(cli.threads)?;
    let mut recipe = TokenizerRecipe::from_file(&cli.config)?;
    if !recipe.ignored.is_empty() {
        tracing::info!("{}: keys without effect here: {}", recipe.origin, recipe.ignored.join(", "));
    }
    if let Some(b) = cli.batch_size {
        recipe.global_batch_size = b;
        recipe.train.batch_size = b;
    }
    if let Some(s) = cli.image_size {
        (recipe.model.image_size, recipe.model.base_image_size) = (s, s);
    }
    if let Some(e) = cli.epochs {
        recipe.epochs = e;
    }
    for (flag, field) in [
        (cli.aux_hog, &mut recipe.model.aux_hog_dec),
        (cli.aux_dino, &mut recipe.model.aux_dino_dec),
        (cli.aux_clip, &mut recipe.model.aux_clip_dec),
    ] {
        if let Some(on) = flag {
            *field = on;
        }
    }
    recipe.train.stage = match cli.stage.as_str() {
        "full" => Stage::Full,
        "decoder-finetune" => Stage::DecoderFinetune,
        other => bail!("--stage '{other}': choose full or decoder-finetune"),
    };
    let devices = cli.parallel.layout(cli.backend.as_deref())?;
    let layout: Layout = cli.layout.parse()?;
    let data = match cli.data_path.clone().or(recipe.data_path.clone()) {
        Some(path) => TrainData::Folder { path, layout },
        None => TrainData::Procedural { len: cli.procedural, seed: recipe.train.seed },
    };
    let images = match &data {
        TrainData::Folder { path, layout } => ImageFolder::open(path, *layout)?.len(),
        TrainData::Procedural { len, .. } => *len,
    };
    let (train, epoch_steps) = recipe.train_config(images)?;
    let lpips = match (cli.lpips_vgg, cli.lpips_lin) {
        (Some(v), Some(l)) => Some((v, l)),
        (None, None) => None,
        _ => bail!("give both --lpips-vgg and --lpips-lin, or neither"),
    };
    let args = TrainTokenizerArgs {
        out: cli.out,
        model: recipe.model.clone(),
        origin: recipe.origin.clone(),
        train,
        data,
        steps: cli.steps.unwrap_or(epoch_steps),
        checkpoint_every: recipe.ckpt_every,
        keep_checkpoints: cli.keep_checkpoints,
        preview_every: recipe.vis_every,
        lpips,
        dino_teacher: cli.dino_teacher,
        clip_teacher: cli.clip_teacher,
        disc_trunk: cli.disc_trunk,
        init_from: cli.init_from,
        progress: true,
        devices: devices.indices,
        world: devices.world,
    };
    let s = train_tokenizer(args, &devices.backend)?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
