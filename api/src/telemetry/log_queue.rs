//! The serving processes' log writer: lines are appended to a buffer in
//! memory, and one thread of its own writes the buffer to stderr in a
//! single write(2), every [`FLUSH_EVERY`] or as soon as [`FLUSH_AT`] bytes
//! are waiting.
//!
//! Written here rather than taken from tracing-appender, whose writer was
//! measured first (docs/benchmarks.md): it sends each line through a
//! channel that wakes its thread (a futex call per line), and that thread
//! spins in `sched_yield` between lines, which on two cores took more of the
//! service's time than the write(2) per line it saved. Here a request's
//! line costs a lock, a copy and nothing else; the thread wakes ten times a
//! second, or once per [`FLUSH_AT`] bytes under load.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The longest a line waits before it is written, when the service is
/// quiet.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Bytes waiting that make the thread write at once, without waiting for
/// [`FLUSH_EVERY`]: about 300 lines.
pub(crate) const FLUSH_AT: usize = 64 * 1024;

/// The most bytes that may wait. Past it (stderr is not being read: a stuck
/// log driver) a line is dropped and counted, rather than stall the request
/// that logs it or grow without bound.
pub(crate) const MAX_WAITING: usize = 4 * 1024 * 1024;

/// How long [`LogQueue::close`] waits for the last write.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

struct Waiting {
    bytes: Vec<u8>,
    /// The thread was asked to write before its next tick.
    asked: bool,
    closed: bool,
}

struct Shared {
    waiting: Mutex<Waiting>,
    wake: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut waiting = self.lock();
        if waiting.closed || waiting.bytes.len() + line.len() > MAX_WAITING {
            drop(waiting);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        waiting.bytes.extend_from_slice(line);
        let ask = waiting.bytes.len() >= FLUSH_AT && !waiting.asked;
        waiting.asked |= ask;
        drop(waiting);
        if ask {
            self.wake.notify_one();
        }
    }
}

/// Where the log layer writes (a [`MakeWriter`]); cheap to clone.
#[derive(Clone)]
pub(crate) struct LogQueue {
    shared: Arc<Shared>,
}

/// The writer thread, to stop with [`LogQueue::close`].
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
}

