//! The calibration progress bar (indicatif) the binary draws on stderr; the library only
//! reports progress through a callback.

use squint::error::Result;
use squint::pipeline::qgraph::PreparedGraph;
use squint::pipeline::PreparedModel;
use squint::tensor::Tensor;

/// Calibrates `prepared` on `batches`, with a progress bar on stderr when there is more than
/// one batch.
pub fn calibrate_with_bar(prepared: &mut PreparedModel, batches: &[Tensor<f32>]) -> Result<()> {
    let bar = bar(batches.len());
    let result = prepared.calibrate_all_with(batches, |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    result
}

/// [`calibrate_with_bar`] for a graph with one input.
pub fn calibrate_graph_with_bar(
    prepared: &mut PreparedGraph,
    batches: &[Tensor<f32>],
) -> Result<()> {
    let bar = bar(batches.len());
    let batches: Vec<Vec<Tensor<f32>>> = batches.iter().map(|b| vec![b.clone()]).collect();
    let result = prepared.calibrate_all_with(&batches, |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    result
}

/// Runs `f` with a progress callback `(done, total)` drawn as the calibration bar of
/// `batches` batches.
pub fn with_bar<T>(batches: usize, f: impl FnOnce(&mut dyn FnMut(usize, usize)) -> T) -> T {
    let bar = bar(batches);
    let r = f(&mut |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    r
}

fn bar(batches: usize) -> indicatif::ProgressBar {
    if batches > 1 {
        let b = indicatif::ProgressBar::new(batches as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "calibrating {bar:30} {pos}/{len} batches ({elapsed})",
            )
            .expect("static template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    }
}
