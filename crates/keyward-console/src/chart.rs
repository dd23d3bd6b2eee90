//! Stacked bar charts as inline SVG, drawn on the server: no script, no
//! stylesheet of their own, nothing fetched — so they pass the console's
//! Content-Security-Policy and show with script turned off.
//!
//! [`render`] takes a [`Chart`] (its bars, each a stack of counts by
//! [`Layer`]) and returns a `<figure>`: the SVG (`role="img"`, with a
//! `<title>` and a `<desc>` that says what it shows in words), the legend
//! as text, and the same numbers as a table inside `<details>` for screen
//! readers and for reading exact values. [`layout`] is the geometry alone,
//! so the arithmetic is tested without parsing SVG.
//!
//! Colours come from the stylesheet through each layer's class (SVG
//! presentation attributes and classes, never `style=`), so the chart
//! follows the light and dark themes. Every interpolated text goes through
//! `maud`, which escapes it.

use maud::{html, Markup};

/// The drawing's size in SVG units; the stylesheet scales it to the page.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
/// Room for the last time label, centred on the last bar.
const RIGHT: f64 = 24.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 40.0;
/// At most this many steps on the count axis (so at most one more tick).
const Y_STEPS: u128 = 4;

/// One layer of every stack: what it counts, and the class that colours it
/// (`chart-<class>` on the bars and the legend's swatch).
#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub label: &'static str,
    pub class: &'static str,
}

/// One bar: a bucket of time and its counts, one per layer, bottom first.
#[derive(Debug, Clone)]
pub struct Bar {
    /// The bucket in full (`2026-05-03 14:05 UTC`): the bar's tooltip and
    /// the table's row header.
    pub label: String,
    /// The time axis' label under this bar, if it gets one.
    pub tick: Option<String>,
    /// Counts by layer; negative counts are drawn as zero.
    pub values: Vec<i64>,
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    /// Prefix of the element ids (`<id>-title`), unique on the page.
    pub id: &'a str,
    /// What the chart shows, e.g. "Requests per minute, last hour".
    pub title: &'a str,
    /// The time axis' title, e.g. "Time (UTC)".
    pub time_axis: &'a str,
    /// The count axis' title, e.g. "Requests".
    pub count_axis: &'a str,
    pub layers: &'a [Layer],
    pub bars: &'a [Bar],
}

/// A piece of a stack, in SVG units.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Index into [`Chart::layers`].
    pub layer: usize,
    pub y: f64,
    pub height: f64,
}

/// A bar's place and its stacked pieces (zero counts have none).
#[derive(Debug, Clone, PartialEq)]
pub struct BarBox {
    pub x: f64,
    pub width: f64,
    pub total: i64,
    pub segments: Vec<Segment>,
}

/// A labelled tick on an axis: where it is and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub at: f64,
    pub text: String,
}

/// The chart's geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub bars: Vec<BarBox>,
    /// The count the top of the plot stands for (a round number at or
    /// above the tallest stack; 0 when every count is 0).
    pub top: i64,
    /// Count ticks, bottom (0) first; `at` is the y coordinate.
    pub y_ticks: Vec<Tick>,
    /// Time ticks; `at` is the x coordinate of the bar's middle.
    pub x_ticks: Vec<Tick>,
}

/// The plot's bottom edge (the zero line) and height.
fn plot_bottom() -> f64 {
    HEIGHT - BOTTOM
}

fn plot_height() -> f64 {
    HEIGHT - BOTTOM - TOP
}

fn plot_width() -> f64 {
    WIDTH - LEFT - RIGHT
}

/// The smallest of 1, 2, 5, 10, 20, 50… at or above `at_least` (≥ 1).
fn round_step(at_least: u128) -> u128 {
    let mut power: u128 = 1;
    loop {
        for m in [1, 2, 5] {
            let step = m * power;
            if step >= at_least {
                return step;
            }
        }
        power = power.saturating_mul(10);
    }
}

