#!/usr/bin/env python3
"""powerfs: a FUSE filesystem that forgets, on command, what a machine losing power forgets.

Used by the harness's power-loss scenario (issue 13) and tested by test_powerfs.py. Needs the
`mfusepy` binding (PyPI) and libfuse3 (Debian `fuse3`); run as root, or with /dev/fuse usable.

    python3 Tests/harness/powerfs.py MOUNTPOINT --control SOCKET

Everything lives in this process's memory. Each file and directory has two states: the
CURRENT one, which every read, stat and readdir sees, and the DURABLE one, which is what a
power cut leaves. The model (strict POSIX, like LazyFS; stricter than ext4 in practice):

* A file's data (write, truncate, O_TRUNC) becomes durable only when that file is fsync'ed or
  fdatasync'ed (the two are the same here). Writes not yet durable are kept as a list of pending
  operations, in the order they were made.
* A directory entry (create, mkdir, unlink, rmdir, rename) becomes durable only when its
  directory is fsync'ed. fsync of a file does NOT make its name durable: a new file whose
  directory was not fsync'ed is gone after a cut, even if its data was fsync'ed. A rename is one
  operation touching one or two directories; an fsync of either makes it durable (a journaled
  rename commits as a whole). Pending entry operations are kept in one list, in the order made.
* Metadata other than names and sizes (mode, times) is not modelled as volatile: kept as is.
* `cut MODE SEED` models the power cut. Afterwards the current state is what the durable state
  became, every name unreachable from the root through durable entries is forgotten, and the
  kernel's caches are emptied by remounting (the control client unmounts; this process mounts
  again). Modes (SEED makes each choice reproducible):
    - clean:   every pending write and entry operation is lost.
    - torn:    each file keeps a seeded prefix of its pending writes, the first write left out
               possibly half there (its first whole 512-byte sectors: a torn last page);
               entry operations keep a seeded prefix of their list (a journal commits in order).
    - reorder: each file keeps a seeded subset of its pending writes (a later write on disk
               without an earlier one), applied in order; entry operations as in torn.
* Hard links, symlinks, xattrs and special files are not supported (ENOSYS/ENOTSUP); file
  locks are left to the kernel (one client at a time).

Control protocol on the Unix socket SOCKET: one line in, one JSON line out.
    cut clean|torn|reorder SEED   -> {"ok": true, "files_dropped": N, "writes_dropped": N, ...}
    stats                         -> {"ok": true, "pending_writes": N, "pending_entries": N, ...}
    sync                          -> makes everything durable (a `sync` of the whole disk)
    mounts                        -> {"ok": true, "mounts": N} (how many times it has mounted)
    quit                          -> unmounts and exits
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time

SECTOR = 512
TRACE = os.environ.get("POWERFS_TRACE") == "1"  # every namespace change and sync, to stderr


def trace(*what):
    if TRACE:
        print("powerfs:", *what, file=sys.stderr, flush=True)


class Node:
    __slots__ = ("ino", "is_dir", "mode", "cur", "dur", "pending", "atime", "mtime", "ctime")

    def __init__(self, ino, is_dir, mode):
        self.ino, self.is_dir, self.mode = ino, is_dir, mode
        # files: bytearray; directories: {name: Node}
        self.cur = {} if is_dir else bytearray()
        self.dur = {} if is_dir else bytearray()
        self.pending: list = []  # files only: ("w", offset, bytes) / ("t", length)
        now = time.time_ns()
        self.atime = self.mtime = self.ctime = now


def apply_data(buf: bytearray, op):
    if op[0] == "w":
        _, off, data = op
        if off > len(buf):
            buf.extend(b"\0" * (off - len(buf)))
        buf[off:off + len(data)] = data
    else:
        _, length = op
        if length < len(buf):
            del buf[length:]
        else:
            buf.extend(b"\0" * (length - len(buf)))


def apply_entry(op):
    """An entry operation on the DURABLE entries of the directories it names."""
    kind = op[0]
    if kind == "set":
        _, d, name, node = op
        d.dur[name] = node
    elif kind == "del":
        _, d, name = op
        d.dur.pop(name, None)
    else:  # rename
        _, d1, old, d2, new, node = op
        if d1.dur.get(old) is node:
            del d1.dur[old]
        d2.dur[new] = node


def entry_dirs(op):
    return (op[1], op[3]) if op[0] == "rename" else (op[1],)


class PowerFS:
    use_ns = True

    def __init__(self):
        self._mutex = threading.RLock()
        self.next_ino = 2
        self.root = Node(1, True, stat.S_IFDIR | 0o755)
        self.handles: dict[int, Node] = {}
        self.next_fh = 1
        self.entry_ops: list = []  # pending entry operations, in the order made
        self.counters = {"fsync": 0, "fsyncdir": 0, "writes": 0, "cuts": 0}

    # -- paths ----------------------------------------------------------------------------------
    def _lookup(self, path) -> Node:
        node = self.root
        for part in path.split("/"):
            if not part:
                continue
            if not node.is_dir:
                raise OSError(errno.ENOTDIR, path)
            node = node.cur.get(part)
            if node is None:
                raise OSError(errno.ENOENT, path)
        return node

    def _parent(self, path):
        head, name = path.rstrip("/").rsplit("/", 1)
        parent = self._lookup(head or "/")
        if not parent.is_dir:
            raise OSError(errno.ENOTDIR, path)
        return parent, name

    def _node(self, path, fh):
        if fh:
            node = self.handles.get(fh)
            if node is not None:
                return node
        if path is None:
            raise OSError(errno.EBADF, "no path")
        return self._lookup(path)

    def _new(self, is_dir, mode):
        node = Node(self.next_ino, is_dir, mode)
        self.next_ino += 1
        return node

    def _data(self, node, op):
        apply_data(node.cur, op)
        node.pending.append(op)
        node.mtime = node.ctime = time.time_ns()

    # -- FUSE operations ------------------------------------------------------------------------
    def init_with_config(self, conn, config):
        if config is not None:
            config.hard_remove = 1  # unlink an open file for real (no .fuse_hidden renames)
            config.entry_timeout = 0.0
            config.attr_timeout = 0.0
            config.negative_timeout = 0.0
            config.use_ino = 1

    def getattr(self, path, fh=None):
        with self._mutex:
            node = self._node(path, fh)
            size = 0 if node.is_dir else len(node.cur)
            return {"st_mode": node.mode, "st_ino": node.ino, "st_nlink": 2 if node.is_dir else 1,
                    "st_size": size, "st_blocks": (size + 511) // 512, "st_blksize": 4096,
                    "st_uid": os.getuid(), "st_gid": os.getgid(),
                    "st_atime": node.atime, "st_mtime": node.mtime, "st_ctime": node.ctime}

    def readdir(self, path, fh):
        with self._mutex:
            node = self._lookup(path)
            if not node.is_dir:
                raise OSError(errno.ENOTDIR, path)
            # With use_ino, an entry without its inode number (0) is skipped by readdir(3).
            return ([(".", {"st_mode": node.mode, "st_ino": node.ino}, 0), ("..", {"st_mode": stat.S_IFDIR, "st_ino": 1}, 0)]
                    + [(name, {"st_mode": n.mode, "st_ino": n.ino}, 0) for name, n in node.cur.items()])

    def opendir(self, path):
        with self._mutex:
            node = self._lookup(path)
            if not node.is_dir:
                raise OSError(errno.ENOTDIR, path)
            return 0

    def releasedir(self, path, fh):
        return 0

    def statfs(self, path):
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 22, "f_bfree": 1 << 21, "f_bavail": 1 << 21,
                "f_files": 1 << 20, "f_ffree": 1 << 19, "f_favail": 1 << 19, "f_namemax": 255}

    def mkdir(self, path, mode):
        with self._mutex:
            parent, name = self._parent(path)
            if name in parent.cur:
                raise OSError(errno.EEXIST, path)
            node = self._new(True, stat.S_IFDIR | (mode & 0o7777))
            parent.cur[name] = node
            self.entry_ops.append(("set", parent, name, node))
            trace("mkdir", path)
            return 0

    def rmdir(self, path):
        with self._mutex:
            parent, name = self._parent(path)
            node = parent.cur.get(name)
            if node is None:
                raise OSError(errno.ENOENT, path)
            if not node.is_dir:
                raise OSError(errno.ENOTDIR, path)
            if node.cur:
                raise OSError(errno.ENOTEMPTY, path)
            del parent.cur[name]
            self.entry_ops.append(("del", parent, name))
            return 0

    def create(self, path, mode, flags=0):
        with self._mutex:
            parent, name = self._parent(path)
            node = parent.cur.get(name)
            if node is None:
                node = self._new(False, stat.S_IFREG | (mode & 0o7777))
                parent.cur[name] = node
                self.entry_ops.append(("set", parent, name, node))
                trace("create", path)
            elif node.is_dir:
                raise OSError(errno.EISDIR, path)
            return self._open_node(node, flags)

    def open(self, path, flags):
        with self._mutex:
            node = self._lookup(path)
            if node.is_dir:
                raise OSError(errno.EISDIR, path)
            return self._open_node(node, flags)

    def _open_node(self, node, flags):
        if flags & os.O_TRUNC and len(node.cur):
            self._data(node, ("t", 0))
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node
        return fh

    def release(self, path, fh):
        with self._mutex:
            self.handles.pop(fh, None)
            return 0

    def flush(self, path, fh):
        return 0

    def read(self, path, size, offset, fh):
        with self._mutex:
            node = self._node(path, fh)
            return bytes(node.cur[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self._mutex:
            node = self._node(path, fh)
            self._data(node, ("w", offset, bytes(data)))
            self.counters["writes"] += 1
            return len(data)

    def truncate(self, path, length, fh=None):
        with self._mutex:
            node = self._node(path, fh)
            if node.is_dir:
                raise OSError(errno.EISDIR, path)
            self._data(node, ("t", length))
            return 0

    def fallocate(self, path, mode, offset, size, fh):
        with self._mutex:
            node = self._node(path, fh)
            if mode != 0:
                raise OSError(errno.EOPNOTSUPP, path)
            if offset + size > len(node.cur):
                self._data(node, ("t", offset + size))
            return 0

    def unlink(self, path):
        with self._mutex:
            parent, name = self._parent(path)
            node = parent.cur.get(name)
            if node is None:
                raise OSError(errno.ENOENT, path)
            if node.is_dir:
                raise OSError(errno.EISDIR, path)
            del parent.cur[name]
            self.entry_ops.append(("del", parent, name))
            trace("unlink", path)
            return 0

    def rename(self, old, new):
        with self._mutex:
            d1, n1 = self._parent(old)
            d2, n2 = self._parent(new)
            node = d1.cur.get(n1)
            if node is None:
                raise OSError(errno.ENOENT, old)
            target = d2.cur.get(n2)
            if target is node:
                return 0
            if target is not None:
                if target.is_dir and not node.is_dir:
                    raise OSError(errno.EISDIR, new)
                if node.is_dir and not target.is_dir:
                    raise OSError(errno.ENOTDIR, new)
                if target.is_dir and target.cur:
                    raise OSError(errno.ENOTEMPTY, new)
            del d1.cur[n1]
            d2.cur[n2] = node
            self.entry_ops.append(("rename", d1, n1, d2, n2, node))
            trace("rename", old, new)
            return 0

    def fsync(self, path, datasync, fh):
        with self._mutex:
            node = self._node(path, fh)
            self.counters["fsync"] += 1
            if node.is_dir:
                trace("fsync (directory)", path)
                self._sync_dir(node)
            else:
                for op in node.pending:
                    apply_data(node.dur, op)
                node.pending.clear()
            return 0

    def fsyncdir(self, path, datasync, fh):
        with self._mutex:
            node = self._node(path, None)
            self.counters["fsyncdir"] += 1
            trace("fsyncdir", path)
            self._sync_dir(node)
            return 0

    def _sync_dir(self, d):
        keep = []
        for op in self.entry_ops:
            if any(x is d for x in entry_dirs(op)):
                apply_entry(op)
            else:
                keep.append(op)
        self.entry_ops = keep

    def chmod(self, path, mode):
        with self._mutex:
            node = self._lookup(path)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
            return 0

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        with self._mutex:
            node = self._lookup(path)
            now = time.time_ns()
            node.atime, node.mtime = times if times else (now, now)
            return 0

    def access(self, path, amode):
        with self._mutex:
            self._lookup(path)
            return 0

    # -- the power cut --------------------------------------------------------------------------
    def _files(self, reachable_from_cur=True):
        seen, stack, out = set(), [self.root], []
        while stack:
            n = stack.pop()
            if n.ino in seen:
                continue
            seen.add(n.ino)
            out.append(n)
            if n.is_dir:
                stack.extend((n.cur if reachable_from_cur else n.dur).values())
        return out

    def all_nodes(self):
        """Every node the current or durable namespace or an open handle can reach, or a pending op names."""
        nodes = {}
        stack = [self.root] + list(self.handles.values())
        for op in self.entry_ops:
            stack.append(op[-1] if op[0] in ("set", "rename") else op[1])
        while stack:
            n = stack.pop()
            if n.ino in nodes:
                continue
            nodes[n.ino] = n
            if n.is_dir:
                stack.extend(n.cur.values())
                stack.extend(n.dur.values())
        return list(nodes.values())

    def stats(self):
        with self._mutex:
            nodes = self.all_nodes()
            return {"pending_writes": sum(len(n.pending) for n in nodes if not n.is_dir),
                    "pending_bytes": sum(len(op[2]) for n in nodes if not n.is_dir for op in n.pending if op[0] == "w"),
                    "pending_entries": len(self.entry_ops), "open_handles": len(self.handles), **self.counters}

    def sync_all(self):
        with self._mutex:
            for n in self.all_nodes():
                if not n.is_dir:
                    for op in n.pending:
                        apply_data(n.dur, op)
                    n.pending.clear()
            for op in self.entry_ops:
                apply_entry(op)
            self.entry_ops = []

    def cut(self, mode, seed):
        if mode not in ("clean", "torn", "reorder"):
            raise ValueError(f"unknown mode {mode!r}")
        rng = random.Random(f"powerfs:{seed}")
        trace("cut", mode, seed)
        with self._mutex:
            nodes = sorted(self.all_nodes(), key=lambda n: n.ino)
            result = {"mode": mode, "seed": seed, "writes_dropped": 0, "writes_kept": 0, "torn_writes": 0,
                      "entries_dropped": 0, "entries_kept": 0}
            for n in nodes:
                if n.is_dir or not n.pending:
                    continue
                ops = n.pending
                if mode == "clean":
                    keep, torn = [], None
                elif mode == "torn":
                    k = rng.randint(0, len(ops))
                    keep, torn = ops[:k], (ops[k] if k < len(ops) else None)
                else:
                    keep, torn = [op for op in ops if rng.random() < 0.5], None
                for op in keep:
                    apply_data(n.dur, op)
                if torn is not None and torn[0] == "w":
                    _, off, data = torn
                    # Whole sectors of the write that reached the disk: up to a sector boundary.
                    end = off + len(data)
                    first_boundary = (off // SECTOR + 1) * SECTOR
                    bounds = list(range(first_boundary, end, SECTOR))
                    if bounds:
                        cut_at = rng.choice(bounds)
                        apply_data(n.dur, ("w", off, data[:cut_at - off]))
                        result["torn_writes"] += 1
                result["writes_kept"] += len(keep)
                result["writes_dropped"] += len(ops) - len(keep)
                n.pending = []
            ops = self.entry_ops
            k = 0 if mode == "clean" else rng.randint(0, len(ops))
            for op in ops[:k]:
                apply_entry(op)
            result["entries_kept"], result["entries_dropped"] = k, len(ops) - k
            self.entry_ops = []
            # The machine comes back: the current state is the durable one.
            before = len(nodes)
            alive = self._files(reachable_from_cur=False)
            for n in alive:
                n.cur = dict(n.dur) if n.is_dir else bytearray(n.dur)
            # Handles still open (the kernel releases a killed process's files asynchronously, and
            # may still write back mmap'ed pages) now point to nothing: their writes are lost.
            for fh in self.handles:
                self.handles[fh] = Node(0, False, stat.S_IFREG)
            result["nodes_forgotten"] = before - len(alive)
            self.counters["cuts"] += 1
            return result


# ------------------------------------------------------------------------------------------------
# Control socket and the mount loop

def serve_control(fs: PowerFS, path, state):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    srv.bind(path)
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            words = data.decode(errors="replace").split()
            try:
                if not words:
                    raise ValueError("empty command")
                if words[0] == "cut":
                    answer = fs.cut(words[1], int(words[2]) if len(words) > 2 else 0)
                elif words[0] == "stats":
                    answer = fs.stats()
                elif words[0] == "sync":
                    fs.sync_all()
                    answer = {}
                elif words[0] == "mounts":
                    answer = {"mounts": state["mounts"]}
                elif words[0] == "quit":
                    state["quit"] = True
                    answer = {}
                else:
                    raise ValueError(f"unknown command {words[0]!r}")
                reply = dict(answer, ok=True)
            except Exception as error:  # answer, keep serving
                reply = {"ok": False, "error": repr(error)}
            conn.sendall((json.dumps(reply) + "\n").encode())
            if state.get("quit"):
                subprocess.run(["fusermount3", "-u", "-z", state["mountpoint"]], check=False)


# ------------------------------------------------------------------------------------------------
# The client side, for the harness and the self-test

def control(path, command, timeout_s=60.0):
    """Sends one control command; returns the JSON answer (raises when it is not ok)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    answer = json.loads(data)
    if not answer.get("ok"):
        raise RuntimeError(f"powerfs {command!r}: {answer.get('error')}")
    return answer


