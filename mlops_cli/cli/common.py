"""What every command shares: the project option, the error funnel, JSON and table output."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any, NamedTuple, TypeVar

import typer

from ..errors import MlopsError, OutputError, Terminated, ValidationError
from ..project import Project
from ..textsafe import printable

T = TypeVar("T")

JSON_HELP = "Print one JSON document on stdout instead of a table."


class Globals(NamedTuple):
    project_dir: str | None = None
    traceback: bool = False


def globals_of(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Globals) else Globals()


def open_project(ctx: typer.Context) -> Project:
    return Project.open(globals_of(ctx).project_dir)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def plain(doc: Any) -> Any:
    """Typed results as their JSON documents (`to_dict()`), lists and dicts of them too."""
    if hasattr(doc, "to_dict"):
        return doc.to_dict()
    if isinstance(doc, list):
        return [plain(d) for d in doc]
    if isinstance(doc, dict):
        return {k: plain(v) for k, v in doc.items()}
    return doc


def print_json(doc: Any) -> None:
    import orjson  # here: a table never needs it

    sys.stdout.write(
        orjson.dumps(plain(doc), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
        + "\n"
    )
    sys.stdout.flush()


@contextmanager
def funnel(ctx: typer.Context, json_output: bool = False) -> Iterator[None]:
    """Turn a domain error into one `error:` line (or a JSON error document) and its exit code."""
    try:
        yield
    except MlopsError as exc:
        fail(exc.type, exc.for_cli(), exc.exit_code, json_output)
    except KeyboardInterrupt:
        fail("Interrupted", "interrupted", 130, json_output)
    except Terminated:
        fail("Terminated", "terminated", 143, json_output)
    except BrokenPipeError:
        # The reader went away (`mlops metrics export | head`): nothing more to say to it.
        reader_left()
        raise typer.Exit(0) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if globals_of(ctx).traceback:
            raise
        fail(
            "InternalError",
            f"unexpected {type(exc).__name__}: {exc} (this is a bug in mlops; rerun with "
            "`mlops --traceback ...` and report it)",
            1,
            json_output,
        )


@contextmanager
def named_as_flags(flags: dict[str, str]) -> Iterator[None]:
    """Within: an error about a value the command passed on from a flag (its `field`, a key
    of `flags`) names the flag (`--traffic`, not `treatment_traffic_pct`)."""
    try:
        yield
    except MlopsError as exc:
        if exc.field in flags:
            exc.cli.setdefault(exc.field, flags[exc.field])
        raise


def fail(kind: str, message: str, code: int, json_output: bool) -> None:
    message = one_line(message)
    if json_output:
        print_json({"error": {"type": kind, "message": message}})
    else:
        say(f"error: {message}", err=True)
        sys.stderr.flush()
    raise typer.Exit(code)


def run(
    ctx: typer.Context,
    json_output: bool,
    action: Callable[[], T],
    render: Callable[[T], None],
    to_json: Callable[[T], Any] | None = None,
) -> T:
    """Call the library, then print its result as JSON or through `render`. A reader that
    goes away (`| head`) misses the rest of the output, but the result stands: the exit
    code a gate derives from it is still the command's."""
    with funnel(ctx, json_output):
        result = action()
        try:
            if json_output:
                print_json(to_json(result) if to_json else result)
            else:
                render(result)
                sys.stdout.flush()
        except BrokenPipeError:
            reader_left()
        except OSError as exc:  # a full disk, a quota: the output is lost, and said so
            reader_left()
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None
    return result


