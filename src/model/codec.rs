//! The conditional codec networks (DCVC-DC family, DiffVC §3.1) on the autoencoder's latent:
//! intra codec for I-frames; motion (SpyNet + MV autoencoder + MV hyperprior) and
//! contextual (temporal context mining, contextual encoder/decoder, hyperprior + temporal
//! prior) modules for P-frames; per-QP learned quantization scales q_enc/q_dec.

use super::entropy_model::{clamp_passing_gradient, Hyperprior, RATE_PARAMETER_GROUP};
use super::layers::{conv, flow_warp, portable_exp, PortableConv, ResBlock, SubpelConv};
use crate::codec::entropy::{LN_SCALE_MAX, LN_SCALE_MIN};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Variable group of the checkerboard spatial priors (trainable alone, `gvc-train codec
/// --spatial-prior-only`).
pub const SPATIAL_PRIOR_GROUP: usize = 2;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CodecConfig {
    /// Hidden channels of the contextual/intra transforms.
    pub hidden: i64,
    /// Channels of the coded latent (at 1/16 of the frame).
    pub code: i64,
    /// Channels of the hyper-latents.
    pub hyper: i64,
    /// Channels of the temporal contexts C̄⁰ (1/8) and C̄¹ (1/16).
    pub context: i64,
    /// Channels of the coded motion (at 1/16 of the frame).
    pub motion_code: i64,
    /// Number of rate points (QP indices); 0 is the highest quality.
    pub num_qps: i64,
    /// Rate–distortion trade-off λ of each QP used in training.
    pub lambdas: Vec<f64>,
    /// The encoder's default per QP: I-frames are coded this many rate points better than
    /// the GOP's P-frames (their quality carries through the GOP; where the I-frame is already
    /// at the autoencoder's cap it only costs bits). Chosen with `gvc-eval --gvcenc
    /// intra-qp-offset=K`. Empty: 0 everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intra_qp_offset_per_qp: Vec<u8>,
    /// Intra and contextual codes are coded in two checkerboard passes, the second with a
    /// spatial prior on the first (`CheckerboardPrior`). Off: one pass under the hyper and
    /// temporal priors alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkerboard: bool,
}

impl CodecConfig {
    /// The encoder's default intra QP offset at rate point `qp`.
    pub fn intra_qp_offset_for(&self, qp: u8) -> u8 {
        self.intra_qp_offset_per_qp.get(qp as usize).copied().unwrap_or(0)
    }
}

/// Per-QP, per-channel quantization scales as in DCVC-DC: the encoder multiplies its
/// features by q_enc, the decoder by q_dec. They start at 1/step and step for a geometric
/// ladder of step sizes, so q_enc/q_dec (the QP prompt) starts monotone in the QP.
#[derive(Debug)]
pub struct QuantScales {
    pub q_enc: Tensor,
    pub q_dec: Tensor,
}

impl QuantScales {
    fn new(p: nn::Path, num_qps: i64, channels: i64) -> Self {
        let steps: Vec<f32> = (0..num_qps).map(|i| (0.5 * 2f32.powf(i as f32 * 1.2)).ln()).collect();
        let base = Tensor::from_slice(&steps).view([num_qps, 1]).expand([num_qps, channels], true).contiguous();
        let p = p.set_group(RATE_PARAMETER_GROUP);
        let q_enc = p.var_copy("q_enc_log", &(-&base));
        let q_dec = p.var_copy("q_dec_log", &base);
        Self { q_enc, q_dec }
    }

    pub fn enc(&self, qp: i64) -> Tensor {
        self.q_enc.get(qp).exp().view([1, -1, 1, 1])
    }

    /// Decoder side: the same on every CPU (`portable_exp`).
    pub fn dec(&self, qp: i64) -> Tensor {
        portable_exp(&self.q_dec.get(qp)).view([1, -1, 1, 1])
    }

    /// The QP prompt of DiffVC §3.3: q_enc/q_dec averaged over channels.
    pub fn prompt(&self, qp: i64) -> f64 {
        (self.q_enc.get(qp) - self.q_dec.get(qp)).exp().mean(Kind::Float).double_value(&[])
    }
}

/// Entropy parameters (μ, log σ) as 2·code channels split in half: what the coder reads (it
/// picks σ's table from log σ, so no platform `exp` decides a table).
pub fn split_log_params(p: &Tensor) -> (Tensor, Tensor) {
    let c = p.size()[1] / 2;
    (p.narrow(1, 0, c), p.narrow(1, c, c))
}

