//! Stage 1: the conditional codec (intra, motion and contextual modules) on the frozen
//! autoencoder's latent. One stage covers DiffVC's Table 2 stages 1–7 in compressed form:
//! a motion-alignment warm-up term that fades to a floor, then joint rate–distortion over a
//! cascade of P-frames after an I-frame, at a random QP per step (variable rate in one
//! model through the learned q_enc/q_dec). The distortion is measured either on the latent
//! (cheap, stages RD) or, as DiffVC's stages 6–7 do, on the pixels decoded by the frozen
//! latent decoder D with a perceptual term (RDP).

use super::{restore_weights, trained_qps, Rng, StageOptions, StageRun, TrainingClips};
use crate::model::codec::{CodePrior, ContextualCodec, IntraCodec, MotionCodec, SPATIAL_PRIOR_GROUP};
use crate::model::entropy_model::{gaussian_bits, noisy, ste_round, Hyperprior, RATE_PARAMETER_GROUP};
use crate::model::gvc::GvcModel;
use crate::model::layers::flow_warp;
use crate::model::lpips::{Backbone, Lpips};
use crate::model::spynet::SpyNet;
use crate::model::{LatentAutoencoder, LatentEncoder, ModelConfig};
use anyhow::Result;
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

pub struct Options {
    pub stage: StageOptions,
    /// Frames per training sequence (one I-frame, then P-frames), per QP; one value serves
    /// every QP. Low rates drift most over long P-chains, so they can train on longer cascades
    /// while high rates keep short ones (longer cascades cost high rates bits). 1 codes the
    /// I-frame alone, so only the intra codec learns (P-frames take ŷ₀ detached): a step then
    /// costs a fraction of a cascade's, for an intra codec that lags the rest.
    pub frames: Vec<i64>,
    /// λ of each QP, replacing the model config's (to move the rate ladder).
    pub lambdas: Option<Vec<f64>>,
    /// Weight of the motion-alignment term (× λ) kept after the warm-up. Without it the
    /// decoded motion drifts into a feature map that no longer aligns frames, and TDIR's
    /// buffer needs real motion.
    pub align_floor: f64,
    /// Share of the schedule over which the alignment weight fades from 1 to `align_floor`;
    /// 0 starts at the floor (a trained codec continuing under a new loss).
    pub align_warmup: f64,
    pub distortion: Distortion,
    /// How the training forward pass quantizes (`Train` or `TrainRounded`).
    pub rate_proxy: Quantization,
    /// Learning rate of the per-QP scale tables (`RATE_PARAMETER_GROUP`) relative to the
    /// networks'.
    pub table_lr_factor: f64,
    /// The rate points trained (each step draws one); None: every QP.
    pub qps: Option<Vec<i64>>,
    /// Which variables train.
    pub trained: Trained,
}

/// The variables a codec run trains; the rest stay frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trained {
    All,
    /// The per-QP scale tables (`RATE_PARAMETER_GROUP`) alone: a rate point added to a
    /// trained model learns its own rows while every other rate point stays bit-exact.
    Tables,
    /// The checkerboard spatial priors (`SPATIAL_PRIOR_GROUP`) alone: added to a trained
    /// model, they can only lower the second pass's rate, every transform stays as it is.
    SpatialPrior,
}

impl Trained {
    fn group(self) -> Option<usize> {
        match self {
            Trained::All => None,
            Trained::Tables => Some(RATE_PARAMETER_GROUP),
            Trained::SpatialPrior => Some(SPATIAL_PRIOR_GROUP),
        }
    }
}

/// What the rate–distortion loss measures.
#[derive(Clone, Copy, Debug)]
pub enum Distortion {
    /// MSE between ŷ and y on the latent grid (DiffVC's RD stages moved to the latent).
    Latent,
    /// DiffVC's RDP loss (eq. 12, Table 2 stages 6–7): MSE between D(ŷ) and the frame in
    /// pixels plus `perceptual` × LPIPS on `backbone`, through the frozen latent decoder D,
    /// plus `latent_anchor` × the latent MSE so ŷ stays near y for the diffusion decoder,
    /// which starts from ŷ and is trained to reach y. DiffVC's term is VGG16; it costs ~4.5×
    /// AlexNet per step on this CPU (the autoencoder stage's probes), so AlexNet is the default.
    Pixel { perceptual: f64, backbone: Backbone, latent_anchor: f64 },
}

