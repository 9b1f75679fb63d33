//! Observers: calibration statistics and the qparams they choose.
