//! Building blocks shared by the networks.

use std::sync::Mutex;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

pub fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig { stride, padding: k / 2, ..Default::default() };
    nn::conv2d(p, cin, cout, k, cfg)
}

/// Conv starting at zero: residual branches and output layers of the denoiser start as
/// identity / zero output, which keeps early training stable (as in DDPM's U-Net).
pub fn zero_init_conv(p: nn::Path, cin: i64, cout: i64, k: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        padding: k / 2,
        ws_init: nn::Init::Const(0.0),
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

/// 1×1 conv whose output does not depend on the intra-op thread count. libtorch sums a 1×1
/// convolution in an order that follows the threads (outputs differ in the last bits between 1
/// and 2 threads), so the product is taken as a plain matrix product, which goes to MKL's GEMM
/// (thread-count independent, which `MKL_CBWR` strict mode promises, see `reproducible_math`)
/// and costs about what the 1×1 convolution does.
/// The denoiser's 1×1 convolutions, so a decode gives the same pictures whatever the thread
/// count (the codec's decoding path needs more, the same values on every CPU: `PortableConv`).
/// Parameters as `nn::Conv2D`'s.
#[derive(Debug)]
pub struct ExactPointwiseConv {
    ws: Tensor,
    bs: Tensor,
}

impl ExactPointwiseConv {
    /// `zero_init`: weights and bias start at zero (a new branch that starts as a no-op).
    pub fn new(p: nn::Path, cin: i64, cout: i64, zero_init: bool) -> Self {
        let c = if zero_init { zero_init_conv(p, cin, cout, 1) } else { conv(p, cin, cout, 1, 1) };
        Self { ws: c.ws, bs: c.bs.expect("conv with bias") }
    }
}

impl Module for ExactPointwiseConv {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (n, cin, h, w) = x.size4().expect("4-D input");
        let cout = self.ws.size()[0];
        let y = self.ws.view([cout, cin]).matmul(&x.reshape([n, cin, h * w])) + self.bs.view([1, cout, 1]);
        y.view([n, cout, h, w])
    }
}

/// Bits of a `PortableConv` input in fixed point: the largest magnitude of the tensor sits just
/// below 2^INPUT_BITS. With the weights' bits chosen per layer, every product and every partial
/// sum is an integer below 2^53, so f64 adds them exactly in any order.
const INPUT_BITS: i32 = 22;
/// Integers of magnitude below 2^ACCUMULATOR_BITS are exact in f64.
const ACCUMULATOR_BITS: i32 = 53;
/// A layer whose weights would get fewer fixed-point bits than this is refused at construction.
const MIN_WEIGHT_BITS: i32 = 12;
/// Largest unfolded input one f64 convolution of a `PortableConv` gets (see `banded_conv`).
const BAND_BYTES: i64 = 8 << 20;

/// The exponent e with 2^(e−1) <= |v| < 2^e (0 for zero): read from the bits, not from `log2`.
fn exponent_above(v: f64) -> i32 {
    if v == 0.0 {
        return 0;
    }
    let (mantissa, exponent) = (v.abs().to_bits() & ((1 << 52) - 1), (v.abs().to_bits() >> 52) as i32);
    // Subnormals (exponent field 0) sit below 2^-1022; the normal numbers' leading bit is implicit.
    if exponent == 0 {
        return -1022 - mantissa.leading_zeros() as i32 + 12;
    }
    exponent - 1022
}

/// 2^e, for the normal range of f64 (only absurd magnitudes, infinities or NaN reach the ends).
fn power_of_two(e: i32) -> f64 {
    f64::from_bits(((e.clamp(-1022, 1023) + 1023) as u64) << 52)
}

