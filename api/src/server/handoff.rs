//! What a master hands to the processes it starts from the binary on disk:
//! which of the descriptors they inherit are what. The master passes it as
//! the hidden `--handoff` argument, ahead of its own command line, so that
//! the child parses the same settings the master did, with the child's own
//! code (that is how a reload runs a new build).
//!
//! Written by hand: systemd's socket activation (`LISTEN_FDS`) names
//! listening sockets only, not the heartbeat and readiness pipes, and is
//! read from the environment, which a worker's own children would inherit.

use std::fmt;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::str::FromStr;

use nix::libc;

/// The hidden argument that carries a [`Handoff`].
pub const ARGUMENT: &str = "--handoff";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handoff {
    /// A worker: its id, the write end of its heartbeat pipe, the sockets it
    /// serves (the shared one first) and the master's metrics directory.
    Worker {
        id: u64,
        heartbeat: RawFd,
        sockets: Vec<RawFd>,
        metrics: PathBuf,
    },
    /// A new master (SIGUSR2): where it says it is serving, the shared
    /// socket, and each worker slot's socket.
    Master {
        ready: RawFd,
        shared: RawFd,
        slots: Vec<(usize, RawFd)>,
    },
    /// A reload's probe: parse and validate the settings as a worker of
    /// this binary would, then exit 0.
    Check,
}

impl Handoff {
    /// Whether the process reads its settings from the environment the
    /// master gave it rather than from the env file.
    pub fn uses_masters_environment(&self) -> bool {
        matches!(self, Handoff::Worker { .. } | Handoff::Check)
    }

    /// Whether the process is a worker, which serves requests.
    pub fn is_worker(&self) -> bool {
        matches!(self, Handoff::Worker { .. })
    }

    /// The handoff in `arguments` (the process's own, program name first),
    /// ahead of clap, which needs to know whether to read the env file.
    pub fn find(arguments: &[std::ffi::OsString]) -> Option<Handoff> {
        let mut rest = arguments.iter().skip(1);
        while let Some(argument) = rest.next() {
            let value = if argument == ARGUMENT {
                rest.next()?.to_str()?
            } else if let Some(value) = argument
                .to_str()
                .and_then(|a| a.strip_prefix(ARGUMENT))
                .and_then(|a| a.strip_prefix('='))
            {
                value
            } else {
                continue;
            };
            return value.parse().ok();
        }
        None
    }

    /// `arguments` without the handoff: the command line a process passes
    /// on to those it starts.
    pub fn strip(arguments: &[std::ffi::OsString]) -> Vec<std::ffi::OsString> {
        let mut kept = Vec::with_capacity(arguments.len());
        let mut rest = arguments.iter();
        while let Some(argument) = rest.next() {
            if argument == ARGUMENT {
                rest.next();
            } else if !argument
                .to_str()
                .is_some_and(|a| a.starts_with(&format!("{ARGUMENT}=")))
            {
                kept.push(argument.clone());
            }
        }
        kept
    }
}

impl fmt::Display for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handoff::Worker {
                id,
                heartbeat,
                sockets,
                metrics,
            } => {
                let sockets: Vec<String> = sockets.iter().map(ToString::to_string).collect();
                let metrics = metrics.display();
                write!(f, "worker:{id}:{heartbeat}:{}:{metrics}", sockets.join("+"))
            }
            Handoff::Master {
                ready,
                shared,
                slots,
            } => {
                let slots: Vec<String> = slots.iter().map(|(s, fd)| format!("{s}={fd}")).collect();
                write!(f, "master:{ready}:{shared}:{}", slots.join("+"))
            }
            Handoff::Check => f.write_str("check"),
        }
    }
}

