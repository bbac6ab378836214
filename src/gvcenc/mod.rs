//! `gvcenc`: raw video → gvc stream (`video/x-gvc`).

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct GvcEnc(ObjectSubclass<imp::GvcEnc>) @extends gst_video::VideoEncoder, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "gvcenc", gst::Rank::SECONDARY, GvcEnc::static_type())
}
