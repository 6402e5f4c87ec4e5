//! One SVG line chart per metric: baseline and canary over time (seconds since each window's
//! start, so before/after windows line up). Deterministic text for snapshot tests.

use std::fmt::Write;

use crate::canary::analysis::PairSeries;
use crate::canary::report::human_number;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 40.0;
const BASELINE_COLOR: &str = "#1f77b4";
const CANARY_COLOR: &str = "#ff7f0e";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Polylines of finite points; NaN values split the line.
fn polylines(points: &[(f64, f64)], x: impl Fn(f64) -> f64, y: impl Fn(f64) -> f64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for &(t, v) in points {
        if v.is_finite() {
            if !current.is_empty() {
                current.push(' ');
            }
            let _ = write!(current, "{:.1},{:.1}", x(t), y(v));
        } else if !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// The chart of one pair; `title` names the metric and its classification.
pub fn chart(series: &PairSeries, title: &str) -> String {
    let finite = series
        .control
        .iter()
        .chain(&series.experiment)
        .filter(|(_, v)| v.is_finite());
    let (mut t_max, mut v_min, mut v_max) = (0.0_f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(t, v) in finite {
        t_max = t_max.max(t);
        v_min = v_min.min(v);
        v_max = v_max.max(v);
    }
    let has_data = v_min.is_finite();
    if !has_data {
        (v_min, v_max) = (0.0, 1.0);
    }
    if v_max - v_min < f64::EPSILON * v_max.abs().max(1.0) {
        let pad = if v_max == 0.0 { 1.0 } else { v_max.abs() * 0.1 };
        v_min -= pad;
        v_max += pad;
    }
    if t_max <= 0.0 {
        t_max = 1.0;
    }
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / t_max * plot_w;
    let y = |v: f64| TOP + (v_max - v) / (v_max - v_min) * plot_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, "  <title>{}</title>", escape(title));
    let _ = writeln!(
        out,
        r#"  <rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"  <text x="{LEFT}" y="20" font-size="13" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // Axes and value labels.
    let _ = writeln!(
        out,
        r##"  <path d="M{LEFT},{TOP} V{:.1} H{:.1}" stroke="#444" fill="none"/>"##,
        TOP + plot_h,
        LEFT + plot_w
    );
    for (v, label) in [(v_max, human_number(v_max)), (v_min, human_number(v_min))] {
        let _ = writeln!(
            out,
            r#"  <text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y(v) + 4.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        out,
        r#"  <text x="{LEFT}" y="{:.1}">0</text>"#,
        TOP + plot_h + 16.0
    );
    let _ = writeln!(
        out,
        r#"  <text x="{:.1}" y="{:.1}" text-anchor="end">{} min into the window</text>"#,
        LEFT + plot_w,
        TOP + plot_h + 16.0,
        human_number(t_max / 60.0)
    );
    for (points, color, name) in [
        (&series.control, BASELINE_COLOR, "baseline"),
        (&series.experiment, CANARY_COLOR, "canary"),
    ] {
        for line in polylines(points, x, y) {
            let _ = writeln!(
                out,
                r#"  <polyline class="{name}" points="{line}" fill="none" stroke="{color}" stroke-width="1.5"/>"#
            );
        }
    }
    if !has_data {
        let _ = writeln!(
            out,
            r##"  <text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#a00">no data</text>"##,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    // Legend.
    let lx = WIDTH - RIGHT - 150.0;
    let _ = writeln!(
        out,
        r#"  <rect x="{lx}" y="10" width="12" height="3" fill="{BASELINE_COLOR}"/><text x="{}" y="15">baseline</text>"#,
        lx + 16.0
    );
    let _ = writeln!(
        out,
        r#"  <rect x="{}" y="10" width="12" height="3" fill="{CANARY_COLOR}"/><text x="{}" y="15">canary</text>"#,
        lx + 80.0,
        lx + 96.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_splits_lines_and_empty_says_no_data() {
        let s = PairSeries {
            name: "m".into(),
            tags: Default::default(),
            control: vec![(0.0, 1.0), (60.0, f64::NAN), (120.0, 2.0)],
            experiment: vec![],
        };
        let svg = chart(&s, "m <Pass>");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("m &lt;Pass&gt;"));
        let empty = PairSeries {
            name: "m".into(),
            tags: Default::default(),
            control: vec![],
            experiment: vec![],
        };
        assert!(chart(&empty, "m").contains("no data"));
    }
}
