"""Build docs/cli.md, the command-line reference, from the jobs' own parsers.

    python -m jobs.cli_reference            # rewrite docs/cli.md
    python -m jobs.cli_reference --check    # exit 1 when docs/cli.md is out of date

Every module ``jobs/NAME.py`` with a ``build_parser()`` is included, found by
listing the package, so a new job appears without editing this script. Each
flag's default is the parser's own; where the parser leaves it out
(``argparse.SUPPRESS`` or ``None``), it is read from the configuration
dataclass the job builds (:mod:`mhgan_dist.run.config` for jobs.generate and
jobs.repick, :class:`mhgan_dist.training.setup.TrainConfig` for jobs.train; another
job names its own in a module attribute ``CLI_CONFIG``).
The page depends only on the parsers and those dataclasses: never on the
terminal width, the machine or the date. tests/unit/test_docs.py regenerates it in
memory and fails when it differs from the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DOC_PATH", "job_parsers", "render", "parser_flags", "main"]

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
REGENERATE = "python -m jobs.cli_reference"

# Listed first, in this order; any other job with a build_parser follows alphabetically.
_FIRST = ("generate", "repick", "evaluate", "train", "reproduce", "tradeoff", "benchmark")
_NO_DEFAULT = "—"


def job_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """(module name such as "jobs.generate", its parser) for every jobs module with a build_parser()."""
    import jobs

    names = sorted(m.name for m in pkgutil.iter_modules(jobs.__path__) if not m.ispkg)
    names.sort(key=lambda n: (_FIRST.index(n) if n in _FIRST else len(_FIRST), n))
    found = []
    for name in names:
        module = importlib.import_module(f"jobs.{name}")
        build = getattr(module, "build_parser", None)
        if callable(build):
            found.append((f"jobs.{name}", build()))
    return found


# --------------------------------------------------------------- defaults


def _dataclass_default(cls: type, name: str) -> Any:
    """The field's default, dataclasses.MISSING when ``cls`` has no such field or it has none."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return dataclasses.MISSING


def _job_config_default(dest: str) -> Any:
    from mhgan_dist.run.config import JobConfig

    for section in dataclasses.fields(JobConfig):
        value = _dataclass_default(section.default_factory, dest)  # type: ignore[arg-type]
        if value is not dataclasses.MISSING:
            return value
    return dataclasses.MISSING


def _repick_default(dest: str) -> Any:
    """jobs.repick starts from the source run's recorded model and sampling options."""
    from mhgan_dist.run.config import ModelConfig, SamplingConfig

    if dest == "num_samples":  # derived from the source's proposals; the flag's help says how
        return None
    for cls in (ModelConfig, SamplingConfig):
        if _dataclass_default(cls, dest) is not dataclasses.MISSING:
            return _Literal("the source run's")
    return _job_config_default(dest)


def _train_default(dest: str) -> Any:
    """TrainConfig's default, or the per-dataset defaults of make_config when they differ by dataset."""
    from mhgan_dist.training.setup import DATASETS, TrainConfig, make_config

    if dest not in {f.name for f in dataclasses.fields(TrainConfig)}:
        return dataclasses.MISSING
    if dest == "data_root":
        return None
    # data_root is only recorded here, never read: the image datasets refuse to configure without one.
    per_dataset = {ds: getattr(make_config(ds, data_root="DATA_ROOT"), dest) for ds in DATASETS}
    if len({repr(v) for v in per_dataset.values()}) == 1:
        return next(iter(per_dataset.values()))
    groups: dict[str, list[str]] = {}
    for ds, value in per_dataset.items():
        if value is not None:
            groups.setdefault(_format_value(value, None), []).append(ds)
    return _Literal("; ".join(f"{', '.join(names)}: {value}" for value, names in groups.items()))


class _Literal(str):
    """A default that is already prose, shown as it is (not as a value in code font)."""


# Where a job's parser leaves defaults out, who knows them. Any other job may name its config
# dataclasses in a module attribute CLI_CONFIG (a dataclass, or a tuple of them); a job with
# neither shows "—" there, and its help text says what is used.
CONFIG_DEFAULTS: dict[str, Callable[[str], Any]] = {
    "jobs.generate": _job_config_default,
    "jobs.repick": _repick_default,
    "jobs.train": _train_default,
}


def _defaults_lookup(job: str) -> Callable[[str], Any] | None:
    if job in CONFIG_DEFAULTS:
        return CONFIG_DEFAULTS[job]
    declared = getattr(importlib.import_module(job), "CLI_CONFIG", None)
    if declared is None:
        return None
    classes = declared if isinstance(declared, tuple) else (declared,)

    def lookup(dest: str) -> Any:
        for cls in classes:
            value = _dataclass_default(cls, dest)
            if value is not dataclasses.MISSING:
                return value
        return dataclasses.MISSING

    return lookup


