"""Textbook-guided reasoning trajectories for SFT: knowledge base, retrieval, DDx graph, writers,
verification and the build (see docs/knowledge_base.md and `skinr1 trajectories --help`).

Typical use::

    from skinr1.config.loader import load_config
    from skinr1.trajectories import TrajectoriesConfig, run
    report = run(load_config(TrajectoriesConfig, "skinr1/configs/trajectories_demo.yaml",
                             ["input=data/dense.jsonl", "output_dir=out/traj"]))
"""

from __future__ import annotations

from skinr1.trajectories.build import run
from skinr1.trajectories.config import TeacherConfig, TrajectoriesConfig, TypeMix, VerifyConfig
from skinr1.trajectories.knowledge_base import KnowledgeBase, KnowledgeBaseError, load_knowledge_base

__all__ = [
    "KnowledgeBase",
    "KnowledgeBaseError",
    "TeacherConfig",
    "TrajectoriesConfig",
    "TypeMix",
    "VerifyConfig",
    "load_knowledge_base",
    "run",
]
