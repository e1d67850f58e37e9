//! Data-parallel generator training on Burn's collective engine, on the CPU: a tiny SiT and a
//! tiny DiT trained on 2 NdArray peers with global batch B end at the weights of 1 peer with
//! batch B; a resume on 2 peers is exact; two processes on 127.0.0.1 (`--num-nodes 2`, one peer
//! each) train to the weights of one process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use maetok_generator::LatentTransformerConfig;
use maetok_nn::io::{ParamVisitor, VisitParams};
use maetok_sampler::Schedule;
use maetok_train::data::latent_cache::CacheManifest;
use maetok_train::data::{LatentCache, LatentCacheWriter, LatentRecord};
use maetok_train::parallel::{run_peers, NodeSpec, ParallelError, World};
use maetok_train::{GeneratorTrainConfig, GeneratorTrainError, GeneratorTrainer};
use rand::{Rng, SeedableRng};

type I = NdArray<f32>;
type A = Autodiff<I>;

/// The collective server is one per process and backend: runs in this binary take turns.
static COLLECTIVE: Mutex<()> = Mutex::new(());

const LATENT: [usize; 2] = [8, 4];
const CLASSES: usize = 3;

/// A cache of 24 random latents with labels `i % 3`.
fn cache(dir: &Path) -> LatentCache {
    let classes = (0..CLASSES).map(|c| format!("c{c}")).collect();
    let mut w =
        LatentCacheWriter::create_or_resume(dir, CacheManifest::new("random".into(), "test".into(), 16, LATENT, classes, 24, 8)).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let n = LATENT[0] * LATENT[1];
    for i in 0..24 {
        let mut v = || (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect::<Vec<f32>>();
        let (zq, zq_flip) = (v(), v());
        w.push(LatentRecord { zq, zq_flip, label: i % CLASSES, index: i, path: format!("{i}.png") }).unwrap();
    }
    w.finish().unwrap();
    LatentCache::open(dir).unwrap()
}

fn tiny(dit: bool) -> LatentTransformerConfig {
    let mut c = if dit {
        maetok_dit::preset("DiT-S", LATENT[0], LATENT[1]).unwrap()
    } else {
        maetok_sit::preset("SiT-S", LATENT[0], LATENT[1]).unwrap()
    };
    (c.depth, c.hidden_size, c.num_heads, c.num_classes) = (2, 32, 2, CLASSES);
    if c.decoder_hidden_size.is_some() {
        c.decoder_hidden_size = Some(32);
    }
    c
}

fn train_config(dit: bool) -> GeneratorTrainConfig {
    let base = GeneratorTrainConfig { batch_size: 8, lr: 1e-3, ema_decay: 0.9, seed: 3, ..Default::default() };
    if dit {
        GeneratorTrainConfig { grad_clip: None, objective: GeneratorTrainConfig::diffusion(Schedule::Linear).objective, ..base }
    } else {
        base
    }
}

/// Every parameter value of a module, in visiting order.
struct Values(Vec<f32>);

impl<B: Backend> ParamVisitor<B> for Values {
    fn param<const D: usize>(&mut self, _: &str, p: &mut Param<Tensor<B, D>>) {
        self.0.extend(p.val().into_data().convert::<f32>().to_vec::<f32>().unwrap());
    }
    fn param_transposed(&mut self, key: &str, p: &mut Param<Tensor<B, 2>>) {
        self.param(key, p);
    }
    fn buffer(&mut self, _: &str, _: &[usize], _: &[f32]) {}
}

fn weights(t: &mut GeneratorTrainer<A>) -> Vec<f32> {
    let mut v = Values(Vec::new());
    t.model.visit_params("", &mut v);
    v.0
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `steps` steps of `t` forked onto 2 peers of this process; the peers' trainers.
fn on_two_peers(t: &GeneratorTrainer<A>, cache: &LatentCache, steps: usize) -> Result<Vec<GeneratorTrainer<A>>, GeneratorTrainError> {
    let world = World::local(2);
    let devices = vec![Default::default(); 2];
    let forks = (0..2).map(|k| t.fork(world.peer(k), &devices[k])).collect();
    run_peers::<I, _, _, GeneratorTrainError, _>(&world, &devices, forks, |_, mut t| {
        for _ in 0..steps {
            t.step(cache)?;
        }
        Ok(t)
    })
}

#[test]
fn two_peers_train_like_one_device_and_resume_exactly() {
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache(&tmp.path().join("latents"));
    let device = Default::default();
    for dit in [false, true] {
        let name = if dit { "DiT" } else { "SiT" };
        let fresh = || GeneratorTrainer::<A>::new(tiny(dit), train_config(dit), &device).unwrap();
        let mut one = fresh();
        for _ in 0..4 {
            one.step(&cache).unwrap();
        }
        let mut peers = on_two_peers(&fresh(), &cache, 4).unwrap();
        let w1 = weights(&mut one);
        let (w0, wb) = (weights(&mut peers[0]), weights(&mut peers[1]));
        assert_eq!(w0, wb, "{name}: both peers hold the same weights, bit for bit");
        let diff = max_abs_diff(&w1, &w0);
        let scale = w1.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!("{name}: 2 peers vs 1 device after 4 steps: max |Δw| = {diff:.3e} (max |w| = {scale:.3})");
        assert!(diff < 1e-4, "{name}: 2 peers end {diff} away from 1 device");
        for (a, b) in one.losses.iter().zip(&peers[0].losses) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{name}: losses {a} vs {b}");
        }

        // Resume on 2 peers: 2 steps, a checkpoint by the leader, 2 more; against a resumed pair.
        let out = tmp.path().join(format!("run-{name}"));
        let mut first = on_two_peers(&fresh(), &cache, 2).unwrap();
        first[0].save_checkpoint(&out).unwrap();
        let straight = on_two_peers(&first[0], &cache, 2).unwrap();
        let resumed = GeneratorTrainer::<A>::resume(&out, &device).unwrap().expect("a checkpoint");
        assert_eq!(resumed.step, 2);
        let mut again = on_two_peers(&resumed, &cache, 2).unwrap();
        let mut straight = straight;
        assert_eq!(straight[0].losses, again[0].losses, "{name}: a resume on 2 peers continues exactly");
        assert_eq!(weights(&mut straight[0]), weights(&mut again[0]), "{name}: resumed weights");
    }
}

#[test]
fn a_batch_that_does_not_split_is_refused_naming_it() {
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache(&tmp.path().join("latents"));
    let cfg = GeneratorTrainConfig { batch_size: 7, ..train_config(false) };
    let err = World::local(2).validate(cfg.batch_size).unwrap_err().to_string();
    assert!(err.contains("batch of 7") && err.contains("2 peers"), "{err}");
    // The trainer checks too, on every peer, before any collective call.
    let t = GeneratorTrainer::<A>::new(tiny(false), cfg, &Default::default()).unwrap();
    let Err(e) = on_two_peers(&t, &cache, 1) else { panic!("an uneven batch must fail") };
    assert!(matches!(e, GeneratorTrainError::Parallel(ParallelError::UnevenBatch { batch: 7, world: 2 })), "{e}");
}

/// Environment of a node process started by [`two_processes_train_like_one`].
const NODE_ENV: &str = "MAETOK_TEST_NODE";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One node of the two-process run: `rank ports dir`; trains 3 steps, writes its weights.
fn node_main(spec: &str) {
    let parts: Vec<&str> = spec.split(' ').collect();
    let [rank, coord, data, dir] = parts[..] else { panic!("bad {NODE_ENV}: {spec}") };
    let dir = PathBuf::from(dir);
    let cache = LatentCache::open(dir.join("latents")).unwrap();
    let world = World {
        local_devices: 1,
        node: Some(NodeSpec {
            num_nodes: 2,
            node_rank: rank.parse().unwrap(),
            coordinator: format!("127.0.0.1:{coord}"),
            host: Some("127.0.0.1".into()),
            data_port: Some(data.parse().unwrap()),
        }),
        timeout: Duration::from_secs(60),
    };
    let t = GeneratorTrainer::<A>::new(tiny(false), train_config(false), &Default::default()).unwrap();
    let mut t = run_peers::<I, _, _, GeneratorTrainError, _>(&world, &[Default::default()], vec![t], |peer, mut t| {
        t.peer = peer;
        for _ in 0..3 {
            t.step(&cache)?;
        }
        Ok(t)
    })
    .unwrap()
    .remove(0);
    let w: Vec<u8> = weights(&mut t).iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join(format!("node-{rank}.bin")), w).unwrap();
}