/// Convolution whose result is the same on every CPU, for the networks between the entropy
/// decoder and the entropy parameters and reference of the next frame: the decoder must
/// reproduce the encoder's μ, σ and ŷ to the last bit, or it reads the rest of the stream
/// wrong. libtorch's float convolutions sum in an order that follows the CPU's instruction
/// set (oneDNN's kernels, MKL's, ATen's vector width), so a stream made on an AVX2 machine lost
/// sync within 25 frames when decoded with oneDNN capped at SSE4.1 (`logs/cross-isa-22.log`).
/// Here the input (per tensor) and the weights (per output channel) are rounded to fixed point
/// with power-of-two scales, the convolution runs in f64 on those integers, where every sum is
/// exact and so independent of the order, and the power-of-two scales are undone exactly; the
/// bias is added in f32. The fixed point keeps 22 bits below the input's largest magnitude and at
/// least 12 below each output channel's largest weight.
/// With a gradient to compute (training) it is libtorch's float convolution, which the fixed
/// point matches to about 1e-6 relative. Parameters as `nn::Conv2D`'s.
#[derive(Debug)]
pub struct PortableConv {
    ws: Tensor,
    bs: Tensor,
    stride: i64,
    padding: i64,
    weight_bits: i32,
    integer_weights: Mutex<Option<IntegerWeights>>,
}

/// A `PortableConv`'s weights in fixed point, kept between calls: deriving them took 0.03–0.3 ms
/// per layer and call. `source` names the weights they came from (storage and libtorch's version
/// counter, which every in-place write bumps: a restore, an optimizer step), so weights changed
/// in place are converted again rather than served stale.
#[derive(Debug)]
struct IntegerWeights {
    source: (usize, i64),
    w_int: Tensor,
    /// Per output channel: the weights were scaled by 2^e.
    exponents: Vec<i32>,
}

