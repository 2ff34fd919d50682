"""The option machinery every entry point shares: YAML configs that set a parser's defaults, the option types,
the frozen namespace of the post-parse step.

The options themselves are defined by what they configure, each part adding its argument group
(`models.add_model_args`, `datasets.add_dataset_args`, `util.options` for the run, training and inference
groups); every entry point builds its parser from the groups it needs (docs/architecture.md, "Where options
live"). `parse_args(parser, argv)` applies `--config FILE` first: the YAML's keys become the parser's defaults,
command-line flags override them; a key that another entry point's parser has is ignored, one that no entry
point knows is an error. After parsing, an entry point's post-parse step computes the derived values once and
returns a `FrozenNamespace` (`freeze`): nothing assigns to the options afterwards.
"""
import argparse
import copy
import math
import sys
from pathlib import Path
from typing import Callable, Collection, FrozenSet, Optional, Sequence, Tuple, Union

import yaml

from util.errors import DEBUG_FLAG, EXIT_OPTION, OptionError

# The value that turns a path option with an official default off (`--pretrained_weights none`,
# `--ytvos_ann_file none`, `--split_file none`).
NONE = "none"

FRAMES_FOLDER = "JPEGImages"  # <ytvos_path>/<split>/JPEGImages: what the official --img_path names


def is_none(value: Optional[str]) -> bool:
    """Whether a path option is switched off: empty, or `none` (any case)."""
    return not value or str(value).strip().lower() == NONE


def split_img_path(value: str) -> dict:
    """The official `--img_path <root>/<split>/JPEGImages` as our `{"ytvos_path": root, "ytvos_split": split}`."""
    path = Path(value)
    if path.name != FRAMES_FOLDER or not path.parent.name:
        raise ValueError(f"--img_path {value}: expected <ytvos_path>/<split>/{FRAMES_FOLDER} "
                         f"(or use --ytvos_path and --ytvos_split)")
    return {"ytvos_path": str(path.parent.parent), "ytvos_split": path.parent.name}


