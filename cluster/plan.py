"""The run's resource plan (one bundle per actor), checked against the cluster before any actor starts.

Ray waits forever for an actor it cannot place, so a plan that cannot fit must fail at once, naming what is missing.
``check_fits`` is pure (fake node lists in tests): (a) every bundle fits on one node (a 2-GPU actor does not fit on two
1-GPU nodes), (b) all bundles pack onto the alive nodes together (first-fit decreasing), (c) what does not fit now
fits on nodes the autoscaler may add. ``ensure_fits`` then reserves the whole plan as one placement group with a
bounded wait (the autoscaler's nodes, or resources other jobs hold), and swaps it for a group of the bundles whose
actors we start ourselves (``hold``: rollout workers, reward actor, pool), held for the run: those actors start
inside it (``Placement.options``), so nothing else can take their room between the check and their start, and a
replacement for a dead worker takes the dead one's bundle. Ray Train places the learner group in a placement group
of its own, from the room the check proved is there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from cluster.config import RayConfig

__all__ = ["Bundle", "NodeType", "Placement", "PlanDoesNotFitError", "ResourcePlan", "check_fits", "ensure_fits",
           "plan_for"]

_EPS = 1e-9
_GIB = 2**30
# The config field to lower when a group's actor asks for too much of a resource, and the one that sets its count.
_KNOBS = {("rollout", "GPU"): "rollout.num_gpus_per_worker (0 runs the CPU engine)",
          ("rollout", "CPU"): "rollout.num_cpus_per_worker", ("learner", "GPU"): "learner.use_gpu=false",
          ("learner", "CPU"): "learner.num_cpus_per_worker"}
_COUNTS = {"rollout": "rollout.num_workers", "learner": "learner.num_workers"}


class PlanDoesNotFitError(RuntimeError):
    """The cluster lacks a resource the run needs; the message names it and the fix."""


@dataclass(frozen=True)
class Bundle:
    """What one actor reserves: Ray's ``num_cpus``/``num_gpus``/``memory`` (bytes; None = not reserved)."""

    group: str
    cpu: float = 0.0
    gpu: float = 0.0
    memory: float | None = None

    def resources(self) -> dict[str, float]:
        """The Ray resource dict, zeros left out (a placement-group bundle may not hold a 0)."""
        out = {"CPU": self.cpu, "GPU": self.gpu, "memory": self.memory or 0.0}
        return {k: v for k, v in out.items() if v > 0}


@dataclass(frozen=True)
class NodeType:
    """A node the autoscaler can add: its resources and how many more (None = no limit)."""

    name: str
    resources: Mapping[str, float]
    max_new: int | None = None


@dataclass(frozen=True)
class ResourcePlan:
    bundles: tuple[Bundle, ...]

    def totals(self) -> dict[str, float]:
        total: Counter = Counter()
        for b in self.bundles:
            total.update(b.resources())
        return dict(total)

    def describe(self) -> str:
        """``1 x rollout {CPU 1, GPU 1}, 1 x reward {CPU 0.1}``: the bundles, grouped."""
        counts = Counter((b.group, _fmt(b.resources())) for b in self.bundles)
        return ", ".join(f"{n} x {group} {{{res}}}" for (group, res), n in counts.items())


@dataclass(frozen=True)
class Placement:
    """A placement group held for the run and the bundle index of each group's actors, in plan order. Without a
    group (nothing held, or an actor beyond the plan such as an elastic pool's extra workers) Ray places the actor
    itself."""

    group: object = None  # ray.util.placement_group.PlacementGroup
    indices: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def options(self, group: str, index: int = 0) -> dict:
        """``.options(**placement.options("rollout", i))`` for the i-th actor of ``group``."""
        bundles = self.indices.get(group, ())
        if self.group is None or index >= len(bundles):
            return {}
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            self.group, placement_group_bundle_index=bundles[index], placement_group_capture_child_tasks=False)}


@dataclass(frozen=True)
class Fit:
    """``check_fits``'s verdict: fits now, or once the autoscaler adds ``new_nodes`` (node type names); from
    ``ensure_fits``, also the placement group it holds for the run."""

    new_nodes: tuple[str, ...] = ()
    placement: Placement = field(default_factory=Placement)