/// How the codes are quantized in a training forward pass.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Quantization {
    /// Rate on noisy values, straight-through rounding for the synthesis (training).
    Train,
    /// Rate and synthesis on values rounded around the mean with a straight-through gradient
    /// (DCVC-DC's fine-tuning): the forward pass is the coder's, so the rate the loss sees is
    /// the rate the stream pays. The noise proxy overstates low-rate P-frames 2–3×
    /// (codec-check), because a code that rounds to its mean still pays for the noise's spread.
    TrainRounded,
    /// Hard rounding around the mean exactly as the entropy coder does (inference).
    Hard,
}

impl Options {
    /// The cascade length trained at `qp` (after `check_frames`: one length, or one per QP).
    pub fn frames_at(&self, qp: i64) -> i64 {
        if self.frames.len() == 1 {
            self.frames[0]
        } else {
            self.frames[qp as usize]
        }
    }

    fn check_frames(&self, num_qps: i64) -> Result<()> {
        anyhow::ensure!(
            self.frames.len() == 1 || self.frames.len() == num_qps as usize,
            "--frames: give one length or one per QP ({num_qps}), not {}",
            self.frames.len()
        );
        anyhow::ensure!(self.frames.iter().all(|&f| f >= 1), "--frames: a sequence needs at least its I-frame");
        Ok(())
    }
}

/// The decoder-side code, the rate of a (code, z) pair and the part of it spent on z.
fn code_with_hyperprior<'p>(
    hyper: &Hyperprior,
    code: &Tensor,
    qp: i64,
    quant: Quantization,
    prior: impl Fn(&Tensor) -> CodePrior<'p>,
) -> (Tensor, Tensor, Tensor) {
    let z = hyper.analysis(code, qp);
    let round = |x: &Tensor| if quant == Quantization::Hard { x.round() } else { ste_round(x) };
    // The noise proxy rates the noisy value, the rounded ones what the coder codes.
    let rated =
        |x: &Tensor, x_hat: &Tensor| if quant == Quantization::Train { noisy(x) } else { x_hat.shallow_clone() };
    let z_hat = round(&z);
    let z_bits = hyper.z_bits(&rated(&z, &z_hat), qp);
    let (mean, scale) = prior(&z_hat).params_for(code, round);
    let code_hat = round(&(code - &mean)) + &mean;
    let bits = gaussian_bits(&rated(code, &code_hat), &mean, &scale).sum(Kind::Float) + &z_bits;
    (code_hat, bits, z_bits)
}

/// The codec's trainable networks (names as in `GvcModel`).
pub struct CodecNets {
    pub intra: IntraCodec,
    pub motion: MotionCodec,
    pub contextual: ContextualCodec,
}

impl CodecNets {
    pub fn new(root: &nn::Path, cfg: &ModelConfig) -> Self {
        let latent = cfg.autoencoder.latent_channels;
        Self {
            intra: IntraCodec::new(root / "intra", latent, &cfg.codec),
            motion: MotionCodec::new(root / "motion", &cfg.codec),
            contextual: ContextualCodec::new(root / "contextual", latent, &cfg.codec),
        }
    }
}

/// One coded frame of a training sequence.
pub struct CodedFrame {
    pub y_hat: Tensor,
    pub bits: Tensor,
    /// C̄⁰ of P-frames (None for the I-frame).
    pub c0: Option<Tensor>,
    /// Motion-alignment error of P-frames: ‖warp(y_{t−1}, m̂) − y_t‖².
    pub align: Option<Tensor>,
    /// The part of `bits` spent on motion (P-frames).
    pub motion_bits: Option<Tensor>,
    /// The part of `bits` spent on hyper-latents (side information).
    pub side_bits: Tensor,
}