/// The count axis for a tallest stack of `max`: a round step and the top
/// (a whole number of steps, at most [`Y_STEPS`]).
fn count_axis(max: i64) -> (i64, i64) {
    let max = u128::try_from(max).unwrap_or(0);
    if max == 0 {
        return (0, 0);
    }
    let step = round_step(max.div_ceil(Y_STEPS));
    let top = max.div_ceil(step) * step;
    (
        i64::try_from(step).unwrap_or(i64::MAX),
        i64::try_from(top).unwrap_or(i64::MAX),
    )
}

/// `1,234` below ten thousand, then `12.3k`, `4.5M`, `6.7B`, `8.9T`.
pub fn compact(n: i64) -> String {
    let abs = n.unsigned_abs();
    if abs < 10_000 {
        return grouped(n);
    }
    let (div, unit) = match abs {
        0..=999_999 => (1e3, "k"),
        1_000_000..=999_999_999 => (1e6, "M"),
        1_000_000_000..=999_999_999_999 => (1e9, "B"),
        _ => (1e12, "T"),
    };
    let v = n as f64 / div;
    let text = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    };
    format!("{}{unit}", text.trim_end_matches(".0"))
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Two decimals, without trailing zeros (`12.5`, `3`).
fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// Where everything goes: bar heights are proportional to their counts
/// against [`Layout::top`].
pub fn layout(chart: &Chart<'_>) -> Layout {
    let totals: Vec<i64> = chart
        .bars
        .iter()
        .map(|b| {
            b.values
                .iter()
                .take(chart.layers.len())
                .map(|v| (*v).max(0))
                .fold(0i64, i64::saturating_add)
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0);
    let (step, top) = count_axis(max);
    let n = chart.bars.len().max(1) as f64;
    let slot = plot_width() / n;
    // A gap between bars while there is room for one.
    let gap = if slot >= 6.0 { slot * 0.2 } else { 0.0 };
    let scale = if top > 0 {
        plot_height() / top as f64
    } else {
        0.0
    };
    let bars = chart
        .bars
        .iter()
        .zip(&totals)
        .enumerate()
        .map(|(i, (bar, total))| {
            let mut y = plot_bottom();
            let segments = bar
                .values
                .iter()
                .take(chart.layers.len())
                .enumerate()
                .filter(|(_, v)| **v > 0)
                .map(|(layer, v)| {
                    let height = *v as f64 * scale;
                    y -= height;
                    Segment { layer, y, height }
                })
                .collect();
            BarBox {
                x: LEFT + i as f64 * slot + gap / 2.0,
                width: slot - gap,
                total: *total,
                segments,
            }
        })
        .collect();
    let y_ticks = if top == 0 {
        vec![Tick {
            at: plot_bottom(),
            text: "0".into(),
        }]
    } else {
        (0..=top / step)
            .map(|i| {
                let value = i * step;
                Tick {
                    at: plot_bottom() - value as f64 * scale,
                    text: compact(value),
                }
            })
            .collect()
    };
    let x_ticks = chart
        .bars
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            b.tick.as_ref().map(|t| Tick {
                at: LEFT + (i as f64 + 0.5) * slot,
                text: t.clone(),
            })
        })
        .collect();
    Layout {
        bars,
        top,
        y_ticks,
        x_ticks,
    }
}

