use crate::codec::bitstream::SequenceHeader;
use crate::codec::session::{DecoderSession, MissingReference};
use crate::model::Precision;
use crate::video::{
    default_model, device_pspec, model_pspec, parse_device, precision_pspec, shared_model, tensor_to_rgb_bytes,
    write_rgb, DEFAULT_DEVICE, DEFAULT_PRECISION,
};
use gst::glib;
use gst::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;
use once_cell::sync::Lazy;
use parking_lot::Mutex;

static CAT: Lazy<gst::DebugCategory> =
    Lazy::new(|| gst::DebugCategory::new("gvcdec", gst::DebugColorFlags::empty(), Some("gvc decoder")));

const DEFAULT_STEPS_OVERRIDE: i32 = -1;
const DEFAULT_MAX_ERRORS: i32 = 10;

#[derive(Debug, Clone)]
struct Settings {
    diffusion_steps: i32,
    independent_steps: i32,
    max_errors: i32,
    model: String,
    device: String,
    precision: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            diffusion_steps: DEFAULT_STEPS_OVERRIDE,
            independent_steps: DEFAULT_STEPS_OVERRIDE,
            max_errors: DEFAULT_MAX_ERRORS,
            model: default_model(),
            device: DEFAULT_DEVICE.into(),
            precision: DEFAULT_PRECISION.into(),
        }
    }
}

struct State {
    session: DecoderSession,
    /// Header the output state was negotiated for.
    negotiated: Option<SequenceHeader>,
    errors: i32,
}

#[derive(Default)]
pub struct GvcDec {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    input_state: Mutex<Option<gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>>>,
}

#[glib::object_subclass]
impl ObjectSubclass for GvcDec {
    const NAME: &'static str = "GstGvcDec";
    type Type = super::GvcDec;
    type ParentType = gst_video::VideoDecoder;
}

impl ObjectImpl for GvcDec {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: Lazy<Vec<glib::ParamSpec>> = Lazy::new(|| {
            vec![
                glib::ParamSpecInt::builder("diffusion-steps")
                    .nick("Diffusion steps (DS)")
                    .blurb("Override of the stream's diffusion steps, at most the stream's value (-1 = as signalled, 0 = no diffusion)")
                    .minimum(-1)
                    .maximum(64)
                    .default_value(DEFAULT_STEPS_OVERRIDE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("independent-steps")
                    .nick("Independent steps (D)")
                    .blurb("Override of the stream's TDIR independent steps D, at most DS (-1 = as signalled)")
                    .minimum(-1)
                    .maximum(64)
                    .default_value(DEFAULT_STEPS_OVERRIDE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("max-errors")
                    .nick("Maximum errors")
                    .blurb("Damaged frames dropped (with a warning) before decoding fails; -1 = never fail")
                    .minimum(-1)
                    .default_value(DEFAULT_MAX_ERRORS)
                    .mutable_playing()
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
            "diffusion-steps" => s.diffusion_steps = value.get().unwrap(),
            "independent-steps" => s.independent_steps = value.get().unwrap(),
            "max-errors" => s.max_errors = value.get().unwrap(),
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
            "diffusion-steps" => s.diffusion_steps.to_value(),
            "independent-steps" => s.independent_steps.to_value(),
            "max-errors" => s.max_errors.to_value(),
            "model" => s.model.to_value(),
            "device" => s.device.to_value(),
            "precision" => s.precision.to_value(),
            _ => unreachable!(),
        }
    }
}

impl GstObjectImpl for GvcDec {}

impl ElementImpl for GvcDec {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: Lazy<gst::subclass::ElementMetadata> = Lazy::new(|| {
            gst::subclass::ElementMetadata::new(
                "gvc decoder",
                "Codec/Decoder/Video",
                "Conditional neural video decoder with a latent diffusion decoder and TDIR (DiffVC-style)",
                "gvc developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: Lazy<Vec<gst::PadTemplate>> = Lazy::new(|| {
            let sink =
                gst::Caps::builder("video/x-gvc").field("stream-format", "packets").field("parsed", true).build();
            let src = gst_video::VideoCapsBuilder::new().format(gst_video::VideoFormat::Rgb).build();
            vec![
                gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &sink).unwrap(),
                gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &src).unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl GvcDec {
    fn ensure_session(&self) -> Result<(), gst::ErrorMessage> {
        let mut state = self.state.lock();
        if state.is_some() {
            return Ok(());
        }
        let s = self.settings.lock().clone();
        let device = parse_device(&s.device).map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ["{e:#}"]))?;
        let precision = Precision::resolve(&s.precision, device)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ["{e:#}"]))?;
        let model = shared_model(&s.model, device, precision)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ["Cannot load gvc model: {e:#}"]))?;
        let mut session = DecoderSession::new(model);
        session.diffusion_steps = u8::try_from(s.diffusion_steps).ok();
        session.independent_steps = u8::try_from(s.independent_steps).ok();
        *state = Some(State { session, negotiated: None, errors: 0 });
        Ok(())
    }

