"""Offline checks of the deployment files: KubeRay manifests (k8s/) and `ray up` cluster-launcher YAMLs.

    python -m cluster.manifests                          # every file in k8s/ and cluster/launcher/
    python -m cluster.manifests k8s/rayjob.yaml          # exit 1 and one line per problem

Pod templates are validated against the Kubernetes Pod schema (`kubernetes_validate`, strict: unknown fields fail);
launcher YAMLs against Ray's own schema (ray/autoscaler/ray-schema.json in the installed wheel). The rest are our
rules, each tied to how the jobs run: autoscaling and token auth on, a CPU-only head, requests == limits, GPU counts
that agree, one image, a shared volume at one path (the driver on the head builds models that GPU pods load), and
entrypoints / Serve import paths / config files / overrides that exist in this repository. Every problem names the
file, the path in the document and the fix. No cluster, kubectl or network is needed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import yaml

__all__ = ["load_docs", "pod_templates", "check_pod_templates", "check_raycluster", "check_rayjob",
           "check_rayservice", "check_launcher", "check_manifest", "check_file", "main"]

REPO = Path(__file__).resolve().parents[1]
APP_DIR = "/app"             # where the Dockerfile copies the repository; manifests refer to configs under it
K8S_VERSION = "1.37"         # the newest Kubernetes schema kubernetes-validate 1.37.0 bundles
RAY_VERSION = importlib.metadata.version("ray")
GPU = "nvidia.com/gpu"
CLUSTER_SPEC = {"RayCluster": ("spec",), "RayJob": ("spec", "rayClusterSpec"),
                "RayService": ("spec", "rayClusterConfig")}
# Entrypoints / Serve apps whose config files and overrides we load with the job's own config class.
RUN_CONFIGS = {"jobs.train": ("jobs.config", "RunConfig")}
SERVE_CONFIGS = {"jobs.serve:app": ("jobs.serve_config", "ServeConfig")}
_QUANTITY = re.compile(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?")
_SCALE = {None: 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def _problem(source: str, path: str, what: str, fix: str) -> str:
    end = " " if what.endswith(("?", ".")) else ". "
    return f"{source}: {path}: {what}{end}Fix: {fix}"


def _dig(doc, *keys, default=None):
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return default
        doc = doc[key]
    return doc


def load_docs(path: str | Path) -> list[dict]:
    """The YAML documents of a file (empty ones skipped)."""
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _cluster_spec(doc: dict) -> tuple[str, dict] | None:
    keys = CLUSTER_SPEC.get(doc.get("kind"))
    spec = _dig(doc, *keys) if keys else None
    return (".".join(keys), spec) if isinstance(spec, dict) else None


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(path in the doc, pod template) of the head and every worker group of a RayCluster / RayJob / RayService."""
    found = _cluster_spec(doc)
    if found is None:
        return []
    prefix, spec = found
    out = [(f"{prefix}.headGroupSpec.template", _dig(spec, "headGroupSpec", "template", default={}))]
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        out.append((f"{prefix}.workerGroupSpecs[{i}].template", _dig(group, "template", default={})))
    return out


def _schema_fix(validator: str) -> str:
    return {"additionalProperties": "remove the field or correct its spelling",
            "required": "add the missing field",
            "type": "give the value the type the schema names",
            "enum": "use one of the values the schema allows"}.get(validator, "follow the schema")


def _k8s_validate(obj: dict, source: str, path: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        at = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.path)
        return [_problem(source, at, f"Kubernetes {K8S_VERSION} {obj.get('kind')} schema: {e.message}",
                         _schema_fix(e.validator))]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [_problem(source, path, e.message, "use a kind and apiVersion Kubernetes defines")]
    return []


def check_pod_templates(doc: dict, source: str = "manifest") -> list[str]:
    """Each pod template, wrapped in a Pod, against the strict Kubernetes schema."""
    problems = []
    for path, template in pod_templates(doc):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata") or {},
               "spec": template.get("spec")}
        problems += _k8s_validate(pod, source, path)
    return problems


# ---- RayCluster rules (also the cluster inside a RayJob or RayService) ----------------------------------------------

