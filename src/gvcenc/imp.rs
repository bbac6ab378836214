use crate::codec::bitstream::FrameType;
use crate::codec::rate_control::RateTarget;
use crate::codec::session::{EncoderParams, EncoderSession};
use crate::gvcparse::src_caps_for;
use crate::model::Precision;
use crate::video::{
    default_model, device_pspec, frame_to_tensor, model_pspec, parse_device, precision_pspec, shared_model,
    DEFAULT_DEVICE, DEFAULT_PRECISION, ENCODER_FORMATS,
};
use gst::glib;
use gst::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;
use once_cell::sync::Lazy;
use parking_lot::Mutex;

static CAT: Lazy<gst::DebugCategory> =
    Lazy::new(|| gst::DebugCategory::new("gvcenc", gst::DebugColorFlags::empty(), Some("gvc encoder")));

const DEFAULT_QP: u32 = 1;
const DEFAULT_INTRA_PERIOD: u32 = 32;
const DEFAULT_DIFFUSION_STEPS: u32 = 4;
const DEFAULT_INDEPENDENT_STEPS: u32 = 2;
const DEFAULT_ADAPTIVE_INTRA: bool = true;
const DEFAULT_INTRA_QP_OFFSET: i32 = -1;
const DEFAULT_BITRATE: u32 = 0;
const DEFAULT_RATE_BUFFER: u32 = 1000;
const DEFAULT_ROUNDING_OFFSET: f64 = 0.5;
const DEFAULT_PROMPT_SEARCH: i32 = -1;
const DEFAULT_DIFFUSION_MASK: bool = false;

/// An int property whose -1 means unset, as the session takes it (`intra-qp-offset`: the
/// model's choice; `prompt-search`: no search).
fn unset_if_negative(property: i32) -> Option<u8> {
    u8::try_from(property).ok()
}

#[derive(Debug, Clone)]
struct Settings {
    qp: u32,
    intra_period: u32,
    diffusion_steps: u32,
    independent_steps: u32,
    adaptive_intra: bool,
    /// -1: the model's choice per QP.
    intra_qp_offset: i32,
    /// kbit/s; 0: constant QP.
    bitrate: u32,
    /// ms of the target rate.
    rate_buffer: u32,
    rounding_offset: f64,
    /// -1: no search.
    prompt_search: i32,
    diffusion_mask: bool,
    model: String,
    device: String,
    precision: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            qp: DEFAULT_QP,
            intra_period: DEFAULT_INTRA_PERIOD,
            diffusion_steps: DEFAULT_DIFFUSION_STEPS,
            independent_steps: DEFAULT_INDEPENDENT_STEPS,
            adaptive_intra: DEFAULT_ADAPTIVE_INTRA,
            intra_qp_offset: DEFAULT_INTRA_QP_OFFSET,
            bitrate: DEFAULT_BITRATE,
            rate_buffer: DEFAULT_RATE_BUFFER,
            rounding_offset: DEFAULT_ROUNDING_OFFSET,
            prompt_search: DEFAULT_PROMPT_SEARCH,
            diffusion_mask: DEFAULT_DIFFUSION_MASK,
            model: default_model(),
            device: DEFAULT_DEVICE.into(),
            precision: DEFAULT_PRECISION.into(),
        }
    }
}

struct State {
    session: EncoderSession,
    video_info: gst_video::VideoInfo,
}

#[derive(Default)]
pub struct GvcEnc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for GvcEnc {
    const NAME: &'static str = "GstGvcEnc";
    type Type = super::GvcEnc;
    type ParentType = gst_video::VideoEncoder;
}

