//! Training stages (run by the `gvc-train` binary). Data: the real clips fetched at setup;
//! frames before `HELD_OUT_FRAMES` of every clip are never trained on, they are the
//! evaluation frames.

pub mod autoencoder;
pub mod codec;
pub mod diffusion;

use crate::cli::KeyValues;
use crate::clips::{clip_dir, load_clip, Clip};
use crate::model::{concat_inputs, ModelConfig};
use anyhow::{ensure, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Kind, Tensor};

/// The evaluation uses the first frames of each clip; training starts after them.
pub const HELD_OUT_FRAMES: i64 = 96;
/// Clips used for training and evaluation (see `../shared/design.md`).
pub const CLIPS: [&str; 5] = ["carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4", "vtest.avi", "Megamind.avi"];
/// Frames decoded per clip at most (bounds memory and start-up time).
const MAX_FRAMES: usize = 400;

/// Deterministic PRNG for crop positions (libtorch's RNG is seeded separately).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// True with probability `share`, drawn in steps of 2⁻²⁰ (one draw, whatever the share).
    pub fn chance(&mut self, share: f64) -> bool {
        self.below(1 << 20) < (share * f64::from(1u32 << 20)) as u64
    }
}

pub struct TrainingClips {
    pub clips: Vec<(String, Clip)>,
    /// Training frames drawn more often than a uniform draw would (`--focus`).
    pub focus: Option<Focus>,
}

/// A share of every batch's crops drawn from chosen training frames of one clip (`gvc-train
/// --focus clip:first-last,… --focus-share S`), the rest as usual: to give content the
/// uniform draw rarely shows (bikes' dark scene is ~5 % of crops) more weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Focus {
    pub clip: usize,
    /// Inclusive frame ranges, all at or after `HELD_OUT_FRAMES`.
    pub ranges: Vec<(i64, i64)>,
    pub share: f64,
}

impl Focus {
    /// `clip:first-last,first-last,…` naming one of `clips`.
    pub fn parse(spec: &str, share: f64, clips: &[(String, Clip)]) -> Result<Self> {
        ensure!((0.0..=1.0).contains(&share), "--focus-share {share}: expected a share between 0 and 1");
        let (name, ranges) =
            spec.split_once(':').with_context(|| format!("--focus {spec}: expected clip:first-last,…"))?;
        let (clip, (_, footage)) = clips
            .iter()
            .enumerate()
            .find(|(_, (n, _))| n == name)
            .with_context(|| format!("--focus: no training clip named {name}"))?;
        let ranges = ranges
            .split(',')
            .map(|r| {
                let parsed =
                    r.split_once('-').and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)));
                let (first, last) = parsed.with_context(|| format!("--focus range {r}: expected first-last"))?;
                ensure!(
                    first >= HELD_OUT_FRAMES,
                    "--focus range {r}: frames before {HELD_OUT_FRAMES} are held out for evaluation"
                );
                ensure!(
                    first <= last && last < footage.len(),
                    "--focus range {r}: {name} has frames 0–{}",
                    footage.len() - 1
                );
                Ok((first, last))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { clip, ranges, share })
    }

    /// Starts of the `len`-frame runs that lie inside one range.
    fn starts(&self, len: i64) -> Vec<i64> {
        self.ranges.iter().flat_map(|&(first, last)| first..=(last + 1 - len)).collect()
    }
}

impl TrainingClips {
    pub fn load() -> Result<Self> {
        let mut clips = Vec::new();
        for name in CLIPS {
            let t = Instant::now();
            let clip = load_clip(&clip_dir().join(name), Some(MAX_FRAMES), None)?;
            eprintln!(
                "[data] {name}: {} frames {}x{} ({:.1}s)",
                clip.len(),
                clip.width(),
                clip.height(),
                t.elapsed().as_secs_f32()
            );
            clips.push((name.to_string(), clip));
        }
        Ok(Self { clips, focus: None })
    }

