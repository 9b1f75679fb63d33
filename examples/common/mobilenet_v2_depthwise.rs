//! MobileNetV2's depthwise layers (3x3, padding 1), shared by the depthwise examples:
//! `(channels, input height = width, stride)` for a 224x224 image, and the 56x56 shape (iv)
//! of `squint bench`.

/// The layers, in network order, then (iv).
pub const LAYERS: [(usize, usize, usize); 11] = [
    (32, 112, 1),
    (96, 112, 2),
    (144, 56, 1),
    (144, 56, 2),
    (192, 28, 1),
    (192, 28, 2),
    (384, 14, 1),
    (576, 14, 1),
    (576, 14, 2),
    (960, 7, 1),
    (128, 56, 1),
];
