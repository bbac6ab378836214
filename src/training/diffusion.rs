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

use super::codec::FrozenCodec;
use super::{restore_weights, Rng, StageOptions, StageRun, TrainingClips};
use crate::diffusion::NoiseSchedule;
use crate::model::denoiser::Denoiser;
use crate::model::ModelConfig;
use anyhow::Result;
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

pub struct Options {
    pub stage: StageOptions,
    /// Share of each batch trained at the decoder's start step from ŷ (see the module doc).
    pub start_share: f64,
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
    let share_threshold = (options.start_share * f64::from(1u32 << 20)) as u64;
    // Per QP: ε-MSE sum and count (items noised from y); clean-latent MSE of the prediction
    // and of ŷ itself, and count (items noised from ŷ at the start step).
    let mut window = vec![[0.0f64; 5]; nq];
    let mut last_log = Instant::now();
    let mut logged = 0;
    while run.more() {
        optim.set_lr(run.lr());
        let qp = rng.below(nq as u64) as i64;
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
        let matched: Vec<bool> =
            (0..n).map(|_| options.start_share > 0.0 && rng.below(1 << 20) < share_threshold).collect();
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
        let loss = (&eps_loss * (-&m + 1.0) + &clean_loss * &m).mean(Kind::Float);
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
        let w = &mut window[qp as usize];
        for (i, &matched) in matched.iter().enumerate() {
            if matched {
                w[2] += clean_loss[i];
                w[3] += from_y_hat[i];
                w[4] += 1.0;
            } else {
                w[0] += eps_loss[i];
                w[1] += 1.0;
            }
        }
        logged += 1;
        if run.step % 50 == 0 || run.step == opt.steps {
            let mut line = format!("[diffusion] step {}/{}", run.step, opt.steps);
            for (q, w) in window.iter().enumerate() {
                if w[1] > 0.0 {
                    line += &format!(" | qp{q} ε-mse {:.4}", w[0] / w[1]);
                }
                if w[4] > 0.0 {
                    line += &format!(" | qp{q} at N: clean mse {:.4} (ŷ {:.4})", w[2] / w[4], w[3] / w[4]);
                }
            }
            eprintln!("{line} | {:.2} s/step", last_log.elapsed().as_secs_f64() / logged as f64);
            window = vec![[0.0; 5]; nq];
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
