//! Reading real clips into tensors through GStreamer (decodebin → RGB → appsink).
//! Used by training and evaluation; the codec engine itself never touches GStreamer.

use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use std::path::Path;
use tch::{Kind, Tensor};

/// Decoded frames of one clip: u8 tensor (T, 3, H, W), RGB.
pub struct Clip {
    pub frames: Tensor,
    pub fps_n: i32,
    pub fps_d: i32,
}

impl Clip {
    pub fn len(&self) -> i64 {
        self.frames.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn height(&self) -> i64 {
        self.frames.size()[2]
    }

    pub fn width(&self) -> i64 {
        self.frames.size()[3]
    }

    /// Frames `range` as float (N,3,H,W) in [0,1].
    pub fn float_frames(&self, start: i64, count: i64) -> Tensor {
        self.frames.narrow(0, start, count).to_kind(Kind::Float) / 255.0
    }
}

/// Decodes up to `max_frames` frames (all when `None`) of a clip, optionally scaled to `size`
/// with square pixels. The picture is stretched to `size`, never letterboxed: carphone's
/// non-square pixels made videoscale add black bars at its own size.
pub fn load_clip(path: &Path, max_frames: Option<usize>, size: Option<(i32, i32)>) -> Result<Clip> {
    gst::init()?;
    if !path.exists() {
        bail!("clip {} does not exist", path.display());
    }
    let caps = match size {
        Some((w, h)) => {
            format!("video/x-raw,format=RGB,width={w},height={h},pixel-aspect-ratio=1/1")
        }
        None => "video/x-raw,format=RGB".to_string(),
    };
    let desc =
        format!("filesrc name=src ! decodebin ! videoconvert ! videoscale add-borders=false ! {caps} ! appsink name=sink sync=false");
    let pipeline = gst::parse::launch(&desc)?.downcast::<gst::Pipeline>().map_err(|_| anyhow!("not a pipeline"))?;
    pipeline.by_name("src").unwrap().set_property("location", path.to_str().context("non-UTF-8 path")?);
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).context("starting the decode pipeline")?;
    let result = pull_frames(&pipeline, &sink, max_frames);
    pipeline.set_state(gst::State::Null)?;
    let (frames, info) = result.with_context(|| format!("decoding {}", path.display()))?;
    let info = info.context("clip has no video frames")?;
    Ok(Clip { frames: Tensor::stack(&frames, 0), fps_n: info.fps().numer(), fps_d: info.fps().denom() })
}

fn pull_frames(
    pipeline: &gst::Pipeline,
    sink: &gst_app::AppSink,
    max_frames: Option<usize>,
) -> Result<(Vec<Tensor>, Option<gst_video::VideoInfo>)> {
    let mut frames = Vec::new();
    let mut info = None;
    let bus = pipeline.bus().unwrap();
    loop {
        if max_frames.is_some_and(|m| frames.len() >= m) {
            break;
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                bail!("{} ({:?})", e.error(), e.debug());
            }
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) else {
            if sink.is_eos() {
                break;
            }
            bail!("timed out waiting for a frame");
        };
        let vinfo = gst_video::VideoInfo::from_caps(sample.caps().context("sample without caps")?)?;
        let buffer = sample.buffer().context("sample without buffer")?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &vinfo)?;
        let (w, h) = (vinfo.width() as usize, vinfo.height() as usize);
        let stride = vinfo.stride()[0] as usize;
        let data = frame.plane_data(0)?;
        let mut packed = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            packed.extend_from_slice(&data[row * stride..row * stride + w * 3]);
        }
        frames.push(Tensor::from_slice(&packed).view([h as i64, w as i64, 3]).permute([2, 0, 1]).contiguous());
        info = Some(vinfo);
    }
    Ok((frames, info))
}

/// The per-user cache that `scripts/fetch_assets.sh` fills (`$GVC_CACHE`, default `~/.cache/gvc`).
pub fn cache_dir() -> std::path::PathBuf {
    match std::env::var_os("GVC_CACHE") {
        Some(dir) => dir.into(),
        None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/gvc"),
    }
}

/// The real clips fetched at setup.
pub fn clip_dir() -> std::path::PathBuf {
    cache_dir().join("clips")
}

/// The converted third-party weights (SpyNet, LPIPS, DISTS, I3D).
pub fn weights_dir() -> std::path::PathBuf {
    cache_dir().join("weights")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_a_clip_to_its_own_size_changes_nothing() {
        let path = clip_dir().join("carphone_pristine.mp4");
        let native = load_clip(&path, Some(2), None).unwrap();
        let scaled = load_clip(&path, Some(2), Some((native.width() as i32, native.height() as i32))).unwrap();
        assert!(native.frames.equal(&scaled.frames), "scaled frames differ (letterboxed?)");
    }
}
