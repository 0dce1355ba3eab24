"""podman for tests: a private configuration and image store per test
module, images built from cached debootstrap roots, and cleanup of exactly
what the test created.

    pm = Podman(tmpdir)                  # containers.conf + storage in tmpdir
    pm.import_root(root, "localhost/x:t")   # `podman import` a cached root
    pm.build("localhost/y:t", context, dockerfile, build_args={...})
    pm.run(["--rm", "localhost/y:t", "version"])
    pm.play(yaml_path)                   # podman kube play, pods recorded
    pm.cleanup()                         # pods, containers, images by name

Settings (../shared/research/pylon-real.md, "Containers on these
machines"): Debian's runc (crun rejects this host's cgroup layout),
default_ulimits at or below the caller's hard limits, cgroupfs (no systemd
as PID 1), events to a file; CONTAINERS_CONF and CONTAINERS_STORAGE_CONF
point at files in tmpdir, so /etc/containers and /var/lib/containers are
never touched.  Every podman call has a timeout.
"""
import os
import resource
import shutil
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class Unavailable(Exception):
    pass


def hard_limits():
    """(nofile, nproc) no higher than what this process may set."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
    except (OSError, ValueError):
        pid_max = 32768
    cap = lambda v, want: want if v == resource.RLIM_INFINITY else min(v, want)  # noqa: E731
    return cap(nofile, 20000), cap(nproc, min(pid_max, 32768))


class Podman:
    def __init__(self, tmpdir):
        if shutil.which("podman") is None:
            raise Unavailable("no podman (Debian podman; scripts/install-deps.sh installs it)")
        if shutil.which("runc") is None:
            raise Unavailable("no runc (Debian runc; scripts/install-deps.sh installs it)")
        if os.geteuid() != 0:
            raise Unavailable("the podman tests run podman as root")
        self.dir = str(tmpdir)
        for d in ("graph", "run", "tmp", "volumes"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        nofile, nproc = hard_limits()
        self.conf = os.path.join(self.dir, "containers.conf")
        with open(self.conf, "w") as f:
            f.write('[containers]\n'
                    'default_ulimits = ["nofile=%d:%d", "nproc=%d:%d"]\n'
                    '[engine]\n'
                    'runtime = "runc"\n'
                    'cgroup_manager = "cgroupfs"\n'
                    'events_logger = "file"\n'
                    'events_logfile_path = "%s/events.log"\n'
                    'tmp_dir = "%s/tmp"\n'
                    'volume_path = "%s/volumes"\n'
                    % (nofile, nofile, nproc, nproc, self.dir, self.dir, self.dir))
        self.storage = os.path.join(self.dir, "storage.conf")
        with open(self.storage, "w") as f:
            f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s/graph"\n'
                    'runroot = "%s/run"\n' % (self.dir, self.dir))
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG": "C", "HOME": self.dir, "TMPDIR": os.path.join(self.dir, "tmp"),
                    "CONTAINERS_CONF": self.conf, "CONTAINERS_STORAGE_CONF": self.storage,
                    "CONTAINERS_REGISTRIES_CONF": os.path.join(self.dir, "registries.conf")}
        # no registry: a short name must never turn into a pull
        with open(self.env["CONTAINERS_REGISTRIES_CONF"], "w") as f:
            f.write('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        self.images, self.containers, self.pods = [], [], []

    def cmd(self, args, timeout=120, check=True, input=None):
        p = subprocess.run(["podman"] + list(args), env=self.env, capture_output=True,
                           timeout=timeout, input=input,
                           text=not isinstance(input, bytes))
        if check and p.returncode != 0:
            out = p.stdout if isinstance(p.stdout, str) else p.stdout.decode(errors="replace")
            err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode(errors="replace")
            raise AssertionError("podman %s: exit %d\n%s\n%s"
                                 % (" ".join(args[:6]), p.returncode, out[-3000:], err[-3000:]))
        return p

    def import_root(self, root, name, changes=(), timeout=600):
        """`podman import` of a cached root directory (tarred on the fly,
        without the cache's own marker file)."""
        argv = ["podman", "import"]
        for c in changes:
            argv += ["--change", c]
        argv += ["-", name]
        tar = subprocess.Popen(["tar", "-C", root, "--exclude=./.pylon-agent-ok",
                                "--numeric-owner", "-cf", "-", "."],
                               stdout=subprocess.PIPE)
        self.images.append(name)
        try:
            p = subprocess.run(argv, env=self.env, stdin=tar.stdout, capture_output=True,
                               text=True, timeout=timeout)
        finally:
            tar.stdout.close()
            tar.wait(timeout=60)
        assert p.returncode == 0 and tar.returncode == 0, \
            "podman import %s: %s" % (root, p.stderr[-2000:])
        return name

    def build(self, name, context, dockerfile, build_args=None, timeout=1800):
        argv = ["build", "--network", "host", "--pull=never", "-f", dockerfile, "-t", name]
        for k, v in (build_args or {}).items():
            argv += ["--build-arg", "%s=%s" % (k, v)]
        self.images.append(name)
        t0 = time.monotonic()
        p = self.cmd(argv + [context], timeout=timeout)
        return time.monotonic() - t0, p.stdout + p.stderr

    def run(self, args, timeout=120, check=True):
        """podman run ARGS...; a --name given is recorded for cleanup."""
        if "--name" in args:
            self.containers.append(args[args.index("--name") + 1])
        return self.cmd(["run", "--pull=never"] + list(args), timeout=timeout, check=check)

    def play(self, path, pod_names, timeout=180, check=True):
        self.pods.extend(pod_names)
        return self.cmd(["kube", "play", "--build=false", path],
                        timeout=timeout, check=check)

    def image_size(self, name):
        p = self.cmd(["image", "inspect", "--format", "{{.Size}}", name])
        return int(p.stdout.strip())

    def inspect(self, kind, name, fmt):
        return self.cmd([kind, "inspect", "--format", fmt, name]).stdout.strip()

    def logs(self, container):
        p = self.cmd(["logs", container], check=False, timeout=30)
        return (p.stdout or "") + (p.stderr or "")

    def cleanup(self):
        """Removes, by name, every pod, container and image this object
        created (kube play's pod infra containers and anonymous volumes
        go with their pods)."""
        errors = []
        for pod in reversed(self.pods):
            p = self.cmd(["pod", "rm", "-f", "-t", "0", pod], check=False, timeout=60)
            if p.returncode and "no pod with name" not in (p.stderr or ""):
                errors.append(p.stderr)
        for c in reversed(self.containers):
            p = self.cmd(["rm", "-f", "-t", "0", c], check=False, timeout=60)
            if p.returncode and "no container with" not in (p.stderr or ""):
                errors.append(p.stderr)
        self.cmd(["volume", "prune", "-f"], check=False, timeout=60)
        for img in reversed(self.images):
            self.cmd(["rmi", "-f", img], check=False, timeout=120)
        left = self.cmd(["ps", "-a", "--format", "{{.Names}}"], check=False).stdout.split()
        self.pods, self.containers, self.images = [], [], []
        return errors, left
