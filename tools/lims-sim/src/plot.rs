//! The experiment's chart, drawn with plotters: stacked panels, each with a title, axes
//! labelled with their units and tick values, and a legend. The font is bundled (an ASCII
//! subset of DejaVu Sans, 10 KB, `assets/`), so nothing is needed from the system, and the
//! PNG is encoded by the `png` crate from plotters' RGB buffer.

use std::sync::OnceLock;

use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

/// One line of a panel.
pub struct Series<'a> {
    /// Its legend entry.
    pub name: &'a str,
    /// `(x, y)` points in x order.
    pub points: &'a [(f64, f64)],
    /// Its colour.
    pub color: RGBColor,
}

/// One panel: a titled chart with its axes' names.
pub struct Panel<'a> {
    /// Shown above the panel.
    pub title: &'a str,
    /// The x axis's name, with its unit.
    pub x_label: &'a str,
    /// The y axis's name, with its unit.
    pub y_label: &'a str,
    /// Its lines.
    pub series: Vec<Series<'a>>,
}

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

fn font_registered() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok())
}

/// Renders `panels` stacked vertically into a PNG of `width` × (`panel_height` × panels).
pub fn line_chart_png(
    panels: &[Panel<'_>],
    width: u32,
    panel_height: u32,
) -> Result<Vec<u8>, String> {
    if !font_registered() {
        return Err("the bundled font does not load".to_owned());
    }
    let height = panel_height * u32::try_from(panels.len().max(1)).map_err(|e| e.to_string())?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    draw(&mut rgb, (width, height), panels).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw(
    rgb: &mut [u8],
    size: (u32, u32),
    panels: &[Panel<'_>],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        let points = || panel.series.iter().flat_map(|s| s.points.iter());
        let x_max = points().map(|p| p.0).fold(1.0, f64::max);
        let y_max = points().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        // Whole numbers where the scale allows: "200", not "200.0".
        let decimals = usize::from(y_max <= 10.0);
        let y_format = |y: &f64| format!("{y:.decimals$}");
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&y_format)
            .x_desc(panel.x_label)
            .y_desc(panel.y_label)
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for series in &panel.series {
            let color = series.color;
            chart
                .draw_series(LineSeries::new(
                    series.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(series.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FAMILY, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_a_png_of_the_asked_size_drawn_the_same_every_time() {
        let line = [(0.0, 0.0), (1.0, 2.0), (2.0, 1.0)];
        let panel = || Panel {
            title: "images moved",
            x_label: "time (s)",
            y_label: "images",
            series: vec![Series {
                name: "stream",
                points: &line,
                color: BLUE,
            }],
        };
        let png = line_chart_png(&[panel(), panel()], 400, 200).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (400, 400));
        assert_eq!(png, line_chart_png(&[panel(), panel()], 400, 200).unwrap());
    }
}
