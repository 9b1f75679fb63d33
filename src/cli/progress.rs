//! The calibration progress bar (indicatif) the binary draws on stderr; the library only
//! reports progress through a callback.

use squint::error::Result;
use squint::pipeline::PreparedModel;
use squint::tensor::Tensor;

/// Calibrates `prepared` on `batches`, with a progress bar on stderr when there is more than
/// one batch.
pub fn calibrate_with_bar(prepared: &mut PreparedModel, batches: &[Tensor<f32>]) -> Result<()> {
    let bar = if batches.len() > 1 {
        let b = indicatif::ProgressBar::new(batches.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "calibrating {bar:30} {pos}/{len} batches ({elapsed})",
            )
            .expect("static template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let result = prepared.calibrate_all_with(batches, |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    result
}
