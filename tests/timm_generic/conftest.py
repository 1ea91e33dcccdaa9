"""Run timm's own generic model tests (``tests/test_models.py`` of the pinned timm sdist) on our models.

``fetch_timm_tests.sh`` puts that file in ``.cache/`` here (git-ignored, and skipped by ``pytest tests`` because
pytest does not descend into dot-directories); ``run.sh`` fetches and runs it. Everything below is active only
when that file is part of the run.

timm picks the models of each test at import time with ``list_models(...)`` and hand-kept lists: module names of
the families with ``forward_intermediates`` (FEAT_INTER_FILTERS), name patterns of "non-standard" models whose
features are token sequences, like ViTs (NON_STD_FILTERS). ``list_models`` is wrapped so that it returns only our
models and places them in those lists as timm would if they were timm's own: every family of ours has
``forward_intermediates``; Hyena-ViT and the sequence model give (B, N, C) features like timm's ViTs; the
isotropic CIFAR models give (B, H, W, C) maps (``output_fmt='NHWC'``) and are standard. Tests that name timm
models explicitly are deselected, and so are the exclusions listed in ``EXCLUSIONS`` with their reasons.
"""

from __future__ import annotations

import fnmatch
import pathlib

import pytest
import timm

import hyena_vision.models  # noqa: F401  (registers our models with timm)

HERE = pathlib.Path(__file__).resolve().parent
TIMM_TESTS = HERE / ".cache" / "test_models.py"
OUR_MODULES = ["hyena_vit", "hyena_iso", "cifar_baselines"]
OUR_NON_STD = ["hyena_vit_*", "hyena_vit2d_*", "hyena_seq_*", "vit_iso_*"]  # token-sequence features, as timm's 'vit_*'
TIMM_NON_STD_MARKER = "vit_*"  # an entry of timm's NON_STD_FILTERS: that list is being passed

# (test function patterns, model name patterns (each '|'-separated fnmatch patterns), reason)
EXCLUSIONS = [
    (
        "test_model_forward*torchscript",
        "*",
        "TorchScript cannot compile the Hyena / S4ND layers (starred and runtime-size tuple unpacking, "
        "Triton dispatch); torch.jit.script is deprecated in this torch for torch.compile / torch.export",
    ),
    (
        "test_prune_intermediate_layers_contract",
        "hyena_vit_s|hyena_vit_b|hyena_vit_b_p8|hyena_vit2d_s|hyena_vit2d_b",
        "slow (it prunes at every block; timm keeps it out of its CI): run on hyena_vit_t and hyena_vit2d_t",
    ),
]

_original_list_models = timm.list_models
_active = False


def _as_list(patterns) -> list[str]:
    if not patterns:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _matches(name: str, patterns: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns.split("|"))


def list_our_models(
    filter="", module="", pretrained=False, exclude_filters="", name_matches_cfg=False, include_tags=None
):
    """timm.list_models restricted to our models, with our families placed in timm's hand-kept lists."""
    filters, excludes = _as_list(filter), _as_list(exclude_filters)
    if TIMM_NON_STD_MARKER in filters:
        filters += OUR_NON_STD
    if TIMM_NON_STD_MARKER in excludes:
        excludes += OUR_NON_STD
    return _original_list_models(
        filter=filters or "",
        module=OUR_MODULES,
        pretrained=pretrained,
        exclude_filters=excludes or "",
        name_matches_cfg=name_matches_cfg,
        include_tags=include_tags,
    )


def _runs_timm_tests(config: pytest.Config) -> bool:
    for arg in config.args:
        path = pathlib.Path(arg.split("::")[0]).resolve()
        if path == TIMM_TESTS or path == TIMM_TESTS.parent:
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    global _active
    if not _runs_timm_tests(config):
        return
    _active = True
    timm.list_models = list_our_models  # before the test module is imported: it binds list_models then
    for marker in (
        "base",
        "cfg",
        "cfg_nonstd",
        "forward",
        "backward",
        "torchscript",
        "features",
        "fxforward",
        "fxbackward",
        "timeout(seconds): pytest-timeout's marker (not installed here)",
    ):
        config.addinivalue_line("markers", marker)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _active:
        return
    ours = set(_original_list_models(module=OUR_MODULES))
    keep, drop = [], []
    for item in items:
        if pathlib.Path(item.fspath).resolve() != TIMM_TESTS:
            keep.append(item)
            continue
        name = getattr(item, "callspec", None) and item.callspec.params.get("model_name")
        excluded = any(
            _matches(item.originalname, tests) and _matches(str(name), models) for tests, models, _ in EXCLUSIONS
        )
        (keep if name in ours and not excluded else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not _active:
        return []
    lines = [f"timm {timm.__version__} generic model tests restricted to: {sorted(list_our_models())}"]
    lines += [f"excluded {test} x {model}: {reason}" for test, model, reason in EXCLUSIONS]
    return lines
