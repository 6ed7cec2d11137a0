# The Modal driver's file watcher (watch.go runs it through exec as
# python3 -c SCRIPT techboss-watch ROOT RECURSIVE MAX_DIRS MAX_ENTRIES
# INTERVAL_MS IDLE_S). Modal's exec API is all there is inside a Modal
# sandbox, and images need not have inotify tools, so it polls: every
# interval it lists the tree under ROOT and prints what changed since the
# last listing as JSON lines (ASCII only, so no name can break a line):
#   {"pid": N}                     first, for the driver to kill it if need be
#   {"ready": true}                once the first listing is done
#   {"event": "create"|"write"|"remove"|"rename", "path": REL, "type":
#    "file"|"dir", "from": REL}    REL relative to ROOT ("" for ROOT itself)
#   {"error": MSG, "kind": K, "field": F}  a failure; the last line
# Symbolic links are never followed: ROOT is reached through directories
# opened with O_NOFOLLOW one at a time (a link on the way is an error),
# and the tree is listed through directory descriptors opened the same
# way, so a link inside the tree is reported as an entry but never
# entered, even if it is swapped in between two listings. It exits when
# its stdin ends (the driver went away) or stays silent for IDLE_S
# seconds (the driver writes a newline now and then), or ROOT goes away.
import errno, json, os, select, stat, sys, time

if sys.version_info < (3, 7):  # os.scandir of a descriptor
    sys.stdout.write(json.dumps({"kind": "no_python", "error": "its python3 is %d.%d, older than 3.7" % sys.version_info[:2]}) + "\n")
    sys.exit(3)

ROOT = sys.argv[2]
RECURSIVE = sys.argv[3] == "1"
MAX_DIRS = int(sys.argv[4])
MAX_ENTRIES = int(sys.argv[5])
INTERVAL = int(sys.argv[6]) / 1000.0
IDLE = float(sys.argv[7])
DIRFLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def emit(**kv):
    sys.stdout.write(json.dumps(kv, ensure_ascii=True, separators=(",", ":")) + "\n")


def fail(kind, msg, field="path"):
    emit(error=msg, kind=kind, field=field)
    sys.stdout.flush()
    sys.exit(3)


class TooBig(Exception):
    pass


class Gone(Exception):
    pass


def parts_of(rel):
    return [p for p in rel.split("/") if p]


def open_dir(base_fd, parts):
    # Opens base_fd/parts... refusing any symbolic link on the way.
    fd = os.dup(base_fd)
    try:
        for p in parts:
            nfd = os.open(p, DIRFLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def resolve():
    # Returns (stat of ROOT, fd of ROOT if a directory else None).
    parts = parts_of(ROOT)
    top = os.open("/", DIRFLAGS)
    try:
        if not parts:
            return os.fstat(top), os.dup(top)
        parent = open_dir(top, parts[:-1])  # a link on the way: ENOTDIR or ELOOP
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, "link")
            if not stat.S_ISDIR(st.st_mode):
                return st, None
            fd = os.open(parts[-1], DIRFLAGS, dir_fd=parent)
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                raise OSError(errno.ENOENT, "replaced")
            return fst, fd
        finally:
            os.close(parent)
    finally:
        os.close(top)


def link_on_way():
    # Whether ROOT is or goes through a symbolic link (for the message).
    cur = "/"
    for p in parts_of(ROOT):
        cur = os.path.join(cur, p)
        try:
            if stat.S_ISLNK(os.lstat(cur).st_mode):
                return True
        except OSError:
            return False
    return False


