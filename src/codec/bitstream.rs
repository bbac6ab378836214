//! The gvc elementary stream (`video/x-gvc`): unit framing, sequence header and frame
//! packets. The normative description is `docs/bitstream.md`; keep the two in step.

use anyhow::{bail, ensure, Context, Result};
use byteorder::{BigEndian, ReadBytesExt, WriteBytesExt};
use std::io::{Cursor, Read};

/// Every unit starts with these two bytes.
pub const SYNC: [u8; 2] = *b"GV";
/// First bytes of a sequence-header payload.
pub const SEQUENCE_MAGIC: [u8; 4] = *b"GVCv";
/// The version this build writes. Version 2 added the frame's prompt offset in the high half of
/// the byte that was version 1's QP index (where version 1 always has zeros); version 3 gave
/// that half's value 0x8 (−8) to frames shown without diffusion, which no version-2 encoder
/// wrote (its offsets stop at ±7). Version 4 lets a frame shown with diffusion carry a
/// diffusion mask ([`DiffusionMask`](super::mask::DiffusionMask)), flagged by the high bit of
/// the sub-stream count, which earlier versions keep clear (their count is at most 8). This
/// build reads all four.
pub const FORMAT_VERSION: u8 = 4;
/// Rate points a stream may have: the frame header holds the QP index in four bits.
pub const MAX_RATE_POINTS: u8 = 16;
/// Bound on a unit's payload: a damaged size field can never cause a large allocation.
pub const MAX_UNIT_PAYLOAD: usize = 16 << 20;
/// Bound on the sub-streams of a frame packet.
pub const MAX_SUBSTREAMS: usize = 8;
/// Bytes of framing around a payload at most: sync, type, 4-byte size, CRC.
pub const MAX_UNIT_OVERHEAD: usize = 2 + 1 + 4 + 2;
/// Largest coded dimension.
pub const MAX_DIMENSION: u16 = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitType {
    SequenceHeader,
    IntraFrame,
    InterFrame,
}

impl UnitType {
    pub fn code(self) -> u8 {
        match self {
            UnitType::SequenceHeader => b'S',
            UnitType::IntraFrame => b'I',
            UnitType::InterFrame => b'P',
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            b'S' => Some(UnitType::SequenceHeader),
            b'I' => Some(UnitType::IntraFrame),
            b'P' => Some(UnitType::InterFrame),
            _ => None,
        }
    }
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF).
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

