//! Differentiable rate models used in training, and the link to the integer coder used at
//! inference: a factorized (per-channel Gaussian) prior for hyper-latents and a Gaussian
//! conditional for latents, both indexing the same fixed scale table.

use super::layers::{conv, pixel_shuffle2, portable_exp, PortableConv};
use crate::codec::entropy::{GaussianConditional, SCALE_MIN};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Above this many bits a symbol is a "surprise" the integer coder sends through its escape
/// (tail mass 1e-6 ≈ 20 bits, plus the value); the training cost grows only logarithmically
/// past it so one outlier cannot swamp a batch, but it keeps a gradient.
const SURPRISE_BITS: f64 = 24.0;

/// Clamps to [lo, hi] in the forward pass and passes the gradient through unchanged. A clamp
/// that also stopped the gradient left σ stuck at the floor wherever the network once
/// predicted less, even where the residual is nonzero: those symbols cost 20–30 bits each and
/// were most of the QP 3 I-frame rate on textured frames (logs/intra-rate-check-7-floor.log).
pub fn clamp_passing_gradient(x: &Tensor, lo: f64, hi: f64) -> Tensor {
    x + (x.clamp(lo, hi) - x).detach()
}

/// Bits of `x` (already noised or rounded) under N(mean, scale) integrated over unit bins;
/// past `SURPRISE_BITS` the cost is compressed logarithmically (a training cost, not a rate).
pub fn gaussian_bits(x: &Tensor, mean: &Tensor, scale: &Tensor) -> Tensor {
    let scale = clamp_passing_gradient(scale, SCALE_MIN, f64::INFINITY);
    let v = (x - mean).abs();
    // P = Φ(a) − Φ(b) with a = (0.5−|v|)/σ > b = (−0.5−|v|)/σ, in log space: far in the tail
    // both Φ underflow, and a floor on P would cut the gradient that should raise σ there.
    let log_a = ((-&v + 0.5) / &scale).special_log_ndtr();
    let log_b = ((-&v - 0.5) / &scale).special_log_ndtr();
    let log_p = &log_a + (-(log_b - &log_a).exp().clamp_max(1.0 - 1e-6)).log1p();
    let bits = -log_p / std::f64::consts::LN_2;
    let tail = (&bits - SURPRISE_BITS).clamp_min(0.0);
    bits.clamp_max(SURPRISE_BITS) + (tail + 1.0).log()
}

/// Rounds with a straight-through gradient.
pub fn ste_round(x: &Tensor) -> Tensor {
    x + (x.round() - x).detach()
}

/// Training-time quantization proxy: additive uniform noise.
pub fn noisy(x: &Tensor) -> Tensor {
    x + x.rand_like() - 0.5
}

/// Parameter group of the per-QP scale tables (q_enc/q_dec, the MV step, z's quantization
/// and prior scales). They are log-domain scalars that must move by whole units when the rate
/// ladder changes, which Adam at the networks' learning rate (≈ lr per step) cannot do in a
/// CPU-sized run; the codec stage can give this group a larger rate (`--table-lr-factor`).
pub const RATE_PARAMETER_GROUP: usize = 1;

/// Hyperprior: h_a (2× down twice) and h_s (back up), plus the factorized prior of z.
/// z is coded per QP as round(z·q_z) under a per-QP prior: at low rates most of z rounds
/// to zero, and a prior shared with the high-rate points charged ~1.6 bits for every zero
/// (at QP 3 that was the whole rate of the motion and most of a P-frame's).
#[derive(Debug)]
pub struct Hyperprior {
    h_a: Vec<nn::Conv2D>,
    h_s: Vec<PortableConv>,
    /// log of the per-QP, per-channel scale of z's factorized Gaussian prior.
    z_log_scale: Tensor,
    /// log of the per-QP, per-channel quantization scale q_z of z.
    z_q_log: Tensor,
}

impl Hyperprior {
    /// `cin`: channels of the latent; `z`: hyper-latent channels; `out`: h_s output channels.
    pub fn new(p: nn::Path, cin: i64, z: i64, out: i64, num_qps: i64) -> Self {
        let h_a = vec![
            conv(&p / "h_a" / 0, cin, z, 3, 1),
            conv(&p / "h_a" / 1, z, z, 3, 2),
            conv(&p / "h_a" / 2, z, z, 3, 2),
        ];
        let h_s = vec![
            PortableConv::new(&p / "h_s" / 0, z, z * 4, 3, 1),
            PortableConv::new(&p / "h_s" / 1, z, z * 4, 3, 1),
            PortableConv::new(&p / "h_s" / 2, z, out, 3, 1),
        ];
        let tables = p.set_group(RATE_PARAMETER_GROUP);
        let z_log_scale = tables.var("z_log_scale", &[num_qps, z, 1, 1], nn::Init::Const(1.0));
        let z_q_log = tables.var("z_q_log", &[num_qps, z, 1, 1], nn::Init::Const(0.0));
        Self { h_a, h_s, z_log_scale, z_q_log }
    }

    fn z_q(&self, qp: i64) -> Tensor {
        portable_exp(&self.z_q_log.get(qp).unsqueeze(0))
    }

