//! Progress of a terminal send: an indicatif bar on a TTY (tokens done /
//! total, tokens/s, ETA), plain lines at most once a second otherwise.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws progress to stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    started: Instant,
    last_line: Option<Instant>,
    last_done: u64,
}

/// How often a plain progress line is printed at most.
const LINE_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    /// A bar when `tty`, plain lines otherwise.
    pub fn new(total: u64, tty: bool) -> Self {
        let bar = tty.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len} tokens  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            bar,
            total,
            started: Instant::now(),
            last_line: None,
            last_done: u64::MAX,
        }
    }

    /// Tokens finished so far.
    pub fn update(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                let due = self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY);
                if due && done != self.last_done {
                    self.line(done);
                }
            }
        }
    }

    /// The last update: the bar is finished, or a final line printed.
    pub fn finish(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.finish();
                // The summary starts on its own line.
                let _ = writeln!(std::io::stderr());
            }
            None => {
                if done != self.last_done {
                    self.line(done);
                }
            }
        }
    }

    fn line(&mut self, done: u64) {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / elapsed;
        let eta = if rate > 0.0 && done < self.total {
            format!("{:.0}s", (self.total - done) as f64 / rate)
        } else {
            "-".into()
        };
        let percent = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        let _ = writeln!(
            std::io::stderr(),
            "progress: {done}/{} tokens ({percent:.1}%), {rate:.0} tokens/s, ETA {eta}",
            self.total
        );
        self.last_line = Some(Instant::now());
        self.last_done = done;
    }
}
