//! A minimal line-chart PNG: stacked panels, each with a frame and one polyline per
//! series scaled to the panel's largest value. No text (no font dependency): the CSV and
//! the README carry the numbers and the legend.

/// One line of a panel.
pub struct Series<'a> {
    /// Samples, evenly spaced in time.
    pub values: &'a [f64],
    /// RGB colour.
    pub color: [u8; 3],
}

struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if let (Ok(x), Ok(y)) = (usize::try_from(x), usize::try_from(y)) {
            if x < self.width && y < self.height {
                let i = (y * self.width + x) * 3;
                self.pixels[i..i + 3].copy_from_slice(&color);
            }
        }
    }

    /// A 2-pixel-thick line (Bresenham).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, color);
            self.set(x, y + 1, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// Renders `panels` stacked vertically into a PNG of `width` × (`panel_height` × panels).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)] // pixel maths on images far below 2^31 pixels
pub fn line_chart_png(panels: &[Vec<Series<'_>>], width: u32, panel_height: u32) -> Vec<u8> {
    let (w, ph) = (width as usize, panel_height as usize);
    let mut canvas = Canvas {
        width: w,
        height: ph * panels.len(),
        pixels: vec![255; w * ph * panels.len() * 3],
    };
    let margin = 12_i64;
    for (p, series) in panels.iter().enumerate() {
        let top = (p * ph) as i64 + margin;
        let bottom = ((p + 1) * ph) as i64 - margin;
        let (left, right) = (margin, w as i64 - margin);
        let grey = [190, 190, 190];
        canvas.line((left, top), (right, top), grey);
        canvas.line((left, bottom), (right, bottom), grey);
        canvas.line((left, top), (left, bottom), grey);
        canvas.line((right, top), (right, bottom), grey);
        let max = series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0_f64, f64::max)
            .max(1.0);
        for s in series {
            let n = s.values.len().max(2) - 1;
            let point = |i: usize, v: f64| {
                let x = left + ((right - left) as f64 * i as f64 / n as f64) as i64;
                let y = bottom - ((bottom - top) as f64 * v / max) as i64;
                (x, y)
            };
            for i in 1..s.values.len() {
                canvas.line(
                    point(i - 1, s.values[i - 1]),
                    point(i, s.values[i]),
                    s.color,
                );
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, (ph * panels.len()) as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("PNG header into memory");
    writer
        .write_image_data(&canvas.pixels)
        .expect("PNG data into memory");
    drop(writer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_a_png_with_the_series_colours_in_it() {
        let rising = [0.0, 1.0, 2.0, 3.0];
        let png = line_chart_png(
            &[vec![Series {
                values: &rising,
                color: [200, 0, 0],
            }]],
            100,
            50,
        );
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (100, 50));
        assert!(
            buf.chunks(3).any(|px| px == [200, 0, 0]),
            "the line is drawn"
        );
    }
}
