//! Sanity limits checked before anything is allocated from a value someone else wrote: model
//! configs, checkpoint headers, array shapes, image dimensions.
//!
//! A file we did not make can claim anything (`"enc_depth": 1000000000`, a tensor of 10¹² elements,
//! a 100000 × 100000 PNG). Every loader checks such numbers against these bounds first and fails
//! with a message naming the key and the bound, instead of aborting in the allocator. The bounds
//! are far above every published model (MAETok-B-128 has 12 blocks of width 768; SiT-XL 28 of
//! 1152; DINOv2-L 24 of 1024; SigLIP so400m 27 of 1152) and below what a 24 GB machine could
//! never build anyway.

/// Blocks in one transformer trunk.
pub const MAX_DEPTH: usize = 512;
/// Width (embedding dimension) of a trunk, an MLP hidden layer or a latent token.
pub const MAX_WIDTH: usize = 1 << 16;
/// Attention heads.
pub const MAX_HEADS: usize = 1024;
/// Tokens in one sequence (latent tokens, patches, classes of a label table).
pub const MAX_TOKENS: usize = 1 << 20;
/// Images in one (global) batch.
pub const MAX_BATCH: usize = 1 << 20;
/// Side of an image, in pixels, for models and decoded files.
pub const MAX_IMAGE_SIDE: usize = 1 << 14;
/// Parameters of one model built from a config (4·10⁹ f32 = 16 GB).
pub const MAX_PARAMS: u128 = 4_000_000_000;
/// Bytes of one array decoded from a file (npy arrays, zip members, pickles, image buffers).
pub const MAX_ARRAY_BYTES: u64 = 1 << 36;

/// Bytes of a text file read whole (configs, manifests, recipes, training state).
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Reads a text file whole after checking its size against [`MAX_TEXT_BYTES`] (a config is a few
/// KB; a multi-gigabyte "config.json" is refused instead of read into memory).
pub fn read_text(path: &std::path::Path) -> std::io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_TEXT_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes is more than a text config may have ({MAX_TEXT_BYTES})"),
        ));
    }
    std::fs::read_to_string(path)
}

/// `Err` naming `key` when `value` is outside `1..=max`.
pub fn check_positive_at_most(key: &str, value: usize, max: usize) -> Result<(), String> {
    if value == 0 {
        Err(format!("{key} must be positive, got 0"))
    } else if value > max {
        Err(format!("{key} = {value} exceeds the limit {max}"))
    } else {
        Ok(())
    }
}

/// `Err` naming `key` when `value` exceeds `max` (0 allowed).
pub fn check_at_most(key: &str, value: usize, max: usize) -> Result<(), String> {
    if value > max {
        Err(format!("{key} = {value} exceeds the limit {max}"))
    } else {
        Ok(())
    }
}

/// The product of `dims` (an array shape), or `None` when it overflows `u64`.
pub fn checked_numel(dims: &[usize]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

/// Parameters of `depth` pre-norm transformer blocks of width `w` with an MLP of `mlp` hidden
/// units (qkv, projection, two MLP layers, norms; modulation layers add at most `6·w²` more per
/// block and are included as an upper bound). All arguments are already bounded by the limits
/// above, so the arithmetic cannot overflow `u128`.
pub fn trunk_params(depth: usize, w: usize, mlp: usize) -> u128 {
    let (d, w, m) = (depth as u128, w as u128, mlp as u128);
    d * (4 * w * w + 2 * w * m + 6 * w * w + 16 * w + m)
}

/// `Err` when a model of `params` parameters exceeds [`MAX_PARAMS`]; `what` names the model.
pub fn check_params(what: &str, params: u128) -> Result<(), String> {
    if params > MAX_PARAMS {
        Err(format!("{what} would have about {params} parameters, more than the limit {MAX_PARAMS}"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_key() {
        assert!(check_positive_at_most("enc_depth", 12, MAX_DEPTH).is_ok());
        let e = check_positive_at_most("enc_depth", 1_000_000_000, MAX_DEPTH).unwrap_err();
        assert!(e.contains("enc_depth") && e.contains("1000000000"), "{e}");
        assert!(check_positive_at_most("x", 0, 4).unwrap_err().contains("positive"));
        assert_eq!(checked_numel(&[1 << 40, 1 << 40]), None);
        assert_eq!(checked_numel(&[]), Some(1));
        // MAETok-B-128's encoder is well inside the parameter bound; a 512-deep width-65536 trunk is not.
        assert!(check_params("encoder", trunk_params(12, 768, 3072)).is_ok());
        assert!(check_params("encoder", trunk_params(MAX_DEPTH, MAX_WIDTH, 4 * MAX_WIDTH)).is_err());
    }
}