def quantity(value) -> float | None:
    """A Kubernetes quantity as a number ("500m" -> 0.5, "2Gi" -> 2147483648); None if it is not one."""
    m = _QUANTITY.fullmatch(str(value).strip())
    return float(m.group(1)) * _SCALE[m.group(2)] if m else None


def _resource_problems(resources, source: str, path: str) -> list[str]:
    requests, limits = (resources or {}).get("requests") or {}, (resources or {}).get("limits") or {}
    problems = []
    for key in ("cpu", "memory", GPU):
        req, lim = requests.get(key), limits.get(key)
        if key == GPU and req is None and lim is None:
            continue
        if req is None or lim is None:
            problems.append(_problem(source, f"{path}.resources", f"{key} is set in only one of requests/limits",
                                     f"set requests.{key} and limits.{key} to the same value"))
        elif quantity(req) is None or quantity(lim) is None:
            problems.append(_problem(source, f"{path}.resources", f"{key} {req!r}/{lim!r} is not a quantity",
                                     "use e.g. cpu: \"8\", memory: 48Gi, nvidia.com/gpu: \"1\""))
        elif quantity(req) != quantity(lim):
            problems.append(_problem(source, f"{path}.resources", f"requests.{key} {req} != limits.{key} {lim}",
                                     "make them equal: Ray sizes itself from limits, and only equal ones give the "
                                     "pod Guaranteed QoS"))
    return problems


def _gpus(container: dict) -> float:
    return quantity(_dig(container, "resources", "limits", GPU, default=0)) or 0.0


def _containers(template: dict) -> list[dict]:
    return [c for c in _dig(template, "spec", "containers", default=[]) or [] if isinstance(c, dict)]


def _mounts(template: dict) -> dict[str, str]:
    """mountPath -> claimName of the PVC-backed volumes the Ray container (index 0, as KubeRay) mounts."""
    claims = {v.get("name"): _dig(v, "persistentVolumeClaim", "claimName")
              for v in _dig(template, "spec", "volumes", default=[]) or []}
    containers = _containers(template)
    mounts = containers[0].get("volumeMounts") or [] if containers else []
    return {m.get("mountPath"): claims[m.get("name")] for m in mounts if claims.get(m.get("name"))}


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def check_raycluster(doc: dict, source: str = "manifest") -> list[str]:
    """Our rules for the cluster of a RayCluster, RayJob or RayService (see the module doc)."""
    found = _cluster_spec(doc)
    if found is None:
        return [_problem(source, "spec", f"no Ray cluster spec in a {doc.get('kind')!r}",
                         "use kind RayCluster (spec), RayJob (spec.rayClusterSpec) or RayService "
                         "(spec.rayClusterConfig)")]
    p, spec = found
    problems = []
    if spec.get("rayVersion") != RAY_VERSION:
        problems.append(_problem(source, f"{p}.rayVersion", f"{spec.get('rayVersion')!r} is not the project's Ray "
                                 f"{RAY_VERSION}", f"set rayVersion: \"{RAY_VERSION}\" (the image's Ray)"))
    if spec.get("enableInTreeAutoscaling") is not True:
        problems.append(_problem(source, f"{p}.enableInTreeAutoscaling", "autoscaling is off",
                                 "set enableInTreeAutoscaling: true"))
    options = spec.get("autoscalerOptions")
    if not isinstance(options, dict):
        problems.append(_problem(source, f"{p}.autoscalerOptions", "missing", "give the autoscaler sidecar "
                                 "upscalingMode, idleTimeoutSeconds and resources (requests == limits)"))
    else:
        if options.get("upscalingMode", "Default") not in ("Default", "Aggressive", "Conservative"):
            problems.append(_problem(source, f"{p}.autoscalerOptions.upscalingMode", f"{options['upscalingMode']!r}"
                                     " unknown", "use Default, Aggressive or Conservative"))
        problems += _resource_problems(options.get("resources"), source, f"{p}.autoscalerOptions")
    if _dig(spec, "authOptions", "mode") != "token":
        problems.append(_problem(source, f"{p}.authOptions", "token authentication is off",
                                 "set authOptions: {mode: token} (DESIGN.md: keep authentication on)"))

    head = spec.get("headGroupSpec") or {}
    head_tpl = head.get("template") or {}
    if not _containers(head_tpl):
        return problems + [_problem(source, f"{p}.headGroupSpec.template.spec.containers", "no containers",
                                    "give the head a Ray container")]
    params = head.get("rayStartParams") or {}
    if str(params.get("num-gpus", "0")) != "0" or any(_gpus(c) or _dig(c, "resources", "requests", GPU)
                                                      for c in _containers(head_tpl)):
        problems.append(_problem(source, f"{p}.headGroupSpec", "the head has a GPU", "keep the head CPU-only: "
                                 f"remove {GPU} from its resources and num-gpus from its rayStartParams; GPUs "
                                 "belong in a worker group"))
    if "num-cpus" not in params:
        problems.append(_problem(source, f"{p}.headGroupSpec.rayStartParams", "num-cpus is not set",
                                 "set num-cpus: \"0\" so actors are placed on worker pods, not the head"))

    groups = spec.get("workerGroupSpecs") or []
    if not groups:
        problems.append(_problem(source, f"{p}.workerGroupSpecs", "no worker groups", "add a GPU worker group"))
    shared = _mounts(head_tpl)
    if not shared:
        problems.append(_problem(source, f"{p}.headGroupSpec.template.spec", "no PersistentVolumeClaim mounted in "
                                 "the Ray container", "mount the shared claim (k8s/pvc.yaml) at /shared"))
    members = [(f"{p}.headGroupSpec", head, head_tpl)]
    members += [(f"{p}.workerGroupSpecs[{i}]", g, g.get("template") or {}) for i, g in enumerate(groups)]
    names = [g.get("groupName") for g in groups]
    for path, group, template in members:
        problems += _member_problems(source, path, group, template, shared)
        if path != members[0][0]:
            problems += _group_problems(source, path, group, template, names)
    images = {c.get("image") for _, _, t in members for c in _containers(t)[:1]}
    if len(images) > 1:
        problems.append(_problem(source, f"{p}.workerGroupSpecs", f"the Ray containers use different images "
                                 f"{sorted(map(str, images))}", "use one image for head and workers: actors "
                                 "pickled on one must unpickle on the other"))
    return problems


