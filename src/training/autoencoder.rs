//! Stage 0: the latent autoencoder (E, D), trained with L1 + LPIPS perceptual terms and then
//! frozen for every later stage. The backbones are selectable: VGG16 (what DiffVC's losses
//! use; gvc-wide) costs 4.5–6× AlexNet per step on this project's CPUs (gvc-small used AlexNet).
//!
//! `train_decoder` fine-tunes D alone, later, on what it decodes in the product: the frozen
//! codec's ŷ at every QP (I- and P-frames), beside E's latent with noise as in stage 0. E
//! stays as it is, so the codec and the denoiser, which live in E's latent space, stay valid.

use super::codec::FrozenCodec;
use super::{psnr, restore_weights, Rng, StageOptions, StageRun, TrainingClips};
use crate::metrics::DistsMetric;
use crate::model::lpips::{Backbone, Lpips};
use crate::model::{LatentAutoencoder, LatentDecoder, LatentEncoder, ModelConfig};
use anyhow::{ensure, Result};
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

pub struct Options {
    pub stage: StageOptions,
    /// LPIPS terms of the loss: backbone and weight.
    pub perceptual: Vec<(Backbone, f64)>,
    /// LPIPS taps used by the loss (1–5; fewer is cheaper).
    pub perceptual_layers: usize,
}

/// Σ weight · LPIPS over the configured backbones.
struct PerceptualLoss {
    terms: Vec<(Backbone, Lpips, f64)>,
    layers: usize,
}

impl PerceptualLoss {
    fn new(opt: &Options, device: Device) -> Result<Self> {
        ensure!(!opt.perceptual.is_empty(), "no perceptual term");
        let terms =
            opt.perceptual.iter().map(|&(b, w)| Ok((b, Lpips::pretrained(b, device)?, w))).collect::<Result<_>>()?;
        Ok(Self { terms, layers: opt.perceptual_layers })
    }

    /// The weighted sum and each term's mean distance.
    fn loss(&self, xr: &Tensor, x: &Tensor) -> (Tensor, Vec<f64>) {
        let distances: Vec<Tensor> =
            self.terms.iter().map(|(_, net, _)| net.distance_layers(xr, x, self.layers).mean(Kind::Float)).collect();
        let sum = distances.iter().zip(&self.terms).map(|(d, (_, _, w))| d * *w).reduce(|a, b| a + b).unwrap();
        (sum, distances.iter().map(|d| d.double_value(&[])).collect())
    }

    /// "alexnet 0.0812 vgg16 0.2301" from the summed distances of `n` steps.
    fn describe(&self, sums: &[f64], n: f64) -> String {
        let names = self.terms.iter().map(|(b, _, _)| format!("{b:?}").to_lowercase());
        names.zip(sums).map(|(name, s)| format!("{name} {:.4}", s / n)).collect::<Vec<_>>().join(" ")
    }
}