class ImgPathAction(argparse.Action):
    """The official inference scripts' `--img_path`: sets `--ytvos_path` and `--ytvos_split` (our options name
    the release root and split, from which every path follows)."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            for key, value in split_img_path(values).items():
                setattr(namespace, key, value)
        except ValueError as error:
            parser.error(str(error))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows every option's default (the official ones, docs/protocol.md §1), described or not."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and action.default is not argparse.SUPPRESS:
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)


# Official option names that are aliases of ours, as YAML keys too.
CONFIG_ALIASES = {"ann_path": "split_file"}

PARTIAL_SUFFIX = ".partial"  # what an interrupted inference run keeps beside its output


class OfficialUnused(argparse.Action):
    """An official option name that does nothing in Wnet: accepted so that the official command lines run, stored
    nowhere (no `args.<name>`), and said so on stderr with the reason. `choices` still checks the value (the
    one value the official code could mean). A YAML key of it is dropped the same way (`load_config`)."""

    def __init__(self, option_strings, dest, reason: str, nargs=None, **kwargs):
        self.reason = reason
        super().__init__(option_strings, dest, nargs=nargs, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is ignored: {self.reason}", file=sys.stderr)


def add_official_unused(parser: Union[argparse.ArgumentParser, argparse._ArgumentGroup], name: str, reason: str,
                        flag: bool = False, hidden: bool = False, **kwargs) -> None:
    """`--name` as an `OfficialUnused` option (`flag`: takes no value; `hidden`: left out of `--help`)."""
    parser.add_argument(f"--{name}", action=OfficialUnused, reason=reason, nargs=0 if flag else None,
                        help=argparse.SUPPRESS if hidden else f"ignored: {reason}", **kwargs)


class FrozenNamespace(argparse.Namespace):
    """The options after an entry point's post-parse step: read like a Namespace, never assigned (so a value
    cannot depend on which function ran first). `freeze(args, name=value)` makes a changed copy."""

    def __init__(self, **values):
        super().__init__()
        self.__dict__.update(values)  # not through __setattr__, which refuses

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"args.{name}: the options are frozen after the post-parse step; "
                             f"compute derived values there (util.config.freeze)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"args.{name}: the options are frozen after the post-parse step")


def freeze(args: argparse.Namespace, **values) -> FrozenNamespace:
    """A frozen copy of `args` with `values` set (the derived values of a post-parse step, or a changed copy)."""
    return FrozenNamespace(**{**vars(args), **values})


def option_names(*groups: Callable[[argparse.ArgumentParser], None]) -> FrozenSet[str]:
    """The option names (dests) that the argument groups `groups` define (each group alone: two groups may
    both accept an official name)."""
    names = set()
    for add_group in groups:
        parser = argparse.ArgumentParser(add_help=False)
        add_group(parser)
        names.update(action.dest for action in parser._actions)
    return frozenset(names)


def inference_scale(args: argparse.Namespace) -> float:
    """The size scale of the inference transform: `--inference_data_scale`, else `--data_scale`."""
    return args.inference_data_scale or args.data_scale


def videos_epochs(text: str) -> Tuple[int, int]:
    """'16:8' -> (16 videos, 8 epochs), both positive (an argparse `type`)."""
    try:
        videos, epochs = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected VIDEOS:EPOCHS such as 16:8, got {text!r}") from None
    if videos < 1 or epochs < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: videos and epochs must be >= 1")
    return videos, epochs


def own_argv(argv: Sequence[str], parser: argparse.ArgumentParser,
             *others: argparse.ArgumentParser) -> list:
    """`argv` without the options (and their values) that `parser` lacks and one of `others` has: one command
    line for a tool that both trains and infers (scripts/demo.py). An option no parser knows stays, for
    `parser` to refuse."""
    def find(p: argparse.ArgumentParser, token: str) -> Optional[argparse.Action]:
        return p._option_string_actions.get(token.split("=", 1)[0])

    kept, index = [], 0
    while index < len(argv):
        token = argv[index]
        action = None if find(parser, token) or not token.startswith("--") else next(
            (a for a in (find(p, token) for p in others) if a is not None), None)
        index += 1
        if action is None:
            kept.append(token)
            continue
        if "=" in token or action.nargs == 0:
            continue
        takes_many = action.nargs in ("*", "+")
        while index < len(argv) and not argv[index].startswith("--"):  # its values
            index += 1
            if not takes_many:
                break
    return kept


# `other_options` of a parser whose config files may hold any key (hubconf: the repository's own configs)
ANY_OPTION = None


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
               other_options: Optional[Collection[str]] = frozenset()) -> argparse.Namespace:
    """Parse `argv`, taking defaults from `--config FILE` when given. A config key that `parser` lacks but
    `other_options` names (the options of the other entry points) is ignored: one YAML file serves training
    and inference; `ANY_OPTION` ignores every key `parser` lacks."""
    pre, _ = parser.parse_known_args(argv)
    if getattr(pre, "config", ""):
        parser.set_defaults(**load_config(pre.config, parser, other_options))
    return parser.parse_args(argv)


def given_options(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                  other_options: Optional[Collection[str]] = frozenset()) -> FrozenSet[str]:
    """The option names (dests) that `argv` or its `--config FILE` set; every other option holds the parser's
    default (what a checkpoint's own args may replace at inference)."""
    defaults = {action: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        explicit, _ = parser.parse_known_args(argv)
    finally:
        for action, default in defaults.items():
            action.default = default
    config = getattr(explicit, "config", "")
    from_config = load_config(config, parser, other_options) if config else {}
    return (frozenset(vars(explicit)) | frozenset(from_config)) - {"config"}


def load_config(path: str, parser: argparse.ArgumentParser,
                other_options: Optional[Collection[str]] = frozenset()) -> dict:
    """Read a YAML mapping of option names to values, checked as the command line would check them;
    a missing or malformed file, a name neither `parser` nor `other_options` knows or a bad value is an
    OptionError naming the file. Keys of `other_options` and of `OfficialUnused` options are left out."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"--config {path}: the file does not exist")
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as error:
        raise OptionError(f"config file {path}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(values, dict):
        raise OptionError(f"config file {path}: expected a mapping of option names to values")
    for alias, name in CONFIG_ALIASES.items():
        if alias in values:
            if name in values:
                raise OptionError(f"config file {path}: sets both {alias!r} and {name!r} (the same option)")
            values[name] = values.pop(alias)
    if "img_path" in values:
        try:
            values.update(split_img_path(values.pop("img_path")))
        except ValueError as error:
            raise OptionError(f"config file {path}: {error}") from None
    actions = {a.dest: a for a in parser._actions if not isinstance(a, OfficialUnused)}
    elsewhere = set(values) - set(actions) if other_options is ANY_OPTION else set(values) & (
        set(other_options) | {a.dest for a in parser._actions if isinstance(a, OfficialUnused)})
    values = {key: value for key, value in values.items() if key not in elsewhere or key in actions}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise OptionError(f"config file {path}: unknown option(s) {unknown}")
    if "config" in values:
        raise OptionError(f"config file {path}: 'config' cannot be set from a config file")
    for key, value in values.items():
        action = actions[key]
        # set_defaults() bypasses argparse's checks: apply the option's type and choices here.
        if action.type is not None and value is not None:
            try:
                if isinstance(value, list) and action.nargs in ("*", "+"):  # a YAML list: each item as on the line
                    value = values[key] = [action.type(v if isinstance(v, str) else str(v)) for v in value]
                else:
                    value = values[key] = action.type(value if isinstance(value, str) else str(value))
            except (argparse.ArgumentTypeError, ValueError) as error:
                raise OptionError(f"config file {path}: {key}: {error}") from None
        if action.choices is not None and value not in action.choices:
            raise OptionError(f"config file {path}: {key}: {value!r} is not one of {list(action.choices)}")
    return values


# ----------------------------------------------------------------------------- option types
def _number(text, kind: type, expected: str, accept: Callable[[float], bool]):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text) -> int:
    return _number(text, int, "a positive integer", lambda v: v > 0)


def non_negative_int(text) -> int:
    return _number(text, int, "an integer >= 0", lambda v: v >= 0)


def positive_float(text) -> float:
    return _number(text, float, "a finite number > 0", lambda v: v > 0)


def non_negative_float(text) -> float:
    return _number(text, float, "a finite number >= 0", lambda v: v >= 0)


def probability(text) -> float:
    return _number(text, float, "a probability in [0, 1)", lambda v: 0 <= v < 1)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line (`error: argument --x: ...`, exit code 2) instead of the usage,
    and `--debug` (`util.errors.run_main` then shows the traceback of user errors too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if DEBUG_FLAG not in self._option_string_actions:  # not inherited from a parent parser
            self.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of user errors too")

    def error(self, message: str):
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_OPTION)