fn write_varint(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// LEB128, at most 5 bytes.
fn read_varint(r: &mut impl Read) -> Result<u32> {
    let mut v: u64 = 0;
    for i in 0..5 {
        let b = r.read_u8().context("truncated varint")?;
        v |= ((b & 0x7F) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(v).context("varint overflows 32 bits");
        }
    }
    bail!("varint longer than 5 bytes")
}

/// Appends one unit (sync, type, size, payload, CRC) to `out`.
pub fn write_unit(out: &mut Vec<u8>, unit_type: UnitType, payload: &[u8]) {
    assert!(payload.len() <= MAX_UNIT_PAYLOAD, "unit payload over the format's bound");
    out.extend_from_slice(&SYNC);
    let crc_start = out.len();
    out.push(unit_type.code());
    write_varint(out, payload.len() as u32);
    out.extend_from_slice(payload);
    let crc = crc16(&out[crc_start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A unit found at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub struct Unit<'a> {
    pub unit_type: UnitType,
    pub payload: &'a [u8],
    /// Bytes the unit occupies, framing included.
    pub size: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum UnitParse<'a> {
    Complete(Unit<'a>),
    /// The unit looks valid so far; at least this many bytes are needed in total.
    NeedMore(usize),
    /// Not a valid unit at this position (bad sync, type, size or CRC).
    Invalid(&'static str),
}

/// Parses the unit that starts at `data[0]`.
pub fn parse_unit(data: &[u8]) -> UnitParse<'_> {
    if data.len() < 4 {
        return UnitParse::NeedMore(4);
    }
    if data[..2] != SYNC {
        return UnitParse::Invalid("no sync code");
    }
    let Some(unit_type) = UnitType::from_code(data[2]) else {
        return UnitParse::Invalid("unknown unit type");
    };
    let mut len: u64 = 0;
    let mut pos = 3;
    loop {
        if pos >= data.len() {
            return UnitParse::NeedMore(pos + 1);
        }
        let b = data[pos];
        len |= ((b & 0x7F) as u64) << (7 * (pos - 3));
        pos += 1;
        if b & 0x80 == 0 {
            break;
        }
        if pos - 3 >= 4 {
            return UnitParse::Invalid("size field too long");
        }
    }
    if len as usize > MAX_UNIT_PAYLOAD {
        return UnitParse::Invalid("unit size over the bound");
    }
    let total = pos + len as usize + 2;
    if data.len() < total {
        return UnitParse::NeedMore(total);
    }
    let crc = u16::from_be_bytes([data[total - 2], data[total - 1]]);
    if crc16(&data[2..total - 2]) != crc {
        return UnitParse::Invalid("CRC mismatch");
    }
    UnitParse::Complete(Unit { unit_type, payload: &data[pos..total - 2], size: total })
}

/// Offset of the next position at or after `from` that starts with the sync code.
pub fn find_sync(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?.windows(2).position(|w| w == SYNC).map(|p| p + from)
}

/// Splits a buffer holding whole units into them; any damage is an error.
pub fn split_units(mut data: &[u8]) -> Result<Vec<Unit<'_>>> {
    let mut units = Vec::new();
    while !data.is_empty() {
        match parse_unit(data) {
            UnitParse::Complete(unit) => {
                data = &data[unit.size..];
                units.push(unit);
            }
            UnitParse::NeedMore(_) => bail!("truncated unit"),
            UnitParse::Invalid(why) => bail!("invalid unit: {why}"),
        }
    }
    Ok(units)
}

/// Stream-wide parameters, repeated before every I-frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceHeader {
    /// Identifies the weights the stream was made with (see `model::ModelId`).
    pub model_id: u64,
    pub coded_width: u16,
    pub coded_height: u16,
    pub display_width: u16,
    pub display_height: u16,
    pub fps_n: u32,
    pub fps_d: u32,
    pub intra_period: u16,
    /// Diffusion steps DS per frame; 0 means the stream is decoded without diffusion.
    pub diffusion_steps: u8,
    /// Independent (network) steps D for P-frames after the first of a GOP; D <= DS.
    pub independent_steps: u8,
    /// Number of rate points (QP indices) the model provides.
    pub num_rate_points: u8,
}

impl SequenceHeader {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.display_width >= 1 && self.display_height >= 1, "empty picture");
        ensure!(
            self.coded_width <= MAX_DIMENSION && self.coded_height <= MAX_DIMENSION,
            "coded size {}x{} over the bound {MAX_DIMENSION}",
            self.coded_width,
            self.coded_height
        );
        ensure!(
            self.display_width <= self.coded_width && self.display_height <= self.coded_height,
            "display size {}x{} exceeds coded size {}x{}",
            self.display_width,
            self.display_height,
            self.coded_width,
            self.coded_height
        );
        ensure!(self.fps_d != 0, "frame rate denominator is zero");
        ensure!(self.intra_period >= 1, "intra period is zero");
        ensure!(
            self.independent_steps <= self.diffusion_steps,
            "independent steps {} exceed diffusion steps {}",
            self.independent_steps,
            self.diffusion_steps
        );
        ensure!(self.diffusion_steps == 0 || self.independent_steps >= 1, "no independent diffusion step");
        ensure!(
            (1..=MAX_RATE_POINTS).contains(&self.num_rate_points),
            "{} rate points (1 to {MAX_RATE_POINTS})",
            self.num_rate_points
        );
        Ok(())
    }

    pub fn to_payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(40);
        p.extend_from_slice(&SEQUENCE_MAGIC);
        p.push(FORMAT_VERSION);
        p.write_u64::<BigEndian>(self.model_id).unwrap();
        for v in [self.coded_width, self.coded_height, self.display_width, self.display_height] {
            p.write_u16::<BigEndian>(v).unwrap();
        }
        p.write_u32::<BigEndian>(self.fps_n).unwrap();
        p.write_u32::<BigEndian>(self.fps_d).unwrap();
        p.write_u16::<BigEndian>(self.intra_period).unwrap();
        p.push(self.diffusion_steps);
        p.push(self.independent_steps);
        p.push(self.num_rate_points);
        p
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self> {
        ensure!(payload.len() >= 5 && payload[..4] == SEQUENCE_MAGIC, "not a gvc sequence header");
        ensure!(
            (1..=FORMAT_VERSION).contains(&payload[4]),
            "unsupported gvc format version {} (this build reads versions 1 to {FORMAT_VERSION})",
            payload[4]
        );
        let mut r = Cursor::new(&payload[5..]);
        let read = |r: &mut Cursor<&[u8]>| -> std::io::Result<Self> {
            Ok(Self {
                model_id: r.read_u64::<BigEndian>()?,
                coded_width: r.read_u16::<BigEndian>()?,
                coded_height: r.read_u16::<BigEndian>()?,
                display_width: r.read_u16::<BigEndian>()?,
                display_height: r.read_u16::<BigEndian>()?,
                fps_n: r.read_u32::<BigEndian>()?,
                fps_d: r.read_u32::<BigEndian>()?,
                intra_period: r.read_u16::<BigEndian>()?,
                diffusion_steps: r.read_u8()?,
                independent_steps: r.read_u8()?,
                num_rate_points: r.read_u8()?,
            })
        };
        let header = read(&mut r).context("truncated sequence header")?;
        header.validate()?;
        Ok(header)
    }

    /// The header as a complete unit.
    pub fn to_unit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_unit(&mut out, UnitType::SequenceHeader, &self.to_payload());
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Intra,
    Inter,
}

