//! Stage 2: the latent denoiser and its control branch (DiffVC Table 2, stage 8), on
//! latents decoded by the frozen codec at every QP, with the QP prompt. ε-prediction
//! (MSE) on z_n built from the clean latent y, conditioned on ŷ and C̄⁰ (zeros for
//! I-frames). Only timesteps up to the decoder's start step N are trained: sampling
//! never starts above it.
//!
//! With `start_share` > 0, that share of the batch is trained on what the decoder's first
//! step actually sees: ŷ (not y) noised to the QP's start step N, with the loss on the
//! predicted clean latent against y. Noising y alone never shows the network a
//! quantization error, so it only removes the added noise around ŷ, whatever the QP prompt
//! says; the matched items make it undo the QP's coding error.
//!
//! With a [`SampledPerceptual`] term, every step also runs the decoder's own sampling (ŷ
//! noised to the QP's start step N, DS posterior steps, no reuse) with gradients, decodes
//! z⁰ with the frozen D and adds L1 + LPIPS against the frame: ε-MSE alone makes the
//! prediction a posterior mean, which D decodes no sharper than ŷ, so the decoder's few
//! steps from little noise gain almost nothing perceptually over D(ŷ).

use super::codec::FrozenCodec;
use super::psnr;
use super::{restore_weights, trained_qps, Rng, StageOptions, StageRun, TrainingClips};
use crate::diffusion::{predict_clean_latent, NoiseSchedule};
use crate::model::denoiser::Denoiser;
use crate::model::lpips::{Backbone, Lpips};
use crate::model::ModelConfig;
use anyhow::Result;
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

pub struct Options {
    pub stage: StageOptions,
    /// Share of each batch trained at the decoder's start step from ŷ (see the module doc).
    pub start_share: f64,
    pub perceptual: Option<SampledPerceptual>,
    /// The rate points drawn from (see [`trained_qps`]); `None`: every QP.
    pub qps: Option<Vec<i64>>,
}

/// The pixel loss on the decoder's sampled output (see the module doc):
/// `weight` · (L1 + `lpips_weight` · LPIPS + `harm_weight` · mean over items of
/// max(0, LPIPS − LPIPS of D(ŷ))).
pub struct SampledPerceptual {
    pub weight: f64,
    pub lpips_weight: f64,
    /// The "no harm" hinge: items the diffusion decoder renders worse than D(ŷ) (by LPIPS)
    /// weigh this much more. The mean LPIPS gain hides crops the denoiser harms (bikes' dark,
    /// defocused scene after its cut, session 34), and there the encoder can only signal no
    /// diffusion at all.
    pub harm_weight: f64,
    pub backbone: Backbone,
    /// DS of the sampling trained through (the decoder's default is 4).
    pub steps: usize,
}

impl SampledPerceptual {
    /// The term from the sampled output's L1 and per-item LPIPS, and the per-item LPIPS of
    /// D(ŷ) (no gradient).
    fn loss(&self, l1: &Tensor, lpips: &Tensor, lpips_of_y_hat: &Tensor) -> Tensor {
        let harm = (lpips - lpips_of_y_hat).relu().mean(Kind::Float);
        (l1 + lpips.mean(Kind::Float) * self.lpips_weight + harm * self.harm_weight) * self.weight
    }
}

/// Per-QP figures over the steps since the last log line.
#[derive(Clone, Default)]
struct QpWindow {
    /// ε-MSE sum over items noised from y, and their count.
    eps: f64,
    eps_items: f64,
    /// Items noised from ŷ at the start step: clean-latent MSE of the prediction and of ŷ.
    clean: f64,
    clean_of_y_hat: f64,
    start_items: f64,
    /// Sampled output against D(ŷ): LPIPS and PSNR of each, and the number of steps.
    lpips: f64,
    lpips_of_y_hat: f64,
    psnr: f64,
    psnr_of_y_hat: f64,
    sampled_steps: f64,
    /// Sampled items worse than D(ŷ) by LPIPS, and all sampled items.
    harmed_items: f64,
    sampled_items: f64,
}

impl QpWindow {
    fn describe(&self, qp: usize) -> String {
        let mut line = String::new();
        if self.eps_items > 0.0 {
            line += &format!(" | qp{qp} ε-mse {:.4}", self.eps / self.eps_items);
        }
        if self.start_items > 0.0 {
            let n = self.start_items;
            line += &format!(" | qp{qp} at N: clean mse {:.4} (ŷ {:.4})", self.clean / n, self.clean_of_y_hat / n);
        }
        if self.sampled_steps > 0.0 {
            let n = self.sampled_steps;
            line += &format!(
                " | qp{qp} sampled: lpips {:.4} (D(ŷ) {:.4}) psnr {:.2} ({:.2}) harmed {:.0} %",
                self.lpips / n,
                self.lpips_of_y_hat / n,
                self.psnr / n,
                self.psnr_of_y_hat / n,
                100.0 * self.harmed_items / self.sampled_items.max(1.0)
            );
        }
        line
    }
}

