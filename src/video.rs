//! Raw video frames ↔ tensors, and the settings the elements share (device, precision, model).

use crate::model::gvc::GvcModel;
use crate::model::Precision;
use anyhow::{bail, Context, Result};
use gst_video::prelude::*;
use gst_video::VideoFormat;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Raw formats the encoder takes; the decoder outputs RGB.
pub const ENCODER_FORMATS: [VideoFormat; 4] =
    [VideoFormat::Rgb, VideoFormat::Rgbx, VideoFormat::Rgba, VideoFormat::I420];

/// The default model folder under `models/`.
pub const DEFAULT_MODEL: &str = "gvc-small";

pub const DEFAULT_DEVICE: &str = "auto";

pub const DEFAULT_PRECISION: &str = "auto";

/// The `model` property both elements have.
pub fn model_pspec() -> gst::glib::ParamSpec {
    gst::glib::ParamSpecString::builder("model")
        .nick("Model")
        .blurb("Model folder (config.json + weights.safetensors), or the name of one under models/; $GVC_MODEL overrides the default")
        .default_value(Some(DEFAULT_MODEL))
        .mutable_ready()
        .build()
}

/// The `device` property both elements have.
pub fn device_pspec() -> gst::glib::ParamSpec {
    gst::glib::ParamSpecString::builder("device")
        .nick("Device")
        .blurb("auto (CUDA when libtorch sees a GPU, else CPU), cpu or cuda")
        .default_value(Some(DEFAULT_DEVICE))
        .mutable_ready()
        .build()
}

/// The `precision` property both elements have.
pub fn precision_pspec() -> gst::glib::ParamSpec {
    gst::glib::ParamSpecString::builder("precision")
        .nick("Precision")
        .blurb(&format!(
            "Number format of the latent decoder and the denoiser (the codec is always f32): {}",
            Precision::CHOICES
        ))
        .default_value(Some(DEFAULT_PRECISION))
        .mutable_ready()
        .build()
}

/// The model an element uses when its `model` property is not set: `$GVC_MODEL` if set
/// (lets playbin/decodebin pipelines pick a model), else [`DEFAULT_MODEL`].
pub fn default_model() -> String {
    std::env::var("GVC_MODEL").unwrap_or_else(|_| DEFAULT_MODEL.to_string())
}

pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                bail!("device=cuda requested but libtorch sees no CUDA device")
            }
        }
        other => bail!("unknown device {other:?} (auto, cpu or cuda)"),
    }
}

/// Loaded models shared by every element instance in the process, per folder, device and
/// precision.
pub fn shared_model(name_or_path: &str, device: Device, precision: Precision) -> Result<Arc<GvcModel>> {
    type Key = (std::path::PathBuf, String, Precision);
    static MODELS: Lazy<Mutex<HashMap<Key, Arc<GvcModel>>>> = Lazy::new(Default::default);
    let dir = GvcModel::resolve(name_or_path)?;
    let key = (dir.clone(), format!("{device:?}"), precision);
    let mut models = MODELS.lock();
    if let Some(m) = models.get(&key) {
        return Ok(m.clone());
    }
    let model = GvcModel::load(&dir, device).with_context(|| format!("loading model {}", dir.display()))?;
    let model = Arc::new(model.with_precision(precision));
    models.insert(key, model.clone());
    Ok(model)
}

/// A mapped raw frame → (1,3,H,W) float RGB in [0,1].
pub fn frame_to_tensor(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> Result<Tensor> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let plane = |i: u32, pw: usize, ph: usize, bpp: usize| -> Result<Tensor> {
        let stride = frame.plane_stride()[i as usize] as usize;
        let data = frame.plane_data(i)?;
        let mut packed = Vec::with_capacity(pw * ph * bpp);
        for row in 0..ph {
            packed.extend_from_slice(&data[row * stride..row * stride + pw * bpp]);
        }
        Ok(Tensor::from_slice(&packed).view([ph as i64, pw as i64, bpp as i64]))
    };
    let rgb = match frame.format() {
        VideoFormat::Rgb => plane(0, w, h, 3)?,
        VideoFormat::Rgbx | VideoFormat::Rgba => plane(0, w, h, 4)?.narrow(2, 0, 3),
        VideoFormat::I420 => {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let y = plane(0, w, h, 1)?.to_kind(Kind::Float).permute([2, 0, 1]).unsqueeze(0);
            let up = |t: Tensor| {
                let t = t.to_kind(Kind::Float).permute([2, 0, 1]).unsqueeze(0);
                t.upsample_nearest2d([2 * ch as i64, 2 * cw as i64], None, None)
                    .narrow(2, 0, h as i64)
                    .narrow(3, 0, w as i64)
            };
            let (u, v) = (up(plane(1, cw, ch, 1)?) - 128.0, up(plane(2, cw, ch, 1)?) - 128.0);
            // BT.601 limited range.
            let yy = (y - 16.0) * 1.164_383_6;
            let r = &yy + &v * 1.596_026_8;
            let g = &yy - &u * 0.391_762_3 - &v * 0.812_967_6;
            let b = &yy + &u * 2.017_232_1;
            return Ok((Tensor::cat(&[r, g, b], 1) / 255.0).clamp(0.0, 1.0));
        }
        other => bail!("unsupported input format {other:?}"),
    };
    Ok(rgb.permute([2, 0, 1]).unsqueeze(0).to_kind(Kind::Float) / 255.0)
}

/// (1,3,H,W) in [0,1] → packed RGB bytes.
pub fn tensor_to_rgb_bytes(picture: &Tensor) -> Vec<u8> {
    let t = (picture.squeeze_dim(0).permute([1, 2, 0]) * 255.0).round().clamp(0.0, 255.0).to_kind(Kind::Uint8);
    Vec::try_from(t.to_device(Device::Cpu).contiguous().flatten(0, -1)).unwrap()
}

/// Writes packed RGB into a mapped RGB output frame, honouring its stride.
pub fn write_rgb(frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, rgb: &[u8]) -> Result<()> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data_mut(0)?;
    for row in 0..h {
        data[row * stride..row * stride + w * 3].copy_from_slice(&rgb[row * w * 3..(row + 1) * w * 3]);
    }
    Ok(())
}
