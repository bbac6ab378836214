#![doc = include_str!("../docs/usage/autoencoder_check.md")]

use anyhow::{ensure, Context, Result};
use gstgvc::cli::{args_or_usage, KeyValues};
use gstgvc::clips::{clip_dir, load_clip};
use gstgvc::metrics::{ms_ssim, psnr, DistsMetric, LpipsMetric};
use gstgvc::model::gvc::GvcModel;
use gstgvc::model::{LatentAutoencoder, ModelConfig};
use std::time::Instant;
use tch::{nn, Device, Tensor};

fn main() -> Result<()> {
    let o = KeyValues::parse(args_or_usage(include_str!("../docs/usage/autoencoder_check.md")))?;
    let models: Vec<String> = o.list("models")?.unwrap_or_else(|| vec!["gvc-small".into(), "gvc-wide".into()]);
    let clips: Vec<String> =
        o.list("clips")?.unwrap_or_else(|| vec!["carphone_pristine.mp4".into(), "vtest.avi".into()]);
    let frames: usize = o.value("frames", 32)?;
    o.finish()?;
    let device = Device::cuda_if_available();
    let (lpips, dists) = (LpipsMetric::new(device)?, DistsMetric::new(device)?);
    println!("| model | clip | PSNR | MS-SSIM | LPIPS | DISTS | tLP | E ms/frame | D ms/frame |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for name in &models {
        let dir = GvcModel::resolve(name)?;
        let config = ModelConfig::load(&dir)?;
        let mut vs = nn::VarStore::new(device);
        let ae = LatentAutoencoder::new(vs.root() / "autoencoder", &config.autoencoder);
        let weights = dir.join("weights.safetensors");
        let missing = vs.load_partial(&weights).with_context(|| format!("loading {}", weights.display()))?;
        ensure!(missing.is_empty(), "{} lacks the autoencoder's {missing:?}", weights.display());
        vs.float();
        for clip_name in &clips {
            let clip = load_clip(&clip_dir().join(clip_name), Some(frames), None)?;
            let (reference, mut decoded, mut e_time, mut d_time) = (clip.float_frames(0, clip.len()), vec![], 0.0, 0.0);
            tch::no_grad(|| {
                for t in 0..clip.len() {
                    let x = clip.float_frames(t, 1).to_device(device);
                    let start = Instant::now();
                    let y = ae.encoder.encode(&LatentAutoencoder::pad_to_factor(&x));
                    let _ = y.sum(tch::Kind::Float).double_value(&[]);
                    let encoded = Instant::now();
                    let xr = ae.decoder.decode(&y);
                    let xr =
                        xr.narrow(2, 0, x.size()[2]).narrow(3, 0, x.size()[3]).clamp(0.0, 1.0).to_device(Device::Cpu);
                    // Frame 0 warms libtorch up; the times are over the others.
                    if t > 0 {
                        d_time += encoded.elapsed().as_secs_f64();
                        e_time += (encoded - start).as_secs_f64();
                    }
                    decoded.push(xr);
                }
            });
            let decoded = Tensor::cat(&decoded, 0);
            let n = (clip.len() - 1).max(1) as f64;
            println!(
                "| {name} | {clip_name} | {:.2} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1} | {:.1} |",
                psnr(&reference, &decoded),
                ms_ssim(&reference, &decoded),
                lpips.mean(&reference, &decoded),
                dists.mean(&reference, &decoded),
                lpips.tlp(&reference, &decoded),
                e_time / n * 1e3,
                d_time / n * 1e3
            );
        }
    }
    Ok(())
}