impl PortableConv {
    pub fn new(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> Self {
        Self::from_conv(conv(p, cin, cout, k, stride), stride, k / 2)
    }

    /// Weights and bias start at zero (a new branch that starts as a no-op).
    pub fn zero_init(p: nn::Path, cin: i64, cout: i64, k: i64) -> Self {
        Self::from_conv(zero_init_conv(p, cin, cout, k), 1, k / 2)
    }

    fn from_conv(c: nn::Conv2D, stride: i64, padding: i64) -> Self {
        let size = c.ws.size();
        let terms = size[1] * size[2] * size[3];
        let weight_bits = ACCUMULATOR_BITS - INPUT_BITS - exponent_above(terms as f64);
        assert!(weight_bits >= MIN_WEIGHT_BITS, "a convolution summing {terms} terms is too wide to be exact in f64");
        Self {
            ws: c.ws,
            bs: c.bs.expect("conv with bias"),
            stride,
            padding,
            weight_bits,
            integer_weights: Mutex::new(None),
        }
    }

    /// The weights as integers (f64) and their per-channel exponents, converted once per
    /// version of the weights.
    fn integer_weights(&self) -> (Tensor, Vec<i32>) {
        let source = (self.ws.data_ptr() as usize, self.ws.internal_version());
        let mut cached = self.integer_weights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = cached.as_ref().filter(|w| w.source == source) {
            return (w.w_int.shallow_clone(), w.exponents.clone());
        }
        let cout = self.ws.size()[0];
        let ws = self.ws.to_kind(Kind::Double);
        let maxima: Vec<f64> =
            Vec::try_from(ws.abs().amax([1, 2, 3], false).to_device(Device::Cpu)).expect("weight maxima");
        let exponents: Vec<i32> = maxima.iter().map(|&m| self.weight_bits - exponent_above(m)).collect();
        let to_int: Vec<f64> = exponents.iter().map(|&e| power_of_two(e)).collect();
        let w_int = (ws * Tensor::from_slice(&to_int).to_device(self.ws.device()).view([cout, 1, 1, 1])).round();
        *cached = Some(IntegerWeights { source, w_int: w_int.shallow_clone(), exponents: exponents.clone() });
        (w_int, exponents)
    }

    fn exact(&self, x: &Tensor) -> Tensor {
        let double = |t: &Tensor| t.to_kind(Kind::Double);
        // |x| < 2^e, so x·2^(INPUT_BITS − e) rounds to an integer below 2^INPUT_BITS.
        let input_exponent = INPUT_BITS - exponent_above(x.abs().max().double_value(&[]));
        let x_int = (double(x) * power_of_two(input_exponent)).round();
        let (w_int, weight_exponents) = self.integer_weights();
        let cout = self.ws.size()[0];
        let from_int: Vec<f64> = weight_exponents.iter().map(|&e| power_of_two(-e - input_exponent)).collect();
        let sums = self.banded_conv(&x_int, &w_int);
        let from_int = Tensor::from_slice(&from_int).to_device(x.device()).view([1, cout, 1, 1]);
        (sums * from_int).to_kind(x.kind()) + self.bs.view([1, cout, 1, 1])
    }

    /// The convolution of the integers in bands of output rows. libtorch convolves f64 through
    /// an unfolded copy of the input (one column of cin·k² values per output pixel), which at
    /// a 640×480 frame's latent grid is 50 MB for one layer, above the size glibc serves
    /// without fresh pages each time, and grows with the frame; a band's copy stays below
    /// `BAND_BYTES`. Every output is the same exact sum either way.
    fn banded_conv(&self, x_int: &Tensor, w_int: &Tensor) -> Tensor {
        let (_, cin, k, _) = w_int.size4().expect("4-D weights");
        let (s, p) = (self.stride, self.padding);
        let padded = x_int.constant_pad_nd([p, p, p, p]);
        let (_, _, h, w) = padded.size4().expect("4-D input");
        let (out_h, out_w) = ((h - k) / s + 1, (w - k) / s + 1);
        let rows = (BAND_BYTES / (cin * k * k * out_w * 8)).clamp(1, out_h);
        let bands: Vec<Tensor> = (0..out_h)
            .step_by(rows as usize)
            .map(|r0| {
                let r1 = (r0 + rows).min(out_h);
                let input = padded.narrow(2, r0 * s, (r1 - 1) * s + k - r0 * s);
                // cuDNN off: on CUDA it may pick FFT or Winograd, which are not sums of the
                // products; ATen's own convolution is an unfolded copy and a GEMM everywhere.
                let (benchmark, deterministic, cudnn, tf32) = (false, true, false, false);
                input.internal_convolution(
                    w_int,
                    None::<Tensor>,
                    [s, s],
                    [0, 0],
                    [1, 1],
                    false,
                    [0, 0],
                    1,
                    benchmark,
                    deterministic,
                    cudnn,
                    tf32,
                )
            })
            .collect();
        if bands.len() == 1 {
            return bands.into_iter().next().expect("one band");
        }
        Tensor::cat(&bands, 2)
    }
}

impl Module for PortableConv {
    fn forward(&self, x: &Tensor) -> Tensor {
        if x.requires_grad() || self.ws.requires_grad() {
            let (s, p) = ([self.stride, self.stride], [self.padding, self.padding]);
            return x.conv2d(&self.ws, Some(&self.bs), s, p, [1, 1], 1);
        }
        self.exact(x)
    }
}

/// exp of a small tensor of parameters (the per-QP quantization scales): libtorch's when a
/// gradient is needed, otherwise from IEEE basic operations only, the same on every CPU
/// (libtorch's vectorized exp differs in the last bit between instruction sets).
pub fn portable_exp(t: &Tensor) -> Tensor {
    if t.requires_grad() {
        return t.exp();
    }
    let values: Vec<f64> =
        Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1).to_device(Device::Cpu)).expect("values");
    let exps: Vec<f64> = values.iter().map(|&v| crate::codec::entropy::portable_exp(v)).collect();
    Tensor::from_slice(&exps).view(t.size().as_slice()).to_kind(t.kind()).to_device(t.device())
}