def reader_left() -> None:
    """Send what is still to be written to stdout nowhere (its reader went away), so that
    neither a later line nor the flush at exit fails."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # not a file (a test's capture)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - kept open until exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


Styled = tuple[str, str]


def figure(value: float | None, spec: str) -> str:
    """A figure as `spec` formats it, or "-" where there is none (no request served)."""
    return "-" if value is None else format(value, spec)


def say(*parts: str | Styled, err: bool = False, to: Any = None) -> None:
    """Print one line for a person: the one way human output reaches a terminal.

    Text from outside (hook output, names, reasons, descriptions, error messages, config
    values) is shown, never obeyed: control and format characters appear as escapes
    (`textsafe.printable`) and nothing is read as Rich markup. A style is given beside the
    text it applies to, as a `(text, style)` part, never inside it. `to`: a Rich console to
    print through (a progress bar's, which keeps the line above the bar).
    """
    texts = [part if isinstance(part, str) else part[0] for part in parts]
    if to is None and all(isinstance(part, str) for part in parts):
        stream = sys.stderr if err else sys.stdout
        stream.write(printable("".join(texts)) + "\n")
        return
    from rich.text import Text

    line = Text.assemble(
        *(
            printable(part) if isinstance(part, str) else (printable(part[0]), part[1])
            for part in parts
        )
    )
    (to or console(stderr=err)).print(line, soft_wrap=True)  # the terminal wraps it


def console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr). Writing to a terminal it wraps text at the
    terminal's width; to a pipe or a file (a CI log) it never breaks a message mid-sentence."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        terminal = False
    return _quiet_console()(stderr=stderr, highlight=False, soft_wrap=not terminal)


@cache
def _quiet_console() -> Any:
    """rich's Console, but a broken pipe raises BrokenPipeError for the caller (`run`) to
    decide on, instead of rich's SystemExit(1). Made once, when rich is first needed."""
    from rich.console import Console

    class Quiet(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return Quiet


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A boxed table on stdout (drawn directly: importing rich would cost more than the work)."""
    # Cells hold user text (reasons, descriptions, actors): escapes are shown, never obeyed.
    cells = [["" if v is None else printable(str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(left: str, fill: str, join: str, right: str) -> str:
        return left + join.join(fill * (w + 2) for w in widths) + right

    def row(values: Sequence[str], edge: str) -> str:
        padded = (f" {v.ljust(w)} " for v, w in zip(values, widths, strict=True))
        return edge + edge.join(padded) + edge

    out = [title] if title else []
    if any(columns):
        out += [line("┏", "━", "┳", "┓"), row(list(columns), "┃"), line("┡", "━", "╇", "┩")]
    else:
        out.append(line("┌", "─", "┬", "┐"))
    out += [row(r, "│") for r in cells]
    out.append(line("└", "─", "┴", "┘"))
    sys.stdout.write("\n".join(out) + "\n")


def key_values(title: str | None, pairs: Sequence[tuple[str, Any]]) -> None:
    table(title, ["", ""], [[key, key_value_text(value)] for key, value in pairs])


def key_value_text(value: Any) -> Any:
    """A mapping (tags, config, counts) as it is given on the command line: `k=v, k2=v2`; a
    list as `a,b` (`--ramp 5,10`); a mapping inside one in parentheses."""
    if isinstance(value, dict):
        return ", ".join(
            f"{k}=({key_value_text(v)})" if isinstance(v, dict) else f"{k}={key_value_text(v)}"
            for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return ",".join(str(key_value_text(v)) for v in value)
    return value


def parse_pairs(items: Sequence[str] | None, option: str, typed: bool) -> dict[str, Any]:
    """Parse KEY=VALUE options; with `typed`, values are YAML scalars (8 -> int, true -> bool)."""
    from ..yamlsafe import load_yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"{option} takes KEY=VALUE, got {item!r}")
        if typed:
            try:
                out[key] = load_yaml(value, f"{option} {key}") if value else ""
            except ValidationError:  # not YAML (or refused by its bounds): the text as it is
                out[key] = value
        else:
            out[key] = value
    return out


def one_of(*allowed: str, many: bool = False) -> Callable[[str | None], str | None]:
    """A Typer callback for an option with a documented set of values: a value outside it is
    a usage error (exit 2), as a value of the wrong type is. `many`: a comma-separated list."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        given = [v.strip() for v in value.split(",") if v.strip()] if many else [value]
        wrong = [v for v in given if v not in allowed]
        if wrong or not given:
            shown = repr(wrong[0]) if wrong else repr(value)
            raise typer.BadParameter(f"{shown} is not one of {', '.join(allowed)}")
        return value

    return check


def progress_wanted() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")
