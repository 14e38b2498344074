"""A real Airflow deployment on this machine, configured by docker-compose.yml itself.

Used by tests/test_airflow_stack.py. The compose file is read with PyYAML and its
`x-airflow-common` environment, the `x-db-setup` steps and `airflow-init`'s steps are run as
they are written, with three translations only (a container's view of the world mapped onto
this machine's):

- service names in URLs (`postgres`, `redis`, `airflow-apiserver`) become 127.0.0.1 and the
  port of the process the tests started in that service's place;
- the image's `/opt/airflow` becomes a temporary folder, with the compose file's volumes
  (`./dags`, `./logs`, `./backups`) mapped into it; `./dags` is a copy of the repository's
  `dags/` (read-only in compose; the copy lets a test add a prompts file);
- the `.env` values are generated per stack (strong secrets, the test cluster's superuser).

Every process is started in its own session (process group) and stopped by that id:
SIGTERM, a bounded wait, then SIGKILL. Logs stay under the stack's folder.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pgcluster
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
IMAGE_HOME = "/opt/airflow"
REDIS = "/usr/bin/redis-server"

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``${V}``, ``${V:-default}``, ``${V-default}``, ``${V:?err}``,
    ``${V?err}``, ``$V`` and ``$$`` (a literal ``$``). Not nested defaults (the compose file
    has none): one is refused rather than misread."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        if "${" in (m.group(3) or ""):
            raise ValueError(f"nested interpolation is not supported here: {m.group(0)}}}")
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        unset = not value if op in (":-", ":?") else value is None
        if op and op.endswith("-") and unset:
            return interpolate(arg, env)
        if op and op.endswith("?") and unset:
            raise ValueError(f"compose would refuse to start: {arg}")
        return value or ""

    return _VAR.sub(one, value)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service_env(name: str, dotenv: Mapping[str, str], spec: dict[str, Any] | None = None) -> dict:
    """The environment compose gives service `name` (anchors merged), interpolated."""
    spec = spec or compose()
    env = spec["services"][name].get("environment") or {}
    return {k: interpolate(str(v), dotenv) for k, v in env.items()}


def x_env(key: str, dotenv: Mapping[str, str], spec: dict[str, Any] | None = None) -> dict:
    """The environment of an `x-` extension block (`x-airflow-common`, `x-db-setup`)."""
    spec = spec or compose()
    env = spec[key].get("environment") or {}
    return {k: interpolate(str(v), dotenv) for k, v in env.items()}


def localize(env: Mapping[str, str], hosts: Mapping[str, int], home: Path) -> dict[str, str]:
    """A container's environment seen from this machine: `service[:port]` in URLs becomes
    127.0.0.1:PORT of the process standing in for that service, a bare service name in a
    `*HOST` variable (PGHOST) becomes 127.0.0.1, and /opt/airflow becomes `home`."""
    names = "|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True))
    in_url = re.compile(rf"(?<=[@/])({names})(?::\d+)?(?=[/?]|$)")
    out = {}
    for k, v in env.items():
        v = in_url.sub(lambda m: f"127.0.0.1:{hosts[m.group(1)]}", v)
        if k.endswith("HOST") and v in hosts:
            v = "127.0.0.1"
        v = v.replace(IMAGE_HOME, str(home))
        out[k] = v
    return out


free_port = pgcluster.free_port  # below the ephemeral range, never handed out twice


def fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the process group, a bounded wait, then SIGKILL to every process left
        of the tree (Airflow's task processes run in process groups of their own)."""
        tree = descendants(self.pid)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        kill_tree(self.pid, tree)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def kill(self) -> None:
        """SIGKILL to the process and all its descendants at once, as when a worker's host or
        pod dies: the tree is frozen (SIGSTOP) first, so that nothing forks or finishes a job
        in between, then killed."""
        kill_tree(self.pid, descendants(self.pid))
        self.popen.wait(10)

    def tail(self, n: int = 60) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return out


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children, found, todo = _children(), set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_tree(pid: int, known: set[int]) -> None:
    """SIGSTOP `pid`, `known` and every descendant until no new one appears, then SIGKILL
    them all (a stopped process cannot fork, and its orphans are still in `known`)."""
    frozen: set[int] = set()
    todo = {pid, *known}
    while todo - frozen:
        _signal(todo - frozen, signal.SIGSTOP)
        frozen |= todo
        todo = set(frozen)
        for p in list(frozen):
            todo |= descendants(p)
    _signal(frozen, signal.SIGKILL)


