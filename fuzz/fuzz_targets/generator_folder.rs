#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| maetok_fuzz::generator_folder(data));
