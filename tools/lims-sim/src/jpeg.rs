//! Camera images: real baseline JPEGs of a noisy green leaf, ~15 KiB like LIMS's photos.

use jpeg_encoder::{ColorType, Encoder};
use rand::Rng;

/// Side of the square image; with the noise below it encodes to ~15 KiB at quality 85.
const SIDE: u16 = 168;

/// A JPEG of a leaf-green gradient with per-pixel noise (so every image differs and the
/// size is realistic).
pub fn leaf_jpeg(rng: &mut impl Rng) -> Vec<u8> {
    let side = usize::from(SIDE);
    let mut pixels = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            // Leaf texture: independent noise per channel (veins, speckles) keeps the
            // JPEG near a real photo's size instead of a flat gradient's few KiB.
            let shade = u8::try_from((x + y) * 60 / (2 * side)).unwrap_or(60);
            let (r, g, b): (u8, u8, u8) = (
                rng.random_range(0..70),
                rng.random_range(0..90),
                rng.random_range(0..60),
            );
            pixels.extend([10 + r, 70 + shade + g, 10 + b]);
        }
    }
    let mut out = Vec::new();
    Encoder::new(&mut out, 85)
        .encode(&pixels, SIDE, SIDE, ColorType::Rgb)
        .expect("encoding into memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_jpegs_of_about_fifteen_kib_and_all_different() {
        let mut rng = rand::rng();
        let (a, b) = (leaf_jpeg(&mut rng), leaf_jpeg(&mut rng));
        assert_eq!(a[..3], [0xff, 0xd8, 0xff], "JPEG SOI marker");
        assert_eq!(a[a.len() - 2..], [0xff, 0xd9], "JPEG EOI marker");
        assert!(
            (10 * 1024..20 * 1024).contains(&a.len()),
            "{} bytes",
            a.len()
        );
        assert_ne!(a, b);
    }
}
