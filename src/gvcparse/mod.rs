//! `gvcparse`: frames a gvc bytestream into access units (one frame each, with the
//! sequence header in front of every I-frame), sets caps and timestamps.

use gst::glib;
use gst::prelude::*;

mod imp;

pub(crate) use imp::src_caps_for;

glib::wrapper! {
    pub struct GvcParse(ObjectSubclass<imp::GvcParse>) @extends gst_base::BaseParse, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "gvcparse", gst::Rank::PRIMARY + 1, GvcParse::static_type())
}