impl FrameType {
    pub fn unit_type(self) -> UnitType {
        match self {
            FrameType::Intra => UnitType::IntraFrame,
            FrameType::Inter => UnitType::InterFrame,
        }
    }
}

/// One coded frame: header fields and its entropy-coded sub-streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramePacket {
    pub frame_type: FrameType,
    /// Display order number since the start of the stream.
    pub frame_number: u32,
    pub qp_index: u8,
    /// The denoiser is conditioned on the prompt of rate point `qp_index + prompt_offset`
    /// (QPP); the encoder may pick another rate point's prompt than the frame's own. None: the
    /// frame is shown as D(ŷ), without diffusion (and the TDIR buffer is emptied).
    pub prompt_offset: Option<i8>,
    /// Seed of the decoder's diffusion noise for this frame.
    pub noise_seed: u32,
    /// The first sub-stream ends with the frame's diffusion mask (version 4).
    pub diffusion_mask: bool,
    /// Entropy-coded sub-streams, in the order the frame type defines.
    pub substreams: Vec<Vec<u8>>,
}

/// Prompt offsets the frame header can hold (four bits, two's complement; −8 is
/// [`NO_DIFFUSION`]).
pub const PROMPT_OFFSETS: std::ops::RangeInclusive<i8> = -7..=7;
/// The rate byte's high half for a frame shown without diffusion.
const NO_DIFFUSION: u8 = 0x8;
/// The sub-stream count's flag for a frame with a diffusion mask.
const DIFFUSION_MASK_FLAG: u8 = 0x80;

impl FramePacket {
    pub fn to_payload(&self) -> Vec<u8> {
        assert!(self.substreams.len() <= MAX_SUBSTREAMS);
        assert!(self.qp_index < MAX_RATE_POINTS && self.prompt_offset.is_none_or(|o| PROMPT_OFFSETS.contains(&o)));
        let mut p = Vec::with_capacity(8 + self.substreams.iter().map(Vec::len).sum::<usize>());
        write_varint(&mut p, self.frame_number);
        let prompt = self.prompt_offset.map_or(NO_DIFFUSION, |o| o as u8 & 0x0F);
        p.push((prompt << 4) | self.qp_index);
        write_varint(&mut p, self.noise_seed);
        p.push(self.substreams.len() as u8 | if self.diffusion_mask { DIFFUSION_MASK_FLAG } else { 0 });
        for s in &self.substreams {
            write_varint(&mut p, s.len() as u32);
        }
        for s in &self.substreams {
            p.extend_from_slice(s);
        }
        p
    }

