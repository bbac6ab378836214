//! Encoder and decoder sessions: frames (tensors) in, packets out, and back.
//!
//! The reference for the next frame is the codec's own reconstruction (ŷ, its code, and
//! D(ŷ) for motion estimation at the encoder), never the diffusion output: the encoder
//! then needs no diffusion to stay in sync, and the generative decoder cannot drift. The
//! diffusion output is what the decoder displays.

use super::bitstream::{self, FramePacket, FrameType, SequenceHeader};
use super::entropy::{GaussianConditional, RansDecoder, RansEncoder, SURPRISE_SYMBOL_BITS};
use super::mask::DiffusionMask;
use super::rate_control::{RateController, RateTarget};
use crate::diffusion::{self, DiffusionBuffer, NoiseSchedule, SamplingPlan, SamplingStats};
use crate::model::codec::{split_log_params, CheckerboardPrior, CodePrior, TemporalContext};
use crate::model::entropy_model::Hyperprior;
use crate::model::gvc::GvcModel;
use crate::model::layers::pad_replicate;
use crate::model::lpips::{Backbone, Lpips};
use crate::model::spynet::SpyNet;
use anyhow::{bail, ensure, Context, Result};
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};

/// Coded sizes are padded to this multiple (the code grid is 1/16 of the frame).
pub const SIZE_MULTIPLE: i64 = 16;

/// A P-frame arrived without a decodable reference (stream start, after a seek or damage).
#[derive(Debug)]
pub struct MissingReference;

impl std::fmt::Display for MissingReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P-frame without a reference frame (waiting for the next I-frame)")
    }
}

impl std::error::Error for MissingReference {}

/// What the next frame is predicted from.
struct Reference {
    latent: Tensor,
    code: Tensor,
    /// D(ŷ), only kept by the encoder (motion estimation input).
    picture: Option<Tensor>,
}

/// Table indices for predicted log scales: the only float → integer step of the entropy path.
fn scale_indices(gc: &GaussianConditional, log_scale: &Tensor) -> Vec<u8> {
    let s: Vec<f32> = Vec::try_from(log_scale.flatten(0, -1).to_device(Device::Cpu).to_kind(Kind::Float)).unwrap();
    s.iter().map(|&v| gc.index_for_log_scale(v)).collect()
}

fn per_channel_indices(channel_indices: &[u8], shape: &[i64]) -> Vec<u8> {
    let plane = (shape[2] * shape[3]) as usize;
    (0..shape[0] as usize)
        .flat_map(|_| channel_indices.iter().flat_map(move |&i| std::iter::repeat_n(i, plane)))
        .collect()
}

const MAX_SYMBOL: f64 = (1 << 20) as f64;

/// Quantizes `x` around `mean` (`sign(r)·⌊|r| + rounding_offset⌋` of r = x − μ), codes it,
/// returns the reconstruction `q + μ`.
fn encode_tensor(
    gc: &GaussianConditional,
    enc: &mut RansEncoder,
    x: &Tensor,
    mean: &Tensor,
    indices: &[u8],
    rounding_offset: f64,
) -> Result<(Tensor, PartBits)> {
    let r = x - mean;
    let q = r.sign() * (r.abs() + rounding_offset).floor();
    // Clamped well inside what the escape code allows; NaN/inf (only an untrained network
    // makes them) become in-range symbols too, so every stream stays decodable.
    let q = q.nan_to_num(0.0, MAX_SYMBOL, -MAX_SYMBOL).clamp(-MAX_SYMBOL, MAX_SYMBOL);
    let symbols: Vec<i32> = Vec::try_from(q.flatten(0, -1).to_device(Device::Cpu).to_kind(Kind::Int)).unwrap();
    gc.encode(enc, &symbols, indices)?;
    let mut bits = PartBits::default();
    for (&s, &i) in symbols.iter().zip(indices) {
        let b = gc.table(i).cost_bits(s);
        bits.bits += b;
        if b > SURPRISE_SYMBOL_BITS {
            bits.surprise_bits += b;
            bits.surprises += 1;
        }
    }
    Ok((q + mean, bits))
}

fn decode_tensor(gc: &GaussianConditional, dec: &mut RansDecoder, mean: &Tensor, indices: &[u8]) -> Result<Tensor> {
    let symbols = gc.decode(dec, indices)?;
    let q = Tensor::from_slice(&symbols).to_kind(Kind::Float).view(mean.size().as_slice()).to_device(mean.device());
    Ok(q + mean)
}

/// Ideal code length (from the integer CDF tables) of one coded tensor of a frame.
#[derive(Clone, Debug, Default)]
pub struct PartBits {
    pub part: &'static str,
    pub bits: f64,
    /// The part of `bits` spent on symbols costing more than `SURPRISE_SYMBOL_BITS` each, and
    /// their count.
    pub surprise_bits: f64,
    pub surprises: usize,
}

/// Where a frame's bits go, per coded tensor in coding order (without the rANS flush and the
/// framing).
pub type BitSplit = Vec<PartBits>;

/// One side of the entropy path: the encoder codes values, the decoder reads them back.
/// Both run the same code below, so the encoder's reconstruction is the decoder's.
enum Coder<'a, 'b> {
    /// The encoder, its bit split and its rounding offset (`EncoderParams::rounding_offset`).
    Encode(&'a mut RansEncoder, &'a mut BitSplit, f64),
    Decode(&'a mut RansDecoder<'b>),
}

impl Coder<'_, '_> {
    /// `x` is the value to code (encoder only), `part` names it in the bit split; returns the
    /// reconstruction.
    fn code(
        &mut self,
        part: &'static str,
        gc: &GaussianConditional,
        x: Option<&Tensor>,
        mean: &Tensor,
        indices: &[u8],
    ) -> Result<Tensor> {
        match self {
            Coder::Encode(enc, split, rounding_offset) => {
                let x = x.context("encoder without a value")?;
                let (recon, bits) = encode_tensor(gc, enc, x, mean, indices, *rounding_offset)?;
                split.push(PartBits { part, ..bits });
                Ok(recon)
            }
            Coder::Decode(dec) => decode_tensor(gc, dec, mean, indices),
        }
    }