def _member_problems(source: str, path: str, group: dict, template: dict, shared: dict) -> list[str]:
    problems = []
    for key, value in (group.get("rayStartParams") or {}).items():
        if not isinstance(value, str):
            problems.append(_problem(source, f"{path}.rayStartParams.{key}", f"{value!r} is not a string",
                                     f"quote it: {key}: \"{value}\" (the CRD field is a map of strings)"))
    containers = _containers(template)
    for j, container in enumerate(containers):
        problems += _resource_problems(container.get("resources"), source,
                                       f"{path}.template.spec.containers[{j}]")
    mounts = _mounts(template)
    for mount_path, claim in shared.items():
        if mounts.get(mount_path) != claim:
            problems.append(_problem(source, f"{path}.template.spec", f"claim {claim} is not mounted at "
                                     f"{mount_path}", "mount the same claim at the same path as the head: run and "
                                     "cache paths must mean the same on every pod"))
    env = {e.get("name"): e.get("value") for e in (containers[0].get("env") or [])} if containers else {}
    cache = env.get("AGENTRL_CACHE")
    if shared and (not cache or not _under(cache, shared)):
        problems.append(_problem(source, f"{path}.template.spec.containers[0].env", f"AGENTRL_CACHE is {cache!r}, "
                                 "not on the shared volume", f"set AGENTRL_CACHE to {sorted(shared)[0]}/cache: the "
                                 "driver builds the merged model there and GPU pods load it by path"))
    return problems


