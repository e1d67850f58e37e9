//! Reconstruction metrics over image folders and ADM batches (PSNR/SSIM path; the Inception and
//! LPIPS networks have their own parity tests), and clear errors for mismatched sets.

use maetok::eval::ndarray::Array4;
use maetok::eval::npz::write_samples;
use maetok::evaluate::{evaluate_reconstruction, ReconstructionArgs};
use maetok::train::data::ProceduralShapes;

/// Unoptimised builds have large stack frames: a reconstruction evaluation needs a little over a
/// test thread's 2 MiB there (3 MiB suffice; the CLI's main thread has 8 MiB).
fn with_big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(64 << 20).spawn(f).unwrap().join().unwrap();
}

#[test]
fn reconstruction_metrics_over_folders_and_npz() {
    with_big_stack(reconstruction_metrics_over_folders_and_npz_body);
}

fn reconstruction_metrics_over_folders_and_npz_body() {
    let tmp = tempfile::tempdir().unwrap();
    let shapes = ProceduralShapes::new(32, 1);
    let (a, b) = (tmp.path().join("inputs"), tmp.path().join("recon"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut stack = Array4::<u8>::zeros((5, 32, 32, 3));
    for i in 0..5 {
        let (img, _) = shapes.get(i);
        img.save(a.join(format!("{i:03}.png"))).unwrap();
        let mut noisy = img.clone();
        for (k, p) in noisy.pixels_mut().enumerate() {
            p.0[0] = p.0[0].saturating_add((k % 7) as u8 * 3);
        }
        noisy.save(b.join(format!("{i:03}.png"))).unwrap();
        stack.slice_mut(maetok::eval::ndarray::s![i as usize, .., .., ..]).as_slice_mut().unwrap().copy_from_slice(noisy.as_raw());
    }
    let npz = tmp.path().join("recon.npz");
    write_samples(&npz, &stack).unwrap();
    let args = ReconstructionArgs {
        inputs: a.clone(),
        reconstructions: b.clone(),
        inception: None,
        lpips: None,
        progress: false,
        batch_size: 2,
        devices: vec![],
    };
    let r = evaluate_reconstruction(args.clone(), "ndarray").unwrap();
    assert_eq!(r.n, 5);
    assert!(r.psnr > 25.0 && r.psnr < 60.0, "psnr {}", r.psnr);
    assert!(r.ssim > 0.5 && r.ssim < 1.0 && r.ssim_reference >= r.ssim, "ssim {} / {}", r.ssim, r.ssim_reference);
    assert!(r.rfid.is_none() && r.lpips.is_none());
    // The same reconstructions as an ADM batch give the same numbers.
    let r2 = evaluate_reconstruction(ReconstructionArgs { reconstructions: npz, ..args.clone() }, "ndarray").unwrap();
    assert!((r2.psnr - r.psnr).abs() < 1e-9 && (r2.ssim - r.ssim).abs() < 1e-9);
    // Batches (of 2) spread over two devices give the one-device report exactly.
    let two = ReconstructionArgs { devices: vec![0, 1], inception: None, ..args.clone() };
    let r3 = evaluate_reconstruction(two, "ndarray").unwrap();
    assert_eq!((r3.n, r3.psnr, r3.ssim, r3.ssim_reference), (r.n, r.psnr, r.ssim, r.ssim_reference));
    // Another count is refused, naming both sets.
    std::fs::remove_file(b.join("004.png")).unwrap();
    let err = evaluate_reconstruction(args, "ndarray").unwrap_err().to_string();
    assert!(err.contains("inputs") && err.contains("recon") && err.contains("5 images") && err.contains("4 images"), "{err}");
}
