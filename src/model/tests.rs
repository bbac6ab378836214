//! Numeric checks of the third-party weights converted at setup.

use super::lpips::{Backbone, Lpips};
use super::spynet::SpyNet;
use super::{layers::flow_warp, load_pretrained};
use crate::clips::{clip_dir, load_clip};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn psnr(a: &Tensor, b: &Tensor) -> f64 {
    let mse = (a - b).square().mean(Kind::Float).double_value(&[]);
    -10.0 * mse.log10()
}

#[test]
fn spynet_recovers_a_known_shift_on_a_real_frame() {
    let clip = load_clip(&clip_dir().join("carphone_pristine.mp4"), Some(1), None).unwrap();
    let frame = clip.float_frames(0, 1);
    let (_, net) = load_pretrained("spynet.safetensors", Device::Cpu, SpyNet::new).unwrap();
    // Content moved by (dx, dy) = (3, -2): shifted(x, y) = frame(x - 3, y + 2).
    let shifted = frame.roll([-2, 3], [2, 3]);
    let flow = tch::no_grad(|| net.flow(&shifted, &frame));
    let inner = |t: &Tensor| t.narrow(2, 16, 112).narrow(3, 16, 144);
    let median = |c: i64| inner(&flow).select(1, c).flatten(0, -1).median().double_value(&[]);
    let (fx, fy) = (median(0), median(1));
    assert!((fx + 3.0).abs() < 0.15 && (fy - 2.0).abs() < 0.15, "median flow ({fx:.3}, {fy:.3})");
    let warped = flow_warp(&frame, &flow);
    let before = psnr(&inner(&frame), &inner(&shifted));
    let after = psnr(&inner(&warped), &inner(&shifted));
    assert!(after > before + 10.0, "warping did not help: {before:.2} dB -> {after:.2} dB");
}

/// The LPIPS example images: copied into the cache by setup from the workplace's
/// `shared/testdata/lpips` (`$GVC_LPIPS_TESTDATA` points elsewhere).
fn testdata(name: &str) -> Tensor {
    let dir = std::env::var_os("GVC_LPIPS_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::clips::cache_dir().join("testdata/lpips"));
    let path = dir.join(name);
    assert!(path.exists(), "{} missing: run scripts/setup.sh where shared/testdata/lpips exists", path.display());
    load_clip(&path, Some(1), None).unwrap().float_frames(0, 1)
}

#[test]
fn lpips_alexnet_matches_the_published_distances() {
    let (_, lpips) =
        load_pretrained("lpips_alexnet.safetensors", Device::Cpu, |p| Lpips::new(p, Backbone::AlexNet)).unwrap();
    let (r, p0, p1) = (testdata("ex_ref.png"), testdata("ex_p0.png"), testdata("ex_p1.png"));
    let d = |a: &Tensor, b: &Tensor| tch::no_grad(|| lpips.distance(a, b)).double_value(&[0]);
    let (d0, d1) = (d(&r, &p0), d(&r, &p1));
    assert!((d0 - 0.7219).abs() < 2e-3, "d(ref, p0) = {d0}");
    assert!((d1 - 0.1376).abs() < 2e-3, "d(ref, p1) = {d1}");
    assert!(d(&r, &r).abs() < 1e-6);
}

#[test]
fn lpips_vgg16_orders_degradations() {
    let (_, lpips) =
        load_pretrained("lpips_vgg16.safetensors", Device::Cpu, |p| Lpips::new(p, Backbone::Vgg16)).unwrap();
    let clip = load_clip(&clip_dir().join("carphone_pristine.mp4"), Some(1), None).unwrap();
    let x = clip.float_frames(0, 1);
    let mild = (&x + x.randn_like() * 0.02).clamp(0.0, 1.0);
    let strong = (&x + x.randn_like() * 0.15).clamp(0.0, 1.0);
    let d = |b: &Tensor| tch::no_grad(|| lpips.distance(&x, b)).double_value(&[0]);
    assert!(d(&x).abs() < 1e-6);
    assert!(d(&mild) > 0.0 && d(&mild) < d(&strong), "{} vs {}", d(&mild), d(&strong));
}
