#![doc = include_str!("../docs/usage/bit_split.md")]

use anyhow::Result;
use gstgvc::cli::{args_or_usage, KeyValues};
use gstgvc::clips::{clip_dir, load_clip};
use gstgvc::codec::bitstream::FrameType;
use gstgvc::codec::session::{EncoderParams, EncoderSession};
use gstgvc::metrics::psnr;
use gstgvc::model::gvc::GvcModel;
use std::collections::BTreeMap;
use std::sync::Arc;
use tch::Device;

fn main() -> Result<()> {
    let o = KeyValues::parse(args_or_usage(include_str!("../docs/usage/bit_split.md")))?;
    let clip_name = o.string("clip", "carphone_pristine.mp4");
    let frames: usize = o.value("frames", 32)?;
    let intra_period: u32 = o.value("intra-period", 32)?;
    let qps: Vec<u8> = o.list("qps")?.unwrap_or(vec![3, 4]);
    let adaptive_intra: bool = o.value("adaptive-intra", true)?;
    let intra_qp_offset: Option<u8> = o.optional("intra-qp-offset")?;
    let rounding_offset: f64 = o.value("rounding-offset", 0.5)?;
    o.finish()?;
    let model =
        Arc::new(GvcModel::load(&GvcModel::resolve(&gstgvc::video::default_model())?, Device::cuda_if_available())?);
    let clip = load_clip(&clip_dir().join(&clip_name), Some(frames), None)?;
    let n = clip.len() as usize;
    let pixels = (clip.width() * clip.height()) as f64;
    for qp in qps {
        let params = EncoderParams {
            width: clip.width() as u32,
            height: clip.height() as u32,
            fps_n: clip.fps_n as u32,
            fps_d: clip.fps_d as u32,
            intra_period,
            qp,
            diffusion_steps: 4,
            independent_steps: 4,
            adaptive_intra,
            intra_qp_offset,
            rate_target: None,
            rounding_offset,
            prompt_search: None,
            diffusion_mask: false,
        };
        let mut enc = EncoderSession::new(model.clone(), &params)?;
        println!("\n{clip_name} qp {qp}: {n} frames {}x{}, bytes per part (ideal)", clip.width(), clip.height());
        println!("| frame | type | unit bytes | parts | PSNR |");
        println!("|---|---|---|---|---|");
        // (frame type, part) → sum of bytes (a checkerboard codes a part in two passes)
        let mut sums: BTreeMap<(&str, &str), f64> = BTreeMap::new();
        let mut units: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut psnr_sum = 0.0;
        for t in 0..n {
            let x = clip.float_frames(t as i64, 1);
            let e = enc.encode(&x, false)?;
            let kind = if e.frame_type == FrameType::Intra { "I" } else { "P" };
            let parts: Vec<String> = e
                .bit_split
                .iter()
                .map(|p| {
                    format!("{} {:.1} ({} surprises {:.1})", p.part, p.bits / 8.0, p.surprises, p.surprise_bits / 8.0)
                })
                .collect();
            for p in &e.bit_split {
                *sums.entry((kind, p.part)).or_default() += p.bits / 8.0;
            }
            let u = units.entry(kind).or_default();
            u.0 += e.data.len();
            u.1 += 1;
            let frame_psnr = psnr(&e.reconstruction, &x.to_device(e.reconstruction.device()));
            psnr_sum += frame_psnr;
            println!("| {t} | {kind} | {} | {} | {frame_psnr:.2} |", e.data.len(), parts.join(", "));
        }
        let total: usize = units.values().map(|u| u.0).sum();
        println!(
            "{clip_name} qp {qp}: {:.4} bpp, mean PSNR {:.2} dB, {} I-frames",
            total as f64 * 8.0 / (pixels * n as f64),
            psnr_sum / n as f64,
            units.get("I").map_or(0, |u| u.1)
        );
        for (kind, (bytes, count)) in &units {
            let parts: Vec<String> = sums
                .iter()
                .filter(|((k, _), _)| k == kind)
                .map(|((_, p), b)| format!("{p} {:.1}", b / *count as f64))
                .collect();
            let mean = *bytes as f64 / *count as f64;
            println!(
                "{kind}: {count} frames, mean {mean:.1} bytes ({:.4} bpp): {}",
                mean * 8.0 / pixels,
                parts.join(", ")
            );
        }
    }
    Ok(())
}