/// `pixel_shuffle(2)`. On the usual (N, C, H, W) layout as a view and one copy, 3–4× faster
/// than libtorch's CPU kernel there (4.1 vs 0.96 ms for 128 channels at 128×128, 2 threads);
/// a channels-last input goes to libtorch's channels-last kernel, which is fast and keeps
/// that layout.
pub fn pixel_shuffle2(x: &Tensor) -> Tensor {
    if is_channels_last(x) {
        return x.pixel_shuffle(2);
    }
    let (n, c4, h, w) = x.size4().expect("4-D input");
    let c = c4 / 4;
    x.view([n, c, 2, 2, h, w]).permute([0, 1, 4, 2, 5, 3]).reshape([n, c, 2 * h, 2 * w])
}

/// The same (N, C, H, W) tensor stored channels-last (N, H, W, C in memory), the layout
/// oneDNN's float convolutions run fastest on here: the latent autoencoder's full-resolution
/// layers take 17–21 % less time in it (Python timing of the same network, 256×256–640×480).
/// Later layers keep the layout; it changes the float sums' order, so values move in the
/// last bits (D's pictures and E's latents; neither network is on the codec's decoding path).
/// Always a copy with the canonical strides: a frame permuted from HWC bytes has batch
/// stride 3, which passes for channels-last contiguous, yet libtorch ran its convolutions as
/// NCHW, so the same frame gave other bits than a canonical copy (`gvcenc` hands E such a
/// frame; the engine a canonical one: test `real_clip_through_decodebin_and_the_engine_agree`).
pub fn channels_last(x: &Tensor) -> Tensor {
    let (n, c, h, w) = x.size4().expect("4-D input");
    let mut out = Tensor::empty_strided([n, c, h, w], [h * w * c, 1, w * c, c], (x.kind(), x.device()));
    out.copy_(x);
    out
}

fn is_channels_last(x: &Tensor) -> bool {
    let (_, c, h, w) = x.size4().expect("4-D input");
    x.stride() == [h * w * c, 1, w * c, c]
}

/// 2× up-sampling by sub-pixel convolution; `C` is the convolution (`PortableConv` on the
/// codec's decoding path).
#[derive(Debug)]
pub struct SubpelConv<C = nn::Conv2D> {
    conv: C,
}

impl SubpelConv {
    pub fn new(p: nn::Path, cin: i64, cout: i64) -> Self {
        Self { conv: conv(p / "conv", cin, cout * 4, 3, 1) }
    }
}

impl SubpelConv<PortableConv> {
    pub fn portable(p: nn::Path, cin: i64, cout: i64) -> Self {
        Self { conv: PortableConv::new(p / "conv", cin, cout * 4, 3, 1) }
    }
}

impl<C: Module> Module for SubpelConv<C> {
    fn forward(&self, xs: &Tensor) -> Tensor {
        pixel_shuffle2(&self.conv.forward(xs))
    }
}

/// Residual block (conv–LeakyReLU–conv) as in DCVC-DC's `ResBlock`; `C` as in `SubpelConv`.
#[derive(Debug)]
pub struct ResBlock<C = nn::Conv2D> {
    conv1: C,
    conv2: C,
}

impl ResBlock {
    pub fn new(p: nn::Path, ch: i64) -> Self {
        Self { conv1: conv(&p / "conv1", ch, ch, 3, 1), conv2: conv(&p / "conv2", ch, ch, 3, 1) }
    }

    /// A block that starts as the identity (second conv at zero), so adding it to a trained
    /// network leaves the network's function as it was.
    pub fn identity_at_start(p: nn::Path, ch: i64) -> Self {
        Self { conv1: conv(&p / "conv1", ch, ch, 3, 1), conv2: zero_init_conv(&p / "conv2", ch, ch, 3) }
    }
}

impl ResBlock<PortableConv> {
    pub fn portable(p: nn::Path, ch: i64) -> Self {
        Self {
            conv1: PortableConv::new(&p / "conv1", ch, ch, 3, 1),
            conv2: PortableConv::new(&p / "conv2", ch, ch, 3, 1),
        }
    }
}