def python_for_powerfs():
    """The interpreter that runs powerfs: ORGSYNC_POWERFS_PYTHON (a virtualenv with mfusepy, as
    .ci/harness.sh makes), else this one."""
    return os.environ.get("ORGSYNC_POWERFS_PYTHON") or sys.executable


def missing_requirements(python=None):
    """What powerfs needs and this machine lacks (empty when it can run)."""
    missing = []
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse")
    elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
        missing.append("access to /dev/fuse (run as root)")
    if not shutil.which("fusermount3"):
        missing.append("fusermount3 (Debian package fuse3)")
    probe = subprocess.run([python or python_for_powerfs(), "-c", "import mfusepy"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        missing.append("the mfusepy module (PyPI; .ci/harness.sh installs it in a virtualenv)")
    return missing


class Mount:
    """A powerfs process mounted on `mountpoint`, its control socket in `workdir`. `spawn` starts
    a process (the harness's, which registers it for cleanup); `stop()` unmounts and stops it by
    its PID, also when called twice or after a failure."""

    def __init__(self, workdir, mountpoint, spawn=subprocess.Popen, log_path=None, python=None):
        self.mountpoint, self.socket = mountpoint, os.path.join(workdir, "powerfs.sock")
        self.log_path = log_path or os.path.join(workdir, "powerfs.log")
        self.spawn, self.proc = spawn, None
        self.python = python or python_for_powerfs()

    def start(self, timeout_s=30.0):
        os.makedirs(self.mountpoint, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = self.spawn([self.python, "-B", os.path.abspath(__file__), self.mountpoint, "--control", self.socket],
                               stdout=log, stderr=log)
        log.close()
        self._wait_mounted(1, timeout_s)

    def _wait_mounted(self, mounts, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"powerfs exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if control(self.socket, "mounts", timeout_s=5)["mounts"] >= mounts and os.path.ismount(self.mountpoint):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"powerfs: not mounted (mount {mounts}) within {timeout_s} s: {self.log_tail()}")

    def command(self, text):
        return control(self.socket, text)

    def cut(self, mode, seed, timeout_s=30.0):
        """The power cut: drops what is not durable (see the module docstring), then unmounts so
        that the kernel forgets its caches, and waits for the remount. Nothing may have a file open."""
        mounts = control(self.socket, "mounts")["mounts"]
        answer = control(self.socket, f"cut {mode} {seed}")
        result = subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True, timeout=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"fusermount3 -u: {result.stderr.decode(errors='replace').strip()}")
        self._wait_mounted(mounts + 1, timeout_s)
        return answer

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                control(self.socket, "quit", timeout_s=10)
            except (OSError, ValueError, RuntimeError):
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.mounted():  # also a dead mount (the process killed): "transport endpoint not connected"
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True, timeout=30)
        self.proc = None

    def mounted(self):
        """Whether the kernel lists the mount point (os.path.ismount says no for a dead FUSE mount)."""
        target = os.path.realpath(self.mountpoint)
        try:
            with open("/proc/self/mounts") as f:
                return any(line.split()[1].replace("\\040", " ") == target for line in f if len(line.split()) > 1)
        except OSError:
            return os.path.ismount(self.mountpoint)

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--control", required=True, help="Unix socket for cut/stats/sync/quit")
    args = ap.parse_args()
    import logging
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    logging.basicConfig(level=logging.ERROR)
    import mfusepy
    fs = PowerFS()
    state = {"mounts": 0, "quit": False, "mountpoint": args.mountpoint}
    threading.Thread(target=serve_control, args=(fs, args.control, state), daemon=True).start()
    # Mount again after every unmount (the client unmounts after a cut to empty the kernel's
    # caches), until `quit`.
    while not state["quit"]:
        state["mounts"] += 1
        print(f"powerfs: mount {state['mounts']} on {args.mountpoint}", file=sys.stderr, flush=True)
        mfusepy.FUSE(fs, args.mountpoint, foreground=True, nothreads=False, fsname="powerfs", subtype="powerfs",
                     default_permissions=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
