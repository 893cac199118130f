"""cluster/: every manifest parsed and validated, every documented command checked
against the job's real flags, and the single-machine nightly run end to end.

KubeRay manifests are checked against the real v1.7.0 CRD schemas in
../shared/schemas (objects without x-kubernetes-preserve-unknown-fields are
closed, as the API server prunes or rejects unknown fields), Kubernetes
built-ins with kubernetes-validate, and the `ray up` YAML with the schema that
ships inside Ray. The end-to-end test runs cluster/single-machine/
nightly-submit.sh against a real Ray head with `ray job submit`.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs import generate
from mhgan_dist.run.lease import LEASE_FILE
from mhgan_dist.run.nightly import LATEST, NightlyOptions
from mhgan_dist.run.record import MANIFEST, SUCCESS

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
SCHEMAS = REPO.parent / "shared" / "schemas" / "kuberay-v1.7.0"
SCRIPT = CLUSTER / "single-machine" / "nightly-submit.sh"
MANIFESTS = {"ray-up/cluster.yaml", "kuberay/rayjob.yaml", "kuberay/nightly-cronjob.yaml", "kuberay/raycronjob.yaml"}
NIGHT = "2031-01-02"
needs_schemas = pytest.mark.skipif(
    not SCHEMAS.is_dir(), reason="../shared/schemas (the KubeRay CRDs) is absent, as in a user's clone; CI has it")


def docs(relative: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CLUSTER / relative).read_text()) if d is not None]


def one(relative: str, kind: str) -> dict[str, Any]:
    found = [d for d in docs(relative) if d["kind"] == kind]
    assert len(found) == 1, f"{relative} holds {len(found)} {kind} objects"
    return found[0]


def nightly_template(night: str = NIGHT) -> dict[str, Any]:
    """The RayJob the CronJob's pod creates for ``night`` (its __DATE__ substituted, as sed does)."""
    text = one("kuberay/nightly-cronjob.yaml", "ConfigMap")["data"]["rayjob.yaml"]
    return yaml.safe_load(text.replace("__DATE__", night))


def ray_jobs() -> dict[str, dict[str, Any]]:
    """Every RayJob spec in cluster/: the one-off, the CronJob's template, the RayCronJob's template."""
    return {
        "rayjob": one("kuberay/rayjob.yaml", "RayJob")["spec"],
        "cronjob-template": nightly_template()["spec"],
        "raycronjob": one("kuberay/raycronjob.yaml", "RayCronJob")["spec"]["jobTemplate"],
    }


def test_every_manifest_in_cluster_is_covered_here() -> None:
    found = {str(p.relative_to(CLUSTER)) for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml")}
    assert found == MANIFESTS, "a manifest was added or removed: validate it in this file"
    for relative in MANIFESTS:
        assert docs(relative), relative


# ------------------------------------------------------- entrypoints, flags


def check_generate_args(args: list[str], where: str) -> tuple[Any, NightlyOptions | None]:
    """Parses a jobs.generate argument list as the job does; fails the test with the reason."""
    try:
        generate.build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: jobs.generate does not accept {shlex.join(args)}")
    config, runtime = generate.parse_job_config(args)
    nightly = NightlyOptions.from_flags(runtime, seed_given=False, today=dt.date(2031, 1, 1))
    output = config.output.output
    assert "://" in output or os.path.isabs(output), f"{where}: --output {output} is relative"
    return config, nightly


def entrypoint_args(entrypoint: str, where: str) -> list[str]:
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "jobs.generate"], f"{where}: {entrypoint}"
    assert importlib.util.find_spec(argv[2]) is not None
    return argv[3:]


def test_rayjob_entrypoints_are_real_commands() -> None:
    jobs = ray_jobs()
    config, nightly = check_generate_args(entrypoint_args(jobs["rayjob"]["entrypoint"], "rayjob"), "rayjob")
    assert nightly is None
    config, nightly = check_generate_args(entrypoint_args(jobs["cronjob-template"]["entrypoint"], "cronjob"), "cronjob")
    assert nightly is not None and nightly.date == dt.date.fromisoformat(NIGHT)  # pinned by the CronJob's pod
    assert nightly.keep is not None
    args = entrypoint_args(jobs["raycronjob"]["entrypoint"], "raycronjob")
    config, nightly = check_generate_args(args, "raycronjob")
    assert nightly is not None and "--date" not in args  # the template is fixed: the night is today (UTC)


