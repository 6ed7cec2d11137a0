# The Modal driver's managed-process helper (proclog.go runs it through
# exec as python3 -I -S -c BOOT techboss-proc MODE ARGS..., BOOT running
# this script from the environment). Modal's exec API is all
# there is inside a Modal sandbox, and the server that started a process
# may restart, so the process's log and exit code are kept in the sandbox,
# under /tmp/.techboss/procs/PID/ (PID: the process's):
#   cur, prev  log segments: a header line "TBLOG1 START\n" (START: offset
#              of the segment's first byte in the process's whole output),
#              then records "o" or "e" (stdout, stderr), the length in
#              decimal, "\n", the bytes. A segment is at most SEG_MAX bytes
#              long; a full cur becomes prev, so about 2 x SEG_MAX is kept.
#   exit       the exit code (128+N for signal N), written once the output
#              is all in the log.
#   lock       held (flock) by the wrapper while it runs.
#
# run SEG_MAX KEEP NAME ARGV...: starts ARGV (through /bin/sh's exec, so a
#   missing command fails as it does in sh), prints its PID as the first
#   line of stdout, then copies its stdout and stderr to its own and into
#   the log, records its exit code and exits with it. Stdin is the
#   process's own (inherited). Only the KEEP newest exited processes'
#   directories are kept. A log that cannot be set up is no reason not to
#   run: the process then runs without one.
# read PID FOLLOW SEG_MAX IDLE_S: prints "P OWNPID", then "E KIND MSG" (KIND
#   notfound or bad) and exits, or "K" and the kept records: "S START" per
#   segment, then its records as they are in the file; "C" after what was
#   kept when it came (at most two segments), then what came since;
#   "X CODE" once the process has exited (-1: its wrapper died without
#   saying). With FOLLOW it goes on until then, or until its stdin ends or
#   stays silent for IDLE_S seconds.
# Everything under /tmp is the sandbox's to change: no symbolic link is
# followed (every component is opened with O_NOFOLLOW), nothing but a
# regular file is read (opened with O_NONBLOCK, so a FIFO cannot block),
# and nothing larger than the writer writes is read. The driver trusts none
# of this either: it checks every line and bounds what it reads.
import errno, fcntl, os, select, signal, stat, sys, time

if sys.version_info < (3, 6):  # run as before, without a kept log
    if sys.argv[2] == "run":
        os.execv("/bin/sh", ["sh", "-c", 'echo $$; exec "$@"', "sh"] + sys.argv[6:])
    sys.stdout.write("P %d\nE notfound\n" % os.getpid())
    sys.exit(0)

BASE = ("tmp", ".techboss", "procs")
DIRFLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILEFLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_RECORD = 65536
CHUNK = 32768
DRAIN = 4.0
# How long a write to the wrapper's own stdout or stderr may wait before
# the wrapper stops passing output through (the log goes on): nobody may
# read that exec's output any more (the server that started it is gone),
# and the process must not stall on it.
# (TECHBOSS_PROC_STALL sets it for tests; the process does not see it.)
STALL = float(os.environ.pop("TECHBOSS_PROC_STALL", "30"))


