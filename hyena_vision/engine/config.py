"""Configs: OmegaConf structured configs (a dataclass schema), so unknown keys and wrong types are errors.

``--config`` takes a YAML path or the name of a config shipped inside the package (``cifar10/vit_iso``,
``imagenet/hyena_vit_s``, ``lm/shakespeare_char_cpu``; ``shipped_configs()`` lists them), so an installed wheel
trains without a source checkout.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .._io import atomic_write

__all__ = [
    "CONFIG_DIR",
    "AdamWCosineConfig",
    "ConfigError",
    "config_file",
    "load_config",
    "parse_args",
    "save_config",
    "shipped_configs",
]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class AdamWCosineConfig:
    """``optim`` of the step-counted trainers (LM, CLIP): AdamW, linear warmup, cosine decay to ``min_lr``."""

    lr: float = 1e-3  # peak; parameters with optimizer hints (Hyena filters) keep their own
    min_lr: float = 1e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-8
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max global grad norm; 0: off


class ConfigError(ValueError):
    """A config file or override that does not fit the schema (unknown key, wrong type, bad syntax)."""


def shipped_configs() -> list[str]:
    """Names of the configs inside the package, e.g. ``cifar10/vit_iso``."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.glob("*/*.yaml"))


def config_file(config: str | os.PathLike) -> Path:
    """The YAML file ``config`` names: an existing path, else a shipped name (``configs/`` and ``.yaml`` optional)."""
    path = Path(config)
    if path.is_file():
        return path
    name = path.as_posix().removeprefix("configs/").removesuffix(".yaml")
    shipped = CONFIG_DIR / f"{name}.yaml"
    if name in shipped_configs():
        return shipped
    raise ConfigError(
        f"config file {str(config)!r} not found, and no shipped config has that name "
        f"(shipped: {', '.join(shipped_configs())})"
    )


def load_config(schema: type, config: str | os.PathLike | None, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Schema defaults, then the YAML file ``config`` names (a path or a shipped name), then dot-list ``overrides``
    (``["optim.lr=1e-3"]``).

    Any key the schema does not define, in the file or in an override, raises ``ConfigError`` naming the key and
    where it came from; so does a value of the wrong type. The returned config is resolved, read-only and struct.
    """
    cfg = OmegaConf.structured(schema)
    sources: list[tuple[str, DictConfig]] = []
    if config is not None:
        path = config_file(config)
        loaded = OmegaConf.load(path)
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
        sources.append((f"config file {str(path)!r}", loaded))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        try:
            sources.append((f"override {item!r}", OmegaConf.from_dotlist([item])))
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot parse override {item!r}: {e}") from e
    for where, source in sources:
        try:
            cfg = OmegaConf.merge(cfg, source)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            msg = str(e).splitlines()[0]
            raise ConfigError(f"{where}: bad key {key!r}: {msg}") from e
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot resolve config: {e}") from e
    # "???" in the file marks a value the user must give; merging it onto a schema default drops the mark
    required = OmegaConf.missing_keys(sources[0][1]) if config is not None else set()
    overridden = [source for where, source in sources if where.startswith("override")]
    given = {k for k in required if any(OmegaConf.select(o, k, default=None) is not None for o in overridden)}
    missing = sorted((required - given) | OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config values required but not given: {', '.join(missing)} (e.g. {missing[0]}=...)")
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def save_config(cfg: DictConfig, out_dir: str | os.PathLike) -> Path:
    """Write the resolved config to ``out_dir/config.yaml`` (atomically) and return the path."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    return atomic_write(Path(out_dir) / "config.yaml", lambda f: f.write(text.encode()))


def parse_args(argv: list[str] | None, doc: str | None) -> argparse.Namespace:
    """The trainers' command line: ``--config``, ``--resume``, ``--resume-from`` and dot-list overrides."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", help="YAML path or shipped name, e.g. cifar10/vit_iso; omitted: schema defaults + overrides"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from <out_dir>/last.pt; none there yet: start from scratch"
    )
    parser.add_argument("--resume-from", metavar="PATH", help="continue from this checkpoint (it must exist)")
    parser.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. optim.lr=1e-3 train.epochs=10")
    return parser.parse_args(argv)
