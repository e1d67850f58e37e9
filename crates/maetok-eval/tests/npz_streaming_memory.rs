//! Writing an ADM `samples.npz` holds one batch of images in memory, not the set: the peak of
//! live heap bytes while streaming 8 batches stays within a small multiple of one batch, and the
//! file reads back in NumPy's layout (`arr_0`, `|u1`, C order, `[N, H, W, 3]`, 64-byte aligned
//! header). Its own test binary: the allocator below counts every allocation of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use maetok_eval::npz::{parse_npy_header, SampleStream, SampleWriter};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn samples_npz_is_written_one_batch_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.npz");
    let (n, h, w, batch) = (96usize, 64usize, 64usize, 12usize);
    let image = h * w * 3;
    let pixel = |i: usize, k: usize| ((i * 131 + k * 7) % 251) as u8;
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut writer = SampleWriter::create(&path, n, h, w).unwrap();
    for start in (0..n).step_by(batch) {
        // One batch of images, as a sampler produces them.
        let mut images = Vec::with_capacity(batch * image);
        images.extend((start..start + batch).flat_map(|i| (0..image).map(move |k| pixel(i, k))));
        writer.write(&images).unwrap();
    }
    writer.finish().unwrap();
    let peak = (PEAK.load(Ordering::Relaxed) - base) as usize;
    let (set, one) = (n * image, batch * image);
    println!("set {set} bytes, batch {one} bytes, peak live heap while writing {peak} bytes");
    // One batch plus the writer's small buffers; the set is 8 batches.
    assert!(peak < one + one / 2, "peak {peak} bytes for batches of {one} (set {set})");

    // NumPy's layout: arr_0.npy, stored, header 64-byte aligned, uint8 C-order [N, H, W, 3].
    let bytes = std::fs::read(&path).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
    let mut member = zip.by_name("arr_0.npy").unwrap();
    assert_eq!(member.compression(), zip::CompressionMethod::Stored);
    let mut npy = Vec::new();
    std::io::Read::read_to_end(&mut member, &mut npy).unwrap();
    let header = parse_npy_header(&npy).unwrap();
    assert_eq!((header.descr.as_str(), header.fortran_order, header.shape.as_slice()), ("|u1", false, &[n, h, w, 3][..]));
    assert_eq!(header.data_offset % 64, 0);
    assert_eq!(npy.len(), header.data_offset + set);
    let mut stream = SampleStream::open(&path).unwrap();
    let back = stream.read(0, n).unwrap();
    for i in [0, 37, n - 1] {
        for k in [0, image / 2, image - 1] {
            assert_eq!(back.as_slice().unwrap()[i * image + k], pixel(i, k), "image {i} byte {k}");
        }
    }
}

#[test]
fn an_unfinished_writer_leaves_nothing_and_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.npz");
    std::fs::write(&path, b"previous").unwrap();
    {
        let mut writer = SampleWriter::create(&path, 4, 2, 2).unwrap();
        writer.write(&[0u8; 12]).unwrap();
        assert!(writer.write(&[0u8; 5]).is_err(), "a partial image");
        assert!(writer.write(&[0u8; 48]).is_err(), "more images than declared");
        // Dropped without finish (a failed run).
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"previous");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary file was left behind");
    let writer = SampleWriter::create(&path, 4, 2, 2).unwrap();
    assert!(writer.finish().unwrap_err().to_string().contains("0 of 4 images"));
    assert_eq!(std::fs::read(&path).unwrap(), b"previous");
}
