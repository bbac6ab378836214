//! Embedding gvc in an application: the plugin is registered statically, frames go in
//! through `appsrc`, are encoded by `gvcenc`, decoded by `gvcdec` and come out of `appsink`.
//!
//! `cargo run --release --example appsrc_roundtrip [model folder]` (default: the shipped model).

use anyhow::Result;
use gst::prelude::*;

fn main() -> Result<()> {
    gst::init()?;
    gstgvc::plugin_register_static()?;
    let model = std::env::args().nth(1).unwrap_or_else(gstgvc::video::default_model);
    let (w, h, n) = (64usize, 48usize, 8usize);
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={w},height={h},framerate=25/1 \
         ! gvcenc model={model} ! gvcdec model={model} ! appsink name=sink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing)?;
    for t in 0..n {
        // A moving gradient.
        let data: Vec<u8> = (0..w * h * 3).map(|i| ((i / 3 % w + 4 * t) * 255 / w) as u8).collect();
        let mut buf = gst::Buffer::from_mut_slice(data);
        buf.get_mut().unwrap().set_pts(gst::ClockTime::from_mseconds(40 * t as u64));
        src.push_buffer(buf)?;
    }
    src.end_of_stream()?;
    let mut received = 0;
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().unwrap();
        println!("frame {received}: pts {} , {} bytes of RGB", buffer.pts().unwrap(), buffer.size());
        received += 1;
    }
    pipeline.set_state(gst::State::Null)?;
    println!("{received} of {n} frames came back");
    anyhow::ensure!(received == n, "frames were lost");
    Ok(())
}