def _group_problems(source: str, path: str, group: dict, template: dict, names: list) -> list[str]:
    problems = []
    name = group.get("groupName")
    if not name or names.count(name) > 1:
        problems.append(_problem(source, f"{path}.groupName", f"{name!r} is missing or not unique",
                                 "give every worker group its own groupName"))
    lo, hi, replicas = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
    if not isinstance(lo, int) or not isinstance(hi, int) or lo < 0:
        problems.append(_problem(source, path, f"minReplicas/maxReplicas {lo!r}/{hi!r} are not integers >= 0",
                                 "set both, e.g. minReplicas: 1 and maxReplicas: 4"))
    elif lo > hi:
        problems.append(_problem(source, f"{path}.minReplicas", f"minReplicas {lo} > maxReplicas {hi}",
                                 "lower minReplicas or raise maxReplicas"))
    elif replicas is not None and not (isinstance(replicas, int) and lo <= replicas <= hi):
        problems.append(_problem(source, f"{path}.replicas", f"{replicas!r} is outside [{lo}, {hi}]",
                                 "set replicas between minReplicas and maxReplicas"))
    containers = _containers(template)
    gpus = _gpus(containers[0]) if containers else 0.0
    param = (group.get("rayStartParams") or {}).get("num-gpus")
    if param is not None and quantity(param) != gpus:
        problems.append(_problem(source, f"{path}.rayStartParams.num-gpus", f"{param!r} but the Ray container's "
                                 f"{GPU} limit is {gpus:g}", f"make num-gpus equal to the {GPU} limit (or drop it: "
                                 "KubeRay derives it from the limit)"))
    if "gpu" in str(name).lower() and gpus <= 0:
        problems.append(_problem(source, f"{path}.template.spec.containers[0].resources", f"group {name!r} asks "
                                 f"for no {GPU}", f"set requests and limits {GPU}: \"1\" (or rename the group)"))
    return problems


def _gpu_capacity(spec: dict, field: str) -> float:
    """GPUs the worker groups give at ``field`` (minReplicas or maxReplicas) pods each."""
    total = 0.0
    for group in spec.get("workerGroupSpecs") or []:
        containers = _containers(group.get("template") or {})
        total += (group.get(field) or 0) * (_gpus(containers[0]) if containers else 0.0)
    return total


# ---- RayJob and RayService: what they run must exist here -----------------------------------------------------------

def _repo_file(path: str) -> Path | None:
    """A path as the image sees it (/app/...) or repo-relative, as a file of this checkout; None outside both."""
    if path.startswith(APP_DIR + "/"):
        return REPO / path[len(APP_DIR) + 1:]
    return None if path.startswith("/") else REPO / path


def _module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if module and candidate.is_file():
            return candidate
    return None


def _top_level(file: Path) -> dict[str, ast.AST]:
    names = {}
    for node in ast.parse(file.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            names.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(a.asname or a.name).split(".")[0]: node for a in node.names})
    return names


def _load(config_ref: tuple[str, str], config_file: Path, overrides: list[str]):
    """(config, problems) of a job's config file + overrides, loaded by the job's own config class."""
    import importlib

    from jobs.config_loader import ConfigError, load_config

    cls = getattr(importlib.import_module(config_ref[0]), config_ref[1])
    try:
        return load_config(cls, config_file, overrides), []
    except ConfigError as e:
        return None, e.problems


def _config_file(source: str, path: str, config: str | None) -> tuple[Path | None, list[str]]:
    if config is None:
        return None, []
    file = _repo_file(config)
    if file is None or not file.is_file():
        return None, [_problem(source, path, f"config {config} is not a file of this repository (image path "
                               f"{APP_DIR}/<repo path>)", f"use an existing {APP_DIR}/configs/<name>.yaml")]
    return file, []