/// Two processes on 127.0.0.1, one peer each, against one process with the whole batch. (This
/// is the test that found the hang fixed in `vendor/burn-collective`.)
#[test]
fn two_processes_train_like_one() {
    if let Ok(spec) = std::env::var(NODE_ENV) {
        return node_main(&spec);
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache(&tmp.path().join("latents"));
    let (coord, d0, d1) = (free_port(), free_port(), free_port());
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = [(0, d0), (1, d1)]
        .into_iter()
        .map(|(rank, data)| {
            Command::new(&exe)
                .args(["two_processes_train_like_one", "--exact", "--nocapture", "--test-threads=1"])
                .env(NODE_ENV, format!("{rank} {coord} {data} {}", tmp.path().display()))
                .spawn()
                .unwrap()
        })
        .collect();
    // One process, one device, the whole batch: the reference.
    let mut one = GeneratorTrainer::<A>::new(tiny(false), train_config(false), &Default::default()).unwrap();
    for _ in 0..3 {
        one.step(&cache).unwrap();
    }
    let want = weights(&mut one);
    // Bounded: a node that hangs is killed and the test fails.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut status = [None, None];
    while status.iter().any(Option::is_none) && Instant::now() < deadline {
        for (k, c) in children.iter_mut().enumerate() {
            if status[k].is_none() {
                status[k] = c.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in &mut children {
        let _ = c.kill();
    }
    for (rank, s) in status.iter().enumerate() {
        let s = s.unwrap_or_else(|| panic!("node {rank} did not finish within 120 s"));
        assert!(s.success(), "node {rank} failed: {s}");
    }
    for rank in 0..2 {
        let bytes = std::fs::read(tmp.path().join(format!("node-{rank}.bin"))).unwrap();
        let got: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let diff = max_abs_diff(&want, &got);
        println!("node {rank} of 2 processes vs 1 process after 3 steps: max |Δw| = {diff:.3e}");
        assert!(diff < 1e-4, "node {rank} ends {diff} away from one process");
    }
}
