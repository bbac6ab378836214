#![doc = include_str!("../../docs/usage/gvc-eval.md")]

use anyhow::{Context, Result};
use gstgvc::cli::{args_or_usage, KeyValues};
use gstgvc::clips::{clip_dir, load_clip};
use gstgvc::evaluation::bd_rate;
use gstgvc::metrics::{frechet_distance, ms_ssim, psnr, DistsMetric, FvdFeatures, LpipsMetric};
use gstgvc::model::gvc::GvcModel;
use gstgvc::model::Precision;
use gstgvc::pipeline::{decode_file, encode_frames};
use std::fmt::Write as _;
use std::path::PathBuf;
use tch::Device;

/// Clips and the size they are evaluated at (scaled so every run fits the CPU budget).
const CLIPS: [(&str, i32, i32); 4] =
    [("carphone_pristine.mp4", 176, 144), ("bikes.mp4", 320, 136), ("vtest.avi", 384, 288), ("Megamind.avi", 360, 264)];

struct Row {
    clip: String,
    codec: String,
    setting: String,
    bpp: f64,
    psnr: f64,
    ms_ssim: f64,
    lpips: f64,
    dists: f64,
    /// Over this clip's 16-frame segments only: a noisy figure (see the README).
    fvd: Option<f64>,
    tlp: f64,
    enc_fps: f64,
    dec_fps: f64,
}

