//! How the demo looks: aligned tables, ANSI colours (only on a terminal and without
//! `--no-color`), durations in readable units, and the live table redrawn in place.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set when stdout's reader went away (`demo | head`): the demo stops, cleans up and exits 0.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether writing to stdout failed with a broken pipe.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::SeqCst)
}

/// Write to stdout and flush (unlike `print!`, never panics): a broken pipe marks stdout closed
/// and later output is dropped; other errors are ignored (the demo's output is best effort).
pub fn out(args: std::fmt::Arguments<'_>) {
    if stdout_closed() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::SeqCst);
    }
}

/// [`out`] plus a newline.
pub fn outln(args: std::fmt::Arguments<'_>) {
    out(format_args!("{args}\n"));
}

/// Output settings.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Use ANSI colours.
    pub color: bool,
    /// stdout is a terminal: redraw the live table in place.
    pub live: bool,
    /// Terminal width: live table lines are cut to it so redrawing in place stays exact.
    pub width: Option<usize>,
}

/// The width of the terminal on stdout, if it is one.
pub fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills the winsize struct it is given; nothing else is touched.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// ANSI colours used.
#[derive(Clone, Copy, Debug)]
pub enum Paint {
    /// Bold.
    Bold,
    /// Dimmed.
    Dim,
    /// Green.
    Green,
    /// Yellow.
    Yellow,
    /// Red.
    Red,
    /// Cyan.
    Cyan,
}

impl Style {
    /// `text` in colour `p` (plain without colours).
    pub fn paint(&self, p: Paint, text: &str) -> String {
        if !self.color || text.is_empty() {
            return text.to_owned();
        }
        let code = match p {
            Paint::Bold => "1",
            Paint::Dim => "2",
            Paint::Green => "1;32",
            Paint::Yellow => "33",
            Paint::Red => "1;31",
            Paint::Cyan => "36",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// A table cell: its text and optional colour.
pub type Cell = (String, Option<Paint>);

/// Render rows (the first is the header) with aligned columns, two spaces apart; colour is
/// applied after padding so alignment holds.
pub fn table(style: &Style, indent: &str, rows: &[Vec<Cell>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|(t, _)| t.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let mut line = indent.to_owned();
            let mut used = indent.chars().count();
            for (c, (text, paint)) in row.iter().enumerate() {
                let last = c + 1 == row.len();
                let text = &match style.width {
                    // The last column gives way so the line never wraps.
                    Some(w) if last && used + text.chars().count() >= w => {
                        let keep = w.saturating_sub(used + 2);
                        let mut t: String = text.chars().take(keep).collect();
                        t.push('~');
                        t
                    }
                    _ => text.clone(),
                };
                used += width[c] + 2;
                let padded = if last {
                    text.to_owned()
                } else {
                    format!("{text:<w$}  ", w = width[c])
                };
                let paint = if i == 0 { Some(Paint::Bold) } else { *paint };
                match paint {
                    Some(p) => {
                        // Colour only the text, not the padding.
                        let pad = padded.len() - text.len();
                        line.push_str(&style.paint(p, text));
                        line.push_str(&" ".repeat(pad));
                    }
                    None => line.push_str(&padded),
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// A duration as "3.05 s", "47 ms" or "4.7 ms".
pub fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// The terminal's live area: the lines drawn last, erased before anything else is printed.
#[derive(Debug, Default)]
pub struct Screen {
    drawn: usize,
    last_draw: Option<std::time::Instant>,
}

impl Screen {
    /// Erase the live table (terminal only).
    pub fn erase(&mut self, style: &Style) {
        if style.live && self.drawn > 0 {
            out(format_args!("\x1b[{}A\x1b[J", self.drawn));
            self.drawn = 0;
        }
    }

    /// Print an event line above the live table.
    pub fn event(&mut self, style: &Style, line: &str, table: &[String]) {
        self.erase(style);
        outln(format_args!("{line}"));
        self.draw(style, table);
    }

    /// Redraw the live table (terminal only), at most ten times a second.
    pub fn draw(&mut self, style: &Style, table: &[String]) {
        if !style.live
            || self.drawn > 0
                && self
                    .last_draw
                    .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(std::time::Instant::now());
        self.erase(style);
        for l in table {
            outln(format_args!("{l}"));
        }
        self.drawn = table.len();
    }

    /// Print lines permanently (the live table is redrawn after them by the next `draw`).
    pub fn print(&mut self, style: &Style, lines: &[String]) {
        self.erase(style);
        for l in lines {
            outln(format_args!("{l}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_with_and_without_colour() {
        let rows = vec![
            vec![("host".into(), None), ("state".into(), None)],
            vec![
                ("node-a".into(), Some(Paint::Green)),
                ("MASTER".into(), None),
            ],
        ];
        let plain = table(
            &Style {
                color: false,
                live: false,
                width: None,
            },
            "",
            &rows,
        );
        assert_eq!(plain, vec!["host    state", "node-a  MASTER"]);
        let coloured = table(
            &Style {
                color: true,
                live: false,
                width: None,
            },
            "",
            &rows,
        );
        assert_eq!(coloured[1], "\x1b[1;32mnode-a\x1b[0m  MASTER");
        let narrow = table(
            &Style {
                color: false,
                live: true,
                width: Some(12),
            },
            "",
            &[vec![("node-a".into(), None), ("MASTER".into(), None)]],
        );
        // Cut one column short of the width: a line filling the last column may wrap.
        assert_eq!(narrow, vec!["node-a  MA~"]);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_millis(3047)), "3.05 s");
        assert_eq!(duration(Duration::from_micros(46_875)), "47 ms");
        assert_eq!(duration(Duration::from_micros(4_687)), "4.7 ms");
    }
}
