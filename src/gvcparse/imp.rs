use crate::codec::bitstream::{self, FramePacket, FrameType, SequenceHeader, UnitParse, UnitType, MAX_UNIT_OVERHEAD};
use gst::glib;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use once_cell::sync::Lazy;
use parking_lot::Mutex;

static CAT: Lazy<gst::DebugCategory> =
    Lazy::new(|| gst::DebugCategory::new("gvcparse", gst::DebugColorFlags::empty(), Some("gvc stream parser")));

#[derive(Default)]
struct State {
    header: Option<SequenceHeader>,
    /// The header the current src caps were made from.
    caps_header: Option<SequenceHeader>,
    /// Bytes skipped since the last good unit (reported once sync is regained).
    skipped: u64,
}

#[derive(Default)]
pub struct GvcParse {
    state: Mutex<State>,
}

/// What the bytes at the parse position amount to.
enum Found {
    /// An access unit of `size` bytes: optional sequence header + one frame.
    AccessUnit { size: usize, header: Option<SequenceHeader>, frame: FramePacket },
    /// Need this many bytes in total before deciding.
    NeedMore(usize),
    /// Drop this many bytes (damage or a lone header) and look again.
    Skip(usize, &'static str),
}

fn frame_type(t: UnitType) -> Option<FrameType> {
    match t {
        UnitType::IntraFrame => Some(FrameType::Intra),
        UnitType::InterFrame => Some(FrameType::Inter),
        UnitType::SequenceHeader => None,
    }
}

fn skip_to_next_sync(data: &[u8], why: &'static str) -> Found {
    // A sync code may start in the last byte, so keep it.
    let next = bitstream::find_sync(data, 1).unwrap_or(data.len().saturating_sub(1).max(1));
    Found::Skip(next, why)
}

fn find_access_unit(data: &[u8]) -> Found {
    let first = match bitstream::parse_unit(data) {
        UnitParse::Complete(u) => u,
        UnitParse::NeedMore(n) => return Found::NeedMore(n),
        UnitParse::Invalid(why) => return skip_to_next_sync(data, why),
    };
    if let Some(ft) = frame_type(first.unit_type) {
        return match FramePacket::from_payload(ft, first.payload) {
            Ok(frame) => Found::AccessUnit { size: first.size, header: None, frame },
            Err(_) => Found::Skip(first.size, "malformed frame packet"),
        };
    }
    let header = match SequenceHeader::from_payload(first.payload) {
        Ok(h) => h,
        Err(_) => return Found::Skip(first.size, "malformed sequence header"),
    };
    match bitstream::parse_unit(&data[first.size..]) {
        UnitParse::Complete(u) if u.unit_type == UnitType::IntraFrame => {
            match FramePacket::from_payload(FrameType::Intra, u.payload) {
                Ok(frame) => Found::AccessUnit { size: first.size + u.size, header: Some(header), frame },
                Err(_) => Found::Skip(first.size + u.size, "malformed frame packet"),
            }
        }
        UnitParse::Complete(_) => Found::Skip(first.size, "sequence header not followed by an I-frame"),
        UnitParse::NeedMore(n) => Found::NeedMore(first.size + n),
        UnitParse::Invalid(_) => Found::Skip(first.size, "sequence header followed by a damaged unit"),
    }
}

impl GvcParse {
    fn update_caps(&self, header: &SequenceHeader) -> Result<(), gst::FlowError> {
        let mut state = self.state.lock();
        if state.caps_header.as_ref() == Some(header) {
            return Ok(());
        }
        state.caps_header = Some(header.clone());
        drop(state);
        let caps = src_caps_for(header);
        gst::debug!(CAT, imp = self, "caps {caps}");
        let obj = self.obj();
        obj.src_pad().push_event(gst::event::Caps::new(&caps));
        obj.set_frame_rate(gst::Fraction::new(header.fps_n as i32, header.fps_d as i32), 0, 0);
        Ok(())
    }
}

pub fn src_caps_for(header: &SequenceHeader) -> gst::Caps {
    gst::Caps::builder("video/x-gvc")
        .field("stream-format", "packets")
        .field("parsed", true)
        .field("width", header.display_width as i32)
        .field("height", header.display_height as i32)
        .field("framerate", gst::Fraction::new(header.fps_n as i32, header.fps_d as i32))
        .field("model", format!("{:016x}", header.model_id))
        .field("codec_data", gst::Buffer::from_slice(header.to_unit()))
        .build()
}

#[glib::object_subclass]
impl ObjectSubclass for GvcParse {
    const NAME: &'static str = "GstGvcParse";
    type Type = super::GvcParse;
    type ParentType = gst_base::BaseParse;
}

impl ObjectImpl for GvcParse {}
impl GstObjectImpl for GvcParse {}

impl ElementImpl for GvcParse {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: Lazy<gst::subclass::ElementMetadata> = Lazy::new(|| {
            gst::subclass::ElementMetadata::new(
                "gvc parser",
                "Codec/Parser/Video",
                "Frames a gvc elementary stream into access units",
                "gvc developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: Lazy<Vec<gst::PadTemplate>> = Lazy::new(|| {
            let sink = gst::Caps::builder("video/x-gvc").build();
            let src = gst::Caps::builder("video/x-gvc").field("stream-format", "packets").field("parsed", true).build();
            vec![
                gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &sink).unwrap(),
                gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &src).unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseParseImpl for GvcParse {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock() = State::default();
        let obj = self.obj();
        obj.set_min_frame_size(4);
        obj.set_syncable(true);
        obj.set_has_timing_info(true);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock() = State::default();
        Ok(())
    }

    fn handle_frame(&self, mut frame: gst_base::BaseParseFrame) -> Result<(gst::FlowSuccess, u32), gst::FlowError> {
        let input = frame.buffer().ok_or(gst::FlowError::Error)?;
        let map = input.map_readable().map_err(|_| gst::FlowError::Error)?;
        let found = find_access_unit(&map);
        let draining = self.obj().is_draining();
        match found {
            Found::NeedMore(_) if draining => {
                gst::warning!(CAT, imp = self, "dropping {} bytes of a truncated unit at the end", map.len());
                Ok((gst::FlowSuccess::Ok, map.len() as u32))
            }
            Found::NeedMore(n) => {
                // Units are bounded, so this never asks for an unbounded amount of data.
                let n = n.min(bitstream::MAX_UNIT_PAYLOAD * 2 + 2 * MAX_UNIT_OVERHEAD);
                self.obj().set_min_frame_size(n as u32);
                Ok((gst::FlowSuccess::Ok, 0))
            }
            Found::Skip(n, why) => {
                self.state.lock().skipped += n as u64;
                gst::warning!(CAT, imp = self, "skipping {n} bytes: {why}");
                Ok((gst::FlowSuccess::Ok, n as u32))
            }
            Found::AccessUnit { size, header, frame: packet } => {
                drop(map);
                self.obj().set_min_frame_size(4);
                let skipped = std::mem::take(&mut self.state.lock().skipped);
                if skipped > 0 {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Decode,
                        ["Damaged gvc stream: skipped {} bytes to regain sync", skipped]
                    );
                }
                if let Some(h) = header {
                    self.state.lock().header = Some(h.clone());
                    self.update_caps(&h)?;
                }
                let Some(h) = self.state.lock().header.clone() else {
                    gst::warning!(CAT, imp = self, "dropping frame {} before any sequence header", packet.frame_number);
                    return Ok((gst::FlowSuccess::Ok, size as u32));
                };
                let input = frame.buffer().ok_or(gst::FlowError::Error)?;
                let mut out =
                    input.copy_region(gst::BufferCopyFlags::MEMORY, 0..size).map_err(|_| gst::FlowError::Error)?;
                {
                    let out = out.get_mut().unwrap();
                    let duration = gst::ClockTime::SECOND.mul_div_floor(h.fps_d as u64, h.fps_n.max(1) as u64);
                    let pts = gst::ClockTime::SECOND
                        .mul_div_floor(packet.frame_number as u64 * h.fps_d as u64, h.fps_n.max(1) as u64);
                    out.set_pts(pts);
                    out.set_dts(pts);
                    out.set_duration(duration);
                    if packet.frame_type == FrameType::Intra {
                        out.unset_flags(gst::BufferFlags::DELTA_UNIT);
                    } else {
                        out.set_flags(gst::BufferFlags::DELTA_UNIT);
                    }
                }
                frame.set_output_buffer(out);
                let flow = self.obj().finish_frame(frame, size as u32)?;
                Ok((flow, 0))
            }
        }
    }
}