    /// `batch` random crops of `len` consecutive training frames: (batch, len, 3, crop, crop) in [0,1].
    pub fn sample(&self, rng: &mut Rng, batch: usize, len: i64, crop: i64) -> Result<Tensor> {
        let mut items = Vec::with_capacity(batch);
        let focus_starts = self.focus.as_ref().map(|f| f.starts(len)).unwrap_or_default();
        ensure!(self.focus.is_none() || !focus_starts.is_empty(), "--focus ranges hold no run of {len} frames");
        for _ in 0..batch {
            // Only a focused run draws the extra number, so unfocused runs replay their crops.
            let focus = self.focus.as_ref().filter(|f| rng.chance(f.share));
            let clip_index = match focus {
                Some(f) => f.clip,
                None => rng.below(self.clips.len() as u64) as usize,
            };
            let (_, clip) = &self.clips[clip_index];
            ensure!(clip.len() >= HELD_OUT_FRAMES + len, "clip too short for training");
            let (h, w) = (clip.height(), clip.width());
            let c = crop.min(h).min(w) / 16 * 16;
            let t0 = if focus.is_some() {
                focus_starts[rng.below(focus_starts.len() as u64) as usize]
            } else {
                HELD_OUT_FRAMES + rng.below((clip.len() - HELD_OUT_FRAMES - len + 1) as u64) as i64
            };
            let y0 = rng.below((h - c + 1) as u64) as i64;
            let x0 = rng.below((w - c + 1) as u64) as i64;
            let mut seq = clip.frames.narrow(0, t0, len).narrow(2, y0, c).narrow(3, x0, c);
            if rng.below(2) == 1 {
                seq = seq.flip([3]);
            }
            if c != crop {
                let f = seq.to_kind(Kind::Float);
                seq = f.upsample_bilinear2d([crop, crop], false, None, None).round().to_kind(Kind::Uint8);
            }
            items.push(seq);
        }
        Ok(Tensor::stack(&items, 0).to_kind(Kind::Float) / 255.0)
    }

    /// Held-out evaluation frames: centre crops of `crop` from frame `index` of every clip.
    pub fn held_out(&self, index: i64, crop: i64) -> Vec<(String, Tensor)> {
        self.clips
            .iter()
            .map(|(name, clip)| {
                let c = crop.min(clip.height()).min(clip.width()) / 16 * 16;
                let y0 = (clip.height() - c) / 2;
                let x0 = (clip.width() - c) / 2;
                (name.clone(), clip.float_frames(index, 1).narrow(2, y0, c).narrow(3, x0, c))
            })
            .collect()
    }
}

/// What every stage takes (`gvc-train` options of the same names).
pub struct StageOptions {
    pub model_dir: PathBuf,
    /// Step target; the stage resumes from its saved counter.
    pub steps: i64,
    pub batch: usize,
    pub crop: i64,
    pub lr: f64,
    pub seed: u64,
    /// Stop after this many minutes even if `steps` is not reached (weights are saved).
    pub minutes: Option<f64>,
    /// A trained model folder to start the stage's networks from when this model has none of
    /// them yet; this model may have more latent channels and blocks (`grow_weights`).
    pub grow_from: Option<PathBuf>,
}

impl StageOptions {
    /// `--model-dir` (default: the shipped model's folder).
    pub fn model_dir(o: &KeyValues) -> PathBuf {
        PathBuf::from(o.string("model-dir", "models/gvc-small"))
    }

    /// `--model-dir --steps --batch --crop --lr --seed --minutes` with the stage's defaults.
    pub fn from_cli(o: &KeyValues, steps: i64, lr: f64, seed: u64) -> Result<Self> {
        Ok(Self {
            model_dir: Self::model_dir(o),
            steps: o.value("steps", steps)?,
            batch: o.value("batch", 8)?,
            crop: o.value("crop", 128)?,
            lr: o.value("lr", lr)?,
            seed: o.value("seed", seed)?,
            minutes: o.optional("minutes")?,
            grow_from: o.optional::<String>("grow-from")?.map(PathBuf::from),
        })
    }

