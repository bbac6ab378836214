#![doc = include_str!("../../docs/usage/gvc-demo.md")]

use anyhow::{bail, Result};
use gstgvc::cli::args_or_usage;
use gstgvc::clips::{clip_dir, load_clip};
use gstgvc::metrics::{ms_ssim, psnr, LpipsMetric};
use gstgvc::model::gvc::GvcModel;
use gstgvc::model::Precision;
use gstgvc::pipeline::{decode_file, encode_frames};
use std::path::PathBuf;
use tch::{Device, Kind};

fn main() -> Result<()> {
    let mut args = args_or_usage(include_str!("../../docs/usage/gvc-demo.md")).into_iter();
    let clip_arg = args.next().unwrap_or_else(|| "carphone_pristine.mp4".into());
    let frames: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let qp: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let clip_path =
        if PathBuf::from(&clip_arg).exists() { PathBuf::from(&clip_arg) } else { clip_dir().join(&clip_arg) };
    gst::init()?;
    gstgvc::plugin_register_static()?;
    tch::set_num_threads(std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(2));

    let clip = load_clip(&clip_path, Some(frames), None)?;
    let (n, h, w) = (clip.len(), clip.height(), clip.width());
    let model_dir = GvcModel::resolve(&gstgvc::video::default_model())?;
    println!(
        "clip {} : {n} frames {w}x{h} @ {}/{} fps; model {}; D and denoiser in {} (the elements' precision=auto)",
        clip_path.display(),
        clip.fps_n,
        clip.fps_d,
        model_dir.display(),
        Precision::resolve(
            gstgvc::video::DEFAULT_PRECISION,
            gstgvc::video::parse_device(gstgvc::video::DEFAULT_DEVICE)?
        )?
        .name()
    );
    let out = std::env::temp_dir().join(format!("gvc-demo-{}.gvc", std::process::id()));

    let (enc_time, (decoded, dec_time)) = {
        let enc_time = encode_frames(
            &clip.frames,
            (clip.fps_n, clip.fps_d),
            &format!("gvcenc qp={qp} model={}", model_dir.display()),
            &out,
        )?;
        (enc_time, decode_file(&out, &format!("gvcparse ! gvcdec model={}", model_dir.display()))?)
    };
    let bytes = std::fs::metadata(&out)?.len();
    if decoded.size()[0] != n {
        bail!("decoded {} frames of {n}", decoded.size()[0]);
    }
    let reference = clip.float_frames(0, n);
    let lpips = LpipsMetric::new(Device::Cpu)?;
    let bpp = bytes as f64 * 8.0 / (n * w * h) as f64;
    println!("file {} : {bytes} bytes for {n} frames", out.display());
    println!("bpp      {bpp:.5}");
    println!("PSNR     {:.2} dB (RGB)", psnr(&reference, &decoded.to_kind(Kind::Float)));
    println!("MS-SSIM  {:.4}", ms_ssim(&reference, &decoded));
    println!("LPIPS    {:.4} (AlexNet)", lpips.mean(&reference, &decoded));
    println!("tLP      {:.4}", lpips.tlp(&reference, &decoded));
    println!(
        "speed    encode {:.2} fps, decode {:.2} fps (this machine, CPU threads {})",
        n as f64 / enc_time,
        n as f64 / dec_time,
        tch::get_num_threads()
    );
    std::fs::remove_file(&out).ok();
    Ok(())
}
