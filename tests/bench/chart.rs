//! Draws the failover chart (not a test): reads `failover.csv` written by `failover-bench`
//! and renders one panel per advert interval with, for each event, the median client gap of
//! keepalived and of kube-vrrp as bars, p95 as a whisker, and the theoretical
//! Master_Down_Interval (Skew_Time for SIGTERM) as a black tick; above the SIGTERM bars, the
//! client's lost probes over all repetitions (planned handover), when the CSV has them.
//!
//! Usage: `cargo run -p kube-vrrp-tests --features chart --bin bench-chart -- [--csv FILE]
//! [--out FILE.png] [--font FILE.ttf]`. The font (default DejaVu Sans from the Debian package
//! fonts-dejavu-core) is loaded at run time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use plotters::prelude::*;
use plotters::style::FontStyle;

type Error = Box<dyn std::error::Error>;

const DAEMONS: [&str; 2] = ["keepalived", "kube-vrrp"];
const EVENTS: [&str; 3] = ["kill9", "linkdown", "sigterm"];

/// Per (interval, event, daemon): median, p95 and theory of the client gap (ms), and the lost
/// probes summed over the repetitions (`None` for a CSV without the `lost` column).
type Summary = BTreeMap<(u64, String, String), (f64, f64, f64, Option<u64>)>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summarize(csv: &str) -> Result<Summary, Error> {
    let mut samples: BTreeMap<(u64, String, String), (Vec<f64>, f64, Option<u64>)> =
        BTreeMap::new();
    let mut lines = csv.lines();
    let header = lines.next().ok_or("empty CSV")?;
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or(format!("CSV header has no column {name:?}"))
    };
    let (d, iv, ev, gap, th) = (
        col("daemon")?,
        col("interval_ms")?,
        col("event")?,
        col("gap_ms")?,
        col("theory_ms")?,
    );
    let lost = col("lost").ok();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or(format!("CSV line {}: too few fields", n + 2))
        };
        let num = |i: usize| -> Result<f64, Error> {
            get(i)?
                .parse::<f64>()
                .map_err(|e| format!("CSV line {}: field {i}: {e}", n + 2).into())
        };
        let key = (
            get(iv)?
                .parse::<u64>()
                .map_err(|e| format!("CSV line {}: interval_ms: {e}", n + 2))?,
            get(ev)?.to_string(),
            get(d)?.to_string(),
        );
        let e = samples.entry(key).or_insert((Vec::new(), 0.0, None));
        e.0.push(num(gap)?);
        e.1 = num(th)?;
        if let Some(l) = lost {
            let n = get(l)?
                .parse::<u64>()
                .map_err(|e| format!("CSV line {}: lost: {e}", n + 2))?;
            e.2 = Some(e.2.unwrap_or(0) + n);
        }
    }
    Ok(samples
        .into_iter()
        .map(|(k, (mut v, th, lost))| {
            v.sort_by(|a, b| a.total_cmp(b));
            (k, (percentile(&v, 0.5), percentile(&v, 0.95), th, lost))
        })
        .collect())
}

fn interval_label(ms: u64) -> String {
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{} s adverts", ms / 1000)
    } else {
        format!("{ms} ms adverts")
    }
}