    /// Starts the stage's fresh variables from `--grow-from`'s weights, if given; whether it did.
    pub fn grow(&self, vs: &mut nn::VarStore, cfg: &ModelConfig, tag: &str) -> Result<bool> {
        let Some(source) = &self.grow_from else { return Ok(false) };
        let source_cfg = ModelConfig::load(source)?;
        let (copied, grown) = grow_model_weights(vs, &source.join("weights.safetensors"), &source_cfg, cfg)?;
        eprintln!("[{tag}] grown from {}: {copied} tensors copied, {grown} grown", source.display());
        Ok(true)
    }
}

/// Step counter, time budget, learning-rate schedule and checkpointing shared by the stages.
pub struct StageRun {
    tag: &'static str,
    progress_file: PathBuf,
    weights: PathBuf,
    started: Instant,
    minutes: Option<f64>,
    steps: i64,
    lr: f64,
    pub step: i64,
}

impl StageRun {
    /// Picks up the stage's saved step counter (`checkpoints/<tag>.step`) if there is one.
    pub fn start(opt: &StageOptions, tag: &'static str) -> Result<Self> {
        std::fs::create_dir_all(opt.model_dir.join("checkpoints"))?;
        let progress_file = opt.model_dir.join(format!("checkpoints/{tag}.step"));
        let step = std::fs::read_to_string(&progress_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let weights = checkpoint_file(&opt.model_dir);
        let started = Instant::now();
        Ok(Self { tag, progress_file, weights, started, minutes: opt.minutes, steps: opt.steps, lr: opt.lr, step })
    }

    pub fn weights(&self) -> &Path {
        &self.weights
    }

    /// A saved step counter means nothing when none of the stage's weights were restored.
    pub fn restart_if_fresh(&mut self, restored: usize) {
        if restored == 0 {
            self.step = 0;
        }
    }

    /// Whether to run another step: steps left and the time budget not spent.
    pub fn more(&self) -> bool {
        if self.minutes.is_some_and(|m| self.started.elapsed().as_secs_f64() > m * 60.0) {
            eprintln!("[{}] time budget reached", self.tag);
            return false;
        }
        self.step < self.steps
    }

    pub fn progress(&self) -> f64 {
        self.step as f64 / self.steps as f64
    }

    /// Cosine decay to 10 % of the base rate.
    pub fn lr(&self) -> f64 {
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * self.progress()).cos()))
    }

    /// Writes the stage's variables into the checkpoint and the step counter.
    pub fn save(&self, vs: &nn::VarStore) -> Result<()> {
        store_weights(vs, &self.weights)?;
        std::fs::write(&self.progress_file, self.step.to_string())?;
        Ok(())
    }
}

/// Full-precision training state of a model folder (not committed; `export` writes the
/// half-precision `weights.safetensors` from it).
pub fn checkpoint_file(model_dir: &Path) -> std::path::PathBuf {
    model_dir.join("checkpoints/train.safetensors")
}

/// Writes `weights.safetensors` (f16, what inference loads and the model id hashes) from
/// the training checkpoint.
pub fn export(model_dir: &Path) -> Result<()> {
    let exported = model_dir.join("weights.safetensors");
    // A checkpoint holds only the stages trained since the clone: the other networks stay
    // as they were exported.
    let mut all: HashMap<String, Tensor> = HashMap::new();
    if exported.exists() {
        all.extend(Tensor::read_safetensors(&exported).with_context(|| format!("reading {}", exported.display()))?);
    }
    let checkpoint = checkpoint_file(model_dir);
    all.extend(Tensor::read_safetensors(&checkpoint).with_context(|| format!("reading {}", checkpoint.display()))?);
    let mut entries: Vec<(String, Tensor)> = all.into_iter().map(|(k, v)| (k, v.to_kind(Kind::Half))).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = exported.with_extension("tmp");
    Tensor::write_safetensors(&entries, &tmp)?;
    std::fs::rename(&tmp, &exported)?;
    Ok(())
}

