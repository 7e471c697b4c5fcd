//! `--plot`: latency by percentile as a self-contained SVG.
//!
//! Same x axis as HdrHistogram's plotter — the percentile on a log scale of
//! 1/(1-p), so 90%, 99%, 99.9%, … are evenly spaced and the tail gets the room
//! it deserves. The latency axis is logarithmic too: the series share one
//! plot, and on a linear axis a long tail in one (end-to-end latency behind
//! a backlog reaches seconds) flattens every other curve into the floor.
//! Written by hand because the format is a few dozen lines of text and a
//! plotting dependency would dwarf the crate.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use hdrhistogram::Histogram;

const W: f64 = 900.0;
const H: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// The x axis ends at 99.999%.
const NINES: f64 = 5.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// The decades (powers of ten, in µs) that hold every value in `lo..=hi`.
fn decades(lo_us: f64, hi_us: f64) -> (i32, i32) {
    let lo = lo_us.max(0.001).log10().floor() as i32;
    let hi = (hi_us.max(0.001).log10().ceil() as i32).max(lo + 1);
    (lo, hi)
}

/// `us` microseconds as a short axis label: 500 µs, 2 ms, 1.5 s.
fn label(us: f64) -> String {
    let (v, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "µs")
    };
    format!("{} {unit}", (v * 1000.0).round() / 1000.0)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the series (name, nanosecond histogram); empty ones are skipped.
pub fn render(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let series: Vec<_> = series.iter().filter(|(_, h)| !h.is_empty()).collect();
    let ymax_us = series
        .iter()
        .map(|(_, h)| h.value_at_quantile(1.0 - 10f64.powf(-NINES)) as f64 / 1000.0)
        .fold(0.0, f64::max);
    let ymin_us = series
        .iter()
        .map(|(_, h)| h.min() as f64 / 1000.0)
        .fold(f64::INFINITY, f64::min);
    let (lo, hi) = decades(ymin_us.min(ymax_us), ymax_us);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let xpos = |nines: f64| LEFT + nines / NINES * pw;
    let ypos = |us: f64| {
        let at = (us.max(1e-3).log10() - f64::from(lo)) / f64::from(hi - lo);
        TOP + ph - at.clamp(0.0, 1.0) * ph
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Grid and axes.
    for i in 0..=NINES as usize {
        let x = xpos(i as f64);
        let label = match i {
            0 => "0%".to_string(),
            n => format!("{}%", 100.0 - 100.0 * 10f64.powi(-(n as i32))),
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    // A labelled line at each decade; 2 and 5 of it, lighter, when the
    // plot spans few decades.
    for d in lo..=hi {
        let base = 10f64.powi(d);
        let minors: &[f64] = if d < hi && hi - lo <= 3 {
            &[2.0, 5.0]
        } else {
            &[]
        };
        for &m in std::iter::once(&1.0).chain(minors) {
            let v = base * m;
            let y = ypos(v);
            let stroke = if m == 1.0 { "#ccc" } else { "#eee" };
            let _ = writeln!(
                s,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{stroke}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                label(v)
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">latency (log scale)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Curves.
    for (i, (name, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts = String::new();
        let steps = 500;
        for k in 0..=steps {
            let nines = NINES * k as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-nines);
            let us = h.value_at_quantile(q) as f64 / 1000.0;
            let _ = write!(pts, "{:.1},{:.1} ", xpos(nines), ypos(us));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.trim_end()
        );
        let ly = TOP + 18.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{} (max {:.1} µs)</text>",
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            ly + 4.0,
            escape(name),
            h.max() as f64 / 1000.0
        );
    }
    if series.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no samples</text>"#,
            W / 2.0,
            H / 2.0
        );
    }
    s.push_str("</svg>\n");
    s
}

pub fn write(path: &Path, title: &str, series: &[(&str, &Histogram<u64>)]) -> io::Result<()> {
    std::fs::write(path, render(title, series))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_hist;

    #[test]
    fn renders_one_curve_per_series() {
        let mut a = new_hist();
        let mut b = new_hist();
        for v in 1..1000u64 {
            a.record(v * 1000).unwrap();
            b.record(v * 3000).unwrap();
        }
        let empty = new_hist();
        let svg = render("t <x>", &[("request", &a), ("e2e", &b), ("none", &empty)]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("99.999%"));
        assert!(svg.contains("t &lt;x&gt;"));
    }

    #[test]
    fn log_latency_axis() {
        assert_eq!(decades(12.0, 1800.0), (1, 4));
        assert_eq!(decades(100.0, 100.0), (2, 3));
        assert_eq!(decades(0.0, 0.0), (-3, -2));
        assert_eq!(label(20.0), "20 µs");
        assert_eq!(label(2500.0), "2.5 ms");
        assert_eq!(label(1_800_000.0), "1.8 s");
    }

    #[test]
    fn a_long_tail_leaves_room_for_a_short_one() {
        // 10..20 µs requests beside an end-to-end series reaching 2 s: on a
        // linear axis the first would sit within a pixel of the floor.
        let mut short = new_hist();
        let mut long = new_hist();
        for v in 0..1000u64 {
            short.record(10_000 + v * 10).unwrap();
            long.record(1_000_000 + v * 2_000_000).unwrap();
        }
        let svg = render("t", &[("request", &short), ("end-to-end", &long)]);
        let first = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        let ys: Vec<f64> = first
            .split("points=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"/>")
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        // It spans 10..20 µs: on a linear axis up to 2 s that is a
        // hundredth of a pixel; a third of a decade here.
        let spread = ys.iter().cloned().fold(0.0, f64::max) - ys.iter().cloned().fold(H, f64::min);
        assert!(
            spread > 10.0,
            "the short series is squashed into {spread:.3} px"
        );
        assert!(
            svg.contains("1 s") && svg.contains("10 µs"),
            "decade labels"
        );
    }
}
