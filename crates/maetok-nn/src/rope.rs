//! 2-D rotary position embedding of MAETok's ViTs (`rope_utils` of the reference).
//!
//! Two variants:
//! * **mixed** (the published models): learnable frequencies `freqs` `[2, depth, heads*hd/2]`,
//!   one set per layer and head; angle `θ[h, n, j] = t_x[n]·fx[l, h·hd/2+j] + t_y[n]·fy[l, h·hd/2+j]`.
//! * **axial**: fixed frequencies `1/θ^(4k/hd)`, the first `hd/4` pairs rotate with the column
//!   and the next `hd/4` with the row, shared by all heads and layers.
//!
//! Positions are raw integers: `t_x = n mod grid_w` (column), `t_y = n div grid_w` (row).
//! q/k pairs are adjacent: `(x[2j], x[2j+1])` is rotated as the complex number `x[2j] + i·x[2j+1]`.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::Rng;

use crate::fused::{self, RopeHalf};
use crate::io::{join, ParamVisitor, VisitParams};

/// cos/sin of the rotation angles of one layer: `[heads or 1, N, head_dim/2]` each.
#[derive(Clone, Debug)]
pub struct RopeTable<B: Backend> {
    pub cos: Tensor<B, 3>,
    pub sin: Tensor<B, 3>,
}

/// RoPE frequencies of a whole ViT (all layers).
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    /// Mixed RoPE: `[2, depth, heads*head_dim/2]` (x then y frequencies). `None` for axial RoPE.
    pub freqs: Option<Param<Tensor<B, 3>>>,
    pub heads: usize,
    pub head_dim: usize,
    /// Axial RoPE base θ.
    pub theta: f64,
    /// Side of the token grid the persistent `freqs_t_x/freqs_t_y` buffers describe.
    pub base_grid: usize,
}

/// Column and row index of each of the `grid_h*grid_w` tokens (row-major).
pub fn grid_positions(grid_w: usize, grid_h: usize) -> (Vec<f32>, Vec<f32>) {
    let n = grid_w * grid_h;
    let tx = (0..n).map(|t| (t % grid_w) as f32).collect();
    let ty = (0..n).map(|t| (t / grid_w) as f32).collect();
    (tx, ty)
}

impl<B: Backend> Rope<B> {
    /// Mixed learnable RoPE with the reference initialisation (`init_random_2d_freqs`): per layer
    /// and head a random angle α; the first `hd/4` frequency pairs point along α, the next along
    /// α+π/2, magnitudes `1/θ^(4k/hd)`.
    pub fn mixed(
        depth: usize,
        heads: usize,
        head_dim: usize,
        theta: f64,
        base_grid: usize,
        rng: &mut impl Rng,
        device: &B::Device,
    ) -> Self {
        let half = head_dim / 2;
        let quarter = head_dim / 4;
        let mags: Vec<f64> = (0..quarter).map(|k| 1.0 / theta.powf((4 * k) as f64 / head_dim as f64)).collect();
        let mut fx = vec![0f32; depth * heads * half];
        let mut fy = vec![0f32; depth * heads * half];
        for l in 0..depth {
            for h in 0..heads {
                let alpha: f64 = rng.random::<f64>() * 2.0 * std::f64::consts::PI;
                for (part, a) in [alpha, alpha + std::f64::consts::FRAC_PI_2].into_iter().enumerate() {
                    for (k, mag) in mags.iter().enumerate() {
                        let i = (l * heads + h) * half + part * quarter + k;
                        fx[i] = (mag * a.cos()) as f32;
                        fy[i] = (mag * a.sin()) as f32;
                    }
                }
            }
        }
        let mut data = fx;
        data.extend(fy);
        let freqs = Tensor::from_data(TensorData::new(data, [2, depth, heads * half]), device);
        Self { freqs: Some(Param::from_tensor(freqs)), heads, head_dim, theta, base_grid }
    }

    /// Axial (fixed) RoPE.
    pub fn axial(heads: usize, head_dim: usize, theta: f64, base_grid: usize) -> Self {
        Self { freqs: None, heads, head_dim, theta, base_grid }
    }