fn main() -> Result<()> {
    let o = KeyValues::parse(args_or_usage(include_str!("../../docs/usage/gvc-eval.md")))?;
    let frames: usize = o.value("frames", 32)?;
    let out_dir = PathBuf::from(o.string("out", "out/eval"));
    let model_dir = GvcModel::resolve(&o.string("model", &gstgvc::video::default_model()))?;
    let ds = o.string("diffusion-steps", "-1");
    let d = o.string("independent-steps", "-1");
    let baselines = o.string("baselines", "x264,x265");
    let gvcenc_extra = o.string("gvcenc", "");
    let precision = o.string("precision", "auto");
    // Refused here, not by the first pipeline.
    let resolved = Precision::resolve(&precision, Device::Cpu)?;
    let wanted: Option<Vec<String>> = o.list("clips")?;
    let fvd_on = match o.string("fvd", "on").as_str() {
        "on" => true,
        "off" => false,
        other => anyhow::bail!("--fvd on|off, not {other}"),
    };
    o.finish()?;
    std::fs::create_dir_all(&out_dir)?;
    gst::init()?;
    gstgvc::plugin_register_static()?;
    let model = GvcModel::load(&model_dir, Device::Cpu)?;
    let num_qps = model.config.codec.num_qps;
    drop(model);
    let lpips = LpipsMetric::new(Device::Cpu)?;
    let dists = DistsMetric::new(Device::Cpu)?;
    let fvd = if fvd_on { Some(FvdFeatures::new(Device::Cpu)?) } else { None };
    let intra_period = 32;
    let mut rows = Vec::new();
    for (name, w, h) in CLIPS {
        if wanted.as_ref().is_some_and(|c| !c.iter().any(|x| x == name)) {
            continue;
        }
        let clip = load_clip(&clip_dir().join(name), Some(frames), Some((w, h)))?;
        let reference = clip.float_frames(0, clip.len());
        let reference_fvd = fvd.as_ref().map(|f| f.features(&reference));
        let n = clip.len();
        let fps = (clip.fps_n, clip.fps_d);
        let mut runs: Vec<(String, String, String, String)> = Vec::new();
        for qp in 0..num_qps {
            runs.push((
                "gvc".into(),
                format!("qp={qp}"),
                format!(
                    "gvcenc model={} qp={qp} intra-period={intra_period} precision={precision} {gvcenc_extra}",
                    model_dir.display()
                ),
                format!(
                    "gvcparse ! gvcdec model={} diffusion-steps={ds} independent-steps={d} precision={precision}",
                    model_dir.display()
                ),
            ));
        }
        if baselines.contains("x264") {
            let x264 = |rate_control: String| {
                format!("video/x-raw,format=I420 ! x264enc speed-preset=medium key-int-max={intra_period} {rate_control} ! video/x-h264,stream-format=byte-stream ! h264parse")
            };
            for q in [50, 46, 42, 38, 34, 30] {
                runs.push((
                    "x264".into(),
                    format!("quantizer={q}"),
                    x264(format!("pass=quant quantizer={q}")),
                    "h264parse ! avdec_h264".into(),
                ));
            }
            // x264's rate floor, a point of its own (another rate control, so outside the
            // quantizer curve and its BD-rate): GStreamer's x264enc stops at quantizer 50, but
            // rate control at the lowest bitrate it takes may raise the quantizer to qp-max,
            // whose highest value zeroes coefficients beyond H.264's QP 51.
            runs.push((
                "x264-floor".into(),
                "bitrate=1kbps".into(),
                x264("pass=cbr bitrate=1 qp-max=63".into()),
                "h264parse ! avdec_h264".into(),
            ));
        }
        if baselines.contains("x265") {
            for q in [51, 46, 42, 38, 34] {
                runs.push((
                    "x265".into(),
                    format!("qp={q}"),
                    format!("video/x-raw,format=I420 ! x265enc speed-preset=medium key-int-max={intra_period} qp={q} ! video/x-h265,stream-format=byte-stream ! h265parse"),
                    "h265parse ! avdec_h265".into(),
                ));
            }
        }
        for (codec, setting, enc, dec) in runs {
            let file = out_dir.join(format!("{name}.{codec}.{}.bin", setting.replace('=', "")));
            let enc_time = encode_frames(&clip.frames, fps, &enc, &file)?;
            let (decoded, dec_time) = decode_file(&file, &dec)?;
            let bytes = std::fs::metadata(&file)?.len();
            anyhow::ensure!(decoded.size()[0] == n, "{codec} {setting}: {} of {n} frames decoded", decoded.size()[0]);
            let row = Row {
                clip: name.into(),
                codec: codec.clone(),
                setting,
                bpp: bytes as f64 * 8.0 / (n * w as i64 * h as i64) as f64,
                psnr: psnr(&reference, &decoded),
                ms_ssim: ms_ssim(&reference, &decoded),
                lpips: lpips.mean(&reference, &decoded),
                dists: dists.mean(&reference, &decoded),
                fvd: match (&fvd, &reference_fvd) {
                    (Some(f), Some(r)) => frechet_distance(r, &f.features(&decoded)).ok(),
                    _ => None,
                },
                tlp: lpips.tlp(&reference, &decoded),
                enc_fps: n as f64 / enc_time,
                dec_fps: n as f64 / dec_time,
            };
            eprintln!(
                "[eval] {} {} {}: {:.4} bpp, PSNR {:.2}, MS-SSIM {:.4}, LPIPS {:.4}, DISTS {:.4}, FVD {}, tLP {:.4}, enc {:.1} fps, dec {:.1} fps",
                row.clip,
                row.codec,
                row.setting,
                row.bpp,
                row.psnr,
                row.ms_ssim,
                row.lpips,
                row.dists,
                fmt_opt(row.fvd, 1),
                row.tlp,
                row.enc_fps,
                row.dec_fps
            );
            rows.push(row);
            std::fs::remove_file(&file).ok();
        }
    }
    write_outputs(&out_dir, &rows, frames, resolved, &gvcenc_extra)?;
    plot(&out_dir)?;
    Ok(())
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.decimals$}"))
}

/// Reads one metric of a row (None where it was not computed).
type Metric = fn(&Row) -> Option<f64>;

/// The metrics BD-rate is reported for: name and accessor.
const BD_METRICS: [(&str, Metric); 5] = [
    ("PSNR", |r| Some(r.psnr)),
    ("MS-SSIM", |r| Some(r.ms_ssim)),
    ("LPIPS", |r| Some(r.lpips)),
    ("DISTS", |r| Some(r.dists)),
    ("FVD", |r| r.fvd),
];