def check_rayjob(doc: dict, source: str = "manifest") -> list[str]:
    """The RayJob's own fields and its entrypoint; the cluster is checked by check_raycluster."""
    spec = doc.get("spec") or {}
    problems = []
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append(_problem(source, "spec.shutdownAfterJobFinishes", "the cluster outlives the job",
                                 "set shutdownAfterJobFinishes: true so its GPUs are released"))
    if not isinstance(spec.get("ttlSecondsAfterFinished"), int) or spec["ttlSecondsAfterFinished"] < 0:
        problems.append(_problem(source, "spec.ttlSecondsAfterFinished", "missing or negative",
                                 "set seconds to keep the finished cluster, e.g. 300"))
    env = spec.get("runtimeEnvYAML")
    try:
        runtime_env = yaml.safe_load(env) if isinstance(env, str) else env
    except yaml.YAMLError as e:
        runtime_env = None
        problems.append(_problem(source, "spec.runtimeEnvYAML", f"not YAML ({e})", "write a YAML mapping"))
    if runtime_env is not None and not (isinstance(runtime_env, dict) and all(
            isinstance(v, str) for v in (runtime_env.get("env_vars") or {}).values())):
        problems.append(_problem(source, "spec.runtimeEnvYAML", "not a mapping with string env_vars",
                                 "e.g. env_vars: {PYTHONUNBUFFERED: \"1\"}"))

    try:
        words = shlex.split(spec.get("entrypoint") or "")
    except ValueError as e:
        return problems + [_problem(source, "spec.entrypoint", f"unparsable ({e})", "balance the quotes")]
    if len(words) < 3 or not Path(words[0]).name.startswith("python") or words[1] != "-m":
        return problems + [_problem(source, "spec.entrypoint", f"{spec.get('entrypoint')!r} is not `python -m "
                                    "<module> ...`", "e.g. python -m jobs.train --config /app/configs/train.yaml")]
    module, args = words[2], words[3:]
    if _module_file(module) is None:
        return problems + [_problem(source, "spec.entrypoint", f"module {module} is not in this repository",
                                    "use one of the jobs, e.g. jobs.train")]
    config, overrides, i = None, [], 0
    while i < len(args):
        if args[i] == "--config" and i + 1 < len(args):
            config, i = args[i + 1], i + 2
            continue
        if args[i].startswith("--config="):
            config = args[i].split("=", 1)[1]
        elif not args[i].startswith("-"):
            overrides.append(args[i])
        i += 1
    config_file, found = _config_file(source, "spec.entrypoint", config)
    problems += found
    if module in RUN_CONFIGS and config_file is not None:
        cfg, found = _load(RUN_CONFIGS[module], config_file, overrides)
        problems += [_problem(source, "spec.entrypoint", f"{config} + overrides: {p}", "correct the override "
                              f"(`python -m {module} --list-fields` lists every field)") for p in found]
        if cfg is not None:
            problems += _run_plan_problems(cfg, spec.get("rayClusterSpec") or {}, source, module)
    return problems


def _run_plan_problems(cfg, cluster: dict, source: str, module: str) -> list[str]:
    problems = [_problem(source, "spec.entrypoint", p, "adjust the overrides") for p in cfg.training_problems()]
    need = cfg.rollout.num_workers * cfg.rollout.num_gpus_per_worker + cfg.learner.num_workers * cfg.learner.use_gpu
    have = _gpu_capacity(cluster, "maxReplicas")
    if need > have:
        problems.append(_problem(source, "spec.rayClusterSpec.workerGroupSpecs", f"{module} needs {need:g} GPUs but "
                                 f"the GPU groups' maxReplicas give at most {have:g}", "raise maxReplicas (and "
                                 "minReplicas, so the run does not wait for pods) or lower the run's GPU workers"))
    per_pod = max([_gpus(c[0]) for g in cluster.get("workerGroupSpecs") or []
                   if (c := _containers(g.get("template") or {}))] or [0.0])
    if max(cfg.rollout.num_gpus_per_worker, float(cfg.learner.use_gpu)) > per_pod:
        problems.append(_problem(source, "spec.entrypoint", f"one actor asks for more GPUs than a pod has "
                                 f"({per_pod:g})", "lower rollout.num_gpus_per_worker, or give the GPU pods more"))
    if need == 0 and have > 0:
        problems.append(_problem(source, "spec.entrypoint", "the run asks for no GPU on a GPU cluster",
                                 "add rollout.num_gpus_per_worker=1 and learner.use_gpu=true"))
    shared = _mounts(_dig(cluster, "headGroupSpec", "template", default={}))
    out = cfg.run.run_dir or cfg.run.storage
    if not _under(str(out), shared):
        problems.append(_problem(source, "spec.entrypoint", f"run output {out} is not on the shared volume "
                                 f"{sorted(shared)}", "set run.storage (or run.run_dir) under the shared mount: "
                                 "the cluster is deleted when the job ends"))
    return problems