    /// Codes the entries of `x` where `mask` (broadcast to `mean`'s shape) is 1, in raster
    /// order; returns their reconstruction with zeros elsewhere.
    fn code_masked(
        &mut self,
        part: &'static str,
        gc: &GaussianConditional,
        x: Option<&Tensor>,
        (mean, log_scale): (&Tensor, &Tensor),
        mask: &Tensor,
    ) -> Result<Tensor> {
        let selected = mask.expand_as(mean).to_kind(Kind::Bool);
        let pick = |t: &Tensor| t.masked_select(&selected);
        let values = x.map(pick);
        let recon = self.code(part, gc, values.as_ref(), &pick(mean), &scale_indices(gc, &pick(log_scale)))?;
        Ok(mean.zeros_like().masked_scatter(&selected, &recon))
    }

    /// Codes a code tensor under its prior: in one pass, or in the checkerboard's two (the
    /// anchors first, then the rest under parameters refined from the decoded anchors).
    fn code_under(
        &mut self,
        part: &'static str,
        gc: &GaussianConditional,
        x: Option<&Tensor>,
        prior: &CodePrior,
    ) -> Result<Tensor> {
        let (mean, log_scale) = split_log_params(&prior.first);
        let Some(spatial) = prior.spatial else {
            return self.code(part, gc, x, &mean, &scale_indices(gc, &log_scale));
        };
        let (_, _, h, w) = mean.size4()?;
        let anchors = CheckerboardPrior::anchors(h, w, mean.device());
        let anchors_hat = self.code_masked(part, gc, x, (&mean, &log_scale), &anchors)?;
        let (mean, log_scale) = split_log_params(&spatial.refine(&prior.first, &anchors_hat, &anchors));
        let rest = self.code_masked(part, gc, x, (&mean, &log_scale), &(1.0 - &anchors))?;
        Ok(anchors_hat + rest)
    }
}

/// Encoder-side values of one coded tensor pair: (code, hyper-latent z). The decoder has none.
type Analysis<'t> = Option<(&'t Tensor, &'t Tensor)>;

/// The shared reconstruction path of a frame (the decoder side, which the encoder runs too).
struct FrameCodec<'m> {
    model: &'m GvcModel,
    gc: &'m GaussianConditional,
}

impl FrameCodec<'_> {
    /// Codes z under the factorized prior of `hyper`, returning ẑ.
    fn hyper_latent(
        &self,
        coder: &mut Coder,
        part: &'static str,
        hyper: &Hyperprior,
        qp: i64,
        z: Option<&Tensor>,
        code_hw: (i64, i64),
    ) -> Result<Tensor> {
        let channels = hyper.z_channels();
        let shape = [1, channels, (code_hw.0 + 3) / 4, (code_hw.1 + 3) / 4];
        let indices = per_channel_indices(&hyper.z_indices(self.gc, qp), &shape);
        let zeros = Tensor::zeros(shape, (Kind::Float, self.model.device));
        coder.code(part, self.gc, z, &zeros, &indices)
    }

    /// Intra frame: ẑ, then the code; returns (ŷ, ĉ).
    fn intra(&self, coder: &mut Coder, qp: i64, code_hw: (i64, i64), a: Analysis) -> Result<(Tensor, Tensor)> {
        let m = &self.model.intra;
        let z_hat = self.hyper_latent(coder, "intra z", &m.hyper, qp, a.map(|a| a.1), code_hw)?;
        let prior = m.prior(&z_hat, qp, code_hw.0, code_hw.1);
        let code = coder.code_under("intra code", self.gc, a.map(|a| a.0), &prior)?;
        Ok((m.synthesis(&code, qp), code))
    }

    /// Motion half of a P-frame; returns the decoded flow on the latent grid.
    fn motion(&self, coder: &mut Coder, qp: i64, code_hw: (i64, i64), a: Analysis) -> Result<Tensor> {
        let m = &self.model.motion;
        let z_hat = self.hyper_latent(coder, "motion z", &m.hyper, qp, a.map(|a| a.1), code_hw)?;
        let prior = m.prior(&z_hat, qp, code_hw.0, code_hw.1);
        let code = coder.code_under("motion code", self.gc, a.map(|a| a.0), &prior)?;
        Ok(m.synthesis(&code, qp))
    }

    /// Contextual half of a P-frame; returns (ŷ, ĉ).
    fn contextual(
        &self,
        coder: &mut Coder,
        qp: i64,
        code_hw: (i64, i64),
        reference: &Reference,
        ctx: &TemporalContext,
        a: Analysis,
    ) -> Result<(Tensor, Tensor)> {
        let m = &self.model.contextual;
        let z_hat = self.hyper_latent(coder, "contextual z", &m.hyper, qp, a.map(|a| a.1), code_hw)?;
        let prior = m.prior(&z_hat, qp, ctx, &reference.code);
        let code = coder.code_under("contextual code", self.gc, a.map(|a| a.0), &prior)?;
        Ok((m.synthesis(&code, ctx, qp), code))
    }
}

fn padded(v: i64) -> i64 {
    (v + SIZE_MULTIPLE - 1) / SIZE_MULTIPLE * SIZE_MULTIPLE
}