impl ObjectImpl for GvcEnc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: Lazy<Vec<glib::ParamSpec>> = Lazy::new(|| {
            vec![
                glib::ParamSpecUInt::builder("qp")
                    .nick("QP index")
                    .blurb("Rate point of the model: 0 is the highest quality; the model defines how many exist")
                    .maximum(15)
                    .default_value(DEFAULT_QP)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("intra-period")
                    .nick("Intra period")
                    .blurb("Frames per GOP: an I-frame (with a sequence header) every this many frames")
                    .minimum(1)
                    .maximum(u16::MAX as u32)
                    .default_value(DEFAULT_INTRA_PERIOD)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("diffusion-steps")
                    .nick("Diffusion steps (DS)")
                    .blurb("Diffusion sampling steps per frame the decoder runs (0 = no diffusion)")
                    .maximum(64)
                    .default_value(DEFAULT_DIFFUSION_STEPS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("independent-steps")
                    .nick("Independent steps (D)")
                    .blurb("TDIR: network steps for P-frames after the first of a GOP; the other DS-D steps reuse the previous frame's")
                    .maximum(64)
                    .default_value(DEFAULT_INDEPENDENT_STEPS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("adaptive-intra")
                    .nick("Adaptive intra")
                    .blurb("Start a new GOP early (an I-frame instead of a P-frame) when a P-frame costs more bytes than the GOP's first P-frame and an I-frame plus a first P-frame cost no more than two such P-frames: scene cuts, drifted references")
                    .default_value(DEFAULT_ADAPTIVE_INTRA)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("intra-qp-offset")
                    .nick("Intra QP offset")
                    .blurb("Code I-frames this many rate points better than qp (down to QP 0): the P-frames of a GOP predict from its I-frame, so its quality carries through the GOP; -1 = the model's choice for the qp")
                    .minimum(-1)
                    .maximum(15)
                    .default_value(DEFAULT_INTRA_QP_OFFSET)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("bitrate")
                    .nick("Bitrate")
                    .blurb("Target bitrate in kbit/s: each frame's rate point and rounding offset are picked to hold it over rate-buffer, starting from qp (0 = every frame at qp). Between the model's rate points, about 2x apart in rate, the offsets 0.45 and 0.4 give two more steps")
                    .maximum(1_000_000)
                    .default_value(DEFAULT_BITRATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("rate-buffer")
                    .nick("Rate buffer")
                    .blurb("The bitrate mode's buffer in ms of the target rate: the bits spent may run half of it ahead of or behind the budget before the rate point moves. Larger: fewer rate-point changes, more short-term deviation from the target")
                    .minimum(100)
                    .maximum(60_000)
                    .default_value(DEFAULT_RATE_BUFFER)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("rounding-offset")
                    .nick("Rounding offset")
                    .blurb("How the encoder rounds code values around the entropy model's mean: sign(r)·floor(|r| + offset). 0.5 rounds to the nearest; less widens the zero bin (a dead zone), spending fewer bits for a little distortion. Not used in bitrate mode, which picks it per frame")
                    .minimum(0.0)
                    .maximum(0.5)
                    .default_value(DEFAULT_ROUNDING_OFFSET)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("prompt-search")
                    .nick("Prompt search")
                    .blurb("QP-based prompts tried per frame: the encoder runs the diffusion decoder under the prompts of the rate points up to this many above and below the frame's own, and without diffusion, and signals the choice closest to the source by LPIPS (one diffusion decode per tried prompt; needs diffusion-steps > 0). 0: the own prompt or no diffusion; -1: no search, every frame takes its own rate point's prompt")
                    .minimum(-1)
                    .maximum(7)
                    .default_value(DEFAULT_PROMPT_SEARCH)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("diffusion-mask")
                    .nick("Diffusion mask")
                    .blurb("Signal per 32x32 block whether the decoder shows the diffusion output or the codec's reconstruction: the blocks where the diffusion output is closer to the source by an LPIPS map (gvc format version 4). Runs the prompt search's diffusion decodes (prompt-search 0 when it is -1); needs diffusion-steps > 0")
                    .default_value(DEFAULT_DIFFUSION_MASK)
                    .mutable_ready()
                    .build(),
                model_pspec(),
                device_pspec(),
                precision_pspec(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock();
        match pspec.name() {
            "qp" => {
                s.qp = value.get().unwrap();
                if let Some(state) = self.state.lock().as_mut() {
                    if let Err(e) = state.session.set_qp(s.qp as u8) {
                        gst::warning!(CAT, imp = self, "{e:#}");
                    }
                }
            }
            "intra-period" => s.intra_period = value.get().unwrap(),
            "diffusion-steps" => s.diffusion_steps = value.get().unwrap(),
            "independent-steps" => s.independent_steps = value.get().unwrap(),
            "adaptive-intra" => s.adaptive_intra = value.get().unwrap(),
            "intra-qp-offset" => {
                s.intra_qp_offset = value.get().unwrap();
                if let Some(state) = self.state.lock().as_mut() {
                    state.session.set_intra_qp_offset(unset_if_negative(s.intra_qp_offset));
                }
            }
            "bitrate" => s.bitrate = value.get().unwrap(),
            "rate-buffer" => s.rate_buffer = value.get().unwrap(),
            "rounding-offset" => s.rounding_offset = value.get().unwrap(),
            "prompt-search" => s.prompt_search = value.get().unwrap(),
            "diffusion-mask" => s.diffusion_mask = value.get().unwrap(),
            "model" => s.model = value.get::<Option<String>>().unwrap().unwrap_or_else(default_model),
            "device" => s.device = value.get::<Option<String>>().unwrap().unwrap_or_else(|| DEFAULT_DEVICE.into()),
            "precision" => {
                s.precision = value.get::<Option<String>>().unwrap().unwrap_or_else(|| DEFAULT_PRECISION.into())
            }
            _ => unreachable!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock();
        match pspec.name() {
            "qp" => s.qp.to_value(),
            "intra-period" => s.intra_period.to_value(),
            "diffusion-steps" => s.diffusion_steps.to_value(),
            "independent-steps" => s.independent_steps.to_value(),
            "adaptive-intra" => s.adaptive_intra.to_value(),
            "intra-qp-offset" => s.intra_qp_offset.to_value(),
            "bitrate" => s.bitrate.to_value(),
            "rate-buffer" => s.rate_buffer.to_value(),
            "rounding-offset" => s.rounding_offset.to_value(),
            "prompt-search" => s.prompt_search.to_value(),
            "diffusion-mask" => s.diffusion_mask.to_value(),
            "model" => s.model.to_value(),
            "device" => s.device.to_value(),
            "precision" => s.precision.to_value(),
            _ => unreachable!(),
        }
    }
}

impl GstObjectImpl for GvcEnc {}

impl ElementImpl for GvcEnc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: Lazy<gst::subclass::ElementMetadata> = Lazy::new(|| {
            gst::subclass::ElementMetadata::new(
                "gvc encoder",
                "Codec/Encoder/Video",
                "Diffusion-oriented conditional neural video encoder (DiffVC-style)",
                "gvc developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: Lazy<Vec<gst::PadTemplate>> = Lazy::new(|| {
            let sink = gst_video::VideoCapsBuilder::new()
                .format_list(ENCODER_FORMATS)
                .width_range(16..=4096)
                .height_range(16..=4096)
                .build();
            let src = gst::Caps::builder("video/x-gvc").field("stream-format", "packets").field("parsed", true).build();
            vec![
                gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &sink).unwrap(),
                gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &src).unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl VideoEncoderImpl for GvcEnc {
    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock() = None;
        Ok(())
    }

    fn set_format(
        &self,
        state: &gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>,
    ) -> Result<(), gst::LoggableError> {
        let info = state.info().clone();
        let s = self.settings.lock().clone();
        let device = parse_device(&s.device).map_err(|e| gst::loggable_error!(CAT, "{e:#}"))?;
        let precision = Precision::resolve(&s.precision, device).map_err(|e| gst::loggable_error!(CAT, "{e:#}"))?;
        let model = shared_model(&s.model, device, precision).map_err(|e| {
            gst::element_imp_error!(self, gst::LibraryError::Init, ["Cannot load gvc model: {e:#}"]);
            gst::loggable_error!(CAT, "{e:#}")
        })?;
        let fps = info.fps();
        let (fps_n, fps_d) = if fps.numer() > 0 { (fps.numer() as u32, fps.denom() as u32) } else { (30, 1) };
        let params = EncoderParams {
            width: info.width(),
            height: info.height(),
            fps_n,
            fps_d,
            intra_period: s.intra_period,
            qp: s.qp as u8,
            diffusion_steps: s.diffusion_steps as u8,
            independent_steps: s.independent_steps as u8,
            adaptive_intra: s.adaptive_intra,
            intra_qp_offset: unset_if_negative(s.intra_qp_offset),
            rate_target: (s.bitrate > 0).then(|| RateTarget {
                bits_per_second: s.bitrate.saturating_mul(1000),
                buffer_seconds: f64::from(s.rate_buffer) / 1000.0,
            }),
            rounding_offset: s.rounding_offset,
            prompt_search: unset_if_negative(s.prompt_search),
            diffusion_mask: s.diffusion_mask,
        };
        let session = EncoderSession::new(model, &params).map_err(|e| {
            gst::element_imp_error!(self, gst::LibraryError::Settings, ["Cannot start gvc encoder: {e:#}"]);
            gst::loggable_error!(CAT, "{e:#}")
        })?;
        let caps = src_caps_for(session.sequence_header());
        gst::debug!(CAT, imp = self, "output caps {caps}");
        *self.state.lock() = Some(State { session, video_info: info });
        let obj = self.obj();
        let output = obj.set_output_state(caps, Some(state)).map_err(|_| gst::loggable_error!(CAT, "output state"))?;
        obj.negotiate(output).map_err(|e| gst::loggable_error!(CAT, "negotiation failed: {e:?}"))?;
        // Low-delay P: every frame leaves as soon as it is coded.
        obj.set_latency(gst::ClockTime::ZERO, Some(gst::ClockTime::ZERO));
        Ok(())
    }

    fn flush(&self) -> bool {
        // After a flush the next frame starts a new GOP.
        if let Some(state) = self.state.lock().as_mut() {
            state.session.restart_gop();
        }
        true
    }

    fn finish(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        // Nothing is held back: each frame was pushed when it was coded.
        Ok(gst::FlowSuccess::Ok)
    }

    fn handle_frame(&self, mut frame: gst_video::VideoCodecFrame) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = self.state.lock();
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let input = frame.input_buffer().ok_or(gst::FlowError::Error)?;
        let vframe = gst_video::VideoFrameRef::from_buffer_ref_readable(input, &state.video_info).map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ["Failed to map input frame"]);
            gst::FlowError::Error
        })?;
        let force = frame.flags().contains(gst_video::VideoCodecFrameFlags::FORCE_KEYFRAME);
        let encoded = frame_to_tensor(&vframe).and_then(|t| state.session.encode(&t, force));
        drop(vframe);
        let encoded = match encoded {
            Ok(e) => e,
            Err(e) => {
                gst::element_imp_error!(self, gst::StreamError::Encode, ["Encoding failed: {e:#}"]);
                return Err(gst::FlowError::Error);
            }
        };
        drop(guard);
        gst::trace!(
            CAT,
            imp = self,
            "frame {} {:?}: {} bytes",
            encoded.frame_number,
            encoded.frame_type,
            encoded.data.len()
        );
        if encoded.frame_type == FrameType::Intra {
            frame.set_flags(gst_video::VideoCodecFrameFlags::SYNC_POINT);
        }
        frame.set_output_buffer(gst::Buffer::from_mut_slice(encoded.data));
        self.obj().finish_frame(frame)
    }
}