def check_rayservice(doc: dict, source: str = "manifest") -> list[str]:
    """serveConfigV2: each app's import_path resolves to a file and symbol here, its args and overrides load."""
    spec = doc.get("spec") or {}
    try:
        serve = yaml.safe_load(spec.get("serveConfigV2") or "")
    except yaml.YAMLError as e:
        return [_problem(source, "spec.serveConfigV2", f"not YAML ({e})", "write Ray Serve's config file format")]
    apps = serve.get("applications") if isinstance(serve, dict) else None
    if not apps or not isinstance(apps, list):
        return [_problem(source, "spec.serveConfigV2.applications", "no applications",
                         "add one with import_path: jobs.serve:app")]
    cluster = spec.get("rayClusterConfig") or {}
    shared = _mounts(_dig(cluster, "headGroupSpec", "template", default={}))
    problems = []
    for i, app in enumerate(apps):
        path = f"spec.serveConfigV2.applications[{i}]"
        target = str(app.get("import_path", ""))
        module, _, attr = target.partition(":") if ":" in target else target.rpartition(".")
        file = _module_file(module)
        symbols = _top_level(file) if file else {}
        if attr not in symbols:
            problems.append(_problem(source, f"{path}.import_path", f"{target!r} does not resolve to a module file "
                                     "and symbol of this repository", "use module:symbol, e.g. jobs.serve:app"))
            continue
        args = app.get("args") or {}
        keys = symbols.get("ARG_KEYS")
        allowed = ast.literal_eval(keys.value) if isinstance(keys, ast.Assign) else None
        if allowed is not None and set(args) - set(allowed):
            problems.append(_problem(source, f"{path}.args", f"unknown {sorted(set(args) - set(allowed))}",
                                     f"use only {list(allowed)}"))
        config_file, found = _config_file(source, f"{path}.args.config", args.get("config"))
        problems += found
        adapter = args.get("adapter")
        if adapter is not None and adapter != "sft" and not _under(str(adapter), shared):
            problems.append(_problem(source, f"{path}.args.adapter", f"{adapter} is not on the shared volume "
                                     f"{sorted(shared)}", "point it at a run or adapter directory under the shared "
                                     "mount, where the RayJob writes runs"))
        if f"{module}:{attr}" in SERVE_CONFIGS and config_file is not None:
            cfg, found = _load(SERVE_CONFIGS[f"{module}:{attr}"], config_file, list(args.get("overrides") or []))
            problems += [_problem(source, f"{path}.args.overrides", p, "correct the override (`python -m "
                                  f"{module} --list-fields` lists every field)") for p in found]
            need, have = (cfg.deployment.max_replicas * cfg.deployment.num_gpus if cfg else 0,
                          _gpu_capacity(cluster, "maxReplicas"))
            if cfg is not None and (need > have or (need == 0 and have)):
                problems.append(_problem(source, f"{path}.args.overrides", f"deployment.max_replicas x num_gpus = "
                                         f"{need:g} GPUs, but the GPU groups' maxReplicas give {have:g}",
                                         "set deployment.num_gpus=1 and deployment.max_replicas to at most the GPU "
                                         "pods' maxReplicas"))
    return problems


def check_manifest(doc: dict, source: str = "manifest") -> list[str]:
    """All checks that apply to one document of a k8s/ file."""
    kind = doc.get("kind")
    if kind in CLUSTER_SPEC:
        if doc.get("apiVersion") != "ray.io/v1":
            return [_problem(source, "apiVersion", f"{doc.get('apiVersion')!r}", "use ray.io/v1 (KubeRay >= 1.0)")]
        extra = {"RayJob": check_rayjob, "RayService": check_rayservice}.get(kind)
        return check_pod_templates(doc, source) + check_raycluster(doc, source) + (extra(doc, source) if extra else [])
    if not kind or not doc.get("apiVersion"):
        return [_problem(source, "kind", "no kind/apiVersion", "write a Kubernetes object, e.g. kind: RayCluster "
                         "with apiVersion: ray.io/v1")]
    return _k8s_validate(doc, source, kind)  # core kinds, e.g. the PersistentVolumeClaim


