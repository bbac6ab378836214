//! Diffusion decoder benchmarks (prints, never asserts), engine level on real clips:
//! no diffusion vs diffusion (DiffVC Table 5 rows A/B), TDIR off (D = DS) vs on (D = DS/2),
//! and the right vs a wrong QP prompt. Every row decodes the same bits.
//!
//! `gvc-bench-diffusion [clip] [frames] [DS]`

use anyhow::Result;
use gstgvc::clips::{clip_dir, load_clip};
use gstgvc::codec::bitstream::FrameType;
use gstgvc::codec::session::{DecoderSession, EncoderParams, EncoderSession};
use gstgvc::metrics::{psnr, LpipsMetric};
use gstgvc::model::gvc::GvcModel;
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Tensor};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let clip_name = args.next().unwrap_or_else(|| "carphone_pristine.mp4".into());
    let frames: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let ds: u8 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let model = Arc::new(GvcModel::load(&GvcModel::resolve(&gstgvc::video::default_model())?, Device::Cpu)?);
    let clip = load_clip(&clip_dir().join(&clip_name), Some(frames), None)?;
    let n = clip.len();
    let reference = clip.float_frames(0, n);
    let lpips = LpipsMetric::new(Device::Cpu)?;
    println!(
        "{clip_name}: {n} frames {}x{}, DS = {ds}, threads {}",
        clip.width(),
        clip.height(),
        tch::get_num_threads()
    );
    println!("| qp | decoder | bpp | PSNR | LPIPS | tLP | ms / P-frame | network steps / P-frame |");
    println!("|---|---|---|---|---|---|---|---|");
    for qp in 0..model.config.codec.num_qps as u8 {
        let params = EncoderParams {
            width: clip.width() as u32,
            height: clip.height() as u32,
            fps_n: clip.fps_n as u32,
            fps_d: clip.fps_d as u32,
            intra_period: 32,
            qp,
            diffusion_steps: ds,
            independent_steps: ds,
        };
        let mut enc = EncoderSession::new(model.clone(), &params)?;
        let stream: Vec<Vec<u8>> =
            (0..n).map(|t| enc.encode(&clip.float_frames(t, 1), false).map(|e| e.data)).collect::<Result<_>>()?;
        let bpp = stream.iter().map(Vec::len).sum::<usize>() as f64 * 8.0 / (n * clip.width() * clip.height()) as f64;
        let wrong = if qp == 0 { model.config.codec.num_qps as u8 - 1 } else { 0 };
        let variants: [(&str, u8, u8, Option<u8>); 4] = [
            ("no diffusion (A)", 0, 0, None),
            ("diffusion, TDIR off (D = DS)", ds, ds, None),
            ("diffusion, TDIR on (D = DS/2)", ds, (ds / 2).max(1), None),
            ("TDIR on, wrong QP prompt", ds, (ds / 2).max(1), Some(wrong)),
        ];
        for (name, s, d, prompt) in variants {
            let mut dec = DecoderSession::new(model.clone());
            dec.diffusion_steps = Some(s);
            dec.independent_steps = Some(d);
            dec.prompt_qp = prompt;
            let (mut p_time, mut p_count, mut p_steps) = (0.0, 0, 0);
            let mut out = Vec::new();
            for au in &stream {
                let t0 = Instant::now();
                let f = dec.decode(au)?;
                if f.frame_type == FrameType::Inter {
                    p_time += t0.elapsed().as_secs_f64();
                    p_count += 1;
                    p_steps += f.stats.network_steps;
                }
                out.push(f.picture);
            }
            let decoded = Tensor::cat(&out, 0);
            println!(
                "| {qp} | {name} | {bpp:.4} | {:.2} | {:.4} | {:.4} | {:.1} | {:.2} |",
                psnr(&reference, &decoded),
                lpips.mean(&reference, &decoded),
                lpips.tlp(&reference, &decoded),
                1000.0 * p_time / p_count.max(1) as f64,
                p_steps as f64 / p_count.max(1) as f64
            );
        }
    }
    Ok(())
}