impl FromStr for Handoff {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a handoff: {text:?}");
        fn number<T: FromStr>(part: &str) -> Result<T, String> {
            part.parse().map_err(|_| format!("not a number: {part:?}"))
        }
        fn list(part: &str) -> Result<Vec<&str>, String> {
            Ok(part.split('+').filter(|item| !item.is_empty()).collect())
        }
        // The metrics directory comes last: a path may hold a colon.
        let parts: Vec<&str> = text.splitn(5, ':').collect();
        match parts.as_slice() {
            ["check"] => Ok(Handoff::Check),
            ["worker", id, heartbeat, sockets, metrics] if !metrics.is_empty() => {
                Ok(Handoff::Worker {
                    id: number(id)?,
                    heartbeat: number(heartbeat)?,
                    sockets: list(sockets)?
                        .into_iter()
                        .map(number)
                        .collect::<Result<_, String>>()?,
                    metrics: PathBuf::from(metrics),
                })
            }
            ["master", ready, shared, slots] => Ok(Handoff::Master {
                ready: number(ready)?,
                shared: number(shared)?,
                slots: list(slots)?
                    .into_iter()
                    .map(|slot| {
                        let (slot, fd) = slot.split_once('=').ok_or_else(bad)?;
                        Ok((number(slot)?, number(fd)?))
                    })
                    .collect::<Result<_, String>>()?,
            }),
            _ => Err(bad()),
        }
    }
}

/// Takes ownership of an inherited descriptor the master named, once: it
/// must be open (and, with `socket`, a socket), and becomes close-on-exec
/// again, so that this process's own children do not inherit it.
fn adopt(fd: RawFd, socket: bool) -> std::io::Result<OwnedFd> {
    let refuse =
        |what: &str| std::io::Error::other(format!("descriptor {fd} from the master is {what}"));
    if fd < 3 {
        return Err(refuse("a standard stream"));
    }
    // SAFETY: fcntl and fstat on a number only read the descriptor table;
    // a closed descriptor is an error (EBADF), never undefined behaviour.
    unsafe {
        if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == -1 {
            return Err(refuse("not open"));
        }
        let mut status = std::mem::zeroed::<libc::stat>();
        if socket
            && (libc::fstat(fd, &mut status) == -1
                || status.st_mode & libc::S_IFMT != libc::S_IFSOCK)
        {
            return Err(refuse("not a socket"));
        }
        // SAFETY: open, and nothing else in this process owns it: only
        // start-up adopts, once per descriptor the handoff names.
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

pub fn adopt_socket(fd: RawFd) -> std::io::Result<TcpListener> {
    adopt(fd, true).map(TcpListener::from)
}

pub fn adopt_pipe(fd: RawFd) -> std::io::Result<OwnedFd> {
    adopt(fd, false)
}

/// Lets the child of `command` inherit `fds` (which are close-on-exec
/// here, as Rust opens everything).
pub fn inherit(command: &mut std::process::Command, fds: Vec<RawFd>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: fcntl is one, and iterating a
    // vector allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for fd in &fds {
                if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_reads_back_as_written() {
        for handoff in [
            Handoff::Check,
            Handoff::Worker {
                id: 7,
                heartbeat: 9,
                sockets: vec![3, 5],
                metrics: PathBuf::from("/tmp/a:b/api-metrics-1"),
            },
            Handoff::Master {
                ready: 8,
                shared: 3,
                slots: vec![(0, 4), (1, 6)],
            },
            Handoff::Master {
                ready: 8,
                shared: 3,
                slots: vec![],
            },
        ] {
            assert_eq!(handoff.to_string().parse::<Handoff>(), Ok(handoff));
        }
        for bad in ["", "worker:1:2:3:", "master:x:3:", "worker:1:2:3", "nope"] {
            assert!(bad.parse::<Handoff>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_handoff_is_found_and_stripped_in_either_spelling() {
        let args = |list: &[&str]| list.iter().map(Into::into).collect::<Vec<_>>();
        let spaced = args(&["api", "--handoff", "check", "serve", "--workers", "2"]);
        let joined = args(&["api", "--handoff=check", "serve"]);
        assert_eq!(Handoff::find(&spaced), Some(Handoff::Check));
        assert_eq!(Handoff::find(&joined), Some(Handoff::Check));
        assert_eq!(
            Handoff::strip(&spaced),
            args(&["api", "serve", "--workers", "2"])
        );
        assert_eq!(Handoff::strip(&joined), args(&["api", "serve"]));
        assert_eq!(Handoff::find(&args(&["api", "serve"])), None);
    }

    #[test]
    fn only_open_descriptors_are_adopted_and_only_sockets_as_sockets() {
        use std::os::fd::IntoRawFd;
        let file = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        assert!(adopt_socket(file).is_err());
        drop(adopt_pipe(file).unwrap());
        assert!(adopt_pipe(1).is_err());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
        assert!(adopt_socket(listener).is_ok());
    }
}