_STOP = {"|", "&&", "||", ";", ">", ">>", "2>&1", ")"}


def _substitute(text: str, values: dict[str, str]) -> str:
    text = re.sub(r"\$\(date[^)]*\)", NIGHT, text)
    text = re.sub(r'"\$\{(\w+)\[@\]\}"', lambda m: values[m.group(1)], text)  # an array: its words
    return re.sub(r"\$\{?(\w+)(\[@\])?\}?", lambda m: values[m.group(1)], text)


def generate_commands(text: str, values: dict[str, str] | None = None) -> list[list[str]]:
    """Argument lists of the `python -m jobs.generate` commands in shell text (continuations joined)."""
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip().lstrip("#").strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    commands = []
    for line in logical:
        if "-m jobs.generate" in line:
            rest = _substitute(line.split("-m jobs.generate", 1)[1], values or {})
            tokens = shlex.split(rest)
            stop = next((i for i, t in enumerate(tokens) if t in _STOP), len(tokens))
            commands.append(tokens[:stop])
    return commands


def fenced_blocks(markdown: str) -> str:
    """The text of the bash/sh code blocks of a Markdown document."""
    blocks, language, current = [], None, []
    for line in markdown.splitlines():
        if line.startswith("```"):
            if language is None:
                language, current = line[3:].strip(), []
            else:
                if language in ("bash", "sh"):
                    blocks.append("\n".join(current))
                language = None
        elif language is not None:
            current.append(line)
    return "\n".join(blocks)


def test_readme_and_manifest_comments_use_the_jobs_real_flags() -> None:
    readme = (CLUSTER / "README.md").read_text()
    commands = generate_commands(fenced_blocks(readme))
    assert len(commands) >= 3
    for relative in MANIFESTS:
        comments = "\n".join(line for line in (CLUSTER / relative).read_text().splitlines()
                             if line.lstrip().startswith("#"))
        commands += generate_commands(comments)
    assert len(commands) >= 4
    for args in commands:
        check_generate_args(args, "cluster/README.md or a manifest comment")
    for path in set(re.findall(r"(?<![\w/])cluster/[\w./-]+\w", readme)):
        assert (REPO / path).exists(), f"cluster/README.md names {path}, which does not exist"
    for relative in (*MANIFESTS, "Dockerfile", "single-machine/nightly-submit.sh",
                     "single-machine/mhgan-nightly.timer", "single-machine/ray-head.service"):
        assert relative in readme, f"cluster/README.md does not mention {relative}"


