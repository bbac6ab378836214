//! Diffusion sampling for the decoder (DiffVC §3.2): ŷ noised to step N, then DS posterior
//! steps to z⁰, with temporal diffusion information reuse (TDIR) across the P-frames of a
//! GOP. Noise comes from a seeded Rust PRNG, so decoding is reproducible bit for bit.

use crate::model::denoiser::{Denoiser, DenoiserConfig};
use crate::model::layers::flow_warp;
use tch::{Device, Kind, Tensor};

/// DDPM linear-β schedule.
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    pub fn new(cfg: &DenoiserConfig) -> Self {
        let n = cfg.train_steps;
        let mut acc = 1.0;
        let alphas_cumprod = (0..n)
            .map(|i| {
                let beta = cfg.beta_start + (cfg.beta_end - cfg.beta_start) * i as f64 / (n - 1) as f64;
                acc *= 1.0 - beta;
                acc
            })
            .collect();
        Self { alphas_cumprod }
    }

    /// ᾱ at step `t` (1-based as in the paper; ᾱ⁰ = 1).
    pub fn alpha_bar(&self, t: usize) -> f64 {
        if t == 0 {
            1.0
        } else {
            self.alphas_cumprod[t - 1]
        }
    }

    /// Eq. 1: z^t = √ᾱ y + √(1−ᾱ) ε.
    pub fn add_noise(&self, y: &Tensor, noise: &Tensor, t: usize) -> Tensor {
        let a = self.alpha_bar(t);
        y * a.sqrt() + noise * (1.0 - a).sqrt()
    }

    /// The DS timesteps sampled from `start` down towards 0 (strictly decreasing, ≥ 1).
    pub fn timesteps(&self, start: usize, steps: usize) -> Vec<usize> {
        (0..steps).map(|i| ((start * (steps - i)) as f64 / steps as f64).round().max(1.0) as usize).collect()
    }

    /// Eqs. 3–5 between timestep `t` and the next sampled one `s < t`: the posterior
    /// q(z^s | z^t, ÿ) mean plus σ·noise (no noise when s = 0).
    pub fn posterior_step(&self, z_t: &Tensor, y_pred: &Tensor, t: usize, s: usize, noise: &Tensor) -> Tensor {
        let (ab_t, ab_s) = (self.alpha_bar(t), self.alpha_bar(s));
        let alpha = ab_t / ab_s;
        let beta = 1.0 - alpha;
        let c_y = ab_s.sqrt() * beta / (1.0 - ab_t);
        let c_z = alpha.sqrt() * (1.0 - ab_s) / (1.0 - ab_t);
        let mean = y_pred * c_y + z_t * c_z;
        if s == 0 {
            return mean;
        }
        let var = beta * (1.0 - ab_s) / (1.0 - ab_t);
        mean + noise * var.sqrt()
    }

    /// Eq. 3: the clean latent implied by the predicted noise.
    pub fn predict_clean(&self, z_t: &Tensor, eps: &Tensor, t: usize) -> Tensor {
        let a = self.alpha_bar(t);
        (z_t - eps * (1.0 - a).sqrt()) / a.sqrt()
    }
}

/// One network step: the clean latent ÿ the denoiser predicts from z^t (eq. 3); `ratio`
/// is the QP prompt per item.
pub fn predict_clean_latent(
    denoiser: &Denoiser,
    schedule: &NoiseSchedule,
    z: &Tensor,
    t: usize,
    y_hat: &Tensor,
    c0: &Tensor,
    ratio: &Tensor,
) -> Tensor {
    let tt = Tensor::full([z.size()[0]], t as i64, (Kind::Int64, z.device()));
    schedule.predict_clean(z, &denoiser.forward(z, &tt, y_hat, c0, ratio), t)
}

