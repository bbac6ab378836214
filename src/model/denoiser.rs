//! The latent denoiser: a small U-Net predicting ε, steered by a ControlNet-style branch
//! that sees concat(z_n, ŷ, C̄⁰) and adds into the U-Net through zero-initialised convs,
//! and by the QP prompt (DiffVC's QPP). The seed feeds the prompt through CLIP and
//! cross-attention; no package ships CLIP, so the ratio goes through a learned sinusoidal
//! embedding added to the timestep embedding and applied by FiLM in every residual block.

use super::layers::{conv, zero_init_conv, ExactPointwiseConv, SubpelConv};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DenoiserConfig {
    /// U-Net channels at the latent resolution and at half of it.
    pub channels: [i64; 2],
    pub embed: i64,
    /// Training schedule length and linear β range (DDPM).
    pub train_steps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// Timestep ŷ is noised to before sampling starts (DiffVC's N); training draws
    /// timesteps up to it.
    pub start_step: usize,
    /// N per QP index where it differs from `start_step` (less noise where ŷ is closer to
    /// y); chosen with `gvc-bench-diffusion --start-steps`. Empty: `start_step` everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_step_per_qp: Vec<usize>,
    /// Multiplier bringing the autoencoder's latent to unit variance.
    pub latent_scale: f64,
    /// TDIR's agreement scale τ: a reused prediction is taken whole with weight
    /// g = exp(−d/τ), d the channel-mean squared difference between the aligned previous ŷ
    /// and the current ŷ (diffusion space). 0: only the detail is carried over.
    #[serde(default)]
    pub tdir_agreement: f64,
    /// τ per QP index where it differs from `tdir_agreement` (temporal averaging pays at the
    /// low rate points and costs detail at the high ones); chosen with
    /// `gvc-bench-diffusion --tdir-agreements`. Empty: `tdir_agreement` everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tdir_agreement_per_qp: Vec<f64>,
}

impl DenoiserConfig {
    /// The N sampling starts from at rate point `qp`.
    pub fn start_step_for(&self, qp: i64) -> usize {
        self.start_step_per_qp.get(qp as usize).copied().unwrap_or(self.start_step)
    }

    /// TDIR's agreement scale τ at rate point `qp`.
    pub fn tdir_agreement_for(&self, qp: i64) -> f64 {
        self.tdir_agreement_per_qp.get(qp as usize).copied().unwrap_or(self.tdir_agreement)
    }
}

fn sinusoid(x: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let freqs = (Tensor::arange(half, (Kind::Float, x.device())) * (-(10000f64.ln()) / half as f64)).exp();
    let args = x.view([-1, 1]).to_kind(Kind::Float) * freqs.view([1, half]);
    Tensor::cat(&[args.sin(), args.cos()], 1)
}

/// Residual block with FiLM from the (time + QP) embedding.
#[derive(Debug)]
struct FilmResBlock {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    film: nn::Linear,
    skip: Option<ExactPointwiseConv>,
}

impl FilmResBlock {
    fn new(p: nn::Path, cin: i64, cout: i64, embed: i64) -> Self {
        Self {
            conv1: conv(&p / "conv1", cin, cout, 3, 1),
            conv2: zero_init_conv(&p / "conv2", cout, cout, 3),
            film: nn::linear(&p / "film", embed, 2 * cout, Default::default()),
            skip: (cin != cout).then(|| ExactPointwiseConv::new(&p / "skip", cin, cout, false)),
        }
    }

    fn forward(&self, x: &Tensor, emb: &Tensor) -> Tensor {
        let h = self.conv1.forward(&x.silu());
        let film = self.film.forward(emb).unsqueeze(-1).unsqueeze(-1);
        let c = h.size()[1];
        let h = &h * (film.narrow(1, 0, c) + 1.0) + film.narrow(1, c, c);
        let h = self.conv2.forward(&h.silu());
        match &self.skip {
            Some(s) => s.forward(x) + h,
            None => x + h,
        }
    }
}

#[derive(Debug)]
pub struct Denoiser {
    time_mlp: (nn::Linear, nn::Linear),
    qp_mlp: (nn::Linear, nn::Linear),
    conv_in: nn::Conv2D,
    down0: FilmResBlock,
    down_conv: nn::Conv2D,
    down1: FilmResBlock,
    mid: FilmResBlock,
    up1: FilmResBlock,
    up_conv: SubpelConv,
    up0: FilmResBlock,
    conv_out: nn::Conv2D,
    // ControlNet branch.
    ctrl_in: nn::Conv2D,
    ctrl_down0: FilmResBlock,
    ctrl_down_conv: nn::Conv2D,
    ctrl_down1: FilmResBlock,
    ctrl_mid: FilmResBlock,
    ctrl_zero: Vec<ExactPointwiseConv>,
    embed: i64,
}