def plan_for(rollout, learner=None, *, reward: bool = False) -> ResourcePlan:
    """The plan of a job: ``rollout`` (RolloutConfig) workers, ``learner`` (LearnerConfig) workers when it trains,
    and the reward actor and rollout pool when ``reward`` (jobs.train)."""
    from actors.remote import POOL_CPUS, REWARD_CPUS

    bundles = [Bundle("rollout", rollout.num_cpus_per_worker, rollout.num_gpus_per_worker)] * rollout.num_workers
    if reward:
        bundles += [Bundle("reward", REWARD_CPUS), Bundle("pool", POOL_CPUS)]
    if learner is not None:
        bundles += [Bundle("learner", learner.num_cpus_per_worker, float(learner.use_gpu))] * learner.num_workers
    return ResourcePlan(tuple(bundles))


# ---------------------------------------------------------------------------------------------------------------------
# The check: pure functions over ray.nodes()-shaped dicts ({"Alive": bool, "Resources": {...}}).

def check_fits(plan: ResourcePlan, nodes: Sequence[Mapping], autoscaler: Sequence[NodeType] = ()) -> Fit:
    """Raise ``PlanDoesNotFitError`` listing every problem, or say whether the autoscaler must add nodes."""
    capacity = [dict(n.get("Resources", {})) for n in nodes if n.get("Alive", n.get("alive", False))]
    addable = [t for t in autoscaler if t.max_new is None or t.max_new > 0]
    problems = []
    for bundle in dict.fromkeys(plan.bundles):  # (a) each distinct actor shape on a single node
        need = bundle.resources()
        if not any(_fits(need, c) for c in capacity) and not any(_fits(need, t.resources) for t in addable):
            problems.append(_too_big(bundle, capacity, addable))
    if not problems:  # (b) all actors at once on the nodes there are, then (c) the rest on nodes the autoscaler adds
        left = _pack(plan.bundles, capacity)
        if not left:
            return Fit()
        new_nodes, left = _pack_on_new_nodes(left, addable)
        if not left:
            return Fit(tuple(new_nodes))
        problems.append(_no_room(plan, left, capacity, addable))
    raise PlanDoesNotFitError(_message(plan, problems, capacity, addable))