impl<C: Module> Module for ResBlock<C> {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let h = self.conv1.forward(&xs.leaky_relu());
        xs + self.conv2.forward(&h.leaky_relu())
    }
}

/// Backward warp of `x` by `flow` (N,2,H,W; channel 0 horizontal, in pixels), bilinear,
/// border padding, align_corners=True as in BasicVSR's `flow_warp`. Built from gathers and
/// element-wise IEEE operations in a fixed order, not `grid_sampler`, whose coordinate
/// arithmetic differs between instruction sets: the codec warps its reference with it, and
/// the decoder must warp exactly as the encoder did on any CPU.
pub fn flow_warp(x: &Tensor, flow: &Tensor) -> Tensor {
    let (n, c, h, w) = x.size4().expect("4-D input");
    let opts = (flow.kind(), flow.device());
    // Sample positions clipped into the picture (border padding); NaN reads the pixel itself.
    let position =
        |grid: Tensor, f: Tensor, size: i64| (grid + f.nan_to_num(0.0, None, None)).clamp(0.0, (size - 1) as f64);
    let px = position(Tensor::arange(w, opts).view([1, 1, w]), flow.select(1, 0), w);
    let py = position(Tensor::arange(h, opts).view([1, h, 1]), flow.select(1, 1), h);
    let (x0, y0) = (px.floor(), py.floor());
    let (fx, fy) = ((&px - &x0).unsqueeze(1), (&py - &y0).unsqueeze(1));
    let (ix0, iy0) = (x0.to_kind(Kind::Int64), y0.to_kind(Kind::Int64));
    let (ix1, iy1) = ((&ix0 + 1).clamp_max(w - 1), (&iy0 + 1).clamp_max(h - 1));
    let flat = x.reshape([n, c, h * w]);
    let sample = |iy: &Tensor, ix: &Tensor| {
        let index = (iy * w + ix).view([n, 1, h * w]).expand([n, c, h * w], false);
        flat.gather(2, &index, false).view([n, c, h, w])
    };
    let top = sample(&iy0, &ix0) * (1.0 - &fx) + sample(&iy0, &ix1) * &fx;
    let bottom = sample(&iy1, &ix0) * (1.0 - &fx) + sample(&iy1, &ix1) * &fx;
    top * (1.0 - &fy) + bottom * &fy
}

/// Bilinear resize (align_corners=False) to an explicit size.
pub fn resize(x: &Tensor, h: i64, w: i64) -> Tensor {
    x.upsample_bilinear2d([h, w], false, None, None)
}

