//! Result images and plots: PNG grids and line plots.

use std::path::Path;

use image::RgbImage;
use plotters::prelude::*;

/// Tiles equally sized images into a grid of `cols` columns with a 2-pixel white gutter.
pub fn grid(images: &[RgbImage], cols: usize) -> RgbImage {
    let (w, h) = (images[0].width(), images[0].height());
    let cols = cols.max(1).min(images.len()) as u32;
    let rows = (images.len() as u32).div_ceil(cols);
    let g = 2;
    let mut out = RgbImage::from_pixel(cols * (w + g) + g, rows * (h + g) + g, image::Rgb([255, 255, 255]));
    for (i, img) in images.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        image::imageops::replace(&mut out, img, (g + c * (w + g)) as i64, (g + r * (h + g)) as i64);
    }
    out
}

/// Enlarges `img` by the smallest integer factor that makes its short side at least `min_side`
/// (nearest neighbour, so pixels stay crisp); small images are unreadable at their own size.
pub fn enlarge(img: &RgbImage, min_side: u32) -> RgbImage {
    let short = img.width().min(img.height()).max(1);
    let k = min_side.div_ceil(short).max(1);
    if k == 1 {
        return img.clone();
    }
    image::imageops::resize(img, img.width() * k, img.height() * k, image::imageops::FilterType::Nearest)
}

/// A plot that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{0}: nothing to plot")]
    Empty(std::path::PathBuf),
    #[error("cannot draw {path}: {msg}")]
    Draw { path: std::path::PathBuf, msg: String },
}

/// Writes a line plot of `series` (name, points) as SVG.
pub fn line_plot_svg(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<(), PlotError> {
    let pts: Vec<&(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter()).collect();
    if pts.is_empty() {
        return Err(PlotError::Empty(path.to_path_buf()));
    }
    let draw = |e: &dyn std::fmt::Display| PlotError::Draw { path: path.to_path_buf(), msg: e.to_string() };
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    // Drawn into memory and written atomically: a killed run never leaves half a plot.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
            .map_err(|e| draw(&e))?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|e| draw(&e))?;
        let colours = [BLUE, RED, GREEN, MAGENTA, CYAN];
        for (i, (name, p)) in series.iter().enumerate() {
            let c = colours[i % colours.len()];
            chart
                .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
                .map_err(|e| draw(&e))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    maetok_nn::io::write_atomic(path, svg.as_bytes()).map_err(|e| draw(&e))
}

/// Writes `img` as a PNG through a temporary file and a rename (a full disk or a killed process
/// leaves the previous file, or none, never half an image).
pub fn save_png(img: &RgbImage, path: &Path) -> std::io::Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).map_err(std::io::Error::other)?;
    maetok_nn::io::write_atomic(path, &buf.into_inner())
}