def _fits(need: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(free.get(k, 0.0) + _EPS >= v for k, v in need.items())


def _size(bundle: Bundle) -> tuple:
    r = bundle.resources()
    return r.get("GPU", 0.0), r.get("CPU", 0.0), r.get("memory", 0.0)


def _pack(bundles: Sequence[Bundle], capacity: Sequence[Mapping[str, float]]) -> list[Bundle]:
    """First-fit decreasing onto ``capacity`` (copied); returns the bundles left over."""
    free = [dict(c) for c in capacity]
    left = []
    for bundle in sorted(bundles, key=_size, reverse=True):
        need = bundle.resources()
        node = next((f for f in free if _fits(need, f)), None)
        if node is None:
            left.append(bundle)
        else:
            for k, v in need.items():
                node[k] = node.get(k, 0.0) - v
    return left


def _pack_on_new_nodes(bundles: Sequence[Bundle], types: Sequence[NodeType]) -> tuple[list[str], list[Bundle]]:
    """First-fit decreasing onto nodes opened as needed, of the first type that holds the bundle and has room left."""
    opened: list[tuple[str, dict]] = []
    quota = {t.name: t.max_new for t in types}
    left = []
    for bundle in sorted(bundles, key=_size, reverse=True):
        need = bundle.resources()
        node = next((free for _, free in opened if _fits(need, free)), None)
        if node is None:
            kind = next((t for t in types if _fits(need, t.resources) and quota[t.name] != 0), None)
            if kind is None:
                left.append(bundle)
                continue
            quota[kind.name] = None if quota[kind.name] is None else quota[kind.name] - 1
            node = dict(kind.resources)
            opened.append((kind.name, node))
        for k, v in need.items():
            node[k] = node.get(k, 0.0) - v
    return [name for name, _ in opened], left


def _too_big(bundle: Bundle, capacity: Sequence[Mapping], addable: Sequence[NodeType]) -> str:
    need = bundle.resources()
    shapes = [*capacity, *(t.resources for t in addable)]
    short = [k for k, v in need.items() if max((s.get(k, 0.0) for s in shapes), default=0.0) + _EPS < v]
    if not short:  # each resource exists somewhere, never all on one node
        return (f"{'/'.join(need)}: a {bundle.group} actor needs {{{_fmt(need)}}} on one node; no node has all of "
                f"it. Fix: lower {' or '.join(_knob(bundle.group, k) for k in need)}, or add a node that has it")
    return "; ".join(
        f"{k}: a {bundle.group} actor needs {_amount(k, need[k])} {k} on one node; the largest node has "
        f"{_amount(k, max((c.get(k, 0.0) for c in capacity), default=0.0))} (the cluster "
        f"{_amount(k, sum(c.get(k, 0.0) for c in capacity))} on {len(capacity)} node{'s' * (len(capacity) != 1)})"
        + (", and no autoscaler node type has it" if addable else "")
        + f". Fix: lower {_knob(bundle.group, k)}, or run on a cluster with {k} nodes" for k in short)


def _no_room(plan: ResourcePlan, left: Sequence[Bundle], capacity: Sequence[Mapping],
             addable: Sequence[NodeType]) -> str:
    have: Counter = Counter()
    for c in capacity:
        have.update({k: v for k, v in c.items() if k in ("CPU", "GPU", "memory")})
    extra = {k: _addable(k, addable) for k in ("CPU", "GPU", "memory")}
    total = plan.totals()
    over = [k for k, v in total.items() if v > have.get(k, 0.0) + extra[k] + _EPS] \
        or sorted({k for b in left for k in b.resources()})  # the totals fit, the nodes' shapes do not
    per_node = "; ".join(f"{{{_fmt({k: c.get(k, 0.0) for k in over})}}}" for c in capacity)
    can_add = _fmt({k: extra[k] for k in over}).replace("inf", "unlimited")
    groups = sorted({b.group for b in left})
    return (f"{'/'.join(over)}: the plan needs {_fmt({k: total.get(k, 0.0) for k in over})} in all, the cluster has "
            f"{_fmt({k: have.get(k, 0.0) for k in over})} (per node: {per_node})"
            + (f" and the autoscaler can add {can_add}" if addable else "")
            + f"; left without a node: {ResourcePlan(tuple(left)).describe()}"
            + f". Fix: fewer or smaller actors ({', '.join(_COUNTS.get(g, g) for g in groups)}, "
            f"{', '.join(_knob(g, k) for g in groups for k in over)}), or a larger cluster")


def _addable(key: str, types: Sequence[NodeType]) -> float:
    """How much of ``key`` the autoscaler could add at most (inf when a type holding it has no limit)."""
    return sum(t.resources.get(key, 0.0) * (float("inf") if t.max_new is None else t.max_new)
               for t in types if t.resources.get(key, 0.0) > 0)


def _message(plan: ResourcePlan, problems: Sequence[str], capacity: Sequence[Mapping],
             addable: Sequence[NodeType]) -> str:
    scaler = (f"autoscaler node types: {', '.join(f'{t.name} {{{_fmt(t.resources)}}}' for t in addable)}" if addable
              else "no autoscaler (a local or `ray start` cluster; ray.autoscaler_node_types names the nodes one adds)")
    cpu_only = not any(c.get("GPU") for c in capacity)
    hint = " On a CPU-only machine, ray.num_cpus=4 gives a local cluster more logical CPUs than cores." \
        if cpu_only and not addable and any("CPU" in p.split(":")[0] for p in problems) else ""
    return ("the run's actors cannot be placed on this cluster, so nothing was started:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + f"\nplan (one bundle per actor): {plan.describe()}; {scaler}.{hint}")


def _knob(group: str, resource: str) -> str:
    return _KNOBS.get((group, resource), f"the {group} actors' {resource}")


def _amount(key: str, value: float) -> str:
    return f"{value / _GIB:.3g} GiB" if key == "memory" else f"{value:g}"


def _fmt(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {_amount(k, v)}" for k, v in resources.items())


# ---------------------------------------------------------------------------------------------------------------------
# Ray at the edge: read the cluster, check, then hold the whole plan once with a bounded wait.

def ensure_fits(plan: ResourcePlan, cfg: RayConfig, hold: Sequence[str] = ()) -> Fit:
    """Check ``plan`` against the connected cluster, then reserve it as one placement group for at most
    ``cfg.placement_timeout_s`` seconds; raises ``PlanDoesNotFitError`` naming what is missing, never hangs. The
    bundles of the groups in ``hold`` stay reserved for the run in a placement group of their own (``Fit.placement``;
    removed when the job's driver exits); the rest is released for Ray Train's own placement group."""
    import ray
    from ray.util.placement_group import remove_placement_group

    fit = check_fits(plan, ray.nodes(), autoscaler_node_types(cfg))
    if not any(b.resources() for b in plan.bundles):
        return fit
    pg, _ = _reserve(plan.bundles)
    try:
        ready, _ = ray.wait([pg.ready()], timeout=cfg.placement_timeout_s)
    finally:
        remove_placement_group(pg)
    if not ready:
        raise PlanDoesNotFitError(_timeout_message(plan, fit, cfg.placement_timeout_s))
    held = [b for b in plan.bundles if b.group in hold]
    if not any(b.resources() for b in held):
        return fit
    pg, indices = _reserve(held)  # the room the whole plan just had: ready at once unless another job took it
    ready, _ = ray.wait([pg.ready()], timeout=cfg.placement_timeout_s)
    if not ready:
        remove_placement_group(pg)
        raise PlanDoesNotFitError(_timeout_message(ResourcePlan(tuple(held)), fit, cfg.placement_timeout_s))
    return replace(fit, placement=Placement(pg, indices))


def _reserve(bundles: Sequence[Bundle]):
    """A PACK placement group of the bundles that reserve something, and each group's bundle indices in it."""
    from ray.util.placement_group import placement_group

    indices: dict[str, list[int]] = {}
    reserved = []
    for b in bundles:
        if b.resources():
            indices.setdefault(b.group, []).append(len(reserved))
            reserved.append(b.resources())
    return placement_group(reserved, strategy="PACK"), {k: tuple(v) for k, v in indices.items()}


def autoscaler_node_types(cfg: RayConfig) -> list[NodeType]:
    """``cfg.autoscaler_node_types`` if given, else the node groups the cluster's autoscaler reported to the GCS
    that can still grow (none on a local or ``ray start`` cluster)."""
    if cfg.autoscaler_node_types:
        return [NodeType(name, dict(res)) for name, res in cfg.autoscaler_node_types.items()]
    try:  # private API, so any failure means "no autoscaler known" rather than a crash
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001
        return []
    if config is None:
        return []
    return [NodeType(g.name or "node", {k: float(v) for k, v in g.resources.items()},
                     None if g.max_count == -1 else max(0, g.max_count - g.min_count))
            for g in config.node_group_configs if g.max_count == -1 or g.max_count > g.min_count]


def _timeout_message(plan: ResourcePlan, fit: Fit, timeout_s: float) -> str:
    free = _free_per_node()
    left = _pack(plan.bundles, free) or list(plan.bundles)
    waited_for = (f"the autoscaler was to add {', '.join(fit.new_nodes)} and has not; see `ray status` for "
                  "node start failures or quota" if fit.new_nodes else
                  "the cluster has the room, but other actors or jobs hold it now")
    per_node = _per_node_text(free)
    return (f"the run's actors were not placed within ray.placement_timeout_s={timeout_s:g} s, so nothing was "
            f"started: {waited_for}. Not placeable now: {ResourcePlan(tuple(left)).describe()} (free per node: "
            f"{per_node}). Fix: wait for the other jobs, raise ray.placement_timeout_s, or shrink the plan "
            f"({plan.describe()})")


def wait_for_room(what: str, resources: Mapping[str, float], options: Mapping, timeout_s: float) -> None:
    """Wait at most ``timeout_s`` seconds until one actor of ``resources`` (started with ``options``: its bundle of
    the run's placement group, or none) can be placed; raises ``PlanDoesNotFitError`` naming ``what`` if not.

    An actor Ray cannot place waits for good (a replacement whose node is gone, a bundle the cluster has no room for
    now); its engine would start only after the wait, so the wait itself is what gets the bound: a zero-work task
    asks for the same resources in the same place, and is cancelled if it is not placed in time. Another job may
    take the room between the task and the actor; that small window is the one left unbounded."""
    import ray

    probe = ray.remote(_placed).options(num_cpus=resources.get("CPU", 0.0), num_gpus=resources.get("GPU", 0.0),
                                        **options)
    ref = probe.remote()
    ready, _ = ray.wait([ref], timeout=timeout_s)
    if ready:
        return
    ray.cancel(ref, force=True)
    per_node = _per_node_text(_free_per_node())
    raise PlanDoesNotFitError(f"{what} {{{_fmt(resources)}}} was not placed within ray.placement_timeout_s="
                              f"{timeout_s:g} s: no node has room for it now (free per node: {per_node}; a node it "
                              "was on may be gone). Fix: free or add a node (the autoscaler's max_workers), or raise "
                              "ray.placement_timeout_s")


def _placed() -> bool:
    return True


def _per_node_text(free: Sequence[Mapping[str, float]]) -> str:
    """Free CPUs and GPUs of each node, for a message: ``{CPU 1.5, GPU 0}; {CPU 8, GPU 1}``."""
    return "; ".join("{" + _fmt({k: f.get(k, 0.0) for k in ("CPU", "GPU")}) + "}" for f in free)


def _free_per_node() -> list[dict]:
    import ray

    try:
        from ray._private.state import available_resources_per_node

        return [dict(r) for r in available_resources_per_node().values()]
    except Exception:  # noqa: BLE001 — private API; the cluster-wide sum is the fallback
        return [dict(ray.available_resources())]