impl Denoiser {
    /// The control branch's input: z_n, ŷ and C̄⁰.
    pub fn control_in_parts(latent: i64, context: i64) -> [i64; 3] {
        [latent, latent, context]
    }

    pub fn new(p: nn::Path, latent: i64, context: i64, cfg: &DenoiserConfig) -> Self {
        let [c0, c1] = cfg.channels;
        let e = cfg.embed;
        let lin = |name: &str, i, o| nn::linear(&p / name, i, o, Default::default());
        let c = &p / "control";
        Self {
            time_mlp: (lin("time_mlp0", e, e), lin("time_mlp1", e, e)),
            qp_mlp: (lin("qp_mlp0", e, e), lin("qp_mlp1", e, e)),
            conv_in: conv(&p / "conv_in", latent, c0, 3, 1),
            down0: FilmResBlock::new(&p / "down0", c0, c0, e),
            down_conv: conv(&p / "down_conv", c0, c1, 3, 2),
            down1: FilmResBlock::new(&p / "down1", c1, c1, e),
            mid: FilmResBlock::new(&p / "mid", c1, c1, e),
            up1: FilmResBlock::new(&p / "up1", 2 * c1, c1, e),
            up_conv: SubpelConv::new(&p / "up_conv", c1, c0),
            up0: FilmResBlock::new(&p / "up0", 2 * c0, c0, e),
            conv_out: zero_init_conv(&p / "conv_out", c0, latent, 3),
            ctrl_in: conv(&c / "conv_in", Self::control_in_parts(latent, context).iter().sum(), c0, 3, 1),
            ctrl_down0: FilmResBlock::new(&c / "down0", c0, c0, e),
            ctrl_down_conv: conv(&c / "down_conv", c0, c1, 3, 2),
            ctrl_down1: FilmResBlock::new(&c / "down1", c1, c1, e),
            ctrl_mid: FilmResBlock::new(&c / "mid", c1, c1, e),
            ctrl_zero: vec![
                ExactPointwiseConv::new(&c / "zero" / 0, c0, c0, true),
                ExactPointwiseConv::new(&c / "zero" / 1, c1, c1, true),
                ExactPointwiseConv::new(&c / "zero" / 2, c1, c1, true),
            ],
            embed: e,
        }
    }

    /// ε̂ for noisy latent `z` at timesteps `t` (N), condition `y_hat` and `c0`
    /// (zeros for I-frames), QP prompt `ratio` (N).
    /// Runs in its weights' kind ([`crate::model::Precision`]) and returns f32.
    pub fn forward(&self, z: &Tensor, t: &Tensor, y_hat: &Tensor, c0: &Tensor, ratio: &Tensor) -> Tensor {
        let kind = self.conv_in.ws.kind();
        let (z, y_hat, c0) = (&z.to_kind(kind), &y_hat.to_kind(kind), &c0.to_kind(kind));
        let te = sinusoid(&(t.to_kind(Kind::Float)), self.embed).to_kind(kind);
        let te = self.time_mlp.1.forward(&self.time_mlp.0.forward(&te).silu());
        // log-ratio spread over the sinusoid's range.
        let qe = sinusoid(&(ratio.to_kind(Kind::Float).log() * 100.0), self.embed).to_kind(kind);
        let qe = self.qp_mlp.1.forward(&self.qp_mlp.0.forward(&qe).silu());
        let emb = (te + qe).silu();

        let k = self.ctrl_in.forward(&Tensor::cat(&[z, y_hat, c0], 1));
        let k0 = self.ctrl_down0.forward(&k, &emb);
        let k1 = self.ctrl_down1.forward(&self.ctrl_down_conv.forward(&k0), &emb);
        let km = self.ctrl_mid.forward(&k1, &emb);

        let h = self.conv_in.forward(z);
        let s0 = self.down0.forward(&h, &emb) + self.ctrl_zero[0].forward(&k0);
        let s1 = self.down1.forward(&self.down_conv.forward(&s0), &emb) + self.ctrl_zero[1].forward(&k1);
        let m = self.mid.forward(&s1, &emb) + self.ctrl_zero[2].forward(&km);
        let u1 = self.up1.forward(&Tensor::cat(&[&m, &s1], 1), &emb);
        let u0 = self.up0.forward(&Tensor::cat(&[&self.up_conv.forward(&u1), &s0], 1), &emb);
        self.conv_out.forward(&u0.silu()).to_kind(Kind::Float)
    }
}