def env_example() -> dict[str, str]:
    text = (CLUSTER / "single-machine" / "nightly.env.example").read_text()
    pairs = [line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return {k: v for k, v in pairs}


def test_the_nightly_script_builds_a_real_command_from_its_settings() -> None:
    text = SCRIPT.read_text()
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    env = env_example()
    values = {"night": NIGHT, "keep": env["MHGAN_KEEP"], "model": env["MHGAN_MODEL"], "output": env["MHGAN_OUTPUT"],
              "extra": env["MHGAN_ARGS"]}
    (args,) = generate_commands(text.split("exec ray job submit", 1)[1], values)
    config, nightly = check_generate_args(args, "nightly-submit.sh")
    assert nightly == NightlyOptions(dt.date.fromisoformat(NIGHT), keep=int(env["MHGAN_KEEP"]))
    assert config.sampling.num_samples == 100_000
    assert '--submission-id "$prefix-$next"' in text and 'prefix="mhgan-nightly-$night"' in text
    assert "date -u +%Y-%m-%d" in text
    header = text.split("set -euo pipefail", 1)[0]
    for name in set(re.findall(r"\b(MHGAN_\w+|RAY_\w+)", text)):
        assert f"#   {name}" in header, f"nightly-submit.sh uses {name} without documenting it"
    assert set(env) <= set(re.findall(r"\b(MHGAN_\w+|RAY_\w+)", text))


# ------------------------------------------------------------- schedules


CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def valid_cron(expression: str) -> bool:
    """Kubernetes' standard five-field cron syntax (numbers, *, ranges, lists, steps) or a macro."""
    if expression.startswith("@"):
        return expression in {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
    fields = expression.split()
    if len(fields) != 5:
        return False
    for text, (low, high) in zip(fields, CRON_RANGES):
        for part in text.split(","):
            base, slash, step = part.partition("/")
            if slash and not (step.isdigit() and int(step) > 0):
                return False
            if base == "*":
                continue
            first, dash, last = base.partition("-")
            bounds = [first, last] if dash else [first]
            if not all(b.isdigit() and low <= int(b) <= high for b in bounds):
                return False
            if dash and int(first) > int(last):
                return False
    return True


@pytest.mark.parametrize("expression, ok", [
    ("0 2 * * *", True), ("*/15 1-5 * * 1,3", True), ("@daily", True),
    ("0 2 * *", False), ("60 2 * * *", False), ("0 2 * * * *", False), ("0 5-1 * * *", False),
    ("TZ=UTC 0 2 * * *", False),
])
def test_cron_checker(expression: str, ok: bool) -> None:
    assert valid_cron(expression) is ok


def test_cronjob_schedules_nightly_and_forbids_overlap() -> None:
    cron = one("kuberay/nightly-cronjob.yaml", "CronJob")["spec"]
    assert valid_cron(cron["schedule"]) and zoneinfo.ZoneInfo(cron["timeZone"])
    assert cron["concurrencyPolicy"] == "Forbid"
    assert 0 < cron["startingDeadlineSeconds"] <= 6 * 3600
    job = cron["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["backoffLimit"] == 0
    # The waiting pod outlives its RayJob's deadline but ends within the day, before the next schedule.
    assert ray_jobs()["cronjob-template"]["activeDeadlineSeconds"] < job["activeDeadlineSeconds"] < 24 * 3600
    (container,) = pod["containers"]
    script = container["args"][0]
    subprocess.run(["sh", "-n", "-c", script], check=True)
    assert 'night="$(date -u +%Y-%m-%d)"' in script and 'name="mhgan-nightly-$night"' in script
    assert 'sed "s/__DATE__/$night/g" /etc/mhgan-nightly/rayjob.yaml | kubectl create -f -' in script
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["mountPath"] == "/etc/mhgan-nightly" and volume["configMap"]["name"] == "mhgan-nightly-rayjob"
    assert pod["serviceAccountName"] == one("kuberay/nightly-cronjob.yaml", "ServiceAccount")["metadata"]["name"]
    (rule,) = one("kuberay/nightly-cronjob.yaml", "Role")["rules"]
    assert rule == {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["get", "create"]}
    template = nightly_template("2031-12-31")
    assert template["metadata"]["name"] == "mhgan-nightly-2031-12-31"
    assert "--date 2031-12-31" in template["spec"]["entrypoint"]
    assert one("kuberay/nightly-cronjob.yaml", "ConfigMap")["data"]["rayjob.yaml"].count("__DATE__") == 3


def test_raycronjob_schedule() -> None:
    spec = one("kuberay/raycronjob.yaml", "RayCronJob")["spec"]
    assert valid_cron(spec["schedule"]) and zoneinfo.ZoneInfo(spec["timeZone"])
    assert spec["suspend"] is False
    assert spec["jobTemplate"]["backoffLimit"] == 0  # a retry after midnight would make the next date


def systemd_unit(name: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in (CLUSTER / "single-machine" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, value = line.split("=", 1)
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_units() -> None:
    timer = systemd_unit("mhgan-nightly.timer")
    assert re.fullmatch(r"\*-\*-\* \d\d:\d\d:\d\d UTC", timer["Timer"]["OnCalendar"][0])
    assert timer["Timer"]["Persistent"] == ["true"] and timer["Timer"]["Unit"] == ["mhgan-nightly.service"]
    service = systemd_unit("mhgan-nightly.service")
    assert service["Service"]["Type"] == ["oneshot"]
    assert service["Service"]["ExecStart"][0].endswith("/cluster/single-machine/nightly-submit.sh")
    assert "RAY_AUTH_MODE=token" in service["Service"]["Environment"]
    assert service["Unit"]["Requires"] == ["ray-head.service"]
    head = systemd_unit("ray-head.service")
    start = head["Service"]["ExecStart"][0]
    assert "ray start --head --block" in start and "--dashboard-host=127.0.0.1" in start
    assert "RAY_AUTH_MODE=token" in head["Service"]["Environment"]
    assert head["Service"]["KillMode"] == ["mixed"]  # SIGTERM to `ray start` alone (see the unit)
    assert all(unit.get("Install") for unit in (timer, head))


# ---------------------------------------------------- KubeRay and Kubernetes


def closed(node: Any) -> Any:
    """The schema with every object that lists its properties closed to others."""
    if isinstance(node, list):
        return [closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: closed(v) for k, v in node.items()}
    if (out.get("type") == "object" and isinstance(out.get("properties"), dict)
            and not out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in out):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(file: str):
    jsonschema = pytest.importorskip("jsonschema", reason="the manifest tests need jsonschema (the test extra)")
    crd = yaml.load((SCHEMAS / file).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(closed(version["schema"]["openAPIV3Schema"]))


def schema_errors(validator, document: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(document)]


@needs_schemas
def test_kuberay_manifests_match_the_crds() -> None:
    rayjob = crd_validator("ray.io_rayjobs.yaml")
    for name, document in (("rayjob.yaml", one("kuberay/rayjob.yaml", "RayJob")),
                           ("nightly-cronjob.yaml template", nightly_template())):
        assert document["apiVersion"] == "ray.io/v1"
        assert schema_errors(rayjob, document) == [], name
    raycron = crd_validator("ray.io_raycronjobs.yaml")
    document = one("kuberay/raycronjob.yaml", "RayCronJob")
    assert document["apiVersion"] == "ray.io/v1"
    assert schema_errors(raycron, document) == []


@needs_schemas
def test_closed_crd_schemas_reject_unknown_fields() -> None:
    validator = crd_validator("ray.io_rayjobs.yaml")
    document = one("kuberay/rayjob.yaml", "RayJob")  # a fresh copy: parsed again
    document["spec"]["shutdownAfterJobFinish"] = True  # a typo the API server would drop
    document["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["gpus"] = 1
    errors = schema_errors(validator, document)
    assert len(errors) == 2 and all("Additional properties are not allowed" in e for e in errors)


def test_kubernetes_objects_are_valid() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (the test extra) checks the Kubernetes built-ins")
    objects = docs("kuberay/nightly-cronjob.yaml")
    assert {d["kind"] for d in objects} == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob"}
    for version in ("1.27.0", kubernetes_validate.latest_version()):
        for document in objects:
            kubernetes_validate.validate(document, version, strict=True)


def pod_specs(spec: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[dict[str, Any], dict[str, Any]]]]:
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    return head, [(group, group["template"]["spec"]) for group in cluster["workerGroupSpecs"]]


def test_rayjobs_tear_down_authenticate_and_stay_internal() -> None:
    image = None
    for name, spec in ray_jobs().items():
        assert spec["shutdownAfterJobFinishes"] is True, name
        assert 0 < spec["ttlSecondsAfterFinished"] <= 3600, name
        assert 0 < spec["activeDeadlineSeconds"] <= 24 * 3600, name
        assert spec["submissionMode"] == "K8sJobMode", name
        cluster = spec["rayClusterSpec"]
        assert cluster["authOptions"]["mode"] == "token", name
        assert tuple(map(int, cluster["rayVersion"].split("."))) >= (2, 52), name  # token auth
        assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP", name
        assert not cluster["headGroupSpec"].get("enableIngress"), name
        assert "headService" not in cluster["headGroupSpec"], name
        head, workers = pod_specs(spec)
        (head_container,) = head["containers"]
        assert "nvidia.com/gpu" not in head_container["resources"]["limits"], name
        config, _ = check_generate_args(entrypoint_args(spec["entrypoint"], name), name)
        gpus = 0
        for group, pod in workers:
            (container,) = pod["containers"]
            limits = container["resources"]["limits"]
            assert limits == container["resources"]["requests"], name
            per_worker = int(limits["nvidia.com/gpu"])
            assert per_worker >= config.resources.gpus_per_actor > 0, name
            # Fixed size: the job starts one actor per GPU present when it starts.
            assert group["minReplicas"] == group["replicas"] == group["maxReplicas"], name
            gpus += per_worker * group["replicas"]
            assert container["image"] == head_container["image"], name
        assert gpus >= 1 and not cluster.get("enableInTreeAutoscaling"), name
        assert image in (None, head_container["image"]), "the manifests use different images"
        image = head_container["image"]
    assert [spec["rayClusterSpec"] for spec in ray_jobs().values()].count(ray_jobs()["rayjob"]["rayClusterSpec"]) == 3
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)", dockerfile, flags=re.M)
    assert base is not None and base.group(1) == ray_jobs()["rayjob"]["rayClusterSpec"]["rayVersion"]
    assert yaml.safe_load((CLUSTER / "ray-up" / "cluster.yaml").read_text())["docker"]["image"] == image


def test_nothing_in_cluster_is_exposed_outside() -> None:
    for relative in MANIFESTS:
        text = (CLUSTER / relative).read_text()
        for document in docs(relative):
            assert document.get("kind") not in ("Ingress", "Service", "Route"), relative
        assert "LoadBalancer" not in text and "NodePort" not in text, relative


# ---------------------------------------------------------------- ray up


def test_ray_up_config_matches_rays_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="the manifest tests need jsonschema (the test extra)")
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "ray-up" / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config)]
    assert errors == []
    validate_config(prepare_config(config))  # Ray's own checks, with its defaults filled in

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and "min_workers" not in head
    (worker_name,) = [name for name in types if name != config["head_node_type"]]
    worker = types[worker_name]
    assert worker["min_workers"] == 0 < worker["max_workers"] <= config["max_workers"]  # autoscaling GPU workers
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    assert "export RAY_AUTH_MODE=token" in head_start and "export RAY_AUTH_MODE=token" in worker_start
    assert "--dashboard-host=127.0.0.1" in head_start
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}


# ------------------------------------------------------------ end to end


def _night(env: dict[str, str], night: dt.date, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT)], env={**env, "MHGAN_DATE": night.isoformat(), **settings},
                          capture_output=True, text=True, timeout=600)


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-3000:]}"