/// Replicate-pads (N, C, h, w) pictures on the bottom and right to `h`×`w` (no copy when
/// already that size); the caller crops the network's output back.
pub fn pad_replicate(x: &Tensor, h: i64, w: i64) -> Tensor {
    let (_, _, xh, xw) = x.size4().expect("pictures (N, C, H, W)");
    if (xh, xw) == (h, w) {
        return x.shallow_clone();
    }
    x.pad([0, w - xw, 0, h - xh], "replicate", None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;

    #[test]
    fn portable_conv_is_the_float_convolution_and_ignores_the_thread_count() {
        let mut vs = nn::VarStore::new(tch::Device::Cpu);
        let layers = [
            (PortableConv::new(vs.root() / "a", 24, 40, 3, 1), 24),
            (PortableConv::new(vs.root() / "b", 40, 16, 3, 2), 40),
            (PortableConv::new(vs.root() / "c", 256, 128, 1, 1), 256),
        ];
        vs.freeze();
        let _threads = crate::model::THREAD_COUNT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let threads = tch::get_num_threads();
        for (layer, cin) in &layers {
            // Magnitudes far apart across channels, as the codec's features are.
            let x = Tensor::randn([1, *cin, 19, 13], (Kind::Float, Device::Cpu))
                * Tensor::logspace(-3.0, 2.0, *cin, 10.0, (Kind::Float, Device::Cpu)).view([1, -1, 1, 1]);
            let (s, p) = ([layer.stride, layer.stride], [layer.padding, layer.padding]);
            let reference = x.conv2d(&layer.ws, Some(&layer.bs), s, p, [1, 1], 1);
            tch::set_num_threads(1);
            let one = layer.forward(&x);
            tch::set_num_threads(2);
            let two = layer.forward(&x);
            assert_eq!(one.size(), reference.size());
            let err = (&one - &reference).abs().max().double_value(&[]);
            let scale = reference.abs().max().double_value(&[]);
            assert!(err < 1e-5 * scale, "differs from the float convolution by {err} (outputs up to {scale})");
            assert!(one.equal(&two), "1 and 2 threads give different outputs");
        }
        tch::set_num_threads(threads);
        // A layer in training is libtorch's convolution, gradient included.
        let trainable = nn::VarStore::new(Device::Cpu);
        let layer = PortableConv::new(trainable.root(), 4, 4, 3, 1);
        let x = Tensor::randn([1, 4, 5, 5], (Kind::Float, Device::Cpu));
        layer.forward(&x).sum(Kind::Float).backward();
        assert!(layer.ws.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    /// The cached fixed-point weights follow the weights when they change in place: a restore
    /// (`copy_`) and an optimizer step, then frozen again.
    #[test]
    fn portable_conv_follows_weights_changed_in_place() {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let layer = PortableConv::new(vs.root(), 6, 5, 3, 1);
        let x = Tensor::randn([1, 6, 7, 9], (Kind::Float, Device::Cpu));
        let matches_float = |layer: &PortableConv| {
            let (s, p) = ([layer.stride, layer.stride], [layer.padding, layer.padding]);
            let reference = tch::no_grad(|| x.conv2d(&layer.ws, Some(&layer.bs), s, p, [1, 1], 1));
            let err = (layer.forward(&x) - &reference).abs().max().double_value(&[]);
            err < 1e-5 * reference.abs().max().double_value(&[])
        };
        vs.freeze();
        assert!(matches_float(&layer));
        tch::no_grad(|| {
            layer.ws.shallow_clone().copy_(&(layer.ws.randn_like() * 3.0));
        });
        assert!(matches_float(&layer), "stale weights after a restore");
        vs.unfreeze();
        let mut optim = nn::Adam::default().build(&vs, 0.5).unwrap();
        optim.backward_step(&layer.forward(&x).square().sum(Kind::Float));
        vs.freeze();
        assert!(matches_float(&layer), "stale weights after an optimizer step");
    }

    #[test]
    fn banded_convolution_is_the_whole_convolution() {
        let vs = nn::VarStore::new(Device::Cpu);
        // Sizes that need several bands of `BAND_BYTES`, the last one short, at both strides.
        for (layer, cin, h, w) in [
            (PortableConv::new(vs.root() / "a", 40, 8, 3, 2), 40, 61, 400),
            (PortableConv::new(vs.root() / "b", 256, 8, 1, 1), 256, 150, 64),
            (PortableConv::new(vs.root() / "c", 24, 8, 3, 1), 24, 97, 300),
        ] {
            let x_int = (Tensor::randn([1, cin, h, w], (Kind::Double, Device::Cpu)) * 1e6).round();
            let w_int = (layer.ws.to_kind(Kind::Double) * 4096.0).round();
            let (s, p) = ([layer.stride, layer.stride], [layer.padding, layer.padding]);
            let whole = x_int.conv2d(&w_int, None::<Tensor>, s, p, [1, 1], 1);
            let rows_per_band = BAND_BYTES / (cin * w_int.size()[2].pow(2) * whole.size()[3] * 8);
            assert!(rows_per_band < whole.size()[2], "{cin} channels fit one band");
            assert!(layer.banded_conv(&x_int, &w_int).equal(&whole));
        }
    }

    #[test]
    fn pixel_shuffle2_is_libtorchs_pixel_shuffle() {
        let x = Tensor::randn([2, 12, 5, 7], (Kind::Float, Device::Cpu));
        assert!(pixel_shuffle2(&x).equal(&x.pixel_shuffle(2)));
        // Non-contiguous input, as a narrowed feature map can be.
        let t = Tensor::randn([2, 5, 12, 7], (Kind::Float, Device::Cpu)).transpose(1, 2);
        assert!(pixel_shuffle2(&t).equal(&t.pixel_shuffle(2)));
        // Channels-last stays channels-last, with canonical strides even from a frame permuted
        // out of HWC bytes (batch stride 3).
        let hwc = Tensor::randn([5, 7, 12], (Kind::Float, Device::Cpu)).permute([2, 0, 1]).unsqueeze(0);
        assert_eq!(channels_last(&hwc).stride(), [5 * 7 * 12, 1, 7 * 12, 12]);
        assert!(channels_last(&hwc).equal(&hwc));
        let cl = channels_last(&x);
        assert!(cl.equal(&x) && is_channels_last(&cl) && !is_channels_last(&x));
        let shuffled = pixel_shuffle2(&cl);
        assert!(shuffled.equal(&x.pixel_shuffle(2)) && is_channels_last(&shuffled));
    }

    #[test]
    fn exponents_come_from_the_bits() {
        assert_eq!(exponent_above(1.0), 1);
        assert_eq!(exponent_above(0.75), 0);
        assert_eq!(exponent_above(-3.0), 2);
        assert_eq!(exponent_above(4.0), 3);
        assert_eq!(exponent_above(0.0), 0);
        assert_eq!(exponent_above(f64::from_bits(1)), -1073);
        for e in [-1000, -30, 0, 7, 1000] {
            assert_eq!(exponent_above(power_of_two(e)), e + 1);
        }
    }

    #[test]
    fn flow_warp_is_bilinear_sampling_with_border_padding() {
        let x = Tensor::randn([2, 3, 9, 11], (Kind::Float, Device::Cpu));
        // Whole, fractional and out-of-picture displacements.
        let flow = Tensor::randn([2, 2, 9, 11], (Kind::Float, Device::Cpu)) * 4.0;
        let gx = Tensor::arange(11, (Kind::Float, Device::Cpu)).view([1, 1, 11]) + flow.select(1, 0);
        let gy = Tensor::arange(9, (Kind::Float, Device::Cpu)).view([1, 9, 1]) + flow.select(1, 1);
        let grid = Tensor::stack(&[gx * (2.0 / 10.0) - 1.0, gy * (2.0 / 8.0) - 1.0], 3);
        let reference = x.grid_sampler(&grid, 0, 1, true);
        let err = (flow_warp(&x, &flow) - reference).abs().max().double_value(&[]);
        assert!(err < 1e-5, "differs from grid_sampler by {err}");
        // No flow is the identity.
        assert!(flow_warp(&x, &flow.zeros_like()).equal(&x));
    }

    #[test]
    fn exact_pointwise_conv_is_a_1x1_conv_and_ignores_the_thread_count() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let layer = ExactPointwiseConv::new(vs.root(), 96, 64, false);
        // Two images, and a non-contiguous view as the decoder's narrowed tensors can be.
        let x = Tensor::randn([2, 17, 96, 23], (tch::Kind::Float, tch::Device::Cpu)).transpose(1, 2);
        let reference = x.conv2d(&layer.ws, Some(&layer.bs), [1, 1], [0, 0], [1, 1], 1);
        let _threads = crate::model::THREAD_COUNT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let threads = tch::get_num_threads();
        tch::set_num_threads(1);
        let one = layer.forward(&x);
        tch::set_num_threads(2);
        let two = layer.forward(&x);
        tch::set_num_threads(threads);
        assert_eq!(one.size(), [2, 64, 17, 23]);
        let err = (&one - &reference).abs().max().double_value(&[]);
        assert!(err < 1e-5, "differs from the 1×1 convolution by {err}");
        assert!(one.equal(&two), "1 and 2 threads give different outputs");
    }
}