def listing(root_fd):
    # Every entry under root_fd (one level unless RECURSIVE): rel path ->
    # (is_dir, dev, ino, mtime_ns, size). Directories are reopened from
    # root_fd one component at a time, so no descriptor pile-up and no
    # recursion limit, and a link swapped in for one is not entered.
    entries = {}
    dirs = 0
    todo = [""]
    while todo:
        rel = todo.pop()
        try:
            fd = open_dir(root_fd, parts_of(rel))
        except OSError:
            continue  # gone or replaced meanwhile
        try:
            with os.scandir(fd) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    p = rel + "/" + e.name if rel else e.name
                    isdir = stat.S_ISDIR(st.st_mode)
                    entries[p] = (isdir, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
                    if len(entries) > MAX_ENTRIES:
                        raise TooBig("the watched tree has more than %d entries; watch a smaller subtree%s" % (MAX_ENTRIES, ", or without recursive" if RECURSIVE else ""))
                    if isdir and RECURSIVE:
                        dirs += 1
                        if dirs > MAX_DIRS:
                            raise TooBig("the watched tree has more than %d directories; watch a smaller subtree, or without recursive" % MAX_DIRS)
                        todo.append(p)
        except OSError:
            pass
        finally:
            os.close(fd)
    return entries


def kind(e):
    return "dir" if e[0] else "file"


def diff(old, new):
    # The events that turn old into new: removes first (deepest first),
    # then renames, creates and writes (parents first).
    by_ino = {}
    for p, e in old.items():
        k = (e[1], e[2])
        by_ino[k] = None if k in by_ino else p  # a hard-linked inode is ambiguous
    consumed = set()
    moved_dirs = []
    out = []
    for p in sorted(new):
        n = new[p]
        o = old.get(p)
        if o is not None and o[0] == n[0] and (o[1], o[2]) == (n[1], n[2]):
            if not n[0] and (o[3], o[4]) != (n[3], n[4]):
                out.append({"event": "write", "path": p, "type": kind(n)})
            continue
        # Inside a directory renamed in this round: moved along, silently.
        inside = False
        for frm, to in moved_dirs:
            if p.startswith(to + "/"):
                q = frm + p[len(to):]
                qe = old.get(q)
                if qe is not None and (qe[1], qe[2]) == (n[1], n[2]):
                    consumed.add(q)
                    if o is not None:
                        consumed.add(p)
                    inside = True
                    if not n[0] and (qe[3], qe[4]) != (n[3], n[4]):
                        out.append({"event": "write", "path": p, "type": kind(n)})
                break
        if inside:
            continue
        q = by_ino.get((n[1], n[2]))
        if q is not None and q != p and q not in consumed and old[q][0] == n[0]:
            qn = new.get(q)
            if qn is None or (qn[1], qn[2]) != (n[1], n[2]):
                consumed.add(q)
                if o is not None:
                    consumed.add(p)  # overwritten by the rename
                out.append({"event": "rename", "path": p, "from": q, "type": kind(n)})
                if n[0]:
                    moved_dirs.append((q, p))
                continue
        if o is not None:
            consumed.add(p)
            out.insert(0, {"event": "remove", "path": p, "type": kind(o)})
        out.append({"event": "create", "path": p, "type": kind(n)})
    removes = [{"event": "remove", "path": p, "type": kind(old[p])}
               for p in sorted(old, reverse=True) if p not in new and p not in consumed]
    return removes + out


def main():
    emit(pid=os.getpid())
    try:
        st, fd = resolve()
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.ENOTDIR and link_on_way()):
            fail("invalid", ROOT + " is or goes through a symbolic link; watch the path it points to")
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            fail("not_found", ROOT + " does not exist")
        if e.errno == errno.EACCES:
            fail("invalid", ROOT + ": permission denied")
        fail("invalid", ROOT + ": " + (e.strerror or str(e)))
    ident = (st.st_dev, st.st_ino)
    isdir = fd is not None
    known = {}
    try:
        if isdir:
            known = listing(fd)
    except TooBig as e:
        fail("invalid", str(e))
    finally:
        if fd is not None:
            os.close(fd)
    last = (st.st_mtime_ns, st.st_size)
    emit(ready=True)
    sys.stdout.flush()
    heard = time.monotonic()
    wait = INTERVAL
    while True:
        r, _, _ = select.select([0], [], [], wait)
        now = time.monotonic()
        if r:
            if not os.read(0, 4096):
                return  # the driver closed stdin
            heard = now
        elif now - heard > IDLE:
            return  # the driver is gone
        started = time.monotonic()
        try:
            try:
                st, fd = resolve()
            except OSError:
                raise Gone()
            if (st.st_dev, st.st_ino) != ident or (fd is not None) != isdir:
                if fd is not None:
                    os.close(fd)
                raise Gone()
            if isdir:
                try:
                    cur = listing(fd)
                finally:
                    os.close(fd)
                if cur != known:
                    for ev in diff(known, cur):
                        emit(**ev)
                    known = cur
            elif (st.st_mtime_ns, st.st_size) != last:
                last = (st.st_mtime_ns, st.st_size)
                emit(event="write", path="", type="file")
        except Gone:
            for p in sorted(known, reverse=True):
                emit(event="remove", path=p, type=kind(known[p]))
            emit(event="remove", path="", type="dir" if isdir else "file")
            sys.stdout.flush()
            return
        except TooBig as e:
            sys.stdout.flush()
            fail("invalid", str(e))
        sys.stdout.flush()
        # A large tree is listed less often: at most a tenth of the time.
        wait = min(max(INTERVAL, 9 * (time.monotonic() - started)), 10.0)


try:
    main()
except (BrokenPipeError, KeyboardInterrupt):
    pass