/// Writes the variables of `vs` into the model's weights file, keeping every other entry.
pub fn store_weights(vs: &nn::VarStore, file: &Path) -> Result<()> {
    let mut all: HashMap<String, Tensor> = HashMap::new();
    if file.exists() {
        for (k, v) in Tensor::read_safetensors(file).with_context(|| format!("reading {}", file.display()))? {
            all.insert(k, v);
        }
    }
    for (k, v) in vs.variables() {
        all.insert(k, v.detach().to_device(tch::Device::Cpu).contiguous());
    }
    let mut entries: Vec<(String, Tensor)> = all.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = file.with_extension("tmp");
    Tensor::write_safetensors(&entries, &tmp)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Loads into `vs` every variable the training checkpoint `file` has for it, and any it
/// lacks from the exported f16 `weights.safetensors` of the same model folder (a fresh
/// clone has no checkpoints, and a checkpoint only holds the stages trained since);
/// returns how many loaded.
pub fn restore_weights(vs: &mut nn::VarStore, file: &Path) -> Result<usize> {
    let exported = file.parent().and_then(Path::parent).map(|d| d.join("weights.safetensors"));
    let mut stored: HashMap<String, Tensor> = HashMap::new();
    // Exported first, so the checkpoint's full-precision values take precedence.
    for source in exported.iter().map(PathBuf::as_path).chain([file]) {
        if source.exists() {
            stored.extend(Tensor::read_safetensors(source)?);
        }
    }
    let mut n = 0;
    tch::no_grad(|| {
        for (k, mut v) in vs.variables() {
            if let Some(s) = stored.get(&k) {
                if s.size() == v.size() {
                    v.copy_(s);
                    n += 1;
                } else if is_fewer_rows_of(&s.size(), &v.size()) {
                    let rows = s.size()[0];
                    eprintln!("[restore] {k}: {:?} → {:?}, new rows copy row {}", s.size(), v.size(), rows - 1);
                    v.narrow(0, 0, rows).copy_(s);
                    // copy_ broadcasts the last row over the new ones.
                    v.narrow(0, rows, v.size()[0] - rows).copy_(&s.narrow(0, rows - 1, 1));
                    n += 1;
                }
            }
        }
    });
    Ok(n)
}

/// Starts a larger model from a trained smaller one (`weights`, a model folder's file) so that
/// it computes what the smaller one computed: each stored tensor is copied into the leading
/// block of the variable of the same name; where a variable has more inputs (any dimension but
/// the first) the new inputs' weights are zero, and new outputs (rows) keep their initial
/// values, which the zero inputs downstream ignore until they learn to use them. Variables the
/// file does not have keep their initial values (new residual blocks start as the identity).
/// `segments(name)` gives, for a layer whose input is a concatenation, the parts' channels in
/// the stored and in the new model: each part grows at its own end. Returns how many
/// variables were copied whole and how many grown.
pub fn grow_weights(
    vs: &mut nn::VarStore,
    weights: &Path,
    segments: impl Fn(&str) -> Option<(Vec<i64>, Vec<i64>)>,
) -> Result<(usize, usize)> {
    let stored: HashMap<String, Tensor> = Tensor::read_safetensors(weights)
        .with_context(|| format!("reading {}", weights.display()))?
        .into_iter()
        .collect();
    let (mut copied, mut grown) = (0, 0);
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let Some(s) = stored.get(&name) else { continue };
            let (from, to) = (s.size(), var.size());
            if from == to {
                var.copy_(s);
                copied += 1;
                continue;
            }
            ensure!(
                from.len() == to.len() && from.iter().zip(&to).all(|(a, b)| a <= b),
                "{name}: stored {from:?} does not fit in {to:?}"
            );
            for (d, (&a, &b)) in from.iter().zip(&to).enumerate().skip(2) {
                if a < b {
                    let _ = var.narrow(d as i64, a, b - a).zero_();
                }
            }
            let mut block = var.shallow_clone();
            for (d, &a) in from.iter().enumerate().filter(|&(d, _)| d != 1) {
                block = block.narrow(d as i64, 0, a);
            }
            let (old, new) = match (from.len() > 1).then(|| segments(&name)).flatten() {
                Some(parts) => parts,
                None => (from.get(1).map_or(vec![], |&c| vec![c]), to.get(1).map_or(vec![], |&c| vec![c])),
            };
            ensure!(
                old.len() == new.len()
                    && old.iter().sum::<i64>() == from.get(1).copied().unwrap_or(0)
                    && new.iter().sum::<i64>() == to.get(1).copied().unwrap_or(0)
                    && old.iter().zip(&new).all(|(a, b)| a <= b),
                "{name}: input parts {old:?} → {new:?} do not match {from:?} → {to:?}"
            );
            let s = s.to_kind(var.kind());
            if old.is_empty() {
                block.copy_(&s);
            } else {
                let (mut at_old, mut at_new) = (0, 0);
                for (&a, &b) in old.iter().zip(&new) {
                    let _ = block.narrow(1, at_new + a, b - a).zero_();
                    block.narrow(1, at_new, a).copy_(&s.narrow(1, at_old, a));
                    (at_old, at_new) = (at_old + a, at_new + b);
                }
            }
            eprintln!("[grow] {name}: {from:?} → {to:?}");
            grown += 1;
        }
        Ok(())
    })?;
    Ok((copied, grown))
}