    pub fn from_payload(frame_type: FrameType, payload: &[u8]) -> Result<Self> {
        let mut r = Cursor::new(payload);
        let frame_number = read_varint(&mut r).context("frame number")?;
        let rate = r.read_u8().context("truncated frame header")?;
        let qp_index = rate & 0x0F;
        let prompt_offset = (rate >> 4 != NO_DIFFUSION).then_some((rate as i8) >> 4);
        let noise_seed = read_varint(&mut r).context("noise seed")?;
        let count_and_flag = r.read_u8().context("truncated frame header")?;
        let diffusion_mask = count_and_flag & DIFFUSION_MASK_FLAG != 0;
        let count = (count_and_flag & !DIFFUSION_MASK_FLAG) as usize;
        ensure!(count <= MAX_SUBSTREAMS, "{count} sub-streams (at most {MAX_SUBSTREAMS})");
        let mut sizes = Vec::with_capacity(count);
        for _ in 0..count {
            sizes.push(read_varint(&mut r).context("sub-stream size")? as usize);
        }
        let mut rest = &payload[r.position() as usize..];
        ensure!(
            sizes.iter().sum::<usize>() == rest.len(),
            "sub-stream sizes ({}) do not match the payload ({} bytes)",
            sizes.iter().sum::<usize>(),
            rest.len()
        );
        let mut substreams = Vec::with_capacity(count);
        for size in sizes {
            substreams.push(rest[..size].to_vec());
            rest = &rest[size..];
        }
        Ok(Self { frame_type, frame_number, qp_index, prompt_offset, noise_seed, diffusion_mask, substreams })
    }

    pub fn to_unit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_unit(&mut out, self.frame_type.unit_type(), &self.to_payload());
        out
    }
}

/// What one access unit (one frame, as the parser outputs it) holds.
#[derive(Debug)]
pub struct AccessUnit {
    pub sequence_header: Option<SequenceHeader>,
    pub frame: FramePacket,
}