/// Codes latents `ys` (I-frame then cascaded P-frames) with latent-grid flows `flows`.
pub fn code_sequence(
    nets: &CodecNets,
    ys: &[Tensor],
    flows: &[Tensor],
    qp: i64,
    quant: Quantization,
) -> Vec<CodedFrame> {
    let code = nets.intra.analysis(&ys[0], qp);
    let (ch, cw) = (code.size()[2], code.size()[3]);
    let (code_hat, bits, side_bits) =
        code_with_hyperprior(&nets.intra.hyper, &code, qp, quant, |z| nets.intra.prior(z, qp, ch, cw));
    let y0 = nets.intra.synthesis(&code_hat, qp);
    // The intra codec learns from its own loss only (DiffVC's intra codec is a separate,
    // pretrained image codec): P-frame gradients must not turn ŷ₀ into a feature map.
    let mut y_hat = y0.detach();
    let mut prev_code = code_hat.detach();
    let mut out = vec![CodedFrame { y_hat: y0, bits, c0: None, align: None, motion_bits: None, side_bits }];
    for t in 1..ys.len() {
        let mv = nets.motion.analysis(&flows[t - 1], qp);
        let (mv_hat, mv_bits, mv_side_bits) =
            code_with_hyperprior(&nets.motion.hyper, &mv, qp, quant, |z| nets.motion.prior(z, qp, ch, cw));
        let flow_hat = nets.motion.synthesis(&mv_hat, qp);
        let ctx = nets.contextual.temporal_context(&y_hat, &flow_hat);
        let code = nets.contextual.analysis(&ys[t], &ctx, qp);
        let (code_hat, bits, side_bits) = code_with_hyperprior(&nets.contextual.hyper, &code, qp, quant, |z| {
            nets.contextual.prior(z, qp, &ctx, &prev_code)
        });
        y_hat = nets.contextual.synthesis(&code_hat, &ctx, qp);
        prev_code = code_hat;
        let align = (flow_warp(&ys[t - 1], &flow_hat) - &ys[t]).square().mean(Kind::Float);
        out.push(CodedFrame {
            y_hat: y_hat.shallow_clone(),
            bits: bits + &mv_bits,
            c0: Some(ctx.c0),
            align: Some(align),
            motion_bits: Some(mv_bits),
            side_bits: side_bits + mv_side_bits,
        });
    }
    out
}

/// Latents and latent-grid flows of a batch of sequences (B, L, 3, H, W).
/// What the later stages train against, frozen: the autoencoder, the codec and SpyNet.
pub struct FrozenCodec {
    _vs: nn::VarStore,
    _spynet_vs: nn::VarStore,
    /// E and D (D decodes the diffusion stage's sampled output when it has a pixel term).
    pub autoencoder: LatentAutoencoder,
    pub codec: CodecNets,
    spynet: SpyNet,
}

impl FrozenCodec {
    /// Restores the autoencoder and the codec from `weights` (the stage's checkpoint, else the export).
    pub fn load(cfg: &ModelConfig, weights: &std::path::Path, device: Device) -> Result<Self> {
        let mut vs = nn::VarStore::new(device);
        let autoencoder = LatentAutoencoder::new(vs.root() / "autoencoder", &cfg.autoencoder);
        let codec = CodecNets::new(&vs.root(), cfg);
        anyhow::ensure!(restore_weights(&mut vs, weights)? == vs.len(), "train the autoencoder and codec stages first");
        vs.freeze();
        let (spynet_vs, spynet) = GvcModel::load_spynet(device)?;
        Ok(Self { _vs: vs, _spynet_vs: spynet_vs, autoencoder, codec, spynet })
    }

    /// E's latents of every frame of `seq` (batch, time, 3, H, W) and the frames as the
    /// codec decodes them at `qp` (an I-frame, then P-frames), with hard rounding.
    pub fn code(&self, seq: &Tensor, qp: i64) -> (Vec<Tensor>, Vec<CodedFrame>) {
        let (ys, flows) = analyse_sequences(&self.autoencoder.encoder, &self.spynet, seq);
        let coded = tch::no_grad(|| code_sequence(&self.codec, &ys, &flows, qp, Quantization::Hard));
        (ys, coded)
    }
}

/// Takes every variable outside `group` out of training; returns how many.
fn train_group_only(vs: &nn::VarStore, group: usize) -> usize {
    let mut variables = vs.variables_.lock().expect("var store lock");
    let before = variables.trainable_variables.len();
    variables.trainable_variables.retain(|v| {
        let trained = v.group == group;
        if !trained {
            let _ = v.tensor.set_requires_grad(false);
        }
        trained
    });
    before - variables.trainable_variables.len()
}