/// `grow_weights` from a model of config `from` (its weights file `weights`) into variables of
/// a model of config `to`, with the model's concatenated inputs (`concat_inputs`) grown part
/// by part.
pub fn grow_model_weights(
    vs: &mut nn::VarStore,
    weights: &Path,
    from: &ModelConfig,
    to: &ModelConfig,
) -> Result<(usize, usize)> {
    grow_weights(vs, weights, |name| Some((concat_inputs(name, from)?, concat_inputs(name, to)?)))
}

/// A per-QP table whose model gained rate points (or a shared table that became per-QP: one
/// row grown to one per QP) keeps its rows; each new row starts from the last stored one, the
/// nearest rate point.
fn is_fewer_rows_of(stored: &[i64], var: &[i64]) -> bool {
    !stored.is_empty() && stored.len() == var.len() && stored[0] < var[0] && stored[1..] == var[1..]
}

/// The rate points a codec or diffusion run draws from, uniformly per step: `--qps` (a QP
/// named twice is drawn twice as often) or every QP of the model.
pub fn trained_qps(qps: Option<&[i64]>, num_qps: i64) -> Result<Vec<i64>> {
    let qps = qps.map_or_else(|| (0..num_qps).collect(), <[i64]>::to_vec);
    anyhow::ensure!(!qps.is_empty(), "--qps: name at least one rate point");
    if let Some(bad) = qps.iter().find(|&&q| !(0..num_qps).contains(&q)) {
        anyhow::bail!("--qps: rate point {bad} out of range (the model has {num_qps})");
    }
    Ok(qps)
}

pub fn psnr(a: &Tensor, b: &Tensor) -> f64 {
    psnr_of_mse((a - b).square().mean(Kind::Float).double_value(&[]))
}

/// PSNR of signals in [0, 1] from their MSE.
pub fn psnr_of_mse(mse: f64) -> f64 {
    -10.0 * mse.max(1e-12).log10()
}

/// A stage run on a tiny random model saved in a fresh temporary folder (`tag` names it),
/// with one real clip and two steps of batch 1 on 64 crops.
#[cfg(test)]
pub(crate) fn tiny_stage(tag: &str) -> (TrainingClips, StageOptions) {
    let dir = std::env::temp_dir().join(format!("gvc-{tag}-{}", std::process::id()));
    crate::model::gvc::GvcModel::random(crate::model::ModelConfig::tiny_for_tests(), 5, tch::Device::Cpu)
        .save(&dir)
        .unwrap();
    let clip = load_clip(&clip_dir().join("carphone_pristine.mp4"), Some(100), None).unwrap();
    let data = TrainingClips { clips: vec![("carphone".into(), clip)], focus: None };
    let stage = StageOptions {
        model_dir: dir,
        steps: 2,
        batch: 1,
        crop: 64,
        lr: 1e-3,
        seed: 1,
        minutes: None,
        grow_from: None,
    };
    (data, stage)
}