/// Entropy parameters (μ, σ) for the rate model in training; log σ is bounded to the coder's
/// scale table (so training cannot overflow) without cutting its gradient.
pub fn split_params(p: &Tensor) -> (Tensor, Tensor) {
    let (mean, log_scale) = split_log_params(p);
    (mean, clamp_passing_gradient(&log_scale, LN_SCALE_MIN, LN_SCALE_MAX).exp())
}

/// Two-pass checkerboard spatial prior (He et al., CVPR 2021; DCVC-DC codes four quadtree
/// passes, two are enough at our rates): the anchors, where row + column is even, are coded
/// under the first-pass (hyper and temporal) parameters; the other half's parameters are
/// refined from the decoded anchors around them. The refinement's output layer starts at
/// zero, so an untrained prior codes exactly as the first pass.
#[derive(Debug)]
pub struct CheckerboardPrior {
    context: PortableConv,
    fuse: PortableConv,
    out: PortableConv,
}

impl CheckerboardPrior {
    pub fn new(p: nn::Path, code: i64) -> Self {
        let p = p.set_group(SPATIAL_PRIOR_GROUP);
        Self {
            context: PortableConv::new(&p / "context", code, 2 * code, 3, 1),
            fuse: PortableConv::new(&p / "fuse", 4 * code, 2 * code, 1, 1),
            out: PortableConv::zero_init(&p / "out", 2 * code, 2 * code, 1),
        }
    }

    /// 1 at the first pass's positions of an h × w code grid, 0 elsewhere: (1, 1, h, w).
    pub fn anchors(h: i64, w: i64, device: Device) -> Tensor {
        let rows = Tensor::arange(h, (Kind::Int64, device)).view([h, 1]);
        let cols = Tensor::arange(w, (Kind::Int64, device)).view([1, w]);
        (rows + cols).remainder(2).eq(0).to_kind(Kind::Float).view([1, 1, h, w])
    }

    /// Raw (μ, log σ) channels at every position: the first pass's `first` at the anchors,
    /// refined from the decoded anchors elsewhere. Only the anchors of `code_hat` are read.
    pub fn refine(&self, first: &Tensor, code_hat: &Tensor, anchors: &Tensor) -> Tensor {
        let context = self.context.forward(&(code_hat * anchors)).leaky_relu();
        let h = self.fuse.forward(&Tensor::cat(&[first, &context], 1)).leaky_relu();
        let refined = first + self.out.forward(&h);
        first * anchors + refined * (1.0 - anchors)
    }
}

/// Entropy parameters of a code: the first pass's raw (μ, σ) channels and, with a
/// checkerboard, the prior of its second pass.
pub struct CodePrior<'a> {
    pub first: Tensor,
    pub spatial: Option<&'a CheckerboardPrior>,
}

impl CodePrior<'_> {
    /// (μ, σ) at every position of a known code (training, diagnostics), quantized by
    /// `round` around the mean as the coder does: with a checkerboard, the second pass's
    /// parameters come from the first pass's reconstruction of the anchors.
    pub fn params_for(&self, code: &Tensor, round: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
        let (mean, scale) = split_params(&self.first);
        let Some(spatial) = self.spatial else {
            return (mean, scale);
        };
        let (_, _, h, w) = mean.size4().expect("4-D code");
        let anchors = CheckerboardPrior::anchors(h, w, mean.device());
        split_params(&spatial.refine(&self.first, &(round(&(code - &mean)) + &mean), &anchors))
    }
}

#[derive(Debug)]
pub struct IntraCodec {
    enc: Vec<nn::Conv2D>,
    enc_res: ResBlock,
    dec_conv: PortableConv,
    dec_up: SubpelConv<PortableConv>,
    dec_res: ResBlock<PortableConv>,
    dec_out: PortableConv,
    pub hyper: Hyperprior,
    pub scales: QuantScales,
    spatial_prior: Option<CheckerboardPrior>,
}

impl IntraCodec {
    pub fn new(p: nn::Path, latent: i64, cfg: &CodecConfig) -> Self {
        let (n, m) = (cfg.hidden, cfg.code);
        Self {
            enc: vec![conv(&p / "enc" / 0, latent, n, 3, 1), conv(&p / "enc" / 1, n, m, 3, 2)],
            enc_res: ResBlock::new(&p / "enc_res", n),
            dec_conv: PortableConv::new(&p / "dec_conv", m, n, 3, 1),
            dec_up: SubpelConv::portable(&p / "dec_up", n, n),
            dec_res: ResBlock::portable(&p / "dec_res", n),
            dec_out: PortableConv::new(&p / "dec_out", n, latent, 3, 1),
            hyper: Hyperprior::new(&p / "hyper", m, cfg.hyper, 2 * m, cfg.num_qps),
            scales: QuantScales::new(&p / "scales", cfg.num_qps, m),
            spatial_prior: cfg.checkerboard.then(|| CheckerboardPrior::new(&p / "spatial_prior", m)),
        }
    }