#[derive(Clone, Debug)]
pub struct EncoderParams {
    pub width: u32,
    pub height: u32,
    pub fps_n: u32,
    pub fps_d: u32,
    pub intra_period: u32,
    pub qp: u8,
    pub diffusion_steps: u8,
    pub independent_steps: u8,
    /// Code a frame due as a P-frame as an I-frame when it costs more bytes than the GOP's
    /// first P-frame and restarting (the I-frame, then a first P-frame) costs no more bytes
    /// over two frames: scene cuts, and P-frame chains whose reference drifted so far that
    /// every frame costs more than restarting.
    pub adaptive_intra: bool,
    /// I-frames are coded this many rate points better than `qp` (clamped at QP 0): every
    /// P-frame of the GOP predicts from the I-frame, so its quality carries through the GOP
    /// (x264's ipratio plays the same role). None: the model's choice for the QP
    /// ([`CodecConfig::intra_qp_offset_for`](crate::model::CodecConfig::intra_qp_offset_for)).
    pub intra_qp_offset: Option<u8>,
    /// A target bitrate: each frame's QP and rounding offset are picked by a
    /// [`RateController`], starting from `qp` at offset 0.5 (`rounding_offset` is not used).
    /// None: every frame at `qp`.
    pub rate_target: Option<RateTarget>,
    /// The encoder's rounding of code values around the prior's mean: 0.5 rounds to the
    /// nearest integer; less widens the zero bin (a dead zone, as x264's and HM's rounding
    /// offsets), trading a little distortion for fewer bits.
    pub rounding_offset: f64,
    /// QPP prompts tried: the encoder samples each frame as the decoder will under the prompts
    /// of the rate points up to this many above and below the frame's own, also weighs showing
    /// it without diffusion (D(ŷ)), and signals the choice whose pictures have been closest to
    /// the source by LPIPS (AlexNet) over the GOP so far ([`PromptSearch`]). Each tried offset
    /// costs the encoder one diffusion decode per frame. Some(0): the frame's own prompt or no
    /// diffusion, the cheapest guard against a denoiser that harms the content. None: every
    /// frame takes its own rate point's prompt, and the encoder runs no diffusion.
    pub prompt_search: Option<u8>,
    /// Signal per 32×32 block whether the decoder shows the diffusion output or D(ŷ) (a
    /// [`DiffusionMask`], format version 4): the blocks where the diffusion output's LPIPS
    /// map against the source is lower. Runs the prompt search's diffusion decodes (range 0
    /// when `prompt_search` is None) and weighs its prompts by the masked pictures.
    pub diffusion_mask: bool,
}

pub struct EncodedFrame {
    /// One access unit: sequence header (before I-frames) + frame unit.
    pub data: Vec<u8>,
    pub frame_type: FrameType,
    pub frame_number: u32,
    /// The codec reconstruction D(ŷ) at display size (what the next frame predicts from).
    pub reconstruction: Tensor,
    /// The codec's decoded latent ŷ at the coded size: every decoder, on any CPU, decodes the
    /// same (`PortableConv`).
    pub latent: Tensor,
    /// Where the frame's bits went, per coded tensor.
    pub bit_split: BitSplit,
    /// The signalled prompt: the rate point `qp_index + prompt_offset`'s; None: shown without
    /// diffusion.
    pub prompt_offset: Option<i8>,
    /// With a prompt search, the picture the decoder displays (display size).
    pub display: Option<Tensor>,
    /// The signalled diffusion mask; None: the frame shows its diffusion output (if any)
    /// everywhere.
    pub diffusion_mask: Option<DiffusionMask>,
}

/// A P-frame is a restart candidate only above this multiple of the GOP's first P-frame: on
/// hard motion P-frames vary by a quarter without any drift (bikes at QP 2: 1,679 then 2,058
/// bytes), while a scene cut or a drifted chain costs several times the first P-frame.
const RESTART_CANDIDATE_RATIO: f64 = 1.5;

/// Adaptive intra's byte balance for a P-frame that costs more than the GOP's first P-frame:
/// restarting (this frame as an I-frame, then a first P-frame) against two such P-frames.
fn restart_pays(p_bytes: usize, first_p_bytes: usize, intra_bytes: usize) -> bool {
    intra_bytes + first_p_bytes <= 2 * p_bytes
}

pub struct EncoderSession {
    model: Arc<GvcModel>,
    spynet: SpyNet,
    _spynet_vs: nn::VarStore,
    gc: Arc<GaussianConditional>,
    header: SequenceHeader,
    qp: u8,
    frame_number: u32,
    since_intra: u32,
    reference: Option<Reference>,
    adaptive_intra: bool,
    intra_qp_offset: Option<u8>,
    /// Bytes of the last first P-frame after an I-frame: what a restart costs on top of the
    /// I-frame.
    first_p_bytes: Option<usize>,
    rate_control: Option<RateController>,
    rounding_offset: f64,
    prompt_search: Option<PromptSearch>,
}

impl EncoderSession {
    pub fn new(model: Arc<GvcModel>, params: &EncoderParams) -> Result<Self> {
        ensure!(params.width >= 16 && params.height >= 16, "frames must be at least 16x16");
        ensure!(params.width <= 4096 && params.height <= 4096, "frames larger than 4096 are not supported");
        ensure!(
            (params.qp as i64) < model.config.codec.num_qps,
            "qp {} out of range (model has {})",
            params.qp,
            model.config.codec.num_qps
        );
        ensure!(params.fps_n > 0 && params.fps_d > 0, "invalid frame rate {}/{}", params.fps_n, params.fps_d);
        ensure!(
            (0.0..=0.5).contains(&params.rounding_offset),
            "rounding offset {} outside 0 ..= 0.5",
            params.rounding_offset
        );
        let (vs, spynet) = GvcModel::load_spynet(model.device)?;
        let header = SequenceHeader {
            model_id: model.id,
            coded_width: padded(params.width as i64) as u16,
            coded_height: padded(params.height as i64) as u16,
            display_width: params.width as u16,
            display_height: params.height as u16,
            fps_n: params.fps_n,
            fps_d: params.fps_d,
            intra_period: params.intra_period.clamp(1, u16::MAX as u32) as u16,
            diffusion_steps: params.diffusion_steps,
            independent_steps: params.independent_steps.min(params.diffusion_steps).max(params.diffusion_steps.min(1)),
            num_rate_points: model.config.codec.num_qps as u8,
        };
        header.validate()?;
        let rate_control = match params.rate_target {
            Some(target) => Some(RateController::new(
                f64::from(target.bits_per_second),
                f64::from(params.fps_n) / f64::from(params.fps_d),
                target.buffer_seconds,
                params.qp,
                (model.config.codec.num_qps - 1) as u8,
            )?),
            None => None,
        };
        let prompt_search = match params.prompt_search.or(params.diffusion_mask.then_some(0)) {
            Some(range) if header.diffusion_steps > 0 => Some(PromptSearch::new(&model, range, params.diffusion_mask)?),
            _ => None,
        };
        Ok(Self {
            model,
            spynet,
            _spynet_vs: vs,
            gc: shared_gaussian(),
            header,
            qp: params.qp,
            frame_number: 0,
            since_intra: 0,
            reference: None,
            adaptive_intra: params.adaptive_intra,
            intra_qp_offset: params.intra_qp_offset,
            first_p_bytes: None,
            rate_control,
            rounding_offset: params.rounding_offset,
            prompt_search,
        })
    }

