//! Frames over a non-blocking Unix socket, with bounded waits. A reader first polls the socket
//! for a short while, pausing and yielding between tries, and only then sleeps in `poll(2)`: a
//! sleeping thread takes tens of microseconds to wake on a virtual machine, more than
//! the rest of a round trip, and a signature's `C_SignInit` and `C_Sign` arrive back to back.

use super::protocol::{FrameError, Secret, MAX_FRAME};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How a reader waits for bytes.
#[derive(Clone, Copy)]
pub struct Patience {
    /// How long to poll before sleeping.
    pub spin: Duration,
    /// How long the first byte of a frame may take (`None`: no limit).
    pub first: Option<Duration>,
    /// How long the rest of a frame may take once it began.
    pub rest: Duration,
}

/// Pauses between two tries at reading while polling (well under a microsecond).
const PAUSES: u32 = 16;

fn timed_out() -> std::io::Error {
    std::io::Error::new(ErrorKind::TimedOut, "timed out")
}

/// Sleeps until `stream` is ready for `flags` or `deadline` passes.
fn sleep_until_ready(
    stream: &UnixStream,
    flags: PollFlags,
    deadline: Option<Instant>,
) -> std::io::Result<()> {
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            // Rounded up: a wait shorter than a millisecond must not become a busy loop.
            let left = left.saturating_add(Duration::from_millis(1));
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds = [PollFd::new(stream.as_fd(), flags)];
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Fills `buf` from `stream`, spinning for `spin` before each sleep.
fn read_exact(
    stream: &UnixStream,
    mut buf: &mut [u8],
    spin: Duration,
    deadline: Option<Instant>,
) -> std::io::Result<()> {
    let mut spun_since = Instant::now();
    while !buf.is_empty() {
        match (&*stream).read(buf) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                spun_since = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(timed_out());
                }
                if spun_since.elapsed() < spin {
                    // A short pause, then the processor is offered to whoever waits for it
                    // (with more threads than processors, a poller must not hold one).
                    for _ in 0..PAUSES {
                        std::hint::spin_loop();
                    }
                    std::thread::yield_now();
                } else {
                    sleep_until_ready(stream, PollFlags::POLLIN, deadline)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one frame's body; `Closed` when the peer closed before a frame began.
pub fn recv(stream: &UnixStream, patience: Patience) -> Result<Secret, FrameError> {
    let mut len = [0u8; 4];
    let first_deadline = patience.first.map(|f| Instant::now() + f);
    match read_exact(stream, &mut len[..1], patience.spin, first_deadline) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let deadline = Some(Instant::now() + patience.rest);
    read_exact(stream, &mut len[1..], patience.spin, deadline).map_err(FrameError::Io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    let mut body = Secret::new(vec![0u8; len]);
    read_exact(stream, &mut body, patience.spin, deadline).map_err(FrameError::Io)?;
    Ok(body)
}

/// Writes one encoded frame within `timeout`.
pub fn send(stream: &UnixStream, mut frame: &[u8], timeout: Duration) -> std::io::Result<()> {
    let deadline = Some(Instant::now() + timeout);
    while !frame.is_empty() {
        match (&*stream).write(frame) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => frame = &frame[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                sleep_until_ready(stream, PollFlags::POLLOUT, deadline)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