    fn negotiate_for(&self, header: &SequenceHeader) -> Result<(), gst::FlowError> {
        let obj = self.obj();
        let input = self.input_state.lock().clone();
        let out = obj
            .set_output_state(
                gst_video::VideoFormat::Rgb,
                header.display_width as u32,
                header.display_height as u32,
                input.as_ref(),
            )
            .map_err(|_| gst::FlowError::NotNegotiated)?;
        obj.negotiate(out).map_err(|_| gst::FlowError::NotNegotiated)
    }

    /// A damaged frame: dropped with a warning, or an error once `max-errors` is exceeded.
    fn damaged(&self, frame: gst_video::VideoCodecFrame, e: anyhow::Error) -> Result<gst::FlowSuccess, gst::FlowError> {
        let max = self.settings.lock().max_errors;
        let errors = {
            let mut state = self.state.lock();
            let state = state.as_mut().ok_or(gst::FlowError::Flushing)?;
            state.errors += 1;
            // The reference is unreliable after a damaged frame: resume at the next I-frame.
            state.session.reset();
            state.errors
        };
        if max >= 0 && errors > max {
            gst::element_imp_error!(self, gst::StreamError::Decode, ["Undecodable gvc stream: {e:#}"]);
            return Err(gst::FlowError::Error);
        }
        gst::element_imp_warning!(self, gst::StreamError::Decode, ["Dropping a damaged frame: {e:#}"]);
        self.obj().drop_frame(frame)
    }
}

impl VideoDecoderImpl for GvcDec {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        // The model loads with the first frame, so properties set after start still apply.
        *self.state.lock() = None;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock() = None;
        Ok(())
    }

    fn set_format(
        &self,
        state: &gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>,
    ) -> Result<(), gst::LoggableError> {
        *self.input_state.lock() = Some(state.clone());
        Ok(())
    }

    fn flush(&self) -> bool {
        if let Some(state) = self.state.lock().as_mut() {
            state.session.reset();
        }
        true
    }

    fn handle_frame(&self, mut frame: gst_video::VideoCodecFrame) -> Result<gst::FlowSuccess, gst::FlowError> {
        if let Err(e) = self.ensure_session() {
            self.post_error_message(e);
            return Err(gst::FlowError::Error);
        }
        let input = frame.input_buffer_owned().ok_or(gst::FlowError::Error)?;
        let map = input.map_readable().map_err(|_| gst::FlowError::Error)?;
        let mut guard = self.state.lock();
        let state = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        let decoded = state.session.decode(&map);
        let header = state.session.sequence_header().cloned();
        let renegotiate = header.is_some() && header != state.negotiated;
        if renegotiate {
            state.negotiated = header.clone();
        }
        drop(guard);
        drop(map);
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) if e.is::<MissingReference>() => {
                gst::warning!(CAT, imp = self, "dropping a P-frame without reference (waiting for an I-frame)");
                return self.obj().drop_frame(frame);
            }
            Err(e) => return self.damaged(frame, e),
        };
        if renegotiate {
            self.negotiate_for(header.as_ref().unwrap())?;
        }
        gst::trace!(CAT, imp = self, "frame {} {:?} {:?}", decoded.frame_number, decoded.frame_type, decoded.stats);
        let rgb = tensor_to_rgb_bytes(&decoded.picture);
        self.obj().allocate_output_frame(&mut frame, None)?;
        let out_state = self.obj().output_state().ok_or(gst::FlowError::NotNegotiated)?;
        let info = out_state.info().clone();
        {
            let buffer = frame.output_buffer_mut().ok_or(gst::FlowError::Error)?;
            let mut vframe =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info).map_err(|_| gst::FlowError::Error)?;
            if rgb.len() != (info.width() * info.height() * 3) as usize {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Decode,
                    ["Decoded size does not match the output caps"]
                );
                return Err(gst::FlowError::Error);
            }
            write_rgb(&mut vframe, &rgb).map_err(|_| gst::FlowError::Error)?;
        }
        self.obj().finish_frame(frame)
    }
}