# ---- `ray up` cluster-launcher YAMLs -------------------------------------------------------------------------------

def ray_schema() -> dict:
    """Ray's cluster-launcher schema from the installed wheel (what `ray up` validates against), without importing
    ray."""
    return json.loads((Path(importlib.util.find_spec("ray").origin).parent / "autoscaler" / "ray-schema.json")
                      .read_text())


def check_launcher(doc: dict, source: str = "launcher") -> list[str]:
    """Ray's schema, the checks `ray up` adds to it, and ours (CPU head, GPU workers, setup.sh, token auth)."""
    import jsonschema

    schema = ray_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = []
    for e in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.path]):
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.path).lstrip(".") or "<top>"
        problems.append(_problem(source, at, f"Ray {RAY_VERSION} cluster-launcher schema: {e.message}",
                                 _schema_fix(e.validator)))
    if not isinstance(doc, dict) or problems:
        return problems
    types = doc.get("available_node_types") or {}
    head = doc.get("head_node_type")
    if head not in types:
        problems.append(_problem(source, "head_node_type", f"{head!r} is not in available_node_types",
                                 "name one of available_node_types"))
    for name, node in types.items():
        lo, hi = node.get("min_workers", 0), node.get("max_workers", doc.get("max_workers", 2))
        if lo > hi:
            problems.append(_problem(source, f"available_node_types.{name}", f"min_workers {lo} > max_workers {hi}",
                                     "lower min_workers or raise max_workers"))
    if sum(n.get("min_workers", 0) for n in types.values()) > doc.get("max_workers", 2):
        problems.append(_problem(source, "max_workers", "below the sum of min_workers",
                                 "raise max_workers to at least the sum of the node types' min_workers"))
    if head in types and types[head].get("resources", {}).get("GPU"):
        problems.append(_problem(source, f"available_node_types.{head}.resources", "the head has a GPU",
                                 "keep the head CPU-only; put GPUs on a worker node type"))
    if not any(n.get("resources", {}).get("GPU") for k, n in types.items() if k != head):
        problems.append(_problem(source, "available_node_types", "no worker node type declares GPU resources",
                                 "add a GPU worker type with resources: {GPU: <per node>} and min/max_workers"))
    if not any("setup.sh" in c for c in doc.get("setup_commands") or []):
        problems.append(_problem(source, "setup_commands", "setup.sh is not run",
                                 "add `cd ~/agentrl && bash setup.sh` (builds .venv for the node's device)"))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        if not any("RAY_AUTH_MODE=token" in c for c in doc.get(key) or []):
            problems.append(_problem(source, key, "token authentication is off",
                                     "export RAY_AUTH_MODE=token before ray start (DESIGN.md)"))
    return problems


def check_file(path: str | Path) -> list[str]:
    """Every problem in one k8s/ manifest or cluster-launcher YAML."""
    path = Path(path)
    source = str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)
    try:
        docs = load_docs(path)
    except yaml.YAMLError as e:
        return [_problem(source, "<file>", f"not YAML: {e}", "fix the YAML syntax")]
    if len(docs) == 1 and isinstance(docs[0], dict) and "apiVersion" not in docs[0] and "provider" in docs[0]:
        return check_launcher(docs[0], source)
    problems = []
    for i, doc in enumerate(docs):
        name = f"{source} ({doc.get('kind')} {_dig(doc, 'metadata', 'name')})" if len(docs) > 1 else source
        problems += check_manifest(doc, name) if isinstance(doc, dict) else [
            _problem(source, f"document {i}", "not a mapping", "write a Kubernetes object")]
    return problems


def main(argv: list[str] | None = None) -> int:
    files = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    files = files or sorted((REPO / "k8s").glob("*.yaml")) + sorted((REPO / "cluster" / "launcher").glob("*.yaml"))
    problems = [p for f in files for p in check_file(f)]
    print("\n".join(problems) if problems else f"ok: {len(files)} files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