class StackError(RuntimeError):
    pass


@dataclass
class Stack:
    """Airflow's processes, Redis and the databases, as docker-compose.yml configures them."""

    base: Path
    pg_port: int
    superuser: str
    superpassword: str
    bindir: Path
    executor: str = "CeleryExecutor"
    procs: dict[str, Proc] = field(default_factory=dict)
    dotenv: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    api_port: int = 0
    redis_port: int = 0
    token: str = ""

    # -- set-up -----------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.base / "opt-airflow"

    @property
    def logs(self) -> Path:
        return self.base / "process-logs"

    def prepare(self, airflow_python: Path) -> None:
        self.airflow_bin = airflow_python.parent
        self.logs.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        # The compose file's volumes of x-airflow-common, plus the image's outputs folder.
        spec = compose()
        for volume in spec["x-airflow-common"]["volumes"]:
            src, dst = volume.split(":")[:2]
            target = Path(dst.replace(IMAGE_HOME, str(self.home)))
            if src == "./dags":
                shutil.copytree(ROOT / "dags", target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
        (self.home / "outputs").mkdir(exist_ok=True)
        hexid = secrets.token_hex(4)
        self.dotenv = {
            # check-secrets refuses root (0); as root here, the image's own airflow user.
            "AIRFLOW_UID": str(os.getuid() or 50000),
            "POSTGRES_USER": self.superuser,
            "POSTGRES_PASSWORD": self.superpassword,
            "POSTGRES_DB": f"airflow_{hexid}",
            "JOB_MANAGER_DB": f"job_manager_{hexid}",
            "JOB_MANAGER_DB_PASSWORD": secrets.token_urlsafe(24),
            "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "_AIRFLOW_WWW_USER_USERNAME": "airflow",
            "_AIRFLOW_WWW_USER_PASSWORD": secrets.token_urlsafe(24),
        }
        if self.executor != "LocalExecutor":  # the compose file's default
            self.dotenv["AIRFLOW__CORE__EXECUTOR"] = self.executor
        self.redis_port = free_port()
        self.spec = spec

    def hosts(self) -> dict[str, int]:
        return {
            "postgres": self.pg_port,
            "redis": self.redis_port,
            "airflow-apiserver": self.api_port,
        }

    def airflow_env(self, service: str = "airflow-scheduler", **extra: str) -> dict[str, str]:
        """What compose gives `service`, localized, plus what the image sets (AIRFLOW_HOME, the
        DAGs folder under it) and the venv's PATH."""
        env = localize(service_env(service, self.dotenv, self.spec), self.hosts(), self.home)
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "JOB_MANAGER", "PG", "_AIRFLOW"))
        }
        return {
            **base,
            "AIRFLOW_HOME": str(self.home),
            "PATH": f"{self.airflow_bin}:{self.bindir}:{os.environ.get('PATH', '')}",
            "PYTHONWARNINGS": "ignore",
            **env,
            **extra,
        }

    def run(self, name: str, cmd: list[str], env: Mapping[str, str], timeout: float) -> str:
        log = self.logs / f"{name}.log"
        with log.open("ab") as f:
            r = subprocess.run(
                cmd, env=dict(env), stdout=f, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        if r.returncode != 0:
            raise StackError(f"{name} exited {r.returncode}:\n{log.read_text()[-4000:]}")
        return log.read_text()

    def start(self, name: str, cmd: list[str], env: Mapping[str, str]) -> Proc:
        log = self.logs / f"{name}.log"
        f = log.open("ab")
        popen = subprocess.Popen(
            cmd,
            env=dict(env),
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        f.close()
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def setup_databases(self) -> None:
        """What the postgres image, `check-secrets`, `job-manager-db-setup`, `airflow-init` and
        `job-manager-grants` do, in compose's order."""
        common = {"PATH": f"{self.bindir}:{os.environ.get('PATH', '')}"}
        # check-secrets: the generated .env passes the deployment's own check.
        env = service_env("check-secrets", self.dotenv, self.spec)
        self.run(
            "check-secrets", ["bash", str(ROOT / "scripts/check_secrets.sh")], {**common, **env}, 30
        )
        # The postgres image creates POSTGRES_DB at first start.
        pgenv = {
            **common,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.pg_port),
            "PGUSER": self.superuser,
            "PGPASSWORD": self.superpassword,
        }
        self.run(
            "postgres-initdb",
            [
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
                "-c",
                f'CREATE DATABASE "{self.dotenv["POSTGRES_DB"]}"',
            ],
            pgenv,
            30,
        )
        setup = localize(x_env("x-db-setup", self.dotenv, self.spec), self.hosts(), self.home)
        setup = {
            **common,
            **setup,
            "PGPORT": str(self.pg_port),
            "JOB_MANAGER_GRANTS": str(ROOT / "scripts/job_manager_grants.sql"),
        }
        script = str(ROOT / "scripts/compose_db_setup.sh")
        self.run("job-manager-db-setup", ["bash", script, "before-init"], setup, 60)
        # airflow-init: the official entrypoint's _AIRFLOW_DB_MIGRATE and
        # _AIRFLOW_WWW_USER_CREATE, then the command compose gives it.
        init = self.airflow_env("airflow-init")
        airflow = str(self.airflow_bin / "airflow")
        self.run("airflow-init", [airflow, "db", "migrate"], init, 300)
        self.run(
            "airflow-init",
            [
                airflow,
                "users",
                "create",
                "--username",
                init["_AIRFLOW_WWW_USER_USERNAME"],
                "--firstname",
                "Airflow",
                "--lastname",
                "Admin",
                "--email",
                "airflowadmin@example.com",
                "--role",
                "Admin",
                "--password",
                init["_AIRFLOW_WWW_USER_PASSWORD"],
            ],
            init,
            120,
        )
        self.run(
            "airflow-init",
            [str(self.airflow_bin / "python"), "-m", "job_manager", "init"],
            init,
            120,
        )
        self.run("job-manager-grants", ["bash", script, "after-init"], setup, 60)
        self.env = self.airflow_env()

    def start_redis(self) -> None:
        for _ in range(3):
            p = self.start(
                "redis",
                [
                    REDIS,
                    "--port",
                    str(self.redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
                {},
            )
            if self._wait_port(self.redis_port, p, 10):
                return
            p.stop()
            self.redis_port = free_port()
        raise StackError("redis-server did not start: " + p.tail())

    def _wait_port(self, port: int, proc: Proc, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            time.sleep(0.2)
        return False

    def start_airflow(self, **extra: str) -> None:
        """api-server, scheduler, dag-processor, triggerer: compose's `command` of each;
        `extra` environment for all four (settings the compose file leaves at their default)."""
        airflow = str(self.airflow_bin / "airflow")
        # Port 0: the API server binds a port of the kernel's choosing and logs it (uvicorn's
        # "Uvicorn running on http://HOST:PORT"), so no other process can take it in between.
        api = self.start(
            "airflow-apiserver",
            [airflow, "api-server", "--host", "127.0.0.1", "--port", "0"],
            self.airflow_env("airflow-apiserver", **extra),
        )
        running = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
        deadline = time.monotonic() + 120
        while not (m := running.search(api.log.read_text(errors="replace"))):
            if not api.alive() or time.monotonic() > deadline:
                raise StackError("the API server did not start:\n" + api.tail())
            time.sleep(0.3)
        self.api_port = int(m.group(1))
        self.env = self.airflow_env()
        if not self._wait_http(f"{self.url}/api/v2/version", api, 120):
            raise StackError("the API server does not answer:\n" + api.tail())
        # Ports each container has to itself (compose's scheduler healthcheck port, the
        # triggerer's log server) are free ports here, several processes sharing one host.
        self.health_port = free_port()
        ports = {
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.health_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        for service in ("airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
            command = self.spec["services"][service]["command"].split()
            self.start(service, [airflow, *command], self.airflow_env(service, **ports, **extra))
        self.token = self.login()
        # compose's scheduler healthcheck: `curl --fail http://localhost:8974/health`.
        scheduler = self.procs["airflow-scheduler"]
        health = f"http://127.0.0.1:{self.health_port}/health"
        if not self._wait_http(health, scheduler, 120):
            raise StackError("the scheduler's health check did not pass:\n" + scheduler.tail())

    def start_worker(self, name: str, concurrency: int, **extra: str) -> Proc:
        """compose's `airflow-worker` (`celery worker`), one per host: --celery-hostname NAME,
        and NAME as the host name Airflow records on its task instances (each container has
        its own host name; these share one machine)."""
        command = self.spec["services"]["airflow-worker"]["command"].split()
        hostmod = self.base / "hostname_module"
        hostmod.mkdir(exist_ok=True)
        (hostmod / "stack_hostname.py").write_text(
            "import os\n\ndef name():\n    return os.environ['STACK_WORKER_HOSTNAME']\n"
        )
        env = self.airflow_env(
            "airflow-worker",
            STACK_WORKER_HOSTNAME=name,
            AIRFLOW__CORE__HOSTNAME_CALLABLE="stack_hostname.name",
            # Each worker container serves its task logs on 8793; here, one port each.
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            PYTHONPATH=str(hostmod),
            **extra,
        )
        return self.start(
            name,
            [
                str(self.airflow_bin / "airflow"),
                *command,
                "--celery-hostname",
                name,
                "--concurrency",
                str(concurrency),
            ],
            env,
        )

    def wait_workers(self, names: list[str], timeout: float = 120) -> None:
        """Until each worker has logged Celery's `celery@NAME ready.` (connected to the broker,
        consuming its queue)."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                proc = self.procs[name]
                if not proc.alive():
                    raise StackError(f"{name} exited:\n{proc.tail()}")
                if f"celery@{name} ready." in proc.log.read_text(errors="replace"):
                    pending.discard(name)
            if pending:
                time.sleep(0.5)
        if pending:
            raise StackError(f"workers {sorted(pending)} were not ready within {timeout} s")

    # -- REST API v2 ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _wait_http(self, url: str, proc: Proc, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                return False
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=5) as r,
            ):
                if r.status == 200:
                    return True
            time.sleep(0.5)
        return False

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            raise StackError(
                f"{method} {path}: HTTP {e.code}: {e.read().decode()[:2000]}"
            ) from None
        return json.loads(text) if text else None

    def login(self) -> str:
        """A JWT from the auth manager's /auth/token, with the admin user airflow-init made."""
        body = {
            "username": self.dotenv["_AIRFLOW_WWW_USER_USERNAME"],
            "password": self.dotenv["_AIRFLOW_WWW_USER_PASSWORD"],
        }
        return self.request("POST", "/auth/token", body, auth=False)["access_token"]

    def wait_dag(self, dag_id: str, timeout: float = 180) -> dict:
        """Until the dag-processor has parsed and serialized `dag_id`."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                return self.request("GET", f"/api/v2/dags/{dag_id}")
            except StackError as e:
                last = str(e)
            self.check_alive()
            time.sleep(1)
        raise StackError(f"{dag_id} was not parsed within {timeout} s: {last}")

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run["state"]
            self.check_alive()
            time.sleep(1)
        raise StackError(f"{dag_id} run {run_id} did not finish within {timeout} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        out = self.request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000"
        )
        return out["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        out = self.request(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
            f"return_value?map_index={map_index}&deserialize=true",
        )
        return out["value"]

    def check_alive(self) -> None:
        for p in self.procs.values():
            if not p.alive() and not getattr(p, "expected_dead", False):
                raise StackError(f"{p.name} exited {p.popen.returncode}:\n{p.tail()}")

    def report(self) -> str:
        """Every process's last lines, for a failing test's output."""
        return "\n\n".join(
            f"--- {p.name} (pid {p.pid}) ---\n{p.tail(40)}" for p in self.procs.values()
        )

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop()


@contextlib.contextmanager
def printed_on_failure(stack: Stack) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(stack.report())
        raise


def poll(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise StackError(f"{what}: not within {timeout} s")
