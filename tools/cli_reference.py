"""MkDocs hook: the CLI reference page is generated from the typer app, so it cannot drift.

A page containing the marker ``<!-- normlab-cli -->`` gets, in its place, one section per
command: its help text, its usage line and a table of its arguments and options.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- normlab-cli -->"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    import typer.main

    from normlab.cli import app

    root = typer.main.get_command(app)
    return markdown.replace(MARKER, "\n".join(_render(root, "normlab", None)))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _render(command: Any, path: str, parent: Any) -> list[str]:
    # duck-typed: typer ships its own copy of click's classes
    ctx = command.context_class(command, info_name=path.split()[-1], parent=parent)
    level = "##" if parent is None else "###"
    pieces = " ".join(command.collect_usage_pieces(ctx))
    out = [f"{level} `{path}`", "", _cell(command.help or ""), "", "```text", f"{path} {pieces}"]
    out += ["```", ""]
    params = [p for p in command.get_params(ctx) if p.name != "help"]
    if params:
        out += ["| argument / option | help | default |", "|---|---|---|"]
        for param in params:
            names = ", ".join(f"`{n}`" for n in param.opts)
            if getattr(param, "secondary_opts", None):
                names += ", " + ", ".join(f"`{n}`" for n in param.secondary_opts)
            helptext = _cell(getattr(param, "help", None) or "")
            default = param.default
            shown = "" if default is None or callable(default) else f"`{default}`"
            if param.param_type_name == "argument":
                helptext = helptext or "argument"
            out.append(f"| {names} | {helptext} | {shown} |")
        out.append("")
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out += _render(sub, f"{path} {name}", ctx)
    return out