def test_single_machine_nightly_end_to_end(ray_head, tiny_model, tmp_path: Path) -> None:
    """Two nights through nightly-submit.sh and `ray job submit` on a real head.

    Night one's first attempt is SIGKILLed mid-run (a driver fault), leaving
    its lease behind; running the script again submits attempt 2, which takes
    the dead run's lease over at once and resumes. Then the night is not
    submitted again, a direct re-run of the date is a no-op, and night two
    moves latest.json and removes night one (--keep 1).
    """
    url, env = ray_head
    if shutil.which("ray", path=env.get("PATH")) is None:
        pytest.skip("the ray CLI is not on PATH")
    # Dates of their own, so a long-lived head that saw this test before has no attempts of them.
    night1 = dt.date(2040, 1, 1) + dt.timedelta(days=uuid.uuid4().int % 20_000)
    night2 = night1 + dt.timedelta(days=1)
    root = tmp_path / "nightly"
    args = "--num-samples 120 --chain-length 8 --shard-chains 40 --num-actors 1"
    env = {**env, "RAY_API_SERVER_ADDRESS": url, "MHGAN_OUTPUT": str(root), "MHGAN_MODEL": str(tiny_model),
           "MHGAN_KEEP": "1", "MHGAN_ARGS": args}
    faults = tmp_path / "runtime_env.yaml"
    faults.write_text(yaml.safe_dump({"env_vars": {"MHGAN_FAULTS": "driver:5:1:exit",
                                                   "MHGAN_FAULTS_STATE": str(tmp_path / "fired")}}))
    day1 = root / f"date={night1}"

    done = _night(env, night1, MHGAN_RUNTIME_ENV=str(faults))
    assert done.returncode != 0 and f"submitting mhgan-nightly-{night1}-1" in done.stdout, _said(done)
    assert (day1 / LEASE_FILE).exists() and not (day1 / SUCCESS).exists() and not (root / LATEST).exists()

    done = _night(env, night1, MHGAN_RUNTIME_ENV=str(faults))
    assert done.returncode == 0 and f"submitting mhgan-nightly-{night1}-2" in done.stdout, _said(done)
    assert "took over the lease" in done.stdout and "its holder's process is gone" in done.stdout, _said(done)
    assert ": resume, " in done.stdout, _said(done)
    assert (day1 / SUCCESS).exists() and not (day1 / LEASE_FILE).exists() and not (day1 / "proposals").exists()
    assert json.loads((root / LATEST).read_text())["date"] == night1.isoformat()

    done = _night(env, night1)
    assert done.returncode == 0, _said(done)
    assert f"mhgan-nightly-{night1}-2 is SUCCEEDED: the night is not submitted again" in done.stdout

    manifest = (day1 / MANIFEST).read_bytes()
    rerun = subprocess.run(
        ["ray", "job", "submit", "--address", url, "--submission-id", f"mhgan-rerun-{night1}-{uuid.uuid4().hex[:8]}",
         "--working-dir", str(REPO), "--", "python", "-m", "jobs.generate", "--nightly", "--date", night1.isoformat(),
         "--keep", "1", "--model", str(tiny_model), "--output", str(root), "--quiet", *args.split()],
        env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "already complete: 120 samples" in rerun.stdout, _said(rerun)
    assert (day1 / MANIFEST).read_bytes() == manifest

    done = _night(env, night2)
    assert done.returncode == 0 and f"submitting mhgan-nightly-{night2}-1" in done.stdout, _said(done)
    latest = json.loads((root / LATEST).read_text())
    assert latest["date"] == night2.isoformat() and latest["num_samples"] == 120
    assert (root / f"date={night2}" / SUCCESS).exists() and not day1.exists()
    assert f"removed date={night1} (--keep 1)" in done.stdout


# ------------------------------------- a multi-node Ray that loses nodes (ray.cluster_utils.Cluster)
#
# The Cluster runs in a host process of its own: the test session's Ray lives in
# this process, and a process holds one Ray. Jobs join it as a user's would
# (`python -m jobs.generate --ray-address ...`); a fault of mode "wait" pauses a
# worker at the chosen stage, and the host removes the node under that worker
# (SIGKILL of its raylet and every process on it, without warning).

NODE_CPUS = 2
LOSS_ARGS = ["--num-samples", "240", "--chain-length", "20", "--shard-chains", "20", "--seed", "7",
             "--batch-size", "256", "--quiet"]
JOB_TIMEOUT_S = 420


def _cluster_host() -> None:
    """The host process: a head without CPUs and worker nodes, driven by lines on stdin.

    argv[1]: JSON {"workers": [CPUs of each worker node]}. Prints "address ADDRESS",
    then answers "remove-node-of PID" (removes the worker node whose raylet is an
    ancestor of PID) with "removed", "add CPUS" with "added", and stops on "quit".
    """
    import signal
    import sys

    import ray
    from ray.cluster_utils import Cluster

    spec = json.loads(sys.argv[1])
    address_file = ray._private.utils.get_ray_address_file(None)
    before = Path(address_file).read_text() if os.path.exists(address_file) else None
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    # Cluster writes its address where a bare ray.init() on this machine would find it: put back what was there.
    if before is None:
        Path(address_file).unlink(missing_ok=True)
    else:
        Path(address_file).write_text(before)
    for cpus in spec["workers"]:
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    print("address", cluster.address, flush=True)

    def raylet_pid(node) -> int:
        return node.all_processes["raylet"][0].process.pid

    def ancestors(pid: int) -> list[int]:
        chain = []
        while pid > 1:
            chain.append(pid)
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                break
        return chain

    for line in sys.stdin:
        command, *rest = line.split()
        if command == "remove-node-of":
            pid = int(rest[0])
            chain = ancestors(pid)
            (node,) = [n for n in cluster.worker_nodes if raylet_pid(n) in chain]
            cluster.remove_node(node, allow_graceful=False)
            try:
                os.kill(pid, signal.SIGKILL)  # gone with its node, if not already
            except ProcessLookupError:
                pass
            print("removed", flush=True)
        elif command == "add":
            cluster.add_node(num_cpus=float(rest[0]))
            cluster.wait_for_nodes()
            print("added", flush=True)
        elif command == "quit":
            break
    cluster.shutdown()


class ClusterHost:
    def __init__(self, workers: list[int]) -> None:
        import sys

        self.process = subprocess.Popen(
            [sys.executable, "-c", "from tests.cluster.test_cluster import _cluster_host; _cluster_host()",
             json.dumps({"workers": workers})],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        self.address = self._answer("address").split()[1]
        self.workers = len(workers)

    def _answer(self, expected: str) -> str:
        line = self.process.stdout.readline()
        assert line.startswith(expected), f"the cluster host said {line!r}"
        return line

    def remove_node_of(self, pid: int) -> None:
        self.process.stdin.write(f"remove-node-of {pid}\n")
        self.process.stdin.flush()
        self._answer("removed")
        self.workers -= 1

    def add(self, cpus: float = NODE_CPUS) -> None:
        self.process.stdin.write(f"add {cpus}\n")
        self.process.stdin.flush()
        self._answer("added")
        self.workers += 1

    def close(self) -> None:
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


@pytest.fixture(scope="module")
def cluster_host():
    host = ClusterHost([NODE_CPUS, NODE_CPUS])
    yield host
    host.close()


@pytest.fixture
def two_workers(cluster_host):
    """The host with two worker nodes of NODE_CPUS again after a test removed one."""
    while cluster_host.workers < 2:
        cluster_host.add()
    return cluster_host


@pytest.fixture(scope="module")
def loss_reference(ray_session, tiny_model, tmp_path_factory):
    """An uninterrupted run of LOSS_ARGS (in this process's Ray: rows do not depend on the layout)."""
    from mhgan_dist.pipeline.driver import run_job

    out = tmp_path_factory.mktemp("loss-reference") / "run"
    config, _ = generate.parse_job_config(["--model", str(tiny_model), *LOSS_ARGS, "--output", str(out)])
    assert run_job(config, show_progress=False, log=lambda m: None).status == "complete"
    return out


def _job(host: ClusterHost, args: list[str], tmp_path: Path, faults: str | None = None) -> subprocess.Popen:
    import sys

    env = {**os.environ, "MHGAN_FAULTS_STATE": str(tmp_path / "fired")}
    env.pop("RAY_ADDRESS", None)
    if faults:
        env["MHGAN_FAULTS"] = faults
    log = tmp_path / "job"
    return subprocess.Popen([sys.executable, "-m", "jobs.generate", *args, "--ray-address", host.address],
                            cwd=REPO, env=env, stdout=open(f"{log}.out", "w"), stderr=open(f"{log}.err", "w"))


def _finished(job: subprocess.Popen, tmp_path: Path) -> tuple[int, str, str]:
    job.wait(timeout=JOB_TIMEOUT_S)
    return job.returncode, (tmp_path / "job.out").read_text(), (tmp_path / "job.err").read_text()


def _when_waiting(job: subprocess.Popen, tmp_path: Path, point: str, index: int) -> int:
    """The pid of the worker that the fault paused at POINT INDEX."""
    import time

    marker = tmp_path / "fired" / f"{point}-{index}.waiting"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (marker.exists() and marker.read_text()):
        assert job.poll() is None, (tmp_path / "job.err").read_text()[-3000:]
        assert time.monotonic() < deadline, f"the fault at {point} {index} never fired"
        time.sleep(0.2)
    return int(marker.read_text())


@pytest.mark.parametrize("point, index", [("calibration", 0), ("shard", 3), ("chains", 2), ("materialise", 1)],
                         ids=["calibration", "proposal-scoring", "chain-picking", "materialisation"])
def test_a_worker_node_lost_at_any_stage_leaves_the_same_rows(loss_reference, two_workers, tiny_model, tmp_path,
                                                              point, index):
    from tests.conftest import assert_same_rows

    out = tmp_path / "run"
    job = _job(two_workers, ["--model", str(tiny_model), *LOSS_ARGS, "--output", str(out), "--num-actors", "2"],
               tmp_path, f"{point}:{index}:1:wait")
    two_workers.remove_node_of(_when_waiting(job, tmp_path, point, index))
    code, stdout, stderr = _finished(job, tmp_path)
    assert code == 0, stderr[-3000:]
    assert "complete: 240 samples" in stdout
    assert_same_rows(loss_reference, out)
    recovery = json.loads((out / MANIFEST).read_text())["recovery"]
    assert recovery["retries"] >= 1, recovery  # the paused unit at least ran again
    assert recovery["actors_lost"] >= 1 and recovery["actors_replaced"] == recovery["actors_lost"], recovery
    assert f"recovered: {recovery['retries']} unit(s) run again, {recovery['actors_lost']} proposal actor(s) lost" \
        in stdout


def test_a_node_lost_so_that_fewer_actors_fit_finishes_on_the_survivors(loss_reference, two_workers, tiny_model,
                                                                       tmp_path):
    from tests.conftest import assert_same_rows

    out = tmp_path / "run"
    # Two actors per 2-CPU node: with one node gone the replacements cannot be placed.
    job = _job(two_workers, ["--model", str(tiny_model), *LOSS_ARGS, "--output", str(out), "--num-actors", "4"],
               tmp_path, "shard:4:1:wait")
    two_workers.remove_node_of(_when_waiting(job, tmp_path, "shard", 4))
    code, stdout, stderr = _finished(job, tmp_path)
    assert code == 0, stderr[-3000:]
    assert_same_rows(loss_reference, out)
    recovery = json.loads((out / MANIFEST).read_text())["recovery"]
    assert recovery["actors_lost"] >= 1 and recovery["retries"] >= 1, recovery


def test_an_unschedulable_layout_on_a_joined_cluster_says_what_waits_and_stops(two_workers, tiny_model, tmp_path):
    out = tmp_path / "run"
    job = _job(two_workers, ["--model", str(tiny_model), *LOSS_ARGS, "--output", str(out), "--num-actors", "1",
                              "--cpus-per-actor", "3", "--progress-watch-interval", "1", "--resource-timeout", "6"],
               tmp_path)
    code, stdout, stderr = _finished(job, tmp_path)
    assert code == 2, stderr[-3000:]
    waiting = [line for line in stderr.splitlines() if line.startswith("waiting ")]
    assert len(waiting) >= 2, stderr[-3000:]
    assert "1 proposal actor(s) have not started (each asks 3 CPU and 0 GPU)" in waiting[0]
    assert re.search(r"the cluster has [\d.]+ of 4 CPUs and 0 of 0 GPUs free", waiting[0]), waiting[0]
    (error,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "(--resource-timeout 6)" in error and error.endswith("re-run the same command to resume"), error
    assert not (out / SUCCESS).exists()


# ------------------------------------------------ the default layout, and the watch (no Ray)


@pytest.mark.parametrize("nodes, expected", [
    (((2, 0),), (2, 1.0, 0.0)),                        # a laptop: one actor per core
    (((64, 0),), (64, 1.0, 0.0)),                      # one big node
    (((0, 0), (8, 0), (8, 0), (4, 0)), (20, 1.0, 0.0)),  # many nodes, a head without CPUs
    (((0, 0), (2.5, 0), (3.5, 0)), (5, 1.0, 0.0)),     # fractional CPUs: whole cores per node
    (((0, 0), (16, 4), (16, 4)), (8, 1.0, 1.0)),       # GPU nodes: one actor per GPU
])
def test_the_default_layout_fills_the_cluster(nodes, expected):
    from mhgan_dist.run.config import ResourceConfig
    from mhgan_dist.pipeline.resources import ClusterView, check_fits, plan_layout

    res = ResourceConfig()
    layout = plan_layout(res, ClusterView(nodes, started_here=False))
    assert (layout.count, layout.cpus, layout.gpus) == expected
    assert layout.threads is None  # one torch thread per actor
    if len(nodes) == 1:
        check_fits(layout, ClusterView(nodes, started_here=True), res)  # a job-started Ray holds its defaults


def test_an_explicit_layout_a_job_started_ray_cannot_hold_is_refused():
    from mhgan_dist.run.config import ResourceConfig
    from mhgan_dist.errors import ConfigError
    from mhgan_dist.pipeline.resources import ClusterView, check_fits, plan_layout

    res = ResourceConfig(num_actors=1, gpus_per_actor=1.0)
    view = ClusterView(((2, 0),), started_here=True)
    with pytest.raises(ConfigError, match=r"need 1 CPUs and 1 GPUs, but the Ray this job started has 2 CPUs "
                                          r"and 0 GPUs"):
        check_fits(plan_layout(res, view), view, res)
    check_fits(plan_layout(res, view), ClusterView(((2, 0),), started_here=False), res)  # joined: it may grow


def test_the_watch_reports_only_while_something_waits_and_stops_at_the_timeout():
    from mhgan_dist.errors import StageError
    from mhgan_dist.pipeline.scheduler import ResourceWatch

    now = [0.0]
    said: list[str] = []
    watch = ResourceWatch(30.0, 95.0, said.append, clock=lambda: now[0])
    blocked: list[str | None] = [None]
    for t in (10, 31, 62):  # a long unit runs: nothing waits for capacity, nothing is said
        now[0] = t
        watch.check(lambda: blocked[0])
    assert said == []
    watch.progressed()  # at 62
    blocked[0] = "1 proposal actor(s) have not started"
    for t in (70, 93, 124):
        now[0] = t
        watch.check(lambda: blocked[0])
    assert said == ["waiting 31 s: 1 proposal actor(s) have not started", "waiting 62 s: 1 proposal actor(s) have not started"]
    now[0] = 157
    with pytest.raises(StageError, match=r"^nothing progressed for 95 s while 1 proposal actor\(s\) have not started, "
                                         r"so the run stopped \(--resource-timeout 95\)"):
        watch.check(lambda: blocked[0])
    forever = ResourceWatch(1.0, 0.0, said.append, clock=lambda: now[0])
    now[0] = 10_000
    forever.check(lambda: "something")  # 0: waits forever
