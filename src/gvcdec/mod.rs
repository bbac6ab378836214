//! `gvcdec`: gvc stream → raw RGB video, with the diffusion decoder and TDIR.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct GvcDec(ObjectSubclass<imp::GvcDec>) @extends gst_video::VideoDecoder, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "gvcdec", gst::Rank::PRIMARY, GvcDec::static_type())
}