/// What a run of frames holds (`gvc-train data-report`): mean luma, the share of dark pixels
/// (luma below 0.2), fine detail (mean |luma − its 3×3 mean|, which grain and sharp edges raise)
/// and coarse detail (mean |3×3 mean − 9×9 mean|, which defocus lowers), both in 8-bit levels.
#[derive(Debug)]
pub struct ContentStats {
    pub luma: f64,
    pub dark_share: f64,
    pub fine_detail: f64,
    pub coarse_detail: f64,
}

impl ContentStats {
    /// Of frames (N,3,H,W) in [0,1], RGB.
    pub fn of(frames: &Tensor) -> Self {
        let blur = |x: &Tensor, k: i64| x.avg_pool2d([k, k], [1, 1], [k / 2, k / 2], false, false, None::<i64>);
        let weights = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]).to_device(frames.device());
        let luma = (frames * weights).sum_dim_intlist(1, true, Kind::Float);
        let (mean3, mean9) = (blur(&luma, 3), blur(&luma, 9));
        let mean = |x: &Tensor| x.mean(Kind::Float).double_value(&[]);
        Self {
            luma: mean(&luma),
            dark_share: mean(&luma.lt(0.2).to_kind(Kind::Float)),
            fine_detail: mean(&(&luma - &mean3).abs()) * 255.0,
            coarse_detail: mean(&(&mean3 - &mean9).abs()) * 255.0,
        }
    }
}

