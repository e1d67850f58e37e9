//! ADM `.npz` streaming and statistics files.

use maetok_eval::ndarray::{Array4, ArrayD, IxDyn};
use maetok_eval::npz::{parse_npy_header, read_f64_array, write_f64_arrays, write_samples, SampleStream};

#[test]
fn streams_ranges_of_a_sample_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.npz");
    let imgs = Array4::from_shape_fn((7, 5, 4, 3), |(n, h, w, c)| (n * 31 + h * 7 + w * 3 + c) as u8);
    write_samples(&path, &imgs).unwrap();
    let mut s = SampleStream::open(&path).unwrap();
    assert_eq!(s.len(), 7);
    assert_eq!(s.image_shape(), [5, 4, 3]);
    assert_eq!(s.read(2, 3).unwrap(), imgs.slice(maetok_eval::ndarray::s![2..5, .., .., ..]));
    assert_eq!(s.read(5, 10).unwrap().dim().0, 2, "the last range is clamped");
    assert_eq!(s.read(0, 7).unwrap(), imgs);
}

#[test]
fn statistics_round_trip_and_missing_arrays_are_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ref.npz");
    let mu = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, -2.5, 3.25]).unwrap();
    let sigma = ArrayD::from_shape_fn(IxDyn(&[3, 3]), |i| (i[0] * 3 + i[1]) as f64 * 0.5);
    write_f64_arrays(&path, &[("mu", mu.clone()), ("sigma", sigma.clone())]).unwrap();
    assert_eq!(read_f64_array(&path, "mu").unwrap().unwrap(), mu);
    assert_eq!(read_f64_array(&path, "sigma").unwrap().unwrap(), sigma);
    assert!(read_f64_array(&path, "mu_s").unwrap().is_none());
    // A statistics-only file is not a sample batch.
    let err = SampleStream::open(&path).err().unwrap().to_string();
    assert!(err.contains("arr_0") && err.contains("ref.npz"), "{err}");
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.npz");
    std::fs::write(&junk, b"not a zip").unwrap();
    let err = SampleStream::open(&junk).err().unwrap().to_string();
    assert!(err.contains("junk.npz") && err.contains("zip"), "{err}");
    let floats = dir.path().join("floats.npz");
    write_f64_arrays(&floats, &[("arr_0", ArrayD::zeros(IxDyn(&[2, 4, 4, 3])))]).unwrap();
    let err = SampleStream::open(&floats).err().unwrap().to_string();
    assert!(err.contains("dtype <f8"), "{err}");
    let grey = dir.path().join("grey.npz");
    write_samples(&grey, &Array4::<u8>::zeros((2, 4, 4, 1))).unwrap();
    let err = SampleStream::open(&grey).err().unwrap().to_string();
    assert!(err.contains("[2, 4, 4, 1]"), "{err}");
}

#[test]
fn npy_headers_of_all_versions_parse() {
    let mut v1 = b"\x93NUMPY\x01\x00".to_vec();
    let text = "{'descr': '|u1', 'fortran_order': False, 'shape': (10, 8, 8, 3), }    \n";
    v1.extend((text.len() as u16).to_le_bytes());
    v1.extend(text.as_bytes());
    let h = parse_npy_header(&v1).unwrap();
    assert_eq!((h.descr.as_str(), h.fortran_order, h.shape.clone(), h.data_offset), ("|u1", false, vec![10, 8, 8, 3], 10 + text.len()));
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    let text = "{'descr': '<f8', 'fortran_order': True, 'shape': (2048,), }\n";
    v2.extend((text.len() as u32).to_le_bytes());
    v2.extend(text.as_bytes());
    let h = parse_npy_header(&v2).unwrap();
    assert_eq!((h.descr.as_str(), h.fortran_order, h.shape), ("<f8", true, vec![2048]));
    assert!(parse_npy_header(b"PK\x03\x04garbage").is_err());
}

/// A streamed sample file carries a fixed timestamp (1980-01-01), not the time of writing: the
/// same images always give the same bytes (`sample_sit` on several devices is compared with one
/// device byte for byte; with the clock in the zip headers that failed whenever the two runs
/// straddled a 2-second boundary).
#[test]
fn streamed_files_depend_only_on_their_images() {
    let dir = tempfile::tempdir().unwrap();
    let imgs: Vec<u8> = (0..2 * 4 * 4 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let write = |name: &str| {
        let path = dir.path().join(name);
        let mut w = maetok_eval::npz::SampleWriter::create(&path, 2, 4, 4).unwrap();
        w.write(&imgs).unwrap();
        w.finish().unwrap();
        path
    };
    let a = write("a.npz");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&a).unwrap()).unwrap();
    assert_eq!(zip.by_index(0).unwrap().last_modified(), Some(zip::DateTime::default()));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(write("b.npz")).unwrap());
}