/// The decoder's sampling without reuse ([`crate::diffusion::sample`] with D = DS), with
/// gradients: ŷ noised to `start`, then `steps` posterior steps; noise from libtorch's RNG.
#[allow(clippy::too_many_arguments)]
fn sample_with_gradients(
    denoiser: &Denoiser,
    schedule: &NoiseSchedule,
    start: usize,
    steps: usize,
    y_hat: &Tensor,
    c0: &Tensor,
    ratio: &Tensor,
) -> Tensor {
    let timesteps = schedule.timesteps(start, steps);
    let mut z = schedule.add_noise(y_hat, &y_hat.randn_like(), timesteps[0]);
    for (i, &t) in timesteps.iter().enumerate() {
        let y_pred = predict_clean_latent(denoiser, schedule, &z, t, y_hat, c0, ratio);
        let s = timesteps.get(i + 1).copied().unwrap_or(0);
        z = schedule.posterior_step(&z, &y_pred, t, s, &z.randn_like());
    }
    z
}

pub fn train(data: &TrainingClips, options: &Options) -> Result<()> {
    let opt = &options.stage;
    let device = Device::cuda_if_available();
    let mut cfg = ModelConfig::load(&opt.model_dir)?;
    let mut run = StageRun::start(opt, "diffusion")?;
    tch::manual_seed(opt.seed as i64);

    let frozen = FrozenCodec::load(&cfg, run.weights(), device)?;
    let mut rng = Rng::new(opt.seed);

    let mut vs = nn::VarStore::new(device);
    let latent = cfg.autoencoder.latent_channels;
    let denoiser = Denoiser::new(vs.root() / "denoiser", latent, cfg.codec.context, &cfg.denoiser);
    let restored = restore_weights(&mut vs, run.weights())?;
    run.restart_if_fresh(restored);
    if restored == 0 {
        opt.grow(&mut vs, &cfg, "diffusion")?;
    }
    // A trained denoiser keeps the scale it learned with, even when its step counter is lost.
    if restored == 0 {
        // Bring the latent to unit variance for the noise schedule (SD's 0.18215 analogue).
        let x = data.sample(&mut rng, 32, 1, opt.crop)?.squeeze_dim(1).to_device(device);
        let y = tch::no_grad(|| frozen.autoencoder.encoder.encode(&x));
        cfg.denoiser.latent_scale = 1.0 / y.std(true).double_value(&[]);
        cfg.save(&opt.model_dir)?;
        eprintln!("[diffusion] latent scale {:.4}", cfg.denoiser.latent_scale);
    }
    let scale = cfg.denoiser.latent_scale;
    let schedule = NoiseSchedule::new(&cfg.denoiser);
    eprintln!("[diffusion] resuming at step {}", run.step);
    let mut optim = nn::Adam::default().build(&vs, opt.lr)?;
    let nq = cfg.codec.num_qps as usize;
    let qps = trained_qps(options.qps.as_deref(), cfg.codec.num_qps)?;
    eprintln!("[diffusion] QPs drawn from: {qps:?}");
    let perceptual = match &options.perceptual {
        Some(p) => {
            anyhow::ensure!(p.steps >= 1, "the sampled perceptual term needs at least one step");
            let lpips = Lpips::pretrained(p.backbone, device)?;
            eprintln!(
                "[diffusion] sampled perceptual term: {} · (L1 + {} · LPIPS-{:?}) over {} steps",
                p.weight, p.lpips_weight, p.backbone, p.steps
            );
            Some((p, lpips))
        }
        None => None,
    };
    let mut window = vec![QpWindow::default(); nq];
    let mut last_log = Instant::now();
    let mut logged = 0;
    while run.more() {
        optim.set_lr(run.lr());
        let qp = qps[rng.below(qps.len() as u64) as usize];
        let seq = data.sample(&mut rng, opt.batch, 2, opt.crop)?.to_device(device);
        let (ys, coded) = frozen.code(&seq, qp);
        let c0_i = coded[1].c0.as_ref().unwrap().zeros_like();
        let y = Tensor::cat(&[&ys[0], &ys[1]], 0) * scale;
        let y_hat = Tensor::cat(&[&coded[0].y_hat, &coded[1].y_hat], 0) * scale;
        let c0 = Tensor::cat(&[&c0_i, coded[1].c0.as_ref().unwrap()], 0);
        let n = y.size()[0];
        let ratio_i = frozen.codec.intra.scales.prompt(qp);
        let ratio_p = frozen.codec.contextual.scales.prompt(qp);
        let ratio = Tensor::cat(
            &[
                Tensor::full([n / 2], ratio_i, (Kind::Float, device)),
                Tensor::full([n / 2], ratio_p, (Kind::Float, device)),
            ],
            0,
        );
        let start = cfg.denoiser.start_step_for(qp) as i64;
        // No draw at share 0, so earlier recipes replay unchanged.
        let matched: Vec<bool> = (0..n).map(|_| options.start_share > 0.0 && rng.chance(options.start_share)).collect();
        let t: Vec<i64> = matched
            .iter()
            .map(|&m| if m { start } else { 1 + rng.below(cfg.denoiser.start_step as u64) as i64 })
            .collect();
        let ab: Vec<f32> = t.iter().map(|&t| schedule.alpha_bar(t as usize) as f32).collect();
        let ab = Tensor::from_slice(&ab).to_device(device).view([n, 1, 1, 1]);
        let m: Vec<f32> = matched.iter().map(|&m| f32::from(u8::from(m))).collect();
        let m = Tensor::from_slice(&m).to_device(device).view([n, 1, 1, 1]);
        let eps = y.randn_like();
        let source = &y_hat * &m + &y * (-&m + 1.0);
        let z = &source * ab.sqrt() + &eps * (-&ab + 1.0).sqrt();
        let t = Tensor::from_slice(&t).to_device(device);
        let pred = denoiser.forward(&z, &t, &y_hat, &c0, &ratio);
        let eps_loss = (&pred - &eps).square().mean_dim(&[1i64, 2, 3][..], false, Kind::Float);
        // NoiseSchedule::predict_clean (eq. 3) with a per-item ᾱ.
        let clean = (&z - &pred * (-&ab + 1.0).sqrt()) / ab.sqrt();
        let clean_loss = (clean - &y).square().mean_dim(&[1i64, 2, 3][..], false, Kind::Float);
        let m = m.view([n]);
        let noise_loss = (&eps_loss * (-&m + 1.0) + &clean_loss * &m).mean(Kind::Float);
        let w = &mut window[qp as usize];
        let pixel_loss = perceptual.as_ref().map(|(p, lpips)| {
            let z0 = sample_with_gradients(&denoiser, &schedule, start as usize, p.steps, &y_hat, &c0, &ratio);
            let decoded = frozen.autoencoder.decoder.decode(&(z0 / scale));
            let x = Tensor::cat(&[seq.select(1, 0), seq.select(1, 1)], 0);
            let per_item = lpips.distance(&decoded, &x);
            let distance = per_item.mean(Kind::Float);
            let l1 = (&decoded - &x).abs().mean(Kind::Float);
            // The same figures for D(ŷ), the decode without diffusion this term must beat.
            let (baseline, per_item_of_y_hat) = tch::no_grad(|| {
                let baseline = frozen.autoencoder.decoder.decode(&(&y_hat / scale)).clamp(0.0, 1.0);
                let d = lpips.distance(&baseline, &x);
                (baseline, d)
            });
            w.lpips += distance.double_value(&[]);
            w.lpips_of_y_hat += per_item_of_y_hat.mean(Kind::Float).double_value(&[]);
            w.psnr += psnr(&decoded.detach().clamp(0.0, 1.0), &x);
            w.psnr_of_y_hat += psnr(&baseline, &x);
            w.sampled_steps += 1.0;
            w.harmed_items += per_item.gt_tensor(&per_item_of_y_hat).sum(Kind::Float).double_value(&[]);
            w.sampled_items += n as f64;
            p.loss(&l1, &per_item, &per_item_of_y_hat)
        });
        let loss = match pixel_loss {
            Some(pixel) => noise_loss + pixel,
            None => noise_loss,
        };
        if !loss.double_value(&[]).is_finite() {
            eprintln!("[diffusion] step {}: non-finite loss at qp {qp}, batch skipped", run.step);
            continue;
        }
        optim.backward_step_clip_norm(&loss, 1.0);
        run.step += 1;
        // One device read per tensor, and ŷ's own error only when some item needs it.
        let per_item = |x: &Tensor| Vec::<f64>::try_from(x.detach().to_kind(Kind::Double));
        let eps_loss = per_item(&eps_loss)?;
        let (clean_loss, from_y_hat) = if matched.contains(&true) {
            let from_y_hat = tch::no_grad(|| (&y_hat - &y).square().mean_dim(&[1i64, 2, 3][..], false, Kind::Float));
            (per_item(&clean_loss)?, per_item(&from_y_hat)?)
        } else {
            (Vec::new(), Vec::new())
        };
        for (i, &matched) in matched.iter().enumerate() {
            if matched {
                w.clean += clean_loss[i];
                w.clean_of_y_hat += from_y_hat[i];
                w.start_items += 1.0;
            } else {
                w.eps += eps_loss[i];
                w.eps_items += 1.0;
            }
        }
        logged += 1;
        let every = if perceptual.is_some() { 10 } else { 50 };
        if run.step % every == 0 || run.step == opt.steps {
            let mut line = format!("[diffusion] step {}/{}", run.step, opt.steps);
            for (q, w) in window.iter().enumerate() {
                line += &w.describe(q);
            }
            eprintln!("{line} | {:.2} s/step", last_log.elapsed().as_secs_f64() / logged as f64);
            window = vec![QpWindow::default(); nq];
            last_log = Instant::now();
            logged = 0;
        }
        if run.step % 200 == 0 {
            run.save(&vs)?;
        }
    }
    run.save(&vs)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::{checkpoint_file, tiny_stage};

    /// Two steps of the stage on a tiny random model; the checkpoint it writes.
    fn train_tiny(perceptual: Option<SampledPerceptual>, tag: &str) -> Vec<(String, Tensor)> {
        let (data, stage) = tiny_stage(&format!("diffusion-stage-{tag}"));
        let dir = stage.model_dir.clone();
        train(&data, &Options { stage, start_share: 0.0, perceptual, qps: None }).unwrap();
        let trained = Tensor::read_safetensors(checkpoint_file(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        trained
    }

    /// The pixel term on the sampled output reaches the denoiser (and only the denoiser):
    /// the same seeds and random draws with the term at weight 0 and 1 train different weights.
    #[test]
    fn sampled_perceptual_term_trains_the_denoiser() {
        let term = |weight| SampledPerceptual {
            weight,
            lpips_weight: 0.5,
            harm_weight: 0.0,
            backbone: Backbone::AlexNet,
            steps: 2,
        };
        let plain = train_tiny(Some(term(0.0)), "weight0");
        let with_term = train_tiny(Some(term(1.0)), "weight1");
        assert!(with_term.iter().all(|(k, _)| k.starts_with("denoiser.")), "only the denoiser is written");
        assert_eq!(plain.len(), with_term.len());
        let plain: std::collections::HashMap<_, _> = plain.into_iter().collect();
        let differ = with_term.iter().filter(|(k, v)| !v.equal(&plain[k])).count();
        assert!(differ > 0, "the sampled term changed nothing");
    }

    /// The no-harm hinge adds weight to the items rendered worse than D(ŷ) and only to them:
    /// d loss / d LPIPS_i = W · (L + H · [LPIPS_i > LPIPS of D(ŷ)_i]) / n.
    #[test]
    fn no_harm_term_weighs_only_items_worse_than_no_diffusion() {
        let term = SampledPerceptual {
            weight: 2.0,
            lpips_weight: 0.5,
            harm_weight: 4.0,
            backbone: Backbone::AlexNet,
            steps: 2,
        };
        let lpips = Tensor::from_slice(&[0.30f32, 0.10, 0.25, 0.40]).set_requires_grad(true);
        let of_y_hat = Tensor::from_slice(&[0.20f32, 0.20, 0.25, 0.10]);
        let l1 = Tensor::from(0.05f32);
        let loss = term.loss(&l1, &lpips, &of_y_hat);
        // 2 · (0.05 + 0.5 · 0.2625 + 4 · (0.1 + 0.3) / 4)
        assert!((loss.double_value(&[]) - 2.0 * (0.05 + 0.5 * 0.2625 + 0.4)).abs() < 1e-6);
        loss.backward();
        let grad = Vec::<f64>::try_from(lpips.grad().to_kind(Kind::Double)).unwrap();
        let expected = [2.0 * (0.5 + 4.0) / 4.0, 2.0 * 0.5 / 4.0, 2.0 * 0.5 / 4.0, 2.0 * (0.5 + 4.0) / 4.0];
        for (g, e) in grad.iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{grad:?} against {expected:?}");
        }
    }
}