impl LogQueue {
    /// Starts the thread that writes to `out`. None if the thread cannot be
    /// started (then the caller writes directly).
    pub(crate) fn start<W: Write + Send + 'static>(out: W) -> Option<(LogQueue, Flusher)> {
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Waiting {
                bytes: Vec::with_capacity(FLUSH_AT),
                asked: false,
                closed: false,
            }),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let (finished, done) = mpsc::channel();
        let writing = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                write_until_closed(&writing, out);
                let _ = finished.send(());
            })
            .ok()?;
        let flusher = Flusher {
            shared: Arc::clone(&shared),
            thread: Some(thread),
            done,
        };
        Some((LogQueue { shared }, flusher))
    }

    /// Lines dropped so far because too much was waiting.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Flusher {
    /// Writes what is waiting and stops the thread, waiting for it at most
    /// [`CLOSE_PATIENCE`]. Lines logged afterwards are dropped (counted).
    pub(crate) fn close(mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if self.done.recv_timeout(CLOSE_PATIENCE).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The thread's loop: wait for a tick or a request, take what is waiting
/// (leaving the thread's emptied spare buffer in its place), write it with
/// the lock released.
fn write_until_closed<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::with_capacity(FLUSH_AT);
    loop {
        let mut waiting = shared.lock();
        if !waiting.asked && !waiting.closed {
            waiting = shared
                .wake
                .wait_timeout(waiting, FLUSH_EVERY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut waiting.bytes, &mut spare);
        waiting.asked = false;
        let closed = waiting.closed;
        drop(waiting);
        if !spare.is_empty() {
            // Nowhere to report a failed write to but the log itself.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
        }
        recycle(&mut spare);
        if closed {
            return;
        }
    }
}

/// Empties a buffer the thread has written, for its next turn. A burst (or
/// a stuck stderr) grows the waiting buffer, up to [`MAX_WAITING`], and a
/// `Vec` keeps its capacity: without this a worker kept the largest burst's
/// buffer for its life. A buffer that was written at a quiet size goes back
/// to [`FLUSH_AT`]; under a steady load (writes of [`FLUSH_AT`] or more)
/// it keeps what it grew to, and is not reallocated on every write. The
/// thread swaps on every tick, logged to or not, so a grown buffer is back
/// within two ticks of quiet.
fn recycle(spare: &mut Vec<u8>) {
    if spare.len() <= FLUSH_AT && spare.capacity() > 2 * FLUSH_AT {
        *spare = Vec::with_capacity(FLUSH_AT);
    } else {
        spare.clear();
    }
}

/// One log line's writer: the formatter hands it the whole line in one
/// `write_all`.
pub(crate) struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.shared.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// What the thread wrote, and how many writes it took.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recorded {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut recorded = self.0.lock().unwrap();
            recorded.0.extend_from_slice(bytes);
            recorded.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorded {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    fn log(queue: &LogQueue, line: &str) {
        queue.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn a_quiet_services_line_is_written_within_a_tick() {
        let out = Recorded::default();
        let (queue, flusher) = LogQueue::start(out.clone()).unwrap();
        let logged = Instant::now();
        log(&queue, "one line\n");
        while out.text().is_empty() {
            assert!(
                logged.elapsed() < FLUSH_EVERY * 10,
                "the line was not written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.text(), "one line\n");
        flusher.close();
    }

    #[test]
    fn many_lines_go_out_in_few_writes_in_order() {
        let out = Recorded::default();
        let (queue, flusher) = LogQueue::start(out.clone()).unwrap();
        let lines: Vec<String> = (0..5000)
            .map(|n| format!("line {n:05} {}\n", "x".repeat(80)))
            .collect();
        for line in &lines {
            log(&queue, line);
        }
        flusher.close();
        assert_eq!(out.text(), lines.concat(), "every line, in order");
        assert!(
            out.writes() < 100,
            "{} writes for {} lines",
            out.writes(),
            lines.len()
        );
        assert_eq!(queue.dropped(), 0);
    }

    #[test]
    fn closing_writes_what_waits_and_later_lines_are_counted_as_dropped() {
        let out = Recorded::default();
        let (queue, flusher) = LogQueue::start(out.clone()).unwrap();
        log(&queue, "before\n");
        flusher.close();
        assert_eq!(out.text(), "before\n");
        log(&queue, "after\n");
        assert_eq!(out.text(), "before\n");
        assert_eq!(queue.dropped(), 1);
    }

    /// A writer that blocks until released: stderr nobody reads.
    #[derive(Clone, Default)]
    struct Stuck(Arc<(Mutex<(bool, bool)>, Condvar)>);

    impl Stuck {
        fn wait_until_entered(&self) {
            let (state, wake) = &*self.0;
            let mut state = state.lock().unwrap();
            let waiting = Instant::now();
            while !state.0 {
                assert!(
                    waiting.elapsed() < Duration::from_secs(10),
                    "the thread never wrote"
                );
                state = wake.wait_timeout(state, Duration::from_secs(1)).unwrap().0;
            }
        }
        fn release(&self) {
            self.0 .0.lock().unwrap().1 = true;
            self.0 .1.notify_all();
        }
    }

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (state, wake) = &*self.0;
            let mut state = state.lock().unwrap();
            state.0 = true;
            wake.notify_all();
            while !state.1 {
                state = wake.wait(state).unwrap();
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A queue whose thread is blocked in its first write until
    /// `Stuck::release`, and a line of 1 KiB.
    fn stuck_queue() -> (LogQueue, Flusher, Stuck, String) {
        let stuck = Stuck::default();
        let (queue, flusher) = LogQueue::start(stuck.clone()).unwrap();
        log(&queue, "first\n");
        stuck.wait_until_entered();
        (queue, flusher, stuck, format!("{}\n", "y".repeat(1023)))
    }

    #[test]
    fn a_stuck_stderr_never_blocks_the_logger_and_what_waits_is_bounded() {
        let (queue, flusher, stuck, line) = stuck_queue();
        let fit = MAX_WAITING / line.len();
        let started = Instant::now();
        for _ in 0..2 * fit {
            log(&queue, &line);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "logging blocked"
        );
        assert_eq!(
            queue.dropped() as usize,
            fit,
            "what did not fit was dropped"
        );
        assert_eq!(queue.shared.lock().bytes.len(), fit * line.len());
        stuck.release();
        flusher.close();
    }

    #[test]
    fn a_written_buffer_keeps_a_steady_loads_capacity_and_gives_a_bursts_back() {
        let buffer = |len: usize, capacity: usize| {
            let mut buffer = Vec::with_capacity(capacity);
            buffer.resize(len, b'x');
            buffer
        };
        let mut burst_then_quiet = buffer(6, 1024 * 1024);
        recycle(&mut burst_then_quiet);
        assert!(burst_then_quiet.is_empty());
        assert_eq!(burst_then_quiet.capacity(), FLUSH_AT, "given back");

        let mut steady = buffer(FLUSH_AT + 1, 1024 * 1024);
        recycle(&mut steady);
        assert!(steady.is_empty());
        assert_eq!(steady.capacity(), 1024 * 1024, "kept under load");

        let mut usual = buffer(10, 2 * FLUSH_AT);
        recycle(&mut usual);
        assert_eq!(usual.capacity(), 2 * FLUSH_AT, "not reallocated");
    }

    #[test]
    fn after_a_burst_both_buffers_come_back_to_a_quiet_size() {
        let (queue, flusher, stuck, line) = stuck_queue();
        // A megabyte waits while the thread is blocked in its write.
        for _ in 0..1024 {
            log(&queue, &line);
        }
        assert!(queue.shared.lock().bytes.capacity() >= 1024 * line.len());
        stuck.release();
        // The thread swaps its buffer with the waiting one on every tick.
        // Watch the waiting one change (by its address): without giving the
        // burst's capacity back, the two buffers take turns and every other
        // one seen is the grown one. Two small ones in a row mean both are
        // back.
        let watching = Instant::now();
        let (mut seen, mut small_in_a_row) = (None, 0);
        while small_in_a_row < 2 {
            assert!(
                watching.elapsed() < FLUSH_EVERY * 50,
                "a buffer kept the burst's capacity"
            );
            let (address, capacity) = {
                let waiting = queue.shared.lock();
                (waiting.bytes.as_ptr(), waiting.bytes.capacity())
            };
            if seen != Some(address) {
                seen = Some(address);
                small_in_a_row = if capacity <= 2 * FLUSH_AT {
                    small_in_a_row + 1
                } else {
                    0
                };
            }
            std::thread::sleep(FLUSH_EVERY / 10);
        }
        flusher.close();
    }
}
