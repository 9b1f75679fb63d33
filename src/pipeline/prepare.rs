//! prepare → calibrate: a [`PreparedModel`] is the float model with an observer at every
//! activation quantization point; calibration feeds float batches through it.

use super::model::{Layer, Model};
use super::qconfig::QConfig;
use crate::error::Result;
use crate::observers::Observer;
use crate::quant;
use crate::tensor::Tensor;

/// A model with an observer at every activation quantization point.
#[derive(Debug)]
pub struct PreparedModel {
    pub(super) model: Model,
    pub(super) qconfig: QConfig,
    pub(super) observers: Vec<(String, Box<dyn Observer>)>,
    batches: usize,
}

impl PreparedModel {
    /// Attaches an observer built from `qconfig.activation` to every quantization point.
    pub fn new(model: Model, qconfig: QConfig) -> Result<Self> {
        model.validate()?;
        let observers = model
            .points()
            .into_iter()
            .map(|p| {
                let cfg = qconfig.activation.clone().label(&p);
                Ok((p, cfg.build()?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PreparedModel {
            model,
            qconfig,
            observers,
            batches: 0,
        })
    }

    /// The float model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The qconfig.
    pub fn qconfig(&self) -> &QConfig {
        &self.qconfig
    }

    /// Calibration batches seen.
    pub fn batches_seen(&self) -> usize {
        self.batches
    }

    /// The observer of each point.
    pub fn observers(&self) -> impl Iterator<Item = (&str, &dyn Observer)> {
        self.observers.iter().map(|(n, o)| (n.as_str(), o.as_ref()))
    }

    /// Runs one float batch through the model, feeding every observer. As in PyTorch 2.15, the
    /// observer of a conv with a fused ReLU is called twice per batch (it is both the last child
    /// of the fused `Sequential` and a forward hook); this only matters for the moving-average
    /// observer.
    pub fn calibrate(&mut self, x: &Tensor<f32>) -> Result<()> {
        let (seen, _) = self.model.forward_points(x)?;
        let fused: Vec<bool> = std::iter::once(false)
            .chain(self.model.layers().iter().filter_map(|l| match l {
                Layer::Conv(c) => Some(c.relu),
                Layer::Relu { .. } => None,
            }))
            .collect();
        // Check every point first so that a bad batch changes no observer.
        for ((name, _), t) in self.observers.iter().zip(&seen) {
            quant::check_finite(&t.data, name)?;
        }
        for (((name, obs), t), twice) in self.observers.iter_mut().zip(&seen).zip(fused) {
            obs.observe(&t.data, name)?;
            if twice {
                obs.observe(&t.data, name)?;
            }
        }
        self.batches += 1;
        Ok(())
    }

    /// Calibrates on many batches, stopping at the first error. The library draws nothing on
    /// the terminal: with `progress` set, each batch is reported as a `log::info!` record
    /// (`calibrated 3/8 batches`), which shows only if the program installed a logger. For a
    /// progress bar or any other display, use [`PreparedModel::calibrate_all_with`].
    pub fn calibrate_all(&mut self, batches: &[Tensor<f32>], progress: bool) -> Result<()> {
        self.calibrate_all_with(batches, |done, total| {
            if progress {
                log::info!("calibrated {done}/{total} batches");
            }
        })
    }

    /// Calibrates on many batches, stopping at the first error, and calls
    /// `progress(done, total)` after each batch (`done` counts from 1 to `total`). The
    /// `squint` binary draws its progress bar this way.
    ///
    /// ```
    /// # use squint::pipeline::{Model, PreparedModel, QConfig};
    /// # use squint::shape::ConvParams;
    /// # use squint::tensor::Tensor;
    /// # fn main() -> squint::Result<()> {
    /// # let w = Tensor::new(vec![1, 1, 1, 1], vec![1.0])?;
    /// # let model = Model::builder().conv2d("c", w, None, ConvParams::default(), false).build()?;
    /// let mut prepared = PreparedModel::new(model, QConfig::qnnpack())?;
    /// let batches = vec![Tensor::new(vec![1, 1, 2, 2], vec![0.0, 0.5, 1.0, 2.0])?; 3];
    /// let mut seen = Vec::new();
    /// prepared.calibrate_all_with(&batches, |done, total| seen.push((done, total)))?;
    /// assert_eq!(seen, [(1, 3), (2, 3), (3, 3)]);
    /// # Ok(()) }
    /// ```
    pub fn calibrate_all_with(
        &mut self,
        batches: &[Tensor<f32>],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<()> {
        for (i, b) in batches.iter().enumerate() {
            self.calibrate(b)?;
            progress(i + 1, batches.len());
        }
        Ok(())
    }
}