pub fn analyse_sequences(encoder: &LatentEncoder, spynet: &SpyNet, seq: &Tensor) -> (Vec<Tensor>, Vec<Tensor>) {
    tch::no_grad(|| {
        let len = seq.size()[1];
        let ys = (0..len).map(|t| encoder.encode(&seq.select(1, t))).collect();
        let flows = (1..len).map(|t| spynet.latent_flow(&seq.select(1, t), &seq.select(1, t - 1))).collect();
        (ys, flows)
    })
}

pub fn train(data: &TrainingClips, opt: &Options) -> Result<()> {
    let device = Device::cuda_if_available();
    let cfg = ModelConfig::load(&opt.stage.model_dir)?;
    let lambdas = opt.lambdas.clone().unwrap_or_else(|| cfg.codec.lambdas.clone());
    anyhow::ensure!(lambdas.len() == cfg.codec.num_qps as usize, "need one λ per QP ({})", cfg.codec.num_qps);
    opt.check_frames(cfg.codec.num_qps)?;
    let qps = trained_qps(opt.qps.as_deref(), cfg.codec.num_qps)?;
    eprintln!("[codec] λ per QP: {lambdas:?}, frames per sequence: {:?}, trained QPs: {qps:?}", opt.frames);
    let mut run = StageRun::start(&opt.stage, "codec")?;
    tch::manual_seed(opt.stage.seed as i64);

    let mut ae_vs = nn::VarStore::new(device);
    let ae = LatentAutoencoder::new(ae_vs.root() / "autoencoder", &cfg.autoencoder);
    anyhow::ensure!(restore_weights(&mut ae_vs, run.weights())? > 0, "train the autoencoder stage first");
    ae_vs.freeze();
    let (_spy_vs, spynet) = GvcModel::load_spynet(device)?;
    // (LPIPS network, perceptual weight, latent anchor) in pixel mode.
    let pixel_loss = match opt.distortion {
        Distortion::Latent => None,
        Distortion::Pixel { perceptual, backbone, latent_anchor } => {
            let lpips = Lpips::pretrained(backbone, device)?;
            Some((lpips, perceptual, latent_anchor))
        }
    };
    eprintln!("[codec] distortion: {:?}", opt.distortion);

    let mut vs = nn::VarStore::new(device);
    let nets = CodecNets::new(&vs.root(), &cfg);
    let restored = restore_weights(&mut vs, run.weights())?;
    run.restart_if_fresh(restored);
    eprintln!("[codec] {restored} tensors restored, resuming at step {}", run.step);
    if restored == 0 {
        opt.stage.grow(&mut vs, &cfg, "codec")?;
    }
    if let Some(group) = opt.trained.group() {
        let frozen = train_group_only(&vs, group);
        eprintln!("[codec] {frozen} tensors frozen, only the {:?} train", opt.trained);
    }
    let mut optim = nn::Adam::default().build(&vs, opt.stage.lr)?;
    let mut rng = Rng::new(opt.stage.seed ^ (run.step as u64).wrapping_mul(31));
    let nq = cfg.codec.num_qps as usize;
    // Per QP, the I-frames' and the P-frames' sums over the log window.
    let mut window = vec![[WindowSums::default(); 2]; nq];
    let mut last_log = Instant::now();
    let mut logged_steps = 0;
    while run.more() {
        let progress = run.progress();
        optim.set_lr(run.lr());
        optim.set_lr_group(RATE_PARAMETER_GROUP, run.lr() * opt.table_lr_factor);
        let qp = qps[rng.below(qps.len() as u64) as usize];
        let lambda = lambdas[qp as usize];
        let frames = opt.frames_at(qp);
        let seq = data.sample(&mut rng, opt.stage.batch, frames, opt.stage.crop)?.to_device(device);
        let pixels = (opt.stage.batch as i64 * opt.stage.crop * opt.stage.crop) as f64;
        let (ys, flows) = analyse_sequences(&ae.encoder, &spynet, &seq);
        let coded = code_sequence(&nets, &ys, &flows, qp, opt.rate_proxy);
        // Motion warm-up (Table 2, "motion D"): the decoded flow must align the previous
        // latent; it fades over the first `align_warmup` of training down to `align_floor`.
        let warmup = if opt.align_warmup > 0.0 { 1.0 - progress / opt.align_warmup } else { 0.0 };
        let warmup = warmup.max(opt.align_floor);
        let mut loss = Tensor::zeros([], (Kind::Float, device));
        let (mut bpp_i, mut mse_i, mut bpp_p, mut mse_p) = (0.0, 0.0, 0.0, 0.0);
        let (mut psnr_i, mut psnr_p) = (0.0, 0.0);
        for (t, f) in coded.iter().enumerate() {
            let mse = (&f.y_hat - &ys[t]).square().mean(Kind::Float);
            let bpp = &f.bits / pixels;
            let mut frame_psnr = 0.0;
            let distortion = match &pixel_loss {
                Some((lpips, perceptual, latent_anchor)) => {
                    let x = seq.select(1, t as i64);
                    let x_hat = ae.decoder.decode(&f.y_hat);
                    let pixel_mse = (&x_hat - &x).square().mean(Kind::Float);
                    frame_psnr = super::psnr_of_mse(pixel_mse.double_value(&[]));
                    let lpips = lpips.distance(&x_hat, &x).mean(Kind::Float);
                    pixel_mse + lpips * *perceptual + &mse * *latent_anchor
                }
                None => mse.shallow_clone(),
            };
            loss = loss + distortion * lambda + &bpp;
            if let Some(align) = &f.align {
                loss += align * (lambda * warmup);
                bpp_p += bpp.double_value(&[]);
                mse_p += mse.double_value(&[]);
                psnr_p += frame_psnr;
            } else {
                bpp_i = bpp.double_value(&[]);
                mse_i = mse.double_value(&[]);
                psnr_i = frame_psnr;
            }
        }
        if !loss.double_value(&[]).is_finite() {
            eprintln!("[codec] step {}: non-finite loss at qp {qp}, batch skipped", run.step);
            continue;
        }
        optim.backward_step_clip_norm(&loss, 1.0);
        run.step += 1;
        let [w_i, w_p] = &mut window[qp as usize];
        w_i.add(bpp_i, mse_i, psnr_i);
        if frames > 1 {
            let np = (frames - 1) as f64;
            w_p.add(bpp_p / np, mse_p / np, psnr_p / np);
        }
        logged_steps += 1;
        if run.step % 50 == 0 || run.step == opt.stage.steps {
            let mut line = format!("[codec] step {}/{}", run.step, opt.stage.steps);
            for (q, [w_i, w_p]) in window.iter().enumerate() {
                let Some([bpp, mse, psnr]) = w_i.means() else { continue };
                line += &format!(" | qp{q}: I {bpp:.3} bpp mse {mse:.4}");
                let p = w_p.means();
                if let Some([bpp, mse, _]) = p {
                    line += &format!(", P {bpp:.3} bpp mse {mse:.4}");
                }
                if pixel_loss.is_some() {
                    line += &format!(" | PSNR I {psnr:.2}");
                    if let Some([_, _, psnr]) = p {
                        line += &format!(" P {psnr:.2}");
                    }
                    line += " dB";
                }
            }
            eprintln!("{line} | {:.2} s/step", last_log.elapsed().as_secs_f64() / logged_steps as f64);
            window = vec![[WindowSums::default(); 2]; nq];
            last_log = Instant::now();
            logged_steps = 0;
        }
        if run.step % 200 == 0 {
            run.save(&vs)?;
        }
    }
    run.save(&vs)?;
    Ok(())
}