    /// Latent y (1/8) → unquantized code (1/16), already scaled by q_enc.
    pub fn analysis(&self, y: &Tensor, qp: i64) -> Tensor {
        let h = self.enc[0].forward(y).leaky_relu();
        let h = self.enc_res.forward(&h);
        self.enc[1].forward(&h) * self.scales.enc(qp)
    }

    /// Entropy parameters of the code from the decoded hyper-latent.
    pub fn prior(&self, z_hat: &Tensor, qp: i64, h: i64, w: i64) -> CodePrior<'_> {
        CodePrior { first: self.hyper.synthesis(z_hat, qp, h, w), spatial: self.spatial_prior.as_ref() }
    }

    /// Decoded code → reconstructed latent ŷ.
    pub fn synthesis(&self, code_hat: &Tensor, qp: i64) -> Tensor {
        let h = self.dec_conv.forward(&(code_hat * self.scales.dec(qp))).leaky_relu();
        let h = self.dec_up.forward(&h).leaky_relu();
        let h = self.dec_res.forward(&h);
        self.dec_out.forward(&h)
    }
}

/// Motion: MV encoder/decoder on SpyNet flow pooled to the latent grid, MV hyperprior.
#[derive(Debug)]
pub struct MotionCodec {
    enc: Vec<nn::Conv2D>,
    dec: Vec<PortableConv>,
    dec_up: SubpelConv<PortableConv>,
    pub hyper: Hyperprior,
    /// Per-QP scalar MV quantization step (log).
    q_mv: Tensor,
}

impl MotionCodec {
    pub fn new(p: nn::Path, cfg: &CodecConfig) -> Self {
        let (n, m) = (64, cfg.motion_code);
        let init: Vec<f32> = (0..cfg.num_qps).map(|i| (0.25 * 1.5f32.powi(i as i32)).ln()).collect();
        Self {
            enc: vec![
                conv(&p / "enc" / 0, 2, n, 3, 1),
                conv(&p / "enc" / 1, n, n, 3, 1),
                conv(&p / "enc" / 2, n, m, 3, 2),
            ],
            dec: vec![PortableConv::new(&p / "dec" / 0, m, n, 3, 1), PortableConv::new(&p / "dec" / 1, n, 2, 3, 1)],
            dec_up: SubpelConv::portable(&p / "dec_up", n, n),
            hyper: Hyperprior::new(&p / "hyper", m, 32, 2 * m, cfg.num_qps),
            q_mv: p.set_group(RATE_PARAMETER_GROUP).var_copy("q_mv_log", &Tensor::from_slice(&init)),
        }
    }

    /// Entropy parameters of the MV code from its hyper-latent (one pass: the checkerboard
    /// covers the intra and contextual codes, most of the bits at every rate point).
    pub fn prior(&self, z_hat: &Tensor, qp: i64, h: i64, w: i64) -> CodePrior<'_> {
        CodePrior { first: self.hyper.synthesis(z_hat, qp, h, w), spatial: None }
    }

    fn q(&self, qp: i64) -> Tensor {
        portable_exp(&self.q_mv.get(qp))
    }

    /// Flow on the latent grid (1/8, in latent pixels) → MV code (1/16) / q.
    pub fn analysis(&self, flow8: &Tensor, qp: i64) -> Tensor {
        let h = self.enc[0].forward(flow8).leaky_relu();
        let h = self.enc[1].forward(&h).leaky_relu();
        self.enc[2].forward(&h) / self.q(qp)
    }

    pub fn synthesis(&self, code_hat: &Tensor, qp: i64) -> Tensor {
        let h = self.dec[0].forward(&(code_hat * self.q(qp))).leaky_relu();
        let h = self.dec_up.forward(&h).leaky_relu();
        self.dec[1].forward(&h)
    }
}

/// Temporal context mining, contextual encoder/decoder and the contextual entropy model.
#[derive(Debug)]
pub struct ContextualCodec {
    feature_adaptor: PortableConv,
    ctx0: ResBlock<PortableConv>,
    ctx0_out: PortableConv,
    ctx1_down: PortableConv,
    enc_in: nn::Conv2D,
    enc_res: ResBlock,
    enc_down: nn::Conv2D,
    enc_fuse: nn::Conv2D,
    dec_in: PortableConv,
    dec_up: SubpelConv<PortableConv>,
    dec_fuse: PortableConv,
    dec_res: ResBlock<PortableConv>,
    dec_out: PortableConv,
    pub hyper: Hyperprior,
    temporal_prior: Vec<PortableConv>,
    pub scales: QuantScales,
    spatial_prior: Option<CheckerboardPrior>,
}