/// BD-rate of gvc against each baseline, per clip and metric (markdown).
fn bd_rate_table(rows: &[Row]) -> Result<String> {
    let mut md = String::from(
        "\nBD-rate of gvc (piecewise cubic, over the quality range both curves reach; negative = gvc needs fewer bits; n/a = no common range):\n\n| clip | anchor |",
    );
    for (m, _) in BD_METRICS {
        write!(md, " {m} |")?;
    }
    md += "\n|---|---|";
    md += &"---|".repeat(BD_METRICS.len());
    md += "\n";
    let mut clips: Vec<&str> = rows.iter().map(|r| r.clip.as_str()).collect();
    clips.dedup();
    for clip in clips {
        let points = |codec: &str, metric: Metric| -> Vec<(f64, f64)> {
            rows.iter()
                .filter(|r| r.clip == clip && r.codec == codec)
                .filter_map(|r| Some((r.bpp, metric(r)?)))
                .collect()
        };
        for anchor in ["x265", "x264"] {
            if !rows.iter().any(|r| r.clip == clip && r.codec == anchor) {
                continue;
            }
            write!(md, "| {clip} | {anchor} |")?;
            for (_, metric) in BD_METRICS {
                let v = bd_rate(&points(anchor, metric), &points("gvc", metric));
                write!(md, " {} |", v.map_or("n/a".into(), |v| format!("{v:+.1} %")))?;
            }
            md += "\n";
        }
    }
    Ok(md)
}

/// Rate–metric plots (PNG) from `results.csv`, drawn with matplotlib from the project venv.
fn plot(dir: &std::path::Path) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/plot_results.py"))
        .arg(dir)
        .status()
        .context("running scripts/plot_results.py (run scripts/setup.sh)")?;
    anyhow::ensure!(status.success(), "scripts/plot_results.py failed");
    Ok(())
}

fn write_outputs(
    dir: &std::path::Path,
    rows: &[Row],
    frames: usize,
    precision: Precision,
    gvcenc_extra: &str,
) -> Result<()> {
    let mut csv =
        String::from("clip,codec,setting,bpp,psnr_rgb,ms_ssim,lpips_alex,dists,fvd,tlp,encode_fps,decode_fps\n");
    let mut md = format!(
        "First {frames} frames per clip, intra period 32; bpp from file bytes; gvc's D and denoiser in {}.{}\n\n| clip | codec | setting | bpp | PSNR | MS-SSIM | LPIPS | DISTS | FVD | tLP | enc fps | dec fps |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        precision.name(),
        if gvcenc_extra.is_empty() { String::new() } else { format!(" gvcenc {gvcenc_extra}.") }
    );
    for r in rows {
        writeln!(
            csv,
            "{},{},{},{:.6},{:.3},{:.5},{:.5},{:.5},{},{:.5},{:.2},{:.2}",
            r.clip,
            r.codec,
            r.setting,
            r.bpp,
            r.psnr,
            r.ms_ssim,
            r.lpips,
            r.dists,
            r.fvd.map_or(String::new(), |v| format!("{v:.3}")),
            r.tlp,
            r.enc_fps,
            r.dec_fps
        )?;
        writeln!(
            md,
            "| {} | {} | {} | {:.4} | {:.2} | {:.4} | {:.4} | {:.4} | {} | {:.4} | {:.1} | {:.1} |",
            r.clip,
            r.codec,
            r.setting,
            r.bpp,
            r.psnr,
            r.ms_ssim,
            r.lpips,
            r.dists,
            fmt_opt(r.fvd, 1),
            r.tlp,
            r.enc_fps,
            r.dec_fps
        )?;
    }
    md += &bd_rate_table(rows)?;
    std::fs::write(dir.join("results.csv"), csv)?;
    std::fs::write(dir.join("results.md"), &md)?;
    println!("{md}");
    Ok(())
}