/// Parses an access unit: an optional sequence header followed by exactly one frame.
pub fn parse_access_unit(data: &[u8]) -> Result<AccessUnit> {
    let units = split_units(data)?;
    let mut sequence_header = None;
    let mut frame = None;
    for unit in units {
        match unit.unit_type {
            UnitType::SequenceHeader => {
                ensure!(frame.is_none(), "sequence header after the frame in one access unit");
                sequence_header = Some(SequenceHeader::from_payload(unit.payload)?);
            }
            UnitType::IntraFrame | UnitType::InterFrame => {
                ensure!(frame.is_none(), "more than one frame in one access unit");
                let ft = if unit.unit_type == UnitType::IntraFrame { FrameType::Intra } else { FrameType::Inter };
                frame = Some(FramePacket::from_payload(ft, unit.payload)?);
            }
        }
    }
    let frame = frame.context("access unit holds no frame")?;
    Ok(AccessUnit { sequence_header, frame })
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn header() -> SequenceHeader {
        SequenceHeader {
            model_id: 0x0123_4567_89AB_CDEF,
            coded_width: 192,
            coded_height: 144,
            display_width: 176,
            display_height: 144,
            fps_n: 30000,
            fps_d: 1001,
            intra_period: 32,
            diffusion_steps: 8,
            independent_steps: 4,
            num_rate_points: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::header;
    use super::*;

    #[test]
    fn sequence_header_round_trip() {
        let h = header();
        let unit = h.to_unit();
        let UnitParse::Complete(u) = parse_unit(&unit) else { panic!() };
        assert_eq!(u.size, unit.len());
        assert_eq!(SequenceHeader::from_payload(u.payload).unwrap(), h);
    }

    #[test]
    fn frame_round_trip_and_access_unit() {
        let f = FramePacket {
            frame_type: FrameType::Intra,
            frame_number: 300,
            qp_index: 2,
            prompt_offset: Some(-3),
            noise_seed: 77_777,
            diffusion_mask: false,
            substreams: vec![vec![1, 2, 3], vec![], vec![9; 200]],
        };
        let mut au = header().to_unit();
        au.extend(f.to_unit());
        let parsed = parse_access_unit(&au).unwrap();
        assert_eq!(parsed.sequence_header.unwrap(), header());
        assert_eq!(parsed.frame, f);
        for prompt_offset in PROMPT_OFFSETS.map(Some).chain([None]) {
            for qp_index in [0, 1, MAX_RATE_POINTS - 1] {
                for diffusion_mask in [false, true] {
                    let g = FramePacket { qp_index, prompt_offset, diffusion_mask, ..f.clone() };
                    assert_eq!(FramePacket::from_payload(g.frame_type, &g.to_payload()).unwrap(), g);
                }
            }
        }
    }

    #[test]
    fn older_versions_are_read_and_version_1_frames_take_their_own_prompt() {
        // Version 1 had the QP index alone in the byte that now also holds the prompt offset.
        let mut p = header().to_payload();
        for version in 1..=FORMAT_VERSION {
            p[4] = version;
            assert_eq!(SequenceHeader::from_payload(&p).unwrap(), header(), "version {version}");
        }
        let v1_frame = [0x85, 0x01, 3, 7, 1, 2, 0xAB, 0xCD];
        let f = FramePacket::from_payload(FrameType::Inter, &v1_frame).unwrap();
        assert_eq!(
            (f.frame_number, f.qp_index, f.prompt_offset, f.noise_seed, f.diffusion_mask),
            (133, 3, Some(0), 7, false)
        );
        assert_eq!(f.substreams, vec![vec![0xAB, 0xCD]]);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_detected() {
        let f = FramePacket {
            frame_type: FrameType::Inter,
            frame_number: 5,
            qp_index: 0,
            prompt_offset: Some(1),
            noise_seed: 5,
            diffusion_mask: true,
            substreams: vec![vec![0xAA; 40], vec![0x55; 3]],
        };
        let unit = f.to_unit();
        for cut in 0..unit.len() {
            assert!(matches!(parse_unit(&unit[..cut]), UnitParse::NeedMore(n) if n > cut), "cut {cut}");
        }
        for byte in 0..unit.len() {
            for bit in 0..8 {
                let mut damaged = unit.clone();
                damaged[byte] ^= 1 << bit;
                match parse_unit(&damaged) {
                    UnitParse::Complete(u) => panic!("flip at {byte}.{bit} accepted: {u:?}"),
                    UnitParse::NeedMore(_) | UnitParse::Invalid(_) => {}
                }
            }
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut h = header();
        h.independent_steps = 9;
        assert!(SequenceHeader::from_payload(&h.to_payload()).is_err());
        let mut p = header().to_payload();
        p[4] = 99;
        let err = SequenceHeader::from_payload(&p).unwrap_err().to_string();
        assert!(err.contains("version 99"), "{err}");
        let mut h = header();
        h.num_rate_points = MAX_RATE_POINTS + 1;
        assert!(SequenceHeader::from_payload(&h.to_payload()).is_err());
        assert!(SequenceHeader::from_payload(&header().to_payload()[..20]).is_err());
        // A size field over the bound is refused before anything is allocated.
        let huge = [b'G', b'V', b'I', 0xFF, 0xFF, 0xFF, 0x7F];
        assert_eq!(parse_unit(&huge), UnitParse::Invalid("unit size over the bound"));
    }

    #[test]
    fn resync_finds_next_unit() {
        let mut data = vec![0x13, b'G', 0x00, b'V'];
        let start = data.len();
        data.extend(header().to_unit());
        assert_eq!(find_sync(&data, 0), Some(start));
    }
}