/// One frame type's per-step means (bpp, latent MSE, pixel PSNR; the PSNR only in pixel
/// mode) summed over a log window.
#[derive(Clone, Copy, Default)]
struct WindowSums {
    steps: f64,
    bpp: f64,
    mse: f64,
    psnr: f64,
}

impl WindowSums {
    fn add(&mut self, bpp: f64, mse: f64, psnr: f64) {
        self.steps += 1.0;
        self.bpp += bpp;
        self.mse += mse;
        self.psnr += psnr;
    }

    /// Means over the window's steps; None when it had none.
    fn means(&self) -> Option<[f64; 3]> {
        (self.steps > 0.0).then(|| [self.bpp, self.mse, self.psnr].map(|sum| sum / self.steps))
    }
}

/// Per-QP rate and latent MSE of the current weights on `batches` training batches, with
/// the training quantization and with the entropy coder's hard rounding (no update).
pub fn check(data: &TrainingClips, opt: &Options, batches: usize) -> Result<()> {
    let device = Device::cuda_if_available();
    let cfg = ModelConfig::load(&opt.stage.model_dir)?;
    let file = super::checkpoint_file(&opt.stage.model_dir);
    let mut ae_vs = nn::VarStore::new(device);
    let ae = LatentAutoencoder::new(ae_vs.root() / "autoencoder", &cfg.autoencoder);
    anyhow::ensure!(
        restore_weights(&mut ae_vs, &file)? > 0,
        "no autoencoder weights in {}",
        opt.stage.model_dir.display()
    );
    let (_spy_vs, spynet) = GvcModel::load_spynet(device)?;
    let mut vs = nn::VarStore::new(device);
    let nets = CodecNets::new(&vs.root(), &cfg);
    anyhow::ensure!(restore_weights(&mut vs, &file)? > 0, "no codec weights in {}", opt.stage.model_dir.display());
    let mut rng = Rng::new(opt.stage.seed);
    opt.check_frames(cfg.codec.num_qps)?;
    let pixels = (opt.stage.batch as i64 * opt.stage.crop * opt.stage.crop) as f64;
    let longest = *opt.frames.iter().max().expect("checked");
    for b in 0..batches {
        // Every QP codes a prefix of one batch of the longest cascade.
        let seq = data.sample(&mut rng, opt.stage.batch, longest, opt.stage.crop)?.to_device(device);
        let (ys, flows) = analyse_sequences(&ae.encoder, &spynet, &seq);
        let y_var = ys[0].square().mean(Kind::Float).double_value(&[]);
        // The autoencoder's own ceiling on these crops: D(y) with no coding at all.
        let ceiling = tch::no_grad(|| super::psnr(&ae.decoder.decode(&ys[0]).clamp(0.0, 1.0), &seq.select(1, 0)));
        eprintln!("[check] batch {b}: autoencoder alone (D(y), I-frame crops): psnr {ceiling:.2}");
        for qp in 0..cfg.codec.num_qps {
            // The intra transforms' own floor: analysis → synthesis with no rounding at all.
            let floor = tch::no_grad(|| {
                let y0 = nets.intra.synthesis(&nets.intra.analysis(&ys[0], qp), qp);
                (y0 - &ys[0]).square().mean(Kind::Float).double_value(&[])
            });
            eprintln!("[check] batch {b} qp{qp}: intra transforms without quantization: mse {floor:.4}");
            // The rounded proxy's forward pass is the hard one, so it needs no row of its own.
            let frames = opt.frames_at(qp) as usize;
            for quant in [Quantization::Train, Quantization::Hard] {
                let coded = tch::no_grad(|| code_sequence(&nets, &ys[..frames], &flows[..frames - 1], qp, quant));
                let stats: Vec<String> = coded
                    .iter()
                    .enumerate()
                    .map(|(t, f)| {
                        let per_item = (&f.y_hat - &ys[t]).square().mean_dim(&[1i64, 2, 3][..], false, Kind::Float);
                        let motion = f.motion_bits.as_ref().map_or(0.0, |b| b.double_value(&[]) / pixels);
                        let side = f.side_bits.double_value(&[]) / pixels;
                        // Does the decoded motion align frames better than no motion at all?
                        let align = f.align.as_ref().map_or(String::new(), |a| {
                            let still = (&ys[t - 1] - &ys[t]).square().mean(Kind::Float).double_value(&[]);
                            format!(" align {:.4} (zero motion {still:.4})", a.double_value(&[]))
                        });
                        let x = seq.select(1, t as i64);
                        let psnr = tch::no_grad(|| super::psnr(&ae.decoder.decode(&f.y_hat).clamp(0.0, 1.0), &x));
                        format!(
                            "{:.3} bpp (motion {motion:.3}, hyper-latents {side:.3}) mse {:.4} (max {:.4}) psnr {psnr:.2}{align}",
                            f.bits.double_value(&[]) / pixels,
                            per_item.mean(Kind::Float).double_value(&[]),
                            per_item.max().double_value(&[])
                        )
                    })
                    .collect();
                let q = match quant {
                    Quantization::Train => "train",
                    Quantization::TrainRounded => "rounded",
                    Quantization::Hard => "hard",
                };
                eprintln!("[check] batch {b} E[y²] {y_var:.3} qp{qp} {q}: {}", stats.join(" | "));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::codec::CheckerboardPrior;

    /// With and without a checkerboard spatial prior (its zero-started output layer set to
    /// random values, so the second pass differs from the first).
    #[test]
    fn rounded_rate_proxy_is_the_coders_rate_with_gradients() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let hyper = Hyperprior::new(vs.root() / "hyper", 8, 8, 16, 2);
        let spatial = CheckerboardPrior::new(vs.root() / "spatial_prior", 8);
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                if name.starts_with("spatial_prior.out.") {
                    v.copy_(&(v.randn_like() * 0.1));
                }
            }
        });
        for spatial in [None, Some(&spatial)] {
            let code = (Tensor::randn([2, 8, 8, 8], (Kind::Float, Device::Cpu)) * 3.0).set_requires_grad(true);
            let prior = |z_hat: &Tensor| CodePrior { first: hyper.synthesis(z_hat, 1, 8, 8), spatial };
            let (hard_code, hard_bits, _) = code_with_hyperprior(&hyper, &code, 1, Quantization::Hard, prior);
            let (code_hat, bits, _) = code_with_hyperprior(&hyper, &code, 1, Quantization::TrainRounded, prior);
            let (_, noise_bits, _) = code_with_hyperprior(&hyper, &code, 1, Quantization::Train, prior);
            assert!(code_hat.equal(&hard_code));
            assert_eq!(bits.double_value(&[]), hard_bits.double_value(&[]));
            assert_ne!(noise_bits.double_value(&[]), hard_bits.double_value(&[]));
            // The coder's rounding has no gradient; the rounded proxy passes one to the code.
            bits.backward();
            let grad = code.grad().abs().sum(Kind::Float).double_value(&[]);
            assert!(grad.is_finite() && grad > 0.0, "no gradient to the code: {grad}");
        }
    }

    fn options(frames: &[i64]) -> Options {
        Options {
            stage: StageOptions {
                model_dir: "unused".into(),
                steps: 1,
                batch: 1,
                crop: 64,
                lr: 1e-4,
                seed: 1,
                minutes: None,
                grow_from: None,
            },
            frames: frames.to_vec(),
            lambdas: None,
            align_floor: 0.0,
            align_warmup: 0.0,
            distortion: Distortion::Latent,
            rate_proxy: Quantization::Train,
            table_lr_factor: 1.0,
            qps: None,
            trained: Trained::All,
        }
    }

    /// Trains the tiny test model's codec with the options `opt` makes of its stage, after
    /// `prepare` has edited the model folder; the weights it started from and the checkpoint
    /// it ended at.
    fn tiny_codec_run(
        tag: &str,
        prepare: impl FnOnce(&std::path::Path),
        opt: impl FnOnce(StageOptions) -> Options,
    ) -> (std::collections::HashMap<String, Tensor>, Vec<(String, Tensor)>) {
        let (data, stage) = crate::training::tiny_stage(tag);
        let dir = stage.model_dir.clone();
        prepare(&dir);
        train(&data, &opt(stage)).unwrap();
        let shipped = Tensor::read_safetensors(dir.join("weights.safetensors")).unwrap().into_iter().collect();
        let trained = Tensor::read_safetensors(crate::training::checkpoint_file(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (shipped, trained)
    }

    /// A rate point trained alone with the networks frozen moves its own table rows and
    /// nothing else: every other rate point decodes exactly as before.
    #[test]
    fn tables_only_training_moves_the_named_rate_point_alone() {
        let (shipped, trained) = tiny_codec_run(
            "codec-tables-only",
            |_| {},
            |stage| Options {
                stage,
                qps: Some(vec![3]),
                trained: Trained::Tables,
                table_lr_factor: 50.0,
                ..options(&[3])
            },
        );
        let mut moved_rows = 0;
        for (k, v) in &trained {
            let before = shipped[k].to_kind(v.kind());
            let is_table = k.ends_with("_log") || k.ends_with("z_log_scale");
            if !is_table {
                assert!(v.equal(&before), "{k} is a network weight and moved");
                continue;
            }
            assert_eq!(v.size()[0], 4, "{k} is not a per-QP table");
            assert!(v.narrow(0, 0, 3).equal(&before.narrow(0, 0, 3)), "{k}: rows of untrained QPs moved");
            moved_rows += usize::from(!v.get(3).equal(&before.get(3)));
        }
        assert!(moved_rows > 0, "no table row of QP 3 trained");
    }

    /// Checkerboard priors added to a trained model (config switched on, weights without
    /// them) train alone: every other tensor stays as shipped.
    #[test]
    fn spatial_prior_only_training_moves_the_spatial_priors_alone() {
        let checkerboard_on = |dir: &std::path::Path| {
            let mut cfg = ModelConfig::load(dir).unwrap();
            cfg.codec.checkerboard = true;
            cfg.save(dir).unwrap();
        };
        let (shipped, trained) = tiny_codec_run("codec-spatial-prior-only", checkerboard_on, |stage| Options {
            stage,
            trained: Trained::SpatialPrior,
            ..options(&[3])
        });
        let mut moved = Vec::new();
        for (k, v) in &trained {
            match shipped.get(k) {
                Some(before) => assert!(v.equal(&before.to_kind(v.kind())), "{k} is not a spatial prior and moved"),
                None => {
                    assert!(k.contains(".spatial_prior."), "{k} is new but no spatial prior");
                    moved.push(k.clone());
                }
            }
        }
        for codec in ["intra", "contextual"] {
            let out = trained.iter().find(|(k, _)| *k == format!("{codec}.spatial_prior.out.weight")).unwrap();
            assert!(out.1.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{codec}'s spatial prior did not train");
        }
        assert_eq!(moved.len(), 12, "{moved:?}");
    }

    /// I-frames alone (`--frames 1`) train the intra codec and nothing else.
    #[test]
    fn single_frame_sequences_train_the_intra_codec_alone() {
        let (shipped, trained) = tiny_codec_run("codec-intra-only", |_| {}, |stage| Options { stage, ..options(&[1]) });
        let mut moved = 0;
        for (k, v) in &trained {
            let unchanged = v.equal(&shipped[k].to_kind(v.kind()));
            if k.starts_with("intra.") {
                moved += usize::from(!unchanged);
            } else {
                assert!(unchanged, "{k} is outside the intra codec and moved");
            }
        }
        assert!(moved > 0, "the intra codec did not train");
    }

    /// The RDP term's backbone is the one named: the same run with AlexNet and with VGG16
    /// ends at other weights.
    #[test]
    fn pixel_distortion_trains_through_the_named_backbone() {
        let trained_with = |backbone: Backbone| {
            let distortion = Distortion::Pixel { perceptual: 1.0, backbone, latent_anchor: 0.1 };
            let tag = format!("codec-rdp-{backbone:?}");
            let (_, trained) = tiny_codec_run(&tag, |_| {}, |stage| Options { stage, distortion, ..options(&[1]) });
            trained.into_iter().collect::<std::collections::HashMap<_, _>>()
        };
        let alexnet = trained_with(Backbone::AlexNet);
        let vgg16 = trained_with(Backbone::Vgg16);
        let differing = alexnet.iter().filter(|(k, v)| !v.equal(&vgg16[*k])).count();
        assert!(differing > 0, "VGG16's run ended where AlexNet's did");
    }

    #[test]
    fn cascade_lengths_are_one_for_all_or_one_per_qp() {
        let shared = options(&[5]);
        assert!(shared.check_frames(5).is_ok());
        assert_eq!((0..5).map(|q| shared.frames_at(q)).collect::<Vec<_>>(), [5; 5]);
        let per_qp = options(&[5, 5, 5, 8, 8]);
        assert!(per_qp.check_frames(5).is_ok());
        assert_eq!((0..5).map(|q| per_qp.frames_at(q)).collect::<Vec<_>>(), [5, 5, 5, 8, 8]);
        let err = options(&[5, 8]).check_frames(5).unwrap_err().to_string();
        assert!(err.contains("one per QP (5)"), "{err}");
        assert!(options(&[1]).check_frames(5).is_ok());
        assert!(options(&[0]).check_frames(5).is_err());
    }
}