pub fn train(data: &TrainingClips, opt: &Options) -> Result<()> {
    let device = Device::cuda_if_available();
    let cfg = ModelConfig::load(&opt.stage.model_dir)?;
    let mut run = StageRun::start(&opt.stage, "ae")?;
    tch::manual_seed(opt.stage.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let ae = LatentAutoencoder::new(vs.root() / "autoencoder", &cfg.autoencoder);
    let restored = restore_weights(&mut vs, run.weights())?;
    run.restart_if_fresh(restored);
    eprintln!("[ae] {} tensors restored, resuming at step {}", restored, run.step);
    if restored == 0 && opt.stage.grow(&mut vs, &cfg, "ae")? {
        evaluate(data, &ae.encoder, &ae.decoder, device)?;
    }
    let perceptual_loss = PerceptualLoss::new(opt, device)?;
    let mut optim = nn::Adam::default().build(&vs, opt.stage.lr)?;
    let mut rng = Rng::new(opt.stage.seed ^ run.step as u64);
    let mut window = (0.0, vec![0.0; opt.perceptual.len()], 0.0, 0usize);
    let mut last_log = Instant::now();
    while run.more() {
        optim.set_lr(run.lr());
        let x = data.sample(&mut rng, opt.stage.batch, 1, opt.stage.crop)?.squeeze_dim(1).to_device(device);
        let y = ae.encoder.encode(&x);
        // Latent noise keeps D robust to the codec's reconstruction error.
        let y_noisy = &y + y.randn_like() * 0.05;
        let xr = ae.decoder.decode(&y_noisy);
        let l1 = (&xr - &x).abs().mean(Kind::Float);
        let (perceptual, distances) = perceptual_loss.loss(&xr, &x);
        let reg = y.square().mean(Kind::Float) * 1e-4;
        let loss = &l1 + perceptual + reg;
        optim.backward_step_clip_norm(&loss, 1.0);
        run.step += 1;
        window.0 += l1.double_value(&[]);
        window.1.iter_mut().zip(&distances).for_each(|(s, d)| *s += d);
        window.2 += psnr(&xr.detach().clamp(0.0, 1.0), &x);
        window.3 += 1;
        if run.step % 25 == 0 || run.step == opt.stage.steps {
            let n = window.3 as f64;
            eprintln!(
                "[ae] step {}/{} l1 {:.4} lpips {} psnr {:.2} dB | {:.2} s/step",
                run.step,
                opt.stage.steps,
                window.0 / n,
                perceptual_loss.describe(&window.1, n),
                window.2 / n,
                last_log.elapsed().as_secs_f64() / n
            );
            window = (0.0, vec![0.0; opt.perceptual.len()], 0.0, 0);
            last_log = Instant::now();
        }
        if run.step % 250 == 0 {
            run.save(&vs)?;
        }
    }
    run.save(&vs)?;
    evaluate(data, &ae.encoder, &ae.decoder, device)?;
    Ok(())
}

/// Fine-tunes the latent decoder D on the frozen codec's ŷ (a random QP per step, every
/// frame of an I + P cascade of `frames`) and on E's latent with noise, with stage 0's loss.
pub fn train_decoder(data: &TrainingClips, opt: &Options, frames: i64) -> Result<()> {
    ensure!(frames >= 1, "--frames must be at least 1");
    let device = Device::cuda_if_available();
    let cfg = ModelConfig::load(&opt.stage.model_dir)?;
    let mut run = StageRun::start(&opt.stage, "decoder")?;
    tch::manual_seed(opt.stage.seed as i64);
    ensure!(opt.stage.grow_from.is_none(), "the decoder stage fine-tunes a trained D: no --grow-from");
    let frozen = FrozenCodec::load(&cfg, run.weights(), device)?;
    let mut vs = nn::VarStore::new(device);
    let decoder = LatentDecoder::new(vs.root() / "autoencoder" / "decoder", &cfg.autoencoder);
    ensure!(restore_weights(&mut vs, run.weights())? == vs.len(), "train the autoencoder stage first");
    eprintln!("[decoder] resuming at step {}", run.step);
    if run.step == 0 {
        evaluate(data, &frozen.autoencoder.encoder, &decoder, device)?;
    }
    let perceptual_loss = PerceptualLoss::new(opt, device)?;
    let mut optim = nn::Adam::default().build(&vs, opt.stage.lr)?;
    let mut rng = Rng::new(opt.stage.seed ^ run.step as u64);
    let nq = cfg.codec.num_qps as usize;
    // Per QP: PSNR of D(ŷ) summed over logged steps, count; then E's path (all QPs).
    let mut window = (vec![(0.0, 0usize); nq], 0.0, 0.0, 0usize);
    let mut last_log = Instant::now();
    while run.more() {
        optim.set_lr(run.lr());
        let qp = rng.below(nq as u64) as i64;
        let seq = data.sample(&mut rng, opt.stage.batch, frames, opt.stage.crop)?.to_device(device);
        let (ys, coded) = frozen.code(&seq, qp);
        let mut latents: Vec<Tensor> = coded.iter().map(|c| c.y_hat.shallow_clone()).collect();
        // Stage 0's objective too: the denoiser's output lies between ŷ and E's latent.
        latents.push(&ys[0] + ys[0].randn_like() * 0.05);
        let mut targets: Vec<Tensor> = (0..frames).map(|t| seq.select(1, t)).collect();
        targets.push(seq.select(1, 0));
        let (latents, x) = (Tensor::cat(&latents, 0), Tensor::cat(&targets, 0));
        let xr = decoder.decode(&latents);
        let l1 = (&xr - &x).abs().mean(Kind::Float);
        let (perceptual, distances) = perceptual_loss.loss(&xr, &x);
        let loss = &l1 + perceptual;
        optim.backward_step_clip_norm(&loss, 1.0);
        run.step += 1;
        let coded_items = frames * opt.stage.batch as i64;
        let xr = xr.detach().clamp(0.0, 1.0);
        let w = &mut window.0[qp as usize];
        w.0 += psnr(&xr.narrow(0, 0, coded_items), &x.narrow(0, 0, coded_items));
        w.1 += 1;
        let b = opt.stage.batch as i64;
        window.1 += psnr(&xr.narrow(0, coded_items, b), &x.narrow(0, coded_items, b));
        window.2 += distances.iter().sum::<f64>();
        window.3 += 1;
        if run.step % 25 == 0 || run.step == opt.stage.steps {
            let n = window.3 as f64;
            let per_qp: Vec<String> = window
                .0
                .iter()
                .enumerate()
                .filter(|(_, w)| w.1 > 0)
                .map(|(q, w)| format!("qp{q} {:.2}", w.0 / w.1 as f64))
                .collect();
            eprintln!(
                "[decoder] step {}/{} PSNR of D(ŷ) {} dB | of D(E(x)+noise) {:.2} dB | lpips {:.4} | {:.2} s/step",
                run.step,
                opt.stage.steps,
                per_qp.join(" "),
                window.1 / n,
                window.2 / n,
                last_log.elapsed().as_secs_f64() / n
            );
            window = (vec![(0.0, 0); nq], 0.0, 0.0, 0);
            last_log = Instant::now();
        }
        if run.step % 100 == 0 {
            run.save(&vs)?;
        }
    }
    run.save(&vs)?;
    evaluate(data, &frozen.autoencoder.encoder, &decoder, device)?;
    Ok(())
}

/// PSNR, LPIPS (AlexNet) and DISTS of E→D on held-out frames (frames 0 and 40 of every clip,
/// 256 crops). DISTS is trained on by no stage, a check on whatever perceptual loss trained D.
pub fn evaluate(data: &TrainingClips, encoder: &LatentEncoder, decoder: &LatentDecoder, device: Device) -> Result<()> {
    let alex = Lpips::pretrained(Backbone::AlexNet, device)?;
    let dists = DistsMetric::new(device)?;
    let (mut sp, mut sl, mut sd, mut n) = (0.0, 0.0, 0.0, 0.0);
    for index in [0, 40] {
        for (name, x) in data.held_out(index, 256) {
            let x = x.to_device(device);
            let xr = tch::no_grad(|| decoder.decode(&encoder.encode(&x)).clamp(0.0, 1.0));
            let (p, l) = (psnr(&xr, &x), tch::no_grad(|| alex.distance(&xr, &x)).double_value(&[0]));
            let d = dists.mean(&xr, &x);
            eprintln!("[ae-eval] {name} frame {index}: PSNR {p:.2} dB, LPIPS {l:.4}, DISTS {d:.4}");
            (sp, sl, sd, n) = (sp + p, sl + l, sd + d, n + 1.0);
        }
    }
    eprintln!(
        "[ae-eval] mean over {n} held-out crops: PSNR {:.2} dB, LPIPS {:.4}, DISTS {:.4}",
        sp / n,
        sl / n,
        sd / n
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::{checkpoint_file, tiny_stage};
    use std::collections::HashMap;
    use tch::Device;

    /// The decoder stage moves D and nothing else: E, the codec and the denoiser, which live
    /// in E's latent space, stay valid.
    #[test]
    fn decoder_stage_trains_the_latent_decoder_alone() {
        let (data, stage) = tiny_stage("decoder-stage");
        let dir = stage.model_dir.clone();
        let opt = Options { stage, perceptual: vec![(Backbone::AlexNet, 0.5)], perceptual_layers: 5 };
        train_decoder(&data, &opt, 2).unwrap();
        let shipped: HashMap<String, Tensor> =
            Tensor::read_safetensors(dir.join("weights.safetensors")).unwrap().into_iter().collect();
        let trained = Tensor::read_safetensors(checkpoint_file(&dir)).unwrap();
        let is_decoder = |k: &str| k.starts_with("autoencoder.decoder.");
        assert!(trained.iter().all(|(k, _)| is_decoder(k)), "only the decoder is written");
        assert_eq!(trained.len(), shipped.keys().filter(|k| is_decoder(k)).count());
        let moved = trained.iter().filter(|(k, v)| !v.equal(&shipped[k].to_kind(v.kind()))).count();
        assert!(moved > 0, "the decoder did not train");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A wider latent and new blocks, grown from a trained autoencoder, start as that
    /// autoencoder: the same pictures from the same frames.
    #[test]
    fn grown_autoencoder_starts_as_the_one_it_grew_from() {
        use crate::model::AutoencoderConfig;
        use crate::training::{grow_weights, store_weights};
        let dir = std::env::temp_dir().join(format!("gvc-grow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("weights.safetensors");
        tch::manual_seed(5);
        let small_cfg = AutoencoderConfig { channels: [4, 6, 6, 8], latent_channels: 2, scale_blocks: [0, 0] };
        let small_vs = nn::VarStore::new(Device::Cpu);
        let small = LatentAutoencoder::new(small_vs.root() / "autoencoder", &small_cfg);
        store_weights(&small_vs, &file).unwrap();
        let wide_cfg = AutoencoderConfig { latent_channels: 5, scale_blocks: [1, 2], ..small_cfg.clone() };
        let mut wide_vs = nn::VarStore::new(Device::Cpu);
        let wide = LatentAutoencoder::new(wide_vs.root() / "autoencoder", &wide_cfg);
        let (copied, grown) = grow_weights(&mut wide_vs, &file, |_| None).unwrap();
        // E's output conv (weight, bias) and D's input conv grew; the other stored ones are copied.
        assert_eq!((copied + grown, grown), (small_vs.len(), 3));
        assert!(wide_vs.len() > small_vs.len());
        let x = Tensor::rand([2, 3, 16, 24], (Kind::Float, Device::Cpu));
        let (a, b) = tch::no_grad(|| {
            (small.decoder.decode(&small.encoder.encode(&x)), wide.decoder.decode(&wide.encoder.encode(&x)))
        });
        assert!(a.allclose(&b, 1e-5, 1e-6, false), "max difference {}", (&a - &b).abs().max().double_value(&[]));
        // The new latent channels carry something for D to learn from.
        let y = tch::no_grad(|| wide.encoder.encode(&x));
        assert!(y.narrow(1, 2, 3).abs().max().double_value(&[]) > 0.0);
        // A model cannot grow from a larger one.
        let mut small_again = nn::VarStore::new(Device::Cpu);
        let _ = LatentAutoencoder::new(small_again.root() / "autoencoder", &small_cfg);
        store_weights(&wide_vs, &file).unwrap();
        assert!(grow_weights(&mut small_again, &file, |_| None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
