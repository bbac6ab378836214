//! Writes a model folder with seeded random networks, for plumbing tests of the elements:
//! `cargo run --example make_random_model -- <dir> [seed]`.

use gstgvc::model::gvc::GvcModel;
use gstgvc::model::ModelConfig;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: make_random_model <dir> [seed]"));
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let config = ModelConfig::load(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/gvc-small"))?;
    GvcModel::random(config, seed, tch::Device::Cpu).save(&dir)?;
    println!("{}", dir.display());
    Ok(())
}