    /// cos/sin tables of layer `layer` for a `grid_w × grid_h` token grid.
    pub fn table(&self, layer: usize, grid_w: usize, grid_h: usize, device: &B::Device) -> RopeTable<B> {
        let n = grid_w * grid_h;
        let half = self.head_dim / 2;
        let (tx, ty) = grid_positions(grid_w, grid_h);
        let tx = Tensor::<B, 1>::from_data(TensorData::new(tx, [n]), device);
        let ty = Tensor::<B, 1>::from_data(TensorData::new(ty, [n]), device);
        let angle = match &self.freqs {
            Some(freqs) => {
                let f = freqs.val();
                let fx = f.clone().slice([0..1, layer..layer + 1]).reshape([self.heads, 1, half]);
                let fy = f.slice([1..2, layer..layer + 1]).reshape([self.heads, 1, half]);
                tx.reshape([1, n, 1]) * fx + ty.reshape([1, n, 1]) * fy
            }
            None => {
                let quarter = self.head_dim / 4;
                let f: Vec<f32> = (0..quarter).map(|k| (1.0 / self.theta.powf((4 * k) as f64 / self.head_dim as f64)) as f32).collect();
                let f = Tensor::<B, 1>::from_data(TensorData::new(f, [quarter]), device).reshape([1, quarter]);
                let ax = tx.reshape([n, 1]) * f.clone();
                let ay = ty.reshape([n, 1]) * f;
                Tensor::cat(vec![ax, ay], 1).reshape([1, n, half])
            }
        };
        RopeTable { cos: fused::cos(angle.clone()), sin: fused::sin(angle) }
    }
}

/// RoPE tables expanded for direct application to a whole attention sequence:
/// `x' = x·cos + swap_pairs(x)·sin`, with `cos`/`sin` `[H or 1, N_total, hd]` holding
/// `cos θ_j` at `2j` and `2j+1`, `(−sin θ_j, +sin θ_j)` at `(2j, 2j+1)`, and the identity
/// (cos 1, sin 0) on tokens outside the rotated span. Separate q tables carry the attention
/// scale, so q is rotated and scaled in one pass (the reference scales q right after RoPE).
#[derive(Clone, Debug)]
pub struct RopeFull<B: Backend> {
    pub cos_q: Tensor<B, 3>,
    pub sin_q: Tensor<B, 3>,
    pub cos_k: Tensor<B, 3>,
    pub sin_k: Tensor<B, 3>,
    /// `[hd, hd]` permutation: `(x·P)[2j] = x[2j+1]`, `(x·P)[2j+1] = x[2j]`.
    pub swap: Tensor<B, 2>,
}

impl<B: Backend> RopeFull<B> {
    /// Expands `table` (`[Hr, n, hd/2]`) to a sequence of `seq_len` tokens whose rotated span
    /// starts at `start`; `q_scale` is folded into the q tables.
    pub fn new(table: &RopeTable<B>, seq_len: usize, start: usize, q_scale: f64) -> Self {
        let [_, _, half] = table.cos.dims();
        let hd = 2 * half;
        let device = table.cos.device();
        let expand = |t: &Tensor<B, 3>, kind, scale| fused::rope_expand(t.clone(), kind, seq_len, start, scale);
        let mut p = vec![0f32; hd * hd];
        for j in 0..half {
            p[(2 * j + 1) * hd + 2 * j] = 1.0;
            p[(2 * j) * hd + 2 * j + 1] = 1.0;
        }
        let swap = Tensor::from_data(TensorData::new(p, [hd, hd]), &device);
        Self {
            cos_q: expand(&table.cos, RopeHalf::Cos, q_scale),
            sin_q: expand(&table.sin, RopeHalf::Sin, q_scale),
            cos_k: expand(&table.cos, RopeHalf::Cos, 1.0),
            sin_k: expand(&table.sin, RopeHalf::Sin, 1.0),
            swap,
        }
    }

    fn apply(x: Tensor<B, 4>, cos: &Tensor<B, 3>, sin: &Tensor<B, 3>, swap: &Tensor<B, 2>) -> Tensor<B, 4> {
        crate::fused::rope(x, cos.clone(), sin.clone(), swap)
    }

    /// Rotates (and scales) q `[B, H, N, hd]`.
    pub fn apply_q(&self, q: Tensor<B, 4>) -> Tensor<B, 4> {
        Self::apply(q, &self.cos_q, &self.sin_q, &self.swap)
    }

    /// Rotates k `[B, H, N, hd]`.
    pub fn apply_k(&self, k: Tensor<B, 4>) -> Tensor<B, 4> {
        Self::apply(k, &self.cos_k, &self.sin_k, &self.swap)
    }
}