def walk(create):
    fd = os.open("/", DIRFLAGS)
    try:
        for p in BASE:
            if create:
                try:
                    os.mkdir(p, 0o700 if p != "tmp" else 0o1777, dir_fd=fd)
                except FileExistsError:
                    pass
            nfd = os.open(p, DIRFLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def remove_dir(base, name):
    fd = os.open(name, DIRFLAGS, dir_fd=base)
    try:
        for e in os.listdir(fd):
            os.unlink(e, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=base)


def prune(base, keep, mine):
    done = []
    for name in os.listdir(base):
        if not name.isdigit() or name == mine:
            continue
        try:
            st = os.stat(name + "/exit", dir_fd=base, follow_symlinks=False)
        except OSError:
            continue
        done.append((st.st_mtime_ns, name))
    done.sort()
    for _, name in done[:max(0, len(done) - keep)]:
        try:
            remove_dir(base, name)
        except OSError:
            pass


class Log:
    def __init__(self, pid, seg_max, keep):
        self.seg_max = seg_max
        self.off = 0
        base = walk(True)
        try:
            name = str(pid)
            try:
                remove_dir(base, name)  # an older process's with the same PID
            except FileNotFoundError:
                pass
            os.mkdir(name, 0o700, dir_fd=base)
            self.dir = os.open(name, DIRFLAGS, dir_fd=base)
            prune(base, keep, name)
        finally:
            os.close(base)
        lock = os.open("lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.dir)
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the wrapper exits
        self.cur, self.size = self.segment("cur"), 0
        self.size = os.fstat(self.cur).st_size

    def segment(self, name):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.dir)
        writeall(fd, b"TBLOG1 %d\n" % self.off)
        return fd

    def append(self, stream, data):
        rec = stream + b"%d\n" % len(data) + data
        if self.size + len(rec) > self.seg_max:
            try:
                os.unlink("cur.new", dir_fd=self.dir)
            except FileNotFoundError:
                pass
            new = self.segment("cur.new")
            os.rename("cur", "prev", src_dir_fd=self.dir, dst_dir_fd=self.dir)
            os.rename("cur.new", "cur", src_dir_fd=self.dir, dst_dir_fd=self.dir)
            os.close(self.cur)
            self.cur, self.size = new, os.fstat(new).st_size
        writeall(self.cur, rec)
        self.size += len(rec)
        self.off += len(data)

    def exit(self, code):
        try:
            os.unlink("exit.tmp", dir_fd=self.dir)
        except FileNotFoundError:
            pass
        fd = os.open("exit.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.dir)
        try:
            writeall(fd, b"%d\n" % code)
        finally:
            os.close(fd)
        os.rename("exit.tmp", "exit", src_dir_fd=self.dir, dst_dir_fd=self.dir)


def writeall(fd, b):
    while b:
        n = os.write(fd, b)
        b = b[n:]


def passthrough(fd, b):
    # writeall on a non-blocking fd that gives up after STALL seconds of
    # no progress (raises OSError then).
    p = None
    while b:
        try:
            n = os.write(fd, b)
        except BlockingIOError:
            if p is None:
                p = select.poll()
                p.register(fd, select.POLLOUT)
            if not p.poll(STALL * 1000):
                raise OSError(errno.ETIMEDOUT, "output not read")
            continue
        b = b[n:]


def spawn(argv):
    # ARGV through /bin/sh's exec (a missing command fails as it does in
    # sh), stdout and stderr on pipes, stdin the wrapper's (subprocess and
    # threading would double the wrapper's start time).
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for s in ("SIGPIPE", "SIGXFSZ"):  # python ignores them
                if hasattr(signal, s):
                    signal.signal(getattr(signal, s), signal.SIG_DFL)
            os.execv("/bin/sh", ["sh", "-c", 'exec "$@"', "sh"] + argv)
        finally:
            os._exit(127)
    os.close(out_w)
    os.close(err_w)
    return pid, out_r, err_r


def run(seg_max, keep, argv):
    # The child's exit wakes the loop below through SIGCHLD's wakeup fd
    # (its background children may hold its stdout and stderr open long
    # after); set before the fork, so no exit goes unnoticed.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda n, f: None)
    pid, out_r, err_r = spawn(argv)
    out_ok = True
    # Non-blocking (see passthrough), unless one is the process's stdin too.
    try:
        st0 = os.fstat(0)
        same = lambda fd: (os.fstat(fd).st_dev, os.fstat(fd).st_ino) == (st0.st_dev, st0.st_ino)
    except OSError:
        same = lambda fd: False
    for fd in (1, 2):
        try:
            if not same(fd):
                os.set_blocking(fd, False)
        except OSError:
            pass
    try:
        writeall(1, b"%d\n" % pid)
    except OSError:
        out_ok = False
    try:
        log = Log(pid, seg_max, keep)
    except OSError:
        log = None
    streams = {out_r: (b"o", 1), err_r: (b"e", 2)}
    p = select.poll()
    for fd in streams:
        p.register(fd, select.POLLIN)
    p.register(wake_r, select.POLLIN)
    status = None
    deadline = None
    while streams:
        wait = None
        if deadline is not None:
            wait = max(0, deadline - time.monotonic())
            if wait == 0:
                break
        for fd, _ in p.poll(None if wait is None else wait * 1000):
            if fd == wake_r:
                os.read(wake_r, 512)
                if status is None:
                    wpid, st = os.waitpid(pid, os.WNOHANG)
                    if wpid == pid:
                        status = st
                        deadline = time.monotonic() + DRAIN
                continue
            data = os.read(fd, CHUNK)
            if not data:
                p.unregister(fd)
                del streams[fd]
                continue
            tag, own = streams[fd]
            if out_ok:
                try:
                    passthrough(own, data)
                except OSError:
                    out_ok = False  # the driver went away: the log goes on
            if log is not None:
                try:
                    log.append(tag, data)
                except OSError:
                    log = None
    if status is None:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        code = 128 + os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
    if log is not None:
        try:
            log.exit(code)
        except OSError:
            pass
    os._exit(code & 255)


def say(line):
    writeall(1, line.encode("ascii", "replace") + b"\n")


class Bad(Exception):
    pass


def open_file(dfd, name):
    # A regular file of the process's directory, or None if there is none.
    try:
        fd = os.open(name, FILEFLAGS, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK):
            raise Bad(name + " is a symbolic link")
        raise Bad(name + ": " + (e.strerror or str(e)))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Bad(name + " is not a regular file")
    return fd


class Segment:
    def __init__(self, fd, seg_max):
        self.fd, self.seg_max = fd, seg_max
        st = os.fstat(fd)
        self.ident = (st.st_dev, st.st_ino)
        head = os.pread(fd, 64, 0)
        nl = head.find(b"\n")
        parts = head[:nl].split(b" ") if nl > 0 else []
        if len(parts) != 2 or parts[0] != b"TBLOG1" or not parts[1].isdigit() or len(parts[1]) > 18:
            raise Bad("a log segment has no valid header")
        self.start = int(parts[1])
        self.pos = nl + 1

    def records(self):
        # The complete records after pos, at most what the writer writes.
        size = os.fstat(self.fd).st_size
        if size > self.seg_max:
            raise Bad("a log segment is larger (%d bytes) than the wrapper writes" % size)
        data = os.pread(self.fd, size - self.pos, self.pos) if size > self.pos else b""
        i = 0
        while i < len(data):
            nl = data.find(b"\n", i, i + 8)
            if nl < 0:
                if len(data) - i >= 8:
                    raise Bad("a log segment holds a malformed record")
                break
            tag, n = data[i:i + 1], data[i + 1:nl]
            if tag not in (b"o", b"e") or not n.isdigit() or int(n) > MAX_RECORD:
                raise Bad("a log segment holds a malformed record")
            end = nl + 1 + int(n)
            if end > len(data):
                break
            i = end
        self.pos += i
        return data[:i]


def read_exit(dfd):
    fd = open_file(dfd, "exit")
    if fd is None:
        return None
    try:
        b = os.read(fd, 32)
    finally:
        os.close(fd)
    s = b.strip()
    if not s or len(b) > 16 or not s.lstrip(b"-").isdigit() or not -1 <= int(s) <= 255:
        raise Bad("its exit file does not hold an exit code")
    return int(s)


def wrapper_gone(dfd):
    fd = open_file(dfd, "lock")
    if fd is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def read(pid, follow, seg_max, idle):
    say("P %d" % os.getpid())
    try:
        base = walk(False)
    except OSError:
        say("E notfound")  # no wrapper could have kept a log there either
        return
    try:
        dfd = os.open(pid, DIRFLAGS, dir_fd=base)
    except FileNotFoundError:
        say("E notfound")
        return
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise Bad("its log directory is a symbolic link or not a directory")
        raise Bad("its log directory: " + (e.strerror or str(e)))
    finally:
        os.close(base)
    cur = None
    for _ in range(100):  # a rotation renames cur away for a moment
        fd = open_file(dfd, "cur")
        if fd is not None:
            cur = Segment(fd, seg_max)
            break
        if wrapper_gone(dfd):
            break
        time.sleep(0.01)
    if cur is None:
        say("E notfound")
        return
    say("K")
    prev_fd = open_file(dfd, "prev")
    if prev_fd is not None:
        prev = Segment(prev_fd, seg_max)
        if prev.start < cur.start:
            say("S %d" % prev.start)
            writeall(1, prev.records())
        os.close(prev_fd)
    say("S %d" % cur.start)
    writeall(1, cur.records())
    say("C")  # what was kept when the reader came: at most two segments
    heard = time.monotonic()
    while True:
        code = read_exit(dfd)
        if code is None and wrapper_gone(dfd):
            code = read_exit(dfd)  # written just before the wrapper exited
            if code is None:
                code = -1
        out = cur.records()
        writeall(1, out)
        moved = len(out) > 0
        # A rotation: the rest of the old cur, then the cur of now (one
        # step, whatever rotations came between: those are a gap).
        try:
            st = os.stat("cur", dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) != cur.ident:
            fd = open_file(dfd, "cur")
            if fd is not None:
                nxt = Segment(fd, seg_max)
                writeall(1, cur.records())  # written before the rotation
                os.close(cur.fd)
                cur = nxt
                say("S %d" % cur.start)
                writeall(1, cur.records())
                moved = True
        if code is not None:
            say("X %d" % code)
            return
        if not follow:
            return
        r, _, _ = select.select([0], [], [], 0 if moved else 0.2)
        now = time.monotonic()
        if r:
            if not os.read(0, 4096):
                return  # the driver closed stdin
            heard = now
        elif now - heard > idle:
            return  # the driver is gone


def main():
    mode = sys.argv[2]
    if mode == "run":
        run(int(sys.argv[3]), int(sys.argv[4]), sys.argv[6:])
        return
    try:
        read(sys.argv[3], sys.argv[4] == "1", int(sys.argv[5]), float(sys.argv[6]))
    except Bad as e:
        say("E bad " + str(e))
    sys.stdout.flush()


try:
    main()
except (BrokenPipeError, KeyboardInterrupt):
    pass