/// Multi-scale temporal contexts of one P-frame.
pub struct TemporalContext {
    /// C̄⁰ at 1/8 of the frame.
    pub c0: Tensor,
    /// C̄¹ at 1/16 of the frame.
    pub c1: Tensor,
}

impl ContextualCodec {
    /// The contextual encoder's input: the latent y and C̄⁰.
    pub fn enc_in_parts(latent: i64, cfg: &CodecConfig) -> [i64; 2] {
        [latent, cfg.context]
    }

    pub fn new(p: nn::Path, latent: i64, cfg: &CodecConfig) -> Self {
        let (n, m, c) = (cfg.hidden, cfg.code, cfg.context);
        Self {
            feature_adaptor: PortableConv::new(&p / "feature_adaptor", latent, c, 3, 1),
            ctx0: ResBlock::portable(&p / "ctx0", c),
            ctx0_out: PortableConv::new(&p / "ctx0_out", c, c, 3, 1),
            ctx1_down: PortableConv::new(&p / "ctx1_down", c, c, 3, 2),
            enc_in: conv(&p / "enc_in", Self::enc_in_parts(latent, cfg).iter().sum(), n, 3, 1),
            enc_res: ResBlock::new(&p / "enc_res", n),
            enc_down: conv(&p / "enc_down", n, m, 3, 2),
            enc_fuse: conv(&p / "enc_fuse", m + c, m, 3, 1),
            dec_in: PortableConv::new(&p / "dec_in", m, n, 3, 1),
            dec_up: SubpelConv::portable(&p / "dec_up", n, n),
            dec_fuse: PortableConv::new(&p / "dec_fuse", n + c, n, 3, 1),
            dec_res: ResBlock::portable(&p / "dec_res", n),
            dec_out: PortableConv::new(&p / "dec_out", n, latent, 3, 1),
            hyper: Hyperprior::new(&p / "hyper", m, cfg.hyper, 2 * m, cfg.num_qps),
            temporal_prior: vec![
                PortableConv::new(&p / "temporal_prior" / 0, 2 * m + c + m, 2 * m, 3, 1),
                PortableConv::new(&p / "temporal_prior" / 1, 2 * m, 2 * m, 3, 1),
            ],
            scales: QuantScales::new(&p / "scales", cfg.num_qps, m),
            spatial_prior: cfg.checkerboard.then(|| CheckerboardPrior::new(&p / "spatial_prior", m)),
        }
    }

    /// Warps the previous decoded latent's feature by the decoded motion and mines C̄⁰, C̄¹.
    pub fn temporal_context(&self, prev_latent: &Tensor, flow8: &Tensor) -> TemporalContext {
        let f = self.feature_adaptor.forward(prev_latent);
        let warped = flow_warp(&f, flow8);
        let c0 = self.ctx0_out.forward(&self.ctx0.forward(&warped));
        let c1 = self.ctx1_down.forward(&c0).leaky_relu();
        TemporalContext { c0, c1 }
    }

    pub fn analysis(&self, y: &Tensor, ctx: &TemporalContext, qp: i64) -> Tensor {
        let h = self.enc_in.forward(&Tensor::cat(&[y, &ctx.c0], 1)).leaky_relu();
        let h = self.enc_res.forward(&h);
        let h = self.enc_down.forward(&h).leaky_relu();
        self.enc_fuse.forward(&Tensor::cat(&[&h, &ctx.c1], 1)) * self.scales.enc(qp)
    }

    /// Entropy parameters of the code from the hyperprior, C̄¹ and the previous frame's
    /// decoded code.
    pub fn prior(&self, z_hat: &Tensor, qp: i64, ctx: &TemporalContext, prev_code: &Tensor) -> CodePrior<'_> {
        let (_, _, ch, cw) = prev_code.size4().expect("4-D code");
        let h = Tensor::cat(&[&self.hyper.synthesis(z_hat, qp, ch, cw), &ctx.c1, prev_code], 1);
        let h = self.temporal_prior[0].forward(&h).leaky_relu();
        CodePrior { first: self.temporal_prior[1].forward(&h), spatial: self.spatial_prior.as_ref() }
    }

    pub fn synthesis(&self, code_hat: &Tensor, ctx: &TemporalContext, qp: i64) -> Tensor {
        let h = self.dec_in.forward(&(code_hat * self.scales.dec(qp))).leaky_relu();
        let h = self.dec_up.forward(&h).leaky_relu();
        let h = self.dec_fuse.forward(&Tensor::cat(&[&h, &ctx.c0], 1)).leaky_relu();
        let h = self.dec_res.forward(&h);
        self.dec_out.forward(&h)
    }
}
