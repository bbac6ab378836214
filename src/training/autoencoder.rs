//! Stage 0: the latent autoencoder (E, D), trained with L1 + an LPIPS perceptual loss and
//! then frozen for every later stage. The perceptual backbone is selectable: VGG16 (what
//! DiffVC's losses use) costs ~6× AlexNet per step on this CPU, so AlexNet is the default.

use super::{psnr, restore_weights, Rng, StageOptions, StageRun, TrainingClips};
use crate::model::lpips::{Backbone, Lpips};
use crate::model::{load_pretrained, LatentAutoencoder, ModelConfig};
use anyhow::Result;
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind};

pub struct Options {
    pub stage: StageOptions,
    /// Weight of the perceptual term.
    pub perceptual_weight: f64,
    pub perceptual_backbone: Backbone,
    /// LPIPS taps used by the loss (1–5; fewer is cheaper).
    pub perceptual_layers: usize,
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
    let file = match opt.perceptual_backbone {
        Backbone::AlexNet => "lpips_alexnet.safetensors",
        Backbone::Vgg16 => "lpips_vgg16.safetensors",
    };
    let (_, perceptual_net) = load_pretrained(file, device, |p| Lpips::new(p, opt.perceptual_backbone))?;
    let mut optim = nn::Adam::default().build(&vs, opt.stage.lr)?;
    let mut rng = Rng::new(opt.stage.seed ^ run.step as u64);
    let mut window = (0.0, 0.0, 0.0, 0usize);
    let mut last_log = Instant::now();
    while run.more() {
        optim.set_lr(run.lr());
        let x = data.sample(&mut rng, opt.stage.batch, 1, opt.stage.crop)?.squeeze_dim(1).to_device(device);
        let y = ae.encoder.encode(&x);
        // Latent noise keeps D robust to the codec's reconstruction error.
        let y_noisy = &y + y.randn_like() * 0.05;
        let xr = ae.decoder.decode(&y_noisy);
        let l1 = (&xr - &x).abs().mean(Kind::Float);
        let perceptual = perceptual_net.distance_layers(&xr, &x, opt.perceptual_layers).mean(Kind::Float);
        let reg = y.square().mean(Kind::Float) * 1e-4;
        let loss = &l1 + &perceptual * opt.perceptual_weight + reg;
        optim.backward_step_clip_norm(&loss, 1.0);
        run.step += 1;
        window.0 += l1.double_value(&[]);
        window.1 += perceptual.double_value(&[]);
        window.2 += psnr(&xr.detach().clamp(0.0, 1.0), &x);
        window.3 += 1;
        if run.step % 25 == 0 || run.step == opt.stage.steps {
            let n = window.3 as f64;
            eprintln!(
                "[ae] step {}/{} l1 {:.4} lpips {:.4} psnr {:.2} dB | {:.2} s/step",
                run.step,
                opt.stage.steps,
                window.0 / n,
                window.1 / n,
                window.2 / n,
                last_log.elapsed().as_secs_f64() / n
            );
            window = (0.0, 0.0, 0.0, 0);
            last_log = Instant::now();
        }
        if run.step % 250 == 0 {
            run.save(&vs)?;
        }
    }
    run.save(&vs)?;
    evaluate(data, &ae, device)?;
    Ok(())
}

/// PSNR and LPIPS (AlexNet) of E→D on held-out frames (frame 0 of every clip, 256 crops).
pub fn evaluate(data: &TrainingClips, ae: &LatentAutoencoder, device: Device) -> Result<(f64, f64)> {
    let (_, alex) = load_pretrained("lpips_alexnet.safetensors", device, |p| Lpips::new(p, Backbone::AlexNet))?;
    let (mut sp, mut sl, mut n) = (0.0, 0.0, 0.0);
    for index in [0, 40] {
        for (name, x) in data.held_out(index, 256) {
            let x = x.to_device(device);
            let xr = tch::no_grad(|| ae.decoder.decode(&ae.encoder.encode(&x)).clamp(0.0, 1.0));
            let (p, l) = (psnr(&xr, &x), tch::no_grad(|| alex.distance(&xr, &x)).double_value(&[0]));
            eprintln!("[ae-eval] {name} frame {index}: PSNR {p:.2} dB, LPIPS {l:.4}");
            sp += p;
            sl += l;
            n += 1.0;
        }
    }
    eprintln!("[ae-eval] mean over {n} held-out crops: PSNR {:.2} dB, LPIPS {:.4}", sp / n, sl / n);
    Ok((sp / n, sl / n))
}