    pub fn sequence_header(&self) -> &SequenceHeader {
        &self.header
    }

    /// The next frame is coded as an I-frame (after a flush).
    pub fn restart_gop(&mut self) {
        self.reference = None;
    }

    pub fn set_qp(&mut self, qp: u8) -> Result<()> {
        ensure!((qp as i64) < self.model.config.codec.num_qps, "qp {qp} out of range");
        if qp != self.qp {
            // A restart's cost was measured at the old rate point.
            self.first_p_bytes = None;
        }
        self.qp = qp;
        Ok(())
    }

    /// Takes effect at the next I-frame; None: the model's choice.
    pub fn set_intra_qp_offset(&mut self, offset: Option<u8>) {
        if offset != self.intra_qp_offset {
            self.first_p_bytes = None;
        }
        self.intra_qp_offset = offset;
    }

    /// Encodes one frame (1,3,H,W) in [0,1] at the display size.
    pub fn encode(&mut self, frame: &Tensor, force_intra: bool) -> Result<EncodedFrame> {
        let (_, c, h, w) = frame.size4().context("frame must be (1,3,H,W)")?;
        ensure!(
            c == 3 && h == self.header.display_height as i64 && w == self.header.display_width as i64,
            "frame is {c}x{h}x{w}, session expects 3x{}x{}",
            self.header.display_height,
            self.header.display_width
        );
        let intra = force_intra || self.reference.is_none() || self.since_intra >= self.header.intra_period as u32;
        if let Some((qp, offset)) = self.rate_control.as_ref().map(|rc| (rc.qp(), rc.rounding_offset())) {
            self.set_qp(qp)?;
            if offset != self.rounding_offset {
                // A restart's cost was measured at the old rounding.
                self.first_p_bytes = None;
                self.rounding_offset = offset;
            }
        }
        let encoded = tch::no_grad(|| self.encode_inner(frame, intra))?;
        if let Some(rc) = self.rate_control.as_mut() {
            rc.frame_coded(encoded.data.len());
        }
        Ok(encoded)
    }

    fn encode_inner(&mut self, frame: &Tensor, intra: bool) -> Result<EncodedFrame> {
        let m = &*self.model;
        let (ch, cw) = (self.header.coded_height as i64, self.header.coded_width as i64);
        let x = pad_replicate(&frame.to_device(m.device).to_kind(Kind::Float), ch, cw);
        let y = m.autoencoder.encoder.encode(&x);
        let mut chosen = self.code_frame(&x, &y, intra)?;
        let first_p = self.since_intra == 1;
        // Whether a frame due as a P-frame became an I-frame (a scene cut or a drifted chain).
        let mut restarted = false;
        match self.first_p_bytes {
            // Restarting costs the I-frame now and, next, a first P-frame that lifts the quality
            // back to the P-frames' level (measured: the last first P-frame after an I-frame);
            // going on costs about this P-frame twice. Only a P-frame clearly dearer than that
            // first P-frame is a candidate (a scene cut, or a chain that drifted): on hard motion
            // (bikes) every P-frame may cost more than an I-frame, and restarting there
            // trades P-frames for I-frames a few dB worse at the same QP. The first P-frame
            // after an I-frame is never replaced, so every GOP measures its restart cost and
            // cannot loop on I-frames.
            Some(restart_p)
                if !intra
                    && !first_p
                    && self.adaptive_intra
                    && chosen.size(&self.header) as f64 > RESTART_CANDIDATE_RATIO * restart_p as f64 =>
            {
                let intra = self.code_frame(&x, &y, true)?;
                if restart_pays(chosen.size(&self.header), restart_p, intra.size(&self.header)) {
                    chosen = intra;
                    restarted = true;
                }
            }
            _ => {}
        }
        let frame_type = chosen.packet.frame_type;
        let picture = m.autoencoder.decoder.decode(&chosen.latent).clamp(0.0, 1.0);
        let reconstruction = crop_display(&picture, &self.header);
        let (display, diffusion_mask) = match self.prompt_search.as_mut() {
            Some(search) => {
                let choice = search.choose(m, &self.header, &chosen, &reconstruction, frame, restarted)?;
                chosen.packet.prompt_offset = choice.offset;
                if let Some(mask) = &choice.mask {
                    // The display size's blocks are the coded size's: both round up alike.
                    let grid = DiffusionMask::grid(self.header.coded_height, self.header.coded_width);
                    debug_assert_eq!((mask.rows(), mask.cols()), grid);
                    chosen.packet.diffusion_mask = true;
                    let bits = mask.encode(&mut chosen.symbols);
                    chosen.bit_split.push(PartBits { part: "diffusion mask", bits, ..PartBits::default() });
                }
                (Some(choice.picture), choice.mask)
            }
            None => (None, None),
        };
        let data = chosen.access_unit(&self.header);
        if first_p && frame_type == FrameType::Inter {
            self.first_p_bytes = Some(data.len());
        }
        let Candidate { packet, latent, code, bit_split, .. } = chosen;
        self.reference = Some(Reference { latent: latent.shallow_clone(), code, picture: Some(picture) });
        self.since_intra = if frame_type == FrameType::Intra { 1 } else { self.since_intra + 1 };
        let frame_number = self.frame_number;
        self.frame_number = self.frame_number.wrapping_add(1);
        Ok(EncodedFrame {
            data,
            frame_type,
            frame_number,
            reconstruction,
            latent,
            bit_split,
            prompt_offset: packet.prompt_offset,
            display,
            diffusion_mask,
        })
    }

