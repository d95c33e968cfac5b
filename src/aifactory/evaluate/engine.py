"""The evaluator engine: evaluates each new best checkpoint, in its own process, at low priority.

Every EVAL_POLL_SEC it looks at the best checkpoint; weights it has not evaluated yet are evaluated
within EVAL_TIME_BUDGET_SEC (an evaluation over budget is given up and stores nothing), with
EVAL_THREADS threads at nice 10, so training and chat keep the machine. With AUTO_PROMOTE=1 the gate
then runs on that checkpoint; a refusal is an ordinary outcome, logged with its rule."""

from __future__ import annotations

import os

from aifactory.cluster.context import EngineContext
from aifactory.evaluate import EvalError, EvalInterrupted, store
from aifactory.evaluate.target import Target, resolve

NICE = 10


def evaluate_best(ctx: EngineContext, seen: set[str], target: Target) -> Target | None:
    """Evaluate the best checkpoint `target` if its weights are new; the target evaluated, else None."""
    from aifactory.evaluate import suite

    settings = ctx.settings
    if target.digest in seen or store.score_of(ctx.db, target.digest) is not None:
        seen.add(target.digest)
        return None
    seen.add(target.digest)  # evaluated once, even if it fails: the next best gets its turn
    ctx.set_phase("evaluating", f"{target.directory.name} (step {target.meta.get('step', 0):,})")
    try:
        report = suite.evaluate(
            settings, ctx.db, target, stop=ctx.stopping, budget_sec=settings.eval_time_budget_sec
        )
    except EvalInterrupted as exc:
        if not ctx.stopping():
            ctx.log(f"evaluation of {target.directory.name} given up: {exc}", level="warning")
        return None
    except (EvalError, FileNotFoundError) as exc:
        ctx.log(f"cannot evaluate {target.directory.name}: {exc}", level="warning")
        return None
    if settings.eval_save_to_db:
        store.save(ctx.db, report, ctx.node_id)
    ctx.count(evaluations=1)
    ctx.log(
        f"evaluated {target.directory.name} (step {report['step']:,}): score {report['score']:.3f}, "
        f"accuracy {report['mc']['accuracy']:.3f}, {report['seconds']:.1f} s"
    )
    return target


def auto_promote(ctx: EngineContext, target: Target) -> None:
    from aifactory.registry import PromotionRefused, RegistryError, gate

    try:
        result = gate.promote(ctx.settings, ctx.db, str(target.directory), node_id=ctx.node_id)
    except PromotionRefused as exc:
        ctx.log(f"not promoted: {exc.rule}")
    except RegistryError as exc:
        ctx.log(f"promotion failed: {exc}", level="warning")
    else:
        ctx.log(f"promoted {target.directory.name} as v{result['version']} ({result['rule']})")


def run(ctx: EngineContext) -> None:
    """The engine entry point (its own process): low priority, few threads, then the loop."""
    import torch

    os.nice(NICE)
    torch.set_num_threads(max(1, ctx.settings.eval_threads))
    evaluate_new_best(ctx)


def evaluate_new_best(ctx: EngineContext) -> None:
    from aifactory.registry import gate

    gate.sync_pointer(ctx.settings, ctx.db)  # a crash between a move and its pointer file is healed here
    seen: set[str] = set()
    while not ctx.stopping():
        ctx.set_phase("waiting", "for a new best checkpoint")
        try:
            best = resolve(ctx.settings, "best")
        except EvalError:
            best = None  # no best checkpoint yet
        if best is not None and best.digest not in seen:
            try:
                # held: the trainer keeps a few snapshots only and may delete this one meanwhile
                with gate.held(ctx.settings, best, "best") as pinned:
                    target = evaluate_best(ctx, seen, pinned)
                    if target is not None and ctx.settings.auto_promote and not ctx.stopping():
                        auto_promote(ctx, target)
            except EvalError as exc:
                ctx.log(f"cannot evaluate {best.directory.name}: {exc}", level="warning")
        if ctx.wait(ctx.settings.eval_poll_sec):
            break
