"""The deployment files (k8s/, cluster/launcher/) pass the offline checks, and broken copies of them fail with the
problem named: each test of a check also runs it on a mutated copy, so a check that passes everything fails here."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cluster.manifests import (
    REPO,
    check_file,
    check_launcher,
    check_manifest,
    load_docs,
    main,
    pod_templates,
    quantity,
)

pytestmark = pytest.mark.timeout(60)

K8S = sorted((REPO / "k8s").glob("*.yaml"))
LAUNCHERS = sorted((REPO / "cluster" / "launcher").glob("*.yaml"))


def mutated(tmp_path: Path, name: str, old: str, new: str, count: int = 1) -> Path:
    """A copy of a shipped file with ``old`` replaced by ``new`` (which must occur)."""
    text = (REPO / name).read_text()
    assert old in text, f"{old!r} not in {name}: update the test with the file"
    path = tmp_path / Path(name).name
    path.write_text(text.replace(old, new, count))
    return path


def doc(name: str) -> dict:
    [only] = load_docs(REPO / name)
    return copy.deepcopy(only)


def named(problems: list[str], *parts: str) -> bool:
    return any(all(part in p for part in parts) for p in problems)


# ---- the shipped files --------------------------------------------------------------------------------------------

def test_the_expected_files_ship():
    assert {p.name for p in K8S} >= {"pvc.yaml", "raycluster.yaml", "rayjob.yaml", "rayservice.yaml"}
    assert LAUNCHERS and (REPO / "Dockerfile").is_file() and (REPO / ".dockerignore").is_file()


@pytest.mark.parametrize("path", K8S + LAUNCHERS, ids=lambda p: p.name)
def test_shipped_file_passes(path):
    assert check_file(path) == []


def test_every_ray_manifest_has_pod_templates_for_head_and_gpu_workers():
    for name in ("k8s/raycluster.yaml", "k8s/rayjob.yaml", "k8s/rayservice.yaml"):
        paths = [p for p, _ in pod_templates(doc(name))]
        assert paths[0].endswith("headGroupSpec.template") and len(paths) == 2, name


def test_the_service_serves_what_the_job_writes():
    job, service = doc("k8s/rayjob.yaml"), doc("k8s/rayservice.yaml")
    run_dir = next(w.split("=", 1)[1] for w in job["spec"]["entrypoint"].split() if w.startswith("run.run_dir="))
    [app] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert app["import_path"] == "jobs.serve:app" and app["args"]["adapter"] == run_dir


def test_main_exit_codes(tmp_path, capsys):
    assert main([str(REPO / "k8s" / "raycluster.yaml")]) == 0
    broken = mutated(tmp_path, "k8s/raycluster.yaml", "minReplicas: 2", "minReplicas: 9")
    assert main([str(broken)]) == 1
    assert "minReplicas 9 > maxReplicas 6" in capsys.readouterr().out


# ---- mutated copies fail, naming the file, the path and the fix ---------------------------------------------------

def test_typo_in_a_container_field_fails_the_pod_schema(tmp_path):
    path = mutated(tmp_path, "k8s/raycluster.yaml", "imagePullPolicy: IfNotPresent\n            env:",
                   "imagePullPolicyy: IfNotPresent\n            env:")
    problems = check_file(path)
    assert named(problems, "raycluster.yaml", "spec.headGroupSpec.template.spec.containers[0]", "imagePullPolicyy",
                 "Fix:"), problems


def test_typo_in_a_worker_pod_field_fails_the_pod_schema(tmp_path):
    path = mutated(tmp_path, "k8s/rayjob.yaml", "tolerations:", "toleration:")
    assert named(check_file(path), "spec.rayClusterSpec.workerGroupSpecs[0].template.spec", "toleration")


def test_requests_differ_from_limits(tmp_path):
    path = mutated(tmp_path, "k8s/raycluster.yaml", 'limits: {cpu: "8", memory: 48Gi',
                   'limits: {cpu: "8", memory: 40Gi')
    problems = check_file(path)
    assert named(problems, "workerGroupSpecs[0].template.spec.containers[0].resources",
                 "requests.memory 48Gi != limits.memory 40Gi"), problems


def test_gpu_only_in_requests(tmp_path):
    path = mutated(tmp_path, "k8s/rayservice.yaml", 'limits: {cpu: "4", memory: 32Gi, nvidia.com/gpu: "1"}',
                   'limits: {cpu: "4", memory: 32Gi}')
    assert named(check_file(path), "nvidia.com/gpu is set in only one of requests/limits")


def test_min_replicas_above_max(tmp_path):
    path = mutated(tmp_path, "k8s/raycluster.yaml", "minReplicas: 2", "minReplicas: 7")
    assert named(check_file(path), "spec.workerGroupSpecs[0].minReplicas", "minReplicas 7 > maxReplicas 6")


def test_unknown_entrypoint_module(tmp_path):
    path = mutated(tmp_path, "k8s/rayjob.yaml", "python -m jobs.train", "python -m jobs.trian")
    assert named(check_file(path), "rayjob.yaml", "spec.entrypoint", "module jobs.trian is not in this repository")


def test_missing_config_file(tmp_path):
    path = mutated(tmp_path, "k8s/rayjob.yaml", "/app/configs/train.yaml", "/app/configs/trian.yaml")
    assert named(check_file(path), "spec.entrypoint", "configs/trian.yaml is not a file of this repository")


def test_typo_in_an_override(tmp_path):
    path = mutated(tmp_path, "k8s/rayjob.yaml", "learner.use_gpu=true", "learner.use_gpus=true")
    assert named(check_file(path), "spec.entrypoint", "learner.use_gpus", "unknown key")


def test_run_without_gpu_overrides_on_a_gpu_cluster():
    job = doc("k8s/rayjob.yaml")
    job["spec"]["entrypoint"] = "python -m jobs.train --config /app/configs/train.yaml run.storage=/shared/runs"
    assert named(check_manifest(job), "asks for no GPU on a GPU cluster")


def test_too_few_gpus():
    job = doc("k8s/rayjob.yaml")
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas=1, minReplicas=1, maxReplicas=1)
    assert named(check_manifest(job), "needs 2 GPUs but the GPU groups' maxReplicas give at most 1")
    job = doc("k8s/rayjob.yaml")
    job["spec"]["entrypoint"] += " rollout.num_gpus_per_worker=2"
    assert named(check_manifest(job), "one actor asks for more GPUs than a pod has (1)")


def test_run_output_off_the_shared_volume(tmp_path):
    path = mutated(tmp_path, "k8s/rayjob.yaml", "run.run_dir=/shared/runs/", "run.run_dir=/tmp/runs/")
    assert named(check_file(path), "run output /tmp/runs/grpo-calculator-gpu is not on the shared volume")


def test_job_that_keeps_its_cluster():
    job = doc("k8s/rayjob.yaml")
    job["spec"]["shutdownAfterJobFinishes"] = False
    del job["spec"]["ttlSecondsAfterFinished"]
    problems = check_manifest(job)
    assert named(problems, "spec.shutdownAfterJobFinishes") and named(problems, "spec.ttlSecondsAfterFinished")


def test_head_with_a_gpu():
    cluster = doc("k8s/raycluster.yaml")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    head["requests"]["nvidia.com/gpu"] = head["limits"]["nvidia.com/gpu"] = "1"
    assert named(check_manifest(cluster, "raycluster.yaml"), "raycluster.yaml: spec.headGroupSpec",
                 "the head has a GPU", "Fix: keep the head CPU-only")


def test_num_gpus_disagrees_with_the_gpu_limit():
    cluster = doc("k8s/raycluster.yaml")
    cluster["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = "2"
    assert named(check_manifest(cluster), "rayStartParams.num-gpus", "'2' but the Ray container's nvidia.com/gpu "
                 "limit is 1")


def test_gpu_group_without_gpus():
    cluster = doc("k8s/raycluster.yaml")
    group = cluster["spec"]["workerGroupSpecs"][0]
    del group["rayStartParams"]["num-gpus"]
    for side in ("requests", "limits"):
        del group["template"]["spec"]["containers"][0]["resources"][side]["nvidia.com/gpu"]
    assert named(check_manifest(cluster), "group 'gpu-workers' asks for no nvidia.com/gpu")


def test_autoscaling_auth_and_version():
    cluster = doc("k8s/raycluster.yaml")
    cluster["spec"].update(enableInTreeAutoscaling=False, rayVersion="2.9.0")
    del cluster["spec"]["authOptions"]
    problems = check_manifest(cluster)
    for what in ("enableInTreeAutoscaling", "token authentication is off", "'2.9.0' is not the project's Ray"):
        assert named(problems, what), what


def test_unquoted_ray_start_param():
    cluster = doc("k8s/raycluster.yaml")
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert named(check_manifest(cluster), "headGroupSpec.rayStartParams.num-cpus", "is not a string")


def test_images_differ_and_shared_volume_missing():
    cluster = doc("k8s/raycluster.yaml")
    worker = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    worker["containers"][0]["image"] = "agentrl:other"
    worker["containers"][0]["volumeMounts"] = [m for m in worker["containers"][0]["volumeMounts"]
                                               if m["name"] != "shared"]
    problems = check_manifest(cluster)
    assert named(problems, "different images")
    assert named(problems, "workerGroupSpecs[0].template.spec", "claim agentrl-shared is not mounted at /shared")


def test_cache_off_the_shared_volume():
    cluster = doc("k8s/raycluster.yaml")
    cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "/root/.cache"
    assert named(check_manifest(cluster), "AGENTRL_CACHE is '/root/.cache'")


def test_serve_import_path_that_does_not_resolve(tmp_path):
    path = mutated(tmp_path, "k8s/rayservice.yaml", "import_path: jobs.serve:app", "import_path: jobs.serve:ap")
    assert named(check_file(path), "applications[0].import_path", "'jobs.serve:ap' does not resolve")


def test_serve_args_overrides_and_adapter(tmp_path):
    path = mutated(tmp_path, "k8s/rayservice.yaml", "adapter: /shared/runs/", "adpater: /shared/runs/")
    assert named(check_file(path), "applications[0].args", "unknown ['adpater']")
    path = mutated(tmp_path, "k8s/rayservice.yaml", "deployment.num_gpus=1", "deployment.num_gpu=1")
    assert named(check_file(path), "args.overrides", "deployment.num_gpu")
    path = mutated(tmp_path, "k8s/rayservice.yaml", "adapter: /shared/runs/", "adapter: /home/me/runs/")
    assert named(check_file(path), "args.adapter", "is not on the shared volume")
    path = mutated(tmp_path, "k8s/rayservice.yaml", "deployment.max_replicas=4", "deployment.max_replicas=8")
    assert named(check_file(path), "max_replicas x num_gpus = 8 GPUs, but the GPU groups' maxReplicas give 4")


def test_pvc_schema(tmp_path):
    path = mutated(tmp_path, "k8s/pvc.yaml", "accessModes:", "accessMode:")
    assert named(check_file(path), "pvc.yaml", "PersistentVolumeClaim schema", "accessMode")


# ---- the `ray up` launcher YAML -----------------------------------------------------------------------------------

LAUNCHER = "cluster/launcher/aws-gpu.yaml"


def test_launcher_bad_key_fails_rays_schema(tmp_path):
    path = mutated(tmp_path, LAUNCHER, "idle_timeout_minutes:", "idle_timeout_minute:")
    problems = check_file(path)
    assert named(problems, "aws-gpu.yaml: <top>", "cluster-launcher schema", "idle_timeout_minute", "Fix:"), problems


def test_launcher_bad_node_type_key_and_type(tmp_path):
    path = mutated(tmp_path, LAUNCHER, "max_workers: 4\n    resources", "max_worker: 4\n    resources")
    assert named(check_file(path), "available_node_types.gpu_worker", "max_worker")
    path = mutated(tmp_path, LAUNCHER, "resources: {CPU: 8, GPU: 1}", "resources: {CPU: 8, GPU: one}")
    assert named(check_file(path), "available_node_types.gpu_worker.resources.GPU")


def test_launcher_min_above_max(tmp_path):
    path = mutated(tmp_path, LAUNCHER, "min_workers: 2", "min_workers: 9")
    problems = check_file(path)
    assert named(problems, "available_node_types.gpu_worker", "min_workers 9 > max_workers 4"), problems


def test_launcher_own_rules():
    launcher = doc(LAUNCHER)
    launcher["available_node_types"]["head"]["resources"]["GPU"] = 1
    launcher["setup_commands"] = ["pip install -e ."]
    launcher["worker_start_ray_commands"] = ["ray start --address=$RAY_HEAD_IP:6379"]
    problems = check_launcher(launcher)
    for what in ("the head has a GPU", "setup.sh is not run", "worker_start_ray_commands: token authentication"):
        assert named(problems, what), what


def test_quantities():
    assert quantity("500m") == 0.5 and quantity("2Gi") == 2 * 2**30 and quantity("8") == 8 and quantity(1) == 1
    assert quantity("1x") is None and quantity("48Gi") == quantity("49152Mi")