    /// Codes the current frame (`x` padded, `y` its latent) as an I- or P-frame without
    /// changing the session, so the encoder can weigh both.
    fn code_frame(&self, x: &Tensor, y: &Tensor, intra: bool) -> Result<Candidate> {
        let m = &*self.model;
        let qp_index = if intra {
            let offset = self.intra_qp_offset.unwrap_or_else(|| m.config.codec.intra_qp_offset_for(self.qp));
            self.qp.saturating_sub(offset)
        } else {
            self.qp
        };
        let qp = qp_index as i64;
        let code_hw = (self.header.coded_height as i64 / 16, self.header.coded_width as i64 / 16);
        let fc = FrameCodec { model: m, gc: &self.gc };
        let mut enc = RansEncoder::new();
        let mut bit_split = BitSplit::new();
        let mut coder = Coder::Encode(&mut enc, &mut bit_split, self.rounding_offset);
        let (latent, code, guide) = if intra {
            let code = m.intra.analysis(y, qp);
            let z = m.intra.hyper.analysis(&code, qp);
            let (latent, code) = fc.intra(&mut coder, qp, code_hw, Some((&code, &z)))?;
            (latent, code, DiffusionGuide::default())
        } else {
            let reference = self.reference.as_ref().context("P-frame without a reference")?;
            let flow8 = self.spynet.latent_flow(x, reference.picture.as_ref().context("reference without a picture")?);
            let mv = m.motion.analysis(&flow8, qp);
            let mz = m.motion.hyper.analysis(&mv, qp);
            let flow8_hat = fc.motion(&mut coder, qp, code_hw, Some((&mv, &mz)))?;
            let ctx = m.contextual.temporal_context(&reference.latent, &flow8_hat);
            let code = m.contextual.analysis(y, &ctx, qp);
            let z = m.contextual.hyper.analysis(&code, qp);
            let (latent, code) = fc.contextual(&mut coder, qp, code_hw, reference, &ctx, Some((&code, &z)))?;
            (latent, code, DiffusionGuide { c0: Some(ctx.c0), motion: Some(flow8_hat) })
        };
        let packet = FramePacket {
            frame_type: if intra { FrameType::Intra } else { FrameType::Inter },
            frame_number: self.frame_number,
            qp_index,
            prompt_offset: Some(0),
            noise_seed: noise_seed_for(self.frame_number),
            diffusion_mask: false,
            substreams: Vec::new(),
        };
        Ok(Candidate { packet, symbols: enc, latent, code, guide, bit_split })
    }
}

/// One way of coding the current frame, not yet committed to the session.
struct Candidate {
    /// The frame's header fields; its sub-stream is `symbols`, finished by `access_unit`.
    packet: FramePacket,
    symbols: RansEncoder,
    latent: Tensor,
    code: Tensor,
    guide: DiffusionGuide,
    bit_split: BitSplit,
}

impl Candidate {
    /// The access unit: the sequence header (before I-frames) and the frame unit.
    fn access_unit(&self, header: &SequenceHeader) -> Vec<u8> {
        let mut data = if self.packet.frame_type == FrameType::Intra { header.to_unit() } else { Vec::new() };
        let substreams = vec![self.symbols.clone().finish()];
        data.extend(FramePacket { substreams, ..self.packet.clone() }.to_unit());
        data
    }

    fn size(&self, header: &SequenceHeader) -> usize {
        self.access_unit(header).len()
    }
}

/// What the diffusion decoder takes from a decoded P-frame besides ŷ; none for I-frames.
#[derive(Default)]
struct DiffusionGuide {
    /// The temporal context C̄⁰ (I-frames: zeros).
    c0: Option<Tensor>,
    /// The decoded motion on the latent grid, which TDIR aligns the previous frame by.
    motion: Option<Tensor>,
}

/// How a frame is sampled: the stream's DS and D unless the decoder overrides them.
struct SamplingSettings {
    steps: usize,
    independent: usize,
    start_step: usize,
    agreement: f64,
}

impl SamplingSettings {
    /// The model's settings for a frame at rate point `qp`.
    fn for_qp(model: &GvcModel, (steps, independent): (usize, usize), qp: i64) -> Self {
        let d = &model.config.denoiser;
        Self { steps, independent, start_step: d.start_step_for(qp), agreement: d.tdir_agreement_for(qp) }
    }
}

/// The decoder's picture of a decoded frame: the diffusion decoder with TDIR (whose buffer is
/// the state carried between frames), or D(ŷ) without diffusion. The decoder and the
/// encoder's prompt search both render through this.
struct Renderer {
    schedule: NoiseSchedule,
    buffer: DiffusionBuffer,
}

impl Renderer {
    fn new(model: &GvcModel) -> Self {
        Self { schedule: NoiseSchedule::new(&model.config.denoiser), buffer: DiffusionBuffer::default() }
    }

    /// The sampled z⁰ (in ŷ's space, coded size) of frame `packet` with decoded latent ŷ,
    /// conditioned on rate point `prompt_qp`'s prompt; [`diffused_picture`] decodes it. None:
    /// the frame is shown without diffusion (no prompt, or DS = 0) as D(ŷ) exactly, which the
    /// caller holds or decodes (the encoder already has it as its reconstruction); the next
    /// P-frame then has no predictions to reuse.
    fn render(
        &mut self,
        m: &GvcModel,
        packet: &FramePacket,
        latent: &Tensor,
        guide: &DiffusionGuide,
        prompt_qp: Option<i64>,
        settings: &SamplingSettings,
    ) -> Option<(Tensor, SamplingStats)> {
        let intra = packet.frame_type == FrameType::Intra;
        if intra || prompt_qp.is_none() {
            self.buffer.reset();
        }
        let prompt_qp = prompt_qp.filter(|_| settings.steps > 0)?;
        // C̄⁰ is on the latent grid (1/8 of the frame).
        let c0 = match &guide.c0 {
            Some(c0) => c0.shallow_clone(),
            None => {
                let (_, _, h, w) = latent.size4().unwrap();
                Tensor::zeros([1, m.config.codec.context, h, w], (Kind::Float, m.device))
            }
        };
        let plan = SamplingPlan {
            steps: settings.steps,
            independent: settings.independent,
            seed: packet.noise_seed as u64,
            use_buffer: !intra,
            agreement: settings.agreement,
        };
        let ratio = if intra { m.intra.scales.prompt(prompt_qp) } else { m.contextual.scales.prompt(prompt_qp) };
        let (z0, stats) = diffusion::sample(
            &m.denoiser,
            &self.schedule,
            settings.start_step,
            &m.to_diffusion_space(latent),
            &c0,
            ratio,
            &plan,
            guide.motion.as_ref(),
            &mut self.buffer,
        );
        Some((m.from_diffusion_space(&z0), stats))
    }
}