/// The chart as a `<figure>`: SVG, legend and data table.
pub fn render(chart: &Chart<'_>) -> Markup {
    let l = layout(chart);
    let title_id = format!("{}-title", chart.id);
    let desc_id = format!("{}-desc", chart.id);
    let total: i64 = l.bars.iter().map(|b| b.total).fold(0, i64::saturating_add);
    let busiest = chart
        .bars
        .iter()
        .zip(&l.bars)
        .filter(|(_, b)| b.total > 0)
        .max_by_key(|(_, b)| b.total);
    let description = match busiest {
        Some((bar, b)) => format!(
            "{} bars, one per bucket, each stacked by {}. {} in all; the most, {}, at {}.",
            chart.bars.len(),
            layer_list(chart.layers),
            grouped(total),
            grouped(b.total),
            bar.label
        ),
        None => format!(
            "{} bars, all empty: nothing in this range.",
            chart.bars.len()
        ),
    };
    let right = WIDTH - RIGHT;
    html! {
        figure.chart {
            svg.chart-svg role="img" aria-labelledby={ (title_id) " " (desc_id) }
                viewBox={ "0 0 " (num(WIDTH)) " " (num(HEIGHT)) } preserveAspectRatio="xMidYMid meet"
                xmlns="http://www.w3.org/2000/svg" {
                title #(title_id) { (chart.title) }
                desc #(desc_id) { (description) }
                g.chart-grid {
                    @for t in &l.y_ticks {
                        line x1=(num(LEFT)) x2=(num(right)) y1=(num(t.at)) y2=(num(t.at)) {}
                        text.chart-tick x=(num(LEFT - 6.0)) y=(num(t.at + 4.0)) text-anchor="end" { (t.text) }
                    }
                }
                g.chart-bars {
                    @for (bar, b) in chart.bars.iter().zip(&l.bars) {
                        @if !b.segments.is_empty() {
                            g.chart-bar {
                                title { (bar.label) ": " (bar_summary(chart.layers, bar)) }
                                @for s in &b.segments {
                                    @if let Some(layer) = chart.layers.get(s.layer) {
                                        rect class={ "chart-" (layer.class) } x=(num(b.x)) y=(num(s.y))
                                            width=(num(b.width)) height=(num(s.height)) {}
                                    }
                                }
                            }
                        }
                    }
                }
                line.chart-axis x1=(num(LEFT)) x2=(num(right)) y1=(num(plot_bottom())) y2=(num(plot_bottom())) {}
                g.chart-time {
                    @for t in &l.x_ticks {
                        line.chart-axis x1=(num(t.at)) x2=(num(t.at)) y1=(num(plot_bottom())) y2=(num(plot_bottom() + 4.0)) {}
                        text.chart-tick x=(num(t.at)) y=(num(plot_bottom() + 16.0)) text-anchor="middle" { (t.text) }
                    }
                }
                text.chart-axis-title x=(num(LEFT + plot_width() / 2.0)) y=(num(HEIGHT - 4.0)) text-anchor="middle" { (chart.time_axis) }
                text.chart-axis-title x="12" y=(num(TOP + plot_height() / 2.0)) text-anchor="middle"
                    transform={ "rotate(-90 12 " (num(TOP + plot_height() / 2.0)) ")" } { (chart.count_axis) }
            }
            figcaption.chart-legend {
                span.visually-hidden { "Legend: " }
                @for layer in chart.layers {
                    span.chart-key {
                        span class={ "chart-swatch chart-" (layer.class) } aria-hidden="true" {}
                        (layer.label)
                    }
                }
            }
            details.chart-data {
                summary { "Show the numbers as a table" }
                @if total == 0 {
                    p.muted { "Nothing in this range." }
                } @else {
                    div.table-wrap {
                        table.table.table-compact {
                            caption.visually-hidden { (chart.title) }
                            thead { tr {
                                th scope="col" { "Time" }
                                @for layer in chart.layers { th.num scope="col" { (layer.label) } }
                                th.num scope="col" { "Total" }
                            } }
                            tbody {
                                @for (bar, b) in chart.bars.iter().zip(&l.bars) {
                                    @if b.total > 0 {
                                        tr {
                                            th scope="row" { (bar.label) }
                                            @for i in 0..chart.layers.len() {
                                                td.num { (grouped(bar.values.get(i).copied().unwrap_or(0).max(0))) }
                                            }
                                            td.num { (grouped(b.total)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    p.hint { "Buckets with nothing in them are left out." }
                }
            }
        }
    }
}

fn layer_list(layers: &[Layer]) -> String {
    let names: Vec<String> = layers.iter().map(|l| l.label.to_lowercase()).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// `12 successes, 3 denials` (the non-zero layers), or `nothing`.
fn bar_summary(layers: &[Layer], bar: &Bar) -> String {
    let parts: Vec<String> = layers
        .iter()
        .zip(&bar.values)
        .filter(|(_, v)| **v > 0)
        .map(|(l, v)| format!("{} {}", grouped(*v), l.label.to_lowercase()))
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERS: &[Layer] = &[
        Layer {
            label: "Successes",
            class: "success",
        },
        Layer {
            label: "Denials",
            class: "denied",
        },
    ];

    fn bar(label: &str, values: &[i64]) -> Bar {
        Bar {
            label: label.into(),
            tick: None,
            values: values.to_vec(),
        }
    }

    fn chart<'a>(bars: &'a [Bar], title: &'a str) -> Chart<'a> {
        Chart {
            id: "c",
            title,
            time_axis: "Time (UTC)",
            count_axis: "Requests",
            layers: LAYERS,
            bars,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn bar_heights_are_proportional_to_counts_and_stack_from_the_zero_line() {
        let bars = [bar("a", &[10, 0]), bar("b", &[20, 20]), bar("c", &[0, 0])];
        let l = layout(&chart(&bars, "t"));
        assert_eq!(l.top, 40);
        let unit = plot_height() / 40.0;
        // 10 successes: one segment, a quarter of the plot, on the zero line.
        assert_eq!(l.bars[0].segments.len(), 1);
        assert!(close(l.bars[0].segments[0].height, 10.0 * unit));
        assert!(close(
            l.bars[0].segments[0].y + l.bars[0].segments[0].height,
            plot_bottom()
        ));
        // 20 + 20: two equal segments, the second on top of the first, the
        // whole plot tall.
        let b = &l.bars[1];
        assert_eq!(b.segments.len(), 2);
        assert!(close(b.segments[0].height, b.segments[1].height));
        assert!(close(
            b.segments[1].y + b.segments[1].height,
            b.segments[0].y
        ));
        assert!(close(b.segments[1].y, TOP));
        assert_eq!(b.total, 40);
        assert!(close(
            b.segments[0].height,
            2.0 * l.bars[0].segments[0].height
        ));
        // Nothing, nothing drawn.
        assert!(l.bars[2].segments.is_empty());
        // Bars sit side by side inside the plot, left to right.
        assert!(l.bars[0].x >= LEFT && l.bars[2].x + l.bars[2].width <= WIDTH - RIGHT + 1e-9);
        assert!(l.bars[0].x < l.bars[1].x && l.bars[1].x < l.bars[2].x);
        let svg = render(&chart(&bars, "t")).into_string();
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert_eq!(svg.matches("chart-denied\"").count(), 2); // a bar and the swatch
    }

    #[test]
    fn an_all_zero_series_draws_no_bar_and_divides_by_nothing() {
        let bars: Vec<Bar> = (0..60).map(|i| bar(&i.to_string(), &[0, 0])).collect();
        let l = layout(&chart(&bars, "t"));
        assert_eq!(l.top, 0);
        assert!(l.bars.iter().all(|b| b.segments.is_empty()));
        assert_eq!(
            l.y_ticks,
            vec![Tick {
                at: plot_bottom(),
                text: "0".into()
            }]
        );
        let svg = render(&chart(&bars, "t")).into_string();
        assert!(!svg.contains("<rect"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(svg.contains("all empty"));
        assert!(svg.contains("Nothing in this range."));
        // No bars at all is a chart too.
        let l = layout(&chart(&[], "t"));
        assert!(l.bars.is_empty() && l.top == 0);
    }

    #[test]
    fn large_numbers_keep_their_proportions_and_read_compactly() {
        let big = i64::MAX / 4;
        let bars = [bar("a", &[big, big]), bar("b", &[big, 0])];
        let l = layout(&chart(&bars, "t"));
        assert!(l.top >= 2 * big);
        let a: f64 = l.bars[0].segments.iter().map(|s| s.height).sum();
        let b: f64 = l.bars[1].segments.iter().map(|s| s.height).sum();
        assert!((a / b - 2.0).abs() < 1e-9, "{a} {b}");
        assert!(a <= plot_height() + 1e-9);
        // A sum past i64::MAX saturates instead of wrapping.
        let huge = [bar("a", &[i64::MAX, i64::MAX])];
        let l = layout(&chart(&huge, "t"));
        assert_eq!(l.bars[0].total, i64::MAX);
        assert!(l.bars[0].segments.iter().all(|s| s.height.is_finite()));
        assert_eq!(compact(1_234), "1,234");
        assert_eq!(compact(12_345), "12.3k");
        assert_eq!(compact(250_000), "250k");
        assert_eq!(compact(3_000_000), "3M");
        assert_eq!(compact(4_560_000_000), "4.6B");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(-1_000), "-1,000");
        assert_eq!(grouped(999), "999");
        let svg = render(&chart(&[bar("x", &[2_000_000, 0])], "t")).into_string();
        assert!(svg.contains(">2M<"), "{svg}");
        assert!(svg.contains("2,000,000"));
    }

    #[test]
    fn count_ticks_are_round_and_cover_the_tallest_stack() {
        for max in [1, 3, 4, 5, 7, 9, 40, 41, 999, 1_001, 123_456_789] {
            let (s, t) = count_axis(max);
            // A 1-2-5 step, and at most four of them cover the tallest stack.
            let lead = s / 10_i64.pow(s.ilog10());
            assert!(
                matches!(lead, 1 | 2 | 5) && s % 10_i64.pow(s.ilog10()) == 0,
                "max {max}: step {s}"
            );
            assert!(t >= max && t % s == 0 && t / s <= 4, "max {max}: {s} {t}");
        }
        assert_eq!(count_axis(40), (10, 40));
        assert_eq!(count_axis(5), (2, 6));
        assert_eq!(count_axis(999), (500, 1000));
        let bars = [bar("a", &[7, 0])];
        let l = layout(&chart(&bars, "t"));
        let texts: Vec<&str> = l.y_ticks.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["0", "2", "4", "6", "8"]);
        assert!(close(l.y_ticks[0].at, plot_bottom()));
        assert!(close(l.y_ticks[4].at, TOP));
        // Time ticks under the bars that carry one, at the bar's middle.
        let mut bars: Vec<Bar> = (0..6).map(|i| bar(&i.to_string(), &[1, 0])).collect();
        bars[0].tick = Some("14:00".into());
        bars[3].tick = Some("14:03".into());
        let l = layout(&chart(&bars, "t"));
        assert_eq!(l.x_ticks.len(), 2);
        let mid = l.bars[3].x + l.bars[3].width / 2.0;
        assert!(close(l.x_ticks[1].at, mid));
        assert_eq!(l.x_ticks[1].text, "14:03");
    }

    #[test]
    fn every_text_is_escaped() {
        let bars = [Bar {
            label: "<b>bucket</b>".into(),
            tick: Some("\"><script>alert(1)</script>".into()),
            values: vec![1, 1],
        }];
        let layers = [Layer {
            label: "<img src=x>",
            class: "success",
        }];
        let c = Chart {
            id: "c",
            title: "<script>t</script>",
            time_axis: "a & b",
            count_axis: "<i>",
            layers: &layers,
            bars: &bars,
        };
        let svg = render(&c).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(!svg.contains("<b>") && !svg.contains("<img") && !svg.contains("<i>"));
        assert!(svg.contains("&lt;script&gt;t&lt;/script&gt;"));
        assert!(svg.contains("a &amp; b"));
        // One layer only: the second value is not drawn.
        assert_eq!(layout(&c).bars[0].total, 1);
    }

    #[test]
    fn the_figure_is_an_image_with_a_name_a_legend_and_a_table() {
        let mut bars = vec![
            bar("2026-05-03 14:00 UTC", &[3, 1]),
            bar("2026-05-03 15:00 UTC", &[0, 0]),
        ];
        bars[0].tick = Some("14:00".into());
        let svg = render(&chart(&bars, "Requests per hour")).into_string();
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains(r#"aria-labelledby="c-title c-desc""#));
        assert!(svg.contains(r#"<title id="c-title">Requests per hour</title>"#));
        assert!(
            svg.contains("4 in all; the most, 4, at 2026-05-03 14:00 UTC."),
            "{svg}"
        );
        assert!(svg.contains("3 successes, 1 denials"));
        assert!(svg.contains("Successes") && svg.contains("Denials"));
        assert!(svg.contains("<details"));
        // The table has the non-empty bucket only.
        assert!(svg.contains(r#"<th scope="row">2026-05-03 14:00 UTC</th>"#));
        assert!(!svg.contains(r#"<th scope="row">2026-05-03 15:00 UTC</th>"#));
        assert!(!svg.contains("style="));
    }
}