/// Rotates adjacent pairs of the last dimension of `x` `[B, H, n, hd]` by the table
/// (`[H or 1, n, hd/2]`): `x'[2j] = x[2j]cos − x[2j+1]sin`, `x'[2j+1] = x[2j]sin + x[2j+1]cos`.
pub fn apply_rope<B: Backend>(x: Tensor<B, 4>, table: &RopeTable<B>) -> Tensor<B, 4> {
    let [b, h, n, hd] = x.dims();
    let half = hd / 2;
    let pairs = x.reshape([b, h, n, half, 2]);
    let x0 = pairs.clone().slice([0..b, 0..h, 0..n, 0..half, 0..1]).reshape([b, h, n, half]);
    let x1 = pairs.slice([0..b, 0..h, 0..n, 0..half, 1..2]).reshape([b, h, n, half]);
    let cos = table.cos.clone().unsqueeze::<4>();
    let sin = table.sin.clone().unsqueeze::<4>();
    let y0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
    let y1 = x0 * sin + x1 * cos;
    Tensor::cat(vec![y0.reshape([b, h, n, half, 1]), y1.reshape([b, h, n, half, 1])], 4).reshape([b, h, n, hd])
}

impl<B: Backend> VisitParams<B> for Rope<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        if let Some(freqs) = self.freqs.as_mut() {
            v.param(&join(prefix, "freqs"), freqs);
            let (tx, ty) = grid_positions(self.base_grid, self.base_grid);
            let n = tx.len();
            v.buffer(&join(prefix, "freqs_t_x"), &[n], &tx);
            v.buffer(&join(prefix, "freqs_t_y"), &[n], &ty);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use rand::SeedableRng;

    type B = NdArray<f32>;

    fn values(t: Tensor<B, 3>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn axial_angles_follow_columns_then_rows() {
        let rope = Rope::<B>::axial(2, 8, 100.0, 3);
        let t = rope.table(0, 3, 2, &Default::default());
        assert_eq!(t.cos.dims(), [1, 6, 4]);
        // Token 5 is column 2, row 1; frequencies 1/100^(4k/8) for k = 0, 1.
        let freqs = [1.0f32, 0.1];
        let expect = [2.0 * freqs[0], 2.0 * freqs[1], freqs[0], freqs[1]];
        let cos = values(t.cos);
        for (j, a) in expect.iter().enumerate() {
            assert!((cos[5 * 4 + j] - a.cos()).abs() < 1e-6);
        }
    }

    #[test]
    fn mixed_init_has_reference_magnitudes_and_orthogonal_halves() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let rope = Rope::<B>::mixed(2, 3, 16, 10.0, 4, &mut rng, &Default::default());
        let f = rope.freqs.unwrap().val().into_data().to_vec::<f32>().unwrap();
        let n = 2 * 3 * 8; // depth * heads * hd/2
        for i in 0..n {
            let k = i % 4; // quarter = 4
            let mag = (f[i] * f[i] + f[n + i] * f[n + i]).sqrt();
            let want = 1.0 / 10f32.powf(4.0 * k as f32 / 16.0);
            assert!((mag - want).abs() < 1e-5, "magnitude of pair {i}");
        }
        // Pair k of the second half points along α + π/2: orthogonal to pair k of the first.
        let dot = f[0] * f[4] + f[n] * f[n + 4];
        assert!(dot.abs() < 1e-6);
    }

    #[test]
    fn full_sequence_tables_rotate_only_the_span_and_scale_q() {
        let device = Default::default();
        let rope = Rope::<B>::axial(1, 4, 10.0, 2);
        let table = rope.table(0, 2, 1, &device);
        let full = RopeFull::new(&table, 5, 1, 0.5);
        let x = Tensor::<B, 4>::random([1, 1, 5, 4], burn::tensor::Distribution::Default, &device);
        let q = full.apply_q(x.clone());
        let k = full.apply_k(x.clone());
        let direct = apply_rope(x.clone().slice([0..1, 0..1, 1..3, 0..4]), &table);
        let diff = (k.clone().slice([0..1, 0..1, 1..3, 0..4]) - direct).abs().max().into_scalar();
        assert!(diff < 1e-6);
        let untouched = (k.slice([0..1, 0..1, 3..5, 0..4]) - x.clone().slice([0..1, 0..1, 3..5, 0..4])).abs().max().into_scalar();
        assert_eq!(untouched, 0.0);
        let scaled = (q.slice([0..1, 0..1, 0..1, 0..4]) - x.slice([0..1, 0..1, 0..1, 0..4]) * 0.5).abs().max().into_scalar();
        assert_eq!(scaled, 0.0);
    }
}