fn draw(s: &Summary, out: &PathBuf) -> Result<(), Error> {
    let mut intervals: Vec<u64> = s.keys().map(|k| k.0).collect();
    intervals.dedup();
    intervals.sort_by(|a, b| b.cmp(a));
    let root = BitMapBackend::new(out, (1500, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(70);
    title.draw(&Text::new(
        "Client-visible failover gap: median (bar) and p95 (whisker); black tick = theory; lost = probes lost (10 ms) over all SIGTERM runs",
        (20, 20),
        ("sans-serif", 26).into_font(),
    ))?;
    let colours = [RGBColor(150, 150, 150), RGBColor(31, 119, 180)];
    for (i, d) in DAEMONS.iter().enumerate() {
        let x = 1000 + i as i32 * 200;
        title.draw(&Rectangle::new(
            [(x, 52), (x + 18, 66)],
            colours[i].filled(),
        ))?;
        title.draw(&Text::new(*d, (x + 24, 50), ("sans-serif", 18).into_font()))?;
    }
    let panels = body.split_evenly((1, intervals.len().max(1)));
    for (panel, &iv) in panels.iter().zip(&intervals) {
        let top = EVENTS
            .iter()
            .flat_map(|e| {
                DAEMONS.iter().filter_map(move |d| {
                    s.get(&(iv, e.to_string(), d.to_string()))
                        .map(|&(_, p95, th, _)| p95.max(th))
                })
            })
            .fold(0.0, f64::max)
            * 1.12;
        let mut chart = ChartBuilder::on(panel)
            .caption(interval_label(iv), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..3.0, 0.0..top.max(1.0))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(7)
            .x_label_formatter(&|v: &f64| {
                // Ticks land on 0, 0.5, 1, ...: name the event at each group's centre.
                let i = v.floor();
                if (v - i - 0.5).abs() < 0.01 {
                    EVENTS
                        .get(i as usize)
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v: &f64| format!("{v:.0}"))
            .light_line_style(WHITE)
            .y_desc("gap (ms)")
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        for (ei, e) in EVENTS.iter().enumerate() {
            let e = *e;
            let base = ei as f64;
            for (di, d) in DAEMONS.iter().enumerate() {
                let Some(&(med, p95, th, lost)) = s.get(&(iv, e.to_string(), d.to_string())) else {
                    continue;
                };
                let x0 = base + 0.15 + di as f64 * 0.35;
                let x1 = x0 + 0.3;
                let xm = (x0 + x1) / 2.0;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x1, med)],
                    colours[di].filled(),
                )))?;
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(xm, med), (xm, p95)],
                    BLACK.stroke_width(2),
                )))?;
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(xm - 0.06, p95), (xm + 0.06, p95)],
                    BLACK.stroke_width(2),
                )))?;
                // The median inside its bar, clear of the whisker and the theory tick.
                chart.draw_series(std::iter::once(Text::new(
                    format!("{med:.0}"),
                    (x0 + 0.03, med / 2.0),
                    ("sans-serif", 15).into_font().color(&WHITE),
                )))?;
                if let Some(n) = lost.filter(|_| e == "sigterm") {
                    // Staggered per daemon: a long count would run into its neighbour's.
                    chart.draw_series(std::iter::once(Text::new(
                        format!("lost {n}"),
                        (x0, p95.max(th) + top * (0.03 + 0.06 * di as f64)),
                        ("sans-serif", 14).into_font(),
                    )))?;
                }
                if di == 0 {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(base + 0.08, th), (base + 0.92, th)],
                        BLACK.stroke_width(3),
                    )))?;
                }
            }
        }
    }
    root.present()?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut csv = root.join("../target/bench/failover.csv");
    let mut out = root.join("bench/failover.png");
    let mut font = PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let Some(v) = args.next() else {
            eprintln!("bench-chart: {a} needs a value");
            return std::process::ExitCode::from(2);
        };
        match a.as_str() {
            "--csv" => csv = PathBuf::from(v),
            "--out" => out = PathBuf::from(v),
            "--font" => font = PathBuf::from(v),
            other => {
                eprintln!("bench-chart: unknown argument {other:?}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let run = || -> Result<(), Error> {
        let bytes = std::fs::read(&font).map_err(|e| {
            format!("font {font:?}: {e} (apt-get install fonts-dejavu-core, or pass --font)")
        })?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes.leak())
            .map_err(|_| format!("font {font:?}: not a usable TrueType font"))?;
        let text = std::fs::read_to_string(&csv).map_err(|e| format!("{csv:?}: {e}"))?;
        let s = summarize(&text)?;
        if s.is_empty() {
            return Err(format!("{csv:?}: no samples").into());
        }
        draw(&s, &out)?;
        Ok(())
    };
    match run() {
        Ok(()) => {
            println!("wrote {}", out.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-chart: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