/// The picture (coded size) the decoder shows for a sampled z⁰: D(z⁰), or with a diffusion
/// mask D(ŷ + m·(z⁰ − ŷ)).
fn diffused_picture(m: &GvcModel, latent: &Tensor, z0: &Tensor, mask: Option<&DiffusionMask>) -> Tensor {
    let shown = match mask {
        Some(mask) => mask.compose(latent, z0),
        None => z0.shallow_clone(),
    };
    m.autoencoder.decoder.decode(&shown).clamp(0.0, 1.0)
}

/// The encoder's QPP prompt choice ([`EncoderParams::prompt_search`]).
///
/// TDIR carries each P-frame's sampling into the next ones, so a prompt that is best for one
/// frame alone can be worse for the GOP (carphone QP 3 on gvc-wide: a per-frame choice gave
/// LPIPS 0.1762, one prompt held over the GOP 0.1736), and what a GOP's first P-frames
/// choose carries through the GOP. The search therefore follows one "track" per prompt
/// offset, each sampling every frame of the GOP under its offset with its own TDIR buffer,
/// and signals the offset of the track closest to the source (the sum of its frames' LPIPS)
/// over the previous GOP and this one so far: from the second GOP on, a whole GOP's evidence
/// decides before the current GOP's first frames do. While the signalled offsets of a GOP
/// have all been one track's, the decoder's state is that track's; once the lead has changed
/// hands, the decoder's own state is sampled as well.
///
/// One more track shows every frame without diffusion (D(ŷ), no sampling): on content the
/// denoiser does not suit (bikes' dark, defocused, grainy second scene, session 34: at QP 1
/// +3–9 % LPIPS on every P-frame there, +1.5 and +4.7 % at its I-frames) the encoder signals
/// that instead. A GOP that adaptive intra started early (a scene cut or a drifted chain)
/// drops the previous GOP's evidence: it was measured on other content.
///
/// With diffusion masks ([`EncoderParams::diffusion_mask`]) each track's frame shows its
/// diffusion output only in the blocks where that is closer to the source than D(ŷ), and the
/// track is weighed by that masked picture's distance (estimated from the LPIPS maps). The
/// TDIR buffer does not depend on the mask, so this per-frame choice leaves the tracks as
/// they were.
struct PromptSearch {
    lpips: Lpips,
    tracks: Vec<PromptTrack>,
    /// Whether frames get a diffusion mask.
    mask: bool,
    /// The decoder's state when no track holds it.
    decoder: Renderer,
}

struct PromptTrack {
    /// None: no diffusion.
    offset: Option<i8>,
    renderer: Renderer,
    /// LPIPS summed over the GOP's frames so far.
    distance: f64,
    /// LPIPS summed over the previous GOP's frames.
    previous_gop: f64,
    /// Whether every frame of the GOP so far was signalled with this offset (so the decoder's
    /// TDIR buffer is this track's).
    in_step: bool,
}

impl PromptSearch {
    fn new(model: &GvcModel, range: u8, mask: bool) -> Result<Self> {
        let lpips = Lpips::pretrained(Backbone::AlexNet, model.device)
            .context("the prompt search measures pictures with LPIPS (AlexNet)")?;
        let range = (range as i64).min(*bitstream::PROMPT_OFFSETS.end() as i64).min(model.config.codec.num_qps - 1);
        // Nearest first: on equal distances the smaller change wins, and any prompt wins over
        // none.
        let tracks = (0..=range as i8)
            .flat_map(|k| if k == 0 { vec![Some(0)] } else { vec![Some(-k), Some(k)] })
            .chain([None])
            .map(|offset| PromptTrack {
                offset,
                renderer: Renderer::new(model),
                distance: 0.0,
                previous_gop: 0.0,
                in_step: true,
            })
            .collect();
        Ok(Self { lpips, tracks, mask, decoder: Renderer::new(model) })
    }

