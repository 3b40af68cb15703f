//! Holding one system call of another process at a chosen moment (fanotify permission
//! events), so a test can change a file exactly while tablesafe opens or reads it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Holds one open(2) (or one read(2)) until released, chosen by process and path: a
/// fanotify permission event (FAN_OPEN_PERM, or FAN_ACCESS_PERM) on a file's inode, so
/// opens through any of its hard links are seen with the path they used. Every other
/// open (or read) of the file is allowed at once, also while the chosen one is held.
/// Needs CAP_SYS_ADMIN.
pub struct OpenHold {
    group: std::os::fd::OwnedFd,
    held: std::sync::mpsc::Receiver<PathBuf>,
    released: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The events marked: FAN_OPEN_PERM or FAN_ACCESS_PERM.
    mask: u64,
}

impl OpenHold {
    /// Will hold the first open by process `pid` (0: any process but this one) through
    /// a path below `below`.
    pub fn new(pid: u32, below: &Path) -> OpenHold {
        Self::with_mask(pid, below, libc::FAN_OPEN_PERM)
    }

    /// Will hold the first read through a path below `below` by any process but this
    /// one (the file is open by then: what happens to it meanwhile happens while it is
    /// being read). Marked before the process that reads is started.
    pub fn first_read_by_another(below: &Path) -> OpenHold {
        Self::with_mask(0, below, libc::FAN_ACCESS_PERM)
    }

    fn with_mask(pid: u32, below: &Path, mask: u64) -> OpenHold {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        // SAFETY: plain system call; the descriptor is owned below.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as u32,
            )
        };
        assert!(
            fd >= 0,
            "fanotify_init: {} (this test needs CAP_SYS_ADMIN and a kernel with fanotify permission events)",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor nobody else owns.
        let group = unsafe { OwnedFd::from_raw_fd(fd) };
        let (held_tx, held) = std::sync::mpsc::channel();
        let released = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (released, stop) = (released.clone(), stop.clone());
            let below = below.to_path_buf();
            let fd = group.as_raw_fd();
            std::thread::spawn(move || {
                let allow = |event_fd: i32| {
                    let response = libc::fanotify_response {
                        fd: event_fd,
                        response: libc::FAN_ALLOW,
                    };
                    // SAFETY: writes a response struct to the group; closes the event's
                    // descriptor, which the kernel gave to this process.
                    unsafe {
                        libc::write(
                            fd,
                            (&raw const response).cast(),
                            std::mem::size_of_val(&response),
                        );
                        libc::close(event_fd);
                    }
                };
                let mut holding: Option<i32> = None;
                let mut done = false;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let stopping = stop.load(Ordering::SeqCst);
                    if (stopping || released.load(Ordering::SeqCst))
                        && let Some(e) = holding.take()
                    {
                        allow(e);
                    }
                    if stopping {
                        break;
                    }
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    if unsafe { libc::poll(&mut pfd, 1, 10) } <= 0 {
                        continue;
                    }
                    // SAFETY: reads into a buffer of the given length.
                    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    let n = if n > 0 { n as usize } else { continue };
                    let size = std::mem::size_of::<libc::fanotify_event_metadata>();
                    let mut off = 0;
                    while off + size <= n {
                        // SAFETY: the kernel wrote a whole event here.
                        let m: libc::fanotify_event_metadata =
                            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                        assert_eq!(m.vers, libc::FANOTIFY_METADATA_VERSION);
                        off += (m.event_len as usize).max(size);
                        if m.fd < 0 {
                            continue;
                        }
                        let path =
                            fs::read_link(format!("/proc/self/fd/{}", m.fd)).unwrap_or_default();
                        let chosen = if pid == 0 {
                            m.pid != std::process::id() as i32
                        } else {
                            m.pid == pid as i32
                        };
                        if !done && chosen && path.starts_with(&below) {
                            done = true;
                            holding = Some(m.fd);
                            let _ = held_tx.send(path);
                        } else {
                            allow(m.fd);
                        }
                    }
                }
            })
        };
        OpenHold {
            group,
            held,
            released,
            stop,
            thread: Some(thread),
            mask,
        }
    }

    /// Watches opens (or reads) of `file` (its inode: every hard link of it).
    pub fn watch(&self, file: &Path) {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(file.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid descriptor and NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                self.group.as_raw_fd(),
                libc::FAN_MARK_ADD,
                self.mask,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        assert_eq!(r, 0, "fanotify_mark: {}", std::io::Error::last_os_error());
    }

    /// The path the held open used, once it happens.
    pub fn wait_held(&self, timeout: Duration) -> Option<PathBuf> {
        self.held.recv_timeout(timeout).ok()
    }

    /// Lets the held open proceed.
    pub fn release(&mut self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for OpenHold {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