    /// The code is padded to a multiple of 4 first so any frame multiple of 16 works, by
    /// replicating its edge: h_a never saw padding in training (crops are multiples of 64),
    /// and zeros next to real values read as an edge worth side information — on carphone
    /// (code 11×9) zero padding made the contextual z 31 of a QP 3 P-frame's 106 bytes, with
    /// replication 2 of 58 (`logs/hyper-padding-11.log`). Encoder only: the decoder never runs
    /// h_a, so streams made either way decode the same.
    /// Returns z already scaled by q_z, ready to round.
    pub fn analysis(&self, latent: &Tensor, qp: i64) -> Tensor {
        let (_, _, h, w) = latent.size4().expect("4-D latent");
        let padded = latent.abs().pad([0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4], "replicate", None);
        let h = self.h_a[0].forward(&padded).leaky_relu();
        let h = self.h_a[1].forward(&h).leaky_relu();
        self.h_a[2].forward(&h) * self.z_q(qp)
    }

    /// Back to the code grid, cropped to the code's `h`×`w`.
    pub fn synthesis(&self, z_hat: &Tensor, qp: i64, h: i64, w: i64) -> Tensor {
        let x = pixel_shuffle2(&self.h_s[0].forward(&(z_hat / self.z_q(qp))).leaky_relu());
        let x = pixel_shuffle2(&self.h_s[1].forward(&x).leaky_relu());
        self.h_s[2].forward(&x).narrow(2, 0, h).narrow(3, 0, w)
    }

    pub fn z_channels(&self) -> i64 {
        self.z_log_scale.size()[1]
    }

    /// Prior scale of each z channel at `qp`, shaped (1, C, 1, 1).
    pub fn z_scale(&self, qp: i64) -> Tensor {
        self.z_log_scale.get(qp).unsqueeze(0).exp()
    }

    /// Bits of the (noisy or rounded) hyper-latent under the factorized prior of `qp`.
    pub fn z_bits(&self, z: &Tensor, qp: i64) -> Tensor {
        gaussian_bits(z, &z.zeros_like(), &self.z_scale(qp).expand_as(z)).sum(Kind::Float)
    }

    /// Table index of each z channel at `qp` (fixed once the weights are loaded).
    pub fn z_indices(&self, gc: &GaussianConditional, qp: i64) -> Vec<u8> {
        let log_scales = self.z_log_scale.get(qp).flatten(0, -1).to_device(Device::Cpu).to_kind(Kind::Float);
        Vec::<f32>::try_from(log_scales).unwrap().iter().map(|&v| gc.index_for_log_scale(v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::codec::split_params;

    #[test]
    fn gaussian_bits_are_the_bin_probability_away_from_the_tail() {
        let x = Tensor::from_slice(&[0.0f64, 1.0, -2.0, 3.0, 0.0, 5.0]);
        let mean = Tensor::from_slice(&[0.0f64, 0.2, 0.0, -1.0, 0.4, 0.0]);
        let scale = Tensor::from_slice(&[0.5f64, 1.0, 2.0, 4.0, 0.3, 8.0]);
        let got = Vec::<f64>::try_from(gaussian_bits(&x, &mean, &scale)).unwrap();
        // Reference in f64 from erfc: P = Φ((|v|+0.5)/σ) − Φ((|v|−0.5)/σ).
        let phi = |t: Tensor| (-t / std::f64::consts::SQRT_2).erfc() * 0.5;
        let v = (&x - &mean).abs();
        let p = phi((&v + 0.5) / &scale) - phi((&v - 0.5) / &scale);
        let want = Vec::<f64>::try_from(-p.log2()).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "bits {g} vs {w}");
        }
    }

    #[test]
    fn a_surprise_under_the_scale_floor_still_pulls_sigma_up() {
        // The network predicts log σ below the table floor where the residual is 3: the coder
        // charges an escape, and training must see both the cost and a gradient that raises σ.
        let raw = Tensor::from_slice(&[0.0f32, (0.05f32).ln()]).view([1, 2, 1, 1]).set_requires_grad(true);
        let (mean, scale) = split_params(&raw);
        let x = Tensor::from_slice(&[3.0f32]).view([1, 1, 1, 1]);
        let bits = gaussian_bits(&x, &mean, &scale).sum(Kind::Float);
        let b = bits.double_value(&[]);
        assert!(b > SURPRISE_BITS && b < SURPRISE_BITS + 8.0, "surprise cost {b}");
        bits.backward();
        let g = Vec::<f32>::try_from(raw.grad().flatten(0, -1)).unwrap();
        assert!(g[1] < -0.5, "d bits / d log σ = {} must push σ up", g[1]);
        assert!(g[0] < 0.0, "d bits / d μ = {} must move μ towards 3", g[0]);
    }

    #[test]
    fn zeros_at_the_floor_cost_almost_nothing_and_keep_a_finite_gradient() {
        let raw = Tensor::from_slice(&[(0.05f32).ln()]).set_requires_grad(true);
        let scale = clamp_passing_gradient(&raw, SCALE_MIN.ln(), 10.0).exp();
        let bits =
            gaussian_bits(&Tensor::from_slice(&[0.0f32]), &Tensor::from_slice(&[0.0f32]), &scale).sum(Kind::Float);
        assert!(bits.double_value(&[]) < 1e-4);
        bits.backward();
        let g = raw.grad().double_value(&[0]);
        assert!(g.is_finite() && g.abs() < 1e-3, "gradient {g}");
    }
}