    /// What to signal for `chosen` and the picture the decoder will show (display size).
    /// `reconstruction`: D(ŷ) at the display size. `restarted`: adaptive intra made this
    /// I-frame early.
    fn choose(
        &mut self,
        m: &GvcModel,
        header: &SequenceHeader,
        chosen: &Candidate,
        reconstruction: &Tensor,
        source: &Tensor,
        restarted: bool,
    ) -> Result<PromptChoice> {
        let packet = &chosen.packet;
        let qp = packet.qp_index as i64;
        let steps = (header.diffusion_steps as usize, header.independent_steps as usize);
        let settings = SamplingSettings::for_qp(m, steps, qp);
        let source = source.to_device(m.device).to_kind(Kind::Float);
        if packet.frame_type == FrameType::Intra {
            for track in &mut self.tracks {
                let previous = if restarted { 0.0 } else { track.distance };
                (track.previous_gop, track.distance, track.in_step) = (previous, 0.0, true);
            }
        }
        // With masks every track is measured by distance maps, D(ŷ)'s once per frame.
        let plain_map = self.mask.then(|| self.lpips.distance_map(reconstruction, &source));
        let sample =
            |lpips: &Lpips, z0: Tensor| Sampled::new(m, header, lpips, &chosen.latent, z0, &source, plain_map.as_ref());
        let mut sampled = Vec::with_capacity(self.tracks.len());
        for track in &mut self.tracks {
            let prompt_qp = track.offset.map(|o| qp + o as i64);
            if prompt_qp.is_some_and(|p| !(0..m.config.codec.num_qps).contains(&p)) {
                // Not a prompt at this rate point: the track drops out of this GOP.
                track.distance = f64::INFINITY;
                sampled.push(None);
                continue;
            }
            let rendered = track.renderer.render(m, packet, &chosen.latent, &chosen.guide, prompt_qp, &settings);
            let track_sampled = rendered.map(|(z0, _)| sample(&self.lpips, z0));
            track.distance += match (&track_sampled, &plain_map) {
                (Some(sampled), _) => sampled.distance(&self.lpips, &source),
                (None, Some(plain)) => plain.mean(Kind::Float).double_value(&[]),
                (None, None) => self.lpips.distance(reconstruction, &source).double_value(&[0]),
            };
            sampled.push(track_sampled);
        }
        let score = |t: &PromptTrack| t.previous_gop + t.distance;
        let lead = (0..self.tracks.len())
            .min_by(|&a, &b| score(&self.tracks[a]).total_cmp(&score(&self.tracks[b])))
            .context("no prompt to try")?;
        let offset = self.tracks[lead].offset;
        let shown = if self.tracks[lead].in_step {
            self.decoder.buffer = self.tracks[lead].renderer.buffer.snapshot();
            sampled[lead].take()
        } else {
            let prompt_qp = offset.map(|o| qp + o as i64);
            let rendered = self.decoder.render(m, packet, &chosen.latent, &chosen.guide, prompt_qp, &settings);
            rendered.map(|(z0, _)| sample(&self.lpips, z0))
        };
        for track in &mut self.tracks {
            track.in_step &= track.offset == offset;
        }
        let Some(shown) = shown else {
            return Ok(PromptChoice { offset, mask: None, picture: reconstruction.shallow_clone() });
        };
        // A mask over every block is no mask.
        Ok(match shown.masked.map(|(mask, _)| mask).filter(|mask| !mask.is_full()) {
            Some(mask) => {
                let picture = crop_display(&diffused_picture(m, &chosen.latent, &shown.z0, Some(&mask)), header);
                PromptChoice { offset, mask: Some(mask), picture }
            }
            None => PromptChoice { offset, mask: None, picture: shown.picture },
        })
    }
}

/// What the prompt search signals for a frame.
struct PromptChoice {
    /// None: no diffusion.
    offset: Option<i8>,
    mask: Option<DiffusionMask>,
    /// The picture the decoder shows (display size).
    picture: Tensor,
}

/// A track's diffusion decode of the current frame.
struct Sampled {
    z0: Tensor,
    /// D(z⁰) at the display size.
    picture: Tensor,
    /// With masks: the blocks where D(z⁰) is closer to the source than D(ŷ), and the masked
    /// picture's LPIPS to the source estimated from the two distance maps.
    masked: Option<(DiffusionMask, f64)>,
}

impl Sampled {
    /// `plain_map`: D(ŷ)'s LPIPS distance map against the source, when masks are chosen.
    fn new(
        m: &GvcModel,
        header: &SequenceHeader,
        lpips: &Lpips,
        latent: &Tensor,
        z0: Tensor,
        source: &Tensor,
        plain_map: Option<&Tensor>,
    ) -> Self {
        let picture = crop_display(&diffused_picture(m, latent, &z0, None), header);
        let masked = plain_map.map(|plain| {
            let map = lpips.distance_map(&picture, source);
            let mask = DiffusionMask::from_distance_maps(&map, plain);
            let distance = mask.masked_distance(&map, plain);
            (mask, distance)
        });
        Self { z0, picture, masked }
    }

    /// LPIPS to the source: with a mask, the estimate; without, measured (only the tracks'
    /// scores need it, not the decoder's own sampling).
    fn distance(&self, lpips: &Lpips, source: &Tensor) -> f64 {
        match &self.masked {
            Some((_, distance)) => *distance,
            None => lpips.distance(&self.picture, source).double_value(&[0]),
        }
    }
}

fn noise_seed_for(frame_number: u32) -> u32 {
    frame_number
}

fn crop_display(picture: &Tensor, header: &SequenceHeader) -> Tensor {
    picture.narrow(2, 0, header.display_height as i64).narrow(3, 0, header.display_width as i64)
}

fn shared_gaussian() -> Arc<GaussianConditional> {
    static GC: once_cell::sync::Lazy<Arc<GaussianConditional>> =
        once_cell::sync::Lazy::new(|| Arc::new(GaussianConditional::new()));
    GC.clone()
}

#[derive(Debug)]
pub struct DecodedFrame {
    /// (1,3,h,w) in [0,1] at the display size.
    pub picture: Tensor,
    /// The codec's decoded latent ŷ, the encoder's `EncodedFrame::latent` to the last bit.
    pub latent: Tensor,
    pub frame_number: u32,
    pub frame_type: FrameType,
    pub stats: SamplingStats,
    /// The sampled z⁰ (ŷ's space, coded size), before any diffusion mask; None without
    /// diffusion.
    pub diffused_latent: Option<Tensor>,
    /// The frame's diffusion mask, when it has one and was shown with diffusion: the picture
    /// decodes z⁰ only in its blocks and ŷ elsewhere.
    pub mask: Option<DiffusionMask>,
}

pub struct DecoderSession {
    model: Arc<GvcModel>,
    gc: Arc<GaussianConditional>,
    header: Option<SequenceHeader>,
    reference: Option<Reference>,
    renderer: Renderer,
    /// Element overrides of DS and D (bounded by the stream's values).
    pub diffusion_steps: Option<u8>,
    pub independent_steps: Option<u8>,
    /// Benchmarks only: condition the denoiser on this QP's prompt instead of the signalled one
    /// (frames signalled without diffusion stay without).
    pub prompt_qp: Option<u8>,
    /// Benchmarks only: start the sampling from this diffusion step instead of the model's.
    pub start_step: Option<usize>,
    /// Benchmarks only: TDIR's agreement scale τ instead of the model's.
    pub tdir_agreement: Option<f64>,
}

