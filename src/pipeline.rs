//! Running frames through GStreamer encoders and decoders (gvc, x264, x265) for the demo,
//! the evaluation and the benchmarks: `appsrc ! <encoder> ! filesink`, then
//! `filesrc ! <decoder> ! videoconvert ! RGB appsink`.

use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use std::path::Path;
use std::time::Instant;
use tch::Tensor;

pub fn run_to_eos(pipeline: &gst::Pipeline) -> Result<()> {
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().unwrap();
    let result = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(3600)) else { break Err(anyhow!("timeout")) };
        match msg.view() {
            gst::MessageView::Eos(..) => break Ok(()),
            gst::MessageView::Error(e) => break Err(anyhow!("{} ({:?})", e.error(), e.debug())),
            _ => {}
        }
    };
    pipeline.set_state(gst::State::Null)?;
    result
}

fn launch(desc: &str) -> Result<gst::Pipeline> {
    gst::parse::launch(desc)
        .with_context(|| format!("pipeline {desc}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))
}

/// Encodes u8 RGB frames (T,3,H,W) with `encoder` (a gst-launch fragment taking raw video)
/// into `out`; returns the encode wall time in seconds.
pub fn encode_frames(frames: &Tensor, fps: (i32, i32), encoder: &str, out: &Path) -> Result<f64> {
    let (n, _, h, w) = frames.size4()?;
    let pipeline = launch(&format!(
        "appsrc name=src format=time ! videoconvert ! {encoder} ! filesink location={}",
        out.display()
    ))?;
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w as u32, h as u32)
        .fps(gst::Fraction::new(fps.0, fps.1))
        .build()?;
    src.set_caps(Some(&info.to_caps()?));
    src.set_property("max-bytes", 0u64);
    let frame_dur = gst::ClockTime::SECOND.mul_div_floor(fps.1 as u64, fps.0.max(1) as u64).unwrap();
    for t in 0..n {
        let rgb = frames.get(t).permute([1, 2, 0]).contiguous();
        let mut buf = gst::Buffer::from_mut_slice(Vec::<u8>::try_from(rgb.flatten(0, -1))?);
        let b = buf.get_mut().unwrap();
        b.set_pts(frame_dur * t as u64);
        b.set_duration(frame_dur);
        src.push_buffer(buf)?;
    }
    src.end_of_stream()?;
    let t0 = Instant::now();
    run_to_eos(&pipeline).with_context(|| format!("encoding with {encoder}"))?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Decodes `file` with `decoder` (a gst-launch fragment from the file bytes to raw video);
/// returns (N,3,H,W) float RGB in [0,1] and the decode wall time in seconds.
pub fn decode_file(file: &Path, decoder: &str) -> Result<(Tensor, f64)> {
    let pipeline = launch(&format!(
        "filesrc location={} ! {decoder} ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
        file.display()
    ))?;
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Tensor>::new()));
    let f2 = frames.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let info = gst_video::VideoInfo::from_caps(sample.caps().ok_or(gst::FlowError::Error)?)
                    .map_err(|_| gst::FlowError::Error)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                    .map_err(|_| gst::FlowError::Error)?;
                f2.lock().unwrap().push(crate::video::frame_to_tensor(&frame).map_err(|_| gst::FlowError::Error)?);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let t0 = Instant::now();
    run_to_eos(&pipeline).with_context(|| format!("decoding with {decoder}"))?;
    let elapsed = t0.elapsed().as_secs_f64();
    let frames = frames.lock().unwrap();
    if frames.is_empty() {
        bail!("{decoder} produced no frames");
    }
    Ok((Tensor::cat(&frames, 0), elapsed))
}
