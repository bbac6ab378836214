//! Building blocks shared by the networks.

use tch::nn::{self, Module};
use tch::Tensor;

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
/// The entropy path must give the encoder and the decoder the same means whatever their thread
/// counts, and the diffusion decode the same pictures. Parameters as `nn::Conv2D`'s.
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

/// 2× up-sampling by sub-pixel convolution.
#[derive(Debug)]
pub struct SubpelConv {
    conv: nn::Conv2D,
}

impl SubpelConv {
    pub fn new(p: nn::Path, cin: i64, cout: i64) -> Self {
        Self { conv: conv(p / "conv", cin, cout * 4, 3, 1) }
    }
}

impl Module for SubpelConv {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.conv.forward(xs).pixel_shuffle(2)
    }
}

/// Residual block (conv–LeakyReLU–conv) as in DCVC-DC's `ResBlock`.
#[derive(Debug)]
pub struct ResBlock {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
}

impl ResBlock {
    pub fn new(p: nn::Path, ch: i64) -> Self {
        Self { conv1: conv(&p / "conv1", ch, ch, 3, 1), conv2: conv(&p / "conv2", ch, ch, 3, 1) }
    }
}

impl Module for ResBlock {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let h = self.conv1.forward(&xs.leaky_relu());
        xs + self.conv2.forward(&h.leaky_relu())
    }
}

/// Backward warp of `x` by `flow` (N,2,H,W; channel 0 horizontal, in pixels), bilinear,
/// border padding, align_corners=True as in BasicVSR's `flow_warp`.
pub fn flow_warp(x: &Tensor, flow: &Tensor) -> Tensor {
    let (n, _, h, w) = x.size4().expect("4-D input");
    let opts = (x.kind(), x.device());
    let gx = Tensor::arange(w, opts).view([1, 1, w]).expand([n, h, w], true);
    let gy = Tensor::arange(h, opts).view([1, h, 1]).expand([n, h, w], true);
    let vx = (gx + flow.select(1, 0)) * (2.0 / ((w - 1).max(1)) as f64) - 1.0;
    let vy = (gy + flow.select(1, 1)) * (2.0 / ((h - 1).max(1)) as f64) - 1.0;
    let grid = Tensor::stack(&[vx, vy], 3);
    x.grid_sampler(&grid, 0, 1, true)
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