impl DecoderSession {
    pub fn new(model: Arc<GvcModel>) -> Self {
        Self {
            renderer: Renderer::new(&model),
            model,
            gc: shared_gaussian(),
            header: None,
            reference: None,
            diffusion_steps: None,
            independent_steps: None,
            prompt_qp: None,
            start_step: None,
            tdir_agreement: None,
        }
    }

    pub fn sequence_header(&self) -> Option<&SequenceHeader> {
        self.header.as_ref()
    }

    /// Forgets the reference and the TDIR buffer (flush / seek): decoding resumes at an I-frame.
    pub fn reset(&mut self) {
        self.reference = None;
        self.renderer.buffer.reset();
    }

    /// The (DS, D) this session samples with.
    pub fn effective_steps(&self) -> (usize, usize) {
        let Some(h) = &self.header else { return (0, 0) };
        let ds = self.diffusion_steps.map_or(h.diffusion_steps, |v| v.min(h.diffusion_steps)) as usize;
        // DS is bounded by the stream; D only by DS (more network steps is the decoder's choice).
        let d = self.independent_steps.unwrap_or(h.independent_steps) as usize;
        (ds, d.clamp(ds.min(1), ds))
    }

    pub fn decode(&mut self, access_unit: &[u8]) -> Result<DecodedFrame> {
        let au = bitstream::parse_access_unit(access_unit)?;
        if let Some(h) = au.sequence_header {
            if h.model_id != self.model.id {
                bail!(
                    "stream was made with model {:016x}, this decoder has model {:016x} ({})",
                    h.model_id,
                    self.model.id,
                    self.model.config.name
                );
            }
            self.header = Some(h);
        }
        let header = self.header.clone().context("frame before any sequence header")?;
        let packet = au.frame;
        ensure!(
            (packet.qp_index as i64) < self.model.config.codec.num_qps,
            "qp index {} out of range",
            packet.qp_index
        );
        if let Some(offset) = packet.prompt_offset {
            ensure!(
                (0..self.model.config.codec.num_qps).contains(&(packet.qp_index as i64 + offset as i64)),
                "frame {} asks for the prompt of rate point {} + {offset}, outside the model's {}",
                packet.frame_number,
                packet.qp_index,
                self.model.config.codec.num_qps
            );
        }
        ensure!(
            packet.substreams.len() == 1,
            "frame {} has {} sub-streams, expected 1",
            packet.frame_number,
            packet.substreams.len()
        );
        ensure!(
            !packet.diffusion_mask || packet.prompt_offset.is_some(),
            "frame {} carries a diffusion mask but is shown without diffusion",
            packet.frame_number
        );
        if packet.frame_type == FrameType::Inter && self.reference.is_none() {
            return Err(MissingReference.into());
        }
        tch::no_grad(|| self.decode_inner(&header, &packet))
    }

    fn decode_inner(&mut self, header: &SequenceHeader, packet: &FramePacket) -> Result<DecodedFrame> {
        let m = &*self.model;
        let (ch, cw) = (header.coded_height as i64, header.coded_width as i64);
        let code_hw = (ch / 16, cw / 16);
        let qp = packet.qp_index as i64;
        let fc = FrameCodec { model: m, gc: &self.gc };
        let mut dec = RansDecoder::new(&packet.substreams[0])?;
        let mut coder = Coder::Decode(&mut dec);
        let intra = packet.frame_type == FrameType::Intra;
        let (latent, code, guide) = if intra {
            let (latent, code) = fc.intra(&mut coder, qp, code_hw, None)?;
            (latent, code, DiffusionGuide::default())
        } else {
            let reference = self.reference.as_ref().unwrap();
            let flow8_hat = fc.motion(&mut coder, qp, code_hw, None)?;
            let ctx = m.contextual.temporal_context(&reference.latent, &flow8_hat);
            let (latent, code) = fc.contextual(&mut coder, qp, code_hw, reference, &ctx, None)?;
            (latent, code, DiffusionGuide { c0: Some(ctx.c0), motion: Some(flow8_hat) })
        };
        let (rows, cols) = DiffusionMask::grid(header.coded_height, header.coded_width);
        let mask = packet.diffusion_mask.then(|| DiffusionMask::decode(&mut dec, rows, cols));
        // The unit's CRC held, so the bytes are the encoder's: it computed other entropy
        // parameters than this decoder. The decoding path is CPU-independent (`PortableConv`),
        // so that takes another libtorch build or device, or a bug.
        ensure!(
            dec.is_exhausted(),
            "frame {} payload does not match its symbols although its CRC holds: the encoder's arithmetic differs \
             from this decoder's (a stream made with another libtorch build or device?)",
            packet.frame_number
        );
        let mut settings = SamplingSettings::for_qp(m, self.effective_steps(), qp);
        settings.start_step = self.start_step.unwrap_or(settings.start_step);
        settings.agreement = self.tdir_agreement.unwrap_or(settings.agreement);
        let prompt_qp = packet.prompt_offset.map(|offset| match self.prompt_qp {
            Some(q) => (q as i64).min(m.config.codec.num_qps - 1),
            None => qp + offset as i64,
        });
        let (picture, diffused_latent, stats) =
            match self.renderer.render(m, packet, &latent, &guide, prompt_qp, &settings) {
                Some((z0, stats)) => (diffused_picture(m, &latent, &z0, mask.as_ref()), Some(z0), stats),
                None => (m.autoencoder.decoder.decode(&latent).clamp(0.0, 1.0), None, SamplingStats::default()),
            };
        let mask = mask.filter(|_| diffused_latent.is_some());
        self.reference = Some(Reference { latent: latent.shallow_clone(), code, picture: None });
        Ok(DecodedFrame {
            picture: crop_display(&picture, header),
            latent,
            frame_number: packet.frame_number,
            frame_type: packet.frame_type,
            stats,
            diffused_latent,
            mask,
        })
    }
}