/// [`ContentStats`] per clip and window of `window` frames, marking held-out and training
/// frames: compares the training frames with the evaluation content the denoiser fails on
/// (bikes' dark, defocused second scene).
pub fn report_content(data: &TrainingClips, window: i64) -> Result<()> {
    ensure!(window > 0, "--window must be positive");
    println!("| clip | frames | set | luma | dark share | fine detail | coarse detail |");
    println!("|---|---|---|---|---|---|---|");
    for (name, clip) in &data.clips {
        let mut start = 0;
        while start < clip.len() {
            let count = window.min(clip.len() - start);
            let c = ContentStats::of(&clip.float_frames(start, count));
            let set = if start + count <= HELD_OUT_FRAMES {
                "held out"
            } else if start >= HELD_OUT_FRAMES {
                "training"
            } else {
                "both"
            };
            println!(
                "| {name} | {start}–{} | {set} | {:.3} | {:.3} | {:.2} | {:.2} |",
                start + count - 1,
                c.luma,
                c.dark_share,
                c.fine_detail,
                c.coarse_detail
            );
            start += count;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer whose input concatenates two parts, each grown at its own end, computes what
    /// the stored layer computed on the old parts, whatever the new channels hold.
    #[test]
    fn grown_concatenation_keeps_each_part_in_place() {
        let dir = std::env::temp_dir().join(format!("gvc-grow-parts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("weights.safetensors");
        tch::manual_seed(7);
        let small_vs = nn::VarStore::new(tch::Device::Cpu);
        let small = crate::model::layers::conv(small_vs.root() / "fuse", 2 + 3, 4, 3, 1);
        store_weights(&small_vs, &file).unwrap();
        let mut wide_vs = nn::VarStore::new(tch::Device::Cpu);
        let wide = crate::model::layers::conv(wide_vs.root() / "fuse", 4 + 3, 6, 3, 1);
        let parts = |name: &str| (name == "fuse.weight").then(|| (vec![2, 3], vec![4, 3]));
        assert_eq!(grow_weights(&mut wide_vs, &file, parts).unwrap(), (0, 2));
        let rand = |c| Tensor::randn([1, c, 5, 5], (Kind::Float, tch::Device::Cpu));
        let (a, extra, b) = (rand(2), rand(2), rand(3));
        let old = tch::no_grad(|| nn::Module::forward(&small, &Tensor::cat(&[&a, &b], 1)));
        let new = tch::no_grad(|| nn::Module::forward(&wide, &Tensor::cat(&[&a, &extra, &b], 1)));
        assert!(old.allclose(&new.narrow(1, 0, 4), 1e-5, 1e-6, false));
        // Parts that do not add up to the stored layer's inputs are refused.
        let wrong = |_: &str| Some((vec![1, 3], vec![3, 3]));
        assert!(grow_weights(&mut wide_vs, &file, wrong).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Focused crops come from the named frames only; a focus on held-out frames, an unknown
    /// clip or a malformed range is refused.
    #[test]
    fn focus_draws_its_share_from_its_frames() {
        // Every pixel of frame t holds t, so a crop tells which frames it came from.
        let clip = |offset: i64| Clip {
            frames: (Tensor::arange(120, (Kind::Uint8, tch::Device::Cpu)) + offset)
                .view([120, 1, 1, 1])
                .expand([120, 3, 32, 32], false)
                .contiguous(),
            fps_n: 25,
            fps_d: 1,
        };
        let mut data = TrainingClips { clips: vec![("a".into(), clip(0)), ("b".into(), clip(128))], focus: None };
        let first_frames = |data: &TrainingClips, seed| {
            let seqs = data.sample(&mut Rng::new(seed), 200, 2, 16).unwrap();
            let t = seqs.amin([2, 3, 4], false);
            let (first, second) = (
                Vec::<f32>::try_from(t.select(1, 0) * 255.0).unwrap(),
                Vec::<f32>::try_from(t.select(1, 1) * 255.0).unwrap(),
            );
            assert!(first.iter().zip(&second).all(|(a, b)| (b - a - 1.0).abs() < 1e-3), "runs of consecutive frames");
            first.into_iter().map(|v| v.round() as i64).collect::<Vec<_>>()
        };
        let unfocused = first_frames(&data, 3);
        assert!(unfocused.iter().all(|&t| (96..119).contains(&t) || (224..247).contains(&t)));
        data.focus = Some(Focus::parse("b:100-104,110-111", 1.0, &data.clips).unwrap());
        let all_focused = first_frames(&data, 3);
        assert!(all_focused.iter().all(|&t| [228, 229, 230, 231, 238].contains(&t)), "{all_focused:?}");
        assert!([228, 231, 238].iter().all(|t| all_focused.contains(t)), "every run start is drawn");
        data.focus = Some(Focus::parse("b:100-104", 0.25, &data.clips).unwrap());
        let quarter = first_frames(&data, 3).iter().filter(|&&t| (228..=231).contains(&t)).count();
        // 25 % focused plus 75 % of the uniform draw's 4 of 46 starts: ~31 % of 200.
        assert!((35..80).contains(&quarter), "{quarter} of 200 focused");
        for (spec, share, error) in [
            ("b:90-100", 0.5, "held out"),
            ("c:100-104", 0.5, "no training clip named c"),
            ("b:100", 0.5, "expected first-last"),
            ("b:104-100", 0.5, "has frames 0–119"),
            ("b:100-120", 0.5, "has frames 0–119"),
            ("b:100-104", 1.5, "between 0 and 1"),
        ] {
            let err = Focus::parse(spec, share, &data.clips).unwrap_err().to_string();
            assert!(err.contains(error), "{spec}: {err}");
        }
    }

    #[test]
    fn trained_qps_must_exist() {
        let err = trained_qps(Some(&[1, 5]), 5).unwrap_err().to_string();
        assert!(err.contains("rate point 5 out of range"), "{err}");
        assert!(trained_qps(Some(&[]), 5).is_err());
        assert_eq!(trained_qps(None, 3).unwrap(), [0, 1, 2]);
        assert_eq!(trained_qps(Some(&[3, 3, 0]), 5).unwrap(), [3, 3, 0], "a repeat weights the draw");
    }

    #[test]
    fn export_keeps_the_networks_the_checkpoint_lacks() {
        let dir = std::env::temp_dir().join(format!("gvc-export-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        let shipped =
            [("autoencoder.w", Tensor::from_slice(&[1.0f32, 2.0])), ("codec.w", Tensor::from_slice(&[3.0f32]))];
        Tensor::write_safetensors(&shipped, dir.join("weights.safetensors")).unwrap();
        // Only the codec trained since the clone.
        Tensor::write_safetensors(&[("codec.w", Tensor::from_slice(&[4.0f32]))], checkpoint_file(&dir)).unwrap();
        export(&dir).unwrap();
        let mut out = Tensor::read_safetensors(dir.join("weights.safetensors")).unwrap();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["autoencoder.w", "codec.w"]);
        assert!(out.iter().all(|(_, v)| v.kind() == Kind::Half));
        assert_eq!(Vec::<f32>::try_from(out[0].1.to_kind(Kind::Float)).unwrap(), [1.0, 2.0]);
        assert_eq!(Vec::<f32>::try_from(out[1].1.to_kind(Kind::Float)).unwrap(), [4.0], "the checkpoint wins");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shared_table_fills_every_row_of_its_per_qp_successor() {
        let dir = std::env::temp_dir().join(format!("gvc-restore-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        let file = checkpoint_file(&dir);
        let shared = Tensor::from_slice(&[0.5f32, -1.0]).view([1, 2, 1, 1]);
        let other = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([3, 1, 1, 1]);
        Tensor::write_safetensors(&[("t.z", shared), ("t.w", other)], &file).unwrap();
        let mut vs = nn::VarStore::new(tch::Device::Cpu);
        let z = vs.root().sub("t").zeros("z", &[3, 2, 1, 1]);
        // Not a shared row (leading dimension already 3, other shape): left as initialised.
        let w = vs.root().sub("t").zeros("w", &[3, 2, 1, 1]);
        assert_eq!(restore_weights(&mut vs, &file).unwrap(), 1);
        let rows = Vec::<f32>::try_from(z.flatten(0, -1)).unwrap();
        assert_eq!(rows, [0.5, -1.0, 0.5, -1.0, 0.5, -1.0]);
        assert_eq!(w.abs().sum(Kind::Float).double_value(&[]), 0.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_table_of_fewer_rate_points_keeps_its_rows_and_extends_the_last() {
        let dir = std::env::temp_dir().join(format!("gvc-grow-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        let file = checkpoint_file(&dir);
        let four = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).view([4, 2]);
        Tensor::write_safetensors(&[("s.q", four)], &file).unwrap();
        let mut vs = nn::VarStore::new(tch::Device::Cpu);
        let q = vs.root().sub("s").zeros("q", &[5, 2]);
        assert_eq!(restore_weights(&mut vs, &file).unwrap(), 1);
        let rows = Vec::<f32>::try_from(q.flatten(0, -1)).unwrap();
        assert_eq!(rows, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 7.0, 8.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Black frames are all dark without detail; a pixel checkerboard is mid-grey with fine
    /// detail and no coarse detail; blurring it removes the fine detail.
    #[test]
    fn content_stats_tell_dark_flat_and_grainy_frames_apart() {
        let black = ContentStats::of(&Tensor::zeros([2, 3, 32, 32], (Kind::Float, tch::Device::Cpu)));
        assert_eq!((black.luma, black.dark_share, black.fine_detail, black.coarse_detail), (0.0, 1.0, 0.0, 0.0));
        let ramp = Tensor::arange(32, (Kind::Float, tch::Device::Cpu));
        let checker =
            (ramp.view([32, 1]) + ramp.view([1, 32])).remainder(2.0).view([1, 1, 32, 32]).repeat([1, 3, 1, 1]);
        let grain = ContentStats::of(&checker);
        assert!((grain.luma - 0.5).abs() < 1e-6 && grain.dark_share == 0.5, "{grain:?}");
        assert!(grain.fine_detail > 100.0 && grain.coarse_detail < 20.0, "{grain:?}");
        let smooth = ContentStats::of(&checker.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>));
        assert!(smooth.fine_detail < 1e-3, "{smooth:?}");
    }
}
