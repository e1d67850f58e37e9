//! A full disk or a killed process during a checkpoint or cache write leaves the previous files
//! loadable. The disk is "filled" with the file-size limit (`ulimit -f`, RLIMIT_FSIZE) of a
//! child process (this test binary again, running the ignored test below): its writes fail
//! with EFBIG once a file passes the limit, as with ENOSPC; with SIGXFSZ left at its default
//! the kernel kills it mid-write instead.

use std::path::Path;
use std::process::Command;

use burn::backend::NdArray;
use maetok::nn::io::{Exporter, VisitParams};
use maetok::tokenizer::{load_pretrained, save_pretrained, Tokenizer};
use maetok::train::data::latent_cache::CacheManifest;
use maetok::train::data::{LatentCache, LatentCacheWriter, LatentRecord};
use rand::SeedableRng;

type B = NdArray<f32>;

const CHILD: &str = "MAETOK_WRITE_FAILURE_DIR";
/// Latent shape of the test cache: 4 KB per latent, so one shard passes the child's limit.
const LATENT: [usize; 2] = [64, 16];

fn save_model(width: usize, seed: u64, dir: &Path) -> Result<(), maetok::tokenizer::PretrainedError> {
    let a = maetok::tokenizer::testing::tiny_args(width);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut model = Tokenizer::<B>::new(&a.resolve("test").unwrap(), &mut rng, &Default::default());
    save_pretrained(&mut model, &a, dir)
}

fn exported(dir: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (mut model, _) = load_pretrained::<B>(dir, &Default::default()).expect("the previous model still loads");
    let mut ex = Exporter::new();
    model.visit_params("", &mut ex);
    ex.tensors().iter().map(|(k, (s, v))| (k.clone(), s.clone(), v.clone())).collect()
}

fn record(i: usize) -> LatentRecord {
    let n = LATENT[0] * LATENT[1];
    LatentRecord { zq: vec![i as f32; n], zq_flip: vec![-(i as f32); n], label: 0, index: i, path: format!("a/{i}.png") }
}

fn template() -> CacheManifest {
    CacheManifest::new("tok".into(), "src".into(), 16, LATENT, vec!["a".into()], 4, 2)
}

/// The child: overwrite the model with a larger one and add a shard to the cache, under the
/// parent's file-size limit. Both writes must fail (or the kernel kills the process).
#[test]
#[ignore = "run by a_failed_or_killed_write_leaves_the_previous_files, under a file-size limit"]
fn child_writes_under_a_file_size_limit() {
    let Some(dir) = std::env::var_os(CHILD) else { return };
    let dir = Path::new(&dir);
    let model = save_model(64, 2, &dir.join("model"));
    let mut w = LatentCacheWriter::create_or_resume(dir.join("cache"), template()).expect("resume");
    let cache = w.push(record(2)).and_then(|_| w.push(record(3))).and_then(|_| w.flush());
    eprintln!("model write: {model:?}\ncache write: {cache:?}");
    assert!(model.is_err() && cache.is_err(), "both writes should fail under the limit");
    std::process::exit(3);
}

#[test]
fn a_failed_or_killed_write_leaves_the_previous_files() {
    let tmp = tempfile::tempdir().unwrap();
    for (mode, trap) in [("write error (EFBIG)", "trap '' XFSZ;"), ("killed by SIGXFSZ", "")] {
        let dir = tmp.path().join(mode.split(' ').next().unwrap());
        save_model(8, 1, &dir.join("model")).unwrap();
        let before = exported(&dir.join("model"));
        let mut w = LatentCacheWriter::create_or_resume(dir.join("cache"), template()).unwrap();
        w.push(record(0)).unwrap();
        w.push(record(1)).unwrap();
        w.flush().unwrap();
        // 16 blocks of 512 bytes: the small model (~8 KB) fits, the larger one and a shard do not.
        // The child's output through pipes (`output`): inherited, a log file already past the
        // limit would make its own printing fail (EFBIG) before the writes under test.
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -f 16; {trap} exec \"$0\" --exact child_writes_under_a_file_size_limit --ignored --nocapture"))
            .arg(std::env::current_exe().unwrap())
            .env(CHILD, &dir)
            .output()
            .unwrap();
        let status = child.status;
        eprintln!(
            "{mode}: child ended with {status:?}\n--- child stdout\n{}--- child stderr\n{}",
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
        assert!(!status.success(), "{mode}: the child's writes should not succeed");
        if trap.is_empty() {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(25), "{mode}: expected SIGXFSZ, got {status:?}");
        } else {
            assert_eq!(status.code(), Some(3), "{mode}: the child's writes did not both fail: {status:?}");
            // A failed write removes its temporary file.
            let left: Vec<_> = std::fs::read_dir(dir.join("model")).unwrap().flatten().map(|e| e.file_name()).collect();
            assert_eq!(left.len(), 2, "{mode}: leftovers in the model folder: {left:?}");
        }
        assert_eq!(exported(&dir.join("model")), before, "{mode}: the previous model changed");
        let cache = LatentCache::open(dir.join("cache")).expect("the previous cache still opens");
        assert_eq!(cache.len(), 2, "{mode}");
        assert_eq!(cache.get(1), record(1), "{mode}");
    }
}