def _format_value(value: Any, nargs: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return (" " if nargs in ("+", "*") else ",").join(_format_value(v, None) for v in value)
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def _default_cell(job: str, action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off" if isinstance(action, argparse._StoreTrueAction) else "on"
    value = action.default
    if value is argparse.SUPPRESS or value is None:
        lookup = _defaults_lookup(job)
        value = lookup(action.dest) if lookup else None
        if value is dataclasses.MISSING:
            value = None
    if value is None or value == "" or (isinstance(value, (list, tuple)) and not value):
        return _NO_DEFAULT
    if isinstance(value, _Literal):
        return _cell(str(value))
    return f"`{_format_value(value, action.nargs)}`"


# --------------------------------------------------------------- rendering


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, no bare pipes, no HTML tags."""
    text = " ".join(text.split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _usage(action: argparse.Action) -> str:
    """How the argument is written: ``--thin T|auto``, ``RUN [RUN ...]``, ``--compile``."""
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return names
    m = _metavar(action)
    nargs = action.nargs
    if nargs is None:
        value = m
    elif nargs == "?":
        value = f"[{m}]"
    elif nargs == "*":
        value = f"[{m} ...]"
    elif nargs == "+":
        value = f"{m} [{m} ...]"
    elif isinstance(nargs, int):
        value = " ".join([m] * nargs)
    else:
        value = m
    return f"{names} {value}" if names else value


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:  # argparse's own expansion: %(default)s, %(prog)s, ...
        params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        params["prog"] = prog
        if params.get("choices") is not None:
            params["choices"] = ", ".join(str(c) for c in params["choices"])
        text = text % params
    return text


def _documented(action: argparse.Action) -> bool:
    return not isinstance(action, argparse._HelpAction) and action.help is not argparse.SUPPRESS


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _groups(parser: argparse.ArgumentParser) -> list[tuple[str, list[argparse.Action]]]:
    """(title, documented actions) per argument group: positionals, the parser's own groups, then the rest."""
    groups = [(g.title or "", [a for a in g._group_actions if _documented(a)]) for g in parser._action_groups]
    groups = [(title, actions) for title, actions in groups if actions]
    general = [g for g in groups if g[0] == "options"]  # argparse's catch-all group: common flags, --help
    return [g for g in groups if g[0] != "options"] + general


# A job whose flags mean what another job's flags of the same name mean: a flag it leaves
# without help points there.
SAME_AS = {"jobs.repick": "jobs.generate"}


def _option_names(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions for name in action.option_strings}


def _flag_tables(job: str, parser: argparse.ArgumentParser, explained: dict[str, set[str]]) -> list[str]:
    """One table per argument group; ``explained`` maps a job to its option strings (for SAME_AS)."""
    lines: list[str] = []
    groups = _groups(parser)
    other = SAME_AS.get(job)
    for title, actions in groups:
        if len(groups) > 1:
            lines += [f"*{title}*", ""]
        lines += ["| argument | default | meaning |", "|---|---|---|"]
        for action in actions:
            if isinstance(action, argparse._SubParsersAction):
                meaning = "the suite: " + ", ".join(f"`{c.dest}`" for c in action._choices_actions)
            else:
                meaning = _cell(_help(action, parser.prog))
            if not meaning and other and set(action.option_strings) & explained.get(other, set()):
                meaning = f"as in [`{other}`](#{_slug('python -m ' + other)})"
            lines.append(f"| `{_cell(_usage(action))}` | {_default_cell(job, action)} | {meaning} |")
        lines.append("")
    return lines


def _description(text: str | None) -> list[str]:
    if not text:
        return []
    # The docstrings mix prose and indented commands; a text block shows them as written.
    return ["```text", *text.strip("\n").splitlines(), "```", ""]


def _section(job: str, parser: argparse.ArgumentParser, explained: dict[str, set[str]],
             level: int = 2) -> list[str]:
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    lines += _description(parser.description)
    lines += _flag_tables(job, parser, explained)
    for sub in _subparsers(parser):
        helps = {c.dest: c.help for c in sub._choices_actions}
        for name, child in sub.choices.items():
            lines += [f"{'#' * (level + 1)} `{child.prog}`", ""]
            if helps.get(name):
                lines += [_cell(helps[name][0].upper() + helps[name][1:]) + ".", ""]
            lines += _description(child.description)
            lines += _flag_tables(job, child, explained)
    return lines


def render(parsers: Sequence[tuple[str, argparse.ArgumentParser]] | None = None) -> str:
    """The whole page as Markdown text."""
    parsers = job_parsers() if parsers is None else parsers
    lines = [
        "# Command-line reference",
        "",
        "For: anyone who runs a job by hand, writes a `ray job submit` entrypoint, a `--config` file or a",
        "schedule, and wants every flag with its default. What each job is for: the",
        "[README](../README.md) and the [map of the docs](../README.md#where-to-go-next).",
        "",
        f"<!-- Generated by `{REGENERATE}` from the jobs' parsers: do not edit by hand. -->",
        f"Generated from the jobs' own parsers by `{REGENERATE}`; `tests/unit/test_docs.py` fails when",
        "this page and the parsers disagree. A default comes from the parser, or, where the parser leaves",
        "it out, from the run configuration (`mhgan_dist.run.config`, `mhgan_dist.training.setup.TrainConfig`).",
        f"{_NO_DEFAULT} means it is worked out at run time, as the meaning says. Every command also takes",
        "`-h`/`--help`, exits 0 on success and 2 on a user error (one sentence on stderr; `--debug` adds",
        "the traceback where the job has it).",
        "",
    ]
    for job, parser in parsers:
        entries = [(parser.prog, 0)]
        for sub in _subparsers(parser):
            entries += [(child.prog, 1) for child in sub.choices.values()]
        for prog, depth in entries:
            lines.append(f"{'  ' * depth}- [`{prog}`](#{_slug(prog)})")
    lines.append("")
    explained = {job: _option_names(parser) for job, parser in parsers}
    for job, parser in parsers:
        lines += _section(job, parser, explained)
    return "\n".join(lines).rstrip("\n") + "\n"


def parser_flags(parser: argparse.ArgumentParser) -> Iterable[tuple[str, str]]:
    """(prog, option string or positional name) for every documented argument, subcommands included."""
    for action in parser._actions:
        if not _documented(action):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from parser_flags(child)
            continue
        for name in action.option_strings or [_metavar(action)]:
            yield parser.prog, name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=REGENERATE, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=DOC_PATH, help="where to write the page (default: docs/cli.md)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the page is out of date")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"error: {args.output} is out of date; run `{REGENERATE}` to rewrite it.", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