/// Standard normal noise from a seeded xorshift + Box–Muller, independent of libtorch's RNG.
pub fn seeded_noise(seed: u64, shape: &[i64], device: Device) -> Tensor {
    let n: i64 = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut v = Vec::with_capacity(n as usize + 1);
    while (v.len() as i64) < n {
        let (u1, u2) = (next(), next());
        let r = (-2.0 * u1.ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * u2;
        v.push((r * th.cos()) as f32);
        v.push((r * th.sin()) as f32);
    }
    v.truncate(n as usize);
    Tensor::from_slice(&v).view(shape).to_device(device)
}

/// TDIR's per-GOP buffer: the predicted clean latent ÿ at each sampling step of the
/// previous P-frame, and that frame's ŷ. Reset at every I-frame and on flush/seek.
#[derive(Default)]
pub struct DiffusionBuffer {
    /// (ŷ, ÿ per step) of the last P-frame.
    frame: Option<(Tensor, Vec<Tensor>)>,
}

impl DiffusionBuffer {
    pub fn reset(&mut self) {
        self.frame = None;
    }

    /// A copy sharing the (never modified) tensors: an encoder tries several samplings of a
    /// frame from the same buffer and keeps the one it signals.
    pub fn snapshot(&self) -> Self {
        Self {
            frame: self.frame.as_ref().map(|(y, p)| (y.shallow_clone(), p.iter().map(Tensor::shallow_clone).collect())),
        }
    }
}

/// How the previous frame's predictions are carried to the current frame.
///
/// DiffVC reuses ÿ as is, which assumes a static scene: under motion the reused steps paint
/// the previous frame (on fast motion far worse than no diffusion at all). Here each latent
/// pixel takes the previous frame through whichever aligns its ŷ better with the current ŷ,
/// the decoded motion or no motion (the decoder checks, so a poor motion field cannot hurt).
/// The previous prediction's detail ÿ − ŷ is always carried over; where the aligned
/// previous ŷ also agrees with the current one (weight g → 1) the previous prediction is
/// taken whole, which averages coding noise over time, and where it does not (occlusions,
/// new content, g → 0) the current ŷ stays the base.
struct Reuse {
    /// (mask, flow): per latent pixel, whether the decoded motion aligns better than none.
    use_motion: Option<(Tensor, Tensor)>,
    /// The previous ŷ, aligned.
    aligned_source: Tensor,
    /// g per latent pixel; none when τ = 0.
    agreement: Option<Tensor>,
}

impl Reuse {
    fn new(source: &Tensor, y_hat: &Tensor, motion: Option<&Tensor>, agreement: f64) -> Self {
        let distance = |a: &Tensor| (a - y_hat).square().mean_dim(1, true, Kind::Float);
        let still = distance(source);
        let (use_motion, aligned_source, d) = match motion {
            Some(flow) => {
                let warped = flow_warp(source, flow);
                let moved = distance(&warped);
                let better = moved.lt_tensor(&still);
                let aligned = warped.where_self(&better, source);
                let d = moved.minimum(&still);
                (Some((better, flow.shallow_clone())), aligned, d)
            }
            None => (None, source.shallow_clone(), still),
        };
        let agreement = (agreement > 0.0).then(|| (d / -agreement).exp());
        Self { use_motion, aligned_source, agreement }
    }

    fn align(&self, x: &Tensor) -> Tensor {
        match &self.use_motion {
            Some((better, flow)) => flow_warp(x, flow).where_self(better, x),
            None => x.shallow_clone(),
        }
    }

    /// ŷ + (ÿ' − ŷ'_aligned) + g·(ŷ'_aligned − ŷ), with ÿ' the previous prediction aligned.
    fn carry(&self, previous: &Tensor, y_hat: &Tensor) -> Tensor {
        let carried = y_hat + (self.align(previous) - &self.aligned_source);
        match &self.agreement {
            Some(g) => carried + (&self.aligned_source - y_hat) * g,
            None => carried,
        }
    }
}

/// How one frame is sampled.
pub struct SamplingPlan {
    pub steps: usize,
    /// Network (independent) steps at the end; the first `steps − independent` reuse the buffer.
    pub independent: usize,
    pub seed: u64,
    /// Whether this frame may reuse the buffer and must refill it (P-frames).
    pub use_buffer: bool,
    /// τ of [`DenoiserConfig::tdir_agreement`].
    pub agreement: f64,
}

/// Counts of network evaluations and the sampling's wall time, for benchmarks.
#[derive(Default, Debug, Clone, Copy)]
pub struct SamplingStats {
    pub network_steps: usize,
    pub reused_steps: usize,
    pub seconds: f64,
}

/// Samples z⁰ from ŷ (both in the scaled latent space) with TDIR.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    denoiser: &Denoiser,
    schedule: &NoiseSchedule,
    start_step: usize,
    y_hat: &Tensor,
    c0: &Tensor,
    ratio: f64,
    plan: &SamplingPlan,
    motion: Option<&Tensor>,
    buffer: &mut DiffusionBuffer,
) -> (Tensor, SamplingStats) {
    let started = std::time::Instant::now();
    let mut stats = SamplingStats::default();
    if plan.steps == 0 {
        return (y_hat.shallow_clone(), stats);
    }
    let shape = y_hat.size();
    let device = y_hat.device();
    let timesteps = schedule.timesteps(start_step, plan.steps);
    let mut z = schedule.add_noise(y_hat, &seeded_noise(plan.seed, &shape, device), timesteps[0]);
    // Reuse needs a buffer filled with as many steps (DS can change between frames); a
    // frame that uses the buffer refills it below.
    let previous = if plan.use_buffer { buffer.frame.take() } else { None };
    let reuse = match previous {
        Some((source, predictions)) if predictions.len() == plan.steps && plan.independent < plan.steps => {
            Some((Reuse::new(&source, y_hat, motion, plan.agreement), predictions))
        }
        _ => None,
    };
    let reuse_steps = if reuse.is_some() { plan.steps - plan.independent } else { 0 };
    let n = shape[0];
    let ratio_t = Tensor::full([n], ratio, (Kind::Float, device));
    let mut predictions = Vec::with_capacity(plan.steps);
    for (i, &t) in timesteps.iter().enumerate() {
        let y_pred = if let Some((reuse, previous)) = reuse.as_ref().filter(|_| i < reuse_steps) {
            stats.reused_steps += 1;
            reuse.carry(&previous[i], y_hat)
        } else {
            stats.network_steps += 1;
            tch::no_grad(|| predict_clean_latent(denoiser, schedule, &z, t, y_hat, c0, &ratio_t))
        };
        let s = timesteps.get(i + 1).copied().unwrap_or(0);
        let noise = seeded_noise(plan.seed.wrapping_add(1 + i as u64), &shape, device);
        z = schedule.posterior_step(&z, &y_pred, t, s, &noise);
        predictions.push(y_pred);
    }
    if plan.use_buffer {
        buffer.frame = Some((y_hat.shallow_clone(), predictions));
    }
    stats.seconds = started.elapsed().as_secs_f64();
    (z, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DenoiserConfig {
        crate::model::ModelConfig::tiny_for_tests().denoiser
    }

    #[test]
    fn posterior_with_exact_prediction_converges_to_the_latent() {
        let s = NoiseSchedule::new(&cfg());
        let y = seeded_noise(1, &[1, 4, 8, 8], Device::Cpu);
        let ts = s.timesteps(300, 6);
        assert_eq!(ts.len(), 6);
        assert!(ts.windows(2).all(|w| w[0] > w[1]));
        let mut z = s.add_noise(&y, &seeded_noise(2, &[1, 4, 8, 8], Device::Cpu), ts[0]);
        for (i, &t) in ts.iter().enumerate() {
            let next = ts.get(i + 1).copied().unwrap_or(0);
            z = s.posterior_step(&z, &y, t, next, &seeded_noise(3 + i as u64, &[1, 4, 8, 8], Device::Cpu));
        }
        let err = (&z - &y).abs().max().double_value(&[]);
        assert!(err < 1e-5, "ended {err} away from the clean latent");
    }

    fn shift_right(x: &Tensor, by: i64) -> Tensor {
        let w = x.size()[3];
        Tensor::cat(&[x.narrow(3, 0, by), x.narrow(3, 0, w - by)], 3)
    }

    fn max_diff(a: &Tensor, b: &Tensor, from_col: i64) -> f64 {
        let w = a.size()[3] - from_col;
        (a.narrow(3, from_col, w) - b.narrow(3, from_col, w)).abs().max().double_value(&[])
    }

    #[test]
    fn reuse_follows_the_decoded_motion() {
        // The scene moves 2 latent pixels to the right; the decoded motion says so
        // (backward flow: each pixel samples the previous frame 2 pixels to its left).
        let source = seeded_noise(1, &[1, 4, 8, 12], Device::Cpu);
        let previous = seeded_noise(2, &[1, 4, 8, 12], Device::Cpu);
        let y_hat = shift_right(&source, 2);
        let flow = Tensor::cat(
            &[
                Tensor::full([1, 1, 8, 12], -2.0, (Kind::Float, Device::Cpu)),
                Tensor::zeros([1, 1, 8, 12], (Kind::Float, Device::Cpu)),
            ],
            1,
        );
        for tau in [0.0, 0.3] {
            let reused = Reuse::new(&source, &y_hat, Some(&flow), tau).carry(&previous, &y_hat);
            // Away from the left border (which the warp fills by replication).
            let err = max_diff(&reused, &shift_right(&previous, 2), 2);
            assert!(err < 1e-5, "τ = {tau}: the reused prediction is {err} off the moved one");
        }
        // Plain reuse (DiffVC) would have painted the previous frame where it was.
        assert!(max_diff(&previous, &shift_right(&previous, 2), 2) > 0.5);
    }

    #[test]
    fn reuse_ignores_a_wrong_motion_and_new_content() {
        let source = seeded_noise(1, &[1, 4, 8, 12], Device::Cpu);
        let previous = seeded_noise(2, &[1, 4, 8, 12], Device::Cpu);
        let wrong = Tensor::full([1, 2, 8, 12], 3.0, (Kind::Float, Device::Cpu));
        // A static scene with a wrong decoded motion: no motion aligns better, so the
        // previous prediction is reused where it was.
        let reused = Reuse::new(&source, &source, Some(&wrong), 0.3).carry(&previous, &source);
        assert!(max_diff(&reused, &previous, 0) < 1e-5);
        // New content (ŷ unrelated to the previous ŷ): the current ŷ stays the base and
        // only the previous detail ÿ − ŷ is added.
        let y_hat = seeded_noise(3, &[1, 4, 8, 12], Device::Cpu) * 10.0;
        let reused = Reuse::new(&source, &y_hat, None, 0.3).carry(&previous, &y_hat);
        let expected = &y_hat + (&previous - &source);
        assert!(max_diff(&reused, &expected, 0) < 1e-4);
    }

    #[test]
    fn seeded_noise_is_reproducible_and_standard() {
        let a = seeded_noise(42, &[4096], Device::Cpu);
        assert!(a.equal(&seeded_noise(42, &[4096], Device::Cpu)));
        assert!(!a.equal(&seeded_noise(43, &[4096], Device::Cpu)));
        let (m, sd) = (a.mean(Kind::Float).double_value(&[]), a.std(true).double_value(&[]));
        assert!(m.abs() < 0.05 && (sd - 1.0).abs() < 0.05, "mean {m}, std {sd}");
    }
}
