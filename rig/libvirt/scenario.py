"""The snapshot scenario libvirt drives, as data: nine snapshots made with reverts in
between, and deletes of an inner snapshot, of the current one as a leaf and as an inner node,
of a plain leaf and of a root with children; a QEMU restart, and one more snapshot whose
parent must come from the image's persisted current snapshot.

Each step says why it is there; ``expected()`` runs the lineage model over the steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from .lineage import Model, Tree

OPS = ("create", "revert", "delete", "restart")


@dataclass(frozen=True)
class Step:
    op: str
    name: str | None
    why: str

    @property
    def label(self) -> str:
        return f"{self.op} {self.name}" if self.name else self.op


STEPS: tuple[Step, ...] = (
    Step("create", "s1", "the first snapshot: a root"),
    Step("create", "s2", "a child of the current s1"),
    Step("revert", "s1", "back to s1: current s1"),
    Step("create", "s3", "a second child of s1"),
    Step("create", "s4", "a child of s3"),
    Step("revert", "s2", "to the other branch: current s2"),
    Step("create", "s5", "a child of s2"),
    Step("create", "s6", "a child of s5"),
    Step("delete", "s3", "an inner snapshot, not current: s4 becomes a child of s1"),
    Step("delete", "s6", "a leaf that is current: current becomes its parent s5"),
    Step("create", "s7", "a child of s5"),
    Step("revert", "s5", "current s5, which has a child"),
    Step("delete", "s5", "the current snapshot with a child: s7 moves to s2, s2 current"),
    Step("revert", "s1", "back to the root"),
    Step("create", "s8", "a third child of s1, current"),
    Step("delete", "s4", "a leaf, neither current nor a root"),
    Step("delete", "s1", "a root with children: s2 and s8 become roots, s8 stays current"),
    Step("restart", None, "QEMU restarts (destroy, start): only the image remembers the "
                          "current snapshot"),
    Step("create", "s9", "after the restart: a child of s8, the current one"),
)


def check(steps: tuple[Step, ...]) -> None:
    for s in steps:
        if s.op not in OPS or (s.op == "restart") != (s.name is None):
            raise ValueError(f"bad step {s}")


def expected(steps: tuple[Step, ...] = STEPS) -> list[Tree]:
    """The tree after each step."""
    check(steps)
    model, trees = Model(), []
    for s in steps:
        if s.op != "restart":
            getattr(model, s.op)(s.name)
        trees.append(model.tree())
    return trees
