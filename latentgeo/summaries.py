"""What a run's events come to: summary.json (``summarize``: the last value of every metric,
the best test accuracy and its epoch, the convergence epoch) and the words of an ok run that
never learned (``never_learned``: ``runs``, aggregate, ``RunDir.reason``, the console).
``metrics.chance`` decides whether a run learned; this module only says it.

Foundation layer: the standard library only.
"""

from __future__ import annotations

from typing import Any

CONVERGED_ACCURACY = 0.999  # BE: first evaluated epoch with train accuracy above this


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Last value of every metric, best/final test accuracy and the convergence epoch.

    ``convergence_epoch`` is None when train accuracy never exceeds 0.999 (BE crashes there).
    """
    summary: dict[str, Any] = {}
    best, best_epoch, converged = None, None, None
    for event in events:
        for key, value in event.items():
            if value is not None:
                summary[key] = value
        accuracy = event.get("test/accuracy")
        if accuracy is not None and (best is None or accuracy > best):
            best, best_epoch = accuracy, event.get("epoch")
        train_accuracy = event.get("train/accuracy")
        if converged is None and train_accuracy is not None and train_accuracy > CONVERGED_ACCURACY:
            converged = event.get("epoch")
    summary.pop("step", None)
    summary["epochs"] = summary.pop("epoch", 0)
    summary["best/test/accuracy"] = best
    summary["best_epoch"] = best_epoch
    summary["convergence_epoch"] = converged
    return summary


def never_learned(summary: dict[str, Any]) -> str | None:
    """What an ok run whose summary has ``never_learned`` says (``runs``, aggregate, the
    console): its final test accuracy is within noise of chance (``metrics.chance``)."""
    if summary.get("never_learned") is not True:
        return None
    accuracy, chance = summary.get("test/accuracy"), summary.get("chance/test/accuracy")
    bound = summary.get("chance/test/bound")
    if not all(isinstance(v, (int, float)) for v in (accuracy, chance, bound)):
        return "never learned: the final test accuracy is within noise of chance"
    return (f"never learned: final test accuracy {accuracy:.4f} is within noise of chance "
            f"{chance:.4f} (at most {bound:.4f})")
