// squint: `udiv`, integer division without an integer divide, shared by the depthwise
// kernels (`conv2d_dw_direct.wgsl`, `conv2d_f32_dw.wgsl`).

// floor(a / d) for a < 2^23 and d >= 1, `rcp` = f32(1 / d): a float estimate within 2 of the
// quotient (|a * rcp - a / d| < 2^-22 * a / d), corrected exactly by the remainder's sign and
// size. Vector floats instead of an integer division, which CPU adapters run lane by lane.
fn udiv(a: u32, d: u32, rcp: f32) -> u32 {
    var q = u32(f32(a) * rcp);
    var r = i32(a) - i32(q * d);
    let di = i32(d);
    for (var i = 0; i < 2; i++) {
        q = select(q, q - 1u, r < 0);
        r = select(r, r + di, r < 0);
        q = select(q, q + 1u, r >= di);
        r = select(r, r - di, r >= di);
    }
    return q;
}
